"""Background jobs: read what is committed, write what is derived from it.

They sit beside the receiver (tracetui.ingest), above the store: ``reindex``
re-runs the normalizer and the analysis over stored spans after an upgrade.
Later jobs of the same kind (a full-text indexer, an evaluation judge) belong here.
"""

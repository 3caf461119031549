"""Reading the traces the OpenTelemetry Collector's ClickHouse exporter writes (docs/team.md).

* ``schema``: the exporter's DDL (verbatim, version cited) and the check that a table has its shape;
* ``convert``: OTLP -> the exporter's rows (its value mapping), and back to OTLP for the normalizer;
* ``connect``: ``--source`` URLs (``clickhouse://``, ``clickhouses://``, ``chdb:PATH``) -> an HTTP client;
* ``chdb_server``: the process that owns an embedded ClickHouse directory and speaks ClickHouse's HTTP interface;
* ``filter_sql``: the filter language compiled to parameterized ClickHouse SQL;
* ``reader``: :class:`~tracetui.model.reader.Reader` over those tables.

Nothing here imports Textual, and the UI never imports this package: ``tracetui.cli``
hands the UI a reader factory.
"""

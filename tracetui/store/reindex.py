"""`tracetui reindex`: re-run normalization over stored spans after an upgrade.

The raw OTLP bytes of every span are kept, so a newer normalizer can rebuild
the canonical columns, the trace rows and the timing analysis in place.
Works in small transactions so a running receiver is never blocked for long.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tracetui.semconv import NORMALIZED_COLUMNS, normalize_span
from tracetui.store.metrics import reapply_exemplars
from tracetui.store.schema import connect_writer
from tracetui.store.writer import recompute_traces, update_timing

BATCH = 2_000
_UPDATE = "UPDATE spans SET {} WHERE id = ?".format(", ".join(f"{c} = ?" for c in NORMALIZED_COLUMNS))


def reindex(path: Path, progress: Callable[[str], None] | None = None) -> tuple[int, int]:
    """Returns (spans, traces) processed."""
    conn = connect_writer(Path(path))
    try:
        spans = 0
        last_id = 0
        while True:
            rows = conn.execute("SELECT id, raw FROM spans WHERE id > ? ORDER BY id LIMIT ?", (last_id, BATCH)).fetchall()
            if not rows:
                break
            updates = [(*normalize_span(Span.FromString(raw)), span_id) for span_id, raw in rows]
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(_UPDATE, updates)
            conn.execute("COMMIT")
            spans += len(rows)
            last_id = rows[-1][0]
            if progress:
                progress(f"normalized {spans:,} spans")
        reapply_exemplars(conn)  # TTFT from metric exemplars is not in the raw spans
        trace_ids = [r[0] for r in conn.execute("SELECT trace_id FROM traces ORDER BY id")]
        for i in range(0, len(trace_ids), 500):
            chunk = trace_ids[i : i + 500]
            conn.execute("BEGIN IMMEDIATE")
            recompute_traces(conn, chunk)
            update_timing(conn, chunk)
            conn.execute("COMMIT")
            if progress:
                progress(f"rebuilt {min(i + 500, len(trace_ids)):,} of {len(trace_ids):,} traces")
        return spans, len(trace_ids)
    finally:
        conn.close()

"""`tracetui reindex`: recompute everything derived from the stored spans, after an upgrade.

The raw OTLP bytes of every span and log record are kept, so a newer tracetui
rebuilds in place what its receiver would have computed at ingest, with the
receiver's own functions:

* each span's normalized LLM fields, clamped as at ingest, and its price (the
  bundled prices at the call's start time, the user's price file, or the cost
  the span reported): ``tracetui.otlp.decode.normalized_fields``;
* the evaluations found in spans and in log records (added when new; one
  already stored is left as it is, its source routes included);
* the trace rows (bounds, root, counts, totals) and the timing analysis;
* the running counters the header shows (LLM calls, tokens, cost).

Traces are processed a batch at a time (about ``BATCH_SPANS`` spans), each
batch in one transaction under the receiver's write lock: a running receiver
waits at most one batch, and a reindex interrupted at any point (Ctrl-C, a
crash, a full disk) leaves a database whose rows all agree with each other;
running it again redoes every batch, and the result is the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tracetui.llm import evals, pricing
from tracetui.model.rows import NORMALIZED_COLUMNS, Decoded
from tracetui.otlp.decode import add_evaluations, normalized_fields
from tracetui.store.blobs import Blobs, provenance_id, store_provenances
from tracetui.store.lock import WriteLock
from tracetui.store.metrics import apply_exemplars, pending_exemplars
from tracetui.store.schema import add_meta, connect_writer
from tracetui.store.writer import (
    INSERT_EVALUATION,
    recompute_traces,
    resolve_evaluations,
    trace_totals,
    update_timing,
)

#: Spans re-read per transaction (whole traces: a bigger trace is a batch of its own).
BATCH_SPANS = 2_000
_UPDATE = "UPDATE spans SET {} WHERE id = ?".format(", ".join(f"{c} = ?" for c in NORMALIZED_COLUMNS))
_I_RESPONSE = NORMALIZED_COLUMNS.index("response_id")
_I_PROVENANCE = NORMALIZED_COLUMNS.index("provenance")


def reindex(
    path: Path, progress: Callable[[str], None] | None = None, prices_path: Path | None = None
) -> tuple[int, int]:
    """Recompute every derived column and row of the database at ``path``; returns (spans, traces) processed.

    ``prices_path``: the user price file (else the one in the user config
    directory, if any), as ``tracetui serve --prices``. Raises
    pricing.PriceFileError for a bad one, before anything is changed.
    """
    pricing.configure(prices_path)
    conn = connect_writer(Path(path))
    lock = WriteLock(path)  # the receiver's: its workers and this take turns, a transaction each
    try:
        total = conn.execute("SELECT count(*) FROM traces").fetchone()[0]
        spans = traces = 0
        for batch in _trace_batches(conn):
            with lock.transaction(conn):
                spans += _reindex_traces(conn, batch)
            traces += len(batch)
            if progress:
                progress(f"{traces:,} of {total:,} traces ({spans:,} spans)")
        with lock.transaction(conn):  # evaluations of log records that name no trace
            _reindex_log_evaluations(conn, None)
        return spans, traces
    finally:
        lock.close()
        conn.close()


def _trace_batches(conn) -> Iterator[list[bytes]]:
    """Trace ids in arrival order, grouped to about BATCH_SPANS spans; read afresh after each batch."""
    last = 0
    while True:
        batch: list[bytes] = []
        spans = 0
        for row_id, trace_id, span_count in conn.execute(
            "SELECT id, trace_id, span_count FROM traces WHERE id > ? ORDER BY id LIMIT ?", (last, BATCH_SPANS)
        ).fetchall():
            if batch and spans + span_count > BATCH_SPANS:
                break
            batch.append(trace_id)
            spans += span_count
            last = row_id
        if not batch:
            return
        yield batch


def _reindex_traces(conn, trace_ids: list[bytes]) -> int:
    """One batch, in the caller's transaction; returns the spans re-read."""
    marks = ",".join("?" * len(trace_ids))
    before = trace_totals(conn, trace_ids)
    found = Decoded()
    updates = []
    response_ids: set[str] = set()
    rows = conn.execute(f"SELECT id, raw FROM spans WHERE trace_id IN ({marks})", trace_ids).fetchall()
    raws = Blobs(conn).expand_all([raw for _, raw in rows])
    for (span_id, _), raw in zip(rows, raws, strict=True):
        span = Span.FromString(raw)
        values, scan = normalized_fields(span)  # clamped and priced exactly as at ingest
        provenance = values[_I_PROVENANCE]
        if provenance is not None:  # stored once, as ingest stores it (tracetui.store.blobs)
            pid = provenance_id(provenance)
            found.provenances[pid] = provenance
            values = (*values[:_I_PROVENANCE], pid, *values[_I_PROVENANCE + 1 :])
        updates.append((*values, span_id))
        if values[_I_RESPONSE] is not None:
            response_ids.add(values[_I_RESPONSE])
        if scan != evals.SCAN_NOTHING:
            add_evaluations(found, evals.from_span(span, scan))
    conn.executemany(_UPDATE, store_provenances(conn, [found], updates, set(), _I_PROVENANCE))
    # TTFT given by metric exemplars is not in the raw spans: given again (tracetui.store.metrics).
    conn.execute(f"UPDATE metric_exemplars SET applied = 0 WHERE trace_id IN ({marks})", trace_ids)
    waiting = pending_exemplars(conn, trace_ids)
    if waiting:
        apply_exemplars(conn, waiting)
    if found.evaluations:
        conn.executemany(INSERT_EVALUATION, found.evaluations)
    response_ids.update(_reindex_log_evaluations(conn, trace_ids))
    if response_ids and conn.execute("SELECT 1 FROM evaluations WHERE span_id IS NULL LIMIT 1").fetchone():
        resolve_evaluations(conn, response_ids, trace_ids)

    # The trace rows, rebuilt from their spans; their change time moves only where something changed.
    rows_before = _trace_rows(conn, marks, trace_ids)
    recompute_traces(conn, trace_ids, keep_updated_ns=True)
    update_timing(conn, trace_ids)
    now = time.time_ns()
    changed = [(now, t) for t, row in _trace_rows(conn, marks, trace_ids).items() if row != rows_before.get(t)]
    conn.executemany("UPDATE traces SET updated_ns = ? WHERE trace_id = ?", changed)

    after = trace_totals(conn, trace_ids)
    deltas = [sum(a[i] - before.get(t, (0, 0, 0.0))[i] for t, a in after.items()) for i in range(3)]
    add_meta(conn, llm_calls=deltas[0], tokens=deltas[1], cost_usd=deltas[2])
    return len(updates)


def _trace_rows(conn, marks: str, trace_ids: list[bytes]) -> dict[bytes, tuple]:
    cursor = conn.execute(f"SELECT * FROM traces WHERE trace_id IN ({marks})", trace_ids)
    return {row[1]: row for row in cursor}  # column 1 is trace_id (schema v1)


def _reindex_log_evaluations(conn, trace_ids: list[bytes] | None) -> set[str]:
    """Evaluations carried by the log records of ``trace_ids`` (None: of records without a trace).

    Returns the response ids they name, for resolving.
    """
    params: list[object]
    names = [evals.EVENT_NAME, *sorted(evals.FEEDBACK_EVENTS)]
    named = f"event_name IN ({','.join('?' * len(names))})"
    if trace_ids is None:
        sql, params = f"SELECT raw FROM logs WHERE trace_id IS NULL AND {named}", list(names)
    else:
        marks = ",".join("?" * len(trace_ids))
        sql = f"SELECT raw FROM logs WHERE trace_id IN ({marks}) AND {named}"
        params = [*trace_ids, *names]
    found = Decoded()
    for (raw,) in conn.execute(sql, params).fetchall():
        add_evaluations(found, evals.from_log_record(LogRecord.FromString(raw)))
    if found.evaluations:
        conn.executemany(INSERT_EVALUATION, found.evaluations)
    return {e[2] for e in found.evaluations if e[2]}

"""Writing decoded exports: spans inserted, trace rows kept in step.

:class:`Committer` is one read-write connection that commits decoded
exports, each transaction under the receiver's write lock
(tracetui.store.lock). Each ingest worker process has one
(tracetui.ingest.workers), and so does the receiver's :class:`Writer`.

:class:`Writer` is the receiver's writer thread. Handler threads that decoded
an export in the receiver process call :meth:`Writer.submit` and wait on the
returned ticket; the thread drains the queue, writes every waiting request in
one transaction, commits, then wakes the handlers. It also records the
receiver's status and owns the checkpoint thread. Every commit, wherever it
runs, enforces the retention limits in its own transaction
(tracetui.store.retention). Either way an export is acknowledged only after
its spans are durable.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tracetui.llm.timing import Call, analyze
from tracetui.model.rows import COL, LOG_COLUMNS, SPAN_COLUMNS, SPLIT_KEYS, Decoded, Source
from tracetui.store import blobs, rollup
from tracetui.store.batch import (
    ANALYSIS_COLUMNS,
    MAX_ANALYZED_SPANS,
    NO_ANALYSIS,
    TIMING_FIELDS,
    CallInput,
    input_of_raw,
    no_timing,
    prepare,
    timing_result,
)
from tracetui.store.checkpoint import RESTART_FACTOR, WAL_BYTES, Checkpointer, bound_wal
from tracetui.store.health import HealthFile, ThrottledLog, describe_failure, no_room
from tracetui.store.lock import WriteLock
from tracetui.store.metrics import apply_exemplars, pending_exemplars, write_metrics
from tracetui.store.retention import Retention, enforce_on_metrics, evict_over_limits
from tracetui.store.schema import add_meta, connect_writer

log = logging.getLogger(__name__)
#: Failed commits repeat (a full disk fails every one): one log line every few seconds says it.
_failures = ThrottledLog(log)

#: An export is answered "retry later" rather than queued when the spans already
#: waiting would take the writer longer than this: keeps acks prompt under overload
#: (exporters time out after 10 s by default and resend, adding work).
MAX_BACKLOG_SECONDS = 2.0
#: Most spans written in one transaction; more waiting requests go in the next.
MAX_SPANS_PER_COMMIT = 20_000
HEARTBEAT_SECONDS = 2.0

_INSERT_SOURCE = (
    "INSERT INTO sources(id, digest, service, resource, scope_name, scope_version, scope, schema_url) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_INSERT_SPAN = "INSERT OR IGNORE INTO spans({}) VALUES ({})".format(
    ", ".join((*SPAN_COLUMNS, *ANALYSIS_COLUMNS)), ", ".join("?" * (len(SPAN_COLUMNS) + len(ANALYSIS_COLUMNS)))
)
_INSERT_LOG = "INSERT OR IGNORE INTO logs({}) VALUES ({})".format(
    ", ".join(LOG_COLUMNS), ", ".join("?" * len(LOG_COLUMNS))
)
_I_SOURCE, _I_LOG_SOURCE = COL["source_id"], LOG_COLUMNS.index("source_id")

_I_RESPONSE = COL["response_id"]
_I_TRACE = COL["trace_id"]

_CALLS_OF_TRACE = """
SELECT span_id, parent_span_id, llm_kind, request_model, response_model, status_code, start_ns, end_ns,
       ttft_ns, attempt_offset_ns, resend_count, link_span_id, input_tokens, output_tokens, cost_usd, cost_source,
       http_status, {provenance}, {analysis}, name
FROM spans WHERE trace_id = ? AND (llm_kind IS NOT NULL OR http_status IS NOT NULL)
""".format(provenance=blobs.provenance_sql("provenance"), analysis=", ".join(ANALYSIS_COLUMNS))
_N_CALL_FIELDS = 18
_N_ANALYSIS = len(ANALYSIS_COLUMNS)
# One result can arrive by two routes (a span event and a log record): stored
# once (the evaluations_once index), with both routes named in its source.
INSERT_EVALUATION = (
    "INSERT INTO evaluations(trace_id, span_id, response_id, name, score, label, explanation, source, time_ns) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(trace_id, ifnull(span_id, ifnull(response_id, '')), name, ifnull(score, 'none'), ifnull(label, '')) "
    "DO UPDATE SET source = source || ' + ' || excluded.source WHERE instr(source, excluded.source) = 0"
)
# Evaluations that name only a response id (gen_ai.response.id) wait, unresolved, for the span
# that produced it. spans.response_id has no index (it cost every LLM span ~9 % of ingest
# throughput for a look-up that is rarely needed): the span is looked for in the evaluation's
# own trace (by the trace index), and for an evaluation that names no trace among the traces
# just written, then in the whole table (a scan, once, when such an evaluation arrives).
_UNRESOLVED = (
    "SELECT id, trace_id, response_id, name, score, label, source FROM evaluations "
    "WHERE span_id IS NULL AND response_id IN ({})"
)
_PRODUCER_IN_TRACE = "SELECT span_id FROM spans WHERE trace_id = ? AND response_id = ? ORDER BY id LIMIT 1"
_PRODUCER_IN_TRACES = (
    "SELECT trace_id, span_id FROM spans WHERE trace_id IN ({}) AND response_id = ? ORDER BY id LIMIT 1"
)
_PRODUCER_ANYWHERE = "SELECT trace_id, span_id FROM spans WHERE response_id = ? ORDER BY id LIMIT 1"
# The attached copy of a result that also came by another route names that route too.
_MERGE_SOURCE = """
UPDATE evaluations SET source = source || ' + ' || :source
WHERE trace_id = :trace_id AND span_id = :span_id AND name = :name AND ifnull(score, 'none') = ifnull(:score, 'none')
  AND ifnull(label, '') = ifnull(:label, '') AND instr(source, :source) = 0
"""
_UPDATE_TRACE_TIMING = (
    "UPDATE traces SET retries = :retries, fallbacks = :fallbacks, llm_calls = :llm_calls, "
    "input_tokens = :input_tokens, output_tokens = :output_tokens, cost_usd = :cost_usd, "
    "unpriced_calls = :unpriced_calls, tokenless_calls = :tokenless_calls, slowest_span_id = :slowest_span_id, slowest_name = :slowest_name, "
    "slowest_ns = :slowest_ns, {} WHERE trace_id = :trace_id"
).format(", ".join(f"split_{key}_ns = :split_{key}_ns" for key in SPLIT_KEYS))
_UPDATE_OTHER_TIME = """
UPDATE traces SET split_other_ns = max(0, (end_ns - start_ns) - (split_retry_ns + split_fallback_ns + split_ttft_ns
                                      + split_decode_ns + split_response_ns + split_tool_ns))
WHERE trace_id = ?
"""


def trace_totals(conn: sqlite3.Connection, trace_ids: list[bytes]) -> dict[bytes, tuple[int, int, float]]:
    """(LLM calls, tokens, cost) of the traces that exist among ``trace_ids``."""
    totals: dict[bytes, tuple[int, int, float]] = {}
    for i in range(0, len(trace_ids), 500):
        chunk = trace_ids[i : i + 500]
        for row in conn.execute(
            "SELECT trace_id, llm_calls, input_tokens + output_tokens, coalesce(cost_usd, 0) FROM traces "
            f"WHERE trace_id IN ({','.join('?' * len(chunk))})",
            chunk,
        ):
            totals[row[0]] = row[1:]
    return totals


def resolve_evaluations(conn: sqlite3.Connection, response_ids, near=()) -> None:
    """Attach evaluations that named only a response id to the span that produced it.

    ``response_ids``: those to try (of new evaluations, and of spans just
    written); ``near``: the traces of those spans, where an evaluation that
    names no trace looks first. One result can arrive twice (a span event and
    a log record): when the resolved row would duplicate one already attached,
    the unresolved copy goes and its source is added to the attached one's.
    """
    ids = list(response_ids)
    traces = list(dict.fromkeys(near))
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        for row_id, trace_id, response_id, name, score, label, source in conn.execute(
            _UNRESOLVED.format(",".join("?" * len(chunk))), chunk
        ).fetchall():
            producer = _producer(conn, trace_id, response_id, traces)
            if producer is None:
                continue  # its span has not arrived yet
            if conn.execute(
                "UPDATE OR IGNORE evaluations SET trace_id = ?, span_id = ? WHERE id = ?", (*producer, row_id)
            ).rowcount:
                continue
            # the same result is attached already (it came by another route too)
            conn.execute(_MERGE_SOURCE, {"source": source, "trace_id": producer[0], "span_id": producer[1],
                                         "name": name, "score": score, "label": label})  # fmt: skip
            conn.execute("DELETE FROM evaluations WHERE id = ?", (row_id,))


def _producer(
    conn: sqlite3.Connection, trace_id: bytes, response_id: str, near: list[bytes]
) -> tuple[bytes, bytes] | None:
    """(trace id, span id) of the span that returned ``response_id``: in ``trace_id``, or anywhere when that is empty."""
    if trace_id:
        found = conn.execute(_PRODUCER_IN_TRACE, (trace_id, response_id)).fetchone()
        return (trace_id, found[0]) if found else None
    for i in range(0, len(near), 500):
        chunk = near[i : i + 500]
        found = conn.execute(_PRODUCER_IN_TRACES.format(",".join("?" * len(chunk))), (*chunk, response_id)).fetchone()
        if found:
            return found
    return conn.execute(_PRODUCER_ANYWHERE, (response_id,)).fetchone()


def recompute_traces(
    conn: sqlite3.Connection, trace_ids, now: int | None = None, keep_updated_ns: bool = False
) -> None:
    """Rebuild trace rows from their stored spans (duplicates in a batch, reindex).

    ``keep_updated_ns``: leave each row's change time as it is (reindex sets it where something changed).
    """
    now = None if keep_updated_ns else (now or time.time_ns())
    conn.executemany(_RECOMPUTE_TRACE, [{"trace_id": t, "now": now} for t in trace_ids])


def update_timing(conn: sqlite3.Connection, trace_ids) -> None:
    """Re-analyze stored traces: retry/fallback flags, counted calls, totals, slowest call, time split.

    Runs inside the caller's transaction, reading each trace's calls back
    (a few columns, by the trace index).
    """
    trace_ids = list(trace_ids)
    bounds: dict[bytes, tuple] = {}
    for i in range(0, len(trace_ids), 500):
        chunk = trace_ids[i : i + 500]
        for row in conn.execute(
            f"SELECT trace_id, start_ns, end_ns, span_count FROM traces WHERE trace_id IN ({','.join('?' * len(chunk))})",
            chunk,
        ):
            bounds[row[0]] = row[1:]
    span_updates: list[tuple] = []
    trace_updates: list[dict[str, object]] = []
    for trace_id in trace_ids:
        found = bounds.get(trace_id)
        if found is None or found[2] > MAX_ANALYZED_SPANS:
            continue
        calls: list[Call] = []
        known: dict[bytes, tuple] = {}
        names: dict[bytes, str] = {}
        for r in conn.execute(_CALLS_OF_TRACE, (trace_id,)):
            calls.append(Call(*r[:_N_CALL_FIELDS]))
            known[r[0]] = r[_N_CALL_FIELDS : _N_CALL_FIELDS + _N_ANALYSIS]
            names[r[0]] = r[-1]
        parents: dict[bytes, bytes | None] = {}
        if sum(1 for c in calls if c.kind in ("llm", "embedding")) > 1:
            # nesting between model calls can go through any span
            parents = dict(conn.execute("SELECT span_id, parent_span_id FROM spans WHERE trace_id = ?", (trace_id,)))
        result = timing_result(analyze(calls, found[0], found[1], parents, _stored_inputs(conn, trace_id)), names)
        for span_id, values in result.span_values.items():
            if known.get(span_id, NO_ANALYSIS) != values:
                span_updates.append((*values, trace_id, span_id))
        trace_updates.append({"trace_id": trace_id, **result.trace_values})
    if span_updates:
        conn.executemany(_UPDATE_SPAN_TIMING, span_updates)
    if trace_updates:
        conn.executemany(_UPDATE_TRACE_TIMING, trace_updates)


_UPDATE_SPAN_TIMING = "UPDATE spans SET {} WHERE trace_id = ? AND span_id = ?".format(
    ", ".join(f"{c} = ?" for c in ANALYSIS_COLUMNS)
)


def _stored_inputs(conn: sqlite3.Connection, trace_id: bytes):
    """``analyze``'s ``input_of`` for a stored trace: reads the call's raw span (asked only after failures)."""

    def input_of(call: Call) -> CallInput | None:
        found = conn.execute("SELECT raw FROM spans WHERE trace_id = ? AND span_id = ?", (trace_id, call.span_id))
        row = found.fetchone()
        return input_of_raw(blobs.Blobs(conn).expand(row[0])) if row else None

    return input_of


class Overloaded(Exception):
    """The writer is too far behind; the exporter should retry later."""


class StoreUnavailable(Exception):
    """The database refused the write (locked, disk full...); retryable. The message says why."""


@dataclass(slots=True)
class Ticket:
    """One submitted request; ``wait`` returns once it is committed or failed."""

    decoded: Decoded
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)


_INSERT_TRACE = """
INSERT INTO traces(trace_id, root_span_id, root_name, root_start_ns, first_name, service, start_ns, end_ns,
                   span_count, error_count, llm_calls, input_tokens, output_tokens, cost_usd, unpriced_calls,
                   session_id, updated_ns, {timing})
VALUES (:trace_id, :root_span_id, :root_name, :root_start_ns, :first_name, :service, :start_ns, :end_ns,
        :span_count, :errors, :llm_calls, :input_tokens, :output_tokens, :cost_usd, :unpriced_calls,
        :session_id, :now, {timing_params})
""".format(timing=", ".join(TIMING_FIELDS), timing_params=", ".join(f":{f}" for f in TIMING_FIELDS))
# Merge a batch summary into an existing row. The root (earliest parentless
# span) replaces "no root yet" when it arrives after its children.
_MERGE_TRACE = """
UPDATE traces SET
    root_span_id  = CASE WHEN :root_start_ns IS NOT NULL AND (root_start_ns IS NULL OR :root_start_ns < root_start_ns)
                         THEN :root_span_id ELSE root_span_id END,
    root_name     = CASE WHEN :root_start_ns IS NOT NULL AND (root_start_ns IS NULL OR :root_start_ns < root_start_ns)
                         THEN :root_name ELSE root_name END,
    service       = CASE WHEN :root_start_ns IS NOT NULL AND (root_start_ns IS NULL OR :root_start_ns < root_start_ns)
                         THEN :service
                         WHEN root_start_ns IS NULL AND :start_ns < start_ns THEN :service
                         ELSE service END,
    first_name    = CASE WHEN :start_ns < start_ns THEN :first_name ELSE first_name END,
    root_start_ns = CASE WHEN :root_start_ns IS NOT NULL AND (root_start_ns IS NULL OR :root_start_ns < root_start_ns)
                         THEN :root_start_ns ELSE root_start_ns END,
    start_ns      = min(start_ns, :start_ns),
    end_ns        = max(end_ns, :end_ns),
    span_count    = span_count + :span_count,
    error_count   = error_count + :errors,
    llm_calls     = llm_calls + :llm_calls,
    input_tokens  = input_tokens + :input_tokens,
    output_tokens = output_tokens + :output_tokens,
    cost_usd      = CASE WHEN :cost_usd IS NULL THEN cost_usd ELSE coalesce(cost_usd, 0) + :cost_usd END,
    unpriced_calls = unpriced_calls + :unpriced_calls,
    session_id    = CASE WHEN :root_start_ns IS NOT NULL AND :session_id IS NOT NULL THEN :session_id
                         ELSE coalesce(session_id, :session_id) END,
    updated_ns    = :now
WHERE trace_id = :trace_id
"""
# Rebuild a trace row from its stored spans (used when a batch held duplicates,
# so incremental sums would count them twice). Ties on start time go to the
# span that arrived first (lowest id), as in the incremental path.
_RECOMPUTE_TRACE = """
WITH s AS (SELECT * FROM spans WHERE trace_id = :trace_id),
     root AS (SELECT span_id, name, start_ns, service FROM s WHERE parent_span_id IS NULL
              ORDER BY start_ns, id LIMIT 1),
     first AS (SELECT name, service FROM s ORDER BY start_ns, id LIMIT 1)
UPDATE traces SET
    root_span_id  = (SELECT span_id FROM root),
    root_name     = (SELECT name FROM root),
    root_start_ns = (SELECT start_ns FROM root),
    first_name    = (SELECT name FROM first),
    service       = coalesce((SELECT service FROM root), (SELECT service FROM first)),
    start_ns      = (SELECT min(start_ns) FROM s),
    end_ns        = (SELECT max(end_ns) FROM s),
    span_count    = (SELECT count(*) FROM s),
    error_count   = (SELECT count(*) FROM s WHERE status_code = 2),
    llm_calls     = (SELECT count(*) FROM s WHERE llm_kind = 'llm'),
    input_tokens  = (SELECT coalesce(sum(input_tokens), 0) FROM s WHERE llm_kind IN ('llm', 'embedding')),
    output_tokens = (SELECT coalesce(sum(output_tokens), 0) FROM s WHERE llm_kind IN ('llm', 'embedding')),
    cost_usd      = (SELECT sum(cost_usd) FROM s WHERE llm_kind IN ('llm', 'embedding')),
    unpriced_calls = (SELECT count(*) FROM s WHERE llm_kind IN ('llm', 'embedding') AND cost_usd IS NULL
                      AND (input_tokens > 0 OR output_tokens > 0)),
    session_id    = (SELECT session_id FROM s WHERE session_id IS NOT NULL
                     ORDER BY parent_span_id IS NOT NULL, start_ns LIMIT 1),
    updated_ns    = coalesce(:now, updated_ns)
WHERE trace_id = :trace_id
"""


class Committer:
    """One read-write connection that commits decoded exports, a transaction at a time.

    The receiver's writer thread has one (:class:`Writer`), and so does each
    ingest worker process (tracetui.ingest.workers). Every transaction runs
    under the write lock (tracetui.store.lock), which keeps their
    transactions apart without SQLite's sleeping busy handler.

    Args:
        path: the database file (created, owner-only, if missing).
        wal_bytes: the checkpoint threshold (tracetui.store.checkpoint); this
            connection only ever copies frames itself when the WAL has grown
            past ``LIMIT_FACTOR`` times it.
        retention: the limits every commit enforces in its own transaction
            (tracetui.store.retention): eviction keeps pace with ingest because
            it is part of it.
        cache_kib: this connection's SQLite page cache, when not the default
            of tracetui.store.schema.connect_writer (ingest workers: a smaller one).
    """

    def __init__(
        self, path: Path, wal_bytes: int = WAL_BYTES, retention: Retention | None = None, cache_kib: int | None = None
    ) -> None:
        self.path = Path(path)
        self.retention = retention or Retention()
        self.conn = connect_writer(self.path)
        if cache_kib is not None:
            self.conn.execute(f"PRAGMA cache_size=-{cache_kib:d}")
        # WAL checkpoints run on their own thread (tracetui.store.checkpoint).
        self.conn.execute("PRAGMA wal_autocheckpoint=0")
        self.conn.execute(f"PRAGMA journal_size_limit={RESTART_FACTOR * wal_bytes:d}")
        self.lock = WriteLock(self.path)  # its own file handle: see tracetui.store.lock
        #: Where this process reports write failures for the UI (tracetui.store.health).
        self.health = HealthFile(self.path)
        self.wal_bytes = wal_bytes
        #: sources.id by digest. Valid while nobody else writes: cleared when
        #: PRAGMA data_version says another connection committed (another
        #: ingest worker, `tracetui purge`, an import) and when a transaction rolls back.
        self._source_ids: dict[bytes, int] = {}
        #: provenances.id this connection stored or found (cleared with ``_source_ids``).
        self._provenance_ids: set[bytes] = set()
        self._data_version: int | None = None
        #: Whether this writer queued traces for the Stats rollup (summed at close when no job did).
        self._rollup_queued = False

    def commit(self, parts: list[Decoded], status: dict | None = None) -> int:
        """Write ``parts`` (and the receiver's status) in one transaction; returns the new spans.

        Raises StoreUnavailable (locked, disk full...), saying why, with nothing written.
        """
        conn = self.conn
        started_ns = time.time_ns()
        with self.lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
                written = self._write(conn, parts) if parts else 0
                self._evict(conn, parts, written)
                # the Stats rollup (tracetui.store.rollup): after eviction, so that evicted traces leave it too
                self._roll_up(conn, [trace_id for part in parts for trace_id in part.traces])
                if status is not None:
                    conn.execute(
                        "INSERT INTO meta(key, value) VALUES ('receiver', ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (json.dumps(status),),
                    )
                conn.execute("COMMIT")
            except BaseException as exc:
                self._source_ids.clear()
                self._provenance_ids.clear()
                self._rollback()
                if isinstance(exc, sqlite3.Error):
                    raise self._failed(exc) from exc
                raise
            bound_wal(conn, self.path, self.wal_bytes)  # still holding the lock
        if parts:  # (a status heartbeat is too small to say the disk has room again)
            self.health.clear(started_ns)
        return written

    def _roll_up(self, conn: sqlite3.Connection, trace_ids: list[bytes]) -> None:
        """Queue these traces for the Stats rollup (the rollup job sums them; tracetui.store.rollup)."""
        if trace_ids:
            rollup.queue(conn, trace_ids)
            self._rollup_queued = True

    def _sum_queued(self) -> None:
        """Sum what is queued for the Stats rollup, rollup.DRAIN_BATCH traces a transaction (what is done
        stays done if the process is stopped meanwhile; the rollup job sums the rest)."""
        try:
            taken = rollup.DRAIN_BATCH
            while taken == rollup.DRAIN_BATCH:
                with self.lock.transaction(self.conn):
                    taken = rollup.drain_step(self.conn)
        except sqlite3.Error as exc:
            log.warning("closing database: Stats rollup: %s", exc)

    def _rollback(self) -> None:
        """Undo the failed transaction, if SQLite has not already (it does itself on a full disk).

        Never raises: the error that made the transaction fail is the one to report.
        """
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error as exc:
                _failures.log(logging.WARNING, "rollback", "rollback failed: %s", exc)

    def _failed(self, exc: sqlite3.Error) -> StoreUnavailable:
        """Report a failed commit (to the UI through the health file, to the log, throttled)."""
        message = describe_failure(exc, self.path)
        problem = no_room(exc, self.path) or "write failed"
        self.health.report(problem, message)
        _failures.log(logging.ERROR, problem, "write failed: %s", message)
        return StoreUnavailable(message)

    def _evict(self, conn: sqlite3.Connection, parts: list[Decoded], written: int) -> None:
        """Retention, in the commit's transaction (counted in ``meta``): never the traces this commit wrote into."""
        if self.retention.active:
            protect = {trace_id for part in parts for trace_id in part.traces}
            evict_over_limits(conn, self.retention, protect=protect, added_spans=written)

    def close(self, optimize: bool = False) -> None:
        if self._rollup_queued:  # what is still queued is summed before it goes (an import, a test, `demo`)
            self._sum_queued()
        try:
            if optimize:
                self.conn.execute("PRAGMA optimize")
            self.conn.close()
        except sqlite3.Error as exc:
            log.warning("closing database: %s", exc)
        self.lock.close()
        self.health.close()

    def _write(self, conn: sqlite3.Connection, parts: list[Decoded]) -> int:
        """Insert one group of requests; returns the number of new spans."""
        rows: list[tuple] = []
        logs: list[tuple] = []
        evaluations: list[tuple] = []
        sources: dict[bytes, Source] = {}
        for decoded in parts:
            sources.update(decoded.sources)
            rows.extend(decoded.spans)
            logs.extend(decoded.logs)
            evaluations.extend(decoded.evaluations)
        remap = self._store_sources(conn, sources)
        if remap:
            rows = _remapped(rows, _I_SOURCE, remap)
            logs = _remapped(logs, _I_LOG_SOURCE, remap)
        if logs:
            before = conn.total_changes
            conn.executemany(_INSERT_LOG, logs)
            add_meta(conn, log_count=conn.total_changes - before)
        inserted = 0
        if rows:
            # first: writing spans may read some back (timing analysis)
            blobs.store(conn, parts, len(rows))
            rows = blobs.store_provenances(conn, parts, rows, self._provenance_ids)
            inserted = self._write_spans(conn, rows, [d for d in parts if d.spans])
        self._write_metrics(conn, parts, rows, remap)
        if evaluations:
            conn.executemany(INSERT_EVALUATION, evaluations)
        # Evaluations that named only a response id wait for the span that produced it;
        # most batches have none waiting, and then this costs one indexed lookup.
        if conn.execute("SELECT 1 FROM evaluations WHERE span_id IS NULL LIMIT 1").fetchone():
            response_ids = {e[2] for e in evaluations if e[1] is None and e[2]}
            near = {row[_I_TRACE] for row in rows if row[_I_RESPONSE] is not None}
            response_ids.update(row[_I_RESPONSE] for row in rows if row[_I_RESPONSE] is not None)
            if response_ids:
                resolve_evaluations(conn, response_ids, near)
        return inserted

    def _write_metrics(self, conn: sqlite3.Connection, parts: list[Decoded], rows: list[tuple], remap) -> None:
        """GenAI metric points, and exemplar values for spans (tracetui.store.metrics), then the bars they change."""
        metrics = [d.metrics for d in parts if d.metrics is not None]
        changed: set[bytes] = set()
        if rows:  # spans named by exemplars that arrived before them
            waiting = pending_exemplars(conn, {row[_I_TRACE] for row in rows})
            if waiting:
                changed |= apply_exemplars(conn, waiting)
        if metrics:
            changed |= write_metrics(conn, metrics, remap)
        if changed:
            update_timing(conn, changed)

    def _store_sources(self, conn: sqlite3.Connection, sources: dict[bytes, Source]) -> dict[int, int]:
        """Insert the batch's new sources; returns {decoded source id: stored id} where they differ.

        A source's id is derived from its digest (tracetui.otlp.decode), so rows
        arrive with their final source id and the map is empty, except for
        sources first stored by an older tracetui (sequential ids).
        """
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:  # another connection wrote (purge, import): forget what we knew
            self._source_ids.clear()
            self._provenance_ids.clear()
            self._data_version = version
        known = self._source_ids
        missing = [s for digest, s in sources.items() if digest not in known]
        if missing:
            conn.executemany(
                _INSERT_SOURCE,
                [(s.id, s.digest, s.service, s.resource, s.scope_name, s.scope_version, s.scope, s.schema_url)
                 for s in missing],
            )  # fmt: skip
            self._load_source_ids(conn, [s.digest for s in missing])
            taken = [s for s in missing if s.digest not in known]
            if taken:  # the derived id belongs to another source (a 64-bit collision): a fresh id then
                conn.executemany(
                    _INSERT_SOURCE,
                    [(None, s.digest, s.service, s.resource, s.scope_name, s.scope_version, s.scope, s.schema_url)
                     for s in taken],
                )  # fmt: skip
                self._load_source_ids(conn, [s.digest for s in taken])
        return {s.id: known[digest] for digest, s in sources.items() if known[digest] != s.id}

    def _load_source_ids(self, conn: sqlite3.Connection, digests: list[bytes]) -> None:
        for i in range(0, len(digests), 500):
            chunk = digests[i : i + 500]
            self._source_ids.update(
                conn.execute(f"SELECT digest, id FROM sources WHERE digest IN ({','.join('?' * len(chunk))})", chunk)
            )

    def _write_spans(self, conn: sqlite3.Connection, rows: list[tuple], parts: list[Decoded]) -> int:
        """Insert spans and keep their trace rows in step, in the caller's transaction.

        ``parts`` are the batch's decoded exports, each with its per-trace
        summaries and, for traces whose spans all arrived in it, the timing
        analysis (tracetui.store.batch). A trace first seen in this batch, in
        one export, is written complete from those; traces that already
        existed (or arrived split over several exports of the batch) are
        merged, then re-analyzed from the database.
        """
        first_part: dict[bytes, int] = {}
        split: set[bytes] = set()  # new traces whose spans came in several exports of this batch
        for n, part in enumerate(parts):
            for trace_id in part.traces:
                if first_part.setdefault(trace_id, n) != n:
                    split.add(trace_id)
        trace_ids = list(first_part)
        before = trace_totals(conn, trace_ids)

        start = conn.total_changes
        conn.executemany(_INSERT_SPAN, rows)
        inserted = conn.total_changes - start
        complete = inserted == len(rows)

        now = time.time_ns()
        inserts: list[dict[str, object]] = []
        merges: list[dict[str, object]] = []
        reanalyze: set[bytes] = set()
        for n, part in enumerate(parts):
            for trace_id, summary in part.traces.items():
                params = {**summary, "now": now}
                if trace_id in before or first_part[trace_id] != n:
                    merges.append(params)
                    # HTTP attempts that arrive after their model call (an export of their own) change its retries
                    if summary["calls"] or (summary["attempts"] and before.get(trace_id, (0,))[0]):
                        reanalyze.add(trace_id)
                    continue
                timing = part.timing.get(trace_id) if complete and trace_id not in split else None
                if timing is not None:
                    params.update(timing)
                else:
                    params.update(no_timing(summary["start_ns"], summary["end_ns"]))
                    if summary["calls"] and summary["span_count"] <= MAX_ANALYZED_SPANS:
                        reanalyze.add(trace_id)
                inserts.append(params)
        conn.executemany(_INSERT_TRACE, inserts)
        if complete:
            conn.executemany(_MERGE_TRACE, merges)
        else:
            # Some spans were already stored (a resent export): rebuild the
            # touched trace rows from the spans table instead of adding.
            recompute_traces(conn, trace_ids, now)
            reanalyze = set(trace_ids)
        if reanalyze:
            update_timing(conn, reanalyze)
        # Traces merged without new model or tool spans only grew in time: the new wall-clock is "other" time.
        others = [(t,) for t in (*before, *split) if t not in reanalyze]
        if others:
            conn.executemany(_UPDATE_OTHER_TIME, others)

        after = trace_totals(conn, trace_ids)
        deltas = [sum(a[i] - before.get(t, (0, 0, 0.0))[i] for t, a in after.items()) for i in range(3)]
        add_meta(conn, span_count=inserted, trace_count=len(trace_ids) - len(before), llm_calls=deltas[0],
                  tokens=deltas[1], cost_usd=deltas[2])  # fmt: skip
        return inserted


class Writer:
    """The receiver's writer thread: a queue of decoded exports, group-committed.

    Exports decoded in the receiver process (``--decode-workers 0``, imports,
    tests) are written here; the ingest workers write their own
    (tracetui.ingest.workers). Either way this thread also records the
    receiver's status (its heartbeat commits evict by age while nothing
    arrives) and owns the checkpoint thread.

    Args:
        path: the database file (created, owner-only, if missing).
        max_pending_spans: spans allowed to wait for the writer before
            :meth:`submit` raises :class:`Overloaded`.
        retention: limits every commit enforces (tracetui.store.retention).
        wal_bytes: WAL size that triggers a checkpoint (on its own thread).
    """

    def __init__(
        self,
        path: Path,
        max_pending_spans: int = 50_000,
        retention: Retention | None = None,
        wal_bytes: int = WAL_BYTES,
    ) -> None:
        self.path = Path(path)
        self.max_pending_spans = max_pending_spans
        self.retention = retention or Retention()
        self._committer: Committer | None = Committer(self.path, wal_bytes=wal_bytes, retention=self.retention)
        self._checkpointer: Checkpointer | None = None
        self._wal_bytes = wal_bytes
        self._cond = threading.Condition()
        self._queue: deque[Ticket] = deque()
        self._pending_spans = 0
        self._stopping = False
        self._status: dict[str, object] = {}
        self._status_dirty = False
        self._thread = threading.Thread(target=self._run, name="tracetui-writer", daemon=True)
        self.spans_written = 0
        self.commits = 0
        #: Spans per second the writer commits (smoothed); None until measured.
        self._rate: float | None = None
        #: Spans waiting to be written elsewhere (the ingest workers): shown in the
        #: status, and the "overloaded" state lasts until they are few again.
        self.backlog: Callable[[], int] = lambda: 0

    @property
    def _conn(self) -> sqlite3.Connection:
        assert self._committer is not None, "writer closed"
        return self._committer.conn

    @property
    def lock(self) -> WriteLock:
        """The write lock, as this process holds it (the checkpoint thread takes it too)."""
        assert self._committer is not None, "writer closed"
        return self._committer.lock

    # --- called from any thread ---------------------------------------------

    def start(self) -> None:
        self._checkpointer = Checkpointer(self.path, self.lock, self._wal_bytes)
        self._checkpointer.start()
        self._thread.start()

    def submit(self, decoded: Decoded) -> Ticket:
        """Prepare and queue a batch as decoded (``decode_request``). Raises Overloaded when the queue is full.

        The one place a batch bound for the writer thread is prepared (summaries and timing
        analysis, tracetui.store.batch.prepare): in the caller's thread, before it queues, so
        the writer thread only writes. The ingest workers, which commit without a Writer,
        prepare theirs before they take the write lock.
        """
        if decoded.spans and not decoded.traces:  # prepared already: submitted again after Overloaded
            prepare(decoded)
            blobs.compact_rows(decoded)  # after prepare, which reads the spans' original bytes
        ticket = Ticket(decoded)
        n = decoded.count
        with self._cond:
            if self._stopping:
                raise StoreUnavailable("receiver is shutting down")
            backlog_s = self._backlog_seconds()
            too_many = self._pending_spans + n > self.max_pending_spans
            if n and self._pending_spans > 0 and (too_many or backlog_s > MAX_BACKLOG_SECONDS):
                self._set_overloaded()
                raise Overloaded(f"{self._pending_spans} spans waiting to be written (~{backlog_s:.1f}s of work)")
            self._queue.append(ticket)
            self._pending_spans += n
            self._cond.notify()
        return ticket

    def busy(self) -> str | None:
        """Why a new export should be told to retry later, before anyone spends time decoding it."""
        with self._cond:
            if self._stopping:
                return "receiver is shutting down"
            backlog_s = self._backlog_seconds()
            if self._pending_spans >= self.max_pending_spans or backlog_s > MAX_BACKLOG_SECONDS:
                self._set_overloaded()
                return f"tracetui is busy writing ({self._pending_spans} spans waiting, ~{backlog_s:.1f}s of work)"
        return None

    def _backlog_seconds(self) -> float:
        """How long the queued spans will take to write, at the measured rate (under _cond)."""
        return self._pending_spans / self._rate if self._rate else 0.0

    def overloaded(self) -> None:
        """Exports are being turned away elsewhere (the ingest workers): the UI shows it."""
        with self._cond:
            self._set_overloaded()

    def _set_overloaded(self) -> None:
        if self._status and self._status.get("state") != "overloaded":
            self._status["state"] = "overloaded"
            self._status_dirty = True
            self._cond.notify()

    def set_status(self, **status: object) -> None:
        """Record receiver facts in the database (written by the writer thread)."""
        with self._cond:
            self._status.update(status)
            self._status_dirty = True
            self._cond.notify()

    @property
    def pending_spans(self) -> int:
        return self._pending_spans

    def stop(self, timeout: float = 30.0) -> None:
        """Write everything queued, then close the database."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        elif self._committer is not None:
            self._close()

    # --- writer thread -------------------------------------------------------

    def _run(self) -> None:
        next_heartbeat = 0.0
        while True:
            with self._cond:
                while not self._queue and not self._stopping and not self._status_dirty:
                    timeout = max(0.05, next_heartbeat - time.monotonic()) if self._status else None
                    if not self._cond.wait(timeout=timeout):
                        break  # heartbeat due
                batch = self._take_batch()
                stopping = self._stopping and not self._queue
                due = self._status_dirty or (self._status and (stopping or time.monotonic() >= next_heartbeat))
                if due:
                    self._settle_overload()
                status = dict(self._status) if due else None
                self._status_dirty = False
            if status is not None:
                next_heartbeat = time.monotonic() + HEARTBEAT_SECONDS
                status["heartbeat_ns"] = time.time_ns()
                status["pending_spans"] = self._pending_spans + self.backlog()
                if stopping:
                    status["state"] = "stopped"
            if batch or status is not None:
                self._commit(batch, status)  # retention too: every commit evicts what the limits no longer allow
            if status is not None and self.retention.active and not stopping:
                self._enforce_metric_retention()
            if stopping:
                self._close()
                return

    def _enforce_metric_retention(self) -> None:
        """Metric points (few, and not part of the commits' eviction): a bounded round after each heartbeat."""
        try:
            with self.lock:
                enforce_on_metrics(self._conn, self.retention)
        except sqlite3.Error as exc:
            _failures.log(logging.WARNING, "metric retention", "metric retention: %s", exc)

    def _settle_overload(self) -> bool:
        """Back to "listening" once the backlog is under half its limit; whether it changed (under _cond)."""
        if self._status.get("state") != "overloaded":
            return False
        if self._pending_spans + self.backlog() >= self.max_pending_spans // 2:
            return False
        self._status["state"] = "listening"
        return True

    def _take_batch(self) -> list[Ticket]:
        batch: list[Ticket] = []
        spans = 0
        while self._queue and (not batch or spans + self._queue[0].decoded.count <= MAX_SPANS_PER_COMMIT):
            ticket = self._queue.popleft()
            spans += ticket.decoded.count
            batch.append(ticket)
        return batch

    def _commit(self, batch: list[Ticket], status: dict | None) -> None:
        assert self._committer is not None
        started = time.monotonic()
        error: BaseException | None = None
        try:
            self.spans_written += self._committer.commit([t.decoded for t in batch], status)
            self.commits += 1
            if self._checkpointer is not None:
                self._checkpointer.nudge()
            spans = sum(t.decoded.count for t in batch)
            if spans >= 64:
                # How fast the writer drains, smoothed: bounds how long a new export would wait.
                rate = spans / max(1e-6, time.monotonic() - started)
                self._rate = rate if self._rate is None else 0.7 * self._rate + 0.3 * rate
        except StoreUnavailable as exc:  # locked, disk full, I/O error (logged): the exporter retries
            error = exc
        except Exception as exc:  # a bug: never leave a handler waiting forever
            log.exception("write failed")
            error = exc
        with self._cond:
            for ticket in batch:
                self._pending_spans -= ticket.decoded.count
            if self._settle_overload():
                self._status_dirty = True
        for ticket in batch:
            ticket.error = error
            ticket.done.set()

    def _close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        if self._committer is not None:
            self._committer.close(optimize=True)
            self._committer = None


def receiver_status_defaults(host: str, grpc_port: int) -> dict[str, object]:
    return {
        "state": "listening",
        "pid": os.getpid(),
        "grpc": f"{host}:{grpc_port}",
        "started_ns": time.time_ns(),
    }


def _remapped(rows: list[tuple], column: int, ids: dict[int, int]) -> list[tuple]:
    return [(*row[:column], ids[row[column]], *row[column + 1 :]) if row[column] in ids else row for row in rows]

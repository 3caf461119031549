"""The single writer: group commit of decoded spans, trace rows kept in step.

Threads: gRPC handler threads call :meth:`Writer.submit` and wait on the
returned ticket; one writer thread drains the queue, writes every waiting
request in one transaction, commits, then wakes the handlers. An export is
therefore acknowledged only after its spans are durable, and concurrent
exports share one commit. ``sqlite3`` releases the GIL inside SQLite, so the
writer's inserts overlap with request decoding on the other core.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from tracetui.otlp.decode import COL, LOG_COLUMNS, SPAN_COLUMNS, Decoded
from tracetui.store.schema import connect_writer
from tracetui.timing import SPLIT_KEYS, Call, analyze

log = logging.getLogger(__name__)

#: Most spans written in one transaction; more waiting requests go in the next.
MAX_SPANS_PER_COMMIT = 20_000
HEARTBEAT_SECONDS = 2.0

_INSERT_SOURCE = (
    "INSERT INTO sources(digest, service, resource, scope_name, scope_version, scope, schema_url) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(digest) DO NOTHING"
)
# The source column carries the source digest; the subquery swaps in its id
# inside SQLite (cheaper than rebuilding every row tuple in Python).
_INSERT_SPAN = "INSERT OR IGNORE INTO spans({cols}) VALUES ({values})".format(
    cols=", ".join(SPAN_COLUMNS),
    values=", ".join("(SELECT id FROM sources WHERE digest = ?)" if c == "source_id" else "?" for c in SPAN_COLUMNS),
)

_INSERT_LOG = "INSERT OR IGNORE INTO logs({cols}) VALUES ({values})".format(
    cols=", ".join(LOG_COLUMNS),
    values=", ".join("(SELECT id FROM sources WHERE digest = ?)" if c == "source_id" else "?" for c in LOG_COLUMNS),
)

_I_TRACE, _I_SPAN, _I_PARENT, _I_NAME = COL["trace_id"], COL["span_id"], COL["parent_span_id"], COL["name"]
_I_SERVICE, _I_START, _I_END, _I_STATUS = COL["service"], COL["start_ns"], COL["end_ns"], COL["status_code"]
_I_KIND, _I_IN, _I_OUT, _I_COST = COL["llm_kind"], COL["input_tokens"], COL["output_tokens"], COL["cost_usd"]


#: Traces bigger than this are not re-analyzed on every batch (it would cost
#: O(spans) per batch); their split stays as last computed.
MAX_ANALYZED_SPANS = 20_000

_CALLS_OF_TRACE = """
SELECT span_id, parent_span_id, llm_kind, request_model, response_model, status_code, start_ns, end_ns,
       ttft_ns, attempt_offset_ns, resend_count, link_span_id, is_retry, is_fallback, retry_ns
FROM spans WHERE trace_id = ? AND llm_kind IS NOT NULL
"""
_UPDATE_TRACE_TIMING = "UPDATE traces SET retries = :retries, fallbacks = :fallbacks, {} WHERE trace_id = :trace_id".format(
    ", ".join(f"split_{key}_ns = :split_{key}_ns" for key in SPLIT_KEYS)
)
_UPDATE_OTHER_TIME = """
UPDATE traces SET split_other_ns = max(0, (end_ns - start_ns) - (split_retry_ns + split_fallback_ns + split_ttft_ns
                                      + split_decode_ns + split_response_ns + split_tool_ns))
WHERE trace_id = ?
"""
_CALL_COLUMNS = (
    "span_id", "parent_span_id", "llm_kind", "request_model", "response_model", "status_code", "start_ns", "end_ns",
    "ttft_ns", "attempt_offset_ns", "resend_count", "link_span_id",
)  # fmt: skip
_CALL_INDEXES = tuple(COL[c] for c in _CALL_COLUMNS)


def _call_from_row(row: tuple) -> Call:
    return Call(*(row[i] for i in _CALL_INDEXES))


def recompute_traces(conn: sqlite3.Connection, trace_ids, now: int | None = None) -> None:
    """Rebuild trace rows from their stored spans (duplicates in a batch, reindex)."""
    now = now or time.time_ns()
    conn.executemany(_RECOMPUTE_TRACE, [{"trace_id": t, "now": now} for t in trace_ids])


def update_timing(conn: sqlite3.Connection, trace_ids, in_memory: dict[bytes, list[Call]] | None = None) -> None:
    """Store retry/fallback flags and the time split for ``trace_ids`` (inside the caller's transaction).

    ``in_memory`` holds the calls of traces whose spans are all known to the
    caller (none stored before); the others are read back from the database.
    """
    in_memory = in_memory or {}
    span_updates: list[tuple] = []
    trace_updates: list[dict[str, object]] = []
    for trace_id in trace_ids:
        bounds = conn.execute("SELECT start_ns, end_ns, span_count FROM traces WHERE trace_id = ?", (trace_id,)).fetchone()
        if bounds is None or bounds[2] > MAX_ANALYZED_SPANS:
            continue
        known: dict[bytes, tuple] = {}
        calls = in_memory.get(trace_id)
        if calls is None:
            calls = []
            for r in conn.execute(_CALLS_OF_TRACE, (trace_id,)):
                calls.append(Call(*r[:12]))
                known[r[0]] = r[12:]
        analysis = analyze(calls, bounds[0], bounds[1])
        for span_id, timing in analysis.calls.items():
            values = (int(timing.is_retry), int(timing.is_fallback), timing.retry_ns)
            if known.get(span_id, (0, 0, None)) != values:
                span_updates.append((*values, trace_id, span_id))
        trace_updates.append(
            {"trace_id": trace_id, "retries": analysis.retries, "fallbacks": analysis.fallbacks}
            | {f"split_{key}_ns": ns for key, ns in analysis.split.items()}
        )
    if span_updates:
        conn.executemany(
            "UPDATE spans SET is_retry = ?, is_fallback = ?, retry_ns = ? WHERE trace_id = ? AND span_id = ?",
            span_updates,
        )
    if trace_updates:
        conn.executemany(_UPDATE_TRACE_TIMING, trace_updates)


class Overloaded(Exception):
    """The writer is too far behind; the exporter should retry later."""


class StoreUnavailable(Exception):
    """The database refused the write (locked, disk full...); retryable."""


@dataclass(slots=True)
class Ticket:
    """One submitted request; ``wait`` returns once it is committed or failed."""

    decoded: Decoded
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)


@dataclass(slots=True)
class TraceSummary:
    """What a batch of spans adds to one trace row."""

    span_count: int = 0
    start_ns: int = 0
    end_ns: int = 0
    errors: int = 0
    first_name: str = ""
    first_service: str = ""
    root_span_id: bytes | None = None
    root_name: str | None = None
    root_start_ns: int | None = None
    root_service: str | None = None
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None

    def add(self, row: tuple) -> None:
        start, end = row[_I_START], row[_I_END]
        if self.span_count == 0 or start < self.start_ns:
            self.start_ns, self.first_name, self.first_service = start, row[_I_NAME], row[_I_SERVICE]
        if self.span_count == 0 or end > self.end_ns:
            self.end_ns = end
        self.span_count += 1
        if row[_I_STATUS] == 2:
            self.errors += 1
        if row[_I_PARENT] is None and (self.root_start_ns is None or start < self.root_start_ns):
            self.root_span_id, self.root_name = row[_I_SPAN], row[_I_NAME]
            self.root_start_ns, self.root_service = start, row[_I_SERVICE]
        # Only leaf LLM calls count: agent spans often repeat their children's usage.
        if row[_I_KIND] == "llm":
            self.llm_calls += 1
            self.input_tokens += row[_I_IN] or 0
            self.output_tokens += row[_I_OUT] or 0
            if row[_I_COST] is not None:
                self.cost_usd = (self.cost_usd or 0.0) + row[_I_COST]


def summarize(rows: list[tuple]) -> dict[bytes, TraceSummary]:
    summaries: dict[bytes, TraceSummary] = {}
    for row in rows:
        summary = summaries.get(row[_I_TRACE])
        if summary is None:
            summary = summaries[row[_I_TRACE]] = TraceSummary()
        summary.add(row)
    return summaries


_INSERT_TRACE = """
INSERT INTO traces(trace_id, root_span_id, root_name, root_start_ns, first_name, service, start_ns, end_ns,
                   span_count, error_count, llm_calls, input_tokens, output_tokens, cost_usd, updated_ns)
VALUES (:trace_id, :root_span_id, :root_name, :root_start_ns, :first_name, :service, :start_ns, :end_ns,
        :span_count, :errors, :llm_calls, :input_tokens, :output_tokens, :cost_usd, :now)
"""
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
    input_tokens  = (SELECT coalesce(sum(input_tokens), 0) FROM s WHERE llm_kind = 'llm'),
    output_tokens = (SELECT coalesce(sum(output_tokens), 0) FROM s WHERE llm_kind = 'llm'),
    cost_usd      = (SELECT sum(cost_usd) FROM s WHERE llm_kind = 'llm'),
    updated_ns    = :now
WHERE trace_id = :trace_id
"""


class Writer:
    """Owns the read-write connection and the writer thread.

    Args:
        path: the database file (created, owner-only, if missing).
        max_pending_spans: spans allowed to wait for the writer before
            :meth:`submit` raises :class:`Overloaded`.
    """

    def __init__(self, path: Path, max_pending_spans: int = 50_000) -> None:
        self.path = Path(path)
        self.max_pending_spans = max_pending_spans
        self._conn = connect_writer(self.path)
        self._cond = threading.Condition()
        self._queue: deque[Ticket] = deque()
        self._pending_spans = 0
        self._stopping = False
        self._status: dict[str, object] = {}
        self._status_dirty = False
        self._thread = threading.Thread(target=self._run, name="tracetui-writer", daemon=True)
        self.spans_written = 0
        self.commits = 0

    # --- called from any thread ---------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, decoded: Decoded) -> Ticket:
        """Queue a decoded request. Raises Overloaded when the queue is full."""
        ticket = Ticket(decoded)
        n = decoded.count
        with self._cond:
            if self._stopping:
                raise StoreUnavailable("receiver is shutting down")
            if n and self._pending_spans + n > self.max_pending_spans and self._pending_spans > 0:
                raise Overloaded(f"{self._pending_spans} spans waiting to be written")
            self._queue.append(ticket)
            self._pending_spans += n
            self._cond.notify()
        return ticket

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
        elif self._conn is not None:
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
                status = dict(self._status) if due else None
                self._status_dirty = False
            if status is not None:
                next_heartbeat = time.monotonic() + HEARTBEAT_SECONDS
                status["heartbeat_ns"] = time.time_ns()
                status["pending_spans"] = self._pending_spans
                if stopping:
                    status["state"] = "stopped"
            if batch or status is not None:
                self._commit(batch, status)
            if stopping:
                self._close()
                return

    def _take_batch(self) -> list[Ticket]:
        batch: list[Ticket] = []
        spans = 0
        while self._queue and (not batch or spans + self._queue[0].decoded.count <= MAX_SPANS_PER_COMMIT):
            ticket = self._queue.popleft()
            spans += ticket.decoded.count
            batch.append(ticket)
        return batch

    def _commit(self, batch: list[Ticket], status: dict | None) -> None:
        conn = self._conn
        error: BaseException | None = None
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                written = self._write(conn, batch) if batch else 0
                if status is not None:
                    conn.execute(
                        "INSERT INTO meta(key, value) VALUES ('receiver', ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (json.dumps(status),),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self.spans_written += written
            self.commits += 1
        except sqlite3.Error as exc:  # locked, disk full, I/O error: the exporter retries
            log.error("write failed: %s", exc)
            error = StoreUnavailable(f"database write failed: {exc}")
        except Exception as exc:  # a bug: never leave a handler waiting forever
            log.exception("write failed")
            error = exc
        with self._cond:
            for ticket in batch:
                self._pending_spans -= ticket.decoded.count
        for ticket in batch:
            ticket.error = error
            ticket.done.set()

    def _write(self, conn: sqlite3.Connection, batch: list[Ticket]) -> int:
        """Insert one group of requests; returns the number of new spans."""
        rows: list[tuple] = []
        logs: list[tuple] = []
        for ticket in batch:
            decoded = ticket.decoded
            if decoded.sources:
                conn.executemany(
                    _INSERT_SOURCE,
                    [
                        (s.digest, s.service, s.resource, s.scope_name, s.scope_version, s.scope, s.schema_url)
                        for s in decoded.sources.values()
                    ],
                )
            rows.extend(decoded.spans)
            logs.extend(decoded.logs)
        if logs:
            before = conn.total_changes
            conn.executemany(_INSERT_LOG, logs)
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('log_count', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
                (conn.total_changes - before,),
            )
        if not rows:
            return 0
        before = conn.total_changes
        conn.executemany(_INSERT_SPAN, rows)
        inserted = conn.total_changes - before

        summaries = summarize(rows)
        trace_ids = list(summaries)
        existing: set[bytes] = set()
        for i in range(0, len(trace_ids), 500):
            chunk = trace_ids[i : i + 500]
            existing.update(
                r[0]
                for r in conn.execute(
                    f"SELECT trace_id FROM traces WHERE trace_id IN ({','.join('?' * len(chunk))})", chunk
                )
            )
        now = time.time_ns()
        new_ids = [t for t in trace_ids if t not in existing]
        conn.executemany(_INSERT_TRACE, [self._params(t, summaries[t], now) for t in new_ids])
        if inserted == len(rows):
            conn.executemany(_MERGE_TRACE, [self._params(t, summaries[t], now) for t in existing])
        else:
            # Some spans were already stored (a resent export): rebuild the
            # touched trace rows from the spans table instead of adding.
            recompute_traces(conn, trace_ids, now)
        # With duplicates in the batch, in-memory rows are not the truth: re-read every trace.
        self._analyze(conn, rows, set(new_ids) if inserted == len(rows) else set())
        conn.execute(
            "INSERT INTO meta(key, value) VALUES ('span_count', ?), ('trace_count', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
            (inserted, len(new_ids)),
        )
        return inserted

    @staticmethod
    def _analyze(conn: sqlite3.Connection, rows: list[tuple], new_traces: set[bytes]) -> None:
        """Recompute the timing of every trace with LLM-ish spans in ``rows``.

        A trace whose spans all arrived in this batch is analyzed from memory;
        others re-read their calls (a few columns, by the trace index).
        """
        in_memory: dict[bytes, list[Call]] = {}
        touched: set[bytes] = set()
        for row in rows:
            if row[_I_KIND] is not None:
                touched.add(row[_I_TRACE])
                if row[_I_TRACE] in new_traces:
                    in_memory.setdefault(row[_I_TRACE], []).append(_call_from_row(row))
        if touched:
            update_timing(conn, touched, in_memory)
        # Traces that only grew in time (a root or plain span arrived): the new
        # wall-clock is all "other" time, so only that part changes.
        others = {row[_I_TRACE] for row in rows} - touched
        if others:
            conn.executemany(_UPDATE_OTHER_TIME, [(t,) for t in others])

    @staticmethod
    def _params(trace_id: bytes, s: TraceSummary, now: int) -> dict[str, object]:
        return {
            "trace_id": trace_id,
            "root_span_id": s.root_span_id,
            "root_name": s.root_name,
            "root_start_ns": s.root_start_ns,
            "first_name": s.first_name,
            "service": s.root_service if s.root_service is not None else s.first_service,
            "start_ns": s.start_ns,
            "end_ns": s.end_ns,
            "span_count": s.span_count,
            "errors": s.errors,
            "llm_calls": s.llm_calls,
            "input_tokens": s.input_tokens,
            "output_tokens": s.output_tokens,
            "cost_usd": s.cost_usd,
            "now": now,
        }

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute("PRAGMA optimize")
                self._conn.close()
            except sqlite3.Error as exc:
                log.warning("closing database: %s", exc)
            self._conn = None  # type: ignore[assignment]


def receiver_status_defaults(host: str, grpc_port: int) -> dict[str, object]:
    return {
        "state": "listening",
        "pid": os.getpid(),
        "grpc": f"{host}:{grpc_port}",
        "started_ns": time.time_ns(),
    }

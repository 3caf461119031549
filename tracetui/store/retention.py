"""Keeping the database bounded: evict whole oldest traces, never one being looked at.

Eviction is part of the write path: every commit of a receiver's writer
(tracetui.store.writer.Committer, in the receiver and in each ingest worker)
evicts, inside its own transaction and under the write lock, the oldest whole
traces the limits no longer allow (:func:`evict_over_limits`). So no reader
ever sees the database over its limits, whatever the ingest rate, and
eviction costs each commit about what it inserted. It reads the running span
count kept in ``meta`` (never ``COUNT(*)``) and walks ``traces`` by its
start-time index, so a commit within the limits pays one lookup.

What the guarantee is, with ``--max-spans N``: after every commit the stored
spans number at most N, unless the only traces left to evict are the ones
that commit itself wrote into (they are committed once before they can be
evicted: nothing is acknowledged and dropped unseen) or pinned ones; so at
most N + the spans of one commit + the pinned traces. An ingest worker commits
one export at a time (OTLP exporters send at most a few thousand spans per
export); the receiver's own writer (``--decode-workers 0``) groups waiting
exports, up to 20,000 spans a commit. A limit lowered on a
big database is reached over successive commits (each evicts at least twice
what it adds, and the 2 s status heartbeat commits evict too), so no single
transaction holds the lock for long.

Traces pinned by a running UI (the `pins` table, refreshed by the UI's
watcher) are skipped. Evicted traces and spans are counted in ``meta``
(``evicted_traces``, ``evicted_spans``) for the header and ``tracetui status``.

Long strings stored once (tracetui.store.blobs) that no stored span uses any
more are deleted in the transaction that deletes the spans (``blobs.collect``).

``purge`` empties everything (``tracetui purge``).
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass

from tracetui.store import blobs, rollup
from tracetui.store.metrics import METRIC_TABLES, enforce_metric_retention
from tracetui.store.schema import add_meta

#: Spans one commit may evict at least (more when it added more: twice what it added).
MIN_EVICT_SPANS = 5_000
#: A UI's pin counts while it was refreshed this recently.
PIN_TTL_NS = 5 * 60 * 10**9
#: Evict down to this fraction of a limit, so that a commit that crosses it
#: evicts a few hundred traces at once instead of every commit evicting one.
HYSTERESIS = 0.9
_CHUNK = 500

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str) -> float:
    """'90s', '30m', '12h', '7d', '2w' (bare numbers are seconds) -> seconds."""
    match = _AGE.match(text)
    if not match:
        raise ValueError(f"not an age: {text!r} (use e.g. 30m, 12h, 7d)")
    return float(match[1]) * _AGE_UNITS[match[2] or "s"]


@dataclass(frozen=True, slots=True)
class Retention:
    max_spans: int | None = None
    max_db_bytes: int | None = None
    max_age_s: float | None = None

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.max_spans, self.max_db_bytes, self.max_age_s))

    def age_cutoff_ns(self, now_ns: int) -> int | None:
        """What ended before this is older than ``max_age_s`` (None: no age limit). Traces and metrics alike."""
        return None if self.max_age_s is None else now_ns - int(self.max_age_s * 1e9)

    @property
    def size_target(self) -> int | None:
        """The bytes eviction brings a database over ``max_db_bytes`` back down to (HYSTERESIS)."""
        return None if self.max_db_bytes is None else int(self.max_db_bytes * HYSTERESIS)


def _meta_int(conn: sqlite3.Connection, key: str) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return int(row[0] or 0) if row else 0


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes the data occupies (pages in use; freed pages get reused before the file grows)."""
    page_count, free, page_size = (
        conn.execute("PRAGMA page_count").fetchone()[0],
        conn.execute("PRAGMA freelist_count").fetchone()[0],
        conn.execute("PRAGMA page_size").fetchone()[0],
    )
    return (page_count - free) * page_size


def _pinned(conn: sqlite3.Connection, now_ns: int) -> set[bytes]:
    return {r[0] for r in conn.execute("SELECT trace_id FROM pins WHERE updated_ns > ?", (now_ns - PIN_TTL_NS,))}


def _oldest(
    conn: sqlite3.Connection, keep: set[bytes], spans_needed: int, *, before_ns: int | None = None
) -> list[bytes]:
    """The oldest traces not in ``keep`` holding at least ``spans_needed`` spans (fewer if there are not enough).

    Walks the start-time index lazily: a commit reads only as many rows as it evicts (plus the kept ones).
    """
    sql = "SELECT trace_id, span_count FROM traces"
    params: list = []
    if before_ns is not None:
        sql += " WHERE end_ns < ?"
        params.append(before_ns)
    sql += " ORDER BY start_ns, id"
    chosen, spans = [], 0
    cursor = conn.execute(sql, params)
    try:
        for trace_id, span_count in cursor:
            if trace_id in keep:
                continue
            chosen.append(trace_id)
            spans += span_count
            if spans >= spans_needed:
                break
    finally:
        cursor.close()
    return chosen


def delete_traces(conn: sqlite3.Connection, trace_ids: list[bytes]) -> int:
    """Delete whole traces (spans, logs, evaluations, rows) in the caller's transaction; returns spans deleted.

    Keeps the running counters in step and counts the eviction.
    """
    spans = 0
    for i in range(0, len(trace_ids), _CHUNK):
        chunk = trace_ids[i : i + _CHUNK]
        marks = ",".join("?" * len(chunk))
        before = conn.total_changes
        conn.execute(f"DELETE FROM spans WHERE trace_id IN ({marks})", chunk)
        spans += conn.total_changes - before
        conn.execute(f"DELETE FROM logs WHERE trace_id IN ({marks})", chunk)
        conn.execute(f"DELETE FROM evaluations WHERE trace_id IN ({marks})", chunk)
        conn.execute(f"DELETE FROM traces WHERE trace_id IN ({marks})", chunk)
    if trace_ids:
        conn.executemany(
            "UPDATE meta SET value = max(0, value - ?) WHERE key = ?",
            [(spans, "span_count"), (len(trace_ids), "trace_count")],
        )
        add_meta(conn, evicted_traces=len(trace_ids), evicted_spans=spans)
        blobs.collect(conn)  # the long strings only those spans used
    return spans


def evict_over_limits(
    conn: sqlite3.Connection,
    policy: Retention,
    *,
    protect: set[bytes] | frozenset[bytes] = frozenset(),
    added_spans: int = 0,
    now_ns: int | None = None,
) -> int:
    """Inside the caller's write transaction: evict what the limits no longer allow; returns the traces evicted.

    ``protect`` are the traces the caller's transaction wrote into (never
    evicted by it); ``added_spans`` how many spans it added, which sets how
    much this call may evict (at least ``MIN_EVICT_SPANS``, at least twice what
    was added), so a transaction stays short even when the database starts far over a limit.
    """
    if not policy.active:
        return 0
    evicted = 0
    now_ns = now_ns or time.time_ns()
    budget = max(MIN_EVICT_SPANS, 2 * added_spans)
    keep: set[bytes] | None = None

    def take(spans_needed: int, before_ns: int | None = None) -> None:
        nonlocal keep, budget, evicted
        if keep is None:
            keep = _pinned(conn, now_ns) | set(protect)
        ids = _oldest(conn, keep, min(spans_needed, budget), before_ns=before_ns)
        spans = delete_traces(conn, ids)
        keep.update(ids)  # gone: a later pass must not count them again
        evicted += len(ids)
        budget = max(0, budget - spans)

    cutoff = policy.age_cutoff_ns(now_ns)
    if cutoff is not None:
        oldest = conn.execute("SELECT min(start_ns) FROM traces").fetchone()[0]
        if oldest is not None and oldest < cutoff:  # (a trace ends after it starts)
            take(budget, before_ns=cutoff)
    if policy.max_spans is not None and budget:
        count = _meta_int(conn, "span_count")
        if count > policy.max_spans:
            take(count - int(policy.max_spans * HYSTERESIS))
    target = policy.size_target
    if policy.max_db_bytes is not None and target is not None and budget:
        used = used_bytes(conn)
        if used > policy.max_db_bytes:
            spans = max(1, _meta_int(conn, "span_count"))
            take(max(1, int((used - target) / (used / spans))))  # at the average bytes per span
    return evicted


def enforce(conn: sqlite3.Connection, policy: Retention, now_ns: int | None = None) -> int:
    """Evict until the database is within ``policy``, a transaction per round; returns the traces evicted.

    (The receiver does this in every commit instead; this serves a database nobody writes.)
    """
    total = 0
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            evicted = evict_over_limits(conn, policy, now_ns=now_ns)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        total += evicted
        if not evicted:
            enforce_on_metrics(conn, policy, now_ns)
            return total


def enforce_on_metrics(conn: sqlite3.Connection, policy: Retention, now_ns: int | None = None) -> None:
    """The same limits for GenAI metric points (tracetui.store.metrics), after the traces had their turn.

    Outside any transaction (it makes its own); the receiver's writer thread runs it after each status heartbeat.
    """
    target = policy.size_target
    enforce_metric_retention(
        conn, policy.age_cutoff_ns(now_ns or time.time_ns()), lambda: target is not None and used_bytes(conn) > target
    )


def purge(conn: sqlite3.Connection) -> int:
    """Delete every trace, span, log, evaluation and metric point; returns the spans deleted, then frees the space."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        spans = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
        for table in (
            "spans",
            "blobs",
            "provenances",
            "logs",
            "evaluations",
            "traces",
            "pins",
            *METRIC_TABLES,
            "sources",
        ):
            conn.execute(f"DELETE FROM {table}")  # table names are constants, not input
        rollup.clear(conn)
        conn.execute(
            "DELETE FROM meta WHERE key IN ('span_count', 'trace_count', 'log_count', 'evicted_traces', "
            "'evicted_spans', 'metric_points', 'metric_attributes_dropped')"
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("VACUUM")
    except sqlite3.OperationalError:
        pass  # a receiver is writing right now: the freed pages are reused instead
    return spans

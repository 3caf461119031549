"""Keeping the database bounded: evict whole oldest traces, never one being looked at.

Runs on the writer thread (the only writer), a little at a time: each round
deletes at most ``MAX_TRACES_PER_ROUND`` traces in transactions of
``TRACES_PER_TRANSACTION``, so exports waiting for a commit are never held up
for long. Traces pinned by a running UI (the `pins` table, refreshed by the
UI's watcher) are skipped.

``purge`` empties everything (``tracetui purge``).
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass

from tracetui.store.metrics import METRIC_TABLES, enforce_metric_retention

TRACES_PER_TRANSACTION = 100
MAX_TRACES_PER_ROUND = 2_000
#: A UI's pin counts while it was refreshed this recently.
PIN_TTL_NS = 5 * 60 * 10**9
#: Evict down to this fraction of a limit, so eviction does not run on every commit.
HYSTERESIS = 0.9

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
    conn: sqlite3.Connection, pinned: set[bytes], *, spans_needed: int | None = None, before_ns: int | None = None
) -> list[tuple]:
    """Oldest unpinned traces: enough to remove ``spans_needed`` spans, at most one transaction's worth."""
    sql = "SELECT trace_id, span_count FROM traces"
    params: list = []
    if before_ns is not None:
        sql += " WHERE end_ns < ?"
        params.append(before_ns)
    sql += " ORDER BY start_ns, id LIMIT ?"
    params.append(TRACES_PER_TRANSACTION + len(pinned))
    batch, spans = [], 0
    for row in conn.execute(sql, params):
        if row[0] in pinned:
            continue
        batch.append(row)
        spans += row[1]
        if len(batch) >= TRACES_PER_TRANSACTION or (spans_needed is not None and spans >= spans_needed):
            break
    return batch


def evict(conn: sqlite3.Connection, trace_ids: list[bytes]) -> int:
    """Delete whole traces (spans, logs, evaluations, rows) in one transaction; returns spans deleted."""
    if not trace_ids:
        return 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        marks = ",".join("?" * len(trace_ids))
        before = conn.total_changes
        conn.execute(f"DELETE FROM spans WHERE trace_id IN ({marks})", trace_ids)
        spans = conn.total_changes - before
        conn.execute(f"DELETE FROM logs WHERE trace_id IN ({marks})", trace_ids)
        conn.execute(f"DELETE FROM evaluations WHERE trace_id IN ({marks})", trace_ids)
        conn.execute(f"DELETE FROM traces WHERE trace_id IN ({marks})", trace_ids)
        conn.executemany(
            "UPDATE meta SET value = max(0, value - ?) WHERE key = ?",
            [(spans, "span_count"), (len(trace_ids), "trace_count")],
        )
        conn.execute(
            "INSERT INTO meta(key, value) VALUES ('evicted_traces', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
            (len(trace_ids),),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return spans


def enforce(conn: sqlite3.Connection, policy: Retention, now_ns: int | None = None) -> int:
    """One bounded round of eviction; returns the number of traces evicted."""
    if not policy.active:
        return 0
    now_ns = now_ns or time.time_ns()
    pinned = _pinned(conn, now_ns)
    evicted = 0

    def take(batch: list[tuple]) -> bool:
        nonlocal evicted
        if not batch:
            return False
        evict(conn, [r[0] for r in batch])
        evicted += len(batch)
        return evicted < MAX_TRACES_PER_ROUND

    if policy.max_age_s is not None:
        cutoff = now_ns - int(policy.max_age_s * 1e9)
        while take(_oldest(conn, pinned, before_ns=cutoff)):
            pass
    if policy.max_spans is not None and _meta_int(conn, "span_count") > policy.max_spans:
        target = int(policy.max_spans * HYSTERESIS)
        while (excess := _meta_int(conn, "span_count") - target) > 0 and take(_oldest(conn, pinned, spans_needed=excess)):
            pass
    if policy.max_db_bytes is not None and used_bytes(conn) > policy.max_db_bytes:
        target = int(policy.max_db_bytes * HYSTERESIS)
        while (used := used_bytes(conn)) > target:
            spans = max(1, _meta_int(conn, "span_count"))
            needed = max(1, int((used - target) / (used / spans)))  # at the average bytes per span
            if not take(_oldest(conn, pinned, spans_needed=needed)):
                break
    _enforce_on_metrics(conn, policy, now_ns)
    return evicted


def _enforce_on_metrics(conn: sqlite3.Connection, policy: Retention, now_ns: int) -> None:
    """The same limits for GenAI metric points (tracetui.store.metrics), after the traces had their turn."""
    limit = policy.max_db_bytes
    target = None if limit is None else int(limit * HYSTERESIS)
    enforce_metric_retention(
        conn, now_ns, policy.max_age_s, lambda: target is not None and used_bytes(conn) > target
    )


def purge(conn: sqlite3.Connection) -> int:
    """Delete every trace, span, log, evaluation and metric point; returns the spans deleted, then frees the space."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        spans = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
        for table in ("spans", "logs", "evaluations", "traces", "pins", *METRIC_TABLES, "sources"):
            conn.execute(f"DELETE FROM {table}")  # table names are constants, not input
        conn.execute(
            "DELETE FROM meta WHERE key IN ('span_count', 'trace_count', 'log_count', 'evicted_traces', "
            "'metric_points', 'metric_attributes_dropped')"
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

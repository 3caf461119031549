"""Latency, reliability, cost and quality figures per model, route or prompt version.

The numbers behind the Stats screen and ``tracetui stats``. Pure Python over one
SQL query (no Textual): the UI calls :func:`compute` from a thread worker.

What is counted: LLM calls (``spans.llm_kind = 'llm'``; embeddings, agents,
tools are not calls to a chat model) that are in the totals (``counted``:
leaf calls only, one of each request reported twice; a NULL ``counted``, from
a database written before it existed, is taken as counted).

Decisions (kept in one place so the screen and the command agree):

* **model**: the request model, else the response model. People think in the
  names they ask for ("gpt-4o"); providers answer with dated snapshots
  ("gpt-4o-2024-08-06"), which would split one model into several rows, and a
  failed call has no response model at all, so grouping by response model would
  put its errors in a different row from its successes.
* **route**: by default "service / run name", the run being the trace (the
  trace's service, i.e. its root span's, and its root span's name, or the
  earliest span's name while the root has not arrived). With
  ``route_attribute``: that attribute's value on the call's span, else on its
  trace's root span.
* **prompt_version**: "name@version" when the span names its prompt (a bare
  version such as "3" means nothing across prompts), the version alone when
  there is no name, "name@(none)" when there is a name and no version.
* Missing keys are grouped under ``"(none)"``.
* **window**: calls that started at or after ``now - window``. There is no
  upper bound, so spans from a client whose clock runs ahead still show. The
  calls are reached through their runs (``traces.end_ns >= now - window``),
  which spares a scan of the whole spans table; a span whose end precedes its
  own start, in a run that otherwise ended before the window, is missed.
* **percentiles**: linear interpolation between closest ranks (numpy's default
  ``linear`` method; Excel's PERCENTILE.INC): rank ``h = (n - 1) * q / 100``.
* **tokens per second** is the mean of the per-call decode rates
  (``spans.tokens_per_s``: output tokens over the time after the first token),
  over the calls that have one. It is never output tokens over whole duration.
* **error / retry / fallback rate**: share of the group's calls whose status is
  error / that are a retry / a fallback (tracetui.llm.timing).
* **cost per run**: total cost of the group's priced calls divided by the
  number of distinct traces the group's calls belong to; None when no call is
  priced (never a misleading $0). Unpriced calls add nothing to the total.
* **groundedness**: mean score of every groundedness-style evaluation
  (:func:`tracetui.llm.evals.is_groundedness`) attached to the group's calls (the
  trace list and the filter show the worst one instead).

Speed: the spans table holds each raw span inline, so a query over all calls
reads the whole table; the windows above avoid that.
"""

from __future__ import annotations

import gc
import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tracetui.llm.evals import is_groundedness
from tracetui.model.anyvalue import any_value_to_python

GROUPINGS = ("model", "route", "prompt_version")
#: Time windows of the Stats screen, in seconds (None: everything stored).
WINDOWS: dict[str, float | None] = {"5m": 300, "1h": 3600, "all": None}
#: Key of the group of calls that have no model / route / prompt version.
NONE_KEY = "(none)"
#: Most recent durations kept per group for a histogram or sparkline.
MAX_DURATIONS = 2000

_PERCENTILES = (50, 95, 99)
_INT64 = (1 << 63) - 1


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The q-th percentile of ascending ``sorted_values``; None for no data.

    Linear interpolation between closest ranks (numpy's default, "linear"):
    with n values, rank h = (n - 1) * q / 100 and the result lies between the
    values at floor(h) and floor(h) + 1. ``q`` is in [0, 100].
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], not {q!r}")
    n = len(sorted_values)
    if n == 0:
        return None
    h = (n - 1) * q / 100
    lo = math.floor(h)
    if lo >= n - 1:
        return float(sorted_values[-1])
    low = sorted_values[lo]
    return float(low + (h - lo) * (sorted_values[lo + 1] - low))


@dataclass(frozen=True, slots=True)
class GroupStats:
    """The figures of one model, route or prompt version."""

    key: str
    count: int  # LLM calls
    runs: int  # distinct traces
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    ttft_p99_ms: float | None
    tokens_per_s: float | None
    error_rate: float
    retry_rate: float
    fallback_rate: float
    cost_per_run: float | None
    groundedness: float | None
    #: Durations (ms) of the most recent calls, oldest first, at most MAX_DURATIONS.
    durations_ms: tuple[float, ...] = ()

    def to_json(self, durations: bool = False) -> dict[str, Any]:
        """Every figure as plain JSON; ``durations_ms`` only when asked for (it is long)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "durations_ms"}
        if durations:
            out["durations_ms"] = list(self.durations_ms)
        return out


# --- the query ---------------------------------------------------------------------

# Row layout: the figures, then the group key column(s), then the span id (only when needed
# to find evaluations). Durations and flags are computed by SQLite, which is cheaper than Python.
_TRACE, _START, _DUR, _ERR, _TTFT, _RATE, _RETRY, _FALLBACK, _COST, _KEY = range(10)
_COLS = (
    "spans.trace_id, spans.start_ns, max(spans.end_ns - spans.start_ns, 0), spans.status_code = 2, "
    "spans.ttft_ns, spans.tokens_per_s, spans.is_retry != 0, spans.is_fallback != 0, spans.cost_usd"
)
_MODEL_KEY = "coalesce(nullif(spans.request_model, ''), nullif(spans.response_model, ''))"
_PROMPT_KEY = (
    "CASE WHEN nullif(spans.prompt_name, '') IS NOT NULL "
    f"THEN spans.prompt_name || '@' || coalesce(nullif(spans.prompt_version, ''), '{NONE_KEY}') "
    "ELSE nullif(spans.prompt_version, '') END"
)
# The run: the trace's service and its root span's name (the earliest span's while rootless).
_RUN_JOIN = " LEFT JOIN traces AS stats_run ON stats_run.trace_id = spans.trace_id"
_ROUTE_KEY = "stats_run.service || ' / ' || coalesce(stats_run.root_name, stats_run.first_name)"
# With a route attribute: the call's raw span, and its root span's row id (that one is read
# once per run, and only for calls without the attribute). Python's bytes search for the key
# skips decoding the spans that cannot hold it (cheaper than SQLite's instr(), measured).
_ROOT_JOIN = (
    _RUN_JOIN + " LEFT JOIN spans AS stats_root"
    " ON stats_root.trace_id = spans.trace_id AND stats_root.span_id = stats_run.root_span_id"
)
_ATTR_KEY = "spans.raw, stats_root.id"
# A window reaches the spans through their runs: a span that started at or after the cutoff
# belongs to a run that ends at or after it, and the (trace_id, span_id) index then finds the
# run's spans without reading the whole spans table (its rows hold the raw span, so a full scan
# reads everything ever received).
_WINDOW = "spans.start_ns >= ? AND spans.trace_id IN (SELECT trace_id FROM traces WHERE end_ns >= ?)"


def compute(
    conn: sqlite3.Connection,
    by: str = "model",
    *,
    window_s: float | None = None,
    now_ns: int | None = None,
    span_where: tuple[str, list] = ("1", []),
    route_attribute: str | None = None,
) -> list[GroupStats]:
    """Figures of the LLM calls started within the window and matching ``span_where``, per group.

    ``window_s``: only calls started at or after ``now_ns - window_s`` (``now_ns``
    defaults to the wall clock); None for all. ``span_where`` is an SQL boolean
    over the ``spans`` table (aliased ``spans``) with its positional parameters,
    e.g. from ``tracetui.model.filter.parse(text).span_where("spans")``; the caller
    registers any SQL functions it needs on ``conn``. ``route_attribute`` only
    matters with ``by="route"``. Groups are sorted by count (descending), then key.
    """
    if by not in GROUPINGS:
        raise ValueError(f"cannot group by {by!r} (one of: {', '.join(GROUPINGS)})")
    where_sql, where_params = span_where
    grounded = _groundedness_scores(conn)

    params: list[Any] = []
    join = ""
    by_attribute = by == "route" and bool(route_attribute)
    if by == "model":
        key_cols = _MODEL_KEY
    elif by == "prompt_version":
        key_cols = _PROMPT_KEY
    elif by_attribute:
        key_cols = _ATTR_KEY
        join = _ROOT_JOIN
    else:
        key_cols = _ROUTE_KEY
        join = _RUN_JOIN
    cols = f"{_COLS}, {key_cols}" + (", spans.span_id" if grounded else "")

    conditions = ["spans.llm_kind = 'llm'", "(spans.counted IS NULL OR spans.counted != 0)"]
    if window_s is not None:
        cutoff = (time.time_ns() if now_ns is None else now_ns) - int(window_s * 1e9)
        cutoff = max(-_INT64, min(_INT64, cutoff))  # SQLite integers are 64-bit
        conditions.append(_WINDOW)
        params += [cutoff, cutoff]
    conditions.append(f"({where_sql})")
    params += list(where_params)
    sql = f"SELECT {cols} FROM spans AS spans{join} WHERE {' AND '.join(conditions)}"

    with _gc_paused():
        return _run(conn, sql, params, grounded, str(route_attribute) if by_attribute else None)


def _run(conn: sqlite3.Connection, sql: str, params: list, grounded: dict, attribute: str | None) -> list[GroupStats]:
    cursor = conn.execute(sql, params)
    groups: dict[str | None, list[tuple]]
    if attribute is not None:
        groups = _group_by_attribute(conn, cursor, attribute)
        span_col = _KEY + 2
    else:
        groups = {}
        for row in cursor:
            found = groups.get(row[_KEY])
            if found is None:
                groups[row[_KEY]] = [row]
            else:
                found.append(row)
        span_col = _KEY + 1
        if None in groups:  # a real key spelled "(none)" and missing keys are one group
            groups.setdefault(NONE_KEY, []).extend(groups.pop(None))

    out = [_figures(str(key), rows, grounded, span_col) for key, rows in groups.items()]
    out.sort(key=lambda g: (-g.count, g.key))
    return out


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = False


@contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while the rows are built and dropped.

    A query over 100,000 calls creates as many row tuples, which hold no
    reference cycles but set off collections that walk every object of the
    process (about a quarter of the time here, more in the UI's process).
    Thread-safe: the collector comes back when the last concurrent caller is done.
    """
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


def _group_by_attribute(conn: sqlite3.Connection, cursor, attribute: str) -> dict[str | None, list[tuple]]:
    groups: dict[str | None, list[tuple]] = {}
    needle = attribute.encode("utf-8")
    root_values: dict[int, str | None] = {}  # root span's row id -> its value, decoded once per run
    for row in cursor:
        raw = row[_KEY]
        key = _attribute_value(raw, attribute) if needle in raw else None
        root_id = row[_KEY + 1]
        if key is None and root_id is not None:
            if root_id in root_values:
                key = root_values[root_id]
            else:
                found = conn.execute("SELECT raw FROM spans WHERE id = ?", (root_id,)).fetchone()
                root_raw = found[0] if found else None
                key = _attribute_value(root_raw, attribute) if root_raw and needle in root_raw else None
                root_values[root_id] = key
        # the row keeps its figures only: dropping the raw span frees memory as the rows stream by
        groups.setdefault(NONE_KEY if key is None else key, []).append(row[:_KEY] + (None, root_id) + row[_KEY + 2 :])
    return groups


def _attribute_value(raw: bytes | None, attribute: str) -> str | None:
    """The attribute's value on a serialized span, as text; None when absent or empty."""
    if raw is None:
        return None
    try:
        span = Span.FromString(raw)
    except Exception:
        return None
    for kv in span.attributes:
        if kv.key == attribute:
            value = any_value_to_python(kv.value)
            if value is None or value == "":
                return None
            if isinstance(value, str):
                return value
            if isinstance(value, bool):
                return "true" if value else "false"
            if isinstance(value, (int, float)):
                return str(value)
            return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return None


def _groundedness_scores(conn: sqlite3.Connection) -> dict[tuple[bytes, bytes], list[float]]:
    """(trace id, span id) -> groundedness scores of that span's evaluations."""
    names = [name for (name,) in conn.execute("SELECT DISTINCT name FROM evaluations") if is_groundedness(name)]
    found: dict[tuple[bytes, bytes], list[float]] = {}
    for i in range(0, len(names), 500):
        chunk = names[i : i + 500]
        for trace_id, span_id, score in conn.execute(
            "SELECT trace_id, span_id, score FROM evaluations WHERE span_id IS NOT NULL AND score IS NOT NULL "
            f"AND name IN ({','.join('?' * len(chunk))})",
            chunk,
        ):
            if isinstance(score, (int, float)) and math.isfinite(score):
                found.setdefault((trace_id, span_id), []).append(float(score))
    return found


_Grounded = dict[tuple[bytes, bytes], list[float]]  # (trace id, span id) -> groundedness scores


def _figures(key: str, rows: list[tuple], grounded: _Grounded, span_col: int) -> GroupStats:
    """One group's figures from its rows, column by column (zip(*rows) and builtins run in C)."""
    n = len(rows)
    columns = list(zip(*rows))  # noqa: B905 (rows all have the same length)
    trace_ids, starts, durations = columns[_TRACE], columns[_START], columns[_DUR]
    runs = len(set(trace_ids))
    ttfts = sorted([v for v in columns[_TTFT] if v is not None])
    rates = [v for v in columns[_RATE] if v is not None]
    costs = [v for v in columns[_COST] if v is not None]
    scores: list[float] = []
    if grounded:
        for found in map(grounded.get, zip(trace_ids, columns[span_col], strict=False)):
            if found:
                scores += found
    recent = sorted(zip(starts, durations, strict=False))[-MAX_DURATIONS:]  # nearly sorted already (arrival order)
    by_duration = sorted(durations)
    p = [_ms(percentile(by_duration, q)) for q in _PERCENTILES]
    t = [_ms(percentile(ttfts, q)) for q in _PERCENTILES]
    return GroupStats(
        key=key,
        count=n,
        runs=runs,
        p50_ms=p[0],
        p95_ms=p[1],
        p99_ms=p[2],
        ttft_p50_ms=t[0],
        ttft_p95_ms=t[1],
        ttft_p99_ms=t[2],
        tokens_per_s=math.fsum(rates) / len(rates) if rates else None,
        error_rate=sum(columns[_ERR]) / n,
        retry_rate=sum(columns[_RETRY]) / n,
        fallback_rate=sum(columns[_FALLBACK]) / n,
        cost_per_run=math.fsum(costs) / runs if costs else None,
        groundedness=math.fsum(scores) / len(scores) if scores else None,
        durations_ms=tuple([d / 1e6 for _, d in recent]),
    )


def _ms(ns: float | None) -> float | None:
    return None if ns is None else ns / 1e6

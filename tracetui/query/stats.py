"""Latency, reliability, cost and quality figures per model, route or prompt version.

The numbers behind the Stats screen and ``tracetui stats``. Pure Python over the
calls a :class:`~tracetui.model.reader.Reader` returns (``Reader.llm_calls``: each
backend selects and groups, these figures are the same for all); no Textual, and
the UI calls :func:`compute` from a thread worker.

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
  Where a backend computes the figures from aggregates instead (the SQLite
  store's rollup on a large database: tracetui.store.rollup), ``GroupStats.percentiles``
  says how (a sketch, within 1 % of these values; a window start rounded down
  to 10 s); None: exact, as above.
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

Speed: SQLite's spans table holds each raw span inline, so a query over all calls
reads the whole table; the windows above avoid that (tracetui.store.stats_sql).
"""

from __future__ import annotations

import gc
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

from tracetui.model.filter import Filter
from tracetui.model.reader import (
    CALL_COST,
    CALL_DURATION,
    CALL_ERROR,
    CALL_FALLBACK,
    CALL_RATE,
    CALL_RETRY,
    CALL_SPAN,
    CALL_START,
    CALL_TRACE,
    CALL_TTFT,
    GROUPINGS,
    NONE_KEY,
    CallFacts,
    GroupFigures,
    Reader,
)

__all__ = ["GROUPINGS", "MAX_DURATIONS", "NONE_KEY", "WINDOWS", "GroupStats", "compute", "percentile"]

#: Time windows of the Stats screen, in seconds (None: everything stored).
WINDOWS: dict[str, float | None] = {"5m": 300, "1h": 3600, "all": None}
#: Most recent durations kept per group for a histogram or sparkline.
MAX_DURATIONS = 2000

_PERCENTILES = (50, 95, 99)


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
    retry_rate: float | None  # None: the backend cannot tell (ClickHouse: it compares calls in Python only)
    fallback_rate: float | None
    cost_per_run: float | None
    groundedness: float | None
    #: Durations (ms) of the most recent calls, oldest first, at most MAX_DURATIONS; with ``percentiles``
    #: set, values spread evenly over the ranks of the whole window's sketch instead.
    durations_ms: tuple[float, ...] = ()
    #: How the figures were obtained when they are not exact (tracetui.store.rollup.method); None: exact.
    percentiles: str | None = None

    def to_json(self, durations: bool = False) -> dict[str, Any]:
        """Every figure as plain JSON; ``durations_ms`` only when asked for (it is long)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("durations_ms", "percentiles")}
        if self.percentiles is not None:  # said only where the figures are not exact
            out["percentiles"] = self.percentiles
        if durations:
            out["durations_ms"] = list(self.durations_ms)
        return out


def compute(
    reader: Reader,
    by: str = "model",
    *,
    window_s: float | None = None,
    now_ns: int | None = None,
    flt: Filter | None = None,
    route_attribute: str | None = None,
) -> list[GroupStats]:
    """Figures of the LLM calls started within the window and matching ``flt``, per group.

    ``window_s``: only calls started at or after ``now_ns - window_s`` (``now_ns``
    defaults to the wall clock); None for all. ``route_attribute`` only matters
    with ``by="route"``. Groups are sorted by count (descending), then key.
    """
    if by not in GROUPINGS:
        raise ValueError(f"cannot group by {by!r} (one of: {', '.join(GROUPINGS)})")
    since = None if window_s is None else (time.time_ns() if now_ns is None else now_ns) - int(window_s * 1e9)
    figures = reader.call_figures(by, since_ns=since, flt=flt, route_attribute=route_attribute)
    if figures is not None:
        out = [_from_figures(f) for f in figures]
        out.sort(key=lambda g: (-g.count, g.key))
        return out
    with _gc_paused():
        grounded = reader.groundedness_scores()
        groups = reader.llm_calls(by, since_ns=since, flt=flt, route_attribute=route_attribute, span_ids=bool(grounded))
        out = [_figures(str(key), rows, grounded) for key, rows in groups.items()]
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


_Grounded = dict[tuple[bytes, bytes], list[float]]  # (trace id, span id) -> groundedness scores


def _figures(key: str, rows: list[CallFacts], grounded: _Grounded) -> GroupStats:
    """One group's figures from its rows, column by column (zip(*rows) and builtins run in C)."""
    n = len(rows)
    columns = list(zip(*rows))  # noqa: B905 (rows all have the same length)
    trace_ids, starts, durations = columns[CALL_TRACE], columns[CALL_START], columns[CALL_DURATION]
    runs = len(set(trace_ids))
    ttfts = sorted([v for v in columns[CALL_TTFT] if v is not None])
    rates = [v for v in columns[CALL_RATE] if v is not None]
    costs = [v for v in columns[CALL_COST] if v is not None]
    scores: list[float] = []
    if grounded:
        for found in map(grounded.get, zip(trace_ids, columns[CALL_SPAN], strict=False)):
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
        error_rate=sum(columns[CALL_ERROR]) / n,
        retry_rate=sum(columns[CALL_RETRY]) / n,
        fallback_rate=sum(columns[CALL_FALLBACK]) / n,
        cost_per_run=math.fsum(costs) / runs if costs else None,
        groundedness=math.fsum(scores) / len(scores) if scores else None,
        durations_ms=tuple([d / 1e6 for _, d in recent]),
    )


def _from_figures(f: GroupFigures) -> GroupStats:
    """A group whose figures the backend computed (Reader.call_figures)."""
    return GroupStats(
        key=f.key,
        count=f.calls,
        runs=f.runs,
        p50_ms=_ms(f.durations_ns[0]),
        p95_ms=_ms(f.durations_ns[1]),
        p99_ms=_ms(f.durations_ns[2]),
        ttft_p50_ms=_ms(f.ttfts_ns[0]),
        ttft_p95_ms=_ms(f.ttfts_ns[1]),
        ttft_p99_ms=_ms(f.ttfts_ns[2]),
        tokens_per_s=f.tokens_per_s,
        error_rate=f.errors / f.calls if f.calls else 0.0,
        retry_rate=None if f.retries is None or not f.calls else f.retries / f.calls,
        fallback_rate=None if f.fallbacks is None or not f.calls else f.fallbacks / f.calls,
        cost_per_run=None if f.cost_usd is None or not f.runs else f.cost_usd / f.runs,
        groundedness=f.groundedness,
        durations_ms=tuple(d / 1e6 for d in f.recent_ns),
        percentiles=f.method,
    )


def _ms(ns: float | None) -> float | None:
    return None if ns is None else ns / 1e6

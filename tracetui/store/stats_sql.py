"""The rows behind the statistics, read from SQLite: LLM calls by group, groundedness, histogram points.

The figures themselves (percentiles, rates, cost per run) are computed by
``tracetui.query.stats`` and ``tracetui.query.metric_stats`` from what these
return, the same way for every backend; the decisions behind the groupings are
documented there.
"""

from __future__ import annotations

import json
import math
import sqlite3
from typing import Any

from tracetui.llm.evals import is_groundedness, preferred_scores
from tracetui.model.anyvalue import span_attribute_text
from tracetui.model.filter import Filter
from tracetui.model.reader import (
    CALL_SPAN,
    GROUPINGS,
    NONE_KEY,
    CallFacts,
    CohortCall,
    EvaluationResult,
    HistogramPoint,
)
from tracetui.store.blobs import Blobs, decompressed
from tracetui.store.filter_sql import span_where

_INT64 = (1 << 63) - 1

# Row layout: the call's figures (tracetui.model.reader.CallFacts), then the group key column(s).
# Durations and flags are computed by SQLite, which is cheaper than Python.
_COLS = (
    "spans.trace_id, spans.start_ns, max(spans.end_ns - spans.start_ns, 0), spans.status_code = 2, "
    "spans.ttft_ns, spans.tokens_per_s, spans.is_retry != 0, spans.is_fallback != 0, spans.cost_usd"
)
_KEY = CALL_SPAN + 1
MODEL_KEY = "coalesce(nullif(spans.request_model, ''), nullif(spans.response_model, ''))"
PROMPT_KEY = (
    "CASE WHEN nullif(spans.prompt_name, '') IS NOT NULL "
    f"THEN spans.prompt_name || '@' || coalesce(nullif(spans.prompt_version, ''), '{NONE_KEY}') "
    "ELSE nullif(spans.prompt_version, '') END"
)
# The run: the trace's service and its root span's name (the earliest span's while rootless).
RUN_JOIN = " LEFT JOIN traces AS stats_run ON stats_run.trace_id = spans.trace_id"
ROUTE_KEY = "stats_run.service || ' / ' || coalesce(stats_run.root_name, stats_run.first_name)"
# With a route attribute: the call's raw span, and its root span's row id (that one is read
# once per run, and only for calls without the attribute). Python's bytes search for the key
# skips decoding the spans that cannot hold it (cheaper than SQLite's instr(), measured).
_ROOT_JOIN = (
    RUN_JOIN + " LEFT JOIN spans AS stats_root"
    " ON stats_root.trace_id = spans.trace_id AND stats_root.span_id = stats_run.root_span_id"
)
_ATTR_KEY = "spans.raw, stats_root.id"
# A window reaches the spans through their runs: a span that started at or after the cutoff
# belongs to a run that ends at or after it, and the (trace_id, span_id) index then finds the
# run's spans without reading the whole spans table (its rows hold the raw span, so a full scan
# reads everything ever received).
_WINDOW = "spans.start_ns >= ? AND spans.trace_id IN (SELECT trace_id FROM traces WHERE end_ns >= ?)"


def _counted_calls(since_ns: int | None, until_ns: int | None, flt: Filter | None) -> tuple[list[str], list[Any]]:
    """WHERE terms (ANDed) and parameters of the counted LLM calls started in [since_ns, until_ns) matching ``flt``."""
    conditions = ["spans.llm_kind = 'llm'", "(spans.counted IS NULL OR spans.counted != 0)"]
    params: list[Any] = []
    if since_ns is not None:
        cutoff = max(-_INT64, min(_INT64, since_ns))  # SQLite integers are 64-bit
        conditions.append(_WINDOW)
        params += [cutoff, cutoff]
    if until_ns is not None:
        conditions.append("spans.start_ns < ?")
        params.append(max(-_INT64, min(_INT64, until_ns)))
    if flt is not None and not flt.is_empty():
        where_sql, where_params = span_where(flt, "spans")
        conditions.append(f"({where_sql})")
        params += where_params
    return conditions, params


def llm_calls(
    conn: sqlite3.Connection,
    by: str,
    *,
    since_ns: int | None = None,
    flt: Filter | None = None,
    route_attribute: str | None = None,
    span_ids: bool = True,
) -> dict[str, list[CallFacts]]:
    """Counted LLM calls started at or after ``since_ns`` that match ``flt``, grouped (Reader.llm_calls).

    The filter's SQL calls functions that ``register_sql_functions`` put on ``conn``.
    """
    if by not in GROUPINGS:
        raise ValueError(f"cannot group by {by!r} (one of: {', '.join(GROUPINGS)})")
    by_attribute = by == "route" and bool(route_attribute)
    join = ""
    if by == "model":
        key_cols = MODEL_KEY
    elif by == "prompt_version":
        key_cols = PROMPT_KEY
    elif by_attribute:
        key_cols, join = _ATTR_KEY, _ROOT_JOIN
    else:
        key_cols, join = ROUTE_KEY, RUN_JOIN

    conditions, params = _counted_calls(since_ns, None, flt)
    # Without span ids the column is NULL: 8 fewer bytes per row to copy out (about 7% of the query).
    span_id = "spans.span_id" if span_ids else "NULL"
    sql = f"SELECT {_COLS}, {span_id}, {key_cols} FROM spans AS spans{join} WHERE {' AND '.join(conditions)}"
    cursor = conn.execute(sql, params)
    if by_attribute:
        return _group_by_attribute(conn, cursor, str(route_attribute))
    groups: dict[Any, list[Any]] = {}
    for row in cursor:
        found = groups.get(row[_KEY])
        if found is None:
            groups[row[_KEY]] = [row]
        else:
            found.append(row)
    if None in groups:  # a real key spelled "(none)" and missing keys are one group
        groups.setdefault(NONE_KEY, []).extend(groups.pop(None))
    return groups


def _group_by_attribute(conn: sqlite3.Connection, cursor: sqlite3.Cursor, attribute: str) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}
    # attribute keys are never cut out of a raw (tracetui.store.blobs), but a raw may be compressed
    needle = attribute.encode("utf-8")
    expand = Blobs(conn).expand
    root_values: dict[int, str | None] = {}  # root span's row id -> its value, decoded once per run
    for row in cursor:
        raw = decompressed(row[_KEY])
        key = span_attribute_text(expand(raw), attribute) if needle in raw else None
        root_id = row[_KEY + 1]
        if key is None and root_id is not None:
            if root_id in root_values:
                key = root_values[root_id]
            else:
                found = conn.execute("SELECT raw FROM spans WHERE id = ?", (root_id,)).fetchone()
                root_raw = decompressed(found[0]) if found else None
                key = span_attribute_text(expand(root_raw), attribute) if root_raw and needle in root_raw else None
                root_values[root_id] = key
        # the row keeps its figures only: dropping the raw span frees memory as the rows stream by
        groups.setdefault(NONE_KEY if key is None else key, []).append(row[:_KEY])
    return groups


_COHORT = (
    "SELECT spans.trace_id, spans.span_id, spans.start_ns, max(spans.end_ns - spans.start_ns, 0), "
    "spans.status_code = 2, spans.ttft_ns, spans.tokens_per_s, spans.output_tokens, spans.max_tokens, "
    "spans.is_retry != 0, spans.is_fallback != 0, spans.cost_usd, max(run.end_ns - run.start_ns, 0), "
    f"{MODEL_KEY}, {PROMPT_KEY}, run.service || ' / ' || coalesce(run.root_name, run.first_name) "
    "FROM spans AS spans JOIN traces AS run ON run.trace_id = spans.trace_id WHERE {where} "
    "ORDER BY spans.start_ns"
)


def cohort_calls(
    conn: sqlite3.Connection, *, since_ns: int | None, until_ns: int | None, flt: Filter | None
) -> list[CohortCall]:
    """Counted LLM calls started in [since_ns, until_ns) matching ``flt`` (Reader.cohort_calls)."""
    conditions, params = _counted_calls(since_ns, until_ns, flt)
    sql = _COHORT.format(where=" AND ".join(conditions))
    return list(map(CohortCall._make, conn.execute(sql, params)))  # the columns are the fields, in order


# SQLite's documented bare-column rule: with one min() aggregate, the other columns come from the row holding the
# minimum, so each run's first call brings its own TTFT.
_FIRST_CALLS = (
    "SELECT spans.trace_id, spans.ttft_ns, min(spans.start_ns) FROM spans AS spans WHERE {where} "
    "GROUP BY spans.trace_id"
)


def first_calls(
    conn: sqlite3.Connection, *, since_ns: int | None, until_ns: int | None, flt: Filter | None
) -> dict[bytes, int | None]:
    """Each run with a counted LLM call in [since_ns, until_ns) matching ``flt``, and its first call's TTFT
    (Reader.first_calls): grouped by SQLite, a row per run instead of a CohortCall per call."""
    conditions, params = _counted_calls(since_ns, until_ns, flt)
    return {trace_id: ttft for trace_id, ttft, _ in conn.execute(_FIRST_CALLS.format(where=" AND ".join(conditions)),
                                                                  params)}  # fmt: skip


def evaluation_results(conn: sqlite3.Connection, trace_ids: set[bytes]) -> list[EvaluationResult]:
    """Every evaluation and feedback result of these traces (Reader.evaluation_results)."""
    ids = list(trace_ids)
    found: list[EvaluationResult] = []
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        found += [
            EvaluationResult(*row)
            for row in conn.execute(
                "SELECT trace_id, span_id, name, score, label, explanation, source, time_ns FROM evaluations "
                f"WHERE trace_id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
        ]
    return found


def groundedness_scores(conn: sqlite3.Connection) -> dict[tuple[bytes, bytes], list[float]]:
    """(trace id, span id) -> groundedness scores of that span's evaluations (estimates only where nothing else
    scored the span: ``preferred_scores``)."""
    names = [name for (name,) in conn.execute("SELECT DISTINCT name FROM evaluations") if is_groundedness(name)]
    found: dict[tuple[bytes, bytes], list[tuple[float, str | None]]] = {}
    for i in range(0, len(names), 500):
        chunk = names[i : i + 500]
        for trace_id, span_id, score, label in conn.execute(
            "SELECT trace_id, span_id, score, label FROM evaluations WHERE span_id IS NOT NULL AND score IS NOT NULL "
            f"AND name IN ({','.join('?' * len(chunk))})",
            chunk,
        ):
            if isinstance(score, (int, float)) and math.isfinite(score):
                found.setdefault((trace_id, span_id), []).append((float(score), label))
    return {key: preferred_scores(results) for key, results in found.items()}


_HISTOGRAMS = """
SELECT s.model, s.name, s.unit, s.operation, p.bounds, p.counts, p.min, p.max, p.count, p.dropped
FROM metric_points p JOIN metric_series s ON s.id = p.series_id
WHERE s.kind = 'histogram' AND s.model IS NOT NULL AND s.name IN ({names}) AND p.time_ns >= ?
"""


def histogram_points(conn: sqlite3.Connection, names: list[str], since_ns: int | None = None) -> list[HistogramPoint]:
    """Histogram points of these metrics with a model, whose interval ended at or after ``since_ns``."""
    try:
        conn.execute("SELECT 1 FROM metric_points LIMIT 1")
    except sqlite3.OperationalError:  # a database from before metrics (read-only, not migrated)
        return []
    cutoff = -_INT64 if since_ns is None else max(-_INT64, min(_INT64, since_ns))
    sql = _HISTOGRAMS.format(names=",".join("?" * len(names)))
    return [
        HistogramPoint(
            model, name, unit, operation, json.loads(bounds), json.loads(counts), low, high, count, lost or 0
        )
        for model, name, unit, operation, bounds, counts, low, high, count, lost in conn.execute(sql, [*names, cutoff])
        if counts and count  # a point without counts says nothing
    ]

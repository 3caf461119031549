"""Writing GenAI metric points, and giving their exemplars to the spans they name.

**Temporality.** Every stored point is a *delta*: what happened in one
interval. Delta exports are stored as they come. A cumulative export repeats
the whole history of its series at every interval (the OTel SDK's default
is cumulative, every 60 s), so storing it as it comes would count each call
again at every export. Instead :func:`write_metrics` keeps the last
cumulative point of each exporter series and start time (``metric_cumulative``)
and stores the difference with it, skipping intervals where nothing happened.
This was chosen over "keep only the latest cumulative point" because deltas
can be cut by time: the Stats screen's window and ``--max-age`` apply to when
things happened, not to when a series began.

* A series restart (a new ``start_time_unix_nano``) starts a new baseline:
  its first point is stored whole, never as a negative difference from the
  old run. A point whose count went down under the same start time is
  treated the same way.
* Buckets that change under the same start time (an exponential histogram
  moving to a coarser scale) are compared after re-counting the baseline in
  the new buckets (:func:`rebucket`), exact when the old buckets nest in the
  new ones; when they do not, the point is taken whole.
* A point older than (or as old as) the baseline is a resend: nothing is stored,
  so resent cumulative exports are idempotent; resent delta points are
  deduplicated by the ``metric_points_once`` index.
* Min and max of a delta computed from two cumulative points are the series'
  own (an interval's extremes are not exported): they bound the interval's
  values, which is all the percentiles use them for (tracetui.query.metric_stats).

**Exemplars.** An exemplar of a time-to-first-token metric that names a span
gives that span its TTFT when the span has none of its own (and is not a call its
library said was not streamed), with provenance
``metric exemplar (<metric>)``, and the run's bars are recomputed. It is
applied when the metric arrives (the span is stored) or when the span
arrives later: pending exemplars wait in ``metric_exemplars``; the span path
pays one probe of an empty index per batch while none are pending.
"""

from __future__ import annotations

import bisect
import json
import math
import sqlite3
from collections.abc import Callable, Iterable

from tracetui.model.metrics import CUMULATIVE, DecodedMetrics, MetricPoint
from tracetui.store.blobs import provenance_sql
from tracetui.store.schema import add_meta

_INSERT_SERIES = (
    "INSERT INTO metric_series(id, digest, name, unit, kind, source_id, service, attributes, model, provider, "
    "operation, error_type, token_type) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_INSERT_POINT = (
    "INSERT OR IGNORE INTO metric_points(series_id, stream, start_ns, time_ns, count, sum, min, max, bounds, counts, "
    "value, dropped) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_BASELINE = (
    "SELECT time_ns, count, sum, counts, bounds, value FROM metric_cumulative "
    "WHERE series_id = ? AND stream = ? AND start_ns = ?"
)
_SET_BASELINE = (
    "INSERT INTO metric_cumulative(series_id, stream, start_ns, time_ns, count, sum, counts, bounds, value) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(series_id, stream, start_ns) DO UPDATE SET "
    "time_ns = excluded.time_ns, count = excluded.count, sum = excluded.sum, counts = excluded.counts, "
    "bounds = excluded.bounds, value = excluded.value"
)
_INSERT_EXEMPLAR = (
    "INSERT INTO metric_exemplars(trace_id, span_id, metric, value_ns, time_ns) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT DO NOTHING"
)
# A span takes an exemplar's TTFT only if it has none of its own and its library did not say the call
# was not streamed (a non-streamed call has no first token: OpenLIT's TTFT metric records the whole
# call for one); decode time and speed follow from it as the normalizer computes them (tracetui.llm.semconv).
_APPLY_TTFT = """
UPDATE spans SET
    ttft_ns = e.value_ns,
    streaming = coalesce(spans.streaming, 1),
    decode_ns = CASE WHEN spans.end_ns - spans.start_ns - coalesce(spans.attempt_offset_ns, 0) >= e.value_ns
                     THEN spans.end_ns - spans.start_ns - coalesce(spans.attempt_offset_ns, 0) - e.value_ns END,
    tokens_per_s = CASE WHEN spans.output_tokens > 0
                         AND spans.end_ns - spans.start_ns - coalesce(spans.attempt_offset_ns, 0) > e.value_ns
                        THEN spans.output_tokens * 1e9
                             / (spans.end_ns - spans.start_ns - coalesce(spans.attempt_offset_ns, 0) - e.value_ns)
                   END,
    provenance = json_set(CASE WHEN json_valid({provenance}) THEN {provenance} ELSE '{{}}' END,
                          '$.ttft', 'metric exemplar (' || e.metric || ')',
                          '$.streaming', coalesce(json_extract(CASE WHEN json_valid({provenance})
                                                                   THEN {provenance} END, '$.streaming'),
                                                  'metric exemplar (' || e.metric || ')'))
FROM metric_exemplars AS e
WHERE e.applied = 0 AND e.trace_id = ? AND spans.trace_id = e.trace_id AND spans.span_id = e.span_id
  AND spans.ttft_ns IS NULL AND spans.llm_kind = 'llm' AND coalesce(spans.streaming, 1) != 0
RETURNING spans.trace_id, spans.span_id
""".format(provenance=provenance_sql("spans.provenance"))


def write_metrics(conn: sqlite3.Connection, parts: Iterable[DecodedMetrics], remap: dict[int, int]) -> set[bytes]:
    """Store series, points and exemplars in the caller's transaction.

    ``remap`` maps decoded source ids to stored ones (Committer._store_sources).
    Returns the traces whose spans took an exemplar's value (to re-analyze).
    """
    points = 0
    dropped = 0
    exemplars: list[tuple] = []
    for part in parts:
        conn.executemany(
            _INSERT_SERIES,
            [
                (s.id, s.digest, s.name, s.unit, s.kind, remap.get(s.source_id, s.source_id), s.service,
                 s.attributes, s.model, s.provider, s.operation, s.error_type, s.token_type)
                for s in part.series.values()
            ],
        )  # fmt: skip
        for point in part.points:
            row = _delta_row(conn, point) if point.temporality == CUMULATIVE else _row(point)
            if row is not None:
                before = conn.total_changes
                conn.execute(_INSERT_POINT, row)
                if conn.total_changes > before:
                    points += 1
                    dropped += point.dropped
        exemplars += [(e.trace_id, e.span_id, e.metric, round(e.value_s * 1e9), e.time_ns) for e in part.exemplars]
    add_meta(conn, metric_points=points, metric_attributes_dropped=dropped)
    if not exemplars:
        return set()
    conn.executemany(_INSERT_EXEMPLAR, exemplars)
    return apply_exemplars(conn, {e[0] for e in exemplars})


def apply_exemplars(conn: sqlite3.Connection, trace_ids: Iterable[bytes]) -> set[bytes]:
    """Give pending exemplars of these traces to their spans, when stored; returns the traces changed."""
    changed: list[tuple[bytes, bytes]] = []
    for trace_id in trace_ids:
        changed += conn.execute(_APPLY_TTFT, (trace_id,)).fetchall()
    # Taken or not, an exemplar whose span is stored has done its work (a span with its own TTFT keeps it).
    conn.executemany(
        "UPDATE metric_exemplars SET applied = 1 WHERE applied = 0 AND trace_id = ? "
        "AND EXISTS (SELECT 1 FROM spans s WHERE s.trace_id = metric_exemplars.trace_id "
        "AND s.span_id = metric_exemplars.span_id)",
        [(t,) for t in trace_ids],
    )
    return {trace_id for trace_id, _ in changed}


def pending_exemplars(conn: sqlite3.Connection, trace_ids: Iterable[bytes]) -> list[bytes]:
    """Which of these traces have exemplars waiting for a span (the spans path asks on every batch).

    One probe of an empty partial index while nothing waits; else one indexed
    query per 500 traces of the batch.
    """
    if conn.execute("SELECT 1 FROM metric_exemplars WHERE applied = 0 LIMIT 1").fetchone() is None:
        return []
    ids = list(trace_ids)
    found: list[bytes] = []
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        found += [
            t
            for (t,) in conn.execute(
                "SELECT DISTINCT trace_id FROM metric_exemplars WHERE applied = 0 "
                f"AND trace_id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
        ]
    return found


def _row(point: MetricPoint, start_ns: int | None = None, **values) -> tuple:
    v = {
        "count": point.count, "sum": point.sum, "min": point.min, "max": point.max,
        "counts": point.counts, "value": point.value, **values,
    }  # fmt: skip
    return (
        point.series_id,
        point.stream,
        point.start_ns if start_ns is None else start_ns,
        point.time_ns,
        v["count"],
        v["sum"],
        v["min"],
        v["max"],
        None if point.bounds is None else json.dumps(point.bounds),
        None if v["counts"] is None else json.dumps(v["counts"]),
        v["value"],
        point.dropped,
    )


def _delta_row(conn: sqlite3.Connection, point: MetricPoint) -> tuple | None:
    """The delta since the series' baseline (None when nothing new), and the baseline moved to ``point``."""
    counts_text = None if point.counts is None else json.dumps(point.counts)
    bounds_text = None if point.bounds is None else json.dumps(point.bounds)
    base = conn.execute(_BASELINE, (point.series_id, point.stream, point.start_ns)).fetchone()
    if base is not None and point.time_ns <= base[0]:
        return None  # a resend, or older than what we have
    conn.execute(
        _SET_BASELINE,
        (point.series_id, point.stream, point.start_ns, point.time_ns, point.count, point.sum, counts_text,
         bounds_text, point.value),
    )  # fmt: skip
    restart = base is None or (point.value is None and (base[1] is None or point.count < base[1]))
    if restart:
        return _row(point) if (point.count or point.value) else None
    if point.value is not None:
        delta = point.value - (base[5] or 0.0)
        return _row(point, base[0], value=delta) if delta else None
    old_counts = json.loads(base[3]) if base[3] else [0] * len(point.counts or ())
    if base[4] != bounds_text:  # rescaled (exponential histograms): the old counts in the new buckets
        old_counts = rebucket(json.loads(base[4]) if base[4] else [], old_counts, point.bounds or ())
        if old_counts is None:  # they do not nest: take the point whole, as a restart
            return _row(point)
    counts = tuple(c - o for c, o in zip(point.counts or (), old_counts, strict=False))
    if any(c < 0 for c in counts):  # buckets went down: the exporter restarted without saying so
        return _row(point)
    count = point.count - base[1]
    if count == 0:
        return None
    total = None if point.sum is None or base[2] is None else point.sum - base[2]
    return _row(point, base[0], count=count, sum=total, counts=counts)


def rebucket(old_bounds: list[float], old_counts: list[int], new_bounds: tuple[float, ...]) -> list[int] | None:
    """Counts over ``old_bounds`` re-counted over ``new_bounds``; None unless each old bucket holding
    values lies within one new bucket (true when an exponential histogram moves to a coarser scale)."""
    out = [0] * (len(new_bounds) + 1)
    for i, count in enumerate(old_counts):
        if not count:
            continue
        low = old_bounds[i - 1] if i > 0 else -math.inf
        high = old_bounds[i] if i < len(old_bounds) else math.inf
        j = bisect.bisect_left(new_bounds, high)  # the new bucket whose upper bound is the first >= high
        if j > 0 and new_bounds[j - 1] > low:
            return None
        out[j] += count
    return out


# --- retention (the hook tracetui.store.retention.enforce calls) ---------------------------------

#: Every metric table (``tracetui purge`` empties them; series last, the others refer to it).
METRIC_TABLES = ("metric_points", "metric_cumulative", "metric_exemplars", "metric_series")
#: Metric points deleted per transaction when the database is over its size.
POINTS_PER_TRANSACTION = 2_000
MAX_TRANSACTIONS_PER_ROUND = 10


def enforce_metric_retention(conn: sqlite3.Connection, cutoff_ns: int | None, over_size: Callable[[], bool]) -> int:
    """``--max-age`` and ``--max-db-mb`` for metrics; returns the points deleted. Outside any transaction.

    Age (``cutoff_ns``, None without ``--max-age``): points, baselines and exemplars last touched before it go.
    Size (``over_size()``: the database is still over its limit after the
    traces' own eviction): first the points older than the oldest trace still
    kept, so metrics and traces cover about the same time; then, while still
    over, the oldest points, a transaction's worth at a time (bounded per round).
    """
    deleted = 0
    if cutoff_ns is not None:
        deleted += _delete(conn, "DELETE FROM metric_points WHERE time_ns < ?", cutoff_ns, extra=True)
    if not over_size():
        return deleted
    oldest = conn.execute("SELECT min(start_ns) FROM traces").fetchone()[0]
    if oldest is not None:
        deleted += _delete(conn, "DELETE FROM metric_points WHERE time_ns < ?", oldest)
    for _ in range(MAX_TRANSACTIONS_PER_ROUND):
        if not over_size():
            break
        taken = _delete(
            conn,
            "DELETE FROM metric_points WHERE id IN (SELECT id FROM metric_points ORDER BY time_ns LIMIT ?)",
            POINTS_PER_TRANSACTION,
        )
        deleted += taken
        if not taken:
            break
    return deleted


def _delete(conn: sqlite3.Connection, sql: str, parameter: int, extra: bool = False) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        before = conn.total_changes
        conn.execute(sql, (parameter,))
        deleted = conn.total_changes - before
        if extra:  # by age: baselines and exemplars too (``parameter`` is the cutoff)
            conn.execute("DELETE FROM metric_cumulative WHERE time_ns < ?", (parameter,))
            conn.execute("DELETE FROM metric_exemplars WHERE time_ns < ?", (parameter,))
        if deleted:
            conn.execute(
                "DELETE FROM metric_series WHERE NOT EXISTS (SELECT 1 FROM metric_points p WHERE p.series_id = "
                "metric_series.id) AND NOT EXISTS (SELECT 1 FROM metric_cumulative c WHERE c.series_id = "
                "metric_series.id)"
            )
            conn.execute("UPDATE meta SET value = max(0, value - ?) WHERE key = 'metric_points'", (deleted,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return deleted

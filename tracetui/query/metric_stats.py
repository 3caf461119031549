"""Percentiles per model from the GenAI metrics (histograms), beside the span-derived ones.

Some libraries report a figure only as a metric: LiteLLM's only time to first
token is ``gen_ai.server.time_to_first_token`` (seconds, from LiteLLM's call
start, so a retry is inside it). The Stats screen and ``tracetui stats``
show these as "from metrics", never mixed into the span columns.

**Method.** A histogram point only says how many values fell in each bucket.
Each bucket is taken as its values spread evenly between its bounds, the
bounds first narrowed to the point's min and max when the exporter sends them
(the open first and last buckets get their edges from min and max, or from
the nearest bound when those are absent). The points of one model are
merged as a mixture of these uniform pieces and the percentile is read off
the merged cumulative count by linear interpolation within the piece where
the rank falls (the rank is ``q/100`` of the total count). **Error bound**:
the true percentile lies in that same piece, so the error is at most the
width of the (narrowed) bucket holding the rank; :class:`Percentiles`
reports that width as ``max_error_ms``. A single call per series with min and
max (LiteLLM, and the first export of every OTel SDK series) is exact.

Which metric feeds which figure, per model (request model, else response
model, as for spans), the first listed that has points winning (a library
sending both would otherwise be counted twice):

* duration: ``gen_ai.client.operation.duration`` (operation ``chat``,
  ``text_completion``, ``generate_content`` or unnamed), else
  ``gen_ai.client.inference.duration`` (Vercel AI SDK), else
  ``gen_ai.server.request.duration``;
* TTFT: ``gen_ai.client.operation.time_to_first_chunk``, else
  ``gen_ai.server.time_to_first_token``;
* time per output token: ``gen_ai.client.operation.time_per_output_chunk``,
  else ``gen_ai.server.time_per_output_token``.

The window (calls of the last 5 minutes / hour) applies to the end of each
point's interval; a span filter does not apply to metrics (they carry no span
attributes), so callers show no metric figures while filtering.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tracetui.model.metrics import SECONDS_PER_UNIT
from tracetui.model.reader import Reader

METHOD = "histogram buckets, linear interpolation within a bucket; error at most one bucket's width"
#: figure -> metrics that can give it, in order of preference
FIGURES: dict[str, tuple[str, ...]] = {
    "duration": (
        "gen_ai.client.operation.duration",
        "gen_ai.client.inference.duration",
        "gen_ai.server.request.duration",
    ),
    "ttft": ("gen_ai.client.operation.time_to_first_chunk", "gen_ai.server.time_to_first_token"),
    "time_per_output_token": (
        "gen_ai.client.operation.time_per_output_chunk",
        "gen_ai.server.time_per_output_token",
    ),
}
#: Operations whose duration is a model call's (agents and tools are timed by the same metric).
_CALL_OPERATIONS = ("chat", "text_completion", "generate_content")
_PERCENTILES = (50, 95, 99)

#: A piece of a histogram: (low, high, count), values taken as spread evenly over [low, high].
Piece = tuple[float, float, int]


def pieces(bounds: list[float], counts: list[int], low: float | None, high: float | None) -> list[Piece]:
    """A histogram point's buckets as uniform pieces, narrowed to its [min, max] where known."""
    out: list[Piece] = []
    last = len(counts) - 1
    for i, count in enumerate(counts):
        if not count:
            continue
        lo = bounds[i - 1] if i > 0 else (low if low is not None else (bounds[0] if bounds else 0.0))
        hi = bounds[i] if i < last else (high if high is not None else (bounds[-1] if bounds else lo))
        if low is not None:
            lo, hi = max(lo, low), max(hi, low)
        if high is not None:
            lo, hi = min(lo, high), min(hi, high)
        out.append((lo, max(lo, hi), count))
    return out


def quantile(merged: list[Piece], q: float) -> tuple[float, float] | None:
    """The q-th percentile (0-100) of a mixture of uniform pieces, and the width of the piece it fell in.

    One sweep over the pieces' edges: between two edges the cumulative count
    grows linearly (slope: each open piece's count over its width), and a
    piece of zero width (min == max) is a jump at its edge.
    """
    slopes: dict[float, float] = {}
    jumps: dict[float, float] = {}
    for lo, hi, c in merged:
        if hi > lo:
            slopes[lo] = slopes.get(lo, 0.0) + c / (hi - lo)
            slopes[hi] = slopes.get(hi, 0.0) - c / (hi - lo)
        else:
            jumps[lo] = jumps.get(lo, 0.0) + c
    total = sum(c for _, _, c in merged)
    if not total:
        return None
    rank = total * q / 100
    edges = sorted({*slopes, *jumps})
    seen, slope, previous = 0.0, 0.0, edges[0]
    value = edges[-1]
    for x in edges:
        reached = seen + slope * (x - previous)
        if slope > 0 and reached >= rank:
            value = previous + (rank - seen) / slope
            break
        seen = reached + jumps.get(x, 0.0)
        if seen >= rank:
            value = x
            break
        slope += slopes.get(x, 0.0)
        previous = x
    return value, _width_at(merged, value)


def _width_at(merged: list[Piece], x: float) -> float:
    """The widest piece that holds x: how far off a value read at x can be."""
    return max((hi - lo for lo, hi, _ in merged if lo <= x <= hi), default=0.0)


@dataclass(frozen=True, slots=True)
class Percentiles:
    """p50/p95/p99 (ms) of one figure of one model, from one metric."""

    metric: str
    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    #: The widest bucket any of the three percentiles fell in: their error is at most this.
    max_error_ms: float

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "count": self.count,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "max_error_ms": self.max_error_ms,
        }


@dataclass(frozen=True, slots=True)
class ModelMetrics:
    """The metric-derived figures of one model."""

    model: str
    duration: Percentiles | None
    ttft: Percentiles | None
    time_per_output_token: Percentiles | None
    #: Attributes dropped from the points read (per-call values such as LiteLLM's ``hidden_params``).
    dropped_attributes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "method": METHOD,
            "duration_ms": self.duration.to_json() if self.duration else None,
            "ttft_ms": self.ttft.to_json() if self.ttft else None,
            "time_per_output_token_ms": self.time_per_output_token.to_json() if self.time_per_output_token else None,
            "dropped_attributes": self.dropped_attributes,
        }


def compute(reader: Reader, *, window_s: float | None = None, now_ns: int | None = None) -> dict[str, ModelMetrics]:
    """Metric-derived percentiles per model, for the points whose interval ended within the window."""
    since = None if window_s is None else (time.time_ns() if now_ns is None else now_ns) - int(window_s * 1e9)
    names = [name for metrics in FIGURES.values() for name in metrics]
    by_model: dict[str, dict[str, list[Piece]]] = {}
    counts: dict[tuple[str, str], int] = {}
    dropped: dict[str, int] = {}
    for point in reader.histogram_points(names, since):
        factor = SECONDS_PER_UNIT.get(point.unit) if point.unit is not None else None
        if factor is None:
            continue
        if point.name == "gen_ai.client.operation.duration" and point.operation not in (None, *_CALL_OPERATIONS):
            continue
        ms = factor * 1000
        model, name = point.model, point.name
        found = pieces(point.bounds, point.counts, point.min, point.max)
        by_model.setdefault(model, {}).setdefault(name, []).extend((lo * ms, hi * ms, c) for lo, hi, c in found)
        counts[(model, name)] = counts.get((model, name), 0) + point.total
        dropped[model] = dropped.get(model, 0) + point.dropped_attributes
    out: dict[str, ModelMetrics] = {}
    for model, metrics in by_model.items():
        figures = {
            figure: _percentiles(next((n for n in options if n in metrics), None), metrics, counts, model)
            for figure, options in FIGURES.items()
        }
        out[model] = ModelMetrics(model=model, dropped_attributes=dropped.get(model, 0), **figures)
    return out


def _percentiles(name: str | None, metrics: dict[str, list[Piece]], counts: dict, model: str) -> Percentiles | None:
    if name is None:
        return None
    found = [quantile(metrics[name], q) for q in _PERCENTILES]
    if any(f is None for f in found):
        return None
    (p50, e50), (p95, e95), (p99, e99) = (f for f in found if f is not None)
    return Percentiles(name, counts[(model, name)], p50, p95, p99, max_error_ms=max(e50, e95, e99))

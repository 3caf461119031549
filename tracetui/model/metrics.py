"""The metric row contract: what a decoded GenAI metrics export holds, as the store writes it.

Plain data shared by the wire decoder (tracetui.otlp.metrics), the store
(tracetui.store.metrics) and the statistics (tracetui.query.metric_stats).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

#: Unit -> factor to seconds, for the time metrics (the conventions say "s").
SECONDS_PER_UNIT = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}

DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


@dataclass(slots=True)
class MetricSeries:
    """One stored series: metric + source + kept attributes (its id derived from the digest)."""

    id: int
    digest: bytes
    name: str
    unit: str
    kind: str  # "histogram" or "sum"
    source_id: int
    service: str
    attributes: str  # the kept attributes, JSON, keys sorted
    model: str | None
    provider: str | None
    operation: str | None
    error_type: str | None
    token_type: str | None


@dataclass(slots=True)
class MetricPoint:
    """One data point of a stored series, as exported (deltas are computed by the writer)."""

    series_id: int
    #: Tells apart the exporter's own series that fold into one stored series once
    #: attributes are dropped (LiteLLM: one per call): a hash of all the point's attributes.
    stream: int
    temporality: int
    start_ns: int
    time_ns: int
    count: int | None  # histograms
    sum: float | None
    min: float | None
    max: float | None
    bounds: tuple[float, ...] | None
    counts: tuple[int, ...] | None
    value: float | None  # sums
    dropped: int


@dataclass(slots=True)
class Exemplar:
    """A measurement that names its span: (trace id, span id, metric, value in seconds, time)."""

    trace_id: bytes
    span_id: bytes
    metric: str
    value_s: float
    time_ns: int


@dataclass(slots=True)
class DecodedMetrics:
    series: dict[bytes, MetricSeries] = field(default_factory=dict)
    points: list[MetricPoint] = field(default_factory=list)
    exemplars: list[Exemplar] = field(default_factory=list)
    #: Points of metrics tracetui does not store (accepted, not rejected).
    ignored: int = 0

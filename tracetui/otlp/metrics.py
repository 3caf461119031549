"""OTLP metric requests -> GenAI metric points for the writer. Pure functions, no I/O.

Only the GenAI metrics tracetui shows are kept (:data:`STORED_METRICS`), as
histograms (explicit buckets; exponential ones are converted, see
:func:`explicit_buckets`) or sums; every other metric, and other kinds
(gauges, summaries), is accepted and not stored, so an
app that exports all its metrics to tracetui gets OK and loses nothing it
would see here.

Series cardinality is bounded by keeping only the attributes the GenAI
conventions define for these metrics (:func:`kept_attribute`): ``gen_ai.*``
(minus per-call ids and content), ``error.type`` and ``server.*``. LiteLLM
1.110 puts a per-call ``hidden_params`` JSON (request id, headers, cost) on
every point, which would make one series per call; such attributes are
dropped, and each point counts how many it lost (``MetricPoint.dropped``, the
``metric_attributes_dropped`` counter of the status).

Names followed: the GenAI metrics of the OpenTelemetry semantic conventions
(semantic-conventions ``docs/gen-ai/gen-ai-metrics.md``, 1.37-1.38 era; listed in
docs/semconv.md, "Metrics"), ``gen_ai.workflow.duration`` from
semantic-conventions-genai (#126), ``gen_ai.agent.duration`` as
opentelemetry-util-genai's emitters record it, ``gen_ai.usage.cost`` as
LiteLLM 1.110 records it and ``gen_ai.client.inference.duration`` as
``@ai-sdk/otel`` 1.0 records it. Agent and tool durations in the current
conventions are ``gen_ai.client.operation.duration`` with
``gen_ai.operation.name`` = ``invoke_agent`` / ``execute_tool``: kept with
their operation.
"""

from __future__ import annotations

import hashlib
import json
import math
from itertools import pairwise

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from tracetui.model.anyvalue import any_value_to_python
from tracetui.model.metrics import (
    CUMULATIVE,
    DELTA,
    SECONDS_PER_UNIT,
    DecodedMetrics,
    Exemplar,
    MetricPoint,
    MetricSeries,
)
from tracetui.model.rows import Decoded
from tracetui.otlp.decode import INT64_MAX, _by_source, _clamp_ns, _parse_failure

#: The metrics stored; all others are accepted and dropped.
STORED_METRICS = frozenset(
    {
        "gen_ai.client.operation.duration",
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.time_to_first_chunk",
        "gen_ai.client.operation.time_per_output_chunk",
        "gen_ai.server.request.duration",
        "gen_ai.server.time_to_first_token",
        "gen_ai.server.time_per_output_token",
        "gen_ai.usage.cost",
        "gen_ai.workflow.duration",
        "gen_ai.agent.duration",
        "gen_ai.client.inference.duration",
    }
)
#: Metrics whose exemplars give a span its time to first token (when it has none of its own).
TTFT_METRICS = ("gen_ai.client.operation.time_to_first_chunk", "gen_ai.server.time_to_first_token")
#: ``gen_ai.*`` attributes that differ per call (ids, content) and would make one series per call.
_PER_CALL = frozenset(
    {
        "gen_ai.response.id",
        "gen_ai.conversation.id",
        "gen_ai.tool.call.id",
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.prompt",
        "gen_ai.completion",
    }
)
#: A kept attribute's value longer than this is per-call data, not a dimension.
MAX_VALUE_CHARS = 256
#: A sum point's histogram fields.
_NO_HISTOGRAM = dict.fromkeys(("count", "sum", "min", "max", "bounds", "counts"))


def kept_attribute(key: str, value: object) -> bool:
    """Whether a point attribute is a series dimension tracetui keeps (see the module docstring)."""
    if isinstance(value, (dict, list)) or (isinstance(value, str) and len(value) > MAX_VALUE_CHARS):
        return False
    if key.startswith("gen_ai."):
        return key not in _PER_CALL
    return key == "error.type" or key.startswith("server.")


def parse_metrics_request(data: bytes) -> ExportMetricsServiceRequest:
    try:
        return ExportMetricsServiceRequest.FromString(data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError, sometimes RuntimeError
        raise _parse_failure("ExportMetricsServiceRequest", exc) from None


def decode_metrics(request: ExportMetricsServiceRequest) -> Decoded:
    """Metric data points -> writer rows (``Decoded.metrics``); malformed points are rejected one by one."""
    out = Decoded(unit="metric data point(s)")
    found = out.metrics = DecodedMetrics()
    for source, service, metrics in _by_source(out, request.resource_metrics, "scope_metrics", "metrics"):
        for metric in metrics:
            kind = metric.WhichOneof("data")
            if metric.name not in STORED_METRICS or kind not in ("histogram", "exponential_histogram", "sum"):
                found.ignored += _point_count(metric, kind)
                continue
            data = getattr(metric, kind)
            temporality = data.aggregation_temporality
            if temporality not in (DELTA, CUMULATIVE):
                for _ in data.data_points:
                    out.reject("aggregation temporality unspecified")
                continue
            for point in data.data_points:
                _add_point(out, found, metric, kind, temporality, point, source.id, service)
    return out


def _point_count(metric, kind: str | None) -> int:
    return len(getattr(metric, kind).data_points) if kind else 0


def _add_point(out: Decoded, found: DecodedMetrics, metric, kind, temporality, point, source_id, service) -> None:
    if kind != "sum":
        bounds: tuple[float, ...] | None
        if kind == "histogram":
            bounds, counts = tuple(point.explicit_bounds), tuple(point.bucket_counts)
        else:
            bounds, counts = explicit_buckets(point)
            kind = "histogram"  # stored as explicit buckets
        problem = (
            "exponential histogram out of range" if bounds is None else _histogram_problem(bounds, counts, point.count)
        )
        if problem:
            out.reject(problem)
            return
        values = {
            "count": point.count,
            "sum": _finite(point.sum) if point.HasField("sum") else None,
            "min": _finite(point.min) if point.HasField("min") else None,
            "max": _finite(point.max) if point.HasField("max") else None,
            "bounds": bounds,
            "counts": counts,
            "value": None,
        }
    else:
        number = point.as_double if point.WhichOneof("value") == "as_double" else point.as_int
        if not math.isfinite(number):
            out.reject("value is not a finite number")
            return
        values = {**_NO_HISTOGRAM, "value": float(number)}
    series, dropped = _series(found, metric, kind, point.attributes, source_id, service)
    found.points.append(
        MetricPoint(
            series_id=series.id,
            stream=_stream(point.attributes),
            temporality=temporality,
            start_ns=_clamp_ns(point.start_time_unix_nano),
            time_ns=_clamp_ns(point.time_unix_nano),
            dropped=dropped,
            **values,
        )
    )
    if metric.name in TTFT_METRICS:
        _add_exemplars(found, metric, point.exemplars, _clamp_ns(point.time_unix_nano))


#: Exponential histograms: scales and bucket counts beyond these are refused (the SDKs use -10..20, 160 buckets).
_SCALES = range(-10, 21)
MAX_EXPONENTIAL_BUCKETS = 2_000


def explicit_buckets(point) -> tuple[tuple[float, ...] | None, tuple[int, ...]]:
    """An exponential histogram point as explicit buckets: bounds ``0, base^offset, ..., base^(offset+n)``.

    Positive bucket k holds (base^(offset+k), base^(offset+k+1)] (OTLP metrics.proto),
    base = 2^(2^-scale). The zero bucket and the negative buckets (no GenAI
    duration or count is negative) go to the first explicit bucket, (-inf, 0].
    Bounds are ``2 ** (index * 2**-scale)`` with a dyadic exponent, so a bound
    shared by two scales is the same float at both: a later export at a coarser
    scale (the SDK rescales as values spread) nests exactly over the earlier one
    (see tracetui.store.metrics). None for bounds out of range.
    """
    positive = list(point.positive.bucket_counts)
    if point.scale not in _SCALES or len(positive) > MAX_EXPONENTIAL_BUCKETS:
        return None, ()
    step = 2.0**-point.scale
    try:
        bounds = (0.0, *(math.pow(2.0, (point.positive.offset + k) * step) for k in range(len(positive) + 1)))
    except OverflowError:
        return None, ()
    below = point.zero_count + sum(point.negative.bucket_counts)
    return bounds, (below, 0, *positive, 0)


def _histogram_problem(bounds: tuple, counts: tuple, count: int) -> str | None:
    if counts and len(counts) != len(bounds) + 1:
        return f"{len(counts)} bucket counts for {len(bounds)} bounds (needs one more count than bounds)"
    if any(not math.isfinite(b) for b in bounds) or any(b >= c for b, c in pairwise(bounds)):
        return "histogram bounds are not finite and strictly increasing"
    if counts and sum(counts) != count:
        return f"bucket counts add up to {sum(counts)}, not the point's count {count}"
    if count > INT64_MAX:
        return "count too large"
    return None


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _stream(attributes) -> int:
    """A 63-bit hash of all the point's attributes, in order (the exporter's own series)."""
    digest = hashlib.blake2b(b"".join(kv.SerializeToString() for kv in attributes), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _series(found: DecodedMetrics, metric, kind: str, attributes, source_id: int, service: str):
    """The stored series a point belongs to (registered in ``found``) and how many attributes it dropped."""
    kept: dict[str, object] = {}
    dropped = 0
    for kv in attributes:
        value = any_value_to_python(kv.value)
        if kept_attribute(kv.key, value):
            kept[kv.key] = value
        else:
            dropped += 1
    text = json.dumps(kept, sort_keys=True, ensure_ascii=False, default=str)
    digest = hashlib.blake2b(
        f"{metric.name}\x00{metric.unit}\x00{kind}\x00{source_id}\x00{text}".encode(), digest_size=16
    ).digest()
    series = found.series.get(digest)
    if series is None:
        series = found.series[digest] = MetricSeries(
            id=int.from_bytes(digest[:8], "big", signed=True),
            digest=digest,
            name=metric.name,
            unit=metric.unit,
            kind=kind,
            source_id=source_id,
            service=service,
            attributes=text,
            model=_text(kept.get("gen_ai.request.model")) or _text(kept.get("gen_ai.response.model")),
            provider=_text(kept.get("gen_ai.provider.name")) or _text(kept.get("gen_ai.system")),
            operation=_text(kept.get("gen_ai.operation.name")),
            error_type=_text(kept.get("error.type")),
            token_type=_text(kept.get("gen_ai.token.type")),
        )
    return series, dropped


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _add_exemplars(found: DecodedMetrics, metric, exemplars, point_ns: int) -> None:
    """Exemplars naming a span (ids of the right length), their time the point's when they have none."""
    factor = SECONDS_PER_UNIT.get(metric.unit)
    if factor is None:
        return  # a time to first token in an unknown unit names no value we could show
    for exemplar in exemplars:
        if len(exemplar.trace_id) != 16 or len(exemplar.span_id) != 8:
            continue
        value = exemplar.as_double if exemplar.WhichOneof("value") == "as_double" else exemplar.as_int
        if math.isfinite(value) and 0 <= value * factor < 86_400:
            when = _clamp_ns(exemplar.time_unix_nano) or point_ns
            found.exemplars.append(Exemplar(exemplar.trace_id, exemplar.span_id, metric.name, value * factor, when))

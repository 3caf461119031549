"""The real OpenTelemetry SDK exporting GenAI metrics to a real receiver process.

* cumulative temporality over several export intervals (the SDK's default): every
  export repeats the whole history, and every measurement must still count once;
* an exemplar recorded inside a span gives that span the time to first token it lacks,
  whichever of the metric and the span arrives first;
* an app run under ``opentelemetry-instrument`` (zero-code) exporting metrics over gRPC
  gets OK, where it used to log UNIMPLEMENTED at every interval.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import query_ro, receiver_env, wait_until
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tracetui.query import metric_stats
from tracetui.store.blobs import provenance_sql
from tracetui.store.reader import SqliteReader

MODEL = {"gen_ai.request.model": "sdk-model", "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai"}


def metric_exporter(rcv, transport: str):
    if transport == "grpc":
        return GrpcMetricExporter(endpoint=f"127.0.0.1:{rcv.port}", insecure=True, timeout=10,
                                  preferred_temporality={Histogram: AggregationTemporality.CUMULATIVE})  # fmt: skip
    return HttpMetricExporter(endpoint=f"http://{rcv.http}/v1/metrics", timeout=10,
                              preferred_temporality={Histogram: AggregationTemporality.CUMULATIVE})  # fmt: skip


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_cumulative_histogram_over_several_intervals_counts_each_measurement_once(receiver, transport, caplog):
    reader = PeriodicExportingMetricReader(metric_exporter(receiver, transport), export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create({"service.name": f"sdk-{transport}"}))
    duration = provider.get_meter("tests.genai").create_histogram("gen_ai.client.operation.duration", unit="s")
    intervals = [[0.1, 0.2], [0.3], [], [0.4, 0.5, 0.6], []]  # empty: the same cumulative totals re-exported
    with caplog.at_level(logging.WARNING):
        for n, values in enumerate(intervals):
            for value in values:
                duration.record(value, MODEL)
            if n == 1:  # a per-call id on the point, as LiteLLM sends: dropped, so the stored series stays one
                duration.record(0.7, {**MODEL, "gen_ai.response.id": "resp-1"})
            assert reader.force_flush(10_000)
        provider.shutdown()
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry")], caplog.text

    rows = query_ro(
        receiver.db_path,
        "SELECT p.count, round(p.sum, 9) FROM metric_points p JOIN metric_series s ON s.id = p.series_id "
        "WHERE s.service = ? ORDER BY p.time_ns",
        (f"sdk-{transport}",),
    )
    # one stored delta per interval that saw calls, whatever the number of exports (the 0.7 s call
    # is its own exporter series, exported 4 times and stored once)
    assert rows == [(2, 0.3), (1, 0.3), (1, 0.7), (3, 1.5)]
    assert query_ro(
        receiver.db_path, "SELECT count(*) FROM metric_series WHERE service = ?", (f"sdk-{transport}",)
    ) == [(1,)]

    conn = SqliteReader(receiver.db_path)
    try:
        figures = metric_stats.compute(conn)["sdk-model"].duration
    finally:
        conn.close()
    assert figures is not None and figures.count == 7
    # the SDK's default bounds put 0.1..0.7 s in the bucket (0, 5]: narrowed to each delta's bounds
    # (its series' min and max), so every percentile is within 0.1..0.7 s, the error under 0.5 s
    assert 100 <= figures.p50_ms <= 600 and 600 <= figures.p99_ms <= 700
    assert figures.max_error_ms <= 500


def span_ttft(db: Path, span_id: bytes) -> tuple:
    rows = query_ro(
        db, f"SELECT ttft_ns, streaming, {provenance_sql('provenance')} FROM spans WHERE span_id = ?", (span_id,)
    )
    return rows[0] if rows else (None, None, None)


@pytest.mark.parametrize("metric_first", [True, False], ids=["metric-then-span", "span-then-metric"])
def test_an_exemplar_gives_its_span_the_time_to_first_token_it_lacks(receiver, metric_first):
    reader = PeriodicExportingMetricReader(metric_exporter(receiver, "grpc"), export_interval_millis=3_600_000)
    resource = Resource.create({"service.name": "exemplars"})
    meters = MeterProvider(metric_readers=[reader], resource=resource)
    ttft = meters.get_meter("tests.genai").create_histogram("gen_ai.server.time_to_first_token", unit="s")
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        SimpleSpanProcessor(GrpcSpanExporter(endpoint=f"127.0.0.1:{receiver.port}", insecure=True, timeout=10))
    )
    tracer = tracer_provider.get_tracer("tests.genai")
    start = time.time_ns() - 10**9  # a call of one second, 40 tokens
    span = tracer.start_span("chat sdk-model", attributes={**MODEL, "gen_ai.usage.output_tokens": 40}, start_time=start)
    with trace.use_span(span):
        ttft.record(0.25, MODEL)  # inside the span: the SDK's trace-based filter keeps it as an exemplar
    if metric_first:
        assert reader.force_flush(10_000)
        assert wait_until(lambda: query_ro(receiver.db_path, "SELECT count(*) FROM metric_exemplars")[0][0] == 1)
    span.end(end_time=start + 10**9)
    span_id = span.get_span_context().span_id.to_bytes(8, "big")
    assert wait_until(lambda: query_ro(receiver.db_path, "SELECT 1 FROM spans WHERE span_id = ?", (span_id,)))
    if not metric_first:
        assert span_ttft(receiver.db_path, span_id)[0] is None  # the span itself reports none
        assert reader.force_flush(10_000)
    meters.shutdown()
    tracer_provider.shutdown()

    ttft_ns, streaming, provenance = span_ttft(receiver.db_path, span_id)
    assert ttft_ns == 250_000_000
    assert streaming == 1
    # decode time and speed follow, as for a TTFT the span reported itself
    assert query_ro(receiver.db_path, "SELECT decode_ns, tokens_per_s FROM spans WHERE span_id = ?", (span_id,)) == [
        (750_000_000, pytest.approx(40 / 0.75))
    ]
    assert json.loads(provenance)["ttft"] == "metric exemplar (gen_ai.server.time_to_first_token)"
    # the run's bar is redrawn with it: the time split now has a first-token part
    assert query_ro(receiver.db_path, "SELECT split_ttft_ns FROM traces WHERE trace_id = ?",
                 (span.get_span_context().trace_id.to_bytes(16, "big"),)) == [(250_000_000,)]  # fmt: skip


def test_a_span_with_its_own_time_to_first_token_keeps_it(receiver):
    reader = PeriodicExportingMetricReader(metric_exporter(receiver, "grpc"), export_interval_millis=3_600_000)
    meters = MeterProvider(metric_readers=[reader])
    ttft = meters.get_meter("tests.genai").create_histogram("gen_ai.server.time_to_first_token", unit="s")
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(
        SimpleSpanProcessor(GrpcSpanExporter(endpoint=f"127.0.0.1:{receiver.port}", insecure=True, timeout=10))
    )
    own = {**MODEL, "gen_ai.response.time_to_first_chunk": 0.1}
    with tracer_provider.get_tracer("t").start_as_current_span("chat sdk-model", attributes=own) as span:
        ttft.record(0.25, MODEL)
    assert reader.force_flush(10_000)
    meters.shutdown()
    tracer_provider.shutdown()
    ttft_ns, _, provenance = span_ttft(receiver.db_path, span.get_span_context().span_id.to_bytes(8, "big"))
    assert ttft_ns == 100_000_000 and json.loads(provenance)["ttft"] == "gen_ai.response.time_to_first_chunk"


APP = textwrap.dedent(
    """
    from opentelemetry import metrics

    histogram = metrics.get_meter("zero-code-app").create_histogram("gen_ai.client.token.usage", unit="{token}")
    histogram.record(42, {"gen_ai.request.model": "zc-model", "gen_ai.token.type": "input"})
    metrics.get_meter("zero-code-app").create_counter("app.requests").add(1)  # not a GenAI metric: not stored
    """
)


def test_a_zero_code_app_exports_its_metrics_over_grpc_without_unimplemented(receiver, tmp_path):
    """`opentelemetry-instrument python app.py`: metrics over gRPC at shutdown, answered OK and stored."""
    (tmp_path / "app.py").write_text(APP)
    instrument = Path(sys.executable).parent / "opentelemetry-instrument"
    env = receiver_env({
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_SERVICE_NAME": "zero-code",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    })  # fmt: skip
    done = subprocess.run(
        [str(instrument), sys.executable, "app.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "UNIMPLEMENTED" not in done.stderr and "Failed to export" not in done.stderr, done.stderr
    assert query_ro(
        receiver.db_path,
        "SELECT s.name, s.model, p.sum FROM metric_points p JOIN metric_series s ON s.id = p.series_id "
        "WHERE s.service = ?",
        ("zero-code",),
    ) == [("gen_ai.client.token.usage", "zc-model", 42.0)]


def test_exponential_histograms_that_rescale_between_exports_count_each_measurement_once(receiver):
    """An app configured for base-2 exponential histograms: the SDK moves to a coarser scale as values spread."""
    exporter = metric_exporter(receiver, "grpc")
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    view = View(instrument_name="gen_ai.*", aggregation=ExponentialBucketHistogramAggregation(max_size=20))
    provider = MeterProvider(metric_readers=[reader], views=[view], resource=Resource.create({"service.name": "exp"}))
    ttft = provider.get_meter("tests.genai").create_histogram("gen_ai.server.time_to_first_token", unit="s")
    intervals = [[0.30, 0.31], [0.32], [40.0, 0.001], [], [5.0]]  # the third forces a coarser scale
    for values in intervals:
        for value in values:
            ttft.record(value, MODEL)
        assert reader.force_flush(10_000)
    provider.shutdown()
    rows = query_ro(
        receiver.db_path,
        "SELECT p.count, round(p.sum, 6) FROM metric_points p JOIN metric_series s ON s.id = p.series_id "
        "WHERE s.service = 'exp' ORDER BY p.time_ns",
    )
    assert rows == [(2, 0.61), (1, 0.32), (2, 40.001), (1, 5.0)]
    conn = SqliteReader(receiver.db_path)
    try:
        figures = metric_stats.compute(conn)["sdk-model"].ttft
    finally:
        conn.close()
    # six calls: the median lies among the three around 0.31 s (its bucket is a few percent wide at most)
    assert figures.count == 6 and 300 <= figures.p50_ms <= 330

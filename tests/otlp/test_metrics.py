"""OTLP metrics: the real captures replayed through the real receiver on every transport, checked
against what the test server and the app saw (``*.client.log``, ``*.server_requests.json``).

Expected values come from the ground-truth files and the opentelemetry.proto types, never from
tracetui's own decoding.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import grpc
import pytest
import requests
from click.testing import CliRunner
from helpers import FIXTURES, channel_to, query_ro, read_records
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from tracetui.cli.main import main
from tracetui.otlp.otlp_json import message_to_dict

METRICS_METHOD = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
CAPTURES = ("otel_v2_current", "litellm_otel", "vercel_ai_node")
SERVICES = {
    "otel_v2_current": "harness-otel-v2-current",
    "litellm_otel": "harness-litellm-otel",
    "vercel_ai_node": "harness-vercel-ai-node",
}
PB = "application/x-protobuf"
JSON = "application/json"
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


# --- ground truth ---------------------------------------------------------------------------------


def client_calls(capture: str) -> list[dict]:
    """The app's own record of each LLM call (``CALL {...}`` lines of NAME.client.log)."""
    text = (FIXTURES / f"{capture}.client.log").read_text()
    return [json.loads(m[1]) for m in re.finditer(r"CALL (\{.*\})\s*$", text, re.MULTILINE)]


def server_counts(capture: str) -> dict[str, int]:
    return json.loads((FIXTURES / f"{capture}.server_requests.json").read_text())["counts"]


def metric_records(capture: str) -> list[bytes]:
    return read_records(FIXTURES / f"{capture}.metrics.otlp")


# --- sending --------------------------------------------------------------------------------------


def http_url(rcv) -> str:
    return f"http://{rcv.http}"


def send_grpc(rcv, record: bytes, **kwargs) -> ExportMetricsServiceResponse:
    with channel_to(rcv.port) as channel:
        export = channel.unary_unary(METRICS_METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        return ExportMetricsServiceResponse.FromString(export(record, timeout=20, **kwargs))


def send_http(rcv, record: bytes, content_type: str, **headers) -> requests.Response:
    body = record
    if content_type == JSON:
        body = json.dumps(message_to_dict(ExportMetricsServiceRequest.FromString(record))).encode()
    return requests.post(
        http_url(rcv) + "/v1/metrics", data=body, headers={"Content-Type": content_type, **headers}, timeout=30
    )


def replay(rcv, capture: str, transport: str) -> None:
    for record in metric_records(capture):
        if transport == "grpc":
            answer = send_grpc(rcv, record)
            assert not answer.HasField("partial_success")
        else:
            answer = send_http(rcv, record, PB if transport == "http-protobuf" else JSON)
            assert answer.status_code == 200, answer.text
            assert answer.headers["Content-Type"].startswith(PB if transport == "http-protobuf" else JSON)


# --- reading what was stored ----------------------------------------------------------------------


def stored_by_model(db: Path, service: str, metric: str, **where: str) -> dict[str, tuple[int, float]]:
    """model -> (count, sum) over the stored points of one metric of one service."""
    extra = "".join(f" AND s.{column} = ?" for column in where)
    rows = query_ro(
        db,
        "SELECT s.model, sum(p.count), sum(p.sum) FROM metric_points p JOIN metric_series s ON s.id = p.series_id "
        f"WHERE s.service = ? AND s.name = ?{extra} GROUP BY s.model",
        (service, metric, *where.values()),
    )
    return {model: (count, total) for model, count, total in rows}


def single_values(db: Path, service: str, metric: str) -> dict[str, list[float]]:
    """model -> the values of points holding one measurement each (min = max = sum), sorted."""
    out: dict[str, list[float]] = defaultdict(list)
    for model, value in query_ro(
        db,
        "SELECT s.model, p.sum FROM metric_points p JOIN metric_series s ON s.id = p.series_id "
        "WHERE s.service = ? AND s.name = ? AND p.count = 1",
        (service, metric),
    ):
        out[model].append(value)
    return {k: sorted(v) for k, v in out.items()}


# --- the captures on every transport ----------------------------------------------------------------

TRANSPORTS = ("grpc", "http-protobuf", "http-json")


@pytest.fixture(scope="module", params=TRANSPORTS)
def replayed(request, tmp_path_factory):
    """One receiver per transport, every capture's metrics sent through it twice (the second time: a resend)."""
    from helpers import start_receiver

    tmp = tmp_path_factory.mktemp(f"metrics-{request.param}")
    rcv = start_receiver(tmp / "m.db", cwd=tmp)
    try:
        for capture in CAPTURES:
            replay(rcv, capture, request.param)
        before = query_ro(rcv.db_path, "SELECT * FROM metric_points ORDER BY id")
        for capture in CAPTURES:
            replay(rcv, capture, request.param)
        # exporters resend on timeouts: the same cumulative points again must change nothing
        assert query_ro(rcv.db_path, "SELECT * FROM metric_points ORDER BY id") == before
        yield rcv
    finally:
        assert rcv.stop() == 0, rcv.stderr
    assert "Traceback" not in rcv.stderr


def test_durations_are_counted_once_per_call_and_match_the_apps_wall_time(replayed):
    """otel_v2 re-exported its cumulative histograms 4 times: each call still counts once."""
    for capture, recorded in (("otel_v2_current", "all"), ("litellm_otel", "ok")):
        calls = [c for c in client_calls(capture) if recorded == "all" or c["status"] == "ok"]
        expected_counts = Counter(c["model"] for c in calls)
        wall = defaultdict(float)
        for c in calls:
            wall[c["model"]] += c["wall_s"]
        stored = stored_by_model(replayed.db_path, SERVICES[capture], "gen_ai.client.operation.duration")
        assert {m: n for m, (n, _) in stored.items()} == dict(expected_counts), capture
        for model, (_, total) in stored.items():
            assert total == pytest.approx(wall[model], rel=0.05), (capture, model)


def test_vercel_inference_duration_has_one_point_per_http_request(replayed):
    """The Vercel AI SDK times each HTTP request, the 429 attempt included (error.type=_OTHER)."""
    stored = stored_by_model(replayed.db_path, SERVICES["vercel_ai_node"], "gen_ai.client.inference.duration")
    assert {m: n for m, (n, _) in stored.items()} == server_counts("vercel_ai_node")
    failed = query_ro(
        replayed.db_path,
        "SELECT s.model, s.error_type FROM metric_series s WHERE s.service = ? AND s.error_type IS NOT NULL",
        (SERVICES["vercel_ai_node"],),
    )
    assert sorted(failed) == [("gpt-4.1-mini", "_OTHER"), ("gpt-4.1-nano", "AI_APICallError")]


@pytest.mark.parametrize("capture", ["otel_v2_current", "litellm_otel"])
def test_token_usage_equals_the_servers_counts(replayed, capture):
    expected: dict[tuple[str, str], int] = Counter()
    for call in client_calls(capture):
        if call.get("input_tokens") is not None:
            expected[(call["model"], "input")] += call["input_tokens"]
            expected[(call["model"], "output")] += call["output_tokens"]
    if capture == "litellm_otel":
        # the stream without usage: LiteLLM estimated 201 / 24 itself (fixtures README) and says so nowhere else
        expected[("gpt-4o-mini", "input")] += 201
        expected[("gpt-4o-mini", "output")] += 24
    stored = {}
    for token_type in ("input", "output"):
        for model, (_, total) in stored_by_model(
            replayed.db_path, SERVICES[capture], "gen_ai.client.token.usage", token_type=token_type
        ).items():
            stored[(model, token_type)] = total
    assert stored == dict(expected)


def test_litellm_time_to_first_token_comes_from_its_metric_within_20_percent_of_the_client(replayed):
    """LiteLLM's only TTFT: gen_ai.server.time_to_first_token (s, from LiteLLM's call start)."""
    measured: dict[str, list[float]] = defaultdict(list)
    for call in client_calls("litellm_otel"):
        if call.get("client_ttft_s") is not None:
            measured[call["model"]].append(call["client_ttft_s"])
    stored = single_values(replayed.db_path, SERVICES["litellm_otel"], "gen_ai.server.time_to_first_token")
    assert set(stored) == set(measured)
    for model, values in stored.items():
        for value, truth in zip(values, sorted(measured[model]), strict=True):
            assert value == pytest.approx(truth, rel=0.2), model


def test_litellm_per_call_attributes_are_dropped_and_counted(replayed):
    """hidden_params would make one series per call: only the GenAI dimensions stay."""
    service = SERVICES["litellm_otel"]
    series = query_ro(
        replayed.db_path,
        "SELECT model, attributes FROM metric_series WHERE service = ? AND name = 'gen_ai.client.operation.duration'",
        (service,),
    )
    assert sorted(m for m, _ in series) == ["gpt-4.1-mini", "gpt-4o-mini"]  # one per model, not one per call
    for _, attributes in series:
        assert "hidden_params" not in json.loads(attributes)
        assert json.loads(attributes)["gen_ai.framework"] == "litellm"
    per_point = query_ro(
        replayed.db_path,
        "SELECT DISTINCT p.dropped FROM metric_points p JOIN metric_series s ON s.id = p.series_id WHERE s.service = ?",
        (service,),
    )
    assert per_point == [(2,)]  # hidden_params and metadata.applied_guardrails
    assert query_ro(replayed.db_path, "SELECT value FROM meta WHERE key = 'metric_attributes_dropped'")[0][0] > 0


def test_other_metrics_are_accepted_and_not_stored(replayed):
    names = {n for (n,) in query_ro(replayed.db_path, "SELECT DISTINCT name FROM metric_series")}
    assert "http.client.duration" not in names  # sent by otel_v2's httpx instrumentation
    assert "gen_ai.client.response.duration" not in names  # LiteLLM's own, not a convention
    assert "gen_ai.usage.cost" in names and "gen_ai.server.time_per_output_token" in names


def test_stats_json_shows_metric_percentiles_labelled_from_metrics(replayed):
    result = CliRunner().invoke(main, ["stats", "--db", str(replayed.db_path), "--json"])
    assert result.exit_code == 0, result.output
    groups = {g["key"]: g for g in json.loads(result.stdout)}
    # no LLM spans were sent: the models are known from metrics only
    mini = groups["gpt-4.1-mini"]
    assert mini["count"] == 0 and mini["from_metrics"]["method"].startswith("histogram buckets")
    ttft = mini["from_metrics"]["ttft_ms"]
    assert ttft["metric"] == "gen_ai.server.time_to_first_token"
    truth = next(c["client_ttft_s"] for c in client_calls("litellm_otel") if c["model"] == "gpt-4.1-mini")
    assert ttft["p50_ms"] == pytest.approx(truth * 1000, rel=0.2)
    assert ttft["max_error_ms"] == 0  # one call, min = max: exact
    nano = groups["gpt-4.1-nano"]["from_metrics"]
    assert nano["duration_ms"]["count"] == 1 and nano["ttft_ms"] is None
    text = CliRunner().invoke(main, ["stats", "--db", str(replayed.db_path)])
    assert "from metrics (histogram buckets, linear interpolation within a bucket" in text.stdout


# --- answers like traces ---------------------------------------------------------------------------


def bad_histogram_request() -> ExportMetricsServiceRequest:
    """Two good points and one whose bucket counts do not fit its bounds."""
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add()
    metric.name, metric.unit = "gen_ai.client.operation.duration", "s"
    metric.histogram.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    for n, counts in enumerate(([1, 0], [0, 1, 0], [0, 2])):
        point = metric.histogram.data_points.add(start_time_unix_nano=10 + n, time_unix_nano=20 + n)
        point.explicit_bounds.extend([1.0] if len(counts) == 2 else [1.0, 2.0])
        point.bucket_counts.extend(counts)
        point.count, point.sum = sum(counts), 0.5 * sum(counts)
        attribute = point.attributes.add(key="gen_ai.request.model")
        attribute.value.string_value = "m"
    request.resource_metrics[0].scope_metrics[0].metrics[0].histogram.data_points[1].bucket_counts[:] = [0, 1]
    return request


def test_partial_success_names_the_rejected_points_on_grpc_and_http(receiver):
    record = bad_histogram_request().SerializeToString()
    answer = send_grpc(receiver, record)
    assert answer.partial_success.rejected_data_points == 1
    assert "bucket counts" in answer.partial_success.error_message
    for content_type in (PB, JSON):
        reply = send_http(receiver, record, content_type)
        assert reply.status_code == 200
        if content_type == PB:
            assert ExportMetricsServiceResponse.FromString(reply.content).partial_success.rejected_data_points == 1
        else:
            assert reply.json()["partialSuccess"]["rejectedDataPoints"] == "1"
    # the good points once (the resends were deduplicated)
    assert query_ro(receiver.db_path, "SELECT sum(count) FROM metric_points") == [(3,)]


def test_undecodable_metrics_get_invalid_argument_and_400(receiver):
    with pytest.raises(grpc.RpcError) as info:
        send_grpc(receiver, b"\xff\xff\xff")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ExportMetricsServiceRequest" in info.value.details()
    assert send_http(receiver, b"\xff\xff\xff", PB).status_code == 400


def test_metrics_need_the_token_on_both_transports(start_rcv):
    rcv = start_rcv("--token", "tok-13a")
    record = metric_records("litellm_otel")[0]
    with pytest.raises(grpc.RpcError) as info:
        send_grpc(rcv, record)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert send_http(rcv, record, PB).status_code == 401
    assert query_ro(rcv.db_path, "SELECT count(*) FROM metric_points") == [(0,)]
    send_grpc(rcv, record, metadata=(("authorization", "Bearer tok-13a"),))
    assert send_http(rcv, record, JSON, Authorization="Bearer tok-13a").status_code == 200
    assert query_ro(rcv.db_path, "SELECT count(*) FROM metric_points")[0][0] > 0


def test_metrics_over_the_size_limit_get_413(start_rcv):
    rcv = start_rcv("--max-request-mb", "1")
    big = bad_histogram_request()
    big.resource_metrics[0].resource.attributes.add(key="pad").value.string_value = "x" * (2 << 20)
    assert send_http(rcv, big.SerializeToString(), PB).status_code == 413
    with pytest.raises(grpc.RpcError) as info:
        send_grpc(rcv, big.SerializeToString())
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_metric_points_are_acknowledged_only_once_committed(receiver):
    """An OK answer means the points are already readable by another process."""
    first = metric_records("vercel_ai_node")[0]  # one point: the first call's duration
    send_grpc(receiver, first)
    assert query_ro(receiver.db_path, "SELECT count(*), sum(count) FROM metric_points") == [(1, 1)]

"""Timing honesty on today's libraries: the captures replayed through the real receiver.

Each capture goes over the transport it was captured on (fixtures README, "Current
libraries as they ship"): ``otel_v2_current`` over gRPC, ``vercel_ai_node`` as
OTLP/HTTP protobuf, ``node_manual_http_json`` as the exporter's own OTLP/HTTP JSON
bodies. Expectations come from the ground truth beside each capture: the app's
``*.client.log`` (one ``CALL {...}`` line per call, in order) and the test server's
``*.server_requests.json`` (arrival time and status of every HTTP request), never
from tracetui's output. The captures' expectations hold on both backends: the receiver's
SQLite database, and the same spans in the Collector's ClickHouse exporter tables (chdb).
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
import requests
from helpers import FIXTURES, both_backends, channel_to, fill_db, read_records, start_receiver

from tracetui.model.reader import Reader
from tracetui.query.export import span_json, trace_summary
from tracetui.store.reader import SqliteReader

#: The five calls of every run, in order, with their model (fixtures README, "What every run did").
CALLS = ("plan", "research", "summarize", "verify", "answer")


def client_calls(capture: str) -> list[dict]:
    """The app's own account of each LLM call, in the order it made them."""
    lines = (FIXTURES / f"{capture}.client.log").read_text().splitlines()
    return [json.loads(line.split(" CALL ", 1)[1]) for line in lines if " CALL " in line]


def server_retry_gap_s(capture: str) -> float:
    """Seconds between the 429 and the request that succeeded after it, as the test server saw them."""
    log = json.loads((FIXTURES / f"{capture}.server_requests.json").read_text())["requests"]
    first = next(i for i, r in enumerate(log) if r["status"] == 429)
    retried = next(r for r in log[first + 1 :] if r["model"] == log[first]["model"])
    assert retried["status"] == 200
    return retried["t"] - log[first]["t"]


def _post(url: str, body: bytes, content_type: str) -> None:
    answer = requests.post(url + "/v1/traces", data=body, headers={"Content-Type": content_type}, timeout=10)
    assert answer.status_code == 200, answer.text


def replay(rcv, capture: str) -> None:
    """Send a capture over the transport it was captured on."""
    if capture == "otel_v2_current":
        channel = channel_to(rcv.port)
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        for record in read_records(FIXTURES / f"{capture}.otlp"):
            export(record, timeout=10)
        channel.close()
        return
    url = f"http://{rcv.http}"
    if capture == "node_manual_http_json":
        for line in (FIXTURES / f"{capture}.http.jsonl").read_bytes().splitlines():
            if line.strip():
                _post(url, line, "application/json")
    else:
        for record in read_records(FIXTURES / f"{capture}.otlp"):
            _post(url, record, "application/x-protobuf")


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("timing-captures")
    rcv = start_receiver(tmp / "t.db", cwd=tmp)
    try:
        for capture in ("otel_v2_current", "vercel_ai_node", "node_manual_http_json"):
            replay(rcv, capture)
    finally:
        assert rcv.stop(signal.SIGTERM) == 0, rcv.stderr
    return tmp / "t.db"


@pytest.fixture(scope="module", params=["sqlite", "clickhouse"])
def reader(request, db: Path):
    """The receiver's database, or the same spans in the ClickHouse exporter's tables."""
    yield from both_backends(request, db)


def run_of(reader: Reader, capture: str):
    """(trace row, LLM calls in start order as `spans --json` objects, summary text) of a capture's run."""
    rows = [t for t in reader.traces(0, -1) if t.service == "harness-" + capture.replace("_", "-")]
    assert len(rows) == 1, [t.service for t in reader.traces(0, -1)]
    row = rows[0]
    spans = span_json(reader, row.trace_id)
    calls = sorted((s for s in spans if s["kind"] == "llm" and s["name"].startswith("chat")),
                   key=lambda s: s["start_ns"])  # fmt: skip
    return row, calls, trace_summary(reader, row.trace_id)


@pytest.mark.parametrize("capture", ["otel_v2_current", "node_manual_http_json"])
def test_the_429_is_a_retry_of_about_the_servers_gap(reader, capture):
    """Two POST children under one chat: the retry runs from the call's start to the attempt that succeeded."""
    row, calls, summary = run_of(reader, capture)
    by_label = dict(zip(CALLS, calls, strict=False))
    summarize = by_label["summarize"]
    assert summarize["request_model"] == "gpt-4.1-mini"
    assert summarize["is_retry"] and not summarize["is_fallback"]
    assert summarize["retry_source"] == "2 HTTP attempts, first 429"
    gap_ms = server_retry_gap_s(capture) * 1000  # 223-226 ms
    # from the call's start, so the first attempt's own few ms before it count too
    assert gap_ms * 0.9 <= summarize["retry_ms"] <= gap_ms * 1.2
    assert [c["label"] for c in client_calls(capture)] == list(CALLS)
    others = [c for label, c in by_label.items() if label != "summarize"]
    assert not any(c["is_retry"] or c["is_fallback"] for c in others)
    assert (row.retries, row.fallbacks) == (1, 0)
    assert "1 retry" in summary and "2 HTTP attempts, first 429" in summary
    assert "- POST: HTTP 429 (an attempt of chat gpt-4.1-mini, retried: the call succeeded)" in summary


@pytest.mark.parametrize("capture", ["otel_v2_current", "node_manual_http_json", "vercel_ai_node"])
def test_the_500_is_an_error_and_the_next_step_is_no_fallback(reader, capture):
    row, calls, _ = run_of(reader, capture)
    verify = next(c for c in calls if c["request_model"] == "gpt-4.1-nano")
    assert verify["status"] == "error"
    after = [c for c in calls if c["start_ns"] > verify["start_ns"]]
    assert after and not any(c["is_fallback"] or c["is_retry"] for c in after)
    assert row.fallbacks == 0


def test_vercel_retry_is_not_reported(reader):
    """The AI SDK leaves no span for the failed attempt: no retry is invented, and the pane says why."""
    row, calls, summary = run_of(reader, "vercel_ai_node")
    summarize = next(c for c in calls if c["request_model"] == "gpt-4.1-mini")
    assert not summarize["is_retry"] and summarize["retry_source"] is None
    assert row.retries == 0
    assert "retry not reported" in summary


def test_official_openai_v2_first_token_is_not_reported(reader):
    """openai-v2 records no streaming flag and no first token: "not reported", never "not streamed"."""
    _, calls, summary = run_of(reader, "otel_v2_current")
    assert all(c["streaming"] is None and c["ttft_ms"] is None for c in calls)
    assert "first token not reported by the OpenTelemetry GenAI instrumentation" in summary
    assert "not streamed" not in summary


def test_a_stream_without_usage_leaves_the_run_incomplete(reader):
    """The last call streamed without include_usage: no tokens anywhere, and the run says so."""
    row, calls, summary = run_of(reader, "otel_v2_current")
    answer = dict(zip(CALLS, calls, strict=False))["answer"]
    assert client_calls("otel_v2_current")[4]["input_tokens"] is None
    assert answer["input_tokens"] is None and answer["output_tokens"] is None
    assert row.tokenless_calls == 1 and row.cost_incomplete
    assert row.to_json()["incomplete"] == ["1 call without token counts"]
    assert "1 call without token counts" in summary


def test_tokens_equal_the_servers_where_reported(reader):
    for capture in ("otel_v2_current", "node_manual_http_json"):
        _, calls, _ = run_of(reader, capture)
        for call, truth in zip(calls, client_calls(capture), strict=False):
            if truth["status"] == "ok" and truth.get("input_tokens") is not None:
                assert (call["input_tokens"], call["output_tokens"]) == (truth["input_tokens"], truth["output_tokens"])


def test_children_before_their_parent_in_separate_exports(reader):
    """otel_v2_current sends the 429 attempt one export before its chat span: the retry is still found."""
    requests_ = read_records(FIXTURES / "otel_v2_current.otlp")
    assert len(requests_) > 1
    text = [r.decode("latin-1") for r in requests_]
    parent_export = next(i for i, t in enumerate(text) if "chat gpt-4.1-mini" in t)
    assert re.search("http.status_code", text[parent_export - 1])  # the attempts came first
    _, calls, _ = run_of(reader, "otel_v2_current")
    assert dict(zip(CALLS, calls, strict=False))["summarize"]["is_retry"]


def test_spans_json_says_what_was_not_reported(reader):
    _, calls, _ = run_of(reader, "otel_v2_current")
    answer = calls[4]
    assert answer["first_token_note"] == "first token not reported by the OpenTelemetry GenAI instrumentation"
    assert answer["tokens_note"] == "no token counts"
    assert answer["retry_note"] == "1 HTTP attempt"
    assert calls[2]["retry_note"] == "2 HTTP attempts, first 429"
    _, vercel, _ = run_of(reader, "vercel_ai_node")
    streamed = next(c for c in vercel if c["request_model"] == "gpt-4.1-mini")
    assert streamed["first_token_note"] is None and streamed["ttft_ms"] > 0
    assert streamed["retry_note"] == "retry not reported by tracer 'gen_ai' (the Vercel AI SDK's default)"


def test_stats_count_the_http_retries_and_no_fallback(reader):
    """gpt-4.1-mini ran once per capture: retried where HTTP attempt spans show it (2 of the 3).

    ClickHouse computes the figures itself and cannot tell retries (they compare calls in Python):
    its rates are None, shown as "—", never a wrong 0."""
    from tracetui.query.stats import compute

    groups = {g.key: g for g in compute(reader, "model")}
    assert groups["gpt-4.1-mini"].count == 3
    if isinstance(reader, SqliteReader):
        assert groups["gpt-4.1-mini"].retry_rate == pytest.approx(2 / 3)
        assert all(g.fallback_rate == 0 for g in groups.values())
        assert all(g.retry_rate == 0 for key, g in groups.items() if key != "gpt-4.1-mini")
    else:
        assert all(g.retry_rate is None and g.fallback_rate is None for g in groups.values())


def _attempts_run(n: int):
    """A run whose chat call has two HTTP attempts (429, then 200), as separate spans."""
    from helpers import make_span, sid, tid
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    ms = 1_000_000
    trace = tid(700 + n)
    root = make_span(trace, sid(1), name="agent", duration=1000 * ms)
    chat = make_span(trace, sid(2), sid(1), name="chat gpt-4.1-mini", start=10 * ms, duration=600 * ms,
                     kind=Span.SPAN_KIND_CLIENT, attributes={"gen_ai.operation.name": "chat",
                     "gen_ai.request.model": "gpt-4.1-mini", "gen_ai.usage.input_tokens": 5,
                     "gen_ai.usage.output_tokens": 5})  # fmt: skip
    attempts = [
        make_span(trace, sid(3), sid(2), name="POST", start=11 * ms, duration=20 * ms, kind=Span.SPAN_KIND_CLIENT,
                  status=Status.STATUS_CODE_ERROR, attributes={"http.method": "POST", "http.status_code": 429}),
        make_span(trace, sid(4), sid(2), name="POST", start=240 * ms, duration=5 * ms, kind=Span.SPAN_KIND_CLIENT,
                  attributes={"http.request.method": "POST", "http.response.status_code": 200,
                              "http.request.resend_count": 1}),
    ]  # fmt: skip
    return trace, [root, chat], attempts


@pytest.mark.parametrize("order", ["parent first", "attempts first", "one export"])
def test_attempts_and_their_call_in_any_export_order(tmp_path, order):
    """Spans of one trace arrive in many exports: the trace is re-analyzed whichever part comes last."""
    from helpers import fill_db, make_request

    trace, calls, attempts = _attempts_run(len(order))
    parts = {"parent first": [calls, attempts], "attempts first": [attempts, calls], "one export": [calls + attempts]}
    db = tmp_path / "order.db"
    fill_db(db, [make_request(spans) for spans in parts[order]])
    reader = SqliteReader(db)
    try:
        row = reader.trace(trace)
        (chat,) = [s for s in span_json(reader, trace) if s["kind"] == "llm"]
    finally:
        reader.close()
    assert chat["is_retry"] and chat["retry_source"] == "2 HTTP attempts, first 429"
    assert chat["retry_ms"] == pytest.approx(230)  # the call's start (10 ms) to the second attempt's (240 ms)
    assert row.retries == 1 and row.split_retry_ns == 230_000_000


def test_a_library_that_spans_every_attempt_reports_no_retry_as_none(tmp_path):
    """ai@4/5 give each HTTP attempt its own ``doGenerate`` / ``doStream`` span (the 429 is one): a call
    without a failed attempt before it had no retry, which the library did report, by omission."""
    from tracetui.store.reader import SqliteReader

    db = tmp_path / "v4.db"
    fill_db(db, read_records(FIXTURES / "vercel_ai_v4_node.otlp"))
    reader = SqliteReader(db)
    try:
        (run,) = reader.traces(0, -1)
        calls = [s for s in span_json(reader, run.trace_id) if s["kind"] == "llm"]
        summary = trace_summary(reader, run.trace_id)
    finally:
        reader.close()
    retried = [c for c in calls if c["is_retry"]]
    assert len(retried) == 1 and retried[0]["retry_note"] == "an earlier failed call to the same model"
    assert {c["retry_note"] for c in calls if not c["is_retry"]} == {"none (each attempt is its own span)"}
    assert "retry not reported" not in summary

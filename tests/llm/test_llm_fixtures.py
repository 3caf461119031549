"""Every captured library, replayed through the real receiver, read as one LLM model.

Ground truth comes from tests/fixtures/README.md (the test server's behaviour and
the order of the "openai suite" calls) and the server's request log
(``*.server_requests.json``), never from tracetui's own output.

Every expectation holds on both backends: the SQLite database the receiver wrote, and
the same spans as the Collector's ClickHouse exporter writes them, read from chdb.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from helpers import FIXTURES, both_backends, channel_to, read_records, start_receiver, trace_fixture_files

from tracetui.query.export import span_json

LIBRARIES = ("traceai_openai", "openinference_openai", "openllmetry_openai", "otel_v2_openai")
#: The openai suite, one top-level span per call, in the order the harness ran them (fixtures README).
SUITE = (
    ("chat", "gpt-4o-mini", "llm"),
    ("chat_stream", "gpt-4o-mini", "llm"),
    ("chat_stream_nousage", "gpt-4o-mini", "llm"),
    ("tools", "gpt-4o-mini", "llm"),
    ("embedding", "text-embedding-3-small", "embedding"),
    ("retry_429", "gpt-4.1-mini", "llm"),
    ("error_500", "gpt-4.1-nano", "llm"),
    ("timeout", "gpt-4.1", "llm"),
)
#: Libraries that expose the first token (as a span event); otel_v2 has none at all (README).
TTFT_LIBRARIES = {"traceai_openai", "openinference_openai", "openllmetry_openai"}
SERVER_TTFT_MS = 150


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    """All trace fixtures exported over gRPC to one real receiver process."""
    tmp = tmp_path_factory.mktemp("llm-fixtures")
    receiver = start_receiver(tmp / "llm.db", cwd=tmp)
    try:
        channel = channel_to(receiver.port)
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        for path in trace_fixture_files():
            for record in read_records(path):
                export(record, timeout=10)
        channel.close()
    finally:
        assert receiver.stop(signal.SIGTERM) == 0
    return tmp / "llm.db"


@pytest.fixture(scope="module", params=["sqlite", "clickhouse"])
def reader(request, db: Path):
    """The receiver's database, or the same spans in the ClickHouse exporter's tables."""
    yield from both_backends(request, db)


def suite_calls(reader, library: str) -> list[dict]:
    """The library's eight top-level spans, in start order, as `tracetui spans --json` objects."""
    service = "unknown_service" if library == "traceai_openai" else f"harness-{library.replace('_', '-')}"
    traces = sorted((t for t in reader.traces(0, -1) if t.service == service), key=lambda t: t.start_ns)
    return [span_json(reader, t.trace_id)[0] for t in traces]


def test_server_log_agrees_with_the_suite_table() -> None:
    """The ground-truth table above is what the test server saw."""
    for library in LIBRARIES:
        log = json.loads((FIXTURES / f"{library}.server_requests.json").read_text())
        assert set(log["counts"]) == {model for _, model, _ in SUITE}
        assert log["counts"]["gpt-4.1-mini"] == 2  # the 429, then the SDK's own retry
        assert any(r["model"] == "gpt-4.1-mini" and r["status"] == 429 for r in log["requests"])


@pytest.mark.parametrize("library", LIBRARIES)
def test_kinds_models_and_errors(reader, library: str) -> None:
    calls = suite_calls(reader, library)
    assert len(calls) == len(SUITE)
    for call, (name, model, kind) in zip(calls, SUITE, strict=True):
        assert call["kind"] == kind, name
        assert call["request_model"] == model, (name, call["provenance"])
        assert call["provider"] == "openai", name
    by_name = dict(zip((n for n, _, _ in SUITE), calls, strict=True))
    for failing in ("error_500", "timeout"):
        assert by_name[failing]["status"] == "error"
        assert by_name[failing]["error_type"], failing  # from error.type or the exception event
        assert not by_name[failing]["error_type"].startswith("<class")
    assert by_name["timeout"]["error_type"].endswith("APITimeoutError")
    for ok in ("chat", "chat_stream", "tools", "embedding", "retry_429"):
        assert by_name[ok]["status"] != "error"


@pytest.mark.parametrize("library", LIBRARIES)
def test_time_to_first_token_only_where_it_exists(reader, library: str) -> None:
    by_name = dict(zip((n for n, _, _ in SUITE), suite_calls(reader, library), strict=True))
    for streamed in ("chat_stream", "chat_stream_nousage"):
        call = by_name[streamed]
        if library in TTFT_LIBRARIES:
            assert call["streaming"] is True
            assert SERVER_TTFT_MS * 0.8 <= call["ttft_ms"] <= SERVER_TTFT_MS * 1.6, call["ttft_ms"]
            assert call["decode_ms"] == pytest.approx(call["duration_ms"] - call["ttft_ms"], abs=0.01)
            assert call["provenance"]["ttft"].startswith("event:")
        else:
            assert call["ttft_ms"] is None and call["decode_ms"] is None
    for unstreamed in ("chat", "tools", "embedding", "retry_429", "error_500", "timeout"):
        call = by_name[unstreamed]
        assert call["ttft_ms"] is None, (library, unstreamed)
        assert call["decode_ms"] is None and call["tokens_per_s"] is None
    # tokens per second only over decode time, never over the whole call
    streamed = by_name["chat_stream"]
    if streamed["tokens_per_s"] is not None:
        assert streamed["tokens_per_s"] == pytest.approx(streamed["output_tokens"] / (streamed["decode_ms"] / 1000))
        assert streamed["tokens_per_s"] > streamed["output_tokens"] / (streamed["duration_ms"] / 1000)


def test_token_counts_agree_across_libraries(reader) -> None:
    """The test server is deterministic, so every library that reports usage reports the same numbers."""
    tables = {library: suite_calls(reader, library) for library in LIBRARIES}
    for index, (name, _, _) in enumerate(SUITE):
        seen = {
            (calls[index]["input_tokens"], calls[index]["output_tokens"])
            for calls in tables.values()
            if calls[index]["input_tokens"] is not None
        }
        if name in ("chat_stream_nousage", "error_500", "timeout"):
            assert seen == set(), name  # no token counts exist anywhere for these
        else:
            assert len(seen) == 1, (name, seen)
            (tokens,) = seen
            assert tokens[0] > 0


def test_handmade_agent_timeout_then_fallback(reader) -> None:
    agent = next(t for t in reader.traces(0, -1) if t.service == "harness-handmade-agent" and t.span_count == 5)
    spans = {s["name"]: s for s in span_json(reader, agent.trace_id)}
    failed, fallback = spans["chat gpt-4o"], spans["chat claude-sonnet-4"]
    assert failed["status"] == "error" and failed["kind"] == "llm"
    assert failed["error_type"] == "openai.APITimeoutError"
    assert fallback["is_fallback"] is True and fallback["is_retry"] is False
    assert fallback["ttft_ms"] == pytest.approx(820)
    assert fallback["provenance"]["ttft"] == "gen_ai.response.time_to_first_chunk"
    # Time lost before the fallback started: the whole failed attempt.
    assert fallback["retry_ms"] >= failed["duration_ms"]
    # The agent span repeats its children's usage; only the LLM call counts.
    assert spans["ticket-resolution agent"]["kind"] == "agent"
    assert (agent.llm_calls, agent.input_tokens, agent.output_tokens) == (2, 1432, 187)
    assert agent.fallbacks == 1 and agent.retries == 0
    split = agent.split
    assert sum(split.values()) == agent.duration_ns
    assert split["fallback"] >= 30 * 10**9 - 10**6
    assert split["ttft"] == 820 * 10**6
    assert split["decode"] == pytest.approx(fallback["decode_ms"] * 1e6, abs=1)

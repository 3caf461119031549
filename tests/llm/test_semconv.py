"""Normalization, one table per instrumentation family (names from shared/reference/semconv.md)."""

from __future__ import annotations

import json

import pytest
from helpers import kv_list
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tracetui.llm.semconv import canonical_provider, normalize_span
from tracetui.model.rows import NORMALIZED_COLUMNS

START = 1_700_000_000_000_000_000
MS = 1_000_000


def span(attributes: dict, *, name: str = "call", duration_ms: int = 1000, events=(), status: int = 0,
         dropped_events: int = 0, links=()) -> Span:  # fmt: skip
    s = Span(
        trace_id=b"\x01" * 16,
        span_id=b"\x02" * 8,
        name=name,
        start_time_unix_nano=START,
        end_time_unix_nano=START + duration_ms * MS,
        attributes=kv_list(attributes),
        status=Status(code=status),
        dropped_events_count=dropped_events,
    )
    for event_name, at_ms, attrs in events:
        s.events.add(name=event_name, time_unix_nano=START + at_ms * MS, attributes=kv_list(attrs))
    for link_span in links:
        s.links.add(trace_id=b"\x01" * 16, span_id=link_span)
    return s


def normalized(s: Span) -> dict:
    values = dict(zip(NORMALIZED_COLUMNS, normalize_span(s), strict=True))
    values["provenance"] = json.loads(values["provenance"]) if values["provenance"] else {}
    return values


CASES = {
    "otel-genai-current": (
        span(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.usage.input_tokens": 1200,
                "gen_ai.usage.output_tokens": 300,
                "gen_ai.usage.cache_read.input_tokens": 1000,
                "gen_ai.usage.cache_creation.input_tokens": 100,
                "gen_ai.usage.reasoning.output_tokens": 120,
                "gen_ai.request.stream": True,
                "gen_ai.response.time_to_first_chunk": 0.25,
                "gen_ai.response.finish_reasons": ["stop"],
                "gen_ai.conversation.id": "conv-1",
                "gen_ai.prompt.name": "triage",
            },
            duration_ms=2250,
        ),
        {
            "llm_kind": "llm",
            "provider": "openai",
            "request_model": "gpt-4o",
            "response_model": "gpt-4o-2024-08-06",
            "input_tokens": 1200,
            "output_tokens": 300,
            "cache_read_tokens": 1000,
            "cache_write_tokens": 100,
            "reasoning_tokens": 120,
            "streaming": 1,
            "ttft_ns": 250 * MS,
            "decode_ns": 2000 * MS,
            "tokens_per_s": 150.0,
            "finish_reason": "stop",
            "session_id": "conv-1",
            "prompt_name": "triage",
        },
    ),
    "otel-genai-deprecated": (
        span(
            {
                "gen_ai.system": "openai",
                "gen_ai.request.model": "gpt-4",
                "gen_ai.usage.prompt_tokens": 10,
                "gen_ai.usage.completion_tokens": 5,
            }
        ),
        {
            "llm_kind": "llm",
            "provider": "openai",
            "input_tokens": 10,
            "output_tokens": 5,
            "ttft_ns": None,
            "streaming": None,
        },
    ),
    "openinference": (
        span(
            {
                "openinference.span.kind": "LLM",
                "llm.system": "openai",
                "llm.model_name": "gpt-4o-mini-2024-07-18",
                "llm.invocation_parameters": json.dumps({"model": "gpt-4o-mini", "stream": True}),
                "llm.token_count.prompt": 50,
                "llm.token_count.completion": 37,
                "llm.token_count.prompt_details.cache_read": 0,
                "llm.token_count.completion_details.reasoning": 0,
                "llm.finish_reason": "stop",
                "session.id": "s-9",
                "user.id": "u-1",
                "llm.prompt_template.version": "17",
            },
            events=[("First Token Stream Event", 156, {})],
            duration_ms=524,
        ),
        {
            "llm_kind": "llm",
            "provider": "openai",
            "request_model": "gpt-4o-mini",
            "response_model": "gpt-4o-mini-2024-07-18",
            "input_tokens": 50,
            "output_tokens": 37,
            "cache_read_tokens": 0,
            "streaming": 1,
            "ttft_ns": 156 * MS,
            "decode_ns": 368 * MS,
            "finish_reason": "stop",
            "session_id": "s-9",
            "user_id": "u-1",
            "prompt_version": "17",
        },
    ),
    "traceai-current": (
        span(
            {
                "gen_ai.span.kind": "LLM",
                "gen_ai.provider.name": "azure",
                # traceAI writes the *response* model here
                "gen_ai.request.model": "gpt-4o-mini-2024-07-18",
                "gen_ai.request.parameters": json.dumps({"model": "gpt-4o-mini", "stream": False}),
                "gen_ai.usage.input_tokens": 50,
                "gen_ai.usage.output_tokens": 31,
                "gen_ai.usage.input_tokens.cache_read": 7,
                "gen_ai.usage.output_tokens.reasoning": 3,
                "gen_ai.prompt.template.version": "v2",
            }
        ),
        {
            "llm_kind": "llm",
            "provider": "azure.ai.openai",
            "request_model": "gpt-4o-mini",
            "response_model": "gpt-4o-mini-2024-07-18",
            "input_tokens": 50,
            "output_tokens": 31,
            "cache_read_tokens": 7,
            "reasoning_tokens": 3,
            "streaming": 0,
            "ttft_ns": None,
            "prompt_version": "v2",
        },
    ),
    "traceai-ttft-attribute-in-ms": (
        span({"gen_ai.span.kind": "LLM", "gen_ai.server.time_to_first_token": 420.0}),
        {"llm_kind": "llm", "ttft_ns": 420 * MS},
    ),
    "traceai-legacy": (
        span({"fi.span.kind": "TOOL", "tool.name": "lookup"}),
        {"llm_kind": "tool"},
    ),
    "openllmetry-current": (
        span(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.is_streaming": True,
                "gen_ai.usage.input_tokens": 50,
                "gen_ai.usage.output_tokens": 37,
                "gen_ai.usage.cache_read.input_tokens": 0,
                "gen_ai.usage.reasoning_tokens": 0,
                "traceloop.association.properties.session_id": "sess",
                "traceloop.association.properties.user_id": "me",
                "traceloop.prompt.version": 4,
            },
            events=[("gen_ai.content.completion.chunk", 160, {}), ("gen_ai.content.completion.chunk", 170, {})],
            duration_ms=531,
        ),
        {
            "llm_kind": "llm",
            "streaming": 1,
            "ttft_ns": 160 * MS,
            "session_id": "sess",
            "user_id": "me",
            "prompt_version": "4",
        },
    ),
    "openllmetry-pre-0.5": (
        span(
            {
                "llm.request.type": "chat",
                "gen_ai.system": "Anthropic",
                "gen_ai.request.model": "claude-3-5-haiku",
                "gen_ai.usage.prompt_tokens": 80,
                "gen_ai.usage.completion_tokens": 20,
                "gen_ai.usage.cache_read_input_tokens": 64,
                "llm.usage.reasoning_tokens": 2,
                "llm.is_streaming": True,
                "gen_ai.completion.0.finish_reason": "end_turn",
            },
            events=[("llm.content.completion.chunk", 300, {})],
        ),
        {
            "llm_kind": "llm",
            "provider": "anthropic",
            "input_tokens": 80,
            "output_tokens": 20,
            "cache_read_tokens": 64,
            "reasoning_tokens": 2,
            "streaming": 1,
            "ttft_ns": 300 * MS,
            "finish_reason": "end_turn",
        },
    ),
    "openllmetry-decorator-workflow": (
        span({"traceloop.span.kind": "workflow", "traceloop.entity.name": "answer"}, name="answer.workflow"),
        {"llm_kind": "chain"},
    ),
    "vllm": (
        span(
            {
                "gen_ai.latency.time_to_first_token": 0.05,
                "gen_ai.usage.prompt_tokens": 12,
                "gen_ai.usage.completion_tokens": 40,
                "gen_ai.response.finish_reasons": '["stop"]',  # a JSON string, not a list
                "gen_ai.request.max_tokens": 64,
            },
            name="llm_request",
            duration_ms=450,
        ),
        {
            "llm_kind": "llm",
            "ttft_ns": 50 * MS,
            "input_tokens": 12,
            "output_tokens": 40,
            "finish_reason": "stop",
            "decode_ns": 400 * MS,
            "tokens_per_s": 100.0,
        },
    ),
    "pydantic-ai-model-request": (
        span(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.system": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.client.operation.time_to_first_chunk": 0.3,  # seconds, under a metric's name
                "operation.cost": 0.0042,
                "gen_ai.usage.input_tokens": 100,
                "gen_ai.usage.output_tokens": 10,
            }
        ),
        {"llm_kind": "llm", "ttft_ns": 300 * MS, "cost_usd": 0.0042, "cost_source": "reported"},
    ),
    "pydantic-ai-agent-run": (
        span(
            {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.usage.input_tokens": 900,
                "gen_ai.usage.output_tokens": 90,
                "gen_ai.agent.name": "support",
            }
        ),
        {"llm_kind": "agent", "input_tokens": 900},  # informational: never summed (only "llm" spans are)
    ),
    "langsmith": (
        span(
            {
                "langsmith.span.kind": "llm",
                "gen_ai.system": "openai",
                "gen_ai.request.model": "gpt-4o",
                "langsmith.request.streaming": True,
                "gen_ai.usage.input_tokens": 40,
                "gen_ai.usage.output_tokens": 8,
                "gen_ai.usage.input_token_details": "{'cache_read': 12}",
                "gen_ai.usage.output_token_details": '{"reasoning": 4}',
            }
        ),
        {"llm_kind": "llm", "streaming": 1, "cache_read_tokens": 12, "reasoning_tokens": 4},
    ),
    "error-type-written-as-class-repr": (
        span({"gen_ai.operation.name": "chat", "error.type": "<class 'openai.APITimeoutError'>"}, status=2),
        {"error_type": "openai.APITimeoutError"},
    ),
    "error-type-from-exception-event": (
        span(
            {"openinference.span.kind": "LLM"},
            status=2,
            events=[("exception", 60, {"exception.type": "openai.InternalServerError"})],
        ),
        {"error_type": "openai.InternalServerError"},
    ),
    "retried-inside-the-span": (
        span(
            {"gen_ai.operation.name": "chat", "gen_ai.request.stream": True, "gen_ai.usage.output_tokens": 30},
            events=[
                ("exception", 400, {"exception.type": "RateLimitError"}),
                ("gen_ai.content.completion.chunk", 550, {}),
            ],
            duration_ms=850,
        ),
        # the first token is measured from the final attempt's start (at 400 ms), not the span's
        {"attempt_offset_ns": 400 * MS, "ttft_ns": 150 * MS, "decode_ns": 300 * MS, "tokens_per_s": 100.0},
    ),
    "http-resend-count": (
        span({"gen_ai.operation.name": "chat", "http.request.resend_count": 2}),
        {"resend_count": 2},
    ),
    "fallback-link": (
        span({"gen_ai.operation.name": "chat"}, links=[b"\x09" * 8]),
        {"link_span_id": b"\x09" * 8},
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_family_mapping(case: str) -> None:
    s, expected = CASES[case]
    got = normalized(s)
    for key, value in expected.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value), key
        else:
            assert got[key] == value, (key, got["provenance"])


def test_provenance_names_each_source() -> None:
    got = normalized(CASES["openinference"][0])
    assert got["provenance"]["request_model"] == "llm.invocation_parameters.model"
    assert got["provenance"]["response_model"] == "llm.model_name"
    assert got["provenance"]["ttft"] == "event:First Token Stream Event"
    assert got["provenance"]["input_tokens"] == "llm.token_count.prompt"
    got = normalized(CASES["traceai-current"][0])
    assert "traceAI" in got["provenance"]["response_model"]


def test_seconds_and_milliseconds_are_not_confused() -> None:
    otel = normalized(span({"gen_ai.response.time_to_first_chunk": 0.42}))
    traceai = normalized(span({"gen_ai.span.kind": "LLM", "gen_ai.server.time_to_first_token": 420}))
    ms_attr = normalized(span({"time_to_first_token_ms": 420}))
    assert otel["ttft_ns"] == traceai["ttft_ns"] == ms_attr["ttft_ns"] == 420 * MS
    # Outside traceAI the same name is an OTel *metric* in seconds: never read it as a span attribute.
    assert (
        normalized(span({"gen_ai.operation.name": "chat", "gen_ai.server.time_to_first_token": 420}))["ttft_ns"] is None
    )


def test_first_chunk_event_with_dropped_events_is_flagged() -> None:
    got = normalized(span({"gen_ai.operation.name": "chat"}, events=[("gen_ai.content.completion.chunk", 90, {})],
                          dropped_events=12))  # fmt: skip
    assert got["ttft_ns"] == 90 * MS
    assert "dropped" in got["provenance"]["ttft"]


def test_non_streaming_call_gets_no_invented_split() -> None:
    got = normalized(span({"gen_ai.operation.name": "chat", "gen_ai.usage.output_tokens": 100}, duration_ms=2000))
    assert got["ttft_ns"] is None and got["decode_ns"] is None and got["tokens_per_s"] is None


@pytest.mark.parametrize(
    "attributes",
    [
        {"gen_ai.usage.input_tokens": "lots", "gen_ai.response.time_to_first_chunk": "soon"},
        {"gen_ai.usage.input_tokens": 2**63 - 1, "gen_ai.response.time_to_first_chunk": float("nan")},
        {"gen_ai.response.finish_reasons": "[not json", "llm.invocation_parameters": "{broken"},
        {"gen_ai.usage.input_token_details": "{'cache_read': __import__('os')}"},
        {"gen_ai.response.time_to_first_chunk": -1.0, "gen_ai.request.stream": "maybe"},
        {"gen_ai.response.time_to_first_chunk": 1e300, "gen_ai.request.model": "gpt-4o"},
        {"gen_ai.span.kind": "LLM", "gen_ai.server.time_to_first_token": 1e300, "gen_ai.request.model": "gpt-4o"},
    ],
)
def test_garbage_values_never_raise(attributes: dict) -> None:
    got = normalized(span({"gen_ai.operation.name": "chat", **attributes}))
    assert got["llm_kind"] == "llm"
    assert got["ttft_ns"] is None or got["ttft_ns"] >= 0
    if "gen_ai.request.model" in attributes:  # one absurd value costs that field only
        assert got["ttft_ns"] is None and "gpt-4o" in (got["request_model"], got["response_model"])


def test_provider_aliases() -> None:
    assert canonical_provider("az.ai.openai") == canonical_provider("Azure") == "azure.ai.openai"
    assert canonical_provider("xai") == canonical_provider("x_ai") == "x_ai"
    assert canonical_provider("MistralAI") == "mistral_ai"
    assert canonical_provider("vertexai") == "gcp.vertex_ai"
    assert canonical_provider("some-new-lab") == "some-new-lab"


def test_plain_spans_cost_nothing() -> None:
    assert set(normalize_span(span({"http.method": "GET"}))) == {None}


# --- families of issue 13 (each is also replayed from a real capture in llm/test_families.py) ---------


def test_the_same_server_ttft_attribute_is_read_in_its_family_unit() -> None:
    """traceAI: ms; OpenLIT: s; anyone else: unread. The value's size decides nothing."""
    for value in (0.15, 150.0):
        traceai = normalized(span({"gen_ai.span.kind": "LLM", "gen_ai.server.time_to_first_token": value}))
        openlit = normalized(span({"telemetry.sdk.name": "openlit", "gen_ai.operation.name": "chat",
                                   "gen_ai.request.stream": True,
                                   "gen_ai.server.time_to_first_token": value}))  # fmt: skip
        other = normalized(span({"gen_ai.operation.name": "chat", "gen_ai.server.time_to_first_token": value}))
        assert traceai["ttft_ns"] == round(value * MS)
        assert openlit["ttft_ns"] == round(value * 1000 * MS)
        assert other["ttft_ns"] is None
    # OpenLIT writes the whole duration there on a non-streamed call, and 0.0 when no chunk came
    not_streamed = {"telemetry.sdk.name": "openlit", "gen_ai.operation.name": "chat", "gen_ai.request.stream": False,
                    "gen_ai.server.time_to_first_token": 0.4}  # fmt: skip
    assert normalized(span(not_streamed))["ttft_ns"] is None
    assert normalized(span(not_streamed))["streaming"] == 0
    no_chunk = {**not_streamed, "gen_ai.request.stream": True, "gen_ai.server.time_to_first_token": 0.0}
    assert normalized(span(no_chunk))["ttft_ns"] is None


def test_openlit_zero_cost_is_no_price_but_other_zeros_are_reported() -> None:
    base = {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 10, "gen_ai.usage.cost": 0.0}
    assert normalized(span({**base, "telemetry.sdk.name": "openlit"}))["cost_source"] is None
    assert normalized(span(base))["cost_source"] == "reported"
    assert normalized(span({**base, "telemetry.sdk.name": "openlit", "gen_ai.usage.cost": 0.002}))["cost_usd"] == 0.002


@pytest.mark.parametrize(
    ("operation", "kind", "streaming"),
    [
        ("ai.generateText", "chain", None),
        ("ai.streamText", "chain", None),
        ("ai.generateText.doGenerate", "llm", 0),
        ("ai.streamText.doStream", "llm", 1),
        ("ai.streamObject.doStream", "llm", 1),
        ("ai.embedMany.doEmbed", "embedding", None),
        ("ai.toolCall", "tool", None),
    ],
)
def test_vercel_ai_operations(operation: str, kind: str, streaming: int | None) -> None:
    usage = {"ai.usage.promptTokens": 12, "ai.usage.completionTokens": 34}
    by_id = normalized(span({"ai.operationId": operation, "operation.name": f"{operation} myFunction", **usage}))
    # ai@3 before ai.operationId: operation.name alone, its functionId after a space
    by_name = normalized(span({"operation.name": f"{operation} myFunction", **usage}))
    for got in (by_id, by_name):
        assert (got["llm_kind"], got["streaming"]) == (kind, streaming)
        assert (got["input_tokens"], got["output_tokens"]) == (12, 34)


def test_vercel_ai_5_names_and_milliseconds() -> None:
    got = normalized(span({
        "ai.operationId": "ai.streamText.doStream", "ai.model.provider": "anthropic.messages",
        "ai.model.id": "claude-sonnet-4", "ai.response.model": "claude-sonnet-4-20250514",
        "ai.usage.inputTokens": 100, "ai.usage.outputTokens": 40, "ai.usage.reasoningTokens": 7,
        "ai.usage.cachedInputTokens": 60, "ai.response.msToFirstChunk": 412.5, "ai.response.finishReason": "stop",
    }, duration_ms=1000))  # fmt: skip
    assert got["provider"] == "anthropic"
    assert (got["request_model"], got["response_model"]) == ("claude-sonnet-4", "claude-sonnet-4-20250514")
    assert (got["reasoning_tokens"], got["cache_read_tokens"]) == (7, 60)
    assert got["ttft_ns"] == int(412.5 * MS) and got["decode_ns"] == 1000 * MS - int(412.5 * MS)
    assert got["finish_reason"] == "stop"
    assert canonical_provider("openai.responses") == "openai"
    assert canonical_provider("azure.ai.openai") == "azure.ai.openai"


LITELLM_CALL = {
    "litellm.call_id": "c-1", "gen_ai.operation.name": "chat", "llm.request.type": "completion",
    "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.usage.input_tokens": 49, "gen_ai.usage.output_tokens": 42, "gen_ai.response.finish_reasons": '["stop"]',
    "llm.is_streaming": "False", "gen_ai.cost.total_cost": 3.2e-05,
}  # fmt: skip


def test_one_litellm_call_on_the_app_span_is_a_call_not_a_merge() -> None:
    got = normalized(span({**LITELLM_CALL, "gen_ai.agent.name": "support"}, name="invoke_agent support"))
    assert got["llm_kind"] == "llm" and got["streaming"] == 0
    assert got["cost_usd"] == 3.2e-05 and got["cost_source"] == "reported"
    assert got["provenance"]["kind"].startswith("LiteLLM wrote a call's attributes onto the app's span")
    assert "merged" not in got["provenance"]
    # an Azure deployment name is no other model
    azure = {**LITELLM_CALL, "gen_ai.request.model": "azure/support-prod"}
    assert "merged" not in normalized(span(azure, name="invoke_agent support"))["provenance"]
    own = normalized(span(LITELLM_CALL, name="litellm_request"))
    assert own["provenance"]["kind"] == "gen_ai.operation.name"


def test_litellm_calls_merged_onto_one_span_are_said_to_be() -> None:
    # a later failed call overwrote the model and added its error; the first call's answer stays
    merged = {**LITELLM_CALL, "gen_ai.request.model": "gpt-4.1-nano", "error.type": "InternalServerError"}
    got = normalized(span(merged, name="invoke_agent support",
                          events=[("exception", 900, {"exception.type": "litellm.InternalServerError"})]))  # fmt: skip
    assert "attributes of several LiteLLM calls merged" in got["provenance"]["kind"]
    assert "gpt-4.1-nano" in got["provenance"]["merged"] and "error" in got["provenance"]["merged"]
    assert got["attempt_offset_ns"] is None  # the other call's exception is no earlier attempt of this one


def test_litellm_marks_only_its_own_estimates() -> None:
    streamed = {**LITELLM_CALL, "llm.is_streaming": "True"}
    estimated = "{'completion_tokens': 24, 'prompt_tokens': 201, 'prompt_tokens_details': None}"
    reported = "{'completion_tokens': 28, 'prompt_tokens': 137, 'prompt_tokens_details': {'cached_tokens': 0}}"
    got = normalized(span({**streamed, "metadata.usage_object": estimated}, name="litellm_request"))
    assert "estimated" in got["provenance"]["input_tokens"] and "estimated" in got["provenance"]["output_tokens"]
    got = normalized(span({**streamed, "metadata.usage_object": reported}, name="litellm_request"))
    assert "estimated" not in got["provenance"]["input_tokens"]

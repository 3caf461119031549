"""tracetui.llm.chat: span attributes (+ log records) -> a readable conversation.

Hand-built cases, one per recorded shape, are table-driven; the real fixtures are read with
the opentelemetry.proto types and every expected text is taken from the raw attributes
with plain dict/JSON lookups, never from the code under test.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tracetui.llm.chat import MAX_CONTENT_CHARS, ChatMessage, ToolCall, extract_messages, reassemble
from tracetui.model.anyvalue import any_value_to_python, attributes_to_dict
from tracetui.otlp.files import read_length_delimited

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
J = json.dumps


def summary(msgs: list[ChatMessage]) -> list[tuple]:
    """(direction, role, content, source) per message: what most cases compare."""
    return [(m.direction, m.role, m.content, m.source) for m in msgs]


def log(name: str | None, attributes: dict | None = None, body: object = None, *, old_style: bool = False) -> dict:
    """A log record as the API takes it; ``old_style`` puts the name in ``event.name``."""
    attrs = dict(attributes or {})
    if old_style:
        attrs["event.name"] = name
        name = None
    return {"event_name": name, "attributes": attrs, "body": body}


# --- reassemble -----------------------------------------------------------------------

REASSEMBLE_CASES = [
    pytest.param(
        {"p.0.role": "user", "p.0.content": "hi", "p.1.role": "assistant"},
        "p",
        [{"role": "user", "content": "hi"}, {"role": "assistant"}],
        id="flat",
    ),
    pytest.param(
        {"p.10.a": 10, "p.2.a": 2, "p.0.a": 0},
        "p",
        [{"a": 0}, {"a": 2}, {"a": 10}],
        id="sorted-numerically-not-lexically",
    ),
    pytest.param(
        {"p.0.a": "x", "p.2.a": "z"},
        "p",
        [{"a": "x"}, {"a": "z"}],
        id="gap-in-indexes-closes-up",
    ),
    pytest.param(
        {
            "m.0.message.tool_calls.1.tool_call.function.name": "b",
            "m.0.message.tool_calls.0.tool_call.function.name": "a",
            "m.0.message.tool_calls.0.tool_call.id": "c0",
        },
        "m",
        [
            {
                "message": {
                    "tool_calls": [
                        {"tool_call": {"function": {"name": "a"}, "id": "c0"}},
                        {"tool_call": {"function": {"name": "b"}}},
                    ]
                }
            }
        ],
        id="nested-index-levels-become-lists",
    ),
    pytest.param(
        {"p.x.role": "user", "p.0x.role": "user", "p.-1.role": "user", "p.1.role": "ok", "p.²": "sup"},
        "p",
        [{"role": "ok"}],
        id="non-numeric-index-skipped",
    ),
    pytest.param(
        {"p.0": "leaf at index", "p.0.role": "user", "p": "the prefix itself", "px.0.a": 1, "q.0.a": 1},
        "p",
        [{"role": "user"}],
        id="only-prefix-dot-index-dot-rest",
    ),
    pytest.param(
        {"p.0.a": "leaf", "p.0.a.b": "under a leaf"},
        "p",
        [{"a": "leaf"}],
        id="leaf-branch-conflict-first-wins",
    ),
    pytest.param(
        {"p.0.a.b": "branch", "p.0.a": "leaf later"},
        "p",
        [{"a": {"b": "branch"}}],
        id="branch-leaf-conflict-first-wins",
    ),
    pytest.param(
        {"p.0.v": {"0": "x"}, "p.0.w": [1, 2]},
        "p",
        [{"v": {"0": "x"}, "w": [1, 2]}],
        id="structured-leaf-values-untouched",
    ),
    pytest.param(
        {"p.0.a.0": "x", "p.0.a.k": "y"},
        "p",
        [{"a": {"0": "x", "k": "y"}}],
        id="mixed-keys-stay-a-dict",
    ),
    pytest.param({}, "p", [], id="empty"),
    pytest.param({"p.0.a": 1}, "", [], id="empty-prefix-matches-nothing-here"),
]


@pytest.mark.parametrize("attrs, prefix, expected", REASSEMBLE_CASES)
def test_reassemble(attrs, prefix, expected):
    assert reassemble(attrs, prefix) == expected


def test_reassemble_deep_dotted_key_is_bounded():
    key = "p.0." + ".".join(f"k{i}" for i in range(10_000))
    out = reassemble({key: "deep"}, "p")
    assert len(out) == 1
    depth, node = 0, out[0]
    while isinstance(node, dict):
        (node,) = node.values()
        depth += 1
    assert node == "deep" and depth <= 16


@pytest.mark.parametrize("bad", [None, "str", 42, ["p.0.a"]])
def test_reassemble_tolerates_non_dict_attributes(bad):
    assert reassemble(bad, "p") == []  # type: ignore[arg-type]


# --- one case per shape -----------------------------------------------------------------

SYS = "You are terse."
USER = "What is 2+2?"
ANSWER = "4."

OPENAI_REQUEST = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": SYS},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": USER},
                {"type": "image_url", "image_url": {"url": "https://x/cat.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "calc", "arguments": '{"e":"2+2"}'}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "4"},
    ],
}
OPENAI_RESPONSE = {
    "id": "chatcmpl-1",
    "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": ANSWER, "refusal": None}}
    ],
}

# (attributes, logs, expected summary)
SHAPE_CASES = [
    # 1. OTel parts schema
    pytest.param(
        {
            "gen_ai.input.messages": J(
                [
                    {"role": "system", "parts": [{"type": "text", "content": SYS}]},
                    {"role": "user", "parts": [{"type": "text", "content": USER}]},
                ]
            ),
            "gen_ai.output.messages": J(
                [{"role": "assistant", "parts": [{"type": "text", "content": ANSWER}], "finish_reason": "stop"}]
            ),
        },
        None,
        [
            ("input", "system", SYS, "gen_ai.input.messages"),
            ("input", "user", USER, "gen_ai.input.messages"),
            ("output", "assistant", ANSWER, "gen_ai.output.messages"),
        ],
        id="otel-parts-json-string",
    ),
    pytest.param(
        {
            "gen_ai.input.messages": [
                {"role": "user", "parts": [{"type": "text", "content": "a"}, {"type": "text", "content": "b"}]}
            ],
            "gen_ai.output.messages": [{"role": "assistant", "parts": [{"type": "text", "content": ANSWER}]}],
        },
        None,
        [("input", "user", "a\nb", "gen_ai.input.messages"), ("output", "assistant", ANSWER, "gen_ai.output.messages")],
        id="otel-parts-structured-list-parts-joined",
    ),
    pytest.param(
        {
            "gen_ai.system_instructions": J([{"type": "text", "content": SYS}]),
            "gen_ai.input.messages": J([{"role": "user", "parts": [{"type": "text", "content": USER}]}]),
        },
        None,
        [("input", "system", SYS, "gen_ai.system_instructions"), ("input", "user", USER, "gen_ai.input.messages")],
        id="otel-system-instructions-json-first",
    ),
    pytest.param(
        {
            "gen_ai.system_instructions": SYS,
            "gen_ai.input.messages": J([{"role": "user", "parts": [{"type": "text", "content": USER}]}]),
        },
        None,
        [("input", "system", SYS, "gen_ai.system_instructions"), ("input", "user", USER, "gen_ai.input.messages")],
        id="otel-system-instructions-plain-string",
    ),
    pytest.param(
        {"gen_ai.system_instructions": [{"type": "text", "content": "one"}, {"type": "text", "content": "two"}]},
        None,
        [("input", "system", "one\ntwo", "gen_ai.system_instructions")],
        id="otel-system-instructions-structured-alone",
    ),
    pytest.param(
        {
            "gen_ai.system_instructions": J([{"type": "text", "content": SYS}]),
            "gen_ai.input.messages": J(
                [
                    {"role": "system", "parts": [{"type": "text", "content": SYS}]},
                    {"role": "user", "parts": [{"type": "text", "content": USER}]},
                ]
            ),
        },
        None,
        [("input", "system", SYS, "gen_ai.input.messages"), ("input", "user", USER, "gen_ai.input.messages")],
        id="otel-system-instructions-not-duplicated",
    ),
    pytest.param(
        {
            "gen_ai.input.messages": J(
                [
                    {
                        "role": "user",
                        "parts": [
                            {
                                "type": "blob",
                                "mime_type": "image/png",
                                "modality": "image",
                                "content": "iVBORw0KGgo" * 1000,
                            },
                            {"type": "uri", "modality": "image", "uri": "https://x/a.png"},
                            {"type": "file", "mime_type": "application/pdf", "file_id": "file-9"},
                            {"type": "text", "content": "describe"},
                        ],
                    },
                    {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": {"temp": 20}}]},
                    {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c2", "result": "sunny"}]},
                ]
            ),
            "gen_ai.output.messages": J(
                [
                    {
                        "role": "assistant",
                        "parts": [
                            {"type": "reasoning", "content": "think"},
                            {"type": "text", "content": ANSWER},
                            {"type": "mystery"},
                        ],
                    }
                ]
            ),
        },
        None,
        [
            (
                "input",
                "user",
                "[image/png blob]\n[image: https://x/a.png]\n[application/pdf file file-9]\ndescribe",
                "gen_ai.input.messages",
            ),
            ("input", "tool", '{"temp": 20}', "gen_ai.input.messages"),
            ("input", "tool", "sunny", "gen_ai.input.messages"),
            ("output", "assistant", f"[reasoning] think\n{ANSWER}\n[mystery part]", "gen_ai.output.messages"),
        ],
        id="otel-parts-blob-uri-file-tool-response-reasoning",
    ),
    # 2. traceAI: flattened under the OTel key, + input.value/output.value to be ignored
    pytest.param(
        {
            "input.value": SYS,
            "input.mime_type": "application/json",
            "output.value": "Function: calc({})",
            "gen_ai.input.messages.0.message.role": "system",
            "gen_ai.input.messages.0.message.content": SYS,
            "gen_ai.input.messages.1.message.role": "user",
            "gen_ai.input.messages.1.message.contents.0.message_content.type": "text",
            "gen_ai.input.messages.1.message.contents.0.message_content.text": USER,
            "gen_ai.input.messages.1.message.contents.1.message_content.type": "image",
            "gen_ai.input.messages.1.message.contents.1.message_content.image.image.url": "https://x/cat.png",
            "gen_ai.output.messages.0.message.role": "assistant",
            "gen_ai.output.messages.0.message.tool_calls.0.tool_call.id": "c1",
            "gen_ai.output.messages.0.message.tool_calls.0.tool_call.function.name": "calc",
            "gen_ai.output.messages.0.message.tool_calls.0.tool_call.function.arguments": "{}",
            "gen_ai.span.kind": "LLM",
        },
        None,
        [
            ("input", "system", SYS, "gen_ai.input.messages.*"),
            ("input", "user", f"{USER}\n[image: https://x/cat.png]", "gen_ai.input.messages.*"),
            ("output", "assistant", "", "gen_ai.output.messages.*"),
        ],
        id="traceai-flattened-wins-over-input-value",
    ),
    pytest.param(
        {
            "input.value": SYS,
            "output.value": ANSWER,
            "gen_ai.input.messages.0.message.role": "user",
            "gen_ai.input.messages.0.message.content": USER,
            "gen_ai.span.kind": "LLM",
        },
        None,
        [("input", "user", USER, "gen_ai.input.messages.*"), ("output", "assistant", ANSWER, "output.value")],
        id="traceai-streaming-output-only-in-output-value",
    ),
    # 3. OpenInference flattened (+ input.value JSON to be ignored) and legacy completions
    pytest.param(
        {
            "openinference.span.kind": "LLM",
            "input.value": J(OPENAI_REQUEST),
            "input.mime_type": "application/json",
            "output.value": J(OPENAI_RESPONSE),
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.content": USER,
            "llm.input_messages.1.message.role": "tool",
            "llm.input_messages.1.message.tool_call_id": "c1",
            "llm.input_messages.1.message.name": "calc",
            "llm.input_messages.1.message.content": "4",
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.content": ANSWER,
            "llm.finish_reason": "stop",
        },
        None,
        [
            ("input", "user", USER, "llm.input_messages.*"),
            ("input", "tool", "4", "llm.input_messages.*"),
            ("output", "assistant", ANSWER, "llm.output_messages.*"),
        ],
        id="openinference-flattened-wins-over-input-value",
    ),
    pytest.param(
        {
            "openinference.span.kind": "LLM",
            "llm.prompts.0.prompt.text": "Once upon",
            "llm.choices.0.completion.text": " a time",
        },
        None,
        [("input", "user", "Once upon", "llm.prompts.*"), ("output", "assistant", " a time", "llm.choices.*")],
        id="openinference-legacy-completions",
    ),
    pytest.param(
        {"llm.prompts": ["p1", "p2"]},
        None,
        [("input", "user", "p1", "llm.prompts"), ("input", "user", "p2", "llm.prompts")],
        id="openinference-prompts-string-list",
    ),
    # 4. old OpenLLMetry flattened
    pytest.param(
        {
            "gen_ai.prompt.0.role": "system",
            "gen_ai.prompt.0.content": SYS,
            "gen_ai.prompt.1.role": "user",
            "gen_ai.prompt.1.content": J(
                [
                    {"type": "text", "text": USER},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 5000}},
                ]
            ),
            "gen_ai.prompt.2.role": "tool",
            "gen_ai.prompt.2.tool_call_id": "c1",
            "gen_ai.prompt.2.content": "4",
            "gen_ai.prompt.name": "not-a-message (OTel prompt template name)",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": ANSWER,
            "gen_ai.completion.0.finish_reason": "stop",
        },
        None,
        [
            ("input", "system", SYS, "gen_ai.prompt.*"),
            ("input", "user", f"{USER}\n[image: data:image/png;base64]", "gen_ai.prompt.*"),
            ("input", "tool", "4", "gen_ai.prompt.*"),
            ("output", "assistant", ANSWER, "gen_ai.completion.*"),
        ],
        id="openllmetry-old-flattened",
    ),
    # 5. log records
    pytest.param(
        {"gen_ai.operation.name": "chat"},
        [
            log(
                "gen_ai.client.inference.operation.details",
                {
                    "gen_ai.system_instructions": [{"type": "text", "content": SYS}],
                    "gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": USER}]}],
                    "gen_ai.output.messages": [
                        {"role": "assistant", "parts": [{"type": "text", "content": ANSWER}], "finish_reason": "stop"}
                    ],
                },
            )
        ],
        [
            ("input", "system", SYS, "log:gen_ai.client.inference.operation.details"),
            ("input", "user", USER, "log:gen_ai.client.inference.operation.details"),
            ("output", "assistant", ANSWER, "log:gen_ai.client.inference.operation.details"),
        ],
        id="log-operation-details-attributes",
    ),
    pytest.param(
        {},
        [
            log(
                "gen_ai.client.inference.operation.details",
                {},
                {
                    "gen_ai.input.messages": J([{"role": "user", "parts": [{"type": "text", "content": USER}]}]),
                    "gen_ai.output.messages": [{"role": "assistant", "parts": [{"type": "text", "content": ANSWER}]}],
                },
                old_style=True,
            )
        ],
        [
            ("input", "user", USER, "log:gen_ai.client.inference.operation.details"),
            ("output", "assistant", ANSWER, "log:gen_ai.client.inference.operation.details"),
        ],
        id="log-operation-details-body-old-event-name",
    ),
    pytest.param(
        {},
        [
            log("gen_ai.system.message", {"gen_ai.system": "openai"}, {"content": SYS}),
            log("gen_ai.user.message", {}, {"content": USER}),
            log(
                "gen_ai.assistant.message",
                {},
                {
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "calc", "arguments": '{"e":"2+2"}'}}
                    ]
                },
            ),
            log("gen_ai.tool.message", {}, {"content": "4", "id": "c1"}, old_style=True),
            log("gen_ai.choice", {}, {"index": 1, "finish_reason": "length", "message": {"content": "second"}}),
            log(
                "gen_ai.choice",
                {},
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": ANSWER}},
            ),
            log("gen_ai.evaluation.result", {"gen_ai.evaluation.name": "relevance"}),
        ],
        [
            ("input", "system", SYS, "log:gen_ai.system.message"),
            ("input", "user", USER, "log:gen_ai.user.message"),
            ("input", "assistant", "", "log:gen_ai.assistant.message"),
            ("input", "tool", "4", "log:gen_ai.tool.message"),
            ("output", "assistant", ANSWER, "log:gen_ai.choice"),
            ("output", "assistant", "second", "log:gen_ai.choice"),
        ],
        id="log-deprecated-per-message-events",
    ),
    # 6. opaque blobs
    pytest.param(
        {
            "input.value": J(OPENAI_REQUEST),
            "input.mime_type": "application/json",
            "output.value": J(OPENAI_RESPONSE),
            "output.mime_type": "application/json",
        },
        None,
        [
            ("input", "system", SYS, "input.value"),
            ("input", "user", f"{USER}\n[image: https://x/cat.png]", "input.value"),
            ("input", "assistant", "", "input.value"),
            ("input", "tool", "4", "input.value"),
            ("output", "assistant", ANSWER, "output.value"),
        ],
        id="input-value-openai-request-and-response",
    ),
    pytest.param(
        {"input.value": "plain question", "output.value": "plain answer", "input.mime_type": "text/plain"},
        None,
        [("input", "user", "plain question", "input.value"), ("output", "assistant", "plain answer", "output.value")],
        id="input-value-plain-text",
    ),
    pytest.param(
        {"input.value": '{"query": "x"}', "input.mime_type": "application/json", "output.value": '"quoted"'},
        None,
        [("input", "user", '{"query": "x"}', "input.value"), ("output", "assistant", "quoted", "output.value")],
        id="input-value-json-but-not-chat",
    ),
    pytest.param(
        {"input.value": "{not json", "input.mime_type": "application/json"},
        None,
        [("input", "user", "{not json", "input.value")],
        id="input-value-mime-json-but-garbage",
    ),
    pytest.param(
        {
            "traceloop.span.kind": "task",
            "traceloop.entity.input": J({"args": [], "kwargs": {"messages": [{"role": "user", "content": USER}]}}),
            "traceloop.entity.output": J("done"),
        },
        None,
        [("input", "user", USER, "traceloop.entity.input"), ("output", "assistant", "done", "traceloop.entity.output")],
        id="traceloop-entity-input-output",
    ),
    pytest.param(
        {
            "langsmith.span.kind": "llm",
            "gen_ai.prompt": J(
                {
                    "messages": [
                        [
                            {
                                "lc": 1,
                                "type": "constructor",
                                "id": ["langchain", "schema", "messages", "SystemMessage"],
                                "kwargs": {"content": SYS, "type": "system"},
                            },
                            {
                                "lc": 1,
                                "type": "constructor",
                                "id": ["langchain", "schema", "messages", "HumanMessage"],
                                "kwargs": {"content": USER},
                            },
                        ]
                    ]
                }
            ),
            "gen_ai.completion": J(
                {
                    "generations": [
                        [
                            {
                                "text": ANSWER,
                                "generation_info": {"finish_reason": "stop"},
                                "message": {
                                    "lc": 1,
                                    "id": ["langchain", "schema", "messages", "AIMessage"],
                                    "kwargs": {
                                        "content": ANSWER,
                                        "tool_calls": [{"name": "calc", "args": {"e": "2+2"}, "id": "c1"}],
                                    },
                                },
                            }
                        ]
                    ]
                }
            ),
        },
        None,
        [
            ("input", "system", SYS, "gen_ai.prompt"),
            ("input", "user", USER, "gen_ai.prompt"),
            ("output", "assistant", ANSWER, "gen_ai.completion"),
        ],
        id="langsmith-prompt-completion-langchain-serialized",
    ),
    pytest.param(
        {
            "gen_ai.prompt": J({"messages": [{"role": "user", "content": USER}]}),
            "gen_ai.completion": J({"choices": [{"message": {"role": "assistant", "content": ANSWER}}]}),
        },
        None,
        [("input", "user", USER, "gen_ai.prompt"), ("output", "assistant", ANSWER, "gen_ai.completion")],
        id="langsmith-prompt-completion-openai-shaped",
    ),
    pytest.param(
        {
            "request_data": J({"model": "gpt-4o", "messages": [{"role": "user", "content": USER}]}),
            "response_data": J({"message": {"role": "assistant", "content": ANSWER}, "usage": {}}),
        },
        None,
        [("input", "user", USER, "request_data"), ("output", "assistant", ANSWER, "response_data")],
        id="logfire-request-response-data",
    ),
    pytest.param(
        {
            "request_data": {"messages": [{"role": "user", "content": USER}]},
            "response_data": {"combined_chunk_content": ANSWER, "chunk_count": 3},
        },
        None,
        [("input", "user", USER, "request_data"), ("output", "assistant", ANSWER, "response_data")],
        id="logfire-structured-streamed",
    ),
    pytest.param(
        {
            "output.value": J(
                {
                    "output": [
                        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": ANSWER}]},
                        {"type": "function_call", "call_id": "c1", "name": "calc", "arguments": "{}"},
                    ]
                }
            )
        },
        None,
        [("output", "assistant", ANSWER, "output.value")],
        id="responses-api-output-joined",
    ),
    # tool execution spans
    pytest.param(
        {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "calc",
            "gen_ai.tool.call.id": "c1",
            "gen_ai.tool.call.arguments": '{"e": "2+2"}',
            "gen_ai.tool.call.result": {"value": 4},
        },
        None,
        [
            ("input", "tool-call", '{"e": "2+2"}', "gen_ai.tool.call.*"),
            ("output", "tool-result", '{"value": 4}', "gen_ai.tool.call.*"),
        ],
        id="tool-execution-arguments-result",
    ),
    pytest.param(
        {"openinference.span.kind": "TOOL", "tool.name": "calc", "input.value": '{"e": "2+2"}', "output.value": "4"},
        None,
        [],
        id="openinference-tool-span-is-not-a-conversation",
    ),
    pytest.param(
        {
            "openinference.span.kind": "EMBEDDING",
            "input.value": J({"input": "text"}),
            "output.value": J({"data": [{"embedding": [0.1] * 10}]}),
        },
        None,
        [],
        id="embedding-span-blobs-ignored",
    ),
    pytest.param(
        {"traceloop.span.kind": "tool", "traceloop.entity.input": J({"args": [1]}), "traceloop.entity.output": "2"},
        None,
        [],
        id="traceloop-tool-span-ignored",
    ),
    # priorities across sources
    pytest.param(
        {
            "gen_ai.input.messages": J([{"role": "user", "parts": [{"type": "text", "content": USER}]}]),
            "gen_ai.output.messages": J([{"role": "assistant", "parts": [{"type": "text", "content": ANSWER}]}]),
        },
        [
            log(
                "gen_ai.client.inference.operation.details",
                {
                    "gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": USER}]}],
                    "gen_ai.output.messages": [{"role": "assistant", "parts": [{"type": "text", "content": ANSWER}]}],
                },
            ),
            log("gen_ai.user.message", {}, {"content": USER}),
        ],
        [("input", "user", USER, "gen_ai.input.messages"), ("output", "assistant", ANSWER, "gen_ai.output.messages")],
        id="span-and-log-not-duplicated",
    ),
    pytest.param(
        {"gen_ai.input.messages": J([{"role": "user", "parts": [{"type": "text", "content": USER}]}])},
        [
            log(
                "gen_ai.client.inference.operation.details",
                {"gen_ai.output.messages": [{"role": "assistant", "parts": [{"type": "text", "content": ANSWER}]}]},
            )
        ],
        [
            ("input", "user", USER, "gen_ai.input.messages"),
            ("output", "assistant", ANSWER, "log:gen_ai.client.inference.operation.details"),
        ],
        id="direction-by-direction-choice",
    ),
    pytest.param(
        {"gen_ai.input.messages": "[]", "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": USER},
        None,
        [("input", "user", USER, "gen_ai.prompt.*")],
        id="empty-structured-source-falls-through",
    ),
    pytest.param(
        {"gen_ai.system_instructions": SYS},
        [
            log(
                "gen_ai.client.inference.operation.details",
                {
                    "gen_ai.system_instructions": SYS,
                    "gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": USER}]}],
                },
            )
        ],
        [
            ("input", "system", SYS, "log:gen_ai.client.inference.operation.details"),
            ("input", "user", USER, "log:gen_ai.client.inference.operation.details"),
        ],
        id="system-instructions-on-span-and-log-once",
    ),
    pytest.param(
        {
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.content": USER,
            "llm.input_messages.0.message.contents.0.message_content.type": "text",
            "llm.input_messages.0.message.contents.0.message_content.text": USER,
        },
        None,
        [("input", "user", USER, "llm.input_messages.*")],
        id="content-and-contents-same-text-once",
    ),
    pytest.param({}, None, [], id="no-content"),
    pytest.param(
        {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 3}, [], [], id="no-content-empty-logs"
    ),
]


@pytest.mark.parametrize("attrs, logs, expected", SHAPE_CASES)
def test_shapes(attrs, logs, expected):
    msgs = extract_messages(attrs, logs)
    assert summary(msgs) == expected
    for m in msgs:
        assert isinstance(m, ChatMessage)
        assert all(isinstance(tc, ToolCall) for tc in m.tool_calls)


# --- details that the summary does not show ------------------------------------------


@dataclass
class Detail:
    """Pick one message (by position) and compare some of its fields."""

    index: int
    tool_calls: list[tuple] | None = None  # (id, name, arguments)
    tool_call_id: str | None = None
    name: str | None = None
    finish_reason: str | None = None


DETAIL_CASES = [
    pytest.param(
        {
            "gen_ai.output.messages": J(
                [
                    {
                        "role": "assistant",
                        "parts": [{"type": "tool_call", "id": "c1", "name": "calc", "arguments": {"e": "2+2"}}],
                        "finish_reason": "tool_call",
                    }
                ]
            )
        },
        None,
        Detail(0, tool_calls=[("c1", "calc", '{"e": "2+2"}')], finish_reason="tool_call"),
        id="otel-tool-call-object-arguments-become-json-text",
    ),
    pytest.param(
        {
            "gen_ai.output.messages": J(
                [
                    {
                        "role": "assistant",
                        "parts": [{"type": "tool_call", "id": "c1", "name": "calc", "arguments": '{"e":  "2+2"}'}],
                    }
                ]
            )
        },
        None,
        Detail(0, tool_calls=[("c1", "calc", '{"e":  "2+2"}')]),
        id="otel-tool-call-string-arguments-kept-as-is",
    ),
    pytest.param(
        {
            "gen_ai.input.messages": J(
                [
                    {
                        "role": "tool",
                        "parts": [{"type": "tool_call_response", "id": "c9", "response": "ok"}],
                        "name": "calc",
                    }
                ]
            )
        },
        None,
        Detail(0, tool_call_id="c9", name="calc"),
        id="otel-tool-call-response-id",
    ),
    pytest.param(
        {
            "gen_ai.output.messages.0.message.role": "assistant",
            "gen_ai.output.messages.0.message.tool_calls.0.tool_call.id": "c1",
            "gen_ai.output.messages.0.message.tool_calls.0.tool_call.function.name": "calc",
            "gen_ai.output.messages.0.message.tool_calls.0.tool_call.function.arguments": '{"e": "2+2"}',
            "gen_ai.output.messages.0.message.tool_calls.2.tool_call.function.name": "second",
        },
        None,
        Detail(0, tool_calls=[("c1", "calc", '{"e": "2+2"}'), (None, "second", None)]),
        id="traceai-tool-calls-with-gap",
    ),
    pytest.param(
        {
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.tool_calls.0.tool_call.id": "c1",
            "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "calc",
            "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": "{}",
            "llm.finish_reason": "tool_calls",
        },
        None,
        Detail(0, tool_calls=[("c1", "calc", "{}")], finish_reason="tool_calls"),
        id="openinference-tool-call-and-span-finish-reason",
    ),
    pytest.param(
        {
            "llm.input_messages.0.message.role": "tool",
            "llm.input_messages.0.message.tool_call_id": "c1",
            "llm.input_messages.0.message.name": "calc",
            "llm.input_messages.0.message.content": "4",
        },
        None,
        Detail(0, tool_call_id="c1", name="calc"),
        id="openinference-tool-result",
    ),
    pytest.param(
        {
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.finish_reason": "tool_calls",
            "gen_ai.completion.0.tool_calls.0.id": "c1",
            "gen_ai.completion.0.tool_calls.0.name": "calc",
            "gen_ai.completion.0.tool_calls.0.arguments": '{"e": "2+2"}',
        },
        None,
        Detail(0, tool_calls=[("c1", "calc", '{"e": "2+2"}')], finish_reason="tool_calls"),
        id="openllmetry-completion-tool-calls",
    ),
    pytest.param(
        {"gen_ai.prompt.0.role": "tool", "gen_ai.prompt.0.tool_call_id": "c1", "gen_ai.prompt.0.content": "4"},
        None,
        Detail(0, tool_call_id="c1"),
        id="openllmetry-prompt-tool-call-id",
    ),
    pytest.param(
        {},
        [
            log(
                "gen_ai.assistant.message",
                {},
                {"tool_calls": [{"id": "c1", "type": "function", "function": {"name": "calc", "arguments": "{}"}}]},
            )
        ],
        Detail(0, tool_calls=[("c1", "calc", "{}")]),
        id="log-assistant-message-tool-calls",
    ),
    pytest.param(
        {},
        [log("gen_ai.tool.message", {}, {"content": "4", "id": "c1"})],
        Detail(0, tool_call_id="c1"),
        id="log-tool-message-id",
    ),
    pytest.param(
        {},
        [
            log(
                "gen_ai.choice",
                {},
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "tool_calls": [
                            {"id": "c1", "type": "function", "function": {"name": "calc", "arguments": "{}"}}
                        ]
                    },
                },
            )
        ],
        Detail(0, tool_calls=[("c1", "calc", "{}")], finish_reason="tool_calls"),
        id="log-choice-tool-calls",
    ),
    pytest.param(
        {
            "output.value": J(
                {
                    "choices": [
                        {
                            "finish_reason": "tool_calls",
                            "message": {
                                "role": "assistant",
                                "content": None,
                                "tool_calls": [
                                    {
                                        "id": "c1",
                                        "function": {"arguments": '{"e": 1}', "name": "calc"},
                                        "type": "function",
                                    }
                                ],
                            },
                        }
                    ]
                }
            )
        },
        None,
        Detail(0, tool_calls=[("c1", "calc", '{"e": 1}')], finish_reason="tool_calls"),
        id="output-value-openai-tool-call",
    ),
    pytest.param(
        {"input.value": J(OPENAI_REQUEST)},
        None,
        Detail(3, tool_call_id="c1"),
        id="input-value-tool-result",
    ),
    pytest.param(
        {
            "gen_ai.completion": J(
                {
                    "generations": [
                        [
                            {
                                "message": {
                                    "lc": 1,
                                    "id": ["langchain", "schema", "messages", "AIMessage"],
                                    "kwargs": {
                                        "content": "",
                                        "tool_calls": [{"name": "calc", "args": {"e": 1}, "id": "c1"}],
                                    },
                                }
                            }
                        ]
                    ]
                }
            )
        },
        None,
        Detail(0, tool_calls=[("c1", "calc", '{"e": 1}')]),
        id="langchain-tool-call-args",
    ),
    pytest.param(
        {
            "output.value": J(
                {
                    "output": [
                        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "x"}]},
                        {"type": "function_call", "call_id": "c1", "name": "calc", "arguments": "{}"},
                    ]
                }
            )
        },
        None,
        Detail(0, tool_calls=[("c1", "calc", "{}")]),
        id="responses-api-function-call",
    ),
    pytest.param(
        {
            "gen_ai.output.messages": J([{"role": "assistant", "parts": []}, {"role": "assistant", "parts": []}]),
            "gen_ai.response.finish_reasons": ["stop", "length"],
        },
        None,
        Detail(1, finish_reason="length"),
        id="finish-reasons-filled-by-position",
    ),
    pytest.param(
        {"gen_ai.completion.0.content": "x", "gen_ai.response.finish_reasons": '["stop"]'},
        None,
        Detail(0, finish_reason="stop"),
        id="finish-reasons-json-string-vllm-style",
    ),
    pytest.param(
        {"gen_ai.tool.name": "calc", "gen_ai.tool.call.id": "c1", "gen_ai.tool.call.result": "4"},
        None,
        Detail(0, tool_call_id="c1", name="calc"),
        id="tool-execution-result-only",
    ),
]


@pytest.mark.parametrize("attrs, logs, detail", DETAIL_CASES)
def test_details(attrs, logs, detail: Detail):
    msgs = extract_messages(attrs, logs)
    msg = msgs[detail.index]
    if detail.tool_calls is not None:
        assert [(tc.id, tc.name, tc.arguments) for tc in msg.tool_calls] == detail.tool_calls
    if detail.tool_call_id is not None:
        assert msg.tool_call_id == detail.tool_call_id
    if detail.name is not None:
        assert msg.name == detail.name
    if detail.finish_reason is not None:
        assert msg.finish_reason == detail.finish_reason


def test_directions_are_ordered_input_then_output():
    attrs = {
        "gen_ai.output.messages": J(
            [
                {"role": "assistant", "parts": [{"type": "text", "content": "a1"}]},
                {"role": "assistant", "parts": [{"type": "text", "content": "a2"}]},
            ]
        ),
        "gen_ai.system_instructions": "s",
        "gen_ai.input.messages": J(
            [{"role": "user", "parts": [{"type": "text", "content": f"u{i}"}]} for i in range(3)]
        ),
    }
    assert [(m.direction, m.content) for m in extract_messages(attrs)] == [
        ("input", "s"),
        ("input", "u0"),
        ("input", "u1"),
        ("input", "u2"),
        ("output", "a1"),
        ("output", "a2"),
    ]


# --- robustness ---------------------------------------------------------------------------

ROBUST_CASES = [
    pytest.param(
        {"gen_ai.input.messages": "[{not json", "gen_ai.output.messages": "plain words"}, id="garbage-json-in-otel-keys"
    ),
    pytest.param(
        {"gen_ai.input.messages": "null", "gen_ai.output.messages": "42", "gen_ai.system_instructions": "{}"},
        id="json-of-wrong-type",
    ),
    pytest.param(
        {
            "gen_ai.input.messages": J(
                [1, None, "s", [], {}, {"role": None}, {"role": 5, "parts": "x"}, {"parts": [None, 3, {"type": 7}]}]
            )
        },
        id="odd-items",
    ),
    pytest.param(
        {
            "gen_ai.input.messages": J(
                [
                    {
                        "role": "user",
                        "parts": [
                            {"type": "text", "content": {"k": [1, 2]}},
                            {"type": "text", "content": 42},
                            {"type": "text", "content": True},
                        ],
                    }
                ]
            )
        },
        id="non-string-part-content",
    ),
    pytest.param(
        {
            "gen_ai.prompt.0.content": 42,
            "gen_ai.prompt.1.content": ["a", 1],
            "gen_ai.prompt.2.content": None,
            "gen_ai.prompt.3.role": {"x": 1},
        },
        id="non-string-flattened-content",
    ),
    pytest.param(
        {
            "llm.input_messages.0.message": "not a dict",
            "llm.input_messages.1.message.tool_calls": "nope",
            "llm.input_messages.2.message.contents.0": 5,
        },
        id="flattened-wrong-types",
    ),
    pytest.param(
        {"input.value": 12345, "output.value": ["list", "value"], "input.mime_type": "application/json"},
        id="blob-non-string",
    ),
    pytest.param(
        {"input.value": J({"messages": "not a list"}), "output.value": J({"choices": "nope"})}, id="blob-wrong-types"
    ),
    pytest.param(
        {
            "input.value": J(
                {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": None}, None, 4]}]}
            )
        },
        id="blob-odd-content-parts",
    ),
    pytest.param(
        {"gen_ai.tool.call.arguments": None, "gen_ai.tool.call.result": {"deep": [[[[1]]]]}},
        id="tool-execution-odd-values",
    ),
    pytest.param({"gen_ai.system_instructions": [None, 1, {"type": "blob"}]}, id="system-instructions-odd"),
    pytest.param(
        {"gen_ai.response.finish_reasons": [None, {"a": 1}], "gen_ai.completion.0.content": "x"},
        id="finish-reasons-odd",
    ),
]


@pytest.mark.parametrize("attrs", ROBUST_CASES)
def test_robust_never_raises(attrs):
    msgs = extract_messages(attrs)
    for m in msgs:
        assert isinstance(m.role, str) and isinstance(m.content, str)
        assert m.direction in ("input", "output")


BAD_LOGS = [
    pytest.param(None, id="none"),
    pytest.param([], id="empty"),
    pytest.param([None, 1, "s", []], id="non-dicts"),
    pytest.param([{"event_name": 5, "attributes": "x", "body": object()}], id="wrong-field-types"),
    pytest.param([{"attributes": {"event.name": ["x"]}}], id="bad-old-name"),
    pytest.param(
        [log("gen_ai.client.inference.operation.details", {"gen_ai.input.messages": "garbage"}, "body string")],
        id="details-garbage",
    ),
    pytest.param(
        [
            log("gen_ai.user.message", {}, None),
            log("gen_ai.user.message", {}, 42),
            log("gen_ai.choice", {}, "str body"),
            log("gen_ai.choice", {}, {"message": "x", "index": "0"}),
        ],
        id="per-message-odd-bodies",
    ),
    pytest.param(
        [log("gen_ai.choice", {}, {"index": True, "message": {"content": [1, {"type": None}]}})], id="choice-odd-index"
    ),
]


@pytest.mark.parametrize("logs", BAD_LOGS)
def test_malformed_logs_never_raise(logs):
    for m in extract_messages({}, logs):
        assert isinstance(m.content, str)


@pytest.mark.parametrize("bad", [None, "str", 3, ["gen_ai.input.messages"]])
def test_non_dict_attributes(bad):
    assert extract_messages(bad) == []  # type: ignore[arg-type]


def test_garbage_json_falls_back_to_raw_text():
    msgs = extract_messages({"gen_ai.input.messages": "[{not json", "gen_ai.output.messages": "plain words"})
    assert summary(msgs) == [
        ("input", "user", "[{not json", "gen_ai.input.messages"),
        ("output", "assistant", "plain words", "gen_ai.output.messages"),
    ]


def test_non_string_content_is_rendered():
    msgs = extract_messages(
        {
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": 42,
            "gen_ai.prompt.1.role": "user",
            "gen_ai.prompt.1.content": {"k": "v"},
        }
    )
    assert [m.content for m in msgs] == ["42", '{"k": "v"}']


def test_non_string_role_becomes_text_and_missing_role_defaults():
    msgs = extract_messages(
        {
            "gen_ai.input.messages": [{"role": 7, "parts": []}, {"parts": [{"type": "text", "content": "x"}]}],
            "gen_ai.output.messages": [{"parts": []}],
        }
    )
    assert [(m.direction, m.role) for m in msgs] == [("input", "7"), ("input", "user"), ("output", "assistant")]


BIG = 10 * 1024 * 1024


@pytest.mark.parametrize(
    "make_attrs, prefix",
    [
        pytest.param(
            lambda text: {"gen_ai.input.messages": J([{"role": "user", "parts": [{"type": "text", "content": text}]}])},
            "",
            id="otel-json",
        ),
        pytest.param(
            lambda text: {"llm.input_messages.0.message.role": "user", "llm.input_messages.0.message.content": text},
            "",
            id="flattened",
        ),
        pytest.param(lambda text: {"input.value": text}, "", id="blob-plain"),
        pytest.param(lambda text: {"input.value": "{" + text}, "{", id="blob-broken-json"),
        pytest.param(lambda text: {"gen_ai.tool.call.arguments": text}, "", id="tool-arguments"),
    ],
)
def test_ten_megabytes_of_content_is_truncated_quickly(make_attrs, prefix):
    attrs = make_attrs("x" * BIG)
    start = time.perf_counter()
    (msg,) = extract_messages(attrs)
    assert time.perf_counter() - start < 2.0
    full = prefix + "x" * BIG
    assert msg.content == full[:MAX_CONTENT_CHARS] + f"… ({len(full)} chars)"


def test_huge_tool_call_arguments_are_truncated():
    attrs = {
        "gen_ai.output.messages": J(
            [
                {
                    "role": "assistant",
                    "parts": [{"type": "tool_call", "name": "f", "arguments": "a" * (MAX_CONTENT_CHARS + 10)}],
                }
            ]
        )
    }
    (msg,) = extract_messages(attrs)
    args = msg.tool_calls[0].arguments
    assert args.endswith(f"… ({MAX_CONTENT_CHARS + 10} chars)")


def test_content_at_the_limit_is_not_truncated():
    text = "y" * MAX_CONTENT_CHARS
    (msg,) = extract_messages({"input.value": text})
    assert msg.content == text


@pytest.mark.parametrize(
    "attrs",
    [
        pytest.param({"gen_ai.input.messages": "[" * 200_000 + "]" * 200_000}, id="json-too-deep-to-parse"),
        pytest.param({"input.value": "{" + '"a":{' * 50_000 + "}" * 50_001}, id="blob-too-deep-to-parse"),
        pytest.param(
            {
                "gen_ai.input.messages": J(
                    [{"role": "user", "parts": [{"type": "text", "content": json.loads("[" * 900 + "]" * 900)}]}]
                )
            },
            id="deep-content-value",
        ),
        pytest.param(
            {
                "gen_ai.input.messages": J(
                    [
                        {
                            "role": "tool",
                            "parts": [
                                json.loads('{"type": "tool_call_response", "response": ' * 300 + "1" + "}" * 300)
                            ],
                        }
                    ]
                )
            },
            id="deep-nested-tool-responses",
        ),
        pytest.param(
            {
                "gen_ai.output.messages": J(
                    [
                        {
                            "role": "assistant",
                            "parts": [
                                {
                                    "type": "tool_call",
                                    "name": "f",
                                    "arguments": json.loads('{"a":' * 900 + "1" + "}" * 900),
                                }
                            ],
                        }
                    ]
                )
            },
            id="deep-tool-arguments",
        ),
        pytest.param({"gen_ai.prompt.0." + ".".join(["content"] * 5000): "deep"}, id="deep-dotted-key"),
    ],
)
def test_deeply_nested_values_never_raise(attrs):
    for m in extract_messages(attrs):
        assert isinstance(m.content, str)
        for tc in m.tool_calls:
            assert tc.arguments is None or isinstance(tc.arguments, str)


def test_indexes_with_gaps_and_non_numeric_indexes():
    attrs = {
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": "first",
        "gen_ai.prompt.2.role": "user",
        "gen_ai.prompt.2.content": "third",
        "gen_ai.prompt.x.role": "user",
        "gen_ai.prompt.x.content": "not indexed",
        "gen_ai.prompt.1a.content": "not indexed either",
        "gen_ai.completion.5.content": "only completion",
    }
    assert summary(extract_messages(attrs)) == [
        ("input", "user", "first", "gen_ai.prompt.*"),
        ("input", "user", "third", "gen_ai.prompt.*"),
        ("output", "assistant", "only completion", "gen_ai.completion.*"),
    ]


_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20))
_json = st.recursive(
    _json_leaf,
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "role",
                    "parts",
                    "content",
                    "type",
                    "tool_calls",
                    "id",
                    "name",
                    "arguments",
                    "message",
                    "text",
                    "response",
                    "function",
                    "choices",
                    "messages",
                    "x",
                ]
            ),
            kids,
            max_size=5,
        )
    ),
    max_leaves=15,
)
_value = st.one_of(_json, _json.map(lambda v: json.dumps(v)), st.text(max_size=30))
_keys = st.sampled_from(
    [
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.input.messages.0.message.content",
        "gen_ai.output.messages.1.message.tool_calls.0.tool_call.function",
        "llm.input_messages.0.message.contents",
        "llm.output_messages.0.message",
        "llm.prompts",
        "llm.choices.0.completion",
        "gen_ai.prompt.0.tool_calls",
        "gen_ai.completion.0",
        "gen_ai.completion.0.role",
        "input.value",
        "output.value",
        "traceloop.entity.input",
        "gen_ai.prompt",
        "gen_ai.completion",
        "request_data",
        "response_data",
        "gen_ai.tool.call.arguments",
        "gen_ai.response.finish_reasons",
        "openinference.span.kind",
    ]
)
_logs = st.lists(
    st.fixed_dictionaries(
        {
            "event_name": st.sampled_from(
                [
                    None,
                    "gen_ai.client.inference.operation.details",
                    "gen_ai.user.message",
                    "gen_ai.tool.message",
                    "gen_ai.choice",
                    "x",
                ]
            ),
            "attributes": st.dictionaries(
                st.sampled_from(["gen_ai.input.messages", "gen_ai.output.messages", "event.name"]), _value, max_size=2
            ),
            "body": _value,
        }
    ),
    max_size=3,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(attrs=st.dictionaries(_keys, _value, max_size=6), logs=_logs)
def test_fuzz_never_raises(attrs, logs):
    for m in extract_messages(attrs, logs):
        assert isinstance(m.role, str) and isinstance(m.content, str) and isinstance(m.source, str)
        assert m.direction in ("input", "output")
        for tc in m.tool_calls:
            assert all(v is None or isinstance(v, str) for v in (tc.id, tc.name, tc.arguments))


# --- real fixtures ----------------------------------------------------------------------------


@dataclass
class FixtureSpan:
    name: str
    span_id: str
    attrs: dict


@cache
def fixture_spans(name: str) -> tuple[FixtureSpan, ...]:
    out = []
    for record in read_length_delimited(FIXTURES / f"{name}.otlp"):
        for rs in ExportTraceServiceRequest.FromString(record).resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    out.append(FixtureSpan(span.name, span.span_id.hex(), attributes_to_dict(span.attributes)))
    return tuple(out)


@cache
def fixture_logs(name: str) -> dict[str, list[dict]]:
    """Log records of ``name.logs.otlp`` as the API takes them, by span id (hex)."""
    out: dict[str, list[dict]] = {}
    for record in read_length_delimited(FIXTURES / f"{name}.logs.otlp"):
        for rl in ExportLogsServiceRequest.FromString(record).resource_logs:
            for sl in rl.scope_logs:
                for lr in sl.log_records:
                    item = {
                        "event_name": lr.event_name or None,
                        "attributes": attributes_to_dict(lr.attributes),
                        "body": any_value_to_python(lr.body) if lr.HasField("body") else None,
                    }
                    out.setdefault(lr.span_id.hex(), []).append(item)
    return out


# Independent readers of what each library recorded: plain lookups on the raw attributes.


def _flat_by_role(attrs: dict, prefix: str, role: str) -> str | None:
    i = 0
    while f"{prefix}.{i}.message.role" in attrs:
        if attrs[f"{prefix}.{i}.message.role"] == role:
            return attrs.get(f"{prefix}.{i}.message.content")
        i += 1
    return None


def _flat_count(attrs: dict, prefix: str) -> int:
    return sum(1 for k in attrs if k.startswith(prefix + ".") and k.endswith(".message.role"))


def _flat_tool(attrs: dict, prefix: str) -> tuple[str, object] | None:
    name = attrs.get(f"{prefix}.0.message.tool_calls.0.tool_call.function.name")
    return (name, attrs.get(f"{prefix}.0.message.tool_calls.0.tool_call.function.arguments")) if name else None


def _parts(attrs: dict, key: str) -> list:
    raw = attrs.get(key)
    return json.loads(raw) if isinstance(raw, str) else []


def _parts_by_role(attrs: dict, key: str, role: str) -> str | None:
    for m in _parts(attrs, key):
        if m["role"] == role:
            texts = [p["content"] for p in m["parts"] if p.get("type") == "text"]
            return "\n".join(texts) if texts else None
    return None


def _parts_tool(attrs: dict) -> tuple[str, object] | None:
    for m in _parts(attrs, "gen_ai.output.messages"):
        for p in m["parts"]:
            if p.get("type") == "tool_call":
                return p["name"], p["arguments"]
    return None


@dataclass(frozen=True)
class Library:
    fixture: str
    source_in: str  # the most structured source this library has
    source_out: str
    system: object  # attrs -> str | None
    user: object
    assistant: object
    input_count: object  # attrs -> int
    tool: object  # attrs -> (name, arguments) | None


def _flat_lib(fixture: str, in_prefix: str, out_prefix: str) -> Library:
    return Library(
        fixture,
        in_prefix + ".*",
        out_prefix + ".*",
        lambda a: _flat_by_role(a, in_prefix, "system"),
        lambda a: _flat_by_role(a, in_prefix, "user"),
        lambda a: _flat_by_role(a, out_prefix, "assistant"),
        lambda a: _flat_count(a, in_prefix),
        lambda a: _flat_tool(a, out_prefix),
    )


def _parts_lib(fixture: str) -> Library:
    return Library(
        fixture,
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        lambda a: _parts_by_role(a, "gen_ai.input.messages", "system"),
        lambda a: _parts_by_role(a, "gen_ai.input.messages", "user"),
        lambda a: _parts_by_role(a, "gen_ai.output.messages", "assistant"),
        lambda a: len(_parts(a, "gen_ai.input.messages")),
        _parts_tool,
    )


LIBRARIES = [
    _flat_lib("traceai_openai", "gen_ai.input.messages", "gen_ai.output.messages"),
    _flat_lib("openinference_openai", "llm.input_messages", "llm.output_messages"),
    _parts_lib("openllmetry_openai"),
    _parts_lib("otel_v2_openai"),
    _parts_lib("handmade_agent"),
]
OPENAI_SUITE = [lib for lib in LIBRARIES if lib.fixture != "handmade_agent"]


def _chat_span(lib: Library) -> FixtureSpan:
    """The first span with system, user and assistant text: the suite's `chat` call."""
    for span in fixture_spans(lib.fixture):
        if lib.system(span.attrs) and lib.user(span.attrs) and lib.assistant(span.attrs):
            return span
    raise AssertionError(f"{lib.fixture}: no complete chat span")


@pytest.mark.parametrize("lib", LIBRARIES, ids=lambda lib: lib.fixture)
def test_fixture_chat_call(lib: Library):
    span = _chat_span(lib)
    msgs = extract_messages(span.attrs)
    inputs = [m for m in msgs if m.direction == "input"]
    outputs = [m for m in msgs if m.direction == "output"]
    assert [m.role for m in inputs[:2]] == ["system", "user"]
    assert inputs[0].content == lib.system(span.attrs)
    assert inputs[1].content == lib.user(span.attrs)
    assert len(inputs) == lib.input_count(span.attrs)  # no duplicate conversation
    assert [(m.role, m.content) for m in outputs] == [("assistant", lib.assistant(span.attrs))]
    assert {m.source for m in inputs} == {lib.source_in}
    assert {m.source for m in outputs} == {lib.source_out}
    assert msgs == inputs + outputs


@pytest.mark.parametrize("lib", OPENAI_SUITE, ids=lambda lib: lib.fixture)
def test_fixture_chat_is_the_first_call(lib: Library):
    assert _chat_span(lib) is fixture_spans(lib.fixture)[0]


@pytest.mark.parametrize("lib", OPENAI_SUITE, ids=lambda lib: lib.fixture)
def test_fixture_tools_call(lib: Library):
    spans = [s for s in fixture_spans(lib.fixture) if lib.tool(s.attrs)]
    assert len(spans) == 1, "one `tools` call per suite"
    span = spans[0]
    name, raw_arguments = lib.tool(span.attrs)
    expected_arguments = json.loads(raw_arguments) if isinstance(raw_arguments, str) else raw_arguments
    msgs = extract_messages(span.attrs)
    outputs = [m for m in msgs if m.direction == "output"]
    assert len(outputs) == 1 and outputs[0].role == "assistant"
    (call,) = outputs[0].tool_calls
    assert call.name == name
    assert call.id
    assert json.loads(call.arguments) == expected_arguments
    assert [m.role for m in msgs if m.direction == "input"] == ["system", "user"]


@pytest.mark.parametrize("lib", LIBRARIES, ids=lambda lib: lib.fixture)
def test_fixture_no_span_repeats_a_message(lib: Library):
    logs = fixture_logs(lib.fixture) if (FIXTURES / f"{lib.fixture}.logs.otlp").exists() else {}
    seen_any = False
    for span in fixture_spans(lib.fixture):
        msgs = extract_messages(span.attrs, logs.get(span.span_id))
        keys = [(m.direction, m.role, m.content, tuple((t.name, t.arguments) for t in m.tool_calls)) for m in msgs]
        assert len(keys) == len(set(keys)), span.name
        for direction in ("input", "output"):
            sources = {m.source for m in msgs if m.direction == direction and m.source != "gen_ai.system_instructions"}
            assert len(sources) <= 1, (span.name, sources)
        seen_any |= bool(msgs)
    assert seen_any


def _kind(attrs: dict) -> str | None:
    return attrs.get("openinference.span.kind") or attrs.get("gen_ai.span.kind")


@pytest.mark.parametrize("lib", LIBRARIES, ids=lambda lib: lib.fixture)
def test_fixture_failed_calls_have_input_only(lib: Library):
    failed = [
        s
        for s in fixture_spans(lib.fixture)
        if lib.user(s.attrs) and not lib.assistant(s.attrs) and "output.value" not in s.attrs and not lib.tool(s.attrs)
    ]
    assert failed
    for span in failed:
        msgs = extract_messages(span.attrs)
        assert msgs and all(m.direction == "input" for m in msgs)


@pytest.mark.parametrize("fixture", ["traceai_openai", "openinference_openai"])
def test_fixture_embedding_spans_are_not_conversations(fixture):
    spans = [s for s in fixture_spans(fixture) if _kind(s.attrs) == "EMBEDDING"]
    assert spans
    for span in spans:
        assert "input.value" in span.attrs
        assert extract_messages(span.attrs) == []


def test_fixture_traceai_streaming_output_comes_from_output_value():
    """traceAI writes no flattened output for streamed calls, only a plain-text output.value."""
    streamed = [
        s
        for s in fixture_spans("traceai_openai")
        if "output.value" in s.attrs
        and _kind(s.attrs) == "LLM"
        and not any(k.startswith("gen_ai.output.messages.") for k in s.attrs)
    ]
    assert streamed
    for span in streamed:
        outputs = [m for m in extract_messages(span.attrs) if m.direction == "output"]
        assert [(m.role, m.content, m.source) for m in outputs] == [
            ("assistant", span.attrs["output.value"], "output.value")
        ]


def test_fixture_traceai_input_value_is_not_a_second_conversation():
    """traceAI's input.value holds only the system prompt (despite input.mime_type application/json)."""
    span = _chat_span(LIBRARIES[0])
    assert span.attrs["input.value"] == _flat_by_role(span.attrs, "gen_ai.input.messages", "system")
    assert not any(m.source == "input.value" for m in extract_messages(span.attrs))


def test_fixture_otel_v2_log_records_yield_the_conversation():
    logs = fixture_logs("otel_v2_openai")
    spans = {s.span_id: s for s in fixture_spans("otel_v2_openai")}
    details = {
        sid: recs
        for sid, recs in logs.items()
        if any(r["event_name"] == "gen_ai.client.inference.operation.details" for r in recs)
    }
    assert len(details) >= 5
    for span_id, records in details.items():
        span = spans[span_id]  # joined by span_id
        from_logs = extract_messages({}, records)
        from_span = extract_messages(span.attrs)
        assert from_logs, span.name
        assert {m.source for m in from_logs} == {"log:gen_ai.client.inference.operation.details"}
        assert [(m.direction, m.role, m.content) for m in from_logs] == [
            (m.direction, m.role, m.content) for m in from_span
        ]
        # input text computed from the raw log attributes
        raw_inputs = next(
            r["attributes"]["gen_ai.input.messages"] for r in records if "gen_ai.input.messages" in r["attributes"]
        )
        assert [m.content for m in from_logs if m.direction == "input"] == [
            p["content"] for m in raw_inputs for p in m["parts"]
        ]
        # with both: the span's content is used and nothing is repeated
        both = extract_messages(span.attrs, records)
        assert summary(both) == summary(from_span)


def test_fixture_otel_v2_logs_fill_in_when_span_has_no_content():
    logs = fixture_logs("otel_v2_openai")
    span = _chat_span(LIBRARIES[3])
    stripped = {k: v for k, v in span.attrs.items() if k not in ("gen_ai.input.messages", "gen_ai.output.messages")}
    msgs = extract_messages(stripped, logs[span.span_id])
    assert [m.role for m in msgs] == ["system", "user", "assistant"]
    assert msgs[-1].content == _parts_by_role(span.attrs, "gen_ai.output.messages", "assistant")
    assert msgs[-1].finish_reason == json.loads(span.attrs["gen_ai.output.messages"])[0]["finish_reason"]


def test_fixture_otel_v2_tool_call_from_logs():
    logs = fixture_logs("otel_v2_openai")
    span = next(s for s in fixture_spans("otel_v2_openai") if _parts_tool(s.attrs))
    name, arguments = _parts_tool(span.attrs)
    outputs = [m for m in extract_messages({}, logs[span.span_id]) if m.direction == "output"]
    (call,) = outputs[0].tool_calls
    assert call.name == name and json.loads(call.arguments) == arguments


def test_fixture_handmade_agent_tool_message_and_tool_span():
    spans = fixture_spans("handmade_agent")
    chat = _chat_span(LIBRARIES[4])
    raw = json.loads(chat.attrs["gen_ai.input.messages"])
    tool_part = next(p for m in raw if m["role"] == "tool" for p in m["parts"])
    msgs = extract_messages(chat.attrs)
    (tool_msg,) = [m for m in msgs if m.role == "tool"]
    assert tool_msg.tool_call_id == tool_part["id"]
    assert tool_msg.content == tool_part["response"]

    tool_span = next(s for s in spans if "gen_ai.tool.call.arguments" in s.attrs)
    assert summary(extract_messages(tool_span.attrs)) == [
        ("input", "tool-call", tool_span.attrs["gen_ai.tool.call.arguments"], "gen_ai.tool.call.*"),
        ("output", "tool-result", tool_span.attrs["gen_ai.tool.call.result"], "gen_ai.tool.call.*"),
    ]

    # agent and retrieval spans carry no conversation; evaluation log records add none
    logs = fixture_logs("handmade_agent")
    for span in spans:
        if span.attrs.get("gen_ai.operation.name") in ("invoke_agent", "retrieval"):
            assert extract_messages(span.attrs, logs.get(span.span_id)) == []
    evaluated = [s for s in spans if s.span_id in logs]
    assert evaluated
    for span in evaluated:
        assert extract_messages(span.attrs, logs[span.span_id]) == extract_messages(span.attrs)


def test_fixture_openllmetry_tool_arguments_arrive_as_an_object():
    """OpenLLMetry and otel_v2 put tool-call ``arguments`` as a JSON object, not a string."""
    for fixture in ("openllmetry_openai", "otel_v2_openai"):
        span = next(s for s in fixture_spans(fixture) if _parts_tool(s.attrs))
        _, arguments = _parts_tool(span.attrs)
        assert isinstance(arguments, dict)
        (out,) = [m for m in extract_messages(span.attrs) if m.direction == "output"]
        assert out.tool_calls[0].arguments == json.dumps(arguments, ensure_ascii=False)


def test_fixture_extraction_is_fast():
    start = time.perf_counter()
    for lib in LIBRARIES:
        logs = fixture_logs(lib.fixture) if (FIXTURES / f"{lib.fixture}.logs.otlp").exists() else {}
        for span in fixture_spans(lib.fixture):
            for _ in range(20):
                extract_messages(span.attrs, logs.get(span.span_id))
    assert time.perf_counter() - start < 2.0

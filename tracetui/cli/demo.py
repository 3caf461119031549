"""`tracetui demo`: realistic agent runs sent through the real OpenTelemetry SDK.

Why the real SDK and not hand-made protobuf: a newcomer should see exactly
what their own instrumented app will produce, over the same OTLP/gRPC path,
with the same batching. If the demo works, their app will too.

How a run is made, in two steps:

1. *Plan* (pure data, driven by one ``random.Random``): a tree of
   :class:`SpanPlan` with start/end offsets in simulated seconds. One small
   ``_plan_*`` function per span type (agent, chat, retrieval, tool, ...).
2. *Emit*: the tree is replayed through a ``Tracer`` with explicit
   ``start_time``/``end_time`` so that the run ends "now". A 30-second agent
   run is therefore generated instantly, and nothing here ever sleeps except
   the pause between runs.

Attributes follow the OpenTelemetry GenAI semantic conventions (``gen_ai.*``),
including message content as JSON strings in the "parts" schema and
evaluation results, which are sent both as span events and as log records
(``gen_ai.evaluation.result``), the two ways instrumentations report them.

This module must not import textual or rich: `tracetui demo` runs headless.
"""

from __future__ import annotations

import json
import logging
import random
import re
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from tracetui.ingest.hints import hint
from tracetui.model.fmt import fmt_counted

try:  # SDK >= 1.39: Logger.emit() accepts the API LogRecord, with `event_name` and `context`.
    from opentelemetry.sdk._logs import ReadWriteLogRecord as _ReadWriteLogRecord  # noqa: F401

    EVALUATION_LOGS_SUPPORTED = True
except ImportError:  # Older SDKs want their own record type: evaluations then stay on spans only.
    EVALUATION_LOGS_SUPPORTED = False

# --- constants ------------------------------------------------------------------

DEFAULT_ENDPOINT = "http://127.0.0.1:4317"
INSTRUMENTATION_SCOPE = "tracetui.demo"
EVALUATION_EVENT = "gen_ai.evaluation.result"
FIRST_CHUNK_EVENT = "gen_ai.content.completion.chunk"
FALLBACK_LINK_TYPE = "fallback_from"

#: Loggers of the OTLP gRPC exporters. The receiver may not implement the logs
#: service (it answers UNIMPLEMENTED), and an unreachable endpoint makes the
#: exporter log a warning per retry: both would spam the demo's terminal, so
#: `run_demo` raises these to CRITICAL and reports export failures itself,
#: once, in plain words (see `_ExportWatch`).
QUIET_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.grpc._log_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
)

#: Seconds the exporters may spend on one export / on the final flush, so that a
#: wrong endpoint does not hang the demo for half a minute.
EXPORT_TIMEOUT_S = 5
FLUSH_TIMEOUT_MS = 8_000
#: Batch delay: short, so spans show up in the monitor within a second.
BATCH_DELAY_MS = 500

#: request model -> (provider, dated response model). Names that price tables know.
MODELS: dict[str, tuple[str, str]] = {
    "gpt-4o": ("openai", "gpt-4o-2024-08-06"),
    "gpt-4o-mini": ("openai", "gpt-4o-mini-2024-07-18"),
    "gpt-4.1-mini": ("openai", "gpt-4.1-mini-2025-04-14"),
    "claude-sonnet-4-20250514": ("anthropic", "claude-sonnet-4-20250514"),
    "claude-3-5-haiku-20241022": ("anthropic", "claude-3-5-haiku-20241022"),
    "text-embedding-3-small": ("openai", "text-embedding-3-small"),
}
SERVER_ADDRESS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com"}
STOP_REASON = {"openai": "stop", "anthropic": "end_turn"}
TOOL_CALL_REASON = {"openai": "tool_calls", "anthropic": "tool_use"}
EMBEDDING_MODEL = "text-embedding-3-small"

#: Probabilities of the incidents a run may contain (after the showcase runs).
P_TOOL_ERROR = 0.2
P_RETRY = 0.15
P_FALLBACK = 0.12
P_ODD_NAME = 0.1
P_GROUNDEDNESS = 0.85
P_UNGROUNDED = 1 / 3
P_RELEVANCE = 0.35
P_SECOND_TOOL_LOOP = 0.3
P_CACHE_READ = 0.4
P_FIRST_CHUNK_EVENT = 0.5

#: The first runs each show one feature, so `tracetui demo --count 5` shows them all.
SHOWCASE: dict[int, frozenset[str]] = {
    2: frozenset({"retry"}),
    3: frozenset({"tool_error"}),
    4: frozenset({"fallback"}),
    5: frozenset({"odd_name"}),
}

#: Tool names with characters a careless UI would interpret as markup.
ODD_TOOL_NAMES = ("lookup[bold]", "search[/red]")

USER_IDS = ("u-1042", "u-2210", "u-3307", "u-4481", "u-5123")


@dataclass(frozen=True)
class Scenario:
    """One kind of agent run: which service runs it, with which models and tools."""

    run_type: str
    service: str
    planner_model: str
    answer_model: str
    fallback_model: str
    data_source: str
    tools: tuple[str, ...]
    questions: tuple[str, ...]
    answers: tuple[str, ...]
    uses_embeddings: bool = False


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        run_type="ticket-resolution",
        service="support-agent",
        planner_model="gpt-4o-mini",
        answer_model="gpt-4o",
        fallback_model="claude-sonnet-4-20250514",
        data_source="support-kb",
        tools=("lookup_order", "check_refund_policy"),
        questions=(
            "My order hasn't arrived after 9 days, where is it?",
            "I was charged twice for the same order.",
            "Can I change the delivery address of my order?",
        ),
        answers=(
            "Your order shipped on Monday and is now with the carrier; expected delivery is in 2 days.",
            "I found the duplicate charge and started a refund; it will appear within 5 business days.",
            "The parcel has not left the warehouse yet, so I updated the delivery address for you.",
        ),
    ),
    Scenario(
        run_type="refund-triage",
        service="support-agent",
        planner_model="gpt-4.1-mini",
        answer_model="gpt-4o-mini",
        fallback_model="claude-3-5-haiku-20241022",
        data_source="policy-docs",
        tools=("lookup_order", "issue_refund"),
        questions=(
            "The blender I received is broken, I want my money back.",
            "Can I return shoes I have worn once?",
        ),
        answers=(
            "Damaged items are refundable in full: I issued a refund of $89.00 to your card.",
            "Worn shoes can be returned within 30 days if they are undamaged; here is your return label.",
        ),
    ),
    Scenario(
        run_type="literature-review",
        service="research-agent",
        planner_model="gpt-4.1-mini",
        answer_model="claude-sonnet-4-20250514",
        fallback_model="gpt-4o",
        data_source="arxiv-index",
        tools=("web_search", "fetch_pdf"),
        questions=(
            "Summarize recent work on speculative decoding.",
            "What are the known failure modes of retrieval-augmented generation?",
        ),
        answers=(
            "Three lines of work stand out: draft-model decoding, Medusa heads and lookahead decoding [1][2][3].",
            "The main failure modes are retrieval misses, context dilution and unfaithful synthesis [1][4].",
        ),
        uses_embeddings=True,
    ),
    Scenario(
        run_type="competitor-brief",
        service="research-agent",
        planner_model="gpt-4o-mini",
        answer_model="gpt-4o",
        fallback_model="claude-sonnet-4-20250514",
        data_source="news-index",
        tools=("web_search", "fetch_page"),
        questions=("Write a one-page brief on Acme Corp's Q3 announcements.",),
        answers=("Acme announced two products and a price cut in Q3; the brief below covers each [1][2].",),
        uses_embeddings=True,
    ),
)
SERVICES: tuple[str, ...] = tuple(dict.fromkeys(s.service for s in SCENARIOS))

SYSTEM_PROMPT = {
    "support-agent": "You are a friendly support agent for an online shop. Use tools; never invent order data.",
    "research-agent": "You are a careful research assistant. Cite every claim with the retrieved sources.",
}

EVAL_EXPLANATIONS = {
    ("groundedness", True): (
        "Every claim in the answer is supported by the retrieved documents.",
        "The answer restates the tool result and the policy excerpt faithfully.",
    ),
    ("groundedness", False): (
        "The delivery date in the answer does not appear in any retrieved document.",
        "The answer cites a refund amount that the tool did not return.",
        "Two of the three citations do not support the sentences they follow.",
    ),
    ("relevance", True): ("The answer addresses the user's question directly.",),
    ("relevance", False): ("The answer drifts to a topic the user did not ask about.",),
}
EVAL_LABELS = {"groundedness": ("grounded", "ungrounded"), "relevance": ("relevant", "irrelevant")}

#: Fabricated but realistic failures for the exception events: (type, message, frames),
#: each frame being (file, line, function, source line). `{tool}` is the tool's name.
TOOL_FAILURES = (
    (
        "httpx.HTTPStatusError",
        "Server error '503 Service Unavailable' for url 'http://orders.internal/v1/orders'",
        (
            ("agent/tools.py", 41, "{tool}", "response.raise_for_status()"),
            ("httpx/_models.py", 829, "raise_for_status", "raise HTTPStatusError(message, request=request)"),
        ),
    ),
    (
        "TimeoutError",
        "{tool} did not answer within 10.0 seconds",
        (
            ("agent/tools.py", 57, "{tool}", "return await asyncio.wait_for(call, timeout=10.0)"),
            ("asyncio/tasks.py", 502, "wait_for", "raise exceptions.TimeoutError() from exc"),
        ),
    ),
    (
        "pydantic.ValidationError",
        "1 validation error for {tool}Args\norder_id\n  String should match pattern '^A-[0-9]{{5}}$'",
        (
            ("agent/tools.py", 23, "{tool}", "args = ArgsModel.model_validate_json(raw)"),
            ("pydantic/main.py", 656, "model_validate_json", "return cls.__pydantic_validator__.validate_json(data)"),
        ),
    ),
)
RATE_LIMIT_FRAMES = (
    ("langchain_openai/chat_models/base.py", 1010, "_generate", "response = self.client.create(**payload)"),
    ("openai/_base_client.py", 1047, "request", "raise self._make_status_error_from_response(err.response) from None"),
)
STREAM_TIMEOUT_FRAMES = (
    ("agent/llm.py", 88, "stream_answer", "async for chunk in await client.create(stream=True, **request):"),
    ("httpx/_transports/default.py", 118, "map_httpcore_exceptions", "raise mapped_exc(message) from exc"),
)


# --- plan: pure data -----------------------------------------------------------


@dataclass
class SpanPlan:
    """A span to emit, with times in seconds from the start of the run."""

    name: str
    kind: SpanKind
    start: float
    end: float
    attributes: dict = field(default_factory=dict)
    events: list[tuple[str, float, dict]] = field(default_factory=list)
    error: str | None = None
    children: list[SpanPlan] = field(default_factory=list)
    link_to: SpanPlan | None = None
    link_attributes: dict = field(default_factory=dict)
    #: Evaluation attributes; each becomes a span event and a log record.
    evaluations: list[dict] = field(default_factory=list)

    def walk(self) -> Iterator[SpanPlan]:
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass
class RunSummary:
    """What one run contained, for the one-line progress report."""

    index: int
    service: str
    run_type: str
    llm_calls: int
    duration_s: float
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        calls = fmt_counted(self.llm_calls, "LLM call")
        parts = [f"demo: run {self.index} {self.run_type}", calls, *self.notes, f"{self.duration_s:.1f}s"]
        return "  ".join(parts)


def short_model(model: str) -> str:
    """'claude-sonnet-4-20250514' -> 'claude-sonnet-4', for human-readable summaries."""
    return re.sub(r"-\d{8}$", "", model)


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def _b62(rng: random.Random, n: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(rng.choice(alphabet) for _ in range(n))


def _response_id(rng: random.Random, provider: str) -> str:
    return f"msg_01{_b62(rng, 22)}" if provider == "anthropic" else f"chatcmpl-{_b62(rng, 29)}"


def _tool_call_id(rng: random.Random, provider: str) -> str:
    return f"toolu_01{_b62(rng, 22)}" if provider == "anthropic" else f"call_{_b62(rng, 24)}"


def _text(role: str, content: str) -> dict:
    return {"role": role, "parts": [{"type": "text", "content": content}]}


def _decode_seconds(rng: random.Random, output_tokens: int) -> float:
    """Realistic generation time: 10-30 ms per output token."""
    return output_tokens * rng.uniform(0.010, 0.030)


def _llm_attributes(model: str, *, stream: bool, temperature: float, max_tokens: int) -> dict:
    """Request-side attributes shared by every chat span."""
    provider, _ = MODELS[model]
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "gen_ai.request.temperature": temperature,
        "gen_ai.request.max_tokens": max_tokens,
        "gen_ai.request.stream": stream,
        "server.address": SERVER_ADDRESS[provider],
        "server.port": 443,
    }


def _usage_attributes(rng: random.Random, model: str, input_tokens: int, output_tokens: int, finish: str) -> dict:
    """Response-side attributes of a successful chat span."""
    provider, response_model = MODELS[model]
    attrs = {
        "gen_ai.response.model": response_model,
        "gen_ai.response.id": _response_id(rng, provider),
        "gen_ai.response.finish_reasons": (finish,),
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
    }
    if rng.random() < P_CACHE_READ:  # prompt caching: a prefix of the input was served from cache
        attrs["gen_ai.usage.cache_read.input_tokens"] = rng.randrange(256, input_tokens, 128)
    return attrs


def _exception_event(at: float, exc_type: str, message: str, frames: Sequence[tuple]) -> tuple[str, float, dict]:
    """The `exception` span event, shaped like `span.record_exception` would record it."""
    lines = ["Traceback (most recent call last):"]
    for file, line, function, source in frames:
        lines += [f'  File "{file}", line {line}, in {function}', f"    {source}"]
    lines.append(f"{exc_type}: {message}")
    attributes = {"exception.type": exc_type, "exception.message": message, "exception.stacktrace": "\n".join(lines)}
    return ("exception", at, attributes)


def _plan_planner_call(rng: random.Random, t: float, model: str, messages: list[dict], tool: str) -> SpanPlan:
    """Non-streaming chat call in which the model decides to call a tool."""
    provider, _ = MODELS[model]
    input_tokens = rng.randint(600, 2600)
    output_tokens = rng.randint(25, 180)
    duration = 0.25 + input_tokens * 0.00005 + _decode_seconds(rng, output_tokens)
    call_id = _tool_call_id(rng, provider)
    parts: list[dict] = []
    if rng.random() < 0.4:
        parts.append({"type": "text", "content": f"I'll use {tool} to check that."})
    parts.append({"type": "tool_call", "id": call_id, "name": tool, "arguments": _tool_arguments(rng, tool)})
    finish = TOOL_CALL_REASON[provider]
    attrs = _llm_attributes(model, stream=False, temperature=rng.choice((0.0, 0.2, 0.3)), max_tokens=1024)
    attrs.update(_usage_attributes(rng, model, input_tokens, output_tokens, finish))
    attrs["gen_ai.input.messages"] = json.dumps(messages)
    attrs["gen_ai.output.messages"] = json.dumps([{"role": "assistant", "parts": parts, "finish_reason": finish}])
    return SpanPlan(f"chat {model}", SpanKind.CLIENT, t, t + duration, attrs)


def _plan_rate_limited_call(rng: random.Random, t: float, model: str, messages: list[dict]) -> SpanPlan:
    """A chat call rejected with HTTP 429; the caller retries the same model (LangChain pattern)."""
    provider, _ = MODELS[model]
    exc_type = f"{provider}.RateLimitError"
    message = (
        f"Error code: 429 - Rate limit reached for {model} on tokens per min (TPM): "
        f"Limit 200000, Used 199{rng.randint(100, 999)}, Requested {rng.randint(900, 2600)}. "
        f"Please try again in {rng.randint(200, 1800)}ms."
    )
    end = t + rng.uniform(0.12, 0.45)
    attrs = _llm_attributes(model, stream=False, temperature=0.0, max_tokens=1024)
    attrs["error.type"] = exc_type
    attrs["http.response.status_code"] = 429
    attrs["gen_ai.input.messages"] = json.dumps(messages)
    events = [_exception_event(end, exc_type, message, RATE_LIMIT_FRAMES)]
    return SpanPlan(f"chat {model}", SpanKind.CLIENT, t, end, attrs, events, error=message)


def _tool_arguments(rng: random.Random, tool: str) -> dict:
    base = tool.split("[")[0]
    if base in ("lookup_order", "issue_refund", "lookup"):
        return {"order_id": f"A-{rng.randint(10000, 99999)}"}
    if base == "check_refund_policy":
        return {"category": rng.choice(("electronics", "apparel", "kitchen"))}
    if base in ("web_search", "search"):
        return {"query": rng.choice(("speculative decoding survey", "RAG evaluation", "Acme Corp Q3")), "top_k": 5}
    return {"url": f"https://example.org/doc/{rng.randint(100, 999)}"}


def _tool_result(rng: random.Random, tool: str) -> dict:
    base = tool.split("[")[0]
    if base in ("lookup_order", "lookup"):
        return {"status": rng.choice(("shipped", "processing", "delayed")), "eta_days": rng.randint(1, 6)}
    if base == "issue_refund":
        return {"refund_id": f"re_{_hex(rng, 10)}", "amount": round(rng.uniform(10, 200), 2), "currency": "USD"}
    if base == "check_refund_policy":
        return {"refundable": True, "window_days": 30}
    if base in ("web_search", "search"):
        return {"results": [f"https://example.org/{_hex(rng, 6)}" for _ in range(3)]}
    return {"chars": rng.randint(4000, 40000), "title": "Fetched document"}


def _plan_tool(rng: random.Random, t: float, tool: str, call_id: str, arguments: dict, fail: bool) -> SpanPlan:
    """Tool execution; when `fail`, ERROR status with `error.type` and an exception event."""
    end = t + rng.uniform(0.04, 1.4)
    attrs = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": tool,
        "gen_ai.tool.type": "function",
        "gen_ai.tool.call.id": call_id,
        "gen_ai.tool.call.arguments": json.dumps(arguments),
    }
    plan = SpanPlan(f"execute_tool {tool}", SpanKind.INTERNAL, t, end, attrs)
    if fail:
        exc_type, message, template_frames = rng.choice(TOOL_FAILURES)
        message = message.format(tool=tool)
        frames = [(file, line, function.format(tool=tool), source) for file, line, function, source in template_frames]
        attrs["error.type"] = exc_type
        plan.error = message
        plan.events.append(_exception_event(end, exc_type, message, frames))
    else:
        attrs["gen_ai.tool.call.result"] = json.dumps(_tool_result(rng, tool))
    return plan


def _plan_embeddings(rng: random.Random, t: float) -> SpanPlan:
    """Embedding of the retrieval query (research agents only)."""
    provider, response_model = MODELS[EMBEDDING_MODEL]
    attrs = {
        "gen_ai.operation.name": "embeddings",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": EMBEDDING_MODEL,
        "gen_ai.response.model": response_model,
        "gen_ai.usage.input_tokens": rng.randint(8, 60),
        "gen_ai.embeddings.dimension.count": 1536,
        "server.address": SERVER_ADDRESS[provider],
    }
    return SpanPlan(f"embeddings {EMBEDDING_MODEL}", SpanKind.CLIENT, t, t + rng.uniform(0.08, 0.3), attrs)


def _plan_retrieval(rng: random.Random, t: float, scenario: Scenario, query: str) -> SpanPlan:
    """Vector search in the scenario's data source, with the documents and their scores."""
    top_k = rng.choice((3, 4, 5))
    prefix = scenario.data_source.split("-")[0]
    scores = sorted((round(rng.uniform(0.45, 0.93), 3) for _ in range(top_k)), reverse=True)
    documents = [{"id": f"{prefix}-{rng.randint(100, 9999)}", "score": s} for s in scores]
    attrs = {
        "gen_ai.operation.name": "retrieval",
        "gen_ai.data_source.id": scenario.data_source,
        "gen_ai.request.top_k": top_k,
        "gen_ai.retrieval.query.text": query,
        "gen_ai.retrieval.documents": json.dumps(documents),
    }
    plan = SpanPlan(f"retrieval {scenario.data_source}", SpanKind.CLIENT, t, t, attrs)
    cursor = t + rng.uniform(0.002, 0.01)
    if scenario.uses_embeddings:
        embed = _plan_embeddings(rng, cursor)
        plan.children.append(embed)
        cursor = embed.end + rng.uniform(0.002, 0.01)
    plan.end = cursor + rng.uniform(0.03, 0.35)
    return plan


def _plan_streamed_answer(rng: random.Random, t: float, model: str, messages: list[dict], answer: str) -> SpanPlan:
    """Streaming chat call producing the final answer; TTFC 0.3-1.2 s, then token-by-token decode."""
    provider, _ = MODELS[model]
    input_tokens = rng.randint(900, 3800)
    output_tokens = rng.randint(60, 520)
    ttfc = round(rng.uniform(0.3, 1.2), 3)
    end = t + ttfc + _decode_seconds(rng, output_tokens)
    finish = STOP_REASON[provider]
    attrs = _llm_attributes(model, stream=True, temperature=rng.choice((0.2, 0.5, 0.7)), max_tokens=2048)
    attrs.update(_usage_attributes(rng, model, input_tokens, output_tokens, finish))
    attrs["gen_ai.response.time_to_first_chunk"] = ttfc
    attrs["gen_ai.input.messages"] = json.dumps(messages)
    attrs["gen_ai.output.messages"] = json.dumps([{**_text("assistant", answer), "finish_reason": finish}])
    plan = SpanPlan(f"chat {model}", SpanKind.CLIENT, t, end, attrs)
    if rng.random() < P_FIRST_CHUNK_EVENT:
        plan.events.append((FIRST_CHUNK_EVENT, t + ttfc, {}))
    return plan


def _plan_timed_out_stream(rng: random.Random, t: float, model: str, messages: list[dict]) -> SpanPlan:
    """A streaming call that never produced a chunk and timed out; the agent falls back to another model."""
    provider, _ = MODELS[model]
    exc_type = f"{provider}.APITimeoutError"
    message = "Request timed out."
    end = t + rng.uniform(8.0, 20.0)
    attrs = _llm_attributes(model, stream=True, temperature=0.5, max_tokens=2048)
    attrs["error.type"] = exc_type
    attrs["gen_ai.input.messages"] = json.dumps(messages)
    events = [_exception_event(end, exc_type, message, STREAM_TIMEOUT_FRAMES)]
    return SpanPlan(f"chat {model}", SpanKind.CLIENT, t, end, attrs, events, error=message)


def _plan_evaluation(rng: random.Random, name: str, response_id: str, passing: bool) -> dict:
    """Attributes of one `gen_ai.evaluation.result` (score < 0.5 fails)."""
    score = rng.uniform(0.55, 0.98) if passing else rng.uniform(0.05, 0.45)
    good, bad = EVAL_LABELS[name]
    return {
        "gen_ai.evaluation.name": name,
        "gen_ai.evaluation.score.value": round(score, 2),
        "gen_ai.evaluation.score.label": good if passing else bad,
        "gen_ai.evaluation.explanation": rng.choice(EVAL_EXPLANATIONS[(name, passing)]),
        "gen_ai.response.id": response_id,
    }


def _gap(rng: random.Random) -> float:
    """Agent-framework overhead between two sequential steps."""
    return rng.uniform(0.004, 0.04)


@dataclass
class _Session:
    conversation_id: str
    user_id: str
    runs_left: int


class DemoPlanner:
    """Plans agent runs: which scenario, which incidents, and the span tree.

    Holds the random generator and the per-service conversations, so that
    consecutive runs of a service share a `gen_ai.conversation.id`.
    """

    def __init__(self, rng: random.Random):
        self.rng = rng
        self._sessions: dict[str, _Session] = {}

    def _session(self, service: str) -> _Session:
        session = self._sessions.get(service)
        if session is None or session.runs_left <= 0:
            session = _Session(f"conv_{_hex(self.rng, 16)}", self.rng.choice(USER_IDS), self.rng.randint(2, 4))
            self._sessions[service] = session
        session.runs_left -= 1
        return session

    def _incidents(self, index: int) -> frozenset[str]:
        if index in SHOWCASE:
            return SHOWCASE[index]
        rng = self.rng
        chances = {"tool_error": P_TOOL_ERROR, "retry": P_RETRY, "fallback": P_FALLBACK, "odd_name": P_ODD_NAME}
        return frozenset(name for name, p in chances.items() if rng.random() < p)

    def plan_run(self, index: int) -> tuple[Scenario, SpanPlan, RunSummary]:
        """The span tree of run number `index` (1-based), and its summary."""
        rng = self.rng
        scenario = rng.choice(SCENARIOS)
        incidents = self._incidents(index)
        session = self._session(scenario.service)
        question = rng.choice(scenario.questions)
        notes: list[str] = []

        root = SpanPlan(
            f"invoke_agent {scenario.run_type}",
            SpanKind.INTERNAL,
            0.0,
            0.0,
            {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": scenario.run_type,
                "gen_ai.agent.id": f"{scenario.service}/{scenario.run_type}",
                "gen_ai.conversation.id": session.conversation_id,
                "user.id": session.user_id,
            },
        )
        messages = [_text("system", SYSTEM_PROMPT[scenario.service]), _text("user", question)]
        t = rng.uniform(0.005, 0.03)

        # One or two rounds of "the model picks a tool, the tool runs".
        rounds = 2 if rng.random() < P_SECOND_TOOL_LOOP else 1
        failing_round = rng.randrange(rounds) if "tool_error" in incidents else -1
        retry_round = rng.randrange(rounds) if "retry" in incidents else -1
        for n in range(rounds):
            tool = rng.choice(ODD_TOOL_NAMES) if "odd_name" in incidents and n == 0 else rng.choice(scenario.tools)
            t, messages = self._plan_tool_round(
                root, t, scenario, messages, tool, retry=n == retry_round, fail=n == failing_round, notes=notes
            )

        retrieval = _plan_retrieval(rng, t, scenario, question)
        root.children.append(retrieval)
        t = retrieval.end + _gap(rng)

        answer = self._plan_answer(root, t, scenario, messages, fallback="fallback" in incidents, notes=notes)
        self._plan_evaluations(answer, incidents, notes)
        root.end = answer.end + rng.uniform(0.005, 0.05)

        llm_calls = sum(1 for p in root.walk() if p.attributes.get("gen_ai.operation.name") == "chat")
        summary = RunSummary(index, scenario.service, scenario.run_type, llm_calls, root.end, notes)
        return scenario, root, summary

    def _plan_tool_round(
        self,
        root: SpanPlan,
        t: float,
        scenario: Scenario,
        messages: list[dict],
        tool: str,
        *,
        retry: bool,
        fail: bool,
        notes: list[str],
    ) -> tuple[float, list[dict]]:
        """Planner call (after a rate-limited attempt when `retry`) then the tool it asked for.

        Returns the time after the round and the conversation extended with the tool call and its result.
        """
        rng = self.rng
        model = scenario.planner_model
        if retry:
            failed = _plan_rate_limited_call(rng, t, model, messages)
            root.children.append(failed)
            t = failed.end + rng.uniform(0.5, 2.0)  # client backoff before retrying the same model
            notes.append(f"retry {short_model(model)} (429)")
        planner = _plan_planner_call(rng, t, model, messages, tool)
        root.children.append(planner)
        call = json.loads(planner.attributes["gen_ai.output.messages"])[0]["parts"][-1]
        tool_span = _plan_tool(rng, planner.end + _gap(rng), tool, call["id"], call["arguments"], fail)
        root.children.append(tool_span)
        if tool_span.error:
            notes.append(f"tool error {tool}")
            response = {"error": tool_span.error}
        else:
            response = json.loads(tool_span.attributes["gen_ai.tool.call.result"])
        messages = messages + [
            {"role": "assistant", "parts": [call]},
            {"role": "tool", "parts": [{"type": "tool_call_response", "id": call["id"], "response": response}]},
        ]
        return tool_span.end + _gap(rng), messages

    def _plan_answer(
        self, root: SpanPlan, t: float, scenario: Scenario, messages: list[dict], *, fallback: bool, notes: list[str]
    ) -> SpanPlan:
        """The streamed final answer; when `fallback`, first a timed-out call to the primary model."""
        rng = self.rng
        text = rng.choice(scenario.answers)
        model = scenario.answer_model
        if fallback:
            failed = _plan_timed_out_stream(rng, t, model, messages)
            root.children.append(failed)
            t = failed.end + _gap(rng)
            model = scenario.fallback_model
            notes.append(f"fallback {short_model(scenario.answer_model)}→{short_model(model)}")
        answer = _plan_streamed_answer(rng, t, model, messages, text)
        if fallback:
            answer.link_to = failed
            answer.link_attributes = {"app.link.type": FALLBACK_LINK_TYPE}
        root.children.append(answer)
        return answer

    def _plan_evaluations(self, answer: SpanPlan, incidents: frozenset[str], notes: list[str]) -> None:
        """Groundedness on most answers (about a third fail), relevance sometimes."""
        rng = self.rng
        response_id = answer.attributes["gen_ai.response.id"]
        if rng.random() < P_GROUNDEDNESS:
            p_fail = 0.6 if "tool_error" in incidents else P_UNGROUNDED
            result = _plan_evaluation(rng, "groundedness", response_id, passing=rng.random() >= p_fail)
            answer.evaluations.append(result)
            if result["gen_ai.evaluation.score.label"] == "ungrounded":
                notes.append(f"ungrounded {result['gen_ai.evaluation.score.value']:.2f}")
        if rng.random() < P_RELEVANCE:
            answer.evaluations.append(_plan_evaluation(rng, "relevance", response_id, passing=rng.random() >= 0.2))


# --- emit: replay a plan through the SDK -------------------------------------------


def _ns(base_ns: int, seconds: float) -> int:
    return base_ns + int(round(seconds * 1e9))


def _emit_log(logger, span: trace.Span, timestamp_ns: int, attributes: dict) -> None:
    """One evaluation log record, linked to the evaluated span (trace_id/span_id/flags) via its context.

    `event_name` is the field newer collectors key on; the `event.name`
    attribute is what older receivers and the log data model used before it.
    """
    if not EVALUATION_LOGS_SUPPORTED:
        return
    record = LogRecord(
        timestamp=timestamp_ns,
        context=trace.set_span_in_context(span, Context()),
        severity_number=SeverityNumber.INFO,
        severity_text="INFO",
        attributes={"event.name": EVALUATION_EVENT, **attributes},
        event_name=EVALUATION_EVENT,
    )
    logger.emit(record)


def _emit(plan: SpanPlan, tracer, logger, parent: Context, base_ns: int, emitted: dict[int, trace.Span]) -> None:
    """Start the span, emit its children inside its context, then end it at its planned time."""
    links = []
    if plan.link_to is not None:
        links.append(Link(emitted[id(plan.link_to)].get_span_context(), plan.link_attributes))
    span = tracer.start_span(
        plan.name,
        context=parent,
        kind=plan.kind,
        attributes=plan.attributes,
        links=links,
        start_time=_ns(base_ns, plan.start),
    )
    emitted[id(plan)] = span
    for name, at, attrs in plan.events:
        span.add_event(name, attrs, timestamp=_ns(base_ns, at))
    if plan.error is not None:
        span.set_status(Status(StatusCode.ERROR, plan.error))
    context = trace.set_span_in_context(span, parent)
    for child in plan.children:
        _emit(child, tracer, logger, context, base_ns, emitted)
    for evaluation in plan.evaluations:
        span.add_event(EVALUATION_EVENT, evaluation, timestamp=_ns(base_ns, plan.end))
    span.end(end_time=_ns(base_ns, plan.end))
    for evaluation in plan.evaluations:
        _emit_log(logger, span, _ns(base_ns, plan.end), evaluation)


Providers = Mapping[str, tuple[TracerProvider, LoggerProvider]]


def make_providers(
    span_exporter_factory, log_exporter_factory, *, batch: bool = True
) -> dict[str, tuple[TracerProvider, LoggerProvider]]:
    """One (TracerProvider, LoggerProvider) pair per demo service.

    One pair per service because `service.name` is a resource attribute, and a
    provider has exactly one resource. `batch=False` uses simple (synchronous)
    processors, for tests with in-memory exporters.
    """
    providers = {}
    for service in SERVICES:
        resource = Resource.create(
            {"service.name": service, "service.version": "1.4.2", "deployment.environment.name": "demo"}
        )
        tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        if batch:
            span_processor = BatchSpanProcessor(span_exporter_factory(), schedule_delay_millis=BATCH_DELAY_MS)
            log_processor = BatchLogRecordProcessor(log_exporter_factory(), schedule_delay_millis=BATCH_DELAY_MS)
            tracer_provider.add_span_processor(span_processor)
            logger_provider.add_log_record_processor(log_processor)
        else:
            tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter_factory()))
            logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter_factory()))
        providers[service] = (tracer_provider, logger_provider)
    return providers


def emit_runs(
    providers: Providers,
    count: int | None,
    rng: random.Random,
    *,
    interval: float = 0.0,
    now_ns=time.time_ns,
) -> Iterator[RunSummary]:
    """Plan and emit `count` runs (forever when None), each ending at `now_ns()`; yields their summaries.

    Sleeps `interval` real seconds between runs, never for simulated time.
    """
    planner = DemoPlanner(rng)
    instruments = {
        service: (tracer_provider.get_tracer(INSTRUMENTATION_SCOPE), logger_provider.get_logger(INSTRUMENTATION_SCOPE))
        for service, (tracer_provider, logger_provider) in providers.items()
    }
    index = 0
    while count is None or index < count:
        if index and interval > 0:
            time.sleep(interval)
        index += 1
        scenario, root, summary = planner.plan_run(index)
        tracer, logger = instruments[scenario.service]
        base_ns = now_ns() - _ns(0, root.end)
        _emit(root, tracer, logger, Context(), base_ns, {})
        yield summary


# --- run_demo: real exporters ----------------------------------------------------


class NothingAcknowledged(RuntimeError):
    """Runs were sent and the receiver acknowledged none of their spans (nobody listening, wrong port, bad token)."""


class _ExportWatch:
    """Counts acknowledged span exports; reports the first failure once, instead of the exporter's per-retry log spam.

    With a run count the failure is reported once at the end (NothingAcknowledged),
    not also in mid-run; running until Ctrl-C it is reported as soon as it happens.
    """

    def __init__(self, endpoint: str, out, report_at_once: bool = True):
        self.endpoint = endpoint
        self.out = out
        self.report_at_once = report_at_once
        self.acknowledged = 0
        self._reported = False
        self._lock = threading.Lock()

    def succeeded(self, spans: int) -> None:
        with self._lock:
            self.acknowledged += spans

    def failed(self) -> None:
        with self._lock:
            if self._reported or not self.report_at_once:
                return
            self._reported = True
        _write(self.out, f"demo: could not send spans to {self.endpoint} (is `tracetui` listening there?)")


class _WatchedSpanExporter(SpanExporter):
    """Delegates to the OTLP exporter and tells `_ExportWatch` about failures."""

    def __init__(self, inner: SpanExporter, watch: _ExportWatch):
        self._inner = inner
        self._watch = watch

    def export(self, spans: Sequence) -> SpanExportResult:
        result = self._inner.export(spans)
        if result is SpanExportResult.SUCCESS:
            self._watch.succeeded(len(spans))
        else:
            self._watch.failed()
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def _write(out, line: str) -> None:
    """Print a line; degrade to ASCII on terminals that cannot encode the arrow."""
    try:
        out.write(line + "\n")
    except UnicodeEncodeError:
        out.write(line.replace("→", "->").encode("ascii", "replace").decode("ascii") + "\n")
    out.flush()


def run_demo(
    endpoint: str = DEFAULT_ENDPOINT,
    count: int | None = None,
    *,
    interval: float = 1.0,
    seed: int | None = None,
    token: str | None = None,
    out=sys.stderr,
) -> int:
    """Send `count` agent runs (forever when None, until KeyboardInterrupt) and return the number of runs sent.

    Prints one short line per run to `out` (e.g. 'demo: run 3 ticket-resolution  4 LLM calls
    fallback gpt-4o→claude-sonnet-4  2.4s'). Flushes the exporters (force_flush) before
    returning, and shuts the providers down. Raises NothingAcknowledged when runs were
    sent and the receiver acknowledged none of their spans.
    """
    # Imported here: they pull in grpc, which the unit tests of the planner do not need.
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    # The receiver may answer UNIMPLEMENTED to log exports, and a wrong endpoint
    # makes the exporters log on every retry: silence them (CRITICAL) and let
    # _ExportWatch print a single readable line instead.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)

    headers = {"authorization": f"Bearer {token}"} if token else None
    watch = _ExportWatch(endpoint, out, report_at_once=count is None)
    providers = make_providers(
        lambda: _WatchedSpanExporter(
            OTLPSpanExporter(endpoint=endpoint, insecure=True, headers=headers, timeout=EXPORT_TIMEOUT_S), watch
        ),
        lambda: OTLPLogExporter(endpoint=endpoint, insecure=True, headers=headers, timeout=EXPORT_TIMEOUT_S),
    )
    sent = 0
    try:
        for summary in emit_runs(providers, count, random.Random(seed), interval=interval):
            sent += 1
            _write(out, summary.line())
    except KeyboardInterrupt:
        pass
    finally:
        for tracer_provider, logger_provider in providers.values():
            tracer_provider.force_flush(FLUSH_TIMEOUT_MS)
            logger_provider.force_flush(FLUSH_TIMEOUT_MS)
        for tracer_provider, logger_provider in providers.values():
            tracer_provider.shutdown()
            logger_provider.shutdown()
    if sent and not watch.acknowledged:
        raise NothingAcknowledged(
            f"nothing reached {endpoint} (0 of {fmt_counted(sent, 'run')} acknowledged): "
            f"start a receiver with `{hint('serve')}`, or pass --endpoint"
        )
    return sent

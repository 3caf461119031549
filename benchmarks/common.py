"""Shared pieces of the benchmarks: realistic agent traces, gRPC clients, servers, stats.

Nothing here imports textual. The span factory builds OTLP protobuf messages
directly (not through the SDK) so that building traffic costs the benchmark
as little CPU as possible; the attribute names follow the OpenTelemetry GenAI
semantic conventions, as a real instrumented agent sends them.

Ingest clients send *pre-serialized* requests. Every template request holds
trace ids of the form ``MARKER(8 bytes) + local(8 bytes)``; before each send
the client swaps the marker for a per-request nonce with one ``bytes.replace``
(C speed), so no two requests share a trace id and nothing is deduplicated.
One trace per request is split across two consecutive requests (its early
children at the end of request n, the rest, root included, at the start of
request n + 1) the way the SDK's BatchSpanProcessor splits traces, so the
receiver's "merge into an existing trace row" path is exercised too.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PYTHON = sys.executable

# --- attribute helpers ---------------------------------------------------------------


def _av(value) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, (list, tuple)):
        return AnyValue(array_value=ArrayValue(values=[_av(v) for v in value]))
    return AnyValue(string_value=str(value))


def kvs(attrs: dict) -> list[KeyValue]:
    return [KeyValue(key=k, value=_av(v)) for k, v in attrs.items()]


_WORDS = (
    "the customer order invoice refund billing account payment shipping delivery status "
    "policy request support agent ticket escalation priority context document retrieval "
    "summary answer question please explain why how when where which tool result error "
    "timeout retry model latency token budget cost region warehouse item quantity price "
    "discount coupon subscription renewal cancel upgrade plan premium basic trial email "
    "address phone verification identity secure password reset login session device"
).split()


def _text(rng: random.Random, n_chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < n_chars:
        w = rng.choice(_WORDS)
        out.append(w)
        size += len(w) + 1
    s = " ".join(out)
    return s[:n_chars]


# --- the span factory ----------------------------------------------------------------

MODELS = (("openai", "gpt-4o", "gpt-4o-2024-08-06"), ("anthropic", "claude-sonnet-4", "claude-sonnet-4-20250514"),
          ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18"))  # fmt: skip
TOOLS = ("lookup_order", "refund_payment", "send_email", "search_kb", "get_weather", "create_ticket")
APP_SCOPE = "support-agent"
LLM_SCOPE = "opentelemetry.instrumentation.openai_v2"
SERVICE = "support-agent"


@dataclass
class SpanSpec:
    """A span being planned; turned into a protobuf ``Span`` at the end."""

    span_id: bytes
    parent: bytes | None
    name: str
    kind: int
    start: int
    end: int
    attrs: dict
    scope: str = APP_SCOPE
    events: list = field(default_factory=list)  # (name, time_ns, attrs)
    error: str | None = None


class TraceFactory:
    """Builds realistic agent traces (about 10 spans each) as OTLP protobuf spans.

    LLM spans carry 15-25 attributes including ``gen_ai.input.messages``
    (~2 KB JSON) and ``gen_ai.output.messages`` (~500 B JSON); streaming calls
    have a first-chunk event, some failed calls an ``exception`` event.
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        rng = self.rng
        # A pool of message bodies (system prompts repeat in real traffic, user text varies).
        self._system = [_text(rng, 900) for _ in range(4)]
        self._user = [_text(rng, 700) for _ in range(32)]
        self._answers = [_text(rng, 380) for _ in range(32)]
        self._stack = "Traceback (most recent call last):\n" + "\n".join(
            f'  File "/app/agent/{w}.py", line {rng.randint(10, 400)}, in {w}\n    result = client.{w}(**kwargs)'
            for w in rng.sample(_WORDS, 8)
        )

    # -- content --

    def _input_messages(self) -> str:
        rng = self.rng
        msgs = [
            {"role": "system", "parts": [{"type": "text", "content": rng.choice(self._system)}]},
            {"role": "user", "parts": [{"type": "text", "content": rng.choice(self._user)}]},
            {"role": "assistant", "parts": [{"type": "tool_call", "id": f"call_{rng.getrandbits(40):x}",
                                              "name": rng.choice(TOOLS), "arguments": {"order_id": rng.randint(1, 10**6)}}]},
            {"role": "tool", "parts": [{"type": "tool_call_response", "id": f"call_{rng.getrandbits(40):x}",
                                         "response": _text(rng, 220)}]},
        ]  # fmt: skip
        return json.dumps(msgs)

    def _output_messages(self, finish: str) -> str:
        rng = self.rng
        return json.dumps(
            [
                {
                    "role": "assistant",
                    "parts": [{"type": "text", "content": rng.choice(self._answers)}],
                    "finish_reason": finish,
                }
            ]
        )

    def _llm_attrs(self, streaming: bool, ttft_s: float | None) -> dict:
        rng = self.rng
        provider, model, response_model = rng.choice(MODELS)
        finish = rng.choice(("stop", "stop", "stop", "tool_calls", "length"))
        inp, out = rng.randint(600, 4000), rng.randint(40, 600)
        attrs = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "gen_ai.request.temperature": round(rng.uniform(0, 1), 2),
            "gen_ai.request.max_tokens": rng.choice((512, 1024, 2048)),
            "gen_ai.request.top_p": 1.0,
            "gen_ai.request.stream": streaming,
            "gen_ai.response.model": response_model,
            "gen_ai.response.id": f"chatcmpl-{rng.getrandbits(96):024x}",
            "gen_ai.response.finish_reasons": [finish],
            "gen_ai.usage.input_tokens": inp,
            "gen_ai.usage.output_tokens": out,
            "gen_ai.conversation.id": f"conv-{rng.getrandbits(32):08x}",
            "server.address": "api.openai.com" if provider == "openai" else "api.anthropic.com",
            "server.port": 443,
            "gen_ai.prompt.name": rng.choice(("triage", "answer", "plan")),
            "gen_ai.prompt.version": f"v{rng.randint(1, 9)}",
            "gen_ai.input.messages": self._input_messages(),
            "gen_ai.output.messages": self._output_messages(finish),
        }
        if rng.random() < 0.5:
            attrs["gen_ai.usage.cache_read.input_tokens"] = rng.randrange(0, inp, 64)
        if rng.random() < 0.4:
            attrs["gen_ai.request.seed"] = rng.randint(0, 2**31)
        if ttft_s is not None and rng.random() < 0.5:
            attrs["gen_ai.response.time_to_first_chunk"] = round(ttft_s, 4)
        if rng.random() < 0.3:
            attrs["user.id"] = f"user-{rng.randint(1, 5000)}"
        return attrs

    # -- trace shapes --

    def plan_trace(self, start: int, n_spans: int | None = None) -> list[SpanSpec]:
        """One agent run: root, LLM calls (with HTTP child), retrieval, embeddings, tools."""
        rng = self.rng
        if n_spans is None:
            n_spans = rng.choice((8, 9, 10, 10, 11, 12))
        ids = iter(range(1, 1 << 30))

        def sid() -> bytes:
            return next(ids).to_bytes(8, "big")

        root_id = sid()
        specs: list[SpanSpec] = []
        t = start + rng.randint(1, 5) * 1_000_000
        kinds = ["llm", "retrieval", "embedding", "tool", "llm", "tool", "llm", "http", "tool", "llm", "tool", "llm"]
        for kind in kinds[: n_spans - 1]:
            if kind == "llm":
                dur = rng.randint(300, 6000) * 1_000_000
                streaming = rng.random() < 0.6
                ttft = rng.uniform(0.15, 0.9) if streaming else None
                attrs = self._llm_attrs(streaming, ttft)
                spec = SpanSpec(
                    sid(), root_id, f"chat {attrs['gen_ai.request.model']}", 3, t, t + dur, attrs, LLM_SCOPE
                )
                if streaming:
                    spec.events.append(("gen_ai.content.completion.chunk", t + int(ttft * 1e9), {}))
                if rng.random() < 0.06:
                    spec.error = "RateLimitError"
                    spec.events.append(("exception", t + dur, {
                        "exception.type": "openai.RateLimitError",
                        "exception.message": "Rate limit reached for requests; please retry after 20s",
                        "exception.stacktrace": self._stack,
                    }))  # fmt: skip
                    spec.attrs["error.type"] = "openai.RateLimitError"
            elif kind == "http":
                # An HTTP client span under the previous LLM call.
                parent = next((s for s in reversed(specs) if s.attrs.get("gen_ai.operation.name") == "chat"), None)
                p_start, p_end = (parent.start, parent.end) if parent else (t, t + 5_000_000)
                dur = max(1, (p_end - p_start) - 2_000_000)
                attrs = {"http.request.method": "POST", "url.full": "https://api.openai.com/v1/chat/completions",
                         "server.address": "api.openai.com", "http.response.status_code": 200,
                         "network.protocol.version": "1.1"}  # fmt: skip
                specs.append(
                    SpanSpec(
                        sid(),
                        parent.span_id if parent else root_id,
                        "POST",
                        3,
                        p_start + 1_000_000,
                        p_start + 1_000_000 + dur,
                        attrs,
                        "opentelemetry.instrumentation.httpx",
                    )
                )
                continue
            elif kind == "retrieval":
                dur = rng.randint(20, 400) * 1_000_000
                attrs = {"gen_ai.operation.name": "retrieval", "gen_ai.data_source.id": "kb-billing",
                         "gen_ai.request.top_k": 5, "gen_ai.retrieval.query.text": _text(rng, 80),
                         "db.system.name": "chroma", "retrieval.documents.count": 5}  # fmt: skip
                spec = SpanSpec(sid(), root_id, "retrieval kb-billing", 1, t, t + dur, attrs)
            elif kind == "embedding":
                dur = rng.randint(30, 200) * 1_000_000
                attrs = {"gen_ai.operation.name": "embeddings", "gen_ai.provider.name": "openai",
                         "gen_ai.request.model": "text-embedding-3-small", "gen_ai.usage.input_tokens": rng.randint(8, 60),
                         "gen_ai.embeddings.dimension.count": 1536, "server.address": "api.openai.com"}  # fmt: skip
                spec = SpanSpec(sid(), root_id, "embeddings text-embedding-3-small", 3, t, t + dur, attrs, LLM_SCOPE)
            else:  # tool
                dur = rng.randint(5, 1500) * 1_000_000
                tool = rng.choice(TOOLS)
                attrs = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool, "gen_ai.tool.type": "function",
                         "gen_ai.tool.call.id": f"call_{rng.getrandbits(40):x}",
                         "gen_ai.tool.call.arguments": json.dumps({"order_id": rng.randint(1, 10**6), "note": _text(rng, 60)}),
                         "gen_ai.tool.call.result": json.dumps({"status": "ok", "detail": _text(rng, 120)})}  # fmt: skip
                spec = SpanSpec(sid(), root_id, f"execute_tool {tool}", 1, t, t + dur, attrs)
                if rng.random() < 0.04:
                    spec.error = "ToolError"
                    spec.events.append(("exception", t + dur, {"exception.type": "ToolError",
                                                               "exception.message": "upstream returned 503"}))  # fmt: skip
            specs.append(spec)
            t = spec.end + rng.randint(1, 30) * 1_000_000
        root_attrs = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "ticket-resolution",
            "gen_ai.agent.id": "support-agent/ticket-resolution",
            "gen_ai.conversation.id": f"conv-{rng.getrandbits(32):08x}",
            "session.id": f"sess-{rng.getrandbits(32):08x}",
            "user.id": f"user-{rng.randint(1, 5000)}",
        }
        root = SpanSpec(root_id, None, "invoke_agent ticket-resolution", 1, start, t + 1_000_000, root_attrs)
        if any(s.error for s in specs) and rng.random() < 0.5:
            root.error = "agent failed"
        specs.append(root)
        # The SDK exports spans as they end: children before parents.
        specs.sort(key=lambda s: s.end)
        return specs

    def plan_big_trace(self, start: int, n_spans: int) -> list[SpanSpec]:
        """One long agent run with ``n_spans`` spans: root -> steps -> (LLM, tools, retrieval)."""
        rng = self.rng
        root_id = (1).to_bytes(8, "big")
        specs: list[SpanSpec] = []
        next_id = 2
        t = start + 1_000_000
        while len(specs) < n_spans - 1:
            step_id = next_id.to_bytes(8, "big")
            next_id += 1
            step_start = t
            children = []
            for _ in range(min(rng.randint(5, 15), n_spans - 2 - len(specs))):
                dur = rng.randint(5, 800) * 1_000_000
                if rng.random() < 0.4:
                    attrs = self._llm_attrs(False, None)
                    children.append(SpanSpec(next_id.to_bytes(8, "big"), step_id, f"chat {attrs['gen_ai.request.model']}",
                                             3, t, t + dur, attrs, LLM_SCOPE))  # fmt: skip
                else:
                    tool = rng.choice(TOOLS)
                    children.append(SpanSpec(next_id.to_bytes(8, "big"), step_id, f"execute_tool {tool}", 1, t, t + dur,
                                             {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool}))  # fmt: skip
                next_id += 1
                t += dur + 1_000_000
            specs.append(SpanSpec(step_id, root_id, f"step {len(specs)}", 1, step_start, t,
                                  {"gen_ai.operation.name": "invoke_workflow"}))  # fmt: skip
            specs.extend(children)
        specs = specs[: n_spans - 1]
        specs.append(SpanSpec(root_id, None, "invoke_agent deep-research", 1, start, t + 1_000_000,
                              {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "deep-research"}))  # fmt: skip
        specs.sort(key=lambda s: s.end)
        return specs

    # -- protobuf --

    @staticmethod
    def to_span(spec: SpanSpec, trace_id: bytes) -> Span:
        span = Span(
            trace_id=trace_id,
            span_id=spec.span_id,
            parent_span_id=spec.parent or b"",
            name=spec.name,
            kind=spec.kind,
            start_time_unix_nano=spec.start,
            end_time_unix_nano=spec.end,
            attributes=kvs(spec.attrs),
        )
        for name, t, attrs in spec.events:
            span.events.add(time_unix_nano=t, name=name, attributes=kvs(attrs))
        if spec.error:
            span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=spec.error))
        return span


RESOURCE = Resource(
    attributes=kvs(
        {
            "service.name": SERVICE,
            "service.version": "1.4.2",
            "deployment.environment.name": "staging",
            "telemetry.sdk.language": "python",
            "telemetry.sdk.name": "opentelemetry",
            "telemetry.sdk.version": "1.39.0",
            "host.name": "worker-3",
            "process.pid": 4242,
            "process.runtime.name": "cpython",
            "process.runtime.version": "3.12.4",
        }
    )
)
_SCOPE_VERSIONS = {APP_SCOPE: "1.4.2", LLM_SCOPE: "2.1b0", "opentelemetry.instrumentation.httpx": "0.52b0"}


def build_request(spans: list[tuple[str, Span]]) -> ExportTraceServiceRequest:
    """One ExportTraceServiceRequest: one resource, one ScopeSpans per instrumentation scope."""
    by_scope: dict[str, list[Span]] = {}
    for scope, span in spans:
        by_scope.setdefault(scope, []).append(span)
    scope_spans = [
        ScopeSpans(scope=InstrumentationScope(name=name, version=_SCOPE_VERSIONS.get(name, "")), spans=items)
        for name, items in by_scope.items()
    ]
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(resource=RESOURCE, scope_spans=scope_spans)])


# --- pre-serialized request templates (ingest clients) --------------------------------


@dataclass
class Template:
    data: bytes
    spans: int


#: Marker of the trace ids of the current request / of the trace split from the previous one.
def _markers(rng: random.Random) -> tuple[bytes, bytes]:
    return rng.randbytes(8), rng.randbytes(8)


def build_templates(
    seed: int, count: int, spans_per_request: int, *, split: bool = True, spans_per_trace: int | None = None
) -> tuple[list[Template], bytes, bytes]:
    """``count`` pre-serialized requests of exactly ``spans_per_request`` spans.

    Returns the templates and the two 8-byte markers (current, previous) that
    the sender replaces with per-request nonces. ``split=False``: whole traces
    only. ``spans_per_trace``: every trace that size (else agent runs of 8-12).
    """
    split = split and spans_per_request > 10 and spans_per_trace is None
    factory = TraceFactory(seed)
    rng = random.Random(seed ^ 0x5EED)
    cur, prev = _markers(rng)
    now = time.time_ns()
    # The trace split across consecutive requests: same shape in every template.
    split_trace = factory.plan_trace(now - 60_000_000_000, 10)
    split_tail, split_head = split_trace[:5], split_trace[5:]  # early-ending children | the rest, root last
    split_local = (0).to_bytes(8, "big")
    templates = []
    for n in range(count):
        spans: list[tuple[str, Span]] = []
        if split:
            spans += [(s.scope, factory.to_span(s, prev + split_local)) for s in split_head]
        local = 1
        budget = spans_per_request - len(spans) - (len(split_tail) if split else 0)
        t = now - 50_000_000_000 + n * 200_000_000
        while budget > 0:
            k = min(budget, spans_per_trace or factory.rng.choice((8, 9, 10, 10, 11, 12)))
            if spans_per_trace is None and 0 < budget - k < 3:
                k = budget  # no tiny leftover trace
            specs = factory.plan_trace(t, k)
            trace_id = cur + local.to_bytes(8, "big")
            spans += [(s.scope, factory.to_span(s, trace_id)) for s in specs]
            local += 1
            budget -= k
            t += factory.rng.randint(1, 50) * 1_000_000
        if split:
            spans += [(s.scope, factory.to_span(s, cur + split_local)) for s in split_tail]
        data = build_request(spans).SerializeToString()
        n_ids = data.count(cur) + data.count(prev)
        if n_ids != len(spans):  # a marker also occurs by chance in other bytes: pick again
            return build_templates(seed + 7919, count, spans_per_request, split=split, spans_per_trace=spans_per_trace)
        templates.append(Template(data, len(spans)))
    return templates, cur, prev


def nonce(run_salt: bytes, client: int, seq: int) -> bytes:
    """8 bytes, unique per (run, client, request)."""
    return run_salt[:3] + bytes([client & 0xFF]) + (seq & 0xFFFFFFFF).to_bytes(4, "big")


def materialize(t: Template, cur: bytes, prev: bytes, run_salt: bytes, client: int, seq: int) -> bytes:
    data = t.data.replace(cur, nonce(run_salt, client, seq))
    return data.replace(prev, nonce(run_salt, client, seq - 1))


# --- ingest clients (one process each) -----------------------------------------------


@dataclass
class ClientResult:
    client: int
    requests: int = 0
    acked_spans: int = 0
    errors: dict = field(default_factory=dict)
    latencies_ms: list = field(default_factory=list)
    first_send: float = math.inf
    last_ack: float = 0.0
    failed_spans: int = 0


def _client_main(
    target: str,
    client: int,
    seed: int,
    run_salt: bytes,
    spans_per_request: int,
    n_templates: int,
    rate: float,
    duration: float,
    ready: mp.Barrier,
    go,  # mp.Value('d'): start time (monotonic) set by the parent
    out: mp.Queue,
    spans_per_trace: int | None = None,
) -> None:
    import grpc

    templates, cur, prev = build_templates(seed, n_templates, spans_per_request, spans_per_trace=spans_per_trace)
    channel = grpc.insecure_channel(
        target, options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    )
    export = channel.unary_unary(EXPORT_METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    export(b"", timeout=30)  # connect and warm up (an empty request writes nothing)
    result = ClientResult(client)
    ready.wait()
    while go.value == 0.0:
        time.sleep(0.001)
    start = go.value
    while time.monotonic() < start:
        time.sleep(0.0005)
    deadline = start + duration
    seq = 0
    if rate <= 0:  # closed loop: one export in flight, like the SDK's BatchSpanProcessor
        while time.monotonic() < deadline:
            t = templates[seq % len(templates)]
            data = materialize(t, cur, prev, run_salt, client, seq)
            seq += 1
            _send(export, data, t.spans, time.monotonic(), result)
    else:  # open loop at a fixed rate; latency counted from the scheduled send time
        interval = spans_per_request / rate
        t_next = start + interval * (client / 4.0 % 1.0)  # stagger clients
        lock = threading.Lock()
        inflight = threading.Semaphore(64)
        pending: list = []
        while t_next < deadline:
            now = time.monotonic()
            if now < t_next:
                time.sleep(t_next - now)
            t = templates[seq % len(templates)]
            data = materialize(t, cur, prev, run_salt, client, seq)
            seq += 1
            inflight.acquire()
            fut = export.future(data, timeout=60)
            fut.add_done_callback(_make_done(t.spans, t_next, result, lock, inflight))
            result.first_send = min(result.first_send, t_next)
            pending.append(fut)
            t_next += interval
        for fut in pending:
            try:
                fut.result()
            except Exception:
                pass
        time.sleep(0.05)  # let the last callbacks run
    channel.close()
    out.put(result.__dict__)


def _send(export, data: bytes, n: int, scheduled: float, result: ClientResult) -> None:
    import grpc

    result.first_send = min(result.first_send, scheduled)
    result.requests += 1
    try:
        export(data, timeout=60)
    except grpc.RpcError as exc:
        code = exc.code().name if exc.code() else "?"
        result.errors[code] = result.errors.get(code, 0) + 1
        result.failed_spans += n
        if code == "UNAVAILABLE":
            time.sleep(0.05)
        return
    now = time.monotonic()
    result.acked_spans += n
    result.latencies_ms.append((now - scheduled) * 1000)
    result.last_ack = max(result.last_ack, now)


def _make_done(n: int, scheduled: float, result: ClientResult, lock: threading.Lock, sem: threading.Semaphore):
    def done(fut) -> None:
        now = time.monotonic()
        sem.release()
        with lock:
            result.requests += 1
            exc = fut.exception()
            if exc is not None:
                code = exc.code().name if hasattr(exc, "code") and exc.code() else "?"
                result.errors[code] = result.errors.get(code, 0) + 1
                result.failed_spans += n
                return
            result.acked_spans += n
            result.latencies_ms.append((now - scheduled) * 1000)
            result.last_ack = max(result.last_ack, now)

    return done


@dataclass
class LoadResult:
    clients: list[dict]
    acked: int
    failed: int
    requests: int
    errors: dict
    window_s: float
    latencies_ms: list[float]

    @property
    def acked_rate(self) -> float:
        return self.acked / self.window_s if self.window_s > 0 else 0.0


class Load:
    """Start ``n`` client processes; ``start()`` releases them; ``join()`` collects results."""

    def __init__(self, target: str, *, clients: int = 4, spans_per_request: int = 512, rate: float = 0.0,
                 duration: float = 10.0, seed: int = 1, n_templates: int = 8,
                 spans_per_trace: int | None = None) -> None:  # fmt: skip
        ctx = mp.get_context("spawn")  # no inherited threads or grpc state
        self.n = clients
        self.ready = ctx.Barrier(clients + 1)
        self.go = ctx.Value("d", 0.0)
        self.out = ctx.Queue()
        run_salt = os.urandom(4)
        self.procs = [
            ctx.Process(
                target=_client_main,
                args=(
                    target,
                    i,
                    seed * 1000 + i,
                    run_salt,
                    spans_per_request,
                    n_templates,
                    rate / clients if rate else 0.0,
                    duration,
                    self.ready,
                    self.go,
                    self.out,
                    spans_per_trace,
                ),  # fmt: skip
                daemon=True,
            )
            for i in range(clients)
        ]
        for p in self.procs:
            p.start()

    def wait_ready(self, timeout: float = 120.0) -> None:
        self.ready.wait(timeout)

    def start(self, delay: float = 0.05) -> float:
        t0 = time.monotonic() + delay
        self.go.value = t0
        return t0

    def join(self, timeout: float = 600.0) -> LoadResult:
        results = [self.out.get(timeout=timeout) for _ in self.procs]
        for p in self.procs:
            p.join(10)
        lat: list[float] = []
        errors: dict = {}
        for r in results:
            lat.extend(r["latencies_ms"])
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
        first = min(r["first_send"] for r in results)
        last = max(r["last_ack"] for r in results)
        return LoadResult(
            clients=results,
            acked=sum(r["acked_spans"] for r in results),
            failed=sum(r["failed_spans"] for r in results),
            requests=sum(r["requests"] for r in results),
            errors=errors,
            window_s=max(0.0, last - first),
            latencies_ms=lat,
        )

    def kill(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.kill()


# --- server processes ------------------------------------------------------------------

_READY_RE = re.compile(r"listening grpc=(?P<addr>\S+)")


def tracetui_serve_cmd(db: Path, *extra: str) -> list[str]:
    """``tracetui serve --headless`` over ``db``, gRPC and OTLP/HTTP on ephemeral ports, then ``extra``."""
    return [PYTHON, "-m", "tracetui", "serve", "--headless", "--db", str(db), "--grpc-port", "0", "--http-port", "0",
            *extra]  # fmt: skip


class ServerProc:
    """A server under test in its own process; parses its ready line from stderr."""

    def __init__(self, cmd: list[str], *, env: dict | None = None, cwd: str | None = None) -> None:
        self.cmd = cmd
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            cwd=cwd or "/", env=env, start_new_session=True,  # not the repo: PYTHONPATH may pin another tracetui
        )  # fmt: skip
        self.lines: list[str] = []
        self.addr: str | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if self.addr is None:
                m = _READY_RE.search(line)
                if m:
                    self.addr = m["addr"]
                    self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float = 60.0) -> str:
        self._ready.wait(timeout)
        if self.addr is None:
            raise RuntimeError(f"server did not start: {' '.join(self.cmd)}\n" + "\n".join(self.lines[-20:]))
        return self.addr

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill9(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def is_job_process(cmdline: list[str]) -> bool:
    """A tracetui background job (``python -m tracetui job NAME ...``), not the receiver or a decode worker.

    The rule the ingest figures split a receiver's CPU by: a process of the tree whose command
    line contains the word ``job`` as an argument of its own.
    """
    return " job " in f" {' '.join(cmdline)} "


def proc_status(pid: int | str = "self") -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB; NaN once it is gone. VmHWM starts afresh at exec, unlike the
    ru_maxrss of getrusage and wait4, which carries the parent's RSS at fork time across exec."""
    rss = peak = float("nan")
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return rss, peak
    for line in lines:
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return rss, peak


def _pss(pid: int) -> int:
    """A process's proportional set size in bytes (0 when it is gone or the kernel has no smaps_rollup)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class ProcSampler(threading.Thread):
    """Samples a process tree's memory (peak) and CPU time.

    The tree is the process and all its descendants (tracetui's decode workers
    and their fork server), re-listed at every sample. Memory is the sum of the
    processes' RSS: an upper bound, since pages a worker shares with the fork
    server it came from are counted in both. ``peak_pss`` is the sum of their
    PSS (``/proc/PID/smaps_rollup``: each shared page divided among the
    processes that map it), the tree's real share of memory. CPU of a process
    that exits keeps its last sampled value.
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        import psutil

        self.p = psutil.Process(pid)
        self.interval = interval
        self.peak_rss = 0
        self.peak_pss = 0
        #: Peak RSS of each process of the tree on its own: {pid: (role, bytes)}, role "main" or "child".
        self.peak_by_pid: dict[int, tuple[str, int]] = {}
        self.stop_ev = threading.Event()
        self._cpu_by_pid: dict[int, float] = {}
        #: pid -> whether it is a background job (see ``is_job_process``), decided once per pid.
        self._is_job: dict[int, bool] = {}
        self.cpu0 = self._cpu()
        self._cpu0_by_pid = dict(self._cpu_by_pid)
        self._main0 = self._cpu_by_pid.get(pid, 0.0)
        self.cpu1 = self.cpu0
        self.t0 = time.monotonic()
        self.t1 = self.t0

    def _tree(self) -> list:
        try:
            return [self.p, *self.p.children(recursive=True)]
        except Exception:
            return [self.p]

    def _cpu(self, tree: list | None = None) -> float:
        for proc in tree if tree is not None else self._tree():
            try:
                c = proc.cpu_times()
                self._cpu_by_pid[proc.pid] = c.user + c.system
                if proc.pid not in self._is_job:
                    self._is_job[proc.pid] = is_job_process(proc.cmdline())
            except Exception:
                pass
        return sum(self._cpu_by_pid.values())

    def reset(self) -> None:
        self.cpu0 = self._cpu()
        self._main0 = self._cpu_by_pid.get(self.p.pid, 0.0)
        self._cpu0_by_pid = dict(self._cpu_by_pid)
        self.t0 = time.monotonic()
        self.peak_rss = 0
        self.peak_pss = 0
        self.peak_by_pid = {}

    def run(self) -> None:
        while not self.stop_ev.wait(self.interval):
            if not self.p.is_running():
                return
            tree = self._tree()
            rss = pss = 0
            for proc in tree:
                try:
                    one = proc.memory_info().rss
                except Exception:
                    continue
                rss += one
                pss += _pss(proc.pid)
                role = "main" if proc.pid == self.p.pid else "child"
                self.peak_by_pid[proc.pid] = (role, max(one, self.peak_by_pid.get(proc.pid, (role, 0))[1]))
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.cpu1 = self._cpu(tree)
            self.t1 = time.monotonic()

    def stop(self) -> None:
        self.cpu1 = self._cpu()
        self.t1 = time.monotonic()
        self.stop_ev.set()

    def process_peaks_mb(self) -> list[float]:
        """Each process's own peak RSS in MB, the top process first, then its children largest first
        (tracetui: the receiver, then its ingest workers and multiprocessing's resource tracker)."""
        main = [rss for role, rss in self.peak_by_pid.values() if role == "main"]
        children = sorted((rss for role, rss in self.peak_by_pid.values() if role == "child"), reverse=True)
        return [round(rss / 1e6, 1) for rss in main + children]

    @property
    def cpu_seconds(self) -> float:
        return self.cpu1 - self.cpu0

    @property
    def job_cpu_seconds(self) -> float:
        """CPU of the tree's background job processes (``is_job_process``) since ``reset``."""
        return sum(cpu - self._cpu0_by_pid.get(pid, 0.0) for pid, cpu in self._cpu_by_pid.items()
                   if self._is_job.get(pid))  # fmt: skip

    @property
    def main_cpu_seconds(self) -> float:
        """CPU of the top process alone (tracetui: gRPC, status, checkpoints; not its workers)."""
        return self._cpu_by_pid.get(self.p.pid, self._main0) - self._main0


# --- statistics and the results table ------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def wait_for_quiet(threshold: float = 0.5, max_wait: float = 600.0, *, no_wait: bool = False) -> float:
    """Wait until the 1-minute load average is below ``threshold``; return the load the run starts at.

    Exits with a clear message when it is still higher after ``max_wait`` seconds. ``no_wait``
    (smoke runs) starts at once, whatever the load.
    """
    deadline = time.monotonic() + max_wait
    load = os.getloadavg()[0]
    if not no_wait and load >= threshold:
        print(f"waiting for the 1-minute load average ({load:.2f}) to fall below {threshold} "
              f"(at most {max_wait:.0f} s; --no-wait starts at once)...", flush=True)  # fmt: skip
        while load >= threshold:
            if time.monotonic() >= deadline:
                raise SystemExit(f"the 1-minute load average is still {load:.2f} after {max_wait:.0f} s "
                                 f"(other work on this machine); try later, raise --max-wait, or use "
                                 f"--no-wait for a smoke run whose figures mean less")  # fmt: skip
            time.sleep(5)
            load = os.getloadavg()[0]
    print(f"load average at the start: {load:.2f}" + ("" if load < threshold else f" (not below {threshold})"),
          flush=True)  # fmt: skip
    return load


def db_bytes(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal"):
        p = Path(str(path) + suffix)
        if p.exists():
            total += p.stat().st_size
    return total


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    budget: str = ""
    ok: bool | None = None
    note: str = ""
    #: Set when the ratio is the median of per-round ratios rather than value / baseline.
    ratio_override: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.ratio_override is not None:
            return self.ratio_override
        if self.baseline in (None, 0) or self.baseline != self.baseline:
            return None
        return self.value / self.baseline


def fmt_num(v: float | None, unit: str = "") -> str:
    if v is None or v != v:
        return "-"
    if unit in ("spans/s",):
        s = f"{v:,.0f}"
    elif unit == "MB":
        s = f"{v:,.1f}"
    elif abs(v) >= 100:
        s = f"{v:,.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.2f}"
    return f"{s} {unit}".strip()


def print_table(title: str, figures: list[Figure], file=sys.stdout) -> str:
    rows = [("figure", "value", "baseline", "ratio", "budget", "result")]
    for f in figures:
        base = fmt_num(f.baseline, f.unit) + (
            f" ({f.baseline_label})" if f.baseline_label and f.baseline is not None else ""
        )
        ratio = f"{f.ratio:.2f}x" if f.ratio is not None else "-"
        result = "-" if f.ok is None else ("PASS" if f.ok else "FAIL")
        rows.append(
            (f.name, fmt_num(f.value, f.unit), base, ratio, f.budget or "-", result + (f"  {f.note}" if f.note else ""))
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [f"\n{title}"]
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[j]) if j < 5 else c for j, c in enumerate(r)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  ------")
    text = "\n".join(lines)
    print(text, file=file, flush=True)
    return text


def machine_info() -> dict:
    import platform

    info = {"nproc": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()
        info["mem_gb"] = round(int(mem[1]) / 1024 / 1024, 1)
        info["loadavg"] = tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        pass
    info["tracetui"] = tracetui_source()
    return info


def tracetui_source() -> str:
    """Which tracetui is measured: its directory, and the commit + local edits when it is this repo."""
    import tracetui

    where = Path(tracetui.__file__).resolve().parent.parent
    if where != REPO:
        return str(where)
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "tracetui"],
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return str(where)
    return f"{where} @ {head}" + (f" + {len(dirty.splitlines())} locally changed file(s)" if dirty else "")

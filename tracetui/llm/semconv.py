"""One model of an LLM call, from every instrumentation dialect.

Instrumentation libraries disagree on attribute names, units and shapes (see
``docs/semconv.md``). This module maps them to the canonical
columns of the ``spans`` table. Rules:

* For each canonical field a list of sources is tried in order; the first
  non-empty one wins, and its name is kept as provenance.
* Units are normalized here (time to first token is stored in nanoseconds).
* It runs on the receiver's hot path: one pass over the span's attribute keys,
  values read only for keys we know, and each later step only runs when one of
  its source keys was found (see ``_INDEX``).

Only the scalar fields live here; rendering of messages is the UI's business.

Families added for issue 13, with the versions whose source or captured output was read:

* OpenTelemetry ``opentelemetry-instrumentation-openai-v2`` 2.4b0 with
  ``opentelemetry-util-genai`` 1.1b0 (capture ``otel_v2_current``): plain ``gen_ai.*``;
  it reports neither streaming nor a first token, so both stay None ("not reported").
* Vercel AI SDK 7 with ``@ai-sdk/otel`` 1.0.173 (capture ``vercel_ai_node``):
  ``gen_ai.client.operation.time_to_first_chunk`` in seconds as a span attribute;
  ``invoke_agent`` -> ``step N`` (``gen_ai.operation.name = agent_step``: a chain) -> ``chat``.
* Vercel AI SDK 3-6 (``ai`` 4.3.19 and 5.0.277 ``dist/index.js``; captures made here,
  ``vercel_ai_v4_node`` and ``vercel_ai_v5_node``): ``ai.operationId`` / ``operation.name`` name the
  operation (only ``*.doGenerate`` / ``*.doStream`` / ``*.doEmbed`` are calls to a
  model), ``ai.usage.promptTokens`` / ``completionTokens`` (3-4; 5-6 add
  ``inputTokens`` / ``outputTokens``, ``reasoningTokens``, ``cachedInputTokens``),
  ``ai.model.id`` / ``ai.model.provider`` (``openai.chat``: provider, then API),
  ``ai.response.*``, ``ai.response.msToFirstChunk`` in **milliseconds**.
* LiteLLM 1.110.2 OTel callback (``litellm/integrations/opentelemetry.py``, capture
  ``litellm_otel``): with a current span and without ``USE_OTEL_LITELLM_REQUEST_SPAN``
  it writes each call's attributes onto that span (``litellm.call_id`` marks them);
  otherwise one ``litellm_request`` span per call, with a ``raw_gen_ai_request`` child
  holding the provider's raw request (no call of its own). ``llm.is_streaming`` is the
  string "True"/"False"; ``gen_ai.cost.total_cost`` is a reported cost. It does not say
  when it counted tokens itself; its usage object then has no ``prompt_tokens_details``
  (``streaming_chunk_builder_utils.calculate_usage``), read here as "estimated".
* OpenLIT 1.45.0 (``openlit/__helpers.py``, ``instrumentation/openai``; a capture made
  here): ``telemetry.sdk.name = "openlit"`` on each span; ``gen_ai.server.time_to_first_token``
  in **seconds** (traceAI's attribute of that name is in milliseconds: told apart by
  family, never by size); ``gen_ai.usage.cost = 0`` means its price list lacks the model.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from typing import Any

from tracetui.llm import evals
from tracetui.model.anyvalue import any_value_to_python
from tracetui.model.rows import NORMALIZED_COLUMNS

# --- span kind -----------------------------------------------------------------

_UPPER_KIND = {
    "LLM": "llm",
    "EMBEDDING": "embedding",
    "TOOL": "tool",
    "RETRIEVER": "retriever",
    "RERANKER": "retriever",
    "AGENT": "agent",
    "CHAIN": "chain",
    "EVALUATOR": "evaluator",
    "GUARDRAIL": "chain",
    "PROMPT": "chain",
    "CONVERSATION": "chain",
    "VECTOR_DB": "retriever",
}
_OPERATION_KIND = {
    "chat": "llm",
    "text_completion": "llm",
    "generate_content": "llm",
    "completion": "llm",
    "embeddings": "embedding",
    "embedding": "embedding",
    "retrieval": "retriever",
    "vector_db_retrieve": "retriever",
    "execute_tool": "tool",
    "invoke_agent": "agent",
    "create_agent": "agent",
    "invoke_workflow": "chain",
    "plan": "chain",
    "rerank": "retriever",
    "agent_step": "chain",  # Vercel AI SDK 7: the "step N" span between invoke_agent and chat
}
_TRACELOOP_KIND = {"workflow": "chain", "task": "chain", "agent": "agent", "tool": "tool"}
_LANGSMITH_KIND = {
    "llm": "llm",
    "chain": "chain",
    "tool": "tool",
    "retriever": "retriever",
    "embedding": "embedding",
    "prompt": "chain",
    "parser": "chain",
}

#: Vercel AI SDK 3-6 (``ai.*``): the operation id -> kind. Only the ``do*`` spans are
#: calls to a model; ``ai.generateText`` & co. wrap them (and repeat their summed usage).
_VERCEL_KIND = {
    "ai.generateText": "chain",
    "ai.streamText": "chain",
    "ai.generateObject": "chain",
    "ai.streamObject": "chain",
    "ai.generateText.doGenerate": "llm",
    "ai.streamText.doStream": "llm",
    "ai.generateObject.doGenerate": "llm",
    "ai.streamObject.doStream": "llm",
    "ai.embed": "chain",
    "ai.embedMany": "chain",
    "ai.embed.doEmbed": "embedding",
    "ai.embedMany.doEmbed": "embedding",
    "ai.toolCall": "tool",
}
_VERCEL_OPERATION = "ai.operationId"
#: Vercel's ``operation.name``: the operation id, then the telemetry functionId after a space.
_VERCEL_OPERATION_NAME = "operation.name"

#: (attribute, mapping) in priority order; the value is looked up in the mapping.
_KIND_SOURCES: tuple[tuple[str, dict[str, str]], ...] = (
    ("openinference.span.kind", _UPPER_KIND),
    ("gen_ai.span.kind", _UPPER_KIND),
    ("fi.span.kind", _UPPER_KIND),
    ("traceloop.span.kind", _TRACELOOP_KIND),
    ("langsmith.span.kind", _LANGSMITH_KIND),
    ("gen_ai.operation.name", _OPERATION_KIND),
    ("llm.request.type", _OPERATION_KIND),
    (_VERCEL_OPERATION, _VERCEL_KIND),
    (_VERCEL_OPERATION_NAME, _VERCEL_KIND),
)

# --- scalar fields: canonical name -> attribute sources, first non-empty wins ----

_STRING_FIELDS: dict[str, tuple[str, ...]] = {
    "provider": ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system", "ai.model.provider"),
    # traceAI puts the *response* model in gen_ai.request.model: see _models().
    "request_model": ("gen_ai.request.model", "llm.request.model_name", "ai.model.id"),
    "response_model": ("gen_ai.response.model", "llm.response.model_name", "ai.response.model"),
    "session_id": (
        "gen_ai.conversation.id",
        "session.id",
        "traceloop.association.properties.session_id",
        "langsmith.metadata.session_id",
        "langsmith.metadata.thread_id",
        "langsmith.metadata.conversation_id",
        "langfuse.session.id",  # Langfuse's OTel attribute (its SDKs, and what its docs tell others to set)
        "ai.telemetry.metadata.sessionId",  # Vercel AI SDK: experimental_telemetry.metadata.sessionId (Langfuse docs)
    ),
    "user_id": ("user.id", "traceloop.association.properties.user_id", "gen_ai.user", "llm.user"),
    "prompt_name": (
        "gen_ai.prompt.name",
        "gen_ai.prompt.template.name",
        "llm.prompt_template.name",
        "traceloop.prompt.key",
    ),
    "prompt_version": (
        "gen_ai.prompt.version",
        "gen_ai.prompt.template.version",
        "llm.prompt_template.version",
        "traceloop.prompt.version",
    ),
    "error_type": ("error.type",),
    "response_id": ("gen_ai.response.id", "ai.response.id"),
}
_INT_FIELDS: dict[str, tuple[str, ...]] = {
    "input_tokens": (
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.prompt_tokens",
        "llm.token_count.prompt",
        "ai.usage.inputTokens",  # Vercel AI SDK 5-6
        "ai.usage.promptTokens",  # Vercel AI SDK 3-4 (5-6 write both)
    ),
    "output_tokens": (
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.token_count.completion",
        "ai.usage.outputTokens",
        "ai.usage.completionTokens",
    ),
    "cache_read_tokens": (
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",
        "llm.token_count.prompt_details.cache_read",
        "gen_ai.usage.input_tokens.cache_read",
        "gen_ai.usage.cache_read_tokens",
        "gen_ai.usage.cached_tokens",
        "ai.usage.cachedInputTokens",
    ),
    "cache_write_tokens": (
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
        "llm.token_count.prompt_details.cache_write",
        "gen_ai.usage.input_tokens.cache_write",
        "gen_ai.usage.cache_write_tokens",
    ),
    "reasoning_tokens": (
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.usage.reasoning_tokens",
        "llm.usage.reasoning_tokens",
        "llm.token_count.completion_details.reasoning",
        "gen_ai.usage.output_tokens.reasoning",
        "ai.usage.reasoningTokens",
    ),
    # The output cap the call was made with (compare: equal caps make a fair comparison).
    # OpenInference keeps it inside llm.invocation_parameters: read in _max_tokens().
    "max_tokens": (
        "gen_ai.request.max_tokens",
        "gen_ai.request.max_completion_tokens",
        "llm.request.max_tokens",
        "ai.settings.maxOutputTokens",  # Vercel AI SDK 5-6
        "ai.settings.maxTokens",  # Vercel AI SDK 3-4
    ),
}
#: Time to first token attributes and the factor that turns them into nanoseconds.
_TTFT_SOURCES: tuple[tuple[str, float], ...] = (
    ("gen_ai.response.time_to_first_chunk", 1e9),
    ("gen_ai.client.operation.time_to_first_chunk", 1e9),
    ("gen_ai.latency.time_to_first_token", 1e9),
    ("time_to_first_token_ms", 1e6),
    ("pydantic_ai.time_to_first_token_ms", 1e6),
    ("autogen.time_to_first_token_ms", 1e6),
    ("claude_agent.time_to_first_token_ms", 1e6),
    # Vercel AI SDK 3-6, in milliseconds from the start of the doStream span (one span per attempt)
    ("ai.response.msToFirstChunk", 1e6),
    ("ai.stream.msToFirstChunk", 1e6),  # streamObject
)
_FIRST_TOKEN_EVENTS = frozenset(
    {"First Token Stream Event", "gen_ai.content.completion.chunk", "llm.content.completion.chunk"}
)
#: Streaming flags, bool or the strings "True"/"False" (LiteLLM writes ``llm.is_streaming`` as a string).
_STREAM_FLAGS = (
    "gen_ai.request.stream",
    "gen_ai.is_streaming",
    "llm.is_streaming",
    "langsmith.request.streaming",
)
_FINISH_SOURCES = (
    "gen_ai.response.finish_reasons",
    "llm.finish_reason",
    "gen_ai.response.finish_reason",
    "llm.response.finish_reason",
    "ai.response.finishReason",
)
_FINISH_KEYS = (*_FINISH_SOURCES, "gen_ai.completion.0.finish_reason")
_COST_SOURCES = ("llm.cost.total", "gen_ai.cost.total", "operation.cost", "gen_ai.usage.cost", "gen_ai.cost.total_cost")
#: JSON strings of request parameters that may hold "model" and "stream".
_PARAM_SOURCES = ("llm.invocation_parameters", "gen_ai.request.parameters", "embedding.invocation_parameters")
#: Stringified usage-detail dicts (LangSmith): key in the dict -> canonical field.
_DETAIL_SOURCES = (
    ("gen_ai.usage.input_token_details", {"cache_read": "cache_read_tokens", "cache_creation": "cache_write_tokens"}),
    ("gen_ai.usage.output_token_details", {"reasoning": "reasoning_tokens"}),
)
#: Canonical provider names (OTel gen_ai.provider.name values) for the aliases in use.
PROVIDER_ALIASES = {
    "openai": "openai",
    "anthropic": "anthropic",
    "azure": "azure.ai.openai",
    "az.ai.openai": "azure.ai.openai",
    "azure.ai.openai": "azure.ai.openai",
    "az.ai.inference": "azure.ai.inference",
    "azure.ai.inference": "azure.ai.inference",
    "aws": "aws.bedrock",
    "amazon": "aws.bedrock",
    "aws.bedrock": "aws.bedrock",
    "bedrock": "aws.bedrock",
    "google": "gcp.gen_ai",
    "gemini": "gcp.gemini",
    "gcp.gemini": "gcp.gemini",
    "vertexai": "gcp.vertex_ai",
    "vertex_ai": "gcp.vertex_ai",
    "gcp.vertex_ai": "gcp.vertex_ai",
    "gcp.gen_ai": "gcp.gen_ai",
    "mistralai": "mistral_ai",
    "mistral_ai": "mistral_ai",
    "mistral": "mistral_ai",
    "xai": "x_ai",
    "x_ai": "x_ai",
    "cohere": "cohere",
    "deepseek": "deepseek",
    "groq": "groq",
    "ollama": "ollama",
    "together_ai": "together_ai",
    "hugging_face": "hugging_face",
    "ibm.watsonx.ai": "ibm.watsonx.ai",
    "perplexity": "perplexity",
}
#: Exception events before a successful end mean the call was retried inside the span.
_EXCEPTION_EVENT = "exception"
#: The same span attribute in two units: traceAI documents it in milliseconds, OpenLIT
#: writes seconds (and on non-streamed calls the whole duration). Told apart by family only.
_SERVER_TTFT = "gen_ai.server.time_to_first_token"
#: OpenLIT writes ``telemetry.sdk.name = "openlit"`` on each of its spans (not only the resource).
_SDK_NAME = "telemetry.sdk.name"
#: LiteLLM's id of one call: on a span LiteLLM did not create, that span carries a call's attributes.
_LITELLM_CALL_ID = "litellm.call_id"
#: LiteLLM's own record of the call's usage (a Python repr), read for how the counts were made.
_LITELLM_USAGE = "metadata.usage_object"
LITELLM_SPAN = "litellm_request"

_RESEND = "http.request.resend_count"
#: HTTP client spans: status code (current, then pre-1.23 semconv names) and method.
#: opentelemetry-instrumentation-httpx 0.66b2 still writes the old names by default.
_HTTP_STATUS_KEYS = ("http.response.status_code", "http.status_code")
_HTTP_METHOD_KEYS = ("http.request.method", "http.method")
_HTTP_KEYS = frozenset((*_HTTP_STATUS_KEYS, *_HTTP_METHOD_KEYS, _RESEND))
_SPAN_KIND_CLIENT = 3
_MODEL_NAMES = ("llm.model_name", "embedding.model_name")

# --- which key feeds what --------------------------------------------------------
# Each step of normalize_span after the scan reads a fixed group of keys; a step
# whose group has no key in the span is skipped, which changes nothing since an
# absent key reads as None. Bits of those groups:
_KIND = 1
_TTFT = 2
_STREAM = 4
_FINISH = 8
_COST = 16
_PARAMS = 32
_DETAILS = 64
_MODEL = 128
_SERVER_TTFT_BIT = 256
_RESEND_BIT = 512
_TRACEAI = 1024
_VERCEL = 2048
_LITELLM = 4096
_HTTP = 1 << 20  # far from the other bits: the families add theirs after _TRACEAI
#: What _models() reads: request parameters, model names and traceAI's kind keys.
_MODEL_STEP = _PARAMS | _MODEL | _TRACEAI
#: What _time_to_first_token() reads besides the first chunk event.
_TTFT_STEP = _TTFT | _SERVER_TTFT_BIT
#: What _streaming() reads besides the time to first token.
_STREAM_STEP = _STREAM | _PARAMS | _VERCEL

#: (keys, group bit, the AnyValue field their values usually arrive in).
_GROUPS: tuple[tuple[tuple[str, ...], int, str], ...] = (
    (tuple(key for key, _ in _KIND_SOURCES), _KIND, "string_value"),
    (tuple(key for key, _ in _TTFT_SOURCES), _TTFT, "double_value"),
    (_STREAM_FLAGS, _STREAM, "bool_value"),
    (_FINISH_KEYS, _FINISH, "string_value"),
    (_COST_SOURCES, _COST, "double_value"),
    (_PARAM_SOURCES, _PARAMS, "string_value"),
    (tuple(key for key, _ in _DETAIL_SOURCES), _DETAILS, "string_value"),
    (_MODEL_NAMES, _MODEL, "string_value"),
    ((_SERVER_TTFT,), _SERVER_TTFT_BIT, "double_value"),
    ((_SDK_NAME,), 0, "string_value"),  # read where OpenLIT's units or zeros matter
    ((_RESEND,), _RESEND_BIT, "int_value"),
    (_HTTP_STATUS_KEYS, _HTTP, "int_value"),
    (_HTTP_METHOD_KEYS, _HTTP, "string_value"),
    (("gen_ai.span.kind", "fi.span.kind"), _TRACEAI, "string_value"),  # also kind keys, above
    ((_VERCEL_OPERATION, _VERCEL_OPERATION_NAME), _VERCEL, "string_value"),  # also kind keys, above
    ((_LITELLM_CALL_ID, _LITELLM_USAGE), _LITELLM, "string_value"),
    (tuple(key for keys in _STRING_FIELDS.values() for key in keys), 0, "string_value"),
    (tuple(key for keys in _INT_FIELDS.values() for key in keys), 0, "int_value"),
)
#: ``_READ_AS`` value of keys whose values usually arrive as arrays.
_ARRAY = "array_value"
#: attribute key -> the AnyValue field to try first when reading its value (see normalize_span).
_READ_AS: dict[str, str] = {}
for _keys, _bit, _field in reversed(_GROUPS):  # the first group naming a key picks its field
    _READ_AS.update(dict.fromkeys(_keys, _field))
_READ_AS["gen_ai.response.finish_reasons"] = _ARRAY
_WANTED: frozenset[str] = frozenset(_READ_AS)
if any(key.startswith(evals.ATTRIBUTE_PREFIXES) for key in _WANTED):
    # normalize_span notes evaluation keys for evals.from_span among the other keys only
    raise RuntimeError("a normalized attribute looks like an evaluation attribute")
_INT64 = (1 << 63) - 1


def _scalar(value):
    """Python value of a scalar AnyValue; arrays become lists of scalars, other kinds None."""
    return any_value_to_python(value, scalars_only=True)


def _as_int(value) -> int | None:
    kind = type(value)
    if kind is int:  # the common case first: this runs for every token count
        return value if -_INT64 <= value <= _INT64 else None
    if kind is float:
        return int(value) if value == value and abs(value) < 9e18 else None
    if kind is str:
        text = value.strip()
        try:
            return _as_int(float(text)) if "." in text or "e" in text.lower() else _as_int(int(text))
        except ValueError:
            return None
    return None  # bool, None, lists


def _as_float(value) -> float | None:
    kind = type(value)
    if kind is float or kind is int:
        f = float(value)
        return f if f == f and f not in (_INF, -_INF) else None
    if kind is str:
        try:
            return _as_float(float(value))
        except ValueError:
            return None
    return None


_INF = float("inf")
#: Durations at or above this many nanoseconds (~292 years) do not fit SQLite's integers.
_MAX_NS = float(2**63)


def _as_bool(value) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _first_finish_reason(value) -> str | None:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):  # vLLM sends a JSON string: '["stop"]'
            try:
                value = json.loads(text)
            except ValueError:
                return text or None
        else:
            return text or None
    if isinstance(value, list):
        for item in value:
            if isinstance(item, str) and item:
                return item
    return None


def _json_dict(value) -> dict:
    """A JSON object string (or a Python-repr dict, as LangSmith writes) -> dict; {} otherwise."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str) or not value.lstrip().startswith("{") or len(value) > 100_000:
        return {}
    try:
        parsed = json.loads(value)
    except ValueError:
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return {}
    return parsed if isinstance(parsed, dict) else {}


def canonical_provider(value: str) -> str:
    """OTel spelling of a provider name (``Azure`` -> ``azure.ai.openai``); unknown names lower-cased."""
    key = value.strip().lower()
    known = PROVIDER_ALIASES.get(key)
    if known is None and "." in key:
        # the Vercel AI SDK names the provider and its API: "openai.chat", "anthropic.messages"
        known = PROVIDER_ALIASES.get(key.split(".", 1)[0])
    return known or key


def normalize_span(span) -> tuple:
    """Canonical LLM fields of one OTLP span, in ``NORMALIZED_COLUMNS`` order."""
    return read_span(span)[0]


def read_span(span) -> tuple[tuple, int]:
    """``normalize_span``, and what ``evals.from_span`` needs to know of the keys it read.

    The second value is one of ``evals.SCAN_*``: whether any attribute key can carry
    an evaluation, so that ``evals.from_span(span, scan)`` need not read every key
    again (the receiver's decoder calls both for every span).
    """
    found: dict[str, object] = {}
    evaluation_keys = False
    read_as = _KEY_READ.get
    for kv in span.attributes:
        key = kv.key
        field = read_as(key)
        if field is None:  # a key not seen before
            field = _learn_key(key)
        if field is False:  # a key we do not read
            continue
        if field is True:  # an evaluation attribute: evals.from_span reads it (see read_span)
            evaluation_keys = True
            continue
        value = kv.value
        if field is _ARRAY:
            found[key] = _array(value)
            continue
        # WhichOneof is slow in upb: read the field the value usually arrives in. A
        # non-default value there means it is the oneof member that is set (proto3:
        # the others read as defaults); a default one may be anything, so it takes
        # the general path. Either way the result is _scalar(value).
        raw = getattr(value, field)
        found[key] = raw if raw else _scalar(value)
    events = span.events
    links = span.links
    scan = _SCAN_KEYS if evaluation_keys else _SCAN_EVENTS if events else _SCAN_NOTHING

    if not found:
        if not events and not links and span.name != "llm_request":
            return _EMPTY, scan
    elif len(found) == 1 and not events and not links:
        # A tool, agent, chain or retriever span: its one known key names the kind
        # (gen_ai.operation.name = execute_tool). With no other known key, no events
        # and no links every other column is empty whatever the rest of the span
        # holds, so the row depends on that key and value only: computed once. (Only
        # when the value names a kind; else the span name may decide it: llm_request.)
        ((key, value),) = found.items()
        kind_of = _KIND_OF.get(key)
        if kind_of is not None and kind_of(value) is not None:
            values = _KIND_ONLY.get((key, value))
            if values is None:
                values = _normalize(span, found, events, links)
                if len(_KIND_ONLY) < 1024:  # values come from clients: bound the cache
                    _KIND_ONLY[(key, value)] = values
            return values, scan
    if found and not events and not links and found.keys() <= _HTTP_KEYS:
        return _http_only(span, found), scan
    return _normalize(span, found, events, links), scan


def _http_status(span, found: dict[str, object]) -> int | None:
    """The status of an HTTP client span (0 when it got no response); None for any other span."""
    if span.kind != _SPAN_KIND_CLIENT:
        return None  # a server span, or an LLM span where a library copied the status (LiteLLM)
    for key in _HTTP_STATUS_KEYS:
        status = _as_int(found.get(key))
        if status is not None and 0 < status < 1000:
            return status
    return 0 if any(found.get(key) for key in _HTTP_METHOD_KEYS) else None


def _http_only(span, found: dict[str, object]) -> tuple:
    """The row of a span whose only known keys are HTTP ones: status and resend count, nothing else."""
    status = _http_status(span, found)
    resend = _as_int(found.get(_RESEND))
    if status is None and not resend:
        return _EMPTY
    row = list(_EMPTY)
    row[_C_HTTP_STATUS] = status
    if resend and resend > 0:
        row[_C_RESEND_COUNT] = resend
    return tuple(row)


def _learn_key(key: str) -> bool:
    """Whether an attribute key we do not read may carry an evaluation; remembered for the next spans."""
    may_be_evaluation = key.startswith(_EVALUATION_PREFIXES)
    if len(_KEY_READ) < _KEY_READ_LIMIT:  # keys come from clients: bound what is remembered
        _KEY_READ[key] = may_be_evaluation
    return may_be_evaluation


def _array(value) -> object:
    """_scalar(value) of a value that is usually an array, without WhichOneof on each element."""
    values = value.array_value.values
    if not values:  # no array at all, or an empty one
        return _scalar(value)
    # Same reasoning as in normalize_span: a non-empty string_value is the element's value.
    return [v.string_value or _scalar(v) for v in values]


def _normalize(span, found: dict[str, object], events, links) -> tuple:
    """normalize_span once the known keys are read: ``found`` maps each to its value.

    The steps run in a fixed order: each reads what the earlier ones decided (the
    kind fallback reads the token counts, streaming reads the first token, decode
    time reads both), and provenance is stored as JSON in the order its entries
    were made. A step whose source keys are absent (``groups``) is skipped, which
    changes nothing, since an absent key reads as None.
    """
    row: list = [None] * _WIDTH
    # "kind" comes first in the provenance, as before the keys below are looked at;
    # the placeholder keeps its place and is dropped if no kind is found.
    provenance: dict[str, str | None] = {"kind": None}
    groups = _rank_sources(found, row, provenance)
    _identify_call(span, found, row, provenance, groups)
    if groups & _DETAILS:
        _token_details(found, row, provenance)
    if row[_C_KIND] is None:
        _kind_from_token_counts(row, provenance)
    # LiteLLM's callback writes a call onto the app's current span when there is one
    # (litellm >= 1.81 unless USE_OTEL_LITELLM_REQUEST_SPAN=true): an exception event there
    # belongs to one of those calls, not to an earlier attempt of this one.
    on_foreign_span = groups & _LITELLM and _LITELLM_CALL_ID in found and span.name != LITELLM_SPAN

    first_event_ns = None
    if events:
        first_event_ns = _failed_attempts_and_first_chunk(span, events, row, provenance, on_foreign_span)
    # Timing counts from the start of the attempt that succeeded (the span's start without a retry).
    attempt_start = span.start_time_unix_nano + (row[_C_ATTEMPT_OFFSET_NS] or 0)
    ttft_ns = streaming = None
    if groups & _TTFT_STEP or first_event_ns is not None:
        ttft_ns = _time_to_first_token(span, found, provenance, groups, first_event_ns, attempt_start)
    if groups & _STREAM_STEP or ttft_ns is not None:
        streaming = _streaming(found, provenance, groups, ttft_ns)

    if groups & _FINISH:
        _finish_reason(found, row, provenance)
    if groups & _COST:
        _reported_cost(found, row, provenance)
    if groups & _RESEND_BIT:
        _resend_count(found, row)
    if groups & _LITELLM:
        _litellm(found, row, provenance, streaming, on_foreign_span, events)
    if groups & _HTTP:
        row[_C_HTTP_STATUS] = _http_status(span, found)
    if links:
        _link_span_id(links, row)

    if ttft_ns is not None:
        _decode_speed(span, row, ttft_ns, attempt_start)
    row[_C_TTFT_NS] = ttft_ns
    if streaming is not None:
        row[_C_STREAMING] = int(streaming)
    if provenance:
        row[_C_PROVENANCE] = _provenance_json(provenance)
    return tuple(row)


def _rank_sources(found: dict[str, object], row: list, provenance: dict[str, str | None]) -> int:
    """Fill the ranked fields (kind, strings, token counts) from their best source; returns the groups present.

    One pass over the keys present: each key notes its groups of sources (which later
    steps run) and feeds its field; the best-ranked source with a usable value wins
    (first non-empty, in order), whatever order the keys arrived in.
    """
    groups = 0
    ranks = [_UNRANKED] * _WIDTH
    for key, raw in found.items():
        bits, slot, name, rank, convert = _INDEX[key]
        groups |= bits
        if slot is None or ranks[slot] < rank:
            continue
        value = convert(raw)
        if value is not None:
            ranks[slot] = rank
            row[slot] = value
            provenance[name] = key
    return groups


def _identify_call(span, found: dict[str, object], row: list, provenance: dict[str, str | None], groups: int) -> None:
    """The kind a span name implies, the canonical provider, the models, the bare error type."""
    if row[_C_KIND] is None:
        if span.name == "llm_request":  # vLLM's server span
            row[_C_KIND], provenance["kind"] = "llm", "name:llm_request"
        else:
            del provenance["kind"]
    provider = row[_C_PROVIDER]
    if provider:
        row[_C_PROVIDER] = PROVIDER_ALIASES.get(provider) or canonical_provider(provider)
    if groups & _MODEL_STEP:
        _models(found, row, provenance, groups)
        if row[_C_MAX_TOKENS] is None and groups & _PARAMS:
            _max_tokens(found, row, provenance)
    error_type = row[_C_ERROR_TYPE]
    # The official OpenAI instrumentation writes "<class 'openai.APIError'>".
    if error_type and error_type.startswith("<class '") and error_type.endswith("'>"):
        row[_C_ERROR_TYPE] = error_type[8:-2]


def _token_details(found: dict[str, object], row: list, provenance: dict[str, str | None]) -> None:
    """Cache and reasoning token counts from LangSmith's usage-detail dicts, where no attribute gave them."""
    for key, detail_fields in _DETAIL_SOURCES:
        details = _json_dict(found.get(key))
        for detail_key, name in detail_fields.items():
            value = _as_int(details.get(detail_key))
            if row[_C[name]] is None and value is not None:
                row[_C[name]], provenance[name] = value, f"{key}.{detail_key}"


def _kind_from_token_counts(row: list, provenance: dict[str, str | None]) -> None:
    """A span of no known kind that counts tokens is a call to a model."""
    if row[_C_INPUT_TOKENS] is not None or row[_C_OUTPUT_TOKENS] is not None:
        row[_C_KIND], provenance["kind"] = "llm", "heuristic:token counts"


def _failed_attempts_and_first_chunk(
    span, events, row: list, provenance: dict[str, str | None], on_foreign_span
) -> int | None:
    """Read the span's events: the retry offset (into the row), the error type they name; returns the first chunk's time.

    Exception events before a successful end mean earlier attempts failed inside this
    span: the last one's offset from the span's start is where the final attempt began.
    """
    start = span.start_time_unix_nano
    attempt_offset = 0
    first_event_ns = None
    failed = None  # read from the status at the first exception event only
    exception_type = None
    for event in events:
        name = event.name
        if name == _EXCEPTION_EVENT:
            if failed is None:
                failed = span.status.code == 2
            if exception_type is None:
                for kv in event.attributes:
                    if kv.key == "exception.type":
                        exception_type = _scalar(kv.value)
                        break
            if not failed and not on_foreign_span:
                attempt_offset = max(attempt_offset, event.time_unix_nano - start)
        elif first_event_ns is None and name in _FIRST_TOKEN_EVENTS:
            first_event_ns = event.time_unix_nano
            provenance["ttft"] = f"event:{name}"
    if (
        (failed or on_foreign_span)
        and row[_C_ERROR_TYPE] is None
        and isinstance(exception_type, str)
        and exception_type
    ):
        row[_C_ERROR_TYPE], provenance["error_type"] = exception_type, "event:exception"
    if attempt_offset:
        provenance["retry"] = "event:exception before success"
        row[_C_ATTEMPT_OFFSET_NS] = attempt_offset
    return first_event_ns


def _time_to_first_token(
    span, found: dict[str, object], provenance: dict[str, str | None], groups: int, first_event_ns, attempt_start: int
) -> int | None:
    """Nanoseconds to the first token: a reported figure first, else the first chunk event after the attempt's start."""
    ttft_ns = None
    if groups & _TTFT:
        for key, factor in _TTFT_SOURCES:
            raw = found.get(key)
            value = None if raw is None else _as_float(raw)
            if value is not None and 0 <= value * factor < _MAX_NS:  # 1e300 s is garbage, not a span's worth
                ttft_ns, provenance["ttft"] = int(value * factor), key
                break
    if ttft_ns is None and groups & _SERVER_TTFT_BIT:
        ttft_ns = _server_ttft(found, provenance)
    if ttft_ns is None and first_event_ns is not None:  # "ttft" in provenance is the event's
        if first_event_ns >= attempt_start:
            ttft_ns = first_event_ns - attempt_start
            if span.dropped_events_count:
                # The SDK dropped events: the first chunk we have may not be the first one sent.
                provenance["ttft"] = f"{provenance['ttft']} ({span.dropped_events_count} events dropped: may be late)"
        else:
            del provenance["ttft"]
    return ttft_ns


def _streaming(found: dict[str, object], provenance: dict[str, str | None], groups: int, ttft_ns) -> bool | None:
    """Whether the call was streamed: a flag, the request parameters, Vercel's operation, else a first token seen."""
    streaming = None
    if groups & _STREAM:
        for key in _STREAM_FLAGS:
            raw = found.get(key)
            value = None if raw is None else _as_bool(raw)
            if value is not None:
                streaming, provenance["streaming"] = value, key
                break
    if streaming is None and groups & _PARAMS:
        for key in _PARAM_SOURCES:
            value = _json_dict(found.get(key)).get("stream") if '"stream"' in str(found.get(key, "")) else None
            if isinstance(value, bool):
                streaming, provenance["streaming"] = value, f"{key}.stream"
                break
    if streaming is None and groups & _VERCEL:
        streaming = _vercel_streaming(found, provenance)
    if streaming is None and ttft_ns is not None:
        streaming, provenance["streaming"] = True, provenance["ttft"]
    return streaming


def _finish_reason(found: dict[str, object], row: list, provenance: dict[str, str | None]) -> None:
    """The first finish reason of the first source that has one."""
    for key in _FINISH_KEYS:
        raw = found.get(key)
        finish = None if raw is None else _first_finish_reason(raw)
        if finish:
            row[_C_FINISH_REASON], provenance["finish_reason"] = finish, key
            break


def _reported_cost(found: dict[str, object], row: list, provenance: dict[str, str | None]) -> None:
    """A cost the span reports itself (pricing fills the others later)."""
    for key in _COST_SOURCES:
        raw = found.get(key)
        value = None if raw is None else _as_float(raw)
        if value == 0 and key == "gen_ai.usage.cost" and found.get(_SDK_NAME) == "openlit":
            continue  # OpenLIT writes 0 for a model missing from its price list (get_chat_model_cost)
        if value is not None and value >= 0:
            row[_C_COST_USD], row[_C_COST_SOURCE], provenance["cost"] = value, "reported", key
            break


def _resend_count(found: dict[str, object], row: list) -> None:
    """How many times an HTTP client resent the request (only a positive count is kept)."""
    resend = _as_int(found[_RESEND])
    if resend and resend > 0:
        row[_C_RESEND_COUNT] = resend


def _link_span_id(links, row: list) -> None:
    """The span the first link points at (an evaluator's target, a fallback's failed call)."""
    link_span_id = links[0].span_id
    if len(link_span_id) == 8:
        row[_C_LINK_SPAN_ID] = link_span_id


def _decode_speed(span, row: list, ttft_ns: int, attempt_start: int) -> None:
    """Decode time (first token to end) and output tokens per second, when the span ends after its first token."""
    end = span.end_time_unix_nano
    if end >= attempt_start + ttft_ns:
        decode_ns = row[_C_DECODE_NS] = end - attempt_start - ttft_ns
        output = row[_C_OUTPUT_TOKENS]
        if output and decode_ns > 0:
            row[_C_TOKENS_PER_S] = output / (decode_ns / 1e9)


def _server_ttft(found: dict[str, object], provenance: dict[str, str | None]) -> int | None:
    """``gen_ai.server.time_to_first_token`` as a span attribute, in the unit of the family that wrote it.

    traceAI: milliseconds (its kind attribute ``gen_ai.span.kind`` marks its spans).
    OpenLIT (``telemetry.sdk.name = "openlit"`` on the span): seconds, counted from the
    moment the SDK handed back the stream (openlit 1.45.0 ``TracedSyncStream.__init__``),
    so after any retry inside the SDK; on a non-streamed call it is the whole call's
    duration, which is no first token. Any other family: unread.
    """
    if "gen_ai.span.kind" in found:
        factor, source = 1e6, _SERVER_TTFT + " (ms, traceAI)"
    elif found.get(_SDK_NAME) == "openlit" and _as_bool(found.get("gen_ai.request.stream")) is not False:
        factor, source = 1e9, _SERVER_TTFT + " (s, OpenLIT: from the stream's start)"
    else:
        return None
    value = _as_float(found[_SERVER_TTFT])
    if value is None or not 0 < value * factor < _MAX_NS:  # OpenLIT writes 0.0 when no chunk came
        return None
    provenance["ttft"] = source
    return int(value * factor)


def _vercel_streaming(found: dict[str, object], provenance: dict[str, str | None]) -> bool | None:
    """Vercel AI SDK 3-6: ``doStream`` is a streamed call to the model, ``doGenerate`` is not.

    Each is one HTTP attempt (a 429 is a span of its own), so provenance ``attempts`` says that
    a call without a failed one before it had no retry (tracetui.llm.timing.retry_note).
    """
    key = _VERCEL_OPERATION if _VERCEL_OPERATION in found else _VERCEL_OPERATION_NAME
    operation = found.get(key)
    if not isinstance(operation, str):
        return None
    operation = operation.split(" ", 1)[0]
    if operation.endswith((".doStream", ".doGenerate")):
        provenance["streaming"] = provenance["attempts"] = key
        return operation.endswith(".doStream")
    return None


#: What a LiteLLM usage object looks like when LiteLLM counted the tokens itself: its
#: ``calculate_usage`` (litellm_core_utils/streaming_chunk_builder_utils.py, 1.110.2) falls
#: back to ``token_counter`` when no chunk of a stream carried usage, and builds no
#: ``prompt_tokens_details`` then; a provider's usage (OpenAI) always has them.
_LITELLM_ESTIMATED = "'prompt_tokens_details': None"


def _litellm(
    found: dict[str, object], row: list, provenance: dict[str, str | None], streaming, foreign, events
) -> None:
    """LiteLLM's OTel callback: calls written onto the app's span, merged calls, its own token estimates."""
    if foreign:
        # The span keeps its name (and the app's other attributes); it is also an LLM call of the run.
        # Its scope is the app's tracer: "library" names the instrumentation scope that wrote the
        # call (LiteLLM's own, tracetui.llm.timing.library_name), for what it did not report.
        row[_C_KIND] = "llm"
        provenance["library"] = "litellm"
        merged = _litellm_merged(row, events)
        if merged:
            provenance["kind"] = f"attributes of several LiteLLM calls merged onto the app's span ({merged})"
            provenance["merged"] = merged
        else:
            source = provenance.get("kind", "?")
            provenance["kind"] = f"LiteLLM wrote a call's attributes onto the app's span ({source})"
    usage = found.get(_LITELLM_USAGE)
    if streaming and isinstance(usage, str) and _LITELLM_ESTIMATED in usage:
        note = " (estimated: LiteLLM counted them itself, the provider sent no usage)"
        for name in ("input_tokens", "output_tokens"):
            if row[_C[name]] is not None and name in provenance:
                provenance[name] = f"{provenance[name]}{note}"
                provenance["tokens_estimated"] = _LITELLM_USAGE


def _litellm_merged(row: list, events) -> str | None:
    """Why the attributes on one span cannot be one call's (None when they can).

    OTel keeps the last value written to each attribute, so a second call's attributes
    overwrite the first's only where both wrote one: an error beside a finished answer, or
    a response model that is not the requested one, is two calls showing through.
    """
    reasons = []
    requested, answered_by = row[_C_REQUEST_MODEL], row[_C_RESPONSE_MODEL]
    # "azure/my-deployment", "bedrock/..." name a deployment or route, not the model that answers
    if requested and answered_by and "/" not in requested and not _same_model(requested, answered_by):
        reasons.append(f"request model {requested}, response model {answered_by}")
    failed = row[_C_ERROR_TYPE] is not None or any(event.name == _EXCEPTION_EVENT for event in events)
    if failed and (row[_C_FINISH_REASON] is not None or row[_C_OUTPUT_TOKENS] is not None):
        reasons.append("an error beside a finished answer")
    return "; ".join(reasons) or None


def _same_model(requested: str, answered_by: str) -> bool:
    """``gpt-4o-mini`` is answered by ``gpt-4o-mini-2024-07-18``."""
    a, b = requested.lower(), answered_by.lower()
    return a.startswith(b) or b.startswith(a)


def _as_text(value) -> str | None:
    """A string field's value: text, or a number sent where text was expected (prompt versions, ids)."""
    if type(value) is str:
        return value or None
    if type(value) is int:
        return str(value)
    return None


def _kind_converter(mapping: dict[str, str]):
    def kind_of(value) -> str | None:
        """The kind a kind attribute's value names (None: not one we know)."""
        if isinstance(value, str) and value:
            return mapping.get(value) or mapping.get(value.upper()) or mapping.get(value.lower())
        return None

    return kind_of


def _first_word(kind_of):
    """A kind converter reading only the value's first word (Vercel's ``operation.name``: "ai.streamText myFn")."""

    def first_word_kind(value) -> str | None:
        return kind_of(value.split(" ", 1)[0]) if isinstance(value, str) else None

    return first_word_kind


#: Position of each column in the row normalize_span returns.
_C = {name: i for i, name in enumerate(NORMALIZED_COLUMNS)}
_WIDTH = len(NORMALIZED_COLUMNS)
#: The rank of a field no source has filled yet (any source's rank is lower).
_UNRANKED = 1 << 30
_C_KIND = _C["llm_kind"]
_C_PROVIDER = _C["provider"]
_C_REQUEST_MODEL = _C["request_model"]
_C_RESPONSE_MODEL = _C["response_model"]
_C_INPUT_TOKENS = _C["input_tokens"]
_C_OUTPUT_TOKENS = _C["output_tokens"]
_C_STREAMING = _C["streaming"]
_C_TTFT_NS = _C["ttft_ns"]
_C_FINISH_REASON = _C["finish_reason"]
_C_ERROR_TYPE = _C["error_type"]
_C_COST_USD = _C["cost_usd"]
_C_COST_SOURCE = _C["cost_source"]
_C_PROVENANCE = _C["provenance"]
_C_LINK_SPAN_ID = _C["link_span_id"]
_C_RESEND_COUNT = _C["resend_count"]
_C_ATTEMPT_OFFSET_NS = _C["attempt_offset_ns"]
_C_DECODE_NS = _C["decode_ns"]
_C_TOKENS_PER_S = _C["tokens_per_s"]
_C_HTTP_STATUS = _C["http_status"]
_C_MAX_TOKENS = _C["max_tokens"]

#: attribute key -> (field name, rank, converter) of the ranked field it is a source of:
#: the kind, and every string and int field. Provenance names the kind "kind".
_RANKED: dict[str, tuple[str, int, Callable[[Any], object]]] = {}
#: kind attribute -> the kind its value names (None: not one we know)
_KIND_OF = {key: _kind_converter(mapping) for key, mapping in _KIND_SOURCES}
_KIND_OF[_VERCEL_OPERATION_NAME] = _first_word(_KIND_OF[_VERCEL_OPERATION_NAME])
for _rank, _key in enumerate(_KIND_OF):
    _RANKED[_key] = ("kind", _rank, _KIND_OF[_key])
for _fields, _convert in ((_STRING_FIELDS, _as_text), (_INT_FIELDS, _as_int)):
    for _name, _keys in _fields.items():
        for _rank, _key in enumerate(_keys):
            if _key in _RANKED:  # normalize_span lets each key feed one ranked field
                raise RuntimeError(f"{_key} is a source of two fields")
            _RANKED[_key] = (_name, _rank, _convert)
#: attribute key -> (bits of its groups, row position, name, rank and converter of its
#: ranked field; position None, name "" and converter None when it feeds none). The converter
#: is Any: normalize_span calls it only once it has seen a position, which mypy cannot follow.
_INDEX: dict[str, tuple[int, int | None, str, int, Any]] = {}
for _key in _WANTED:
    _ranked = _RANKED.get(_key)
    _ranked_name, _ranked_rank, _ranked_convert = ("", 0, None) if _ranked is None else _ranked
    _bits = 0
    for _keys, _bit, _field in _GROUPS:
        if _key in _keys:
            _bits |= _bit
    _INDEX[_key] = (
        _bits,
        None if _ranked is None else _C["llm_kind" if _ranked_name == "kind" else _ranked_name],
        _ranked_name,
        _ranked_rank,
        _ranked_convert,
    )
#: (kind key, value) -> the row of a span whose only known key it is (see normalize_span).
_KIND_ONLY: dict[tuple[str, object], tuple] = {}
_EVALUATION_PREFIXES = evals.ATTRIBUTE_PREFIXES
#: attribute key -> how normalize_span treats it: the AnyValue field to read first (the
#: keys of _READ_AS), or for the other keys seen so far whether they may carry an
#: evaluation (True) or not (False). One look-up per key instead of a prefix test.
_KEY_READ: dict[str, str | bool] = dict(_READ_AS)
_KEY_READ_LIMIT = 8192
_SCAN_NOTHING, _SCAN_EVENTS, _SCAN_KEYS = evals.SCAN_NOTHING, evals.SCAN_EVENTS, evals.SCAN_KEYS


_PROVENANCE_CACHE: dict[tuple, str] = {}


def _provenance_json(provenance: dict[str, str | None]) -> str:
    """JSON of a provenance map; the same few maps repeat for every span of a library, so cache them."""
    key = (*provenance, *provenance.values())  # names then sources: as unambiguous as the items, cheaper
    text = _PROVENANCE_CACHE.get(key)
    if text is None:
        text = json.dumps(provenance, separators=(",", ":"))
        if len(_PROVENANCE_CACHE) < 4096:
            _PROVENANCE_CACHE[key] = text
    return text


def _models(found: dict[str, object], row: list, provenance: dict[str, str | None], groups: int) -> None:
    """Request and response model, with each family's quirks."""
    # traceAI writes the *response* model into gen_ai.request.model (and
    # omits it on streaming and failed calls); the request model is in the
    # request parameters.
    if groups & _TRACEAI and row[_C_REQUEST_MODEL] and provenance.get("request_model") == "gen_ai.request.model":
        if not row[_C_RESPONSE_MODEL]:
            row[_C_RESPONSE_MODEL], provenance["response_model"] = (
                row[_C_REQUEST_MODEL],
                ("gen_ai.request.model (traceAI: response model)"),
            )
        row[_C_REQUEST_MODEL] = None
        provenance.pop("request_model", None)
    if not row[_C_REQUEST_MODEL] and groups & _PARAMS:
        for key in _PARAM_SOURCES:
            model = _json_dict(found.get(key)).get("model") if '"model"' in str(found.get(key, "")) else None
            if isinstance(model, str) and model:
                row[_C_REQUEST_MODEL], provenance["request_model"] = model, f"{key}.model"
                break
    # OpenInference: llm.model_name is the response model when known, else the request model.
    if groups & _MODEL:
        for key in _MODEL_NAMES:
            model = found.get(key)
            if isinstance(model, str) and model:
                if not row[_C_RESPONSE_MODEL] and key == "llm.model_name":
                    row[_C_RESPONSE_MODEL], provenance["response_model"] = model, key
                if not row[_C_REQUEST_MODEL]:
                    row[_C_REQUEST_MODEL], provenance["request_model"] = model, key
                break


def _max_tokens(found: dict[str, object], row: list, provenance: dict[str, str | None]) -> None:
    """The output cap from the request parameters' JSON (OpenInference, some OpenLLMetry versions)."""
    for key in _PARAM_SOURCES:
        text = found.get(key)
        if not isinstance(text, str) or "max_" not in text:
            continue
        params = _json_dict(text)
        for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
            value = params.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _INT64:
                row[_C_MAX_TOKENS], provenance["max_tokens"] = value, f"{key}.{name}"
                return


_EMPTY: tuple = (None,) * len(NORMALIZED_COLUMNS)


# --- where each field is read from, for backends that query attributes where they are stored ------


def attribute_sources(field: str) -> tuple[str, ...]:
    """The span attributes a canonical string or integer field is read from, first non-empty first
    (``request_model``, ``session_id``, ``input_tokens``...; KeyError for a field read otherwise)."""
    found = _STRING_FIELDS.get(field)
    return found if found is not None else _INT_FIELDS[field]


#: JSON request parameters that may name the model, and OpenInference's model name attributes
#: (``llm.model_name``: the response model when known, else the request model).
PARAM_SOURCES = _PARAM_SOURCES
MODEL_NAMES = _MODEL_NAMES
#: Time-to-first-token attributes and the factor from their unit to nanoseconds, in priority order.
TTFT_SOURCES = _TTFT_SOURCES
#: Span events whose time is the first token's arrival.
FIRST_TOKEN_EVENTS = _FIRST_TOKEN_EVENTS
#: ``gen_ai.server.time_to_first_token``: milliseconds from traceAI (spans with ``gen_ai.span.kind``),
#: seconds from OpenLIT (``telemetry.sdk.name = "openlit"``), unread from anyone else.
SERVER_TTFT = _SERVER_TTFT
#: Attributes whose value names an LLM kind (model call, tool, agent...), and the HTTP client keys.
KIND_KEYS = tuple(key for key, _ in _KIND_SOURCES)
#: (attribute, value -> kind) in priority order (a value is looked up as is, upper-cased, lower-cased;
#: ``operation.name`` by its first word).
KIND_SOURCES = _KIND_SOURCES
HTTP_KEYS = _HTTP_KEYS

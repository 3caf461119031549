"""One model of an LLM call, from every instrumentation dialect.

Instrumentation libraries disagree on attribute names, units and shapes (see
``shared/reference/semconv.md``). This module maps them to the canonical
columns of the ``spans`` table. Rules:

* For each canonical field a list of sources is tried in order; the first
  non-empty one wins, and its name is kept as provenance.
* Units are normalized here (time to first token is stored in nanoseconds).
* It runs on the receiver's hot path: one pass over the span's attribute keys,
  values read only for keys we know.

Only the scalar fields live here; rendering of messages is the UI's business.
"""

from __future__ import annotations

import ast
import json

#: Canonical columns, in the order ``normalize_span`` returns them.
NORMALIZED_COLUMNS: tuple[str, ...] = (
    "llm_kind",
    "provider",
    "request_model",
    "response_model",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "streaming",
    "ttft_ns",
    "finish_reason",
    "session_id",
    "user_id",
    "prompt_name",
    "prompt_version",
    "error_type",
    "cost_usd",
    "cost_source",
    "provenance",
    # span-local timing (DESIGN.md section 6); cross-span facts (retry, fallback) come later
    "link_span_id",
    "resend_count",
    "attempt_offset_ns",
    "decode_ns",
    "tokens_per_s",
    # joins evaluation results that name the response instead of the span
    "response_id",
)

KINDS = ("llm", "embedding", "tool", "retriever", "agent", "chain", "evaluator", "other")

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

#: (attribute, mapping) in priority order; the value is looked up in the mapping.
_KIND_SOURCES: tuple[tuple[str, dict[str, str]], ...] = (
    ("openinference.span.kind", _UPPER_KIND),
    ("gen_ai.span.kind", _UPPER_KIND),
    ("fi.span.kind", _UPPER_KIND),
    ("traceloop.span.kind", _TRACELOOP_KIND),
    ("langsmith.span.kind", _LANGSMITH_KIND),
    ("gen_ai.operation.name", _OPERATION_KIND),
    ("llm.request.type", _OPERATION_KIND),
)

# --- scalar fields: canonical name -> attribute sources, first non-empty wins ----

_STRING_FIELDS: dict[str, tuple[str, ...]] = {
    "provider": ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"),
    # traceAI puts the *response* model in gen_ai.request.model: see _models().
    "request_model": ("gen_ai.request.model", "llm.request.model_name"),
    "response_model": ("gen_ai.response.model", "llm.response.model_name"),
    "session_id": (
        "gen_ai.conversation.id",
        "session.id",
        "traceloop.association.properties.session_id",
        "langsmith.metadata.session_id",
        "langsmith.metadata.thread_id",
        "langsmith.metadata.conversation_id",
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
    "response_id": ("gen_ai.response.id",),
}
_INT_FIELDS: dict[str, tuple[str, ...]] = {
    "input_tokens": ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"),
    "output_tokens": ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion"),
    "cache_read_tokens": (
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",
        "llm.token_count.prompt_details.cache_read",
        "gen_ai.usage.input_tokens.cache_read",
        "gen_ai.usage.cache_read_tokens",
        "gen_ai.usage.cached_tokens",
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
)
_FIRST_TOKEN_EVENTS = frozenset(
    {"First Token Stream Event", "gen_ai.content.completion.chunk", "llm.content.completion.chunk"}
)
_STREAM_FLAGS = ("gen_ai.request.stream", "gen_ai.is_streaming", "llm.is_streaming", "langsmith.request.streaming")
_FINISH_SOURCES = (
    "gen_ai.response.finish_reasons",
    "llm.finish_reason",
    "gen_ai.response.finish_reason",
    "llm.response.finish_reason",
)
_FINISH_KEYS = (*_FINISH_SOURCES, "gen_ai.completion.0.finish_reason")
_COST_SOURCES = ("llm.cost.total", "gen_ai.cost.total", "operation.cost", "gen_ai.usage.cost")
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
_FI_TTFT_MS = "gen_ai.server.time_to_first_token"  # traceAI: a span attribute in milliseconds

_WANTED: frozenset[str] = frozenset(
    [key for key, _ in _KIND_SOURCES]
    + [key for keys in _STRING_FIELDS.values() for key in keys]
    + [key for keys in _INT_FIELDS.values() for key in keys]
    + [key for key, _ in _TTFT_SOURCES]
    + list(_STREAM_FLAGS)
    + list(_FINISH_SOURCES)
    + list(_COST_SOURCES)
    + list(_PARAM_SOURCES)
    + [key for key, _ in _DETAIL_SOURCES]
    + [_FI_TTFT_MS, "http.request.resend_count", "llm.model_name", "embedding.model_name", "gen_ai.completion.0.finish_reason"]
)
_INT64 = (1 << 63) - 1


def _scalar(value):
    """Python value of a scalar AnyValue; arrays become lists of scalars."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "array_value":
        return [_scalar(v) for v in value.array_value.values]
    return None


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
    return PROVIDER_ALIASES.get(key, key)


def normalize_span(span) -> tuple:
    """Canonical LLM fields of one OTLP span, in ``NORMALIZED_COLUMNS`` order."""
    found: dict[str, object] = {}
    for kv in span.attributes:
        key = kv.key
        if key in _WANTED:
            found[key] = _scalar(kv.value)
    if not found and span.name != "llm_request" and not span.events and not span.links:
        return _EMPTY
    provenance: dict[str, str] = {}

    kind = None
    for key, mapping in _KIND_SOURCES:
        value = found.get(key)
        if isinstance(value, str) and value:
            kind = mapping.get(value) or mapping.get(value.upper()) or mapping.get(value.lower())
            if kind:
                provenance["kind"] = key
                break
    if kind is None and span.name == "llm_request":  # vLLM's server span
        kind, provenance["kind"] = "llm", "name:llm_request"

    # One pass over the keys present: each may feed a canonical field; the
    # best-ranked source with a usable value wins (first non-empty, in order).
    best: dict[str, tuple[int, str, object]] = {}
    for key, raw in found.items():
        for name, rank, convert in _SOURCE_INDEX.get(key, ()):
            current = best.get(name)
            if current is not None and current[0] < rank:
                continue
            value = convert(raw)
            if value is not None:
                best[name] = (rank, key, value)
    strings: dict[str, str | None] = dict.fromkeys(_STRING_FIELDS)
    ints: dict[str, int | None] = dict.fromkeys(_INT_FIELDS)
    for name, (_rank, key, value) in best.items():
        (strings if name in strings else ints)[name] = value  # type: ignore[index]
        provenance[name] = key
    if strings["provider"]:
        strings["provider"] = canonical_provider(strings["provider"])
    _models(found, strings, provenance)
    if strings["error_type"]:
        # The official OpenAI instrumentation writes "<class 'openai.APIError'>".
        text = strings["error_type"]
        if text.startswith("<class '") and text.endswith("'>"):
            strings["error_type"] = text[8:-2]

    for key, fields in _DETAIL_SOURCES:
        details = _json_dict(found.get(key))
        for detail_key, name in fields.items():
            value = _as_int(details.get(detail_key))
            if ints[name] is None and value is not None:
                ints[name], provenance[name] = value, f"{key}.{detail_key}"

    if kind is None and (ints["input_tokens"] is not None or ints["output_tokens"] is not None):
        kind, provenance["kind"] = "llm", "heuristic:token counts"

    # Exception events before a successful end: earlier attempts failed inside this span.
    attempt_offset = 0
    exception_type = None
    first_event_ns = None
    if span.events:
        for event in span.events:
            name = event.name
            if name == _EXCEPTION_EVENT:
                if exception_type is None:
                    for kv in event.attributes:
                        if kv.key == "exception.type":
                            exception_type = _scalar(kv.value)
                            break
                if span.status.code != 2:
                    attempt_offset = max(attempt_offset, event.time_unix_nano - span.start_time_unix_nano)
            elif first_event_ns is None and name in _FIRST_TOKEN_EVENTS:
                first_event_ns = event.time_unix_nano
                provenance["ttft"] = f"event:{name}"
    if strings["error_type"] is None and span.status.code == 2 and isinstance(exception_type, str) and exception_type:
        strings["error_type"], provenance["error_type"] = exception_type, "event:exception"
    if attempt_offset:
        provenance["retry"] = "event:exception before success"
    attempt_start = span.start_time_unix_nano + attempt_offset

    ttft_ns = None
    for key, factor in _TTFT_SOURCES:
        raw = found.get(key)
        value = None if raw is None else _as_float(raw)
        if value is not None and value >= 0:
            ttft_ns, provenance["ttft"] = int(value * factor), key
            break
    if ttft_ns is None and "gen_ai.span.kind" in found:
        value = _as_float(found.get(_FI_TTFT_MS))
        if value is not None and value >= 0:
            ttft_ns, provenance["ttft"] = int(value * 1e6), _FI_TTFT_MS + " (ms)"
    if ttft_ns is None and first_event_ns is not None and first_event_ns >= attempt_start:
        ttft_ns = first_event_ns - attempt_start
        if span.dropped_events_count:
            # The SDK dropped events: the first chunk we have may not be the first one sent.
            provenance["ttft"] += f" ({span.dropped_events_count} events dropped: may be late)"
    if ttft_ns is None:
        provenance.pop("ttft", None)

    streaming = None
    for key in _STREAM_FLAGS:
        raw = found.get(key)
        value = None if raw is None else _as_bool(raw)
        if value is not None:
            streaming, provenance["streaming"] = value, key
            break
    if streaming is None:
        for key in _PARAM_SOURCES:
            value = _json_dict(found.get(key)).get("stream") if '"stream"' in str(found.get(key, "")) else None
            if isinstance(value, bool):
                streaming, provenance["streaming"] = value, f"{key}.stream"
                break
    if streaming is None and ttft_ns is not None:
        streaming, provenance["streaming"] = True, provenance["ttft"]

    finish = None
    for key in _FINISH_KEYS:
        raw = found.get(key)
        finish = None if raw is None else _first_finish_reason(raw)
        if finish:
            provenance["finish_reason"] = key
            break

    cost = None
    for key in _COST_SOURCES:
        raw = found.get(key)
        value = None if raw is None else _as_float(raw)
        if value is not None and value >= 0:
            cost, provenance["cost"] = value, key
            break

    resend = _as_int(found.get("http.request.resend_count"))
    link_span_id = span.links[0].span_id if span.links and len(span.links[0].span_id) == 8 else None

    decode_ns = tokens_per_s = None
    end = span.end_time_unix_nano
    if ttft_ns is not None and end >= attempt_start + ttft_ns:
        decode_ns = end - attempt_start - ttft_ns
        output = ints["output_tokens"]
        if output and decode_ns > 0:
            tokens_per_s = output / (decode_ns / 1e9)

    return (
        kind,
        strings["provider"],
        strings["request_model"],
        strings["response_model"],
        ints["input_tokens"],
        ints["output_tokens"],
        ints["cache_read_tokens"],
        ints["cache_write_tokens"],
        ints["reasoning_tokens"],
        None if streaming is None else int(streaming),
        ttft_ns,
        finish,
        strings["session_id"],
        strings["user_id"],
        strings["prompt_name"],
        strings["prompt_version"],
        strings["error_type"],
        cost,
        "reported" if cost is not None else None,
        _provenance_json(provenance) if provenance else None,
        link_span_id,
        resend if resend and resend > 0 else None,
        attempt_offset or None,
        decode_ns,
        tokens_per_s,
        strings["response_id"],
    )


def _as_text(value) -> str | None:
    """A string field's value: text, or a number sent where text was expected (prompt versions, ids)."""
    if type(value) is str:
        return value or None
    if type(value) is int:
        return str(value)
    return None


#: attribute key -> ((canonical field, rank, converter), ...): the sources of every scalar field.
_SOURCE_INDEX: dict[str, list[tuple[str, int, object]]] = {}
for _name, _keys in _STRING_FIELDS.items():
    for _rank, _key in enumerate(_keys):
        _SOURCE_INDEX.setdefault(_key, []).append((_name, _rank, _as_text))
for _name, _keys in _INT_FIELDS.items():
    for _rank, _key in enumerate(_keys):
        _SOURCE_INDEX.setdefault(_key, []).append((_name, _rank, _as_int))


_PROVENANCE_CACHE: dict[tuple, str] = {}


def _provenance_json(provenance: dict[str, str]) -> str:
    """JSON of a provenance map; the same few maps repeat for every span of a library, so cache them."""
    key = tuple(provenance.items())
    text = _PROVENANCE_CACHE.get(key)
    if text is None:
        text = json.dumps(provenance, separators=(",", ":"))
        if len(_PROVENANCE_CACHE) < 4096:
            _PROVENANCE_CACHE[key] = text
    return text


def _models(found: dict[str, object], strings: dict[str, str | None], provenance: dict[str, str]) -> None:
    """Request and response model, with each family's quirks."""
    if "gen_ai.span.kind" in found or "fi.span.kind" in found:
        # traceAI writes the *response* model into gen_ai.request.model (and
        # omits it on streaming and failed calls); the request model is in the
        # request parameters.
        if strings["request_model"] and provenance.get("request_model") == "gen_ai.request.model":
            if not strings["response_model"]:
                strings["response_model"], provenance["response_model"] = strings["request_model"], (
                    "gen_ai.request.model (traceAI: response model)"
                )
            strings["request_model"] = None
            provenance.pop("request_model", None)
    if not strings["request_model"]:
        for key in _PARAM_SOURCES:
            model = _json_dict(found.get(key)).get("model") if '"model"' in str(found.get(key, "")) else None
            if isinstance(model, str) and model:
                strings["request_model"], provenance["request_model"] = model, f"{key}.model"
                break
    # OpenInference: llm.model_name is the response model when known, else the request model.
    for key in ("llm.model_name", "embedding.model_name"):
        model = found.get(key)
        if isinstance(model, str) and model:
            if not strings["response_model"] and key == "llm.model_name":
                strings["response_model"], provenance["response_model"] = model, key
            if not strings["request_model"]:
                strings["request_model"], provenance["request_model"] = model, key
            break


_EMPTY: tuple = (None,) * len(NORMALIZED_COLUMNS)

"""Span attributes (and the log records attached to a span) -> a readable conversation.

Pure functions, no UI imports. LLM instrumentation libraries record prompts and
completions in many shapes (``docs/semconv.md``, "Messages"):

1. OTel parts schema: ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (JSON
   string or structured list) plus ``gen_ai.system_instructions``;
2. traceAI: OpenInference-style flattening *under the OTel key*,
   ``gen_ai.input.messages.{i}.message.*``;
3. OpenInference: ``llm.input_messages.{i}.message.*`` / ``llm.output_messages.*``, and the
   legacy completions API ``llm.prompts.{i}.prompt.text`` / ``llm.choices.{i}.completion.text``;
4. old OpenLLMetry: ``gen_ai.prompt.{i}.*`` / ``gen_ai.completion.{i}.*``;
5. log records: ``gen_ai.client.inference.operation.details`` and the deprecated
   per-message events ``gen_ai.{system,user,assistant,tool}.message`` / ``gen_ai.choice``;
6. opaque blobs: ``input.value`` / ``output.value``, ``traceloop.entity.input`` /
   ``.output``, LangSmith ``gen_ai.prompt`` / ``gen_ai.completion`` (JSON), old Logfire
   ``request_data`` / ``response_data``.

Several libraries record the same conversation twice (traceAI and OpenInference add
``input.value`` / ``output.value``; the official OTel instrumentation can put content on the
span *and* in a log event). For each direction (input, output) the most structured source
that yields anything wins and the others are ignored, so nothing is shown twice.

Nothing here raises on malformed data: a source that cannot be understood is skipped, and
text that should have been JSON is shown as it is.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["ChatMessage", "ToolCall", "extract_messages", "reassemble", "retrieval_documents", "MAX_CONTENT_CHARS"]

#: Longer message contents (and tool-call arguments) are cut here, with a note of the size.
MAX_CONTENT_CHARS = 100_000
#: Strings longer than this are never parsed as JSON (shown as raw, truncated text).
_MAX_JSON_CHARS = 16 * 1024 * 1024
#: Flattened keys are split into at most this many levels below the index.
_MAX_KEY_DEPTH = 16
#: Placeholders quote at most this much of a URI / id.
_MAX_REF_CHARS = 200
#: At most this many messages / parts / tool calls per list are looked at.
_MAX_ITEMS = 10_000
#: Ids, names, roles and finish reasons are cut to this length.
_MAX_SCALAR_CHARS = 1_000
#: Parts nested inside parts (tool results holding parts ...) are followed this deep.
_MAX_PART_DEPTH = 3

#: Span kinds whose ``input.value`` / ``output.value`` are not a conversation.
_NON_CHAT_KINDS = frozenset({"TOOL", "EMBEDDING", "RETRIEVER", "RERANKER"})
_KIND_KEYS = ("openinference.span.kind", "gen_ai.span.kind", "fi.span.kind")

_LOG_DETAILS = "gen_ai.client.inference.operation.details"
_LOG_MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
_LOG_CHOICE = "gen_ai.choice"

#: LangChain message types -> chat roles.
_LC_ROLES = {
    "human": "user",
    "humanmessage": "user",
    "ai": "assistant",
    "aimessage": "assistant",
    "aimessagechunk": "assistant",
    "system": "system",
    "systemmessage": "system",
    "tool": "tool",
    "toolmessage": "tool",
    "function": "function",
    "functionmessage": "function",
    "chat": "user",
    "chatmessage": "user",
}


@dataclass(slots=True)
class ToolCall:
    id: str | None
    name: str | None
    arguments: str | None  # as text (JSON text kept as-is)


@dataclass(slots=True)
class ChatMessage:
    role: str  # "system", "user", "assistant", "tool", or what the library said
    content: str  # text parts joined with "\n"; "" if none
    tool_calls: list[ToolCall]  # model-side tool calls
    tool_call_id: str | None  # for tool results
    name: str | None
    finish_reason: str | None
    direction: str  # "input" or "output"
    source: str  # the attribute / event the message came from


# --- small, total helpers -----------------------------------------------------------


def _clip(text: str) -> str:
    if len(text) > MAX_CONTENT_CHARS:
        return f"{text[:MAX_CONTENT_CHARS]}… ({len(text)} chars)"
    return text


def _dumps(value: object) -> str:
    """JSON text for a structured value; never raises."""
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (ValueError, TypeError, RecursionError):
        try:
            return str(value)
        except Exception:  # recursion in repr, hostile __str__
            return f"[unrenderable {type(value).__name__}]"


def _text(value: object) -> str:
    """Any value as display text: strings as they are, the rest as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return _dumps(value)


def _opt_str(value: object) -> str | None:
    """A scalar as a short string, or None for missing/empty/structured values."""
    if value is None or isinstance(value, dict | list):
        return None
    text = value if isinstance(value, str) else _text(value)
    return text[:_MAX_SCALAR_CHARS] if text else None


def _args_text(value: object) -> str | None:
    if value is None:
        return None
    return _clip(_text(value))


def _parse_json(value: object) -> tuple[bool, object]:
    """(True, parsed) when ``value`` is a JSON string; (False, value) otherwise."""
    if not isinstance(value, str) or len(value) > _MAX_JSON_CHARS:
        return False, value
    stripped = value.lstrip()
    if not stripped or stripped[0] not in '[{"':
        return False, value
    try:
        return True, json.loads(value)
    except (ValueError, RecursionError, TypeError):
        return False, value


def _structured(value: object) -> object:
    """A structured value as is; a JSON string parsed; anything else unchanged."""
    return _parse_json(value)[1]


def _items(value: object) -> list:
    """A list capped at _MAX_ITEMS; a non-list becomes []."""
    if isinstance(value, list):
        return value[:_MAX_ITEMS]
    return []


def _is_index(segment: str) -> bool:
    return 0 < len(segment) <= 18 and segment.isascii() and segment.isdigit()


# --- flattened keys -----------------------------------------------------------------


class _Node(dict):
    """A branch built from dotted keys (as opposed to a dict that was an attribute value)."""

    __slots__ = ()


def _finish(node: object) -> object:
    if not isinstance(node, _Node):
        return node
    if node and all(isinstance(k, int) for k in node):
        return [_finish(node[k]) for k in sorted(node)]
    return {str(k): _finish(v) for k, v in node.items()}


def reassemble(attributes: dict[str, object], prefix: str) -> list[dict]:
    """Flattened ``prefix.{i}.rest`` keys -> list (by index i, sorted numerically) of nested
    dicts built from the dotted rest; nested ``.{j}.`` levels become lists too.

    Gaps in the indexes close up; keys whose index is not a number, and keys that collide
    with one already placed (``a.b`` = 1 and ``a.b.c`` = 2), are skipped.
    """
    if not isinstance(attributes, dict) or not isinstance(prefix, str):
        return []
    head = prefix + "."
    roots: dict[int, _Node] = {}
    for key, value in attributes.items():
        if not isinstance(key, str) or not key.startswith(head):
            continue
        index, sep, tail = key[len(head) :].partition(".")
        if not sep or not tail or not _is_index(index):
            continue
        node = roots.setdefault(int(index), _Node())
        segments = tail.split(".", _MAX_KEY_DEPTH - 1)
        for segment in segments[:-1]:
            k: int | str = int(segment) if _is_index(segment) else segment
            child = node.get(k)
            if child is None:
                child = node[k] = _Node()
            elif not isinstance(child, _Node):
                break  # a leaf is already here
            node = child
        else:
            last = segments[-1]
            k = int(last) if _is_index(last) else last
            node.setdefault(k, value)
    out = []
    for root in sorted(roots):
        item = _finish(roots[root])
        if isinstance(item, dict):
            out.append(item)
    return out


# --- one message, whatever its shape ------------------------------------------------


class _Acc:
    """What one message's parts add up to."""

    __slots__ = ("texts", "tool_calls", "tool_call_id")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.tool_calls: list[ToolCall] = []
        self.tool_call_id: str | None = None

    def text(self, value: object) -> None:
        text = _text(value)
        if text:
            self.texts.append(text)


def _tool_call(value: Any) -> ToolCall | None:
    """OpenAI ``{id, function{name, arguments}}``, flat ``{id, name, arguments}``,
    OpenInference ``{tool_call: {...}}``, LangChain ``{id, name, args}``, Anthropic ``input``,
    Vercel AI SDK ``{toolCallId, toolName, args}`` (``input`` from ai@5)."""
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("tool_call"), dict):
        value = value["tool_call"]
    function = value.get("function")
    if isinstance(function, dict):
        name, arguments = function.get("name"), function.get("arguments")
    else:
        name = value.get("name", value.get("toolName"))
        arguments = value.get("arguments")
        if arguments is None:
            arguments = value.get("args", value.get("input"))
    call_id = value.get("id")
    if call_id is None:
        call_id = value.get("call_id", value.get("toolCallId"))
    if call_id is None and name is None and arguments is None:
        return None
    return ToolCall(_opt_str(call_id), _opt_str(name), _args_text(arguments))


def _media(kind: str, part: dict) -> str:
    label = _opt_str(part.get("mime_type")) or _opt_str(part.get("modality")) or kind
    return label[:_MAX_REF_CHARS]


def _ref(value: object) -> str:
    text = _text(value)
    if text.startswith("data:"):
        return text[: text.find(",")] if "," in text[:_MAX_REF_CHARS] else "data:…"
    return text if len(text) <= _MAX_REF_CHARS else text[:_MAX_REF_CHARS] + "…"


def _url_of(value: object) -> str | None:
    """``{"url": ...}``, ``{"image": {"url": ...}}`` (OpenInference), or a plain string."""
    for _ in range(3):
        if isinstance(value, str):
            return value
        if not isinstance(value, dict):
            return None
        if "url" in value:
            value = value["url"]
        elif "image" in value:
            value = value["image"]
        elif "source" in value:  # Anthropic image source
            src = value["source"]
            if isinstance(src, dict) and src.get("type") == "url":
                value = src.get("url")
            else:
                return None
        else:
            return None
    return value if isinstance(value, str) else None


def _part(part: Any, acc: _Acc, depth: int = 0) -> None:
    """One content part, from the OTel parts schema or an OpenAI / Anthropic / OpenInference
    content list."""
    if not isinstance(part, dict):
        acc.text(part)
        return
    if isinstance(part.get("message_content"), dict):  # OpenInference contents.{j}.message_content
        part = part["message_content"]
    kind = part.get("type")
    kind = kind.lower() if isinstance(kind, str) else None
    if kind in ("text", "input_text", "output_text", None) and ("content" in part or "text" in part):
        acc.text(part.get("content", part.get("text")))
    elif kind in ("reasoning", "thinking", "redacted_thinking"):
        body = part.get("content", part.get("thinking", part.get("text")))
        acc.texts.append(f"[reasoning] {_text(body)}" if body is not None else "[reasoning]")
    elif kind in ("tool_call", "function_call", "custom_tool_call", "tool_use", "server_tool_call", "server_tool_use",
                  "tool-call"):  # fmt: skip
        call = _tool_call(part)
        if kind == "server_tool_call" and call is not None and call.arguments is None:
            call.arguments = _args_text(part.get("server_tool_call"))
        if call is not None:
            acc.tool_calls.append(call)
    elif kind in ("tool_call_response", "function_call_output", "tool_result", "server_tool_call_response",
                  "tool-result"):  # fmt: skip
        call_id = part.get("id", part.get("call_id", part.get("tool_use_id", part.get("toolCallId"))))
        if acc.tool_call_id is None:
            acc.tool_call_id = _opt_str(call_id)
        for key in ("response", "result", "output", "content", "server_tool_call_response"):
            if key in part:
                _content(part[key], acc, depth + 1)
                break
    elif kind == "blob":
        acc.texts.append(f"[{_media('binary', part)} blob]")
    elif kind == "uri":
        acc.texts.append(f"[{_media('uri', part)}: {_ref(part.get('uri'))}]")
    elif kind == "file":
        file_id = part.get("file_id", part.get("id"))
        acc.texts.append(
            f"[{_media('file', part)} file {_ref(file_id)}]"
            if file_id is not None
            else f"[{_media('file', part)} file]"
        )
    elif kind in ("image_url", "image", "input_image"):
        url = _url_of(part.get("image_url", part.get("image", part)))
        acc.texts.append(f"[image: {_ref(url)}]" if url else "[image]")
    elif kind in ("input_audio", "audio"):
        acc.texts.append("[audio]")
    elif kind == "refusal":
        acc.text(part.get("refusal", part.get("content")))
    elif isinstance(part.get("content"), str) or isinstance(part.get("text"), str):
        acc.text(part.get("content", part.get("text")))
    elif kind:
        acc.texts.append(f"[{kind[:_MAX_REF_CHARS]} part]")
    else:
        acc.text(part)


def _content(value: object, acc: _Acc, depth: int = 0) -> None:
    """A message's ``content``: a string, a list of parts, or one part."""
    if value is None:
        return
    if isinstance(value, list) and depth < _MAX_PART_DEPTH:
        for item in _items(value):
            if isinstance(item, list):
                _content(item, acc, depth + 1)
            else:
                _part(item, acc, depth)
    elif isinstance(value, dict) and depth < _MAX_PART_DEPTH:
        _part(value, acc, depth)
    else:
        acc.text(value)


def _lc_unwrap(obj: dict) -> tuple[dict, str | None]:
    """A serialized LangChain message (``{"lc": 1, "id": [..., "HumanMessage"], "kwargs": {...}}``
    or ``{"type": "human", "data": {...}}``) -> (fields, role)."""
    if isinstance(obj.get("kwargs"), dict) and ("lc" in obj or "id" in obj):
        ids = obj.get("id")
        cls = ids[-1] if isinstance(ids, list) and ids and isinstance(ids[-1], str) else ""
        kwargs = obj["kwargs"]
        role = _LC_ROLES.get(cls.lower()) or _LC_ROLES.get(str(kwargs.get("type", "")).lower())
        return kwargs, role
    if isinstance(obj.get("data"), dict) and isinstance(obj.get("type"), str) and obj["type"].lower() in _LC_ROLES:
        return obj["data"], _LC_ROLES[obj["type"].lower()]
    return obj, None


_KNOWN_MESSAGE_KEYS = (
    "role",
    "parts",
    "content",
    "contents",
    "text",
    "tool_calls",
    "function_call",
    "tool_call_id",
    "finish_reason",
    "refusal",
)


def _bare_message(value: object, direction: str, source: str, role: str) -> ChatMessage:
    """A message that is only a value (not a dict): its text, with the role the context gives."""
    return ChatMessage(role, _clip(_text(value)), [], None, None, None, direction, source)


def _message(obj: object, direction: str, source: str, default_role: str) -> ChatMessage | None:
    """One message in any of the dict shapes (parts schema, OpenAI, OpenInference /
    traceAI flattened, old OpenLLMetry flattened, LangChain); a bare string is text."""
    if isinstance(obj, dict) and isinstance(obj.get("message"), dict) and "role" not in obj:
        obj = obj["message"]  # OpenInference / traceAI: {i}.message.*
    if not isinstance(obj, dict):
        return None if obj is None else _bare_message(obj, direction, source, default_role)
    obj, lc_role = _lc_unwrap(obj)
    role = obj.get("role")
    if role is None and isinstance(obj.get("type"), str):
        role = _LC_ROLES.get(obj["type"].lower())
    role_text = (_opt_str(role) or lc_role or default_role)[:_MAX_REF_CHARS]
    acc = _Acc()
    if "parts" in obj:
        _content(obj["parts"], acc)
    if "content" in obj:
        _content(_maybe_parts_json(obj["content"]), acc)
    elif "text" in obj and "parts" not in obj:
        _content(obj["text"], acc)
    if "contents" in obj:  # OpenInference / traceAI multi-part content
        seen = set(acc.texts)
        extra = _Acc()
        _content(obj["contents"], extra)
        acc.texts += [t for t in extra.texts if t not in seen]
        acc.tool_calls += extra.tool_calls
        acc.tool_call_id = acc.tool_call_id or extra.tool_call_id
    if not acc.texts and obj.get("refusal"):
        acc.text(obj["refusal"])
    for item in _items(obj.get("tool_calls")):
        call = _tool_call(item)
        if call is not None:
            acc.tool_calls.append(call)
    if isinstance(obj.get("function_call"), dict):  # legacy OpenAI functions API
        call = _tool_call({"function": obj["function_call"]})
        if call is not None:
            acc.tool_calls.append(call)
    tool_call_id = _opt_str(obj.get("tool_call_id")) or acc.tool_call_id
    if not any(k in obj for k in _KNOWN_MESSAGE_KEYS) and not acc.tool_calls:
        acc.text(obj)  # nothing recognisable: show what is there
    return ChatMessage(
        role=role_text,
        content=_clip("\n".join(acc.texts)),
        tool_calls=acc.tool_calls,
        tool_call_id=tool_call_id,
        name=_opt_str(obj.get("name")),
        finish_reason=_opt_str(obj.get("finish_reason", obj.get("stop_reason"))),
        direction=direction,
        source=source,
    )


def _maybe_parts_json(value: object) -> object:
    """OpenLLMetry stores list-valued OpenAI content as a JSON string; unpack only that."""
    if isinstance(value, str) and value.startswith("[{"):
        ok, parsed = _parse_json(value)
        if ok and isinstance(parsed, list) and parsed and all(isinstance(p, dict) and "type" in p for p in parsed):
            return parsed
    return value


def _messages(items: Iterable, direction: str, source: str, default_role: str) -> list[ChatMessage]:
    out = []
    for item in items:
        msg = _message(item, direction, source, default_role)
        if msg is not None:
            out.append(msg)
    return out


def _default_role(direction: str) -> str:
    return "user" if direction == "input" else "assistant"


# --- the sources, most structured first ---------------------------------------------


def _otel_messages(value: object, direction: str, source: str) -> list[ChatMessage]:
    """Parts schema (JSON text or structured)."""
    ok, parsed = _parse_json(value)
    if isinstance(value, str) and not ok:
        return []  # not JSON: left for the raw-text fallback
    if isinstance(parsed, dict):
        parsed = parsed.get("messages", [parsed]) if "role" not in parsed else [parsed]
    return _messages(_items(parsed), direction, source, _default_role(direction))


def _system_instructions(value: object, source: str) -> list[ChatMessage]:
    if value is None or value == "" or value == []:
        return []
    parsed = _structured(value)
    if isinstance(parsed, dict) and ("role" in parsed or "parts" in parsed):
        parsed = [parsed]
    if (
        isinstance(parsed, list)
        and parsed
        and all(isinstance(m, dict) and ("role" in m or "parts" in m) for m in parsed[:50])
    ):
        return _messages(_items(parsed), "input", source, "system")
    acc = _Acc()
    _content(parsed, acc)
    if not acc.texts:
        return []
    return [ChatMessage("system", _clip("\n".join(acc.texts)), [], None, None, None, "input", source)]


def _flattened(attrs: dict, prefix: str, direction: str) -> list[ChatMessage]:
    return _messages(reassemble(attrs, prefix), direction, prefix + ".*", _default_role(direction))


def _oi_legacy(attrs: dict, direction: str) -> list[ChatMessage]:
    """``llm.prompts.{i}.prompt.text`` (or a ``llm.prompts`` string list), ``llm.choices.{i}.completion.text``."""
    if direction == "input":
        prefix, inner, role = "llm.prompts", "prompt", "user"
        whole = attrs.get("llm.prompts")
        if isinstance(whole, list) and whole and all(isinstance(p, str) for p in whole):
            return [
                ChatMessage(role, _clip(p), [], None, None, None, direction, "llm.prompts") for p in whole[:_MAX_ITEMS]
            ]
    else:
        prefix, inner, role = "llm.choices", "completion", "assistant"
    out = []
    for item in reassemble(attrs, prefix):
        body = item.get(inner, item)
        text = body.get("text") if isinstance(body, dict) else body
        if text is not None:
            out.append(ChatMessage(role, _clip(_text(text)), [], None, None, None, direction, prefix + ".*"))
    return out


def _log_name(record: dict) -> str | None:
    name = record.get("event_name")
    if isinstance(name, str) and name:
        return name
    attrs = record.get("attributes")
    if isinstance(attrs, dict):
        for key in ("event.name", "event_name"):  # older SDKs; LiteLLM
            if isinstance(attrs.get(key), str):
                return attrs[key]
    return None


def _log_records(logs: object) -> list[tuple[str, dict, object]]:
    """(event name, attributes, body) for each well-formed record."""
    out = []
    for record in _items(logs):
        if not isinstance(record, dict):
            continue
        name = _log_name(record)
        if name is None:
            continue
        attrs = record.get("attributes")
        body = _structured(record.get("body"))
        out.append((name, attrs if isinstance(attrs, dict) else {}, body))
    return out


def _details_value(attrs: dict, body: object, key: str) -> object:
    if key in attrs:
        return attrs[key]
    if isinstance(body, dict):
        return body.get(key)
    return None


def _log_details(records: list, direction: str) -> list[ChatMessage]:
    """The first ``gen_ai.client.inference.operation.details`` record with content."""
    source = "log:" + _LOG_DETAILS
    key = "gen_ai.input.messages" if direction == "input" else "gen_ai.output.messages"
    for name, attrs, body in records:
        if name != _LOG_DETAILS:
            continue
        msgs = _otel_messages(_details_value(attrs, body, key), direction, source)
        if direction == "input":
            system = _system_instructions(_details_value(attrs, body, "gen_ai.system_instructions"), source)
            msgs = _with_system(system, msgs)
        if msgs:
            if direction == "output":
                _fill_finish_reasons(msgs, attrs)
            return msgs
    return []


def _log_events(records: list, direction: str) -> list[ChatMessage]:
    """Deprecated per-message events (input) and ``gen_ai.choice`` (output)."""
    out: list[tuple[int, ChatMessage]] = []
    for name, _attrs, body in records:
        source = "log:" + name
        if direction == "input" and name in _LOG_MESSAGE_EVENTS:
            role = _LOG_MESSAGE_EVENTS[name]
            if isinstance(body, dict):
                fields = dict(body)
                fields.setdefault("role", role)
                if role == "tool" and "tool_call_id" not in fields and "id" in fields:
                    fields["tool_call_id"] = fields["id"]
                msg = _message(fields, direction, source, role)
            else:
                msg = _message(body, direction, source, role) if body not in (None, "") else None
            if msg is not None:
                out.append((len(out), msg))
        elif direction == "output" and name == _LOG_CHOICE:
            if not isinstance(body, dict):
                if body not in (None, ""):
                    out.append((len(out), _bare_message(body, direction, source, "assistant")))
                continue
            inner = body.get("message")
            msg = _message(inner if inner is not None else {}, direction, source, "assistant")
            if msg is None:
                continue
            if msg.finish_reason is None:
                msg.finish_reason = _opt_str(body.get("finish_reason"))
            index = body.get("index")
            order = index if isinstance(index, int) and not isinstance(index, bool) else len(out)
            out.append((order, msg))
    out.sort(key=lambda pair: pair[0])
    return [msg for _, msg in out]


def _span_kind(attrs: dict) -> str | None:
    for key in _KIND_KEYS:
        value = attrs.get(key)
        if isinstance(value, str) and value:
            return value.upper()
    return None


def _openai_request(parsed: Any, source: str) -> list[ChatMessage]:
    """An LLM request body: ``{"messages": [...]}`` (+ Anthropic ``system``), a list of
    messages, a completions ``prompt``, LangSmith / traceloop ``kwargs`` wrappers."""
    if isinstance(parsed, dict):
        if isinstance(parsed.get("kwargs"), dict) and "messages" in parsed["kwargs"]:
            parsed = parsed["kwargs"]
        elif isinstance(parsed.get("inputs"), dict):
            parsed = parsed["inputs"]
        out = []
        if "system" in parsed:
            out += _system_instructions(parsed["system"], source)
        messages = parsed.get("messages")
        if isinstance(messages, list):
            if messages and all(isinstance(m, list) for m in messages):  # LangChain batches
                messages = [m for batch in messages for m in batch]
            out += _messages(_items(messages), "input", source, "user")
            return out
        for key in ("prompt", "prompts"):
            if isinstance(parsed.get(key), str | list):
                prompts = parsed[key] if isinstance(parsed[key], list) else [parsed[key]]
                return out + _messages(_items(prompts), "input", source, "user")
        if isinstance(parsed.get("input"), list) and all(isinstance(m, dict) for m in parsed["input"]):
            return out + _messages(_items(parsed["input"]), "input", source, "user")  # Responses API
        return out
    if (
        isinstance(parsed, list)
        and parsed
        and all(isinstance(m, dict) and ("role" in m or "lc" in m) for m in parsed[:50])
    ):
        return _messages(_items(parsed), "input", source, "user")
    return []


def _openai_response(parsed: Any, source: str) -> list[ChatMessage]:
    """An LLM response body: OpenAI ``choices``, Logfire ``message`` / ``combined_chunk_content``,
    Anthropic ``content``, LangChain ``generations``, a list of messages."""
    if isinstance(parsed, dict):
        if isinstance(parsed.get("outputs"), dict):
            parsed = parsed["outputs"]
        out = []
        choices = parsed.get("choices")
        if isinstance(choices, list):
            for choice in _items(choices):
                if not isinstance(choice, dict):
                    continue
                if isinstance(choice.get("message"), dict):
                    msg = _message(choice["message"], "output", source, "assistant")
                elif isinstance(choice.get("delta"), dict):
                    msg = _message(choice["delta"], "output", source, "assistant")
                elif "text" in choice:
                    msg = ChatMessage("assistant", _clip(_text(choice["text"])), [], None, None, None, "output", source)
                else:
                    continue
                if msg is not None:
                    if msg.finish_reason is None:
                        msg.finish_reason = _opt_str(choice.get("finish_reason"))
                    out.append(msg)
            return out
        generations = parsed.get("generations")
        if isinstance(generations, list):
            flat = [g for batch in _items(generations) for g in (batch if isinstance(batch, list) else [batch])]
            for gen in flat[:_MAX_ITEMS]:
                if not isinstance(gen, dict):
                    continue
                msg = None
                if isinstance(gen.get("message"), dict):
                    msg = _message(gen["message"], "output", source, "assistant")
                elif "text" in gen:
                    msg = ChatMessage("assistant", _clip(_text(gen["text"])), [], None, None, None, "output", source)
                if msg is not None:
                    info = gen.get("generation_info")
                    if msg.finish_reason is None and isinstance(info, dict):
                        msg.finish_reason = _opt_str(info.get("finish_reason"))
                    out.append(msg)
            return out
        if isinstance(parsed.get("message"), dict):  # old Logfire response_data
            msg = _message(parsed["message"], "output", source, "assistant")
            return [msg] if msg is not None else []
        if isinstance(parsed.get("combined_chunk_content"), str):  # old Logfire, streamed
            return [
                ChatMessage(
                    "assistant", _clip(parsed["combined_chunk_content"]), [], None, None, None, "output", source
                )
            ]
        if parsed.get("role") is not None and ("content" in parsed or "parts" in parsed):  # Anthropic / one message
            msg = _message(parsed, "output", source, "assistant")
            return [msg] if msg is not None else []
        if isinstance(parsed.get("messages"), list):
            return _messages(_items(parsed["messages"]), "output", source, "assistant")
        if isinstance(parsed.get("output"), list):  # OpenAI Responses API
            return _responses_output(parsed["output"], source)
        return []
    if (
        isinstance(parsed, list)
        and parsed
        and all(isinstance(m, dict) and ("role" in m or "lc" in m) for m in parsed[:50])
    ):
        return _messages(_items(parsed), "output", source, "assistant")
    return []


def _responses_output(items: list, source: str) -> list[ChatMessage]:
    """Responses API ``output`` items: messages, function calls (joined onto one assistant turn)."""
    out: list[ChatMessage] = []
    for item in _items(items):
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind in ("function_call", "custom_tool_call", "reasoning"):
            acc = _Acc()
            _part(item, acc)
            if out and out[-1].role == "assistant" and out[-1].source == source and not out[-1].finish_reason:
                last = out[-1]
                last.tool_calls += acc.tool_calls
                if acc.texts:
                    last.content = _clip("\n".join([t for t in (last.content, *acc.texts) if t]))
            else:
                out.append(
                    ChatMessage(
                        "assistant", _clip("\n".join(acc.texts)), acc.tool_calls, None, None, None, "output", source
                    )
                )
        elif "role" in item or "content" in item:
            msg = _message(item, "output", source, "assistant")
            if msg is not None:
                out.append(msg)
    return out


def _blob(attrs: dict, key: str, direction: str) -> list[ChatMessage]:
    """An opaque JSON/text blob: parsed as an LLM request/response if it is one, else shown raw.

    JSON is tried whenever the text looks like JSON, whatever ``*.mime_type`` says: traceAI
    labels plain text ``application/json``, and other libraries omit the mime type.
    """
    value = attrs.get(key)
    if value is None or value == "":
        return []
    ok, parsed = _parse_json(value)
    if not ok and not isinstance(value, str):
        parsed, ok = value, True  # already structured
    if ok:
        msgs = _openai_request(parsed, key) if direction == "input" else _openai_response(parsed, key)
        if msgs:
            return msgs
        if isinstance(parsed, str):
            return [ChatMessage(_default_role(direction), _clip(parsed), [], None, None, None, direction, key)]
    text = value if isinstance(value, str) else _text(value)
    return [ChatMessage(_default_role(direction), _clip(text), [], None, None, None, direction, key)]


def _raw_attr(attrs: dict, key: str, direction: str) -> list[ChatMessage]:
    """A structured-content attribute that turned out not to be JSON: shown as text."""
    value = attrs.get(key)
    if not isinstance(value, str) or not value.strip():
        return []
    if _parse_json(value)[0]:
        return []  # was JSON and was handled (or held nothing) upstream
    return [ChatMessage(_default_role(direction), _clip(value), [], None, None, None, direction, key)]


def _with_system(system: list[ChatMessage], msgs: list[ChatMessage]) -> list[ChatMessage]:
    """Prepend system instructions unless the messages already open with the same text."""
    if not system:
        return msgs
    if msgs and msgs[0].role == "system" and msgs[0].content == system[0].content:
        return msgs
    return system + msgs


def _finish_reasons(attrs: dict) -> list[str]:
    value = attrs.get("gen_ai.response.finish_reasons")
    value = _structured(value)
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        return [r for r in (_opt_str(v) for v in value[:_MAX_ITEMS]) if r]
    for key in ("llm.finish_reason", "gen_ai.response.finish_reason"):
        reason = _opt_str(attrs.get(key))
        if reason:
            return [reason]
    return []


def _fill_finish_reasons(msgs: list[ChatMessage], attrs: dict) -> None:
    """Span-level finish reasons onto output messages that lack one, when the counts match."""
    if not msgs or all(m.finish_reason for m in msgs):
        return
    reasons = _finish_reasons(attrs)
    if len(reasons) != len(msgs):
        return
    for msg, reason in zip(msgs, reasons, strict=False):
        if msg.finish_reason is None:
            msg.finish_reason = reason


def _first(candidates: Iterable[Callable[[], list[ChatMessage]]]) -> list[ChatMessage]:
    for candidate in candidates:
        try:
            msgs = candidate()
        except Exception:  # a malformed source is skipped, never fatal
            continue
        if msgs:
            return msgs
    return []


#: Tool execution attributes: (prefix shown as the source, call id, tool name, arguments, result).
_TOOL_EXECUTION_KEYS = (
    ("gen_ai.tool.call.*", "gen_ai.tool.call.id", "gen_ai.tool.name", "gen_ai.tool.call.arguments",
     "gen_ai.tool.call.result"),
    ("ai.toolCall.*", "ai.toolCall.id", "ai.toolCall.name", "ai.toolCall.args", "ai.toolCall.result"),  # Vercel 3-6
)  # fmt: skip


def _tool_execution(attrs: dict) -> list[ChatMessage]:
    for source, id_key, name_key, arguments_key, result_key in _TOOL_EXECUTION_KEYS:
        if arguments_key not in attrs and result_key not in attrs:
            continue
        call_id = _opt_str(attrs.get(id_key))
        name = _opt_str(attrs.get(name_key))
        out = []
        if arguments_key in attrs:
            text = _clip(_text(attrs[arguments_key]))
            out.append(ChatMessage("tool-call", text, [], call_id, name, None, "input", source))
        if result_key in attrs:
            text = _clip(_text(attrs[result_key]))
            out.append(ChatMessage("tool-result", text, [], call_id, name, None, "output", source))
        return out
    return []


def _vercel_output(attrs: dict) -> list[ChatMessage]:
    """Vercel AI SDK 3-6: ``ai.response.text`` and ``ai.response.toolCalls`` (JSON) make one assistant turn."""
    text = attrs.get("ai.response.text")
    ok, calls = _parse_json(attrs.get("ai.response.toolCalls"))
    tool_calls = [call for call in (_tool_call(item) for item in _items(calls)) if call is not None] if ok else []
    if not tool_calls and (text is None or text == ""):
        return []
    source = "ai.response.text" if text else "ai.response.toolCalls"
    finish = _opt_str(attrs.get("ai.response.finishReason"))
    return [ChatMessage("assistant", _clip(_text(text or "")), tool_calls, None, None, finish, "output", source)]


#: Per direction: (OTel JSON, OpenInference flattened, OpenLLMetry flattened, blob, Traceloop entity, Logfire v1).
_DIRECTION_KEYS = {
    "input": ("gen_ai.input.messages", "llm.input_messages", "gen_ai.prompt", "input.value",
              "traceloop.entity.input", "request_data"),
    "output": ("gen_ai.output.messages", "llm.output_messages", "gen_ai.completion", "output.value",
               "traceloop.entity.output", "response_data"),
}  # fmt: skip


def _message_sources(attrs: dict, records: list, chat_blobs: bool, direction: str) -> list:
    """The readers of one direction's messages, in the order they are tried (the first non-empty wins)."""
    otel, openinference, openllmetry, blob, entity, logfire = _DIRECTION_KEYS[direction]
    if direction == "input":  # Vercel AI SDK 3-6: the model call's messages, or the wrapping call's prompt
        vercel = [lambda: _blob(attrs, "ai.prompt.messages", direction), lambda: _blob(attrs, "ai.prompt", direction)]
    else:
        vercel = [lambda: _vercel_output(attrs)]
    return [
        lambda: _otel_messages(attrs.get(otel), direction, otel),
        lambda: _flattened(attrs, otel, direction),
        lambda: _flattened(attrs, openinference, direction),
        lambda: _oi_legacy(attrs, direction),
        lambda: _flattened(attrs, openllmetry, direction),
        lambda: _log_details(records, direction),
        lambda: _log_events(records, direction),
        lambda: _blob(attrs, blob, direction) if chat_blobs else [],
        lambda: _blob(attrs, entity, direction) if attrs.get("traceloop.span.kind") != "tool" else [],
        lambda: _blob(attrs, openllmetry, direction),
        lambda: _blob(attrs, logfire, direction),
        *vercel,
        lambda: _raw_attr(attrs, otel, direction),
    ]


def extract_messages(attributes: dict[str, object], logs: list[dict] | None = None) -> list[ChatMessage]:
    """Input messages first (system instructions first of all), then output messages, in order.

    Per direction, the first of these that yields a message wins: OTel parts schema,
    traceAI flattened, OpenInference flattened (then its legacy completions keys), old
    OpenLLMetry flattened, log records, opaque blobs, raw text of an unparseable content
    attribute. A tool execution span with nothing else yields ``tool-call`` /
    ``tool-result`` messages from ``gen_ai.tool.call.arguments`` / ``.result``.
    """
    if not isinstance(attributes, dict):
        attributes = {}
    attrs = attributes
    try:
        records = _log_records(logs)
    except Exception:
        records = []
    chat_blobs = _span_kind(attrs) not in _NON_CHAT_KINDS

    inputs = _first(_message_sources(attrs, records, chat_blobs, "input"))
    try:
        system = _system_instructions(attrs.get("gen_ai.system_instructions"), "gen_ai.system_instructions")
    except Exception:
        system = []
    inputs = _with_system(system, inputs)

    outputs = _first(_message_sources(attrs, records, chat_blobs, "output"))
    try:
        _fill_finish_reasons(outputs, attrs)
    except Exception:
        pass

    if not inputs and not outputs:
        try:
            return _tool_execution(attrs)
        except Exception:
            return []
    return inputs + outputs


def retrieval_documents(attributes: dict[str, Any]) -> list[str]:
    """The texts of the documents a retrieval span returned, in order (ids when it sent no content).

    OTel ``gen_ai.retrieval.documents`` (a JSON array of ``{id, score, content?}``) and OpenInference's
    flattened ``retrieval.documents.{i}.document.*``.
    """
    found: list[str] = []
    blob = attributes.get("gen_ai.retrieval.documents")
    if isinstance(blob, str):
        try:
            blob = json.loads(blob)
        except ValueError:
            blob = [blob]
    if isinstance(blob, list):
        for doc in blob:
            text = doc.get("content") or doc.get("text") or doc.get("id") if isinstance(doc, dict) else doc
            if text:
                found.append(text if isinstance(text, str) else json.dumps(text))
    for doc in reassemble(attributes, "retrieval.documents"):
        inner = doc.get("document", doc)
        text = inner.get("content") or inner.get("id") if isinstance(inner, dict) else None
        if text:
            found.append(str(text))
    return found

"""The searchable text of a span, and its attributes as JSON, under a content policy.

The full-text index (tracetui.jobs.indexer) covers what a developer searches for
after "where did the model say that?": system, user and assistant messages and the
tool calls in them (read by tracetui.llm.chat, whichever library wrote them), tool
execution arguments and results, retrieval and reranker documents, exception
messages and the span's status message. Names are added too, so that a search for
a tool or a run name finds its calls.

Everything copied out of a span passes through a :class:`ContentPolicy`: without
content (``--no-content``) no message text is copied and the content-bearing
attributes are left out of the JSON; with redactions every copied string has its
matches replaced by "[redacted]".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from tracetui.llm.chat import extract_messages
from tracetui.model.config import CONTENT_OMITTED, ContentPolicy
from tracetui.model.fmt import json_text

#: Attributes that hold message content (prompts, completions, tool arguments and results,
#: documents), in every family's spelling: left out of the JSON copy without content.
_CONTENT_KEYS = re.compile(
    r"^(?:gen_ai\.(?:input\.messages|output\.messages|system_instructions|prompt|completion"
    r"|tool\.call\.arguments|tool\.call\.result|retrieval\.documents|retrieval\.query)"
    r"|llm\.(?:input_messages|output_messages|prompts|choices|prompt_template\.variables)"
    r"|llm\.[a-z_]+\.(?:messages|choices)"  # LiteLLM: llm.openai.messages, llm.openai.choices
    r"|embedding\.embeddings"  # OpenInference: the texts embedded
    r"|(?:input|output)\.value|traceloop\.entity\.(?:input|output)|request_data|response_data"
    r"|ai\.(?:prompt|response\.(?:text|toolCalls|object)|toolCall\.(?:args|result))"
    r"|retrieval\.documents|reranker\.(?:input_documents|output_documents|query)"
    r"|tool_arguments|tool_response|all_messages_events|pydantic_ai\.all_messages|final_result"
    # an evaluator's explanation often quotes the answer it judged
    r"|gen_ai\.evaluation\.explanation)(?:$|[.\[])"
)
#: Documents a retriever or reranker returned, as text: OpenInference / traceAI flattened keys.
_DOCUMENT_KEY = re.compile(r"^(?:retrieval|reranker\.(?:input|output))_?documents\.\d+\.document\.content$")
#: Tool spans whose ``input.value`` / ``output.value`` are the tool's arguments and result.
_TOOL_BLOBS = ("input.value", "output.value", "traceloop.entity.input", "traceloop.entity.output")
#: Longest text indexed for one span (the rest of a huge prompt adds little to a search).
MAX_INDEXED_CHARS = 64_000


def is_content_key(key: str) -> bool:
    """Whether the attribute ``key`` holds message content in any family's spelling."""
    return _CONTENT_KEYS.match(key) is not None


def _as_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _message_parts(attributes: dict[str, Any], logs: list[dict[str, Any]]) -> Iterable[str]:
    for message in extract_messages(attributes, logs):
        yield message.content
        for call in message.tool_calls:
            yield call.name or ""
            yield call.arguments or ""


def _document_parts(attributes: dict[str, Any]) -> Iterable[str]:
    for key, value in attributes.items():
        if _DOCUMENT_KEY.match(key):
            yield _as_text(value)
    documents = attributes.get("gen_ai.retrieval.documents")
    if documents is not None:
        yield _as_text(documents)
    if (
        str(attributes.get("openinference.span.kind", "")).upper() == "TOOL"
        or attributes.get("traceloop.span.kind") == "tool"
    ):
        for key in _TOOL_BLOBS:
            yield _as_text(attributes.get(key))


def span_text(
    attributes: dict[str, Any],
    events: list[dict[str, Any]],
    logs: list[dict[str, Any]],
    status_message: str,
    policy: ContentPolicy,
) -> str:
    """The text the full-text index keeps for one span (already cleaned by ``policy``)."""
    parts: list[str] = []
    if policy.keep_content:
        parts += _message_parts(attributes, logs)
        parts += _document_parts(attributes)
    for event in events:  # exceptions recorded on the span
        message = (event.get("attributes") or {}).get("exception.message")
        if message:
            parts.append(_as_text(message))
    parts.append(status_message)
    for key in ("gen_ai.tool.name", "tool.name"):
        if attributes.get(key):
            parts.append(_as_text(attributes[key]))
    text = "\n".join(dict.fromkeys(part for part in parts if part))  # each distinct text once
    return policy.redacted(text[:MAX_INDEXED_CHARS])


def cleaned(value: object, policy: ContentPolicy) -> object:
    """``value`` (a string, or lists and dicts of them) with every redaction of ``policy`` applied."""
    if isinstance(value, str):
        return policy.redacted(value)
    if isinstance(value, list):
        return [cleaned(item, policy) for item in value]
    if isinstance(value, dict):
        return {key: cleaned(item, policy) for key, item in value.items()}
    return value


def attributes_copy(attributes: dict[str, Any], policy: ContentPolicy) -> dict[str, Any]:
    """The attributes as they may be copied under ``policy`` (the JSON column, ``spans --json``, exports).

    Without content, content-bearing attributes keep their key with "[content not kept]";
    redactions apply to every string value.
    """
    if policy.keep_content and not policy.redact:
        return attributes
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if not policy.keep_content and is_content_key(key):
            out[key] = CONTENT_OMITTED
        else:
            out[key] = cleaned(value, policy)
    return out


def attributes_json(attributes: dict[str, Any], policy: ContentPolicy) -> str:
    """The attributes as a JSON object for SQL tools (``json_extract``), content per ``policy`` (attributes_copy)."""
    out = attributes_copy(attributes, policy)
    try:
        return json.dumps(out, ensure_ascii=False, default=str, allow_nan=False)
    except ValueError:  # NaN or infinity, which SQLite's JSON functions refuse: null, as json_text writes them
        return json_text(out, ensure_ascii=False)

"""Copies of stored data under the database's content policy (``serve --no-content`` / ``--redact``).

The stored spans and log records keep exactly what the app sent (raw OTLP): that is
the app's own data, and the UI shows it as it is. Every *copy* tracetui makes of it
follows the policy the database records (:meth:`Reader.content_policy`): the index
and the JSON column (tracetui.jobs.indexer), and here, everything that leaves the
database: ``tracetui export`` (OTLP JSON and the summary), ``spans --json``, regression
sets (``cohort -o``, the list's ``X``, compare's ``x``) and the UI's clipboard copies.
No export option relaxes it; the functions below take the policy from the reader.

Without content, message-bearing attributes (tracetui.llm.content.is_content_key),
the same keys in span events and log records, and every log record's body become
"[content not kept]"; names, ids, timings, token counts and error messages stay. With
redactions, every string copied has its matches replaced by "[redacted]".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tracetui.llm.content import attributes_copy, cleaned, is_content_key
from tracetui.model.config import CONTENT_OMITTED, ContentPolicy
from tracetui.model.views import SpanDetail

#: Keys that hold a message in span events and log records (GenAI message events, OpenLLMetry chunks,
#: LiteLLM's ``message.content``), and the same keys nested under them.
_EVENT_CONTENT_KEY = re.compile(r"^(?:content|message|tool_calls|body|gen_ai\.event\.content)(?:$|[.\[])")


def is_default(policy: ContentPolicy) -> bool:
    """Whether ``policy`` copies everything as it is (nothing to do)."""
    return policy.keep_content and not policy.redact


def policy_note(policy: ContentPolicy) -> str:
    """What a copy under ``policy`` leaves out, as a sentence for the user ("" when nothing)."""
    if not policy.keep_content:
        return "Message content not kept (this database's content policy, --no-content)."
    if policy.redact:
        return f"Redacted: {', '.join(policy.redact)} (this database's content policy)."
    return ""


def _event_content_key(key: str) -> bool:
    return _EVENT_CONTENT_KEY.match(key) is not None or is_content_key(key)


# --- OTLP messages (tracetui export --format otlp-json) ------------------------------------------


def _redact_value(value: AnyValue, policy: ContentPolicy) -> None:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        value.string_value = policy.redacted(value.string_value)
    elif kind == "array_value":
        for item in value.array_value.values:
            _redact_value(item, policy)
    elif kind == "kvlist_value":
        for pair in value.kvlist_value.values:
            _redact_value(pair.value, policy)


def _omit(value: AnyValue) -> None:
    value.Clear()
    value.string_value = CONTENT_OMITTED


def _scrub_key_values(pairs: Iterable[KeyValue], policy: ContentPolicy, content_key) -> None:
    for pair in pairs:
        if not policy.keep_content and content_key(pair.key):
            _omit(pair.value)
        else:
            _redact_value(pair.value, policy)


def span_bytes(raw: bytes, policy: ContentPolicy) -> bytes:
    """A stored span (serialized ``Span``) as it may be copied under ``policy``."""
    if is_default(policy):
        return raw
    span = Span.FromString(raw)
    span.name = policy.redacted(span.name)
    span.status.message = policy.redacted(span.status.message)
    _scrub_key_values(span.attributes, policy, is_content_key)
    for event in span.events:
        event.name = policy.redacted(event.name)
        _scrub_key_values(event.attributes, policy, _event_content_key)
    for link in span.links:
        _scrub_key_values(link.attributes, policy, is_content_key)
    return span.SerializeToString()


def log_bytes(raw: bytes, policy: ContentPolicy) -> bytes:
    """A stored log record (serialized ``LogRecord``) as it may be copied: without content, no body."""
    if is_default(policy):
        return raw
    record = LogRecord.FromString(raw)
    if not policy.keep_content and record.HasField("body"):
        _omit(record.body)
    else:
        _redact_value(record.body, policy)
    _scrub_key_values(record.attributes, policy, _event_content_key)
    return record.SerializeToString()


def resource_bytes(raw: bytes, policy: ContentPolicy) -> bytes:
    """A stored resource with every redaction applied to its attributes (it holds no message content)."""
    if not policy.redact or not raw:
        return raw
    resource = Resource.FromString(raw)
    _scrub_key_values(resource.attributes, policy, lambda _key: False)
    return resource.SerializeToString()


# --- decoded spans (spans --json, the clipboard) ----------------------------------------------------


def _items_copy(items: dict[str, Any], policy: ContentPolicy) -> dict[str, Any]:
    """Event or log attributes as they may be copied."""
    return {
        key: CONTENT_OMITTED if not policy.keep_content and _event_content_key(key) else cleaned(value, policy)
        for key, value in items.items()
    }


def evaluation_copy(evaluation: dict[str, Any], policy: ContentPolicy) -> dict[str, Any]:
    """An evaluation ({"name", "score", "label", "explanation", ...}): its explanation is content (it quotes)."""
    out = dict(cleaned(evaluation, policy))  # type: ignore[call-overload]
    if not policy.keep_content and out.get("explanation"):
        out["explanation"] = CONTENT_OMITTED
    return out


def detail_copy(detail: SpanDetail, policy: ContentPolicy) -> SpanDetail:
    """A decoded span as it may be copied under ``policy`` (the stored one is not changed)."""
    if is_default(policy):
        return detail
    row = dict(detail.row)
    for key in ("name", "status_message"):
        if isinstance(row.get(key), str):
            row[key] = policy.redacted(row[key])
    return replace(
        detail,
        row=row,
        attributes=attributes_copy(detail.attributes, policy),
        events=[
            {**e, "name": policy.redacted(e["name"]), "attributes": _items_copy(e["attributes"], policy)}
            for e in detail.events
        ],  # fmt: skip
        links=[{**link, "attributes": attributes_copy(link["attributes"], policy)} for link in detail.links],
        resource=dict(cleaned(detail.resource, policy)),  # type: ignore[call-overload]
        logs=[
            {
                **log,
                "attributes": _items_copy(log.get("attributes") or {}, policy),
                "body": CONTENT_OMITTED
                if not policy.keep_content and log.get("body") not in (None, "")
                else cleaned(log.get("body"), policy),
            }
            for log in detail.logs
        ],  # fmt: skip
        evaluations=[evaluation_copy(e, policy) for e in detail.evaluations],
    )

"""Search inside one run (the trace view's `/`): which spans mention a piece of text.

The run is already in memory (``Reader.span_details``), so this is a plain
case-insensitive substring search, no index: over each span's name, status
message, attributes (keys and values), the conversation the detail pane shows
(tracetui.llm.chat reads messages from whichever shape the library used, log
records included), tool calls, events and log records. Resource attributes are
left out: every span of a service shares them, so they would match everything.

The full-text index over every run (``text:`` in the filter line) is another
thing: this needs no index and sees exactly what the detail pane shows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from tracetui.llm.chat import extract_messages
from tracetui.model.views import SpanDetail


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _pairs_text(items: dict[str, Any]) -> Iterable[str]:
    for key, value in items.items():
        yield str(key)
        yield _value_text(value)


def span_text(detail: SpanDetail) -> str:
    """Everything searchable about one span, case-folded, one piece per line."""
    row = detail.row
    parts: list[str] = [str(row.get("name") or ""), str(row.get("status_message") or "")]
    parts += _pairs_text(detail.attributes)
    for message in extract_messages(detail.attributes, detail.logs):
        parts += [message.content, message.name or "", message.tool_call_id or ""]
        for call in message.tool_calls:
            parts += [call.name or "", call.arguments or ""]
    for event in detail.events:
        parts.append(str(event.get("name") or ""))
        parts += _pairs_text(event.get("attributes") or {})
    for record in detail.logs:
        parts += [str(record.get("event_name") or ""), _value_text(record.get("body"))]
        parts += _pairs_text(record.get("attributes") or {})
    for evaluation in detail.evaluations:
        parts += [str(evaluation.get("name") or ""), str(evaluation.get("explanation") or "")]
    return "\n".join(p for p in parts if p).casefold()


def search_index(details: Iterable[SpanDetail]) -> dict[bytes, str]:
    """Span id -> its searchable text, for one run (built once, searched at every key typed)."""
    return {detail.row["span_id"]: span_text(detail) for detail in details}


def matching_spans(index: dict[bytes, str], query: str) -> set[bytes]:
    """The spans whose text holds ``query`` (case-insensitive; surrounding blanks ignored; "" matches none)."""
    needle = query.strip().casefold()
    if not needle:
        return set()
    return {span_id for span_id, text in index.items() if needle in text}

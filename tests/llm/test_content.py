"""What the index and the JSON copy keep of a span, with and without content, and with redactions."""

from __future__ import annotations

import json

import pytest

from tracetui.llm.content import attributes_json, span_text
from tracetui.model.config import CONTENT_OMITTED, REDACTED, ContentPolicy, RedactionError

ATTRS = {
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [
        {"type": "text", "content": "my key is sk-abcdefghijklmnopqrstuv and mail ann@example.com"}]}]),
    "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [
        {"type": "text", "content": "the refund policy allows 30 days"}]}]),
}  # fmt: skip


def test_content_is_indexed_by_default() -> None:
    text = span_text(ATTRS, [], [], "", ContentPolicy())
    assert "refund policy" in text and "ann@example.com" in text


def test_no_content_keeps_messages_out_of_index_and_json() -> None:
    policy = ContentPolicy(keep_content=False)
    assert "refund" not in span_text(ATTRS, [], [], "rate limited", policy)
    assert "rate limited" in span_text(ATTRS, [], [], "rate limited", policy)
    attrs = json.loads(attributes_json(ATTRS, policy))
    assert attrs["gen_ai.request.model"] == "gpt-4o"
    assert attrs["gen_ai.input.messages"] == CONTENT_OMITTED and attrs["gen_ai.output.messages"] == CONTENT_OMITTED


def test_redaction_of_keys_and_emails() -> None:
    policy = ContentPolicy(redact=("keys", "emails"))
    for copy in (span_text(ATTRS, [], [], "", policy), attributes_json(ATTRS, policy)):
        assert "sk-abcdefghijklmnopqrstuv" not in copy and "ann@example.com" not in copy
        assert REDACTED in copy and "refund policy" in copy


def test_a_bad_pattern_is_refused_at_once() -> None:
    with pytest.raises(RedactionError, match="--redact"):
        ContentPolicy(redact=("([unclosed",))

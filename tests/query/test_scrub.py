"""What an exported span and log record keep under each content policy (tracetui.query.scrub)."""

from __future__ import annotations

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.helpers import any_value, kv_list, make_span, sid, tid
from tracetui.model.anyvalue import any_value_to_python, attributes_to_dict
from tracetui.model.config import CONTENT_OMITTED, REDACTED, ContentPolicy
from tracetui.query.scrub import log_bytes, policy_note, resource_bytes, span_bytes

EMAIL, KEY = "jane.doe@example.com", "sk-proj-abcdefghijklmnopqrstuvwx"


def _span() -> bytes:
    span = make_span(tid(1), sid(1), name="chat gpt-4o", status=2, message=f"denied for {EMAIL}", attributes={
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.input.messages": f'[{{"role": "user", "content": "my key is {KEY}"}}]',
        "app.note": ["a list", f"mail {EMAIL}"],
    })  # fmt: skip
    event = span.events.add(name="gen_ai.content.prompt")
    event.attributes.extend(kv_list({"gen_ai.prompt": f"write to {EMAIL}", "content": "hello"}))
    event = span.events.add(name="exception")
    event.attributes.extend(kv_list({"exception.message": f"bad key {KEY}"}))
    return span.SerializeToString()


def test_without_content_messages_go_and_the_rest_stays() -> None:
    out = Span.FromString(span_bytes(_span(), ContentPolicy(keep_content=False)))
    attrs = attributes_to_dict(out.attributes)
    assert attrs["gen_ai.input.messages"] == CONTENT_OMITTED
    assert attrs["gen_ai.request.model"] == "gpt-4o" and out.name == "chat gpt-4o"
    assert attributes_to_dict(out.events[0].attributes) == {
        "gen_ai.prompt": CONTENT_OMITTED,
        "content": CONTENT_OMITTED,
    }
    assert KEY in attributes_to_dict(out.events[1].attributes)["exception.message"]  # errors are kept
    log = LogRecord(body=any_value({"content": "hi"}), attributes=kv_list({"gen_ai.system": "openai"}))
    kept = LogRecord.FromString(log_bytes(log.SerializeToString(), ContentPolicy(keep_content=False)))
    assert any_value_to_python(kept.body) == CONTENT_OMITTED
    assert attributes_to_dict(kept.attributes) == {"gen_ai.system": "openai"}


def test_redactions_reach_every_string() -> None:
    policy = ContentPolicy(redact=("keys", "emails"))
    raw = span_bytes(_span(), policy)
    assert EMAIL.encode() not in raw and KEY.encode() not in raw and REDACTED.encode() in raw
    out = Span.FromString(raw)
    assert attributes_to_dict(out.attributes)["app.note"] == ["a list", f"mail {REDACTED}"]
    assert out.status.message == f"denied for {REDACTED}"
    resource = Resource(attributes=kv_list({"service.name": "svc", "owner": EMAIL})).SerializeToString()
    assert EMAIL.encode() not in resource_bytes(resource, policy)
    log = LogRecord(body=any_value(f"from {EMAIL}")).SerializeToString()
    assert any_value_to_python(LogRecord.FromString(log_bytes(log, policy)).body) == f"from {REDACTED}"


def test_the_default_policy_copies_the_bytes_as_they_are() -> None:
    raw = _span()
    assert span_bytes(raw, ContentPolicy()) is raw
    assert policy_note(ContentPolicy()) == ""
    assert "--no-content" in policy_note(ContentPolicy(keep_content=False))

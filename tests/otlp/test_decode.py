"""OTLP request decoding: hand-built requests, hostile values, and the real fixture captures."""

from __future__ import annotations

import math

import pytest
from helpers import (
    FIXTURES,
    any_value,
    expected_span_keys,
    iter_spans,
    kv_list,
    make_request,
    make_span,
    read_records,
    requests_of,
    sid,
    tid,
    trace_fixture_files,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tracetui.model.anyvalue import any_value_to_python, attributes_to_dict
from tracetui.model.rows import COL
from tracetui.otlp.decode import DecodeError, decode_spans, parse_trace_request

INT64_MAX = 2**63 - 1


def col(row: tuple, name: str):
    return row[COL[name]]


def decode(request: ExportTraceServiceRequest):
    """Through the wire format, as the receiver sees it."""
    return decode_spans(parse_trace_request(request.SerializeToString()))


# --- attribute values ------------------------------------------------------------


def test_every_anyvalue_kind_becomes_plain_python():
    attrs = {
        "s": "héllo",
        "b": True,
        "f": False,
        "i": -42,
        "big": -(2**63),
        "d": 0.25,
        "raw": b"\x00\xffab",
        "arr": ["a", 1, 2.5, False],
        "kv": {"inner": "x", "n": 3, "deeper": {"list": [b"\x01", None]}},
    }
    kvs = kv_list(attrs) + [KeyValue(key="empty", value=AnyValue())]
    got = attributes_to_dict(kvs)
    assert got == {
        "s": "héllo",
        "b": True,
        "f": False,
        "i": -42,
        "big": -(2**63),
        "d": 0.25,
        "raw": "00ff6162",
        "arr": ["a", 1, 2.5, False],
        "kv": {"inner": "x", "n": 3, "deeper": {"list": ["01", None]}},
        "empty": None,
    }
    # types survive (an int attribute is not turned into a float or a string)
    assert type(got["i"]) is int and type(got["d"]) is float and type(got["b"]) is bool


def test_non_finite_doubles_are_kept():
    assert math.isnan(any_value_to_python(AnyValue(double_value=float("nan"))))
    assert any_value_to_python(AnyValue(double_value=float("-inf"))) == float("-inf")


def nested(container: str, depth: int) -> AnyValue:
    root = AnyValue()
    current = root
    for _ in range(depth):
        if container == "kvlist":
            current = current.kvlist_value.values.add(key="k").value
        else:
            current = current.array_value.values.add()
    current.string_value = "bottom"
    return root


@pytest.mark.parametrize(
    "container, depth, over_the_wire",
    [("kvlist", 200, False), ("array", 200, False), ("array", 45, True)],
    ids=["kvlist-200", "array-200", "array-45-from-wire"],
)
def test_deep_nesting_is_cut_off_instead_of_recursing(container, depth, over_the_wire):
    # A hostile exporter can nest values far deeper than anyone would display.
    value = nested(container, depth)
    if over_the_wire:  # protobuf's parser itself stops at 100 nested messages
        value = AnyValue.FromString(value.SerializeToString())

    result = any_value_to_python(value)
    levels = 0
    while isinstance(result, (dict, list)):
        result = result["k"] if isinstance(result, dict) else result[0]
        levels += 1
    assert levels < depth, "nesting was not cut off"
    assert levels >= 8, "ordinary nesting must still be shown"
    assert isinstance(result, str) and result != "bottom" and "deep" in result


def test_nesting_within_the_limit_is_kept_whole():
    value = any_value({"a": {"b": {"c": [1, [2, {"d": "e"}]]}}})
    assert any_value_to_python(value) == {"a": {"b": {"c": [1, [2, {"d": "e"}]]}}}


# --- service name ------------------------------------------------------------------


@pytest.mark.parametrize(
    "resource_attrs",
    [{}, {"service.name": ""}, {"service.name": 7}, {"host.name": "box"}],
    ids=["no-attributes", "empty-name", "non-string-name", "other-attributes-only"],
)
def test_missing_service_name_becomes_unknown_service(resource_attrs):
    request = make_request([make_span(tid(1), sid(1))], service=None, **resource_attrs)
    decoded = decode(request)
    assert [col(r, "service") for r in decoded.spans] == ["unknown_service"]


def test_service_name_is_taken_per_resource():
    request = make_request([make_span(tid(1), sid(1))], service="alpha")
    request.resource_spans.extend(make_request([make_span(tid(1), sid(2), sid(1))], service="beta").resource_spans)
    decoded = decode(request)
    assert {col(r, "span_id"): col(r, "service") for r in decoded.spans} == {sid(1): "alpha", sid(2): "beta"}


# --- ids ---------------------------------------------------------------------------


BAD_SPANS = {
    "trace id too short": (tid(9)[:15], sid(9), "trace_id"),
    "trace id too long": (tid(9) + b"\x01", sid(9), "trace_id"),
    "trace id missing": (b"", sid(9), "trace_id"),
    "trace id all zero": (bytes(16), sid(9), "trace_id"),
    "span id too short": (tid(9), sid(9)[:7], "span_id"),
    "span id missing": (tid(9), b"", "span_id"),
    "span id all zero": (tid(9), bytes(8), "span_id"),
}


@pytest.mark.parametrize("case", BAD_SPANS, ids=list(BAD_SPANS))
def test_invalid_ids_reject_only_that_span(case):
    bad_trace, bad_span, field = BAD_SPANS[case]
    good = [make_span(tid(1), sid(1), name="root"), make_span(tid(1), sid(2), sid(1), name="child")]
    bad = make_span(tid(1), sid(3), name="bad")
    bad.trace_id, bad.span_id = bad_trace, bad_span
    decoded = decode(make_request([good[0], bad, good[1]]))

    assert [col(r, "name") for r in decoded.spans] == ["root", "child"]
    assert decoded.rejected == 1
    message = decoded.rejection_message
    assert message.startswith("rejected 1 span")
    assert field in message


def test_rejection_message_summarises_several_reasons():
    spans = [make_span(tid(1), sid(i)) for i in range(1, 6)]
    spans[0].trace_id = bytes(16)
    spans[1].trace_id = bytes(16)
    spans[2].span_id = b"\x01\x02"
    decoded = decode(make_request(spans))
    assert decoded.rejected == 3
    assert len(decoded.spans) == 2
    message = decoded.rejection_message
    assert "2 span(s)" in message and "trace_id" in message
    assert "1 span(s)" in message and "span_id" in message


def test_a_valid_request_has_no_rejection_message():
    decoded = decode(make_request([make_span(tid(1), sid(1))]))
    assert decoded.rejected == 0 and decoded.rejection_message == ""


def test_parent_equal_to_self_is_a_root():
    span = make_span(tid(1), sid(5), sid(5), name="self-parented")
    (row,) = decode(make_request([span])).spans
    assert col(row, "parent_span_id") is None


def test_all_zero_parent_is_a_root_and_real_parent_is_kept():
    rows = decode(make_request([make_span(tid(1), sid(1), bytes(8)), make_span(tid(1), sid(2), sid(1))])).spans
    assert [col(r, "parent_span_id") for r in rows] == [None, sid(1)]


def test_malformed_parent_id_is_rejected():
    decoded = decode(make_request([make_span(tid(1), sid(1), b"\x01\x02\x03")]))
    assert decoded.spans == [] and decoded.rejected == 1
    assert "parent_span_id" in decoded.rejection_message


def test_logfire_pending_span_placeholders_are_not_stored():
    """Logfire sends a zero-length "pending span" when a span starts, as a child of it (its SDK's own tests)."""
    logfire = {"logfire.msg_template": "agent run", "logfire.msg": "agent run"}
    real = make_span(
        tid(1), sid(1), name="agent run", duration=2_000_000_000, attributes={**logfire, "logfire.span_type": "span"}
    )
    pending = make_span(
        tid(1),
        sid(2),
        sid(1),
        name="agent run",
        duration=0,
        attributes={**logfire, "logfire.span_type": "pending_span", "logfire.pending_parent_id": "0000000000000000"},
    )
    log = make_span(tid(1), sid(3), sid(1), name="hi", duration=0, attributes={"logfire.span_type": "log"})
    instant = make_span(tid(1), sid(4), sid(1), name="an instant", duration=0)
    decoded = decode(make_request([pending, real, log, instant]))  # fmt: skip
    assert [col(r, "span_id") for r in decoded.spans] == [sid(1), sid(3), sid(4)]
    assert decoded.rejected == 0  # nothing wrong was sent: the exporter is not told of any rejection
    # A non-zero-length span is stored whatever it says of itself.
    odd = make_span(tid(2), sid(1), duration=5, attributes={"logfire.span_type": "pending_span"})
    assert len(decode(make_request([odd])).spans) == 1


# --- timestamps, status, raw copy ----------------------------------------------------------


def test_timestamps_beyond_int64_are_clamped():
    span = make_span(tid(1), sid(1))
    span.start_time_unix_nano = 2**64 - 1
    span.end_time_unix_nano = 2**63  # one past int64
    (row,) = decode(make_request([span])).spans
    assert col(row, "start_ns") == INT64_MAX
    assert col(row, "end_ns") == INT64_MAX


def test_ordinary_fields_are_carried_over():
    span = make_span(
        tid(1), sid(2), sid(1), name="chat gpt-4o", start=5, duration=7, status=2, message="boom",
        kind=Span.SPAN_KIND_CLIENT,
    )  # fmt: skip
    span.dropped_attributes_count, span.dropped_events_count, span.dropped_links_count = 3, 4, 5
    (row,) = decode(make_request([span])).spans
    assert col(row, "trace_id") == tid(1) and col(row, "span_id") == sid(2) and col(row, "parent_span_id") == sid(1)
    assert col(row, "name") == "chat gpt-4o"
    assert col(row, "kind") == Span.SPAN_KIND_CLIENT
    assert col(row, "end_ns") - col(row, "start_ns") == 7
    assert (col(row, "status_code"), col(row, "status_message")) == (2, "boom")
    assert (col(row, "dropped_attributes"), col(row, "dropped_events"), col(row, "dropped_links")) == (3, 4, 5)


def test_raw_copy_keeps_attributes_events_and_links_losslessly():
    span = make_span(tid(1), sid(2), sid(1), attributes={"n": 1, "x": 1.0, "b": b"\x00", "l": [1, "a"]})
    event = span.events.add(name="First Token Stream Event", time_unix_nano=span.start_time_unix_nano + 10)
    event.attributes.extend(kv_list({"k": "v"}))
    link = span.links.add(trace_id=tid(2), span_id=sid(7))
    link.attributes.extend(kv_list({"why": "fallback"}))
    (row,) = decode(make_request([span])).spans
    assert Span.FromString(col(row, "raw")) == span


def test_empty_request_decodes_to_nothing():
    decoded = decode(ExportTraceServiceRequest())
    assert decoded.spans == [] and decoded.rejected == 0


def test_identical_resources_are_stored_once():
    request = make_request([make_span(tid(1), sid(1))])
    request.resource_spans.extend(make_request([make_span(tid(1), sid(2))]).resource_spans)
    decoded = decode(request)
    assert len(decoded.spans) == 2
    assert len(decoded.sources) == 1


# --- hostile numbers ------------------------------------------------------------------

HOSTILE_ATTRIBUTES = {
    "int64 token counts": {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": INT64_MAX,
                           "gen_ai.usage.output_tokens": -(2**63)},
    "token count as a 40-digit string": {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": "9" * 40},
    "time to first token of 1e300 s": {"gen_ai.response.time_to_first_chunk": 1e300},
    "time to first token of 1e200 s": {"gen_ai.response.time_to_first_chunk": 1e200},
    "not-a-number values": {"gen_ai.response.time_to_first_chunk": float("nan"), "gen_ai.usage.cost": float("inf"),
                            "time_to_first_token_ms": float("-inf")},
}  # fmt: skip


def assert_storable(row: tuple) -> None:
    for name, value in zip(COL, row, strict=True):
        if type(value) is int:
            assert -(2**63) <= value <= INT64_MAX, (name, value)
        if name.endswith("_tokens") and value is not None:
            assert abs(value) < 2**50, (name, value)  # sums per trace cannot overflow


@pytest.mark.parametrize("case", HOSTILE_ATTRIBUTES, ids=list(HOSTILE_ATTRIBUTES))
def test_absurd_numbers_cost_a_field_never_the_span(case):
    good = make_span(tid(1), sid(1), name="fine")
    hostile = make_span(tid(1), sid(2), sid(1), name="hostile", attributes=HOSTILE_ATTRIBUTES[case])
    decoded = decode(make_request([good, hostile]))
    assert [col(r, "name") for r in decoded.spans] == ["fine", "hostile"]
    assert decoded.rejected == 0
    for row in decoded.spans:
        assert_storable(row)


def test_first_token_event_at_the_end_of_time_is_storable():
    span = make_span(tid(1), sid(1), name="chat", attributes={"gen_ai.operation.name": "chat"})
    span.start_time_unix_nano = 1
    span.events.add(name="First Token Stream Event", time_unix_nano=2**64 - 1)
    (row,) = decode(make_request([span])).spans
    assert_storable(row)


def test_ordinary_llm_numbers_are_kept():
    span = make_span(
        tid(1), sid(1), name="chat",
        attributes={"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 1234,
                    "gen_ai.usage.output_tokens": 56, "gen_ai.response.time_to_first_chunk": 0.25},
    )  # fmt: skip
    (row,) = decode(make_request([span])).spans
    assert col(row, "llm_kind") == "llm"
    assert (col(row, "input_tokens"), col(row, "output_tokens")) == (1234, 56)
    assert col(row, "ttft_ns") == 250_000_000


# --- undecodable bytes -----------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff\xff\xff\xff",
        b"hello world",
        b'{"resourceSpans": []}',  # OTLP/JSON sent to the protobuf endpoint
        b"\x0a\x05abc",  # a field claiming more bytes than there are
        bytes(range(256)),
    ],
    ids=["ff", "text", "json", "truncated", "all-bytes"],
)
def test_garbage_raises_decode_error_with_a_reason(garbage):
    with pytest.raises(DecodeError) as info:
        parse_trace_request(garbage)
    assert "ExportTraceServiceRequest" in str(info.value)


def test_a_logs_request_never_turns_into_spans():
    # Sent to the wrong endpoint, a logs request is refused or rejected span by span.
    logs_files = sorted(FIXTURES.glob("*.logs.otlp"))
    assert logs_files
    for path in logs_files:
        for record in read_records(path):
            try:
                decoded = decode_spans(parse_trace_request(record))
            except DecodeError:
                continue
            assert decoded.spans == []


# --- real captures ---------------------------------------------------------------------


@pytest.mark.parametrize("path", trace_fixture_files(), ids=lambda p: p.stem)
def test_every_fixture_span_is_accepted(path):
    requests = requests_of(path)
    rows, rejected = [], 0
    for record in read_records(path):
        decoded = decode_spans(parse_trace_request(record))
        rows.extend(decoded.spans)
        rejected += decoded.rejected
    assert rejected == 0
    assert {(col(r, "trace_id"), col(r, "span_id")) for r in rows} == expected_span_keys(requests)
    expected_service = {s.span_id: svc for svc, s in iter_spans(requests)}
    assert {col(r, "span_id"): col(r, "service") for r in rows} == expected_service


# --- raw span bytes cut from the request ------------------------------------------------------


def test_raw_span_bytes_are_cut_from_the_request_exactly():
    from tracetui.otlp.decode import span_bytes

    for path in trace_fixture_files():
        for record in read_records(path):
            request = parse_trace_request(record)
            spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
            cut = span_bytes(record)
            assert cut is not None and len(cut) == len(spans)
            assert [Span.FromString(b) for b in cut] == spans
            rows = decode_spans(request, record).spans
            assert [row[COL["raw"]] for row in rows] == cut  # no span of the fixtures is rejected


def test_raw_bytes_keep_fields_this_version_does_not_know():
    span = make_span(tid(1), sid(1), name="from the future")
    future = span.SerializeToString() + b"\xa8\x06\x2a"  # field 101 (varint 42): unknown to this schema
    resource_spans = b"\x12" + bytes([len(future) + 2]) + b"\x12" + bytes([len(future)]) + future
    data = b"\x0a" + bytes([len(resource_spans)]) + resource_spans
    (row,) = decode_spans(parse_trace_request(data), data).spans
    assert row[COL["raw"]] == future and row[COL["name"]] == "from the future"


@pytest.mark.parametrize("cut", [1, 5, 17, -3, -1])
def test_bytes_that_disagree_with_the_parser_fall_back_to_serializing(cut):
    from tracetui.otlp.decode import span_bytes

    record = read_records(trace_fixture_files()[0])[0]
    assert span_bytes(record[:cut]) is None or len(span_bytes(record[:cut])) <= len(span_bytes(record))
    request = parse_trace_request(record)
    # bytes from some other request: the counts or shapes differ, the parsed spans win
    rows = decode_spans(request, record[:cut]).spans
    assert [Span.FromString(row[COL["raw"]]) for row in rows] == [
        s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans
    ]

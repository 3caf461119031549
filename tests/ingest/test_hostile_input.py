"""Hostile and broken input over real gRPC: the receiver answers each export and keeps serving.

Every case goes to one real ``tracetui serve --headless`` process (``shared_receiver``,
one per module), then a normal export proves the server still works, and the
stored result is read back the way a user would see it: ``tracetui spans
--json`` / ``tracetui traces --json`` and the Reader.

OTLP's rules decide acknowledge vs. reject: spans with odd *content* (missing or
cyclic parents, inverted or absurd times, huge or binary values) are valid OTLP
and are stored as sent; a span with a malformed *id* is rejected on its own via
``partial_success``; a request protobuf cannot parse (a string field holding
invalid UTF-8, nesting past protobuf's depth limit) is refused whole with
INVALID_ARGUMENT and a readable reason.
"""

from __future__ import annotations

import json
import struct
import time

import grpc
import pytest
from click.testing import CliRunner
from google.protobuf.message import DecodeError as ProtobufDecodeError
from helpers import (
    BASE_NS,
    channel_to,
    exporter_stub,
    integrity,
    ld,
    make_request,
    make_span,
    sid,
    span_with_deep_attribute,
    stored_span_keys,
    varint,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tracetui.cli.main import main
from tracetui.query.export import span_json
from tracetui.query.tree import build_tree
from tracetui.store.reader import SqliteReader

INT64_MAX = (1 << 63) - 1
#: 2200-01-01T00:00:00Z in nanoseconds (still below SQLite's int64 ceiling).
YEAR_2200_NS = 7_258_118_400 * 10**9


def htid(n: int) -> bytes:
    """A trace id whose first 8 hex digits are unique (the text list shows only those)."""
    return bytes([0x5A, 0x17, n >> 8 & 0xFF, n & 0xFF]) + bytes(range(1, 13))


# --- talking to the receiver ------------------------------------------------------------------


def export(port: int, payload: bytes, timeout: float = 60) -> ExportTraceServiceResponse:
    with channel_to(port) as channel:
        return ExportTraceServiceResponse.FromString(exporter_stub(channel)(payload, timeout=timeout))


def export_error(port: int, payload: bytes) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        export(port, payload)
    return info.value


def acknowledged(receiver, request: ExportTraceServiceRequest | bytes, rejected: int = 0) -> ExportTraceServiceResponse:
    """Export and assert the answer is OK with exactly ``rejected`` spans refused."""
    payload = request if isinstance(request, bytes) else request.SerializeToString()
    response = export(receiver.port, payload)
    assert response.partial_success.rejected_spans == rejected, response.partial_success.error_message
    return response


_next_probe = iter(range(0xF000, 0xFFFF))


def assert_still_serving(receiver) -> None:
    """A normal export right after the hostile one is acknowledged and stored."""
    trace = htid(next(_next_probe))
    acknowledged(receiver, make_request([make_span(trace, sid(1), name="probe")]))
    assert stored_span_keys(receiver.db_path, [trace]) == {(trace, sid(1))}
    assert receiver.alive(), receiver.stderr
    assert "Traceback" not in receiver.stderr


# --- what a user sees ----------------------------------------------------------------------------


def cli(*args: str):
    result = CliRunner().invoke(main, list(args), env={"TRACETUI_DB": None}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def spans_json(receiver, trace: bytes) -> dict[str, dict]:
    """`tracetui spans --json`, keyed by span id (hex)."""
    rows = json.loads(cli("spans", "--db", str(receiver.db_path), "--trace", trace.hex(), "--json"))
    return {row["span_id"]: row for row in rows}


def trace_json(receiver, trace: bytes) -> dict:
    """This trace's entry in `tracetui traces --json`."""
    rows = json.loads(cli("traces", "--db", str(receiver.db_path), "--json"))
    (row,) = [r for r in rows if r["trace_id"] == trace.hex()]
    return row


def trace_text_line(receiver, trace: bytes) -> str:
    """This trace's line in the plain `tracetui traces` listing."""
    out = cli("traces", "--db", str(receiver.db_path))
    (line,) = [line for line in out.splitlines() if trace.hex()[:8] in line]
    return line


def tree_of(receiver, trace: bytes):
    """The span tree the trace view draws (Reader + tracetui.query.tree), as (name, depth, orphan) per span."""
    reader = SqliteReader(receiver.db_path)
    try:
        spans = reader.spans(trace)
    finally:
        reader.close()
    roots = build_tree(spans)
    out, stack = [], list(reversed(roots))
    while stack:
        node = stack.pop()
        out.append((node.name, node.depth, node.orphan))
        stack.extend(reversed(node.children))
    return out


# --- the tree: missing parents, cycles, self-parents -------------------------------------------


def test_span_whose_parent_never_arrives(shared_receiver):
    trace = htid(1)
    lost = sid(0x999)  # never sent
    request = make_request([make_span(trace, sid(2), lost, name="child of nobody", start=10)])
    acknowledged(shared_receiver, request)
    assert_still_serving(shared_receiver)

    (span,) = spans_json(shared_receiver, trace).values()
    assert span["parent_span_id"] == lost.hex()  # kept as sent: the parent may still come
    row = trace_json(shared_receiver, trace)
    assert row["has_root"] is False and row["name"] == "child of nobody" and row["span_count"] == 1
    assert "no root yet" in trace_text_line(shared_receiver, trace)
    assert tree_of(shared_receiver, trace) == [("child of nobody", 0, True)]


def test_parent_id_of_the_wrong_length_is_rejected_on_its_own(shared_receiver):
    trace = htid(2)
    bad = make_span(trace, sid(2), name="bad parent")
    bad.parent_span_id = b"\x01\x02\x03"
    fine, also_fine = make_span(trace, sid(1), name="fine"), make_span(trace, sid(3), sid(1), name="also fine")
    request = make_request([fine, bad, also_fine])
    response = acknowledged(shared_receiver, request, rejected=1)
    assert "parent_span_id" in response.partial_success.error_message
    assert_still_serving(shared_receiver)
    assert stored_span_keys(shared_receiver.db_path, [trace]) == {(trace, sid(1)), (trace, sid(3))}


def test_parent_cycles(shared_receiver):
    trace = htid(3)
    spans = [
        make_span(trace, sid(1), sid(2), name="two-cycle a", start=0),
        make_span(trace, sid(2), sid(1), name="two-cycle b", start=5),
        make_span(trace, sid(3), sid(5), name="three-cycle c", start=10),
        make_span(trace, sid(4), sid(3), name="three-cycle d", start=20),
        make_span(trace, sid(5), sid(4), name="three-cycle e", start=30),
        make_span(trace, sid(6), sid(4), name="hangs off the cycle", start=40),
    ]
    acknowledged(shared_receiver, make_request(spans))
    assert_still_serving(shared_receiver)

    stored = spans_json(shared_receiver, trace)
    assert {k: v["parent_span_id"] for k, v in stored.items()} == {
        s.span_id.hex(): s.parent_span_id.hex() for s in spans
    }  # parents exactly as sent
    row = trace_json(shared_receiver, trace)
    assert row["span_count"] == 6 and row["has_root"] is False
    tree = tree_of(shared_receiver, trace)
    assert sorted(name for name, _, _ in tree) == sorted(s.name for s in spans)  # each span exactly once
    # each cycle is cut at its earliest span, which becomes an orphan root
    assert tree == [
        ("two-cycle a", 0, True),
        ("two-cycle b", 1, False),
        ("three-cycle c", 0, True),
        ("three-cycle d", 1, False),
        ("three-cycle e", 2, False),
        ("hangs off the cycle", 2, False),
    ]


def test_span_that_is_its_own_parent(shared_receiver):
    trace = htid(4)
    spans = [
        make_span(trace, sid(1), sid(1), name="narcissus", duration=10**9),
        make_span(trace, sid(2), sid(1), name="its child", start=10),
    ]
    acknowledged(shared_receiver, make_request(spans))
    assert_still_serving(shared_receiver)

    stored = spans_json(shared_receiver, trace)
    # A self-reference cannot be a parent: the span is kept, as the root.
    assert stored[sid(1).hex()]["parent_span_id"] is None
    assert stored[sid(2).hex()]["parent_span_id"] == sid(1).hex()
    row = trace_json(shared_receiver, trace)
    assert row["has_root"] is True and row["name"] == "narcissus" and row["span_count"] == 2
    assert tree_of(shared_receiver, trace) == [("narcissus", 0, False), ("its child", 1, False)]


# --- times ---------------------------------------------------------------------------------------


def test_end_before_start(shared_receiver):
    trace = htid(5)
    root = make_span(trace, sid(1), name="inverted root", start=2 * 10**9, duration=-(10**9))
    call = make_span(
        trace, sid(2), sid(1), name="chat inverted", start=3 * 10**9, duration=-(2 * 10**9),
        attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                    "gen_ai.response.time_to_first_chunk": 0.5, "gen_ai.usage.output_tokens": 100},
    )  # fmt: skip
    acknowledged(shared_receiver, make_request([root, call]))
    assert_still_serving(shared_receiver)

    stored = spans_json(shared_receiver, trace)
    for span in (root, call):
        row = stored[span.span_id.hex()]
        assert (row["start_ns"], row["end_ns"]) == (span.start_time_unix_nano, span.end_time_unix_nano)  # kept
        assert row["end_ns"] < row["start_ns"]
        assert row["duration_ms"] == 0  # never a negative duration
    assert stored[sid(2).hex()]["kind"] == "llm"
    row = trace_json(shared_receiver, trace)
    assert row["duration_ms"] == 0 and all(v >= 0 for v in row["time_split_ms"].values())
    assert row["span_count"] == 2 and row["name"] == "inverted root"


def test_zero_duration(shared_receiver):
    trace = htid(6)
    spans = [
        make_span(trace, sid(1), name="instant", duration=0),
        make_span(trace, sid(2), sid(1), name="instant chat", duration=0,
                  attributes={"gen_ai.operation.name": "chat", "gen_ai.response.time_to_first_chunk": 0.25}),
    ]  # fmt: skip
    acknowledged(shared_receiver, make_request(spans))
    assert_still_serving(shared_receiver)

    stored = spans_json(shared_receiver, trace)
    assert [row["duration_ms"] for row in stored.values()] == [0, 0]
    row = trace_json(shared_receiver, trace)
    assert row["duration_ms"] == 0 and sum(row["time_split_ms"].values()) == 0
    assert row["slowest_span"] is None or row["slowest_span"]["share"] is None  # no division by zero


def test_timestamps_in_1970_and_2200(shared_receiver):
    trace = htid(7)
    spans = [
        Span(trace_id=trace, span_id=sid(1), name="no times at all"),  # 0 and 0: 1970-01-01
        Span(trace_id=trace, span_id=sid(2), parent_span_id=sid(1), name="one ns after the epoch",
             start_time_unix_nano=1, end_time_unix_nano=2),
        Span(trace_id=trace, span_id=sid(3), parent_span_id=sid(1), name="year 2200",
             start_time_unix_nano=YEAR_2200_NS, end_time_unix_nano=YEAR_2200_NS + 10**9),
        Span(trace_id=trace, span_id=sid(4), parent_span_id=sid(1), name="end of fixed64",
             start_time_unix_nano=BASE_NS, end_time_unix_nano=2**64 - 1),
    ]  # fmt: skip
    acknowledged(shared_receiver, make_request(spans))
    assert_still_serving(shared_receiver)

    stored = spans_json(shared_receiver, trace)
    assert {k: (v["start_ns"], v["end_ns"]) for k, v in stored.items()} == {
        sid(1).hex(): (0, 0),
        sid(2).hex(): (1, 2),
        sid(3).hex(): (YEAR_2200_NS, YEAR_2200_NS + 10**9),
        sid(4).hex(): (BASE_NS, INT64_MAX),  # SQLite integers are signed 64-bit: clamped, not wrapped
    }
    row = trace_json(shared_receiver, trace)
    assert (row["start_ns"], row["end_ns"]) == (0, INT64_MAX)
    assert row["duration_ms"] == INT64_MAX / 1e6
    line = trace_text_line(shared_receiver, trace)
    assert "no times at all" in line and "—" in line  # a zero time is shown as unknown, not as 1970

    # A trace that lives only in 2200 is listed with its date.
    future = htid(8)
    acknowledged(shared_receiver, make_request([Span(trace_id=future, span_id=sid(1), name="from the future",
                 start_time_unix_nano=YEAR_2200_NS, end_time_unix_nano=YEAR_2200_NS + 5 * 10**9)]))  # fmt: skip
    assert "2200-01-01" in trace_text_line(shared_receiver, future)
    assert trace_json(shared_receiver, future)["duration_ms"] == 5000


# --- size ----------------------------------------------------------------------------------------


def test_hundred_thousand_spans_in_one_trace(shared_receiver):
    """One export: a root, 50,000 children under it and a 49,999-deep chain."""
    trace = htid(9)
    n = 100_000
    half = n // 2
    spans = [make_span(trace, sid(1), name="huge run", duration=n * 1000)]
    spans += [
        make_span(trace, sid(i), sid(1), name=f"fan {i}", start=i * 1000, duration=500) for i in range(2, half + 2)
    ]
    chain_parent = sid(1)
    for i in range(half + 2, n + 1):
        spans.append(make_span(trace, sid(i), chain_parent, name=f"chain {i}", start=i * 1000, duration=500))
        chain_parent = sid(i)
    payload = make_request(spans).SerializeToString()
    del spans
    acknowledged(shared_receiver, payload)
    assert_still_serving(shared_receiver)

    assert len(stored_span_keys(shared_receiver.db_path, [trace])) == n
    row = trace_json(shared_receiver, trace)
    assert row["span_count"] == n and row["name"] == "huge run" and row["has_root"] is True
    # (the tree of a trace this size is drawn in tests/ui/test_hostile_ui.py)
    assert integrity(shared_receiver.db_path) == "ok"


def test_ten_megabyte_attribute_values(shared_receiver):
    trace = htid(10)
    text = ("lorem ipsum " * 900_000)[:10_000_000]
    blob = bytes(range(256)) * (10_000_000 // 256)
    span = make_span(trace, sid(1), name="big values", attributes={"gen_ai.prompt": text, "blob": blob, "small": 1})
    acknowledged(shared_receiver, make_request([span]))
    assert_still_serving(shared_receiver)

    reader = SqliteReader(shared_receiver.db_path)
    try:
        (row,) = span_json(reader, trace)
        detail = reader.span_detail(trace, sid(1))
    finally:
        reader.close()
    assert row["attributes"]["gen_ai.prompt"] == text  # stored whole and retrievable
    assert row["attributes"]["blob"] == blob.hex()
    assert row["attributes"]["small"] == 1
    assert detail is not None and detail.attributes["gen_ai.prompt"] == text
    # the text listing stays one short line per span
    out = cli("spans", "--db", str(shared_receiver.db_path), "--trace", trace.hex())
    assert len(out) < 200 and "big values" in out


# --- bytes and encodings ------------------------------------------------------------------------------


def test_binary_bytes_values_are_fine(shared_receiver):
    trace = htid(11)
    binary = bytes(range(256)) + b"\xff\xfe\xc3(\x80\x00\x1b[31m"
    span = make_span(trace, sid(1), name="binary", attributes={
        "payload": binary, "empty": b"", "list": [b"\x00\xff", "text", 3], "nested": {"raw": b"\x80\x81"}})  # fmt: skip
    span.events.add(name="bytes event", time_unix_nano=BASE_NS).attributes.add(key="b").value.bytes_value = b"\xc0\xc1"
    acknowledged(shared_receiver, make_request([span], **{"host.blob": b"\xde\xad\xbe\xef"}))
    assert_still_serving(shared_receiver)

    (row,) = spans_json(shared_receiver, trace).values()
    assert row["attributes"] == {
        "payload": binary.hex(), "empty": "", "list": ["00ff", "text", 3], "nested": {"raw": "8081"}}  # fmt: skip
    assert row["events"][0]["attributes"] == {"b": "c0c1"}
    assert row["resource"]["host.blob"] == "deadbeef"


# More of the hand-written protobuf encoder (helpers.ld): the OTLP protobuf classes refuse
# to serialize invalid UTF-8, so the hostile bytes must be put on the wire directly.


def _fixed64(field: int, value: int) -> bytes:
    return varint(field << 3 | 1) + struct.pack("<Q", value)


def _kv(key: bytes, string_value: bytes) -> bytes:
    return ld(1, key) + ld(2, ld(1, string_value))  # KeyValue{key, value: AnyValue{string_value}}


def wire_request(trace: bytes, *, service=b"wire-svc", name=b"wire span", key=b"note", value=b"fine") -> bytes:
    """ExportTraceServiceRequest{resource_spans: [{resource, scope_spans: [{spans: [two spans]}]}]}."""

    def span(span_id: bytes, span_name: bytes) -> bytes:
        return (ld(1, trace) + ld(2, span_id) + ld(5, span_name) + _fixed64(7, BASE_NS) + _fixed64(8, BASE_NS + 10**6)
                + ld(9, _kv(key, value)))  # fmt: skip

    resource = ld(1, _kv(b"service.name", service))
    scope_spans = ld(2, span(sid(1), b"innocent bystander")) + ld(2, span(sid(2), name))
    return ld(1, ld(1, resource) + ld(2, scope_spans))


INVALID_UTF8 = b"\xff\xfe\xc3(\xed\xa0\x80 overlong \xc0\xaf"


def test_hand_encoder_writes_valid_otlp(shared_receiver):
    """The encoder above is right: with valid UTF-8 the same bytes are an ordinary request."""
    trace = htid(12)
    payload = wire_request(trace, value="café ✓".encode())
    parsed = ExportTraceServiceRequest.FromString(payload)
    assert [s.name for s in parsed.resource_spans[0].scope_spans[0].spans] == ["innocent bystander", "wire span"]
    acknowledged(shared_receiver, payload)
    stored = spans_json(shared_receiver, trace)
    assert stored[sid(2).hex()]["attributes"] == {"note": "café ✓"}
    assert stored[sid(2).hex()]["service"] == "wire-svc"


@pytest.mark.parametrize("where", ["attribute value", "attribute key", "span name", "service name"])
def test_invalid_utf8_in_a_string_field_rejects_the_request(shared_receiver, where):
    trace = htid(13 + ["attribute value", "attribute key", "span name", "service name"].index(where))
    field = {"attribute value": "value", "attribute key": "key", "span name": "name", "service name": "service"}[where]
    payload = wire_request(trace, **{field: INVALID_UTF8})
    err = export_error(shared_receiver.port, payload)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT  # permanent: the exporter must not retry
    assert "not a valid ExportTraceServiceRequest" in err.details() and "UTF-8" in err.details()
    assert "Traceback" not in err.details()
    assert stored_span_keys(shared_receiver.db_path, [trace]) == set()  # the whole request, bystander too
    assert_still_serving(shared_receiver)


# --- nesting ------------------------------------------------------------------------------------------------


def test_deeply_nested_kvlist_values(shared_receiver):
    trace = htid(20)
    # As deep as protobuf parses inside a request (its limit is 100 messages, three per level).
    span = Span.FromString(span_with_deep_attribute(trace, sid(1), "deep but legal", 30))
    acknowledged(shared_receiver, make_request([span]))
    assert_still_serving(shared_receiver)
    (row,) = spans_json(shared_receiver, trace).values()
    value, depth = row["attributes"]["deep"], 0
    while isinstance(value, dict):
        (value,) = value.values()
        depth += 1
    assert (depth, value) == (30, "bottom")


@pytest.mark.parametrize("levels", [32, 40, 5_000])
def test_a_span_nested_past_protobufs_limit_is_refused_alone(shared_receiver, levels):
    """Protobuf counts nesting from the request's top: one such span made the whole request unreadable.

    Now that span alone is refused, through OTLP partial success, and its bystanders are stored.
    (At 32 levels the span still parses on its own, so it is stored too.)
    """
    trace = htid({32: 21, 40: 22, 5_000: 24}[levels])
    request = make_request([make_span(trace, sid(2), name="bystander")]).SerializeToString()
    # append one more span to the request's only ScopeSpans: re-encode the ResourceSpans by hand
    parsed = ExportTraceServiceRequest.FromString(request)
    resource_spans = parsed.resource_spans[0]
    deep_span = span_with_deep_attribute(trace, sid(1), "too deep", levels)
    scope_spans = resource_spans.scope_spans[0].SerializeToString() + ld(2, deep_span)
    payload = ld(1, ld(1, resource_spans.resource.SerializeToString()) + ld(2, scope_spans))
    with pytest.raises(ProtobufDecodeError):
        ExportTraceServiceRequest.FromString(payload)  # the request as a whole is too deep for protobuf
    alone_ok = levels <= 32
    response = acknowledged(shared_receiver, payload, rejected=0 if alone_ok else 1)
    if not alone_ok:
        assert "nested deeper" in response.partial_success.error_message
    expected = {(trace, sid(2))} | ({(trace, sid(1))} if alone_ok else set())
    assert stored_span_keys(shared_receiver.db_path, [trace]) == expected
    assert_still_serving(shared_receiver)


# --- names that try to talk to the terminal -------------------------------------------------------------------

NASTY = "[bold red]boom[/] [link=https://evil.example]click[/link] \x1b[2J\x1b]0;pwned\x07\x1b[31mred\x1b[0m \u202eexe.txt\rback"
ESCAPES = "\x1b[2J\x1b]0;pwned\x07 \u202eexe.txt\rback"


def test_terminal_escapes_and_markup_are_stored_exactly_and_printed_inert(shared_receiver):
    trace = htid(23)
    span = make_span(trace, sid(1), name=NASTY, status=2, message=NASTY, attributes={NASTY: NASTY})
    span.events.add(name=NASTY, time_unix_nano=BASE_NS)
    child = make_span(trace, sid(2), sid(1), name=ESCAPES, start=10)
    acknowledged(shared_receiver, make_request([span, child], service=NASTY))
    assert_still_serving(shared_receiver)

    stored = spans_json(shared_receiver, trace)  # JSON: the exact value, escaped by json itself
    row = stored[sid(1).hex()]
    assert row["name"] == row["status_message"] == row["service"] == NASTY
    assert row["attributes"] == {NASTY: NASTY} and row["events"][0]["name"] == NASTY
    assert stored[sid(2).hex()]["name"] == ESCAPES
    listing = cli("traces", "--db", str(shared_receiver.db_path))
    spans_text = cli("spans", "--db", str(shared_receiver.db_path), "--trace", trace.hex())
    for text in (listing, spans_text):  # whole outputs: a stray CR would split a line, so no line-by-line check
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text and "\r" not in text
        assert "[bold red]boom[/]" in text  # markup is text, not styling
    assert "\\e[2J\\e]0;pwned\\x07 \\u202eexe.txt\\rback" in spans_text  # controls shown as visible escapes
    assert integrity(shared_receiver.db_path) == "ok"


def test_receiver_survived_everything(shared_receiver):
    """Last in the module: the same process answered every case above and still serves quickly."""
    started = time.monotonic()
    assert_still_serving(shared_receiver)
    assert time.monotonic() - started < 10
    assert integrity(shared_receiver.db_path) == "ok"

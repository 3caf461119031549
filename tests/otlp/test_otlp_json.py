"""OTLP JSON <-> protobuf: hex ids, 64-bit integers as strings or numbers, enums, unknown fields, located errors."""

from __future__ import annotations

import base64
import json

import pytest
from helpers import FIXTURES, iter_spans, plain_attributes, read_records, requests_of, trace_fixture_files
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tracetui.otlp.decode import DecodeError
from tracetui.otlp.otlp_json import message_from_dict, message_to_dict, parse_request, signal_of

TRACE_HEX = "5B8EFFF798038103D269B633813FC60C"  # upper case: OTLP hex ids are case-insensitive
SPAN_HEX = "eee19b7ec3c1b174"
PARENT_HEX = "00f067aa0ba902b7"


def handwritten_body(**span_overrides) -> dict:
    """A request as a JavaScript exporter would send it, written by hand (not by tracetui)."""
    span = {
        "traceId": TRACE_HEX,
        "spanId": SPAN_HEX,
        "parentSpanId": PARENT_HEX,
        "name": "chat gpt-4o",
        "kind": 3,
        "startTimeUnixNano": "1544712660000000000",  # string
        "endTimeUnixNano": 1544712661300000000,  # number
        "attributes": [
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "9007199254740993"}},  # > 2**53
            {"key": "gen_ai.request.temperature", "value": {"doubleValue": 0.25}},
            {"key": "gen_ai.request.stream", "value": {"boolValue": True}},
            {"key": "blob", "value": {"bytesValue": base64.b64encode(b"\x00\xff raw").decode()}},
            {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": 2}]}}},
        ],
        "events": [{"timeUnixNano": "1544712660500000000", "name": "first token", "someFutureField": 1}],
        "links": [{"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331"}],
        "status": {"code": 2, "message": "timed out"},
        "droppedAttributesCount": 3,
        "flags": 257,
        "aFieldFromTheFuture": {"nested": [1, 2, 3]},
    }
    span.update(span_overrides)
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "js-app"}}]},
                "scopeSpans": [{"scope": {"name": "manual", "version": "1.0"}, "spans": [span]}],
            }
        ]
    }


def test_handwritten_json_with_hex_ids_and_string_integers():
    request = parse_request(json.dumps(handwritten_body()), "traces")
    assert isinstance(request, ExportTraceServiceRequest)
    (rs,) = request.resource_spans
    span = rs.scope_spans[0].spans[0]
    assert span.trace_id == bytes.fromhex(TRACE_HEX) and len(span.trace_id) == 16
    assert span.span_id == bytes.fromhex(SPAN_HEX)
    assert span.parent_span_id == bytes.fromhex(PARENT_HEX)
    assert span.links[0].trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"
    assert span.links[0].span_id.hex() == "b7ad6b7169203331"
    assert span.start_time_unix_nano == 1544712660000000000
    assert span.end_time_unix_nano == 1544712661300000000
    assert span.events[0].time_unix_nano == 1544712660500000000
    assert span.kind == 3 and span.status.code == 2 and span.status.message == "timed out"
    assert span.dropped_attributes_count == 3 and span.flags == 257
    assert plain_attributes(span.attributes) == {
        "gen_ai.usage.input_tokens": 9007199254740993,  # exact: never went through a float
        "gen_ai.request.temperature": 0.25,
        "gen_ai.request.stream": True,
        "blob": b"\x00\xff raw".hex(),  # bytesValue stays base64 on the wire (only ids are hex)
        "tags": ["a", 2],
    }
    assert plain_attributes(rs.resource.attributes) == {"service.name": "js-app"}
    assert (rs.scope_spans[0].scope.name, rs.scope_spans[0].scope.version) == ("manual", "1.0")


def test_enum_names_snake_case_keys_and_absent_parent_are_accepted():
    body = {
        "resource_spans": [
            {
                "scope_spans": [
                    {
                        "spans": [
                            {
                                "trace_id": TRACE_HEX.lower(),
                                "span_id": SPAN_HEX,
                                "parent_span_id": "",
                                "kind": "SPAN_KIND_SERVER",
                                "start_time_unix_nano": 5,
                                "status": {"code": "STATUS_CODE_OK"},
                            }
                        ]
                    }
                ]
            }
        ]
    }
    span = parse_request(json.dumps(body), "traces").resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id == bytes.fromhex(TRACE_HEX)
    assert span.parent_span_id == b""
    assert (span.kind, span.status.code, span.start_time_unix_nano) == (2, 1, 5)


def test_logs_request_ids_are_hex_too():
    body = {
        "resourceLogs": [
            {
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "timeUnixNano": "1700000000000000000",
                                "severityNumber": 9,
                                "eventName": "gen_ai.evaluation.result",
                                "traceId": TRACE_HEX,
                                "spanId": SPAN_HEX,
                                "body": {"stringValue": "hi"},
                            }
                        ]
                    }
                ]
            }
        ]
    }
    assert signal_of(body) == "logs"
    request = parse_request(json.dumps(body).encode(), "logs")
    assert isinstance(request, ExportLogsServiceRequest)
    record = request.resource_logs[0].scope_logs[0].log_records[0]
    assert record.trace_id == bytes.fromhex(TRACE_HEX) and record.span_id == bytes.fromhex(SPAN_HEX)
    assert (record.time_unix_nano, record.severity_number, record.event_name) == (
        1700000000000000000,
        9,
        "gen_ai.evaluation.result",
    )


@pytest.mark.parametrize(
    ("override", "where", "what"),
    [
        ({"traceId": "not-hex-at-all"}, "resourceSpans[0].scopeSpans[0].spans[0].traceId", "not hex"),
        ({"spanId": "abc"}, "resourceSpans[0].scopeSpans[0].spans[0].spanId", "odd number of hex digits"),
        ({"parentSpanId": 12}, "resourceSpans[0].scopeSpans[0].spans[0].parentSpanId", "expected a hex string"),
        ({"startTimeUnixNano": "soon"}, "resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano", "soon"),
        ({"links": [{}, {"spanId": "zz"}]}, "resourceSpans[0].scopeSpans[0].spans[0].links[1].spanId", "not hex"),
        ({"attributes": [{"key": "k", "value": {"intValue": "1.5x"}}]},
         "resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value.intValue", "1.5x"),
        ({"events": {"name": "x"}}, "resourceSpans[0].scopeSpans[0].spans[0].events", "expected a JSON array"),
    ],
    ids=["trace-not-hex", "odd-span-id", "number-id", "bad-int64", "link-id", "attribute-int", "events-not-list"],
)  # fmt: skip
def test_errors_say_where(override, where, what):
    with pytest.raises(DecodeError) as info:
        parse_request(json.dumps(handwritten_body(**override)), "traces")
    message = str(info.value)
    assert message.startswith(f"{where}: "), message
    assert what in message


def test_the_error_names_the_right_span_among_many():
    body = handwritten_body()
    spans = body["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans += [dict(spans[0], spanId=f"{i:016x}") for i in range(1, 4)]
    spans[3]["traceId"] = "g" * 32
    with pytest.raises(DecodeError, match=r"^resourceSpans\[0\]\.scopeSpans\[0\]\.spans\[3\]\.traceId: not hex"):
        parse_request(json.dumps(body), "traces")


@pytest.mark.parametrize(
    ("text", "expected"),
    [('{"resourceSpans": [', "invalid JSON at line 1 column 20"), ("[1, 2]", "expected a JSON object"),
     (b"\xff\xfe{", "invalid JSON"), ('{"resourceSpans": 5}', "resourceSpans: expected a JSON array")],
)  # fmt: skip
def test_malformed_documents(text, expected):
    with pytest.raises(DecodeError) as info:
        parse_request(text, "traces")
    assert expected in str(info.value)


def test_unknown_fields_and_input_are_left_alone():
    body = handwritten_body()
    before = json.dumps(body, sort_keys=True)
    message_from_dict(body, ExportTraceServiceRequest)
    assert json.dumps(body, sort_keys=True) == before  # the caller's dict is not rewritten


# --- protobuf -> JSON ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", trace_fixture_files(), ids=lambda p: p.stem)
def test_encoder_writes_otlp_json_and_reads_back_the_same_message(path):
    for request in requests_of(path):
        obj = message_to_dict(request)
        text = json.dumps(obj)
        spans_json = [s for rs in obj["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
        spans_pb = [s for _, s in iter_spans([request])]
        assert len(spans_json) == len(spans_pb)
        for sj, sp in zip(spans_json, spans_pb, strict=True):
            assert sj["traceId"] == sp.trace_id.hex()  # hex, lower case, not base64
            assert sj["spanId"] == sp.span_id.hex()
            assert sj.get("parentSpanId", "") == sp.parent_span_id.hex()
            assert sj["startTimeUnixNano"] == str(sp.start_time_unix_nano)  # 64-bit integers as strings
            assert sj["endTimeUnixNano"] == str(sp.end_time_unix_nano)
            assert sj.get("kind", 0) == sp.kind and isinstance(sj.get("kind", 0), int)  # enums as integers
            for link_json, link in zip(sj.get("links", []), sp.links, strict=True):
                assert (link_json["traceId"], link_json["spanId"]) == (link.trace_id.hex(), link.span_id.hex())
        assert "start_time_unix_nano" not in text and "resource_spans" not in text  # lowerCamelCase
        assert parse_request(text, "traces") == request


def test_logs_fixture_round_trips():
    for path in sorted(FIXTURES.glob("*.logs.otlp")):
        for record in read_records(path):
            request = ExportLogsServiceRequest.FromString(record)
            obj = message_to_dict(request)
            assert signal_of(obj) == "logs"
            records_json = [r for rl in obj["resourceLogs"] for sl in rl["scopeLogs"] for r in sl["logRecords"]]
            records_pb = [r for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records]
            for rj, rp in zip(records_json, records_pb, strict=True):
                assert rj.get("traceId", "") == rp.trace_id.hex()
                assert rj.get("spanId", "") == rp.span_id.hex()
            assert parse_request(json.dumps(obj), "logs") == request


def test_bytes_attribute_values_stay_base64_in_json():
    request = parse_request(json.dumps(handwritten_body()), "traces")
    attrs = message_to_dict(request)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]
    blob = next(a for a in attrs if a["key"] == "blob")
    assert base64.b64decode(blob["value"]["bytesValue"]) == b"\x00\xff raw"
    big = next(a for a in attrs if a["key"] == "gen_ai.usage.input_tokens")
    assert big["value"]["intValue"] == "9007199254740993"

"""OTLP to the exporter's rows (its value mapping: pcommon ``AsString``), and back for the normalizer."""

from __future__ import annotations

import base64
import math

import pytest
from helpers import FIXTURES, any_value, make_request, make_span, read_records, sid, tid, trace_fixture_files
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tracetui.clickhouse.convert import (
    LOG_COLUMNS,
    TRACE_COLUMNS,
    as_string,
    format_double,
    log_rows,
    logs_request,
    spans_request,
    trace_rows,
)
from tracetui.model.rows import SPAN_COLUMNS
from tracetui.otlp.signals import decode_request

# --- AsString, as the exporter writes every attribute value ---------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.18, "0.18"), (2.0, "2"), (1e-7, "1e-7"), (1e21, "1e+21"), (1e20, "100000000000000000000"),
        (-0.5, "-0.5"), (1e-6, "0.000001"), (123456789.125, "123456789.125"), (0.1 + 0.2, "0.30000000000000004"),
        (float("nan"), "NaN"), (float("inf"), "+Inf"), (float("-inf"), "-Inf"), (0.0, "0"),
    ],
)  # fmt: skip
def test_doubles_in_the_shortest_javascript_style_form(value: float, text: str) -> None:
    assert format_double(value) == text
    if math.isfinite(value):
        assert float(text) == value  # the shortest form that reads back to the same double


def test_every_value_kind_as_the_exporter_writes_it() -> None:
    assert as_string(AnyValue(string_value="a<b")) == "a<b"  # strings unchanged
    assert as_string(AnyValue(int_value=-512)) == "-512"
    assert as_string(AnyValue(bool_value=True)) == "true"
    assert as_string(AnyValue(bool_value=False)) == "false"
    assert as_string(AnyValue(bytes_value=b"\x00\xff")) == base64.b64encode(b"\x00\xff").decode()
    assert as_string(AnyValue()) == ""
    array = AnyValue(array_value=ArrayValue(values=[
        AnyValue(string_value="stop"), AnyValue(int_value=1), AnyValue(double_value=0.5), AnyValue(bool_value=True),
        AnyValue(bytes_value=b"\x01"), AnyValue(),
    ]))  # fmt: skip
    assert as_string(array) == '["stop",1,0.5,true,"AQ==",null]'
    kvlist = AnyValue(kvlist_value=KeyValueList(values=[
        KeyValue(key="z", value=AnyValue(double_value=2.0)), KeyValue(key="a", value=AnyValue(string_value="<&>")),
    ]))  # fmt: skip
    # Go's json.Marshal: map keys sorted, no spaces, HTML characters escaped
    assert as_string(kvlist) == '{"a":"\\u003c\\u0026\\u003e","z":2}'


def test_a_span_as_one_exporter_row() -> None:
    span = make_span(tid(1), sid(2), sid(1), name="chat", kind=Span.SPAN_KIND_CLIENT, duration=2_500_000,
                     status=Status.STATUS_CODE_ERROR,
                     attributes={"gen_ai.usage.input_tokens": 512, "gen_ai.request.temperature": 0.18,
                                 "gen_ai.request.stream": True, "gen_ai.response.finish_reasons": ["stop"]})  # fmt: skip
    span.events.add(name="exception", time_unix_nano=span.start_time_unix_nano + 10,
                    attributes=[KeyValue(key="exception.type", value=any_value("TimeoutError"))])  # fmt: skip
    span.links.add(trace_id=tid(9), span_id=sid(9))
    request = make_request([span], service="svc")
    (row,) = trace_rows(request)
    values = dict(zip(TRACE_COLUMNS, row, strict=True))
    assert values["TraceId"] == tid(1).hex() and values["SpanId"] == sid(2).hex()
    assert values["ParentSpanId"] == sid(1).hex()
    assert (values["SpanKind"], values["StatusCode"], values["ServiceName"]) == ("Client", "Error", "svc")
    assert values["Timestamp"] == span.start_time_unix_nano and values["Duration"] == 2_500_000
    assert values["SpanAttributes"] == {"gen_ai.usage.input_tokens": "512", "gen_ai.request.temperature": "0.18",
                                        "gen_ai.request.stream": "true",
                                        "gen_ai.response.finish_reasons": '["stop"]'}  # fmt: skip
    assert values["Events.Name"] == ["exception"] and values["Events.Attributes"] == [
        {"exception.type": "TimeoutError"}
    ]
    assert values["Links.TraceId"] == [tid(9).hex()] and values["Links.SpanId"] == [sid(9).hex()]
    assert values["ResourceAttributes"]["service.name"] == "svc"


def test_a_root_has_an_empty_parent_and_a_missing_service_is_empty() -> None:
    root = make_span(tid(1), sid(1), None, name="root")
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.append(root)
    (row,) = trace_rows(request)
    values = dict(zip(TRACE_COLUMNS, row, strict=True))
    assert values["ParentSpanId"] == "" and values["ServiceName"] == ""


# --- and back: the normalizer reads the strings as it reads typed values --------------------------


def _decoded_fields(request: ExportTraceServiceRequest) -> dict[bytes, tuple]:
    """Every decoded column but the raw bytes and the source id (a hash of the resource, whose values the
    exporter turned into strings)."""
    decoded = decode_request("traces", request.SerializeToString())
    kept = [i for i, name in enumerate(SPAN_COLUMNS) if name not in ("raw", "source_id")]
    return {row[1]: tuple(row[i] for i in kept) for row in decoded.spans}


@pytest.mark.parametrize("path", trace_fixture_files(), ids=lambda p: p.name)
def test_every_capture_normalizes_the_same_from_exporter_rows(path) -> None:
    """Tokens, models, TTFT, kinds, provenance... of every span are the same whether the attribute values
    arrive typed (OTLP) or as the exporter's strings: the string forms are read, not guessed back."""
    for data in read_records(path):
        request = ExportTraceServiceRequest.FromString(data)
        rows = [dict(zip(TRACE_COLUMNS, r, strict=True)) for r in trace_rows(request)]
        back = spans_request(rows)
        assert all(kv.value.WhichOneof("value") == "string_value"
                   for rs in back.resource_spans for ss in rs.scope_spans for s in ss.spans for kv in s.attributes)  # fmt: skip
        assert _decoded_fields(back) == _decoded_fields(request), path.name


def test_old_exporter_spellings_read_the_same() -> None:
    """Rows written by exporter builds of 2022-2023: SPAN_KIND_CLIENT, STATUS_CODE_ERROR."""
    span = make_span(tid(1), sid(2), None, kind=Span.SPAN_KIND_CLIENT, status=Status.STATUS_CODE_ERROR)
    (row,) = trace_rows(make_request([span]))
    values = dict(zip(TRACE_COLUMNS, row, strict=True)) | {
        "SpanKind": "SPAN_KIND_CLIENT",
        "StatusCode": "STATUS_CODE_ERROR",
    }
    (back,) = spans_request([values]).resource_spans[0].scope_spans[0].spans
    assert back.kind == Span.SPAN_KIND_CLIENT and back.status.code == Status.STATUS_CODE_ERROR


def test_log_records_as_exporter_rows_and_back() -> None:
    for data in read_records(FIXTURES / "openlit_openai.logs.otlp"):
        request = ExportLogsServiceRequest.FromString(data)
        rows = log_rows(request)
        assert rows
        for row in rows:
            values = dict(zip(LOG_COLUMNS, row, strict=True))
            assert values["Timestamp"] > 0 and isinstance(values["Body"], str)
        back = logs_request([dict(zip(LOG_COLUMNS, r, strict=True)) for r in rows])
        original = decode_request("logs", request.SerializeToString())
        again = decode_request("logs", back.SerializeToString())
        assert [e[3:5] for e in again.evaluations] == [e[3:5] for e in original.evaluations]
        assert len(again.logs) == len(original.logs)

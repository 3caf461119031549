"""OTLP to the ClickHouse exporter's rows, and back.

Forward (:func:`trace_rows`, :func:`log_rows`) follows the exporter's own mapping
(``exporter/clickhouseexporter``, ``exporter_traces.go`` / ``exporter_logs.go`` and
``internal/util.go`` of opentelemetry-collector-contrib, the v0.162.0 era; see
tracetui/clickhouse/schema.py for what was read and how):

* every attribute value becomes a string, as ``pcommon.Value.AsString()`` writes it:
  ints in decimal, doubles in the shortest JavaScript-style form (``0.18``, ``2``,
  ``1e-7``), bools ``true``/``false``, bytes in standard base64, arrays and maps as
  JSON text, an empty value as ``""``;
* ids in lower-case hex, an all-zero (absent) id as ``""`` (a root's ``ParentSpanId``);
* ``Timestamp`` is the span's start, ``Duration`` its length in nanoseconds;
* ``SpanKind`` ``Client``/``Server``/..., ``StatusCode`` ``Unset``/``Ok``/``Error``;
* events and links as the ``Events.*`` / ``Links.*`` parallel arrays of the Nested columns.

It is what ``tracetui import --into chdb:PATH`` writes and what the tests load, so
the reader is tested against the exporter's shape of the data, not ours.

Backward (:func:`spans_request`, :func:`logs_request`) rebuilds OTLP messages from
rows read back, so that the spans on screen go through the same decoder and
normalizer as spans received over OTLP. The values stay strings: what the
exporter flattened is not guessed back into types (a ``"512"`` may have been a
string), and the normalizer reads ``"512"``, ``"0.18"``, ``"true"`` and JSON
arrays as it reads typed values. Rows written by exporter builds of 2022-2023
(``SPAN_KIND_CLIENT``, ``STATUS_CODE_ERROR``) read the same.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

#: Columns of ``otel_traces`` written by :func:`trace_rows`, in row order.
TRACE_COLUMNS = (
    "Timestamp", "TraceId", "SpanId", "ParentSpanId", "TraceState", "SpanName", "SpanKind", "ServiceName",
    "ResourceAttributes", "ScopeName", "ScopeVersion", "SpanAttributes", "Duration", "StatusCode", "StatusMessage",
    "Events.Timestamp", "Events.Name", "Events.Attributes",
    "Links.TraceId", "Links.SpanId", "Links.TraceState", "Links.Attributes",
)  # fmt: skip
#: Columns of ``otel_logs`` written by :func:`log_rows`, in row order (``EventName`` only in newer tables).
LOG_COLUMNS = (
    "Timestamp", "TraceId", "SpanId", "TraceFlags", "SeverityText", "SeverityNumber", "ServiceName", "Body",
    "ResourceSchemaUrl", "ResourceAttributes", "ScopeSchemaUrl", "ScopeName", "ScopeVersion", "ScopeAttributes",
    "LogAttributes", "EventName",
)  # fmt: skip

#: pdata's ``SpanKind.String()`` names (``traceutil.SpanKindStr``), by OTLP enum value.
SPAN_KINDS = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
#: ``traceutil.StatusCodeStr``, by OTLP enum value.
STATUS_CODES = ("Unset", "Ok", "Error")
_KIND_VALUE = {name: i for i, name in enumerate(SPAN_KINDS)} | {
    f"SPAN_KIND_{name.upper()}": i for i, name in enumerate(SPAN_KINDS)
}
_STATUS_VALUE = {name: i for i, name in enumerate(STATUS_CODES)} | {
    f"STATUS_CODE_{name.upper()}": i for i, name in enumerate(STATUS_CODES)
}
#: The StatusCode values that mean a failed span, in every exporter version's spelling (for SQL).
ERROR_CODES = ("Error", "STATUS_CODE_ERROR")


# --- forward: OTLP -> rows ------------------------------------------------------------------------


def _hex_id(raw: bytes) -> str:
    """``TraceIDToHexOrEmptyString``: lower-case hex, or "" for an absent (empty or all-zero) id."""
    return raw.hex() if raw and any(raw) else ""


def format_double(value: float) -> str:
    """A double as pcommon writes it (``strconv.FormatFloat(v, 'g'...)`` made JSON-like): ``0.18``, ``2``, ``1e-7``.

    The shortest digits that read back to the same double, in plain notation from
    1e-6 up to 1e21 and in exponent notation outside it (as JavaScript and Go's
    encoding/json do), ``NaN`` and ``+Inf`` / ``-Inf`` for the values JSON lacks.
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    exact = Decimal(repr(value))
    if 1e-6 <= abs(value) < 1e21:
        text = format(exact, "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    sign, digits, exponent = exact.as_tuple()
    mantissa = "".join(map(str, digits)).rstrip("0") or "0"
    power = int(exponent) + len(digits) - 1
    head = mantissa[0] + ("." + mantissa[1:] if len(mantissa) > 1 else "")
    return f"{'-' if sign else ''}{head}e{'+' if power >= 0 else '-'}{abs(power)}"


_HTML_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                                "\u2029": "\\u2029"})  # fmt: skip


def _json(value: AnyValue) -> str:
    """An array or map value as JSON, as Go's ``json.Marshal(v.AsRaw())`` writes it: no spaces, map keys
    sorted, ``<``, ``>`` and ``&`` escaped, bytes in base64, doubles as :func:`format_double`."""
    which = value.WhichOneof("value")
    if which == "array_value":
        return "[" + ",".join(_json(v) for v in value.array_value.values) + "]"
    if which == "kvlist_value":
        items = {kv.key: kv.value for kv in value.kvlist_value.values}
        return "{" + ",".join(f"{_string(k)}:{_json(items[k])}" for k in sorted(items)) + "}"
    if which == "double_value":
        number = value.double_value
        return format_double(number) if math.isfinite(number) else "null"
    if which in ("string_value", "bytes_value"):
        return _string(as_string(value))
    if which is None:
        return "null"
    return as_string(value)  # int, bool


def _string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False).translate(_HTML_ESCAPES)


def as_string(value: AnyValue) -> str:
    """``pcommon.Value.AsString()``: how the exporter writes every attribute value."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "int_value":
        return str(value.int_value)
    if which == "double_value":
        return format_double(value.double_value)
    if which == "bool_value":
        return "true" if value.bool_value else "false"
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if which in ("array_value", "kvlist_value"):
        return _json(value)
    return ""


def attribute_map(attributes: Iterable[KeyValue]) -> dict[str, str]:
    """``AttributesToMap``: key -> AsString() (a repeated key: the last one wins, as in a Go map)."""
    return {kv.key: as_string(kv.value) for kv in attributes}


def _service(attributes: Mapping[str, str]) -> str:
    return attributes.get("service.name", "")


def trace_rows(request: ExportTraceServiceRequest) -> list[tuple]:
    """The exporter's ``otel_traces`` rows (in :data:`TRACE_COLUMNS` order) for one export request."""
    rows = []
    for resource_spans in request.resource_spans:
        resource = attribute_map(resource_spans.resource.attributes)
        service = _service(resource)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            for span in scope_spans.spans:
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                events, links = span.events, span.links
                rows.append((
                    start, _hex_id(span.trace_id), _hex_id(span.span_id), _hex_id(span.parent_span_id),
                    span.trace_state, span.name, SPAN_KINDS[span.kind] if span.kind < len(SPAN_KINDS) else "",
                    service, resource, scope.name, scope.version, attribute_map(span.attributes),
                    max(end - start, 0), STATUS_CODES[span.status.code] if span.status.code < 3 else "",
                    span.status.message,
                    [e.time_unix_nano for e in events], [e.name for e in events],
                    [attribute_map(e.attributes) for e in events],
                    [_hex_id(link.trace_id) for link in links], [_hex_id(link.span_id) for link in links],
                    [link.trace_state for link in links], [attribute_map(link.attributes) for link in links],
                ))  # fmt: skip
    return rows


def log_rows(request: ExportLogsServiceRequest) -> list[tuple]:
    """The exporter's ``otel_logs`` rows (in :data:`LOG_COLUMNS` order) for one export request."""
    rows = []
    for resource_logs in request.resource_logs:
        resource = attribute_map(resource_logs.resource.attributes)
        service = _service(resource)
        for scope_logs in resource_logs.scope_logs:
            scope = scope_logs.scope
            scope_attributes = attribute_map(scope.attributes)
            for record in scope_logs.log_records:
                rows.append((
                    record.time_unix_nano or record.observed_time_unix_nano, _hex_id(record.trace_id),
                    _hex_id(record.span_id), record.flags & 0xFF, record.severity_text, record.severity_number,
                    service, as_string(record.body), resource_logs.schema_url, resource, scope_logs.schema_url,
                    scope.name, scope.version, scope_attributes, attribute_map(record.attributes), record.event_name,
                ))  # fmt: skip
    return rows


# --- backward: rows -> OTLP -----------------------------------------------------------------------


def _key_values(target, attributes: Mapping[str, str]) -> None:
    for key, value in attributes.items():
        target.add(key=key, value=AnyValue(string_value=value))


def _id(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:  # not the exporter's hex: no usable id
        return b""


def spans_request(rows: Sequence[Mapping[str, Any]]) -> ExportTraceServiceRequest:
    """An export request holding these ``otel_traces`` rows (read with the names of :data:`TRACE_COLUMNS`,
    ``Timestamp`` and ``Events.Timestamp`` as integer nanoseconds), grouped by resource and scope."""
    request = ExportTraceServiceRequest()
    groups: dict[tuple, Any] = {}
    for row in rows:
        resource: Mapping[str, str] = row["ResourceAttributes"]
        key = (tuple(sorted(resource.items())), row["ScopeName"], row["ScopeVersion"])
        scope_spans = groups.get(key)
        if scope_spans is None:
            resource_spans = request.resource_spans.add()
            _key_values(resource_spans.resource.attributes, resource)
            scope_spans = groups[key] = resource_spans.scope_spans.add()
            scope_spans.scope.name, scope_spans.scope.version = row["ScopeName"], row["ScopeVersion"]
        span: Span = scope_spans.spans.add()
        span.trace_id, span.span_id, span.parent_span_id = (_id(row["TraceId"]), _id(row["SpanId"]),
                                                            _id(row["ParentSpanId"]))  # fmt: skip
        span.trace_state, span.name = row["TraceState"], row["SpanName"]
        span.kind = _KIND_VALUE.get(row["SpanKind"], 0)  # type: ignore[assignment]
        span.start_time_unix_nano = row["Timestamp"]
        span.end_time_unix_nano = row["Timestamp"] + row["Duration"]
        _key_values(span.attributes, row["SpanAttributes"])
        span.status.CopyFrom(Status(code=_STATUS_VALUE.get(row["StatusCode"], 0), message=row["StatusMessage"]))  # type: ignore[arg-type]
        for time_ns, name, attributes in zip(row["Events.Timestamp"], row["Events.Name"], row["Events.Attributes"],
                                             strict=False):  # fmt: skip
            event = span.events.add(time_unix_nano=time_ns, name=name)
            _key_values(event.attributes, attributes)
        for trace_id, span_id, state, attributes in zip(row["Links.TraceId"], row["Links.SpanId"],
                                                        row["Links.TraceState"], row["Links.Attributes"],
                                                        strict=False):  # fmt: skip
            link = span.links.add(trace_id=_id(trace_id), span_id=_id(span_id), trace_state=state)
            _key_values(link.attributes, attributes)
    return request


def logs_request(rows: Sequence[Mapping[str, Any]]) -> ExportLogsServiceRequest:
    """An export request holding these ``otel_logs`` rows (``Timestamp`` as integer nanoseconds); columns an
    older table lacks (``EventName``, ``ScopeAttributes``, schema URLs) may be absent from the rows."""
    request = ExportLogsServiceRequest()
    groups: dict[tuple, Any] = {}
    for row in rows:
        resource: Mapping[str, str] = row["ResourceAttributes"]
        scope_attributes: Mapping[str, str] = row.get("ScopeAttributes") or {}
        key = (tuple(sorted(resource.items())), row.get("ResourceSchemaUrl", ""), row["ScopeName"],
               row["ScopeVersion"], tuple(sorted(scope_attributes.items())), row.get("ScopeSchemaUrl", ""))  # fmt: skip
        scope_logs = groups.get(key)
        if scope_logs is None:
            resource_logs = request.resource_logs.add(schema_url=row.get("ResourceSchemaUrl", ""))
            _key_values(resource_logs.resource.attributes, resource)
            scope_logs = groups[key] = resource_logs.scope_logs.add(schema_url=row.get("ScopeSchemaUrl", ""))
            scope_logs.scope.name, scope_logs.scope.version = row["ScopeName"], row["ScopeVersion"]
            _key_values(scope_logs.scope.attributes, scope_attributes)
        record = scope_logs.log_records.add(
            time_unix_nano=row["Timestamp"], observed_time_unix_nano=row["Timestamp"], trace_id=_id(row["TraceId"]),
            span_id=_id(row["SpanId"]), flags=row.get("TraceFlags", 0), severity_text=row["SeverityText"],
            severity_number=row["SeverityNumber"], event_name=row.get("EventName", ""),
        )  # fmt: skip
        if row["Body"]:
            record.body.string_value = row["Body"]
        _key_values(record.attributes, row["LogAttributes"])
    return request

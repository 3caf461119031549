"""OTLP JSON <-> protobuf messages, with OTLP's deviations from the proto3 JSON mapping.

OTLP JSON is the proto3 JSON mapping except that trace and span ids are
hex strings (a stock protobuf JSON parser reads them as base64 and silently
produces wrong ids). Everything else the stock parser handles:

* 64-bit integers as decimal strings or as numbers,
* enums as integers, or by name (``"SPAN_KIND_SERVER"``),
* lowerCamelCase keys, and snake_case field names too,
* unknown fields are ignored.

Errors are :class:`~tracetui.otlp.decode.DecodeError` and say where, e.g.
``resourceSpans[0].scopeSpans[0].spans[3].traceId: not hex``.

Pure functions, no I/O; used by the HTTP receiver, ``tracetui import`` and
``tracetui export``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from functools import cache
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from tracetui.otlp.decode import DecodeError, length_delimited

#: Bytes fields that OTLP JSON writes as hex (Span, Span.Link, LogRecord, Exemplar).
ID_FIELDS = frozenset({"trace_id", "span_id", "parent_span_id"})

#: The request message of each signal, and the top-level key that identifies it in a JSON document.
REQUEST_TYPES: dict[str, type[Message]] = {
    "traces": ExportTraceServiceRequest,
    "logs": ExportLogsServiceRequest,
    "metrics": ExportMetricsServiceRequest,
}
SIGNAL_KEYS: dict[str, str] = {
    "resourceSpans": "traces",
    "resource_spans": "traces",
    "resourceLogs": "logs",
    "resource_logs": "logs",
    "resourceMetrics": "metrics",
    "resource_metrics": "metrics",
}

_HEX = re.compile(r"[0-9a-fA-F]*")
#: Longest error text quoted from a value.
_QUOTE = 40


# --- which fields lead to ids ---------------------------------------------------------------


@cache
def _has_ids(descriptor: Descriptor) -> bool:
    """Whether ids can occur anywhere below this message type (skips attributes and values)."""
    return _has_ids_walk(descriptor, frozenset())


def _has_ids_walk(descriptor: Descriptor, seen: frozenset[str]) -> bool:
    if descriptor.full_name in seen:
        return False
    seen = seen | {descriptor.full_name}
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_BYTES and field.name in ID_FIELDS:
            return True
        if field.message_type is not None and _has_ids_walk(field.message_type, seen):
            return True
    return False


@cache
def _fields_by_key(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    """JSON key (lowerCamelCase or the proto field name) -> field, for the fields worth walking into."""
    out: dict[str, FieldDescriptor] = {}
    for field in descriptor.fields:
        is_id = field.type == FieldDescriptor.TYPE_BYTES and field.name in ID_FIELDS
        if is_id or (field.message_type is not None and _has_ids(field.message_type)):
            out[field.json_name] = field
            out[field.name] = field
    return out


def _is_repeated(field: FieldDescriptor) -> bool:
    # protobuf >= 5.x has is_repeated; `label` is deprecated there.
    flag = getattr(field, "is_repeated", None)
    if flag is not None:
        return bool(flag() if callable(flag) else flag)
    return field.label == FieldDescriptor.LABEL_REPEATED  # type: ignore[attr-defined]  # protobuf < 5; the stubs are 5.x


def _quote(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else json.dumps(value)
    return text if len(text) <= _QUOTE else text[: _QUOTE - 1] + "…"


# --- JSON -> message ----------------------------------------------------------------------------


def _hex_to_b64(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise DecodeError(f"{where}: expected a hex string, got {_quote(value)}")
    if not _HEX.fullmatch(value):
        raise DecodeError(f"{where}: not hex: {_quote(value)}")
    if len(value) % 2:
        raise DecodeError(f"{where}: odd number of hex digits ({len(value)})")
    return base64.b64encode(bytes.fromhex(value)).decode("ascii")


# _DESCRIPTOR_STUBS: types-protobuf types a message's DESCRIPTOR as the pure-Python Descriptor or
# upb's (google._upb._message.Descriptor, a private module), two implementations of one API; the
# functions here take the public one, and the calls that pass a DESCRIPTOR say "type: ignore[arg-type]".


def _ids_to_b64(obj: object, descriptor: Descriptor, where: str) -> object:
    """A copy of ``obj`` with its id fields rewritten from hex to base64 (what ParseDict wants)."""
    if not isinstance(obj, dict):
        return obj  # ParseDict reports the type error, located by _locate_error
    keys = _fields_by_key(descriptor)
    out = None
    for key, value in obj.items():
        field = keys.get(key)
        if field is None or value is None:
            continue
        path = f"{where}.{key}" if where else key
        new: object
        if field.message_type is None:
            new = _hex_to_b64(value, path)
        elif _is_repeated(field):
            if not isinstance(value, list):
                continue
            new = [_ids_to_b64(item, field.message_type, f"{path}[{i}]") for i, item in enumerate(value)]
        else:
            new = _ids_to_b64(value, field.message_type, path)
        if out is None:
            out = dict(obj)
        out[key] = new
    return obj if out is None else out


def _strip_parse_prefixes(message: str) -> str:
    # "Failed to parse a field: Failed to parse b field: reason" -> "reason"
    while message.startswith("Failed to parse ") and ": " in message:
        message = message.split(": ", 1)[1]
    return message.rstrip(".")


def _locate_error(obj: object, descriptor: Descriptor, where: str) -> str | None:
    """Find the innermost element that ParseDict rejects; returns ``path: reason``.

    Only runs after a failure, so the happy path pays nothing for it.
    """
    if not isinstance(obj, dict):
        return f"{where or 'request'}: expected a JSON object, got {_quote(obj)}"
    cls = GetMessageClass(descriptor)
    for key, value in obj.items():
        field = descriptor.fields_by_camelcase_name.get(key) or descriptor.fields_by_name.get(key)
        if field is None or value is None:
            continue
        path = f"{where}.{key}" if where else key
        if field.message_type is not None and not field.message_type.GetOptions().map_entry:
            if _is_repeated(field):
                if not isinstance(value, list):
                    return f"{path}: expected a JSON array, got {_quote(value)}"
                for i, item in enumerate(value):
                    found = _locate_error(item, field.message_type, f"{path}[{i}]")
                    if found:
                        return found
            else:
                found = _locate_error(value, field.message_type, path)
                if found:
                    return found
        else:
            try:
                json_format.ParseDict({key: value}, cls(), ignore_unknown_fields=True)
            except json_format.ParseError as exc:
                return f"{path}: {_strip_parse_prefixes(str(exc))}"
    return None


def message_from_dict(obj: object, message_type: type[Message]) -> Message:
    """Parse one OTLP JSON object (already loaded) into ``message_type``; raises DecodeError."""
    descriptor = message_type.DESCRIPTOR
    if not isinstance(obj, dict):
        raise DecodeError(f"expected a JSON object, got {_quote(obj)}")
    converted = _ids_to_b64(obj, descriptor, "")  # type: ignore[arg-type]  # see _DESCRIPTOR_STUBS
    assert isinstance(converted, dict)  # an object in, an object out
    try:
        return json_format.ParseDict(converted, message_type(), ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        located = _locate_error(converted, descriptor, "")  # type: ignore[arg-type]  # see _DESCRIPTOR_STUBS
        raise DecodeError(located or _strip_parse_prefixes(str(exc))) from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise DecodeError(f"not a valid {descriptor.name}: {exc}") from None


def load_json(data: bytes | bytearray | str) -> Any:
    """``json.loads`` with errors that say where (line and column, or the path of the value)."""
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise DecodeError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise DecodeError(f"invalid JSON: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise DecodeError("invalid JSON: nested too deeply") from None
    except ValueError as exc:  # an integer longer than Python converts (4,300 digits by default)
        raise DecodeError(_too_long_number(data) or f"invalid JSON: {exc}") from None


class _TooLong:
    """Stands in for an integer Python refuses to convert, so that its place can be named."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


def _parse_int(text: str) -> int | _TooLong:
    try:
        return int(text)
    except ValueError:
        return _TooLong(len(text.lstrip("-")))


def _too_long_number(data: bytes | bytearray | str) -> str | None:
    """``path: integer of N digits`` for the first over-long integer in ``data`` (the slow path, after a failure)."""
    try:
        obj = json.loads(data, parse_int=_parse_int)
    except (ValueError, RecursionError):
        return None
    stack: list[tuple[str, object]] = [("", obj)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, _TooLong):
            return f"{path or 'request'}: an integer of {value.digits:,} digits (no OTLP field holds one)"
        if isinstance(value, dict):
            stack.extend((f"{path}.{k}" if path else k, v) for k, v in reversed(list(value.items())))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(value))))
    return None


def parse_request(data: bytes | bytearray | str, signal: str) -> Message:
    """An OTLP JSON request body -> the signal's Export*ServiceRequest; raises DecodeError."""
    return message_from_dict(load_json(data), REQUEST_TYPES[signal])


# --- large trace bodies, span by span --------------------------------------------------------

#: Keys only a Span has among the objects that carry a spanId (a Link has traceId and spanId too).
_SPAN_ONLY_KEYS = frozenset({"name", "kind", "startTimeUnixNano", "start_time_unix_nano", "endTimeUnixNano",
                             "end_time_unix_nano", "parentSpanId", "parent_span_id", "status", "events", "links"})  # fmt: skip


class _SpanBytes(bytes):
    """A span object of the JSON document, already converted to its protobuf encoding."""


class _NotLean(Exception):
    """The document is not the plain shape parse_traces_lean handles; the whole-document path decides."""


def _span_hook(obj: dict) -> object:
    """``json.loads`` object hook: a span is converted the moment its object is complete, its dict dropped."""
    if ("spanId" in obj or "span_id" in obj) and not _SPAN_ONLY_KEYS.isdisjoint(obj):
        try:
            return _SpanBytes(message_from_dict(obj, Span).SerializeToString())
        except DecodeError:
            raise _NotLean from None  # the whole-document path says where
    return obj


def parse_traces_lean(data: bytes | bytearray | str) -> bytes | Message:
    """An OTLP JSON traces body -> the serialized ExportTraceServiceRequest, holding one span's objects at a time.

    ``json.loads`` then ``ParseDict`` hold the whole document as Python objects
    (a 16 MB body of small spans peaks near 150 MB); here each span is
    converted as soon as the parser has read it, so the peak is the body plus
    its protobuf encoding. Anything unusual (an error, an unexpected shape)
    goes through :func:`parse_request`, which gives the same result or the
    located error.
    """
    try:
        doc = json.loads(data, object_hook=_span_hook)
        return _encode_traces(doc)
    except (_NotLean, ValueError, TypeError, RecursionError, UnicodeDecodeError):
        return parse_request(data, "traces")


def _encode_traces(doc: object) -> bytes:
    if not isinstance(doc, dict) or any(isinstance(v, _SpanBytes) for v in doc.values()):
        raise _NotLean
    out = bytearray()
    for key, groups in doc.items():
        if key not in ("resourceSpans", "resource_spans"):
            continue  # unknown fields are ignored, as ParseDict does
        for group in _list_of_objects(groups):
            out += length_delimited(
                1, _encode_group(group, ("scopeSpans", "scope_spans"), ResourceSpans, _encode_scope)
            )
    return bytes(out)


def _encode_scope(scope: dict) -> bytes:
    head = message_from_dict({k: v for k, v in scope.items() if k != "spans"}, ScopeSpans).SerializeToString()
    spans = b"".join(length_delimited(2, _span_bytes(span)) for span in _list_of(scope.get("spans")))
    return head + spans


def _encode_group(group: dict, keys: tuple[str, str], message_type: type[Message], encode_child) -> bytes:
    rest = {k: v for k, v in group.items() if k not in keys}
    out = bytearray(message_from_dict(rest, message_type).SerializeToString())
    for key in keys:
        for child in _list_of_objects(group.get(key)):
            out += length_delimited(2, encode_child(child))
    return bytes(out)


def _span_bytes(span: object) -> bytes:
    if isinstance(span, _SpanBytes):
        return span
    if isinstance(span, dict):
        return message_from_dict(span, Span).SerializeToString()  # a span with no field only spans have
    raise _NotLean


def _list_of(value: object) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _NotLean
    return value


def _list_of_objects(value: object) -> list[dict]:
    items = _list_of(value)
    if not all(isinstance(item, dict) for item in items):
        raise _NotLean
    return items


def signal_of(obj: object) -> str | None:
    """Which signal a loaded JSON request holds ("traces", "logs", "metrics"), or None if it holds none."""
    if isinstance(obj, dict):
        for key in obj:
            signal = SIGNAL_KEYS.get(key)
            if signal is not None:
                return signal
    return None


# --- message -> JSON ------------------------------------------------------------------------


def _ids_to_hex(obj: object, descriptor: Descriptor) -> object:
    if not isinstance(obj, dict):
        return obj
    keys = _fields_by_key(descriptor)
    for key, value in obj.items():
        field = keys.get(key)
        if field is None:
            continue
        if field.message_type is None:
            try:
                obj[key] = base64.b64decode(value, validate=True).hex()
            except (binascii.Error, TypeError):
                pass
        elif isinstance(value, list):
            for item in value:
                _ids_to_hex(item, field.message_type)
        else:
            _ids_to_hex(value, field.message_type)
    return obj


def message_to_dict(message: Message) -> dict[str, Any]:
    """A message as OTLP JSON: lowerCamelCase keys, ids as hex, 64-bit integers as strings, enums as integers."""
    obj = json_format.MessageToDict(message, use_integers_for_enums=True, preserving_proto_field_name=False)
    return _ids_to_hex(obj, message.DESCRIPTOR)  # type: ignore[return-value, arg-type]  # see _DESCRIPTOR_STUBS


def message_to_json(message: Message, *, indent: int | None = None) -> str:
    return json.dumps(message_to_dict(message), indent=indent, ensure_ascii=False)

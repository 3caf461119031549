"""OTLP trace requests -> rows for the writer. Pure functions, no I/O.

This runs on the receiver's gRPC threads for every request, so it touches each
span as little as possible: a handful of scalar fields, one C-level
``SerializeToString`` for the raw copy, and the normalizer's scan for LLM
fields. Attribute values are never flattened here.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator

from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tracetui.llm import evals, pricing, semconv
from tracetui.model.anyvalue import any_value_str
from tracetui.model.rows import NORMALIZED_COLUMNS, Decoded, Source

log = logging.getLogger(__name__)

INT64_MAX = (1 << 63) - 1
#: Token counts above this are garbage; a handful of int64-sized ones summed into a
#: trace row would overflow SQLite's integers and fail the whole commit.
MAX_TOKENS = 1 << 40
_NORMALIZED_LIMITS = tuple(MAX_TOKENS if c.endswith("_tokens") else INT64_MAX for c in NORMALIZED_COLUMNS)
_NO_NORMALIZED = (None,) * len(NORMALIZED_COLUMNS)
#: (index, lowest, highest) of the normalized columns that can hold integers (checked for every span):
#: a token count below zero is as much garbage as one of 2**62.
_INT_LIMITS = tuple(
    (i, 0 if name.endswith("_tokens") else -limit, limit)
    for i, (name, limit) in enumerate(zip(NORMALIZED_COLUMNS, _NORMALIZED_LIMITS, strict=False))
    if name.endswith(("_tokens", "_ns", "_count"))
)
UNKNOWN_SERVICE = "unknown_service"
_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)


class DecodeError(ValueError):
    """The request bytes are not a valid OTLP message."""


class NestedTooDeep(DecodeError):
    """Protobuf refused the message for values nested past its limit (100 messages)."""


def _parse_failure(what: str, exc: Exception) -> DecodeError:
    reason = str(exc)
    if "MaxDepth" in reason:  # upb's wording names its internals, not the cause
        return NestedTooDeep(
            f"not a valid {what}: values nested deeper than protobuf's limit of 100 messages ({reason})"
        )
    return DecodeError(f"not a valid {what}: {reason}")


def parse_trace_request(data: bytes) -> ExportTraceServiceRequest:
    """Parse protobuf bytes, raising DecodeError with a readable reason."""
    try:
        return ExportTraceServiceRequest.FromString(data)
    except Exception as exc:  # protobuf raises DecodeError, sometimes RuntimeError
        raise _parse_failure("ExportTraceServiceRequest", exc) from None


#: Why a span is refused on its own (OTLP partial success) when its values nest too deep.
TOO_DEEP = "attribute values nested deeper than protobuf's limit of 100 messages"


def decode_trace_bytes(data: bytes) -> Decoded:
    """Parse and decode a serialized trace request; raises DecodeError.

    Protobuf counts nesting from the top of the message it parses, so one span
    whose attribute nests kvlists about 31 deep makes the whole request
    unreadable. Such a request is taken apart by hand instead
    (:func:`_request_span_by_span`): each span is parsed on its own, the ones
    still too deep are refused one by one through ``partial_success``, and the
    others are stored.
    """
    try:
        request = parse_trace_request(data)
    except NestedTooDeep:
        request, refused = _request_span_by_span(data)
        decoded = decode_spans(request)  # no raw bytes to cut: each span is serialized again
        for reason in refused:
            decoded.reject(reason)
        return decoded
    return decode_spans(request, data)


def _fields_except(data: bytes, start: int, end: int, number: int) -> bytes:
    """The message ``data[start:end]`` without its length-delimited fields ``number``."""
    kept, pos = [], start
    for field_start, field_end in _embedded(data, start, end, number, with_key=True):
        kept.append(data[pos:field_start])
        pos = field_end
    kept.append(data[pos:end])
    return b"".join(kept)


def _request_span_by_span(data: bytes) -> tuple[ExportTraceServiceRequest, list[str]]:
    """The request rebuilt from the spans protobuf can parse alone; and why each other span was refused.

    A span refused here is usually the too-deep one, but another span of the
    same request may be refused for its own reason (invalid UTF-8), and says so.
    Raises the usual DecodeError when the bytes are not a request at all.
    """
    try:
        request = ExportTraceServiceRequest()
        refused: list[str] = []
        for rs_start, rs_end in _embedded(data, 0, len(data), 1):
            resource_spans = request.resource_spans.add()
            resource_spans.ParseFromString(_fields_except(data, rs_start, rs_end, 2))  # resource, schema_url
            for ss_start, ss_end in _embedded(data, rs_start, rs_end, 2):
                scope_spans = resource_spans.scope_spans.add()
                scope_spans.ParseFromString(_fields_except(data, ss_start, ss_end, 2))  # scope, schema_url
                for span_start, span_end in _embedded(data, ss_start, ss_end, 2):
                    try:
                        scope_spans.spans.append(Span.FromString(data[span_start:span_end]))
                    except ProtobufDecodeError as exc:  # this span alone
                        refused.append(_span_refusal(exc))
    except (ProtobufDecodeError, RuntimeError, ValueError, IndexError) as exc:  # not a request after all
        raise _parse_failure("ExportTraceServiceRequest", exc) from None
    return request, refused


def _span_refusal(exc: Exception) -> str:
    """Why one span protobuf could not parse is refused, for partial_success."""
    failure = _parse_failure("Span", exc)
    return TOO_DEEP if isinstance(failure, NestedTooDeep) else str(failure)


def service_name(resource: Resource) -> str:
    for kv in resource.attributes:
        if kv.key == "service.name":
            name = any_value_str(kv.value)
            if name:
                return name
    return UNKNOWN_SERVICE


def _clamp_ns(value: int) -> int:
    # fixed64 on the wire; SQLite integers are signed 64-bit.
    return value if value <= INT64_MAX else INT64_MAX


def _source(out: Decoded, resource_bytes: bytes, service: str, scope, schema_url: str) -> Source:
    """Register a resource + scope pair."""
    scope_bytes = scope.SerializeToString()
    digest = hashlib.blake2b(
        resource_bytes + b"\x00" + scope_bytes + b"\x00" + schema_url.encode(), digest_size=16
    ).digest()
    source = out.sources.get(digest)
    if source is None:
        source_id = int.from_bytes(digest[:8], "big", signed=True)
        source = out.sources[digest] = Source(
            source_id, digest, service, resource_bytes, scope.name, scope.version, scope_bytes, schema_url
        )
    return source


def _by_source(out: Decoded, resource_groups, scope_field: str, items_field: str):
    """(source, service, items) for each resource + scope group of a request, the source registered in ``out``."""
    for group in resource_groups:
        resource_bytes = group.resource.SerializeToString()
        service = service_name(group.resource)
        for scoped in getattr(group, scope_field):
            source = _source(out, resource_bytes, service, scoped.scope, scoped.schema_url or group.schema_url)
            yield source, service, getattr(scoped, items_field)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _embedded(data: bytes, start: int, end: int, number: int, with_key: bool = False) -> Iterator[tuple[int, int]]:
    """(start, end) of each length-delimited field ``number`` in the message ``data[start:end]``.

    ``with_key``: the whole field (its key and length too), else its contents.
    """
    pos = start
    while pos < end:
        field_start = pos
        key, pos = _varint(data, pos)
        wire_type = key & 7
        if wire_type == 2:
            size, pos = _varint(data, pos)
            if pos + size > end:
                raise ValueError("field runs past its message")
            if key >> 3 == number:
                yield (field_start, pos + size) if with_key else (pos, pos + size)
            pos += size
        elif wire_type == 0:
            _, pos = _varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        else:
            raise ValueError("group wire type")  # never used by OTLP; let SerializeToString handle it
    if pos != end:
        raise ValueError("message ends mid-field")


def length_delimited(number: int, value: bytes | bytearray) -> bytes:
    """Field ``number`` (wire type 2) holding ``value``, encoded: what _embedded reads back."""
    return _encode_varint(number << 3 | 2) + _encode_varint(len(value)) + value


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def span_bytes(data: bytes) -> list[bytes] | None:
    """Each Span of a serialized ExportTraceServiceRequest, as the bytes that encode it, in order.

    Cheaper than re-serializing every parsed span (~1 µs against ~3.5 µs a
    span), and byte for byte what the client sent. Walks only the two
    enclosing levels (ResourceSpans.scope_spans = 2, ScopeSpans.spans = 2).
    None when the bytes do not have the expected shape; the caller then
    serializes the parsed spans instead.
    """
    try:
        return [
            data[s3:e3]
            for s1, e1 in _embedded(data, 0, len(data), 1)
            for s2, e2 in _embedded(data, s1, e1, 2)
            for s3, e3 in _embedded(data, s2, e2, 2)
        ]
    except (ValueError, IndexError):
        return None


def decode_spans(request: ExportTraceServiceRequest, data: bytes | None = None) -> Decoded:
    """Turn a parsed request into writer rows, rejecting spans with invalid ids.

    ``data``: the bytes ``request`` was parsed from, when there were any; each
    span's raw copy is then cut from them rather than serialized again.
    """
    out = Decoded()
    raw = span_bytes(data) if data is not None else None
    if raw is not None and len(raw) != sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans):
        raw = None  # the bytes disagree with the parser: trust the parser
    n = 0
    for source, service, spans in _by_source(out, request.resource_spans, "scope_spans", "spans"):
        for span in spans:
            n += 1
            if span.start_time_unix_nano == span.end_time_unix_nano and _is_placeholder(span):
                continue
            head = _span_head(span, source.id, service, out, raw[n - 1] if raw is not None else None)
            if head is None:
                continue
            values, scan = normalized_fields(span)
            out.spans.append(head + values)
            if scan != evals.SCAN_NOTHING:
                add_evaluations(out, evals.from_span(span, scan))
    return out


def _is_placeholder(span) -> bool:
    """A Logfire "pending span": a zero-length stand-in its SDK sends when a span starts.

    It is a child of the span it stands for, under its own id, so stored it would
    show as a ghost copy of every Logfire span; the real span arrives when it ends.
    (Only zero-length spans are looked at: the check reads their attribute keys.)
    """
    for kv in span.attributes:
        if kv.key == "logfire.span_type":
            return kv.value.string_value == "pending_span"
    return False


def add_evaluations(out: Decoded, found: list[evals.Evaluation]) -> None:
    for ev in found:
        out.evaluations.append(
            (ev.trace_id or b"", ev.span_id, ev.response_id, ev.name, ev.score, ev.label, ev.explanation, ev.source,
             ev.time_ns)
        )  # fmt: skip


def _span_head(span, source_id: int, service: str, out: Decoded, raw: bytes | None) -> tuple | None:
    """The columns of a span row before the normalized ones; None when its ids are invalid."""
    trace_id = span.trace_id
    span_id = span.span_id
    if len(trace_id) != 16 or trace_id == _ZERO_TRACE_ID:
        out.reject(f"invalid trace_id ({len(trace_id)} bytes{', all zero' if trace_id and not any(trace_id) else ''})")
        return None
    if len(span_id) != 8 or span_id == _ZERO_SPAN_ID:
        out.reject(f"invalid span_id ({len(span_id)} bytes{', all zero' if span_id and not any(span_id) else ''})")
        return None
    parent = span.parent_span_id
    if not parent or parent == _ZERO_SPAN_ID:
        parent = None
    elif len(parent) != 8:
        out.reject(f"invalid parent_span_id ({len(parent)} bytes)")
        return None
    elif parent == span_id:
        # A span that is its own parent would hang every tree walk: keep it, as a root.
        parent = None
    status = span.status
    return (
        trace_id,
        span_id,
        parent,
        span.name,
        span.kind,
        source_id,
        service,
        _clamp_ns(span.start_time_unix_nano),
        _clamp_ns(span.end_time_unix_nano),
        status.code,
        status.message,
        span.dropped_attributes_count,
        span.dropped_events_count,
        span.dropped_links_count,
        raw if raw is not None else span.SerializeToString(),
    )


def normalized_fields(span) -> tuple[tuple, int | None]:
    """The span's canonical LLM fields, safe to store, and what evals.from_span needs to know.

    A value the normalizer did not expect (a time to first token of 1e300 s, a
    token count of 2**63) costs that field, never the span, its request or the
    other exports sharing its commit.
    """
    try:
        values, scan = semconv.read_span(span)
    except Exception:
        log.warning("could not normalize span %r; stored without LLM fields", span.name, exc_info=True)
        return _NO_NORMALIZED, None
    for i, lowest, highest in _INT_LIMITS:
        v = values[i]
        if type(v) is int and not lowest <= v <= highest:
            values = _clamped(values)
            break
    if values[_N["cost_usd"]] is None and values[_N["llm_kind"]] in ("llm", "embedding"):
        values = _priced(values, span.start_time_unix_nano)
    return values, scan


def _clamped(values: tuple) -> tuple:
    """``values`` with every integer outside its column's range (see _INT_LIMITS) replaced by None."""
    out = list(values)
    for i, lowest, highest in _INT_LIMITS:
        v = out[i]
        if type(v) is int and not lowest <= v <= highest:
            out[i] = None
    return tuple(out)


_N = {name: i for i, name in enumerate(NORMALIZED_COLUMNS)}
_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")


def _priced(values: tuple, start_ns: int) -> tuple:
    """Fill cost and its source from the user price file or genai-prices' bundled data."""
    cost, source = pricing.pricer().price(
        (values[_N["response_model"]], values[_N["request_model"]]),
        values[_N["provider"]],
        {name: values[_N[name]] for name in _USAGE_FIELDS},
        start_ns,
    )
    if cost is None:
        return values
    i = _N["cost_usd"]
    return (*values[:i], cost, source, *values[i + 2 :])


def parse_logs_request(data: bytes) -> ExportLogsServiceRequest:
    try:
        return ExportLogsServiceRequest.FromString(data)
    except Exception as exc:
        raise _parse_failure("ExportLogsServiceRequest", exc) from None


#: Where a log record's event name is when its ``event_name`` field is empty: older SDKs'
#: ``event.name`` attribute, and LiteLLM's ``event_name`` attribute (its OTel callback, 1.110).
_EVENT_NAME_ATTRIBUTES = ("event.name", "event_name")


def decode_logs(request: ExportLogsServiceRequest) -> Decoded:
    """Log records -> writer rows. Records tied to a span keep its ids; ids of a wrong length are rejected.

    A record has no id of its own, so its digest (record bytes + source) makes a
    resent export idempotent.
    """
    out = Decoded(unit="log record(s)")
    for source, service, records in _by_source(out, request.resource_logs, "scope_logs", "log_records"):
        for record in records:
            trace_id, span_id = record.trace_id, record.span_id
            if trace_id and (len(trace_id) != 16):
                out.reject(f"invalid trace_id ({len(trace_id)} bytes)")
                continue
            if span_id and (len(span_id) != 8):
                out.reject(f"invalid span_id ({len(span_id)} bytes)")
                continue
            raw = record.SerializeToString()
            event_name = record.event_name
            if not event_name:
                for kv in record.attributes:
                    if kv.key in _EVENT_NAME_ATTRIBUTES:
                        event_name = any_value_str(kv.value) or ""
                        break
            if event_name == evals.EVENT_NAME or evals.is_feedback_event(event_name):
                add_evaluations(out, evals.from_log_record(record))
            out.logs.append(
                (
                    hashlib.blake2b(source.digest + raw, digest_size=16).digest(),
                    trace_id if trace_id and any(trace_id) else None,
                    span_id if span_id and any(span_id) else None,
                    _clamp_ns(record.time_unix_nano),
                    _clamp_ns(record.observed_time_unix_nano),
                    record.severity_number,
                    record.severity_text,
                    event_name or None,
                    source.id,
                    service,
                    raw,
                )
            )
    return out

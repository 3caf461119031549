"""OTLP AnyValue -> Python values: the one converter every reader of attributes uses."""

from __future__ import annotations

import json
from collections.abc import Iterable

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span


def any_value_str(value: AnyValue) -> str | None:
    """The string held by an AnyValue, or None for other kinds."""
    return value.string_value if value.WhichOneof("value") == "string_value" else None


def attributes_to_dict(attributes: Iterable[KeyValue]) -> dict[str, object]:
    """Attributes as plain Python values, for display and JSON output (not the hot path)."""
    return {kv.key: any_value_to_python(kv.value) for kv in attributes}


def any_value_to_python(value: AnyValue, _depth: int = 0, *, scalars_only: bool = False) -> object:
    """AnyValue -> str/int/float/bool/list/dict/None. Bytes become hex strings.

    Nesting deeper than 32 levels is cut off (hostile kvlist chains).
    ``scalars_only`` (the normalizer's reading of LLM attributes): only strings, numbers,
    booleans and arrays of them have a value; bytes and maps are None.
    """
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "array_value" and scalars_only:
        return [any_value_to_python(v, _depth + 1, scalars_only=True) for v in value.array_value.values]
    if scalars_only:
        return None
    if kind == "bytes_value":
        return value.bytes_value.hex()
    if _depth >= 32:
        return "…(nested too deep)"
    if kind == "array_value":
        return [any_value_to_python(v, _depth + 1) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value_to_python(kv.value, _depth + 1) for kv in value.kvlist_value.values}
    return None


def span_attribute_text(raw: bytes | None, key: str) -> str | None:
    """One attribute of a serialized span as a line of text (the stats' route key); None when absent or empty.

    Strings as they are, booleans as ``true``/``false``, numbers as Python prints them,
    arrays and maps as sorted JSON. A span that does not parse has no attributes.
    """
    if raw is None:
        return None
    try:
        span = Span.FromString(raw)
    except Exception:
        return None
    for kv in span.attributes:
        if kv.key == key:
            value = any_value_to_python(kv.value)
            if value is None or value == "":
                return None
            if isinstance(value, str):
                return value
            if isinstance(value, bool):
                return "true" if value else "false"
            if isinstance(value, (int, float)):
                return str(value)
            return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return None

"""The parsed filter (tracetui.model.filter) evaluated in Python over span dicts.

The spans are shaped like ``tracetui spans --json`` output; the result is the same
as the SQL of tracetui.store.filter_sql for the same span (tests check both agree).
"""

from __future__ import annotations

import math
from typing import Any

from tracetui.llm.evals import is_groundedness
from tracetui.model.filter import (
    SPECS,
    TEXT_FIELD,
    Filter,
    FilterError,
    Term,
    compare,
    fold,
    model_is,
    normalize_value,
    order,
    text_eq,
    text_has,
    text_of,
)


def matches_span(flt: Filter, span: dict[str, Any]) -> bool:
    """The same filter in Python over a span dict shaped like `tracetui spans --json` output.

    ``session`` falls back to ``span["trace_session_id"]`` when the span has none of its
    own (``span_where`` reads the trace's session from the database).
    """
    return all(_term_matches(term, span) for term in flt.terms)


# --- the same semantics over span dicts -----------------------------------------------------


def _ns(ms: Any) -> int | None:
    return None if ms is None else int(round(float(ms) * 1e6))


def _span_number(name: str, span: dict[str, Any]) -> float | int | None:
    if name == "duration":
        ns = _ns(span.get("duration_ms"))
        return None if ns is None else max(0, ns)
    if name == "ttft":
        return _ns(span.get("ttft_ms"))
    if name == "tokens":
        tin, tout = span.get("input_tokens"), span.get("output_tokens")
        return None if tin is None and tout is None else (tin or 0) + (tout or 0)
    if name in ("input_tokens", "output_tokens"):
        return span.get(name)
    if name == "cost":
        return span.get("cost_usd")
    if name == "groundedness":
        scores = [
            float(e["score"])
            for e in span.get("evaluations") or ()
            if e.get("score") is not None and is_groundedness(e.get("name"))
        ]
        scores = [s for s in scores if not math.isnan(s)]
        return min(scores) if scores else None
    raise AssertionError(name)


def _positive_match(term: Term, span: dict[str, Any]) -> bool | None:
    op = "=" if term.op == "!=" else term.op
    name = term.field
    value = term.value
    attributes = span.get("attributes") or {}
    if name == TEXT_FIELD:
        raise FilterError("text: searches need the full-text index of a local database (tracetui serve / view --db)")
    if name is None:
        parts = [span.get("name"), span.get("service"), span.get("status_message")]
        return fold(str(value)) in text_of(parts, {k: normalize_value(v) for k, v in attributes.items()})
    if name.startswith("attr."):
        return compare(normalize_value(attributes.get(name[5:])), str(op), str(value))
    spec = SPECS[name]
    kind = spec.kind
    if kind in ("duration", "cost", "score", "count"):
        number = _span_number(name, span)
        return None if number is None else order(number, str(op), value)
    if kind == "model":
        fn = model_is if op == "=" else text_has
        folded = fold(str(value))
        return bool(fn(span.get("request_model"), folded)) or bool(fn(span.get("response_model"), folded))
    if kind == "text":
        if name == "session":
            actual = span.get("session_id")
            if actual is None:
                actual = span.get("trace_session_id")
        else:
            actual = span.get(spec.column)
        return (text_eq if op == "=" else text_has)(actual, fold(str(value)))
    if kind == "generic":
        return compare(span.get(spec.column), str(op), str(value))
    if kind == "status":
        return span.get("status") == value
    if kind == "kind":
        return (span.get("kind") or "other") == value
    if kind == "bool":
        flag = span.get("is_retry" if name == "retry" else "is_fallback")
        return bool(flag) == bool(value)
    if kind == "trace":
        trace_id = str(span.get("trace_id") or "").lower()
        return (str(value) in trace_id) if op == "~" else trace_id.startswith(str(value))
    raise AssertionError(kind)


def _term_matches(term: Term, span: dict[str, Any]) -> bool:
    result = bool(_positive_match(term, span))
    return not result if term.op == "!=" else result

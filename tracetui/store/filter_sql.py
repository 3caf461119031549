"""The parsed filter (tracetui.model.filter) compiled to SQLite SQL over the ``spans`` and ``traces`` tables.

``trace_where`` and ``span_where`` return an SQL boolean expression and its
parameters. The semantics (what each field means for a trace and for a span) are
those written in tracetui.model.filter's docstring.

Security: compiled SQL contains only fixed text from this module; every value, and
every attribute key, is a ``?`` parameter. Call ``register_sql_functions`` on each
connection that runs compiled filters.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Callable
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tracetui.llm.evals import is_groundedness
from tracetui.model.anyvalue import any_value_to_python
from tracetui.model.filter import (
    ALL_OPS,
    SPECS,
    STATUS_CODES,
    TEXT_FIELD,
    Filter,
    Term,
    compare,
    fold,
    model_is,
    normalize_value,
    text_eq,
    text_has,
    text_of,
)
from tracetui.store.blobs import Blobs
from tracetui.store.text_index import match_sql, trace_match_sql

#: Operators as they appear in SQL (the parser only produces these keys).
_SQL_OPS = {"=": "=", ">": ">", ">=": ">=", "<": "<", "<=": "<="}
#: A trace's spans, for the EXISTS of span-level terms (``tt_s``: the alias the terms compile against).
_SPANS_OF_TRACE = "SELECT 1 FROM spans tt_s WHERE tt_s.trace_id = traces.trace_id"


def trace_where(flt: Filter, text_per_run: bool = False) -> tuple[str, list[Any]]:
    """SQL boolean expression over the `traces` table (alias `traces`) + its parameters. "1" when empty.

    Trace-level terms compare the trace row; the other comparisons must hold for one
    and the same span (one EXISTS); a span-level != becomes NOT EXISTS of its =; each
    free-text word is an EXISTS of its own. ``text_per_run``: ``text:`` terms look each
    run up in the index (tracetui.store.text_index.trace_match_sql), same result.
    """
    parts: list[tuple[str, list[Any]]] = []
    together: list[tuple[str, list[Any]]] = []
    for term in flt.terms:
        if term.field == TEXT_FIELD:  # a full-text search: any span of the trace
            parts.append((trace_match_sql(text_per_run), [term.value]))
        elif term.field is None:
            sql, params = _positive_sql(term, "tt_s")
            parts.append((f"EXISTS ({_SPANS_OF_TRACE} AND {sql})", params))
        elif not term.field.startswith("attr.") and SPECS[term.field].trace_level:
            parts.append(_term_sql(term, None))
        elif term.op == "!=":
            sql, params = _positive_sql(term, "tt_s")
            parts.append((f"NOT EXISTS ({_SPANS_OF_TRACE} AND ({sql}))", params))
        else:
            together.append(_term_sql(term, "tt_s"))
    if together:
        sql, params = _join(together)
        parts.append((f"EXISTS ({_SPANS_OF_TRACE} AND {sql})", params))
    return _join(parts)


def span_where(flt: Filter, alias: str = "spans") -> tuple[str, list[Any]]:
    """SQL boolean expression over one span row (columns of `spans` under `alias`) + parameters."""
    if not isinstance(alias, str) or not _ALIAS_RE.fullmatch(alias):
        raise ValueError(f"not an SQL alias: {alias!r}")
    return _join([_term_sql(term, alias) for term in flt.terms])


@functools.lru_cache(maxsize=128)
def _decoded_attributes(raw: bytes) -> tuple[dict[str, Any], str] | None:
    """(attributes normalized by ``normalize_value``, status message) of a serialized Span; None if garbage."""
    try:
        span = Span.FromString(raw)
    except Exception:
        return None
    return {kv.key: normalize_value(any_value_to_python(kv.value)) for kv in span.attributes}, span.status.message


def _safe(fn: Callable[..., object]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: object) -> Any:
        try:
            result = fn(*args)
        except Exception:
            return None
        return int(result) if isinstance(result, bool) else result

    return wrapper


def _sql_attr(raw: Any, key: Any) -> Any:
    if not isinstance(raw, bytes) or not isinstance(key, str):
        return None
    decoded = _decoded_attributes(raw)
    return None if decoded is None else decoded[0].get(key)


def _sql_text(raw: Any, *parts: Any) -> str | None:
    """Casefolded text of a span: ``parts`` (e.g. name, service, status message) and its attribute values."""
    if not isinstance(raw, bytes):
        return None
    return _span_text(raw, parts)


@functools.lru_cache(maxsize=128)
def _span_text(raw: bytes, parts: tuple[Any, ...]) -> str | None:
    # Cached: each free-text word of a trace filter is its own EXISTS over the same spans.
    decoded = _decoded_attributes(raw)
    if decoded is None:
        return None
    return text_of(list(parts), decoded[0])


def _sql_str2(fn: Callable[[Any, str], bool | None]) -> Callable[[Any, Any], bool | None]:
    def call(a: Any, b: Any) -> bool | None:
        return fn(a, b) if isinstance(b, str) else None

    return call


def _sql_cmp(a: Any, op: Any, b: Any) -> bool | None:
    if not isinstance(op, str) or not isinstance(b, str) or op not in ALL_OPS:
        return None
    return compare(a, op, b)


def _sql_is_groundedness(name: Any) -> bool:
    return is_groundedness(name)


_SQL_FUNCTIONS: tuple[tuple[str, int, Any], ...] = (
    ("tt_attr", 2, _sql_attr),
    ("tt_text", -1, _sql_text),
    ("tt_eq", 2, _sql_str2(text_eq)),
    ("tt_has", 2, _sql_str2(text_has)),
    ("tt_model_is", 2, _sql_str2(model_is)),
    ("tt_cmp", 3, _sql_cmp),
    ("tt_is_groundedness", 1, _sql_is_groundedness),
)


def register_sql_functions(conn: sqlite3.Connection, blobs: Blobs | None = None) -> None:
    """Define the SQL functions the compiled filters use, on ``conn``.

    ``blobs`` rebuilds the raw spans stored compact (tracetui.store.blobs) before they are read
    (one made on ``conn`` when not given).

    * ``tt_attr(raw, key)``: the attribute ``key`` of a serialized Span (bools as
      'true'/'false', lists and maps as JSON, NaN as NULL);
    * ``tt_text(raw, part...)``: casefolded parts and attribute values, for free text;
    * ``tt_eq(a, b)`` / ``tt_has(a, b)``: casefolded ``a`` equals / contains ``b``
      (``b`` already casefolded);
    * ``tt_model_is(a, b)``: model ``a`` is ``b`` or ``b`` with a release-date suffix;
    * ``tt_cmp(a, op, b)``: generic comparison (numeric when both are numbers);
    * ``tt_is_groundedness(name)``: ``tracetui.llm.evals.is_groundedness``.

    All are deterministic and return NULL instead of raising on garbage.
    """
    expand = (blobs or Blobs(conn)).expand
    for name, nargs, fn in _SQL_FUNCTIONS:
        if name in _RAW_FIRST:
            fn = _expanding(fn, expand)
        conn.create_function(name, nargs, _safe(fn), deterministic=True)


#: The functions whose first argument is a span's ``raw`` column.
_RAW_FIRST = ("tt_attr", "tt_text")


def _expanding(fn: Callable[..., Any], expand: Callable[[bytes], bytes]) -> Callable[..., Any]:
    def call(raw: Any, *args: Any) -> Any:
        return fn(expand(raw) if isinstance(raw, bytes) else raw, *args)

    return call


# --- compiling ----------------------------------------------------------------------------

_ALIAS_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _trace_range(prefix: str) -> list[bytes]:
    return [bytes.fromhex(prefix.ljust(32, "0")), bytes.fromhex(prefix.ljust(32, "f"))]


def _groundedness_sql(trace_ref: str, span_ref: str | None) -> str:
    span_cond = f" AND tt_e.span_id = {span_ref}" if span_ref else ""
    return (
        f"(SELECT min(tt_e.score) FROM evaluations tt_e WHERE tt_e.trace_id = {trace_ref}{span_cond}"
        " AND tt_e.score IS NOT NULL AND tt_is_groundedness(tt_e.name))"
    )


def _span_number_sql(name: str, a: str) -> str:
    if name == "duration":
        return f"max(0, {a}.end_ns - {a}.start_ns)"
    if name == "ttft":
        return f"{a}.ttft_ns"
    if name == "tokens":
        return (
            f"(CASE WHEN {a}.input_tokens IS NULL AND {a}.output_tokens IS NULL THEN NULL"
            f" ELSE ifnull({a}.input_tokens, 0) + ifnull({a}.output_tokens, 0) END)"
        )
    if name in ("input_tokens", "output_tokens"):
        return f"{a}.{name}"
    if name == "cost":
        return f"{a}.cost_usd"
    if name == "groundedness":
        return _groundedness_sql(f"{a}.trace_id", f"{a}.span_id")
    raise AssertionError(name)


def _trace_number_sql(name: str) -> str:
    return {
        "duration": "max(0, traces.end_ns - traces.start_ns)",
        "tokens": "(traces.input_tokens + traces.output_tokens)",
        "input_tokens": "traces.input_tokens",
        "output_tokens": "traces.output_tokens",
        "cost": "traces.cost_usd",
        "groundedness": _groundedness_sql("traces.trace_id", None),
    }[name]


def _positive_sql(term: Term, a: str | None) -> tuple[str, list[Any]]:
    """SQL for ``term`` with ``!=`` read as ``=``; over the span ``a``, or the ``traces`` row when ``a`` is None.

    May be NULL (no value): callers treat NULL as "does not match".
    """
    op = "=" if term.op == "!=" else term.op
    name = term.field
    value = term.value
    if name == TEXT_FIELD:
        return match_sql(a or "tt_s"), [value]
    if name is None:
        return f"instr(tt_text({a}.raw, {a}.name, {a}.service, {a}.status_message), ?) > 0", [fold(str(value))]
    assert op is not None  # only free text (above) has no operator
    if name.startswith("attr."):
        return f"tt_cmp(tt_attr({a}.raw, ?), ?, ?)", [name[5:], op, value]
    spec = SPECS[name]
    kind = spec.kind
    if kind in ("duration", "cost", "score", "count"):
        column = _span_number_sql(name, a) if a is not None else _trace_number_sql(name)
        return f"{column} {_SQL_OPS[op]} ?", [value]
    if kind == "model":
        fn = "tt_model_is" if op == "=" else "tt_has"
        folded = fold(str(value))
        return f"({fn}({a}.request_model, ?) OR {fn}({a}.response_model, ?))", [folded, folded]
    if kind == "text":
        if a is None:
            column = f"traces.{spec.column}"
        elif name == "session":
            column = f"coalesce({a}.session_id, (SELECT tt_t.session_id FROM traces tt_t WHERE tt_t.trace_id = {a}.trace_id))"
        else:
            column = f"{a}.{spec.column}"
        fn = "tt_eq" if op == "=" else "tt_has"
        return f"{fn}({column}, ?)", [fold(str(value))]
    if kind == "generic":
        return f"tt_cmp({a}.{spec.column}, ?, ?)", [op, value]
    if kind == "status":
        if a is None:
            return ("traces.error_count > 0" if value == "error" else "traces.error_count = 0"), []
        return f"{a}.status_code = ?", [STATUS_CODES[str(value)]]
    if kind == "kind":
        return f"ifnull({a}.llm_kind, 'other') = ?", [value]
    if kind == "bool":
        column = "is_retry" if name == "retry" else "is_fallback"
        return f"{a}.{column} = ?", [1 if value else 0]
    if kind == "trace":
        ref = f"{a}.trace_id" if a is not None else "traces.trace_id"
        if op == "~":
            return f"instr(lower(hex({ref})), ?) > 0", [value]
        return f"{ref} BETWEEN ? AND ?", _trace_range(str(value))
    raise AssertionError(kind)


def _term_sql(term: Term, a: str | None) -> tuple[str, list[Any]]:
    sql, params = _positive_sql(term, a)
    if term.op == "!=":
        return f"NOT ifnull(({sql}), 0)", params
    return f"({sql})", params


def _join(parts: list[tuple[str, list[Any]]]) -> tuple[str, list[Any]]:
    if not parts:
        return "1", []
    params: list[Any] = []
    for _, p in parts:
        params.extend(p)
    return " AND ".join(sql for sql, _ in parts), params

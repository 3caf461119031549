"""The filter language of the `/` line (trace list, trace view) and of ``stats --filter``.

A filter is a list of terms separated by spaces, all of which must hold (AND)::

    model=gpt-4o duration>2s ttft>500ms status=error cost>$0.01 groundedness<0.5
    service=support prompt.version=17 attr.gen_ai.request.temperature>=0.5 timeout "chat gpt"

Grammar (``ws`` is any Unicode whitespace)::

    filter     = ws* [ term { ws+ term } ] ws*
    term       = comparison | text
    comparison = field op value
    field      = name | "attr." key          (* name: letters, digits, "_", "."; case-insensitive *)
    key        = { any char but ws, quote, "=!<>~" }-   (* attribute key, case-sensitive *)
    op         = "=" | "==" | "!=" | ">" | ">=" | "<" | "<=" | "~"
    value      = quoted | bare
    text       = quoted | bare                 (* free text; a bare word holds no operator char *)
    bare       = { any char but ws }-          (* does not start with a quote *)
    quoted     = '"' { char | "\\" char } '"' | "'" { char | "\\" char } "'"

A quoted string must be followed by a space or the end; a backslash makes the next
character literal. Control characters (other than whitespace) are refused. ``OR`` and
``NOT`` written in capitals are refused with an explanation (terms always AND);
``AND`` in capitals is accepted and ignored.

Values by field type:

* durations (``duration``, ``ttft``): a number with a unit ``ns``, ``us``/``µs``, ``ms``,
  ``s``, ``m`` or ``h`` (``500ms``, ``2s``, ``1.5m``). A bare number is refused (is
  ``2`` seconds or milliseconds?) except ``0``. Stored as integer nanoseconds.
* ``cost``: US dollars, ``0.01``, ``$0.01`` or ``0.01$``.
* ``groundedness``: a number (scores are 0..1).
* token counts: an integer, optionally with ``k`` (thousands) or ``M`` (millions).
* ``status``: ``ok``, ``error`` or ``unset``; ``kind``: one of ``semconv.KINDS``;
  ``retry`` / ``fallback``: ``true`` / ``false`` (also yes/no, on/off, 1/0).
* ``trace``: hexadecimal; ``=`` is a prefix match, ``~`` a substring.
* everything else is text; comparisons of text are case-insensitive (Unicode casefold).

Operators: ``=`` equality, ``!=`` its negation, ``~`` case-insensitive substring (text
fields), ``> >= < <=`` on numbers. ``prompt.version`` and ``attr.*`` compare numerically
when both sides are numbers (``17`` and ``"17"`` alike), else as casefolded text; an
ordering against a number never matches a value that is not a number
(``prompt.version>10`` does not match ``v2``).

``model=X`` matches a span whose request or response model is ``X``, or is ``X`` plus a
release-date suffix (``gpt-4o`` matches ``gpt-4o-2024-08-06`` and ``claude-sonnet-4``
matches ``claude-sonnet-4-20250514``, but ``gpt-4o`` never matches ``gpt-4o-mini``).

Missing values: a span without the field (NULL) matches no ``=``, ``~``, ``<``, ``>``
comparison and does match ``!=``. ``!=`` is always exactly the negation of ``=``.

Free text is a case-insensitive substring of the span's name, service, status message
or any attribute value (lists and maps as JSON).

Traces (``Filter.trace_where``):

* trace-level fields are compared with the trace row: ``duration`` (the trace's wall
  clock), ``cost`` (its total ``cost_usd``), ``service`` (the trace's service),
  ``groundedness`` (the worst groundedness of the trace), ``tokens`` /
  ``input_tokens`` / ``output_tokens`` (its totals), ``session``, ``trace``, and
  ``status`` (``error`` = at least one failed span; ``ok`` and ``unset`` = none failed);
* all other (span-level) comparisons must hold together for at least one span of the
  trace (one ``EXISTS``): ``model=claude-sonnet-4 ttft>500ms`` is one call with both;
* a span-level ``!=`` means *no* span of the trace has ``=``: ``model!=gpt-4o`` hides
  the traces that used gpt-4o, ``kind!=tool`` keeps traces without tool calls;
  ``retry=false`` is read as ``retry!=true`` (no retried call);
* each free-text word may be found in a different span of the trace.

Spans (``Filter.span_where`` / ``Filter.matches_span``): every term applies to the span
itself, except ``session`` (the span's own session id, else its trace's) and
``groundedness`` (the worst groundedness evaluation of that span).

Groundedness is the minimum score of the evaluations whose name
``tracetui.evals.is_groundedness`` accepts (the same rule in SQL, through a registered
function), as in ``Reader``.

Security: compiled SQL contains only fixed text from this module; every value, and
every attribute key, is a ``?`` parameter. Call ``register_sql_functions`` on each
connection that runs compiled filters.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import re
import sqlite3
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tracetui.evals import is_groundedness
from tracetui.otlp.decode import any_value_to_python
from tracetui.semconv import KINDS

#: Longest accepted filter line, and most terms in it (SQLite's expression depth is 1000).
MAX_LENGTH = 4096
MAX_TERMS = 64
_INT64_MAX = (1 << 63) - 1


class FilterError(ValueError):
    """Bad syntax; .position is the character offset of the problem (for a caret under the line)."""

    position: int

    def __init__(self, message: str, position: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


@dataclass(frozen=True)
class Term:
    field: str | None  # canonical field name, or None for free text
    op: str | None  # "=", "!=", ">", ">=", "<", "<=", "~"; None for free text
    value: object  # parsed: ns ints for durations, float for cost/score, int for tokens, bool, str otherwise


# --- fields ---------------------------------------------------------------------------

_EQ = frozenset(("=", "!="))
_TEXT_OPS = frozenset(("=", "!=", "~"))
_NUM_OPS = frozenset(("=", "!=", ">", ">=", "<", "<="))
_ALL_OPS = _TEXT_OPS | _NUM_OPS


@dataclass(frozen=True)
class _FieldSpec:
    kind: str  # how values parse and compile: text, model, duration, cost, score, count, status, kind, bool, trace, generic
    ops: frozenset[str]
    trace_level: bool  # compared with the traces row in trace_where (else: EXISTS over spans)
    description: str
    column: str = ""  # spans column (text / generic / count kinds)


_SPECS: dict[str, _FieldSpec] = {
    "model": _FieldSpec("model", _TEXT_OPS, False,
                        "request or response model; = also matches a dated release (gpt-4o: gpt-4o-2024-08-06)"),
    "provider": _FieldSpec("text", _TEXT_OPS, False, "provider (openai, anthropic, ...)", "provider"),
    "service": _FieldSpec("text", _TEXT_OPS, True, "service name (for traces: the trace's service)", "service"),
    "name": _FieldSpec("text", _TEXT_OPS, False, "span name (for traces: any span, root included)", "name"),
    "kind": _FieldSpec("kind", _EQ, False, "span kind: " + "/".join(KINDS)),
    "status": _FieldSpec("status", _EQ, True, "ok, error or unset (for traces: error = any span failed)"),
    "duration": _FieldSpec("duration", _NUM_OPS, True, "span duration (for traces: wall clock), e.g. duration>2s"),
    "ttft": _FieldSpec("duration", _NUM_OPS, False, "time to first token, e.g. ttft>500ms"),
    "tokens": _FieldSpec("count", _NUM_OPS, True, "input + output tokens (for traces: totals), e.g. tokens>1k"),
    "input_tokens": _FieldSpec("count", _NUM_OPS, True, "input tokens (for traces: total)", "input_tokens"),
    "output_tokens": _FieldSpec("count", _NUM_OPS, True, "output tokens (for traces: total)", "output_tokens"),
    "cost": _FieldSpec("cost", _NUM_OPS, True, "cost in USD (for traces: total), e.g. cost>$0.01"),
    "groundedness": _FieldSpec("score", _NUM_OPS, True, "worst groundedness score (0..1), e.g. groundedness<0.5"),
    "session": _FieldSpec("text", _TEXT_OPS, True, "session / conversation id", "session_id"),
    "user": _FieldSpec("text", _TEXT_OPS, False, "user id", "user_id"),
    "prompt": _FieldSpec("text", _TEXT_OPS, False, "prompt (template) name", "prompt_name"),
    "prompt.version": _FieldSpec("generic", _ALL_OPS, False, "prompt version, numeric when it is a number",
                                 "prompt_version"),
    "error_type": _FieldSpec("text", _TEXT_OPS, False, "error type, e.g. error~timeout", "error_type"),
    "trace": _FieldSpec("trace", _TEXT_OPS, True, "trace id: hex prefix (=) or substring (~)"),
    "retry": _FieldSpec("bool", _EQ, False, "the call is a retry of an earlier one: retry=true"),
    "fallback": _FieldSpec("bool", _EQ, False, "the call is a fallback after a failed one: fallback=true"),
}  # fmt: skip

_ALIASES: dict[str, str] = {
    "error": "error_type",
    "latency": "duration",
    "session_id": "session",
    "user_id": "user",
    "prompt_name": "prompt",
    "prompt_version": "prompt.version",
    "trace_id": "trace",
}

#: Field name -> one-line description, for the help screen and error messages.
FIELDS: dict[str, str] = {name: spec.description for name, spec in _SPECS.items()}
FIELDS.update({alias: f"same as {target}" for alias, target in _ALIASES.items()})
FIELDS["attr.<key>"] = "any span attribute, e.g. attr.gen_ai.request.temperature>=0.5 (numeric when both are numbers)"

_GENERIC_ATTR = _FieldSpec("generic", _ALL_OPS, False, "span attribute")

# --- parsing --------------------------------------------------------------------------

_OPS = ("!=", ">=", "<=", "==", "=", ">", "<", "~")
_OP_CHARS = frozenset("=!<>~")
_QUOTES = "\"'"
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER_RE = re.compile(rf"[+-]?{_NUMBER}", re.ASCII)
_DURATION_RE = re.compile(rf"({_NUMBER})\s*([a-zµμ]*)", re.IGNORECASE | re.ASCII)
_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9,
                   "h": 3600 * 10**9}  # fmt: skip
_UNITS_HELP = "ns, us/µs, ms, s, m, h (e.g. 500ms, 2s, 1.5m)"
_COUNT_RE = re.compile(rf"({_NUMBER})([kKmM]?)", re.ASCII)
_HEX_RE = re.compile(r"[0-9a-fA-F]{1,32}")
_BOOLS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
_STATUS_CODES = {"unset": 0, "ok": 1, "error": 2}


def parse(text: str) -> Filter:
    """Parse a filter line; raises FilterError (with .position) on bad syntax."""
    if not isinstance(text, str):
        raise FilterError("a filter is text", 0)
    if len(text) > MAX_LENGTH:
        raise FilterError(f"filter too long (at most {MAX_LENGTH} characters)", MAX_LENGTH)
    for i, ch in enumerate(text):
        if ch.isspace():
            continue
        category = unicodedata.category(ch)
        if category in ("Cc", "Cs"):
            raise FilterError(f"control character U+{ord(ch):04X} is not allowed", i)

    terms: list[Term] = []
    n = len(text)
    i = 0
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            break
        start = i
        ch = text[i]
        if ch in _QUOTES:
            value, i = _quoted(text, i)
            if value:
                terms.append(Term(None, None, value))
        elif ch in _OP_CHARS:
            op = _op_at(text, i) or ch
            raise FilterError(f"expected a field name before {op!r} (e.g. duration{op}2s)", i)
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in _OP_CHARS:
                j += 1
            word = text[i:j]
            if j < n and text[j] in _OP_CHARS:
                term, i = _comparison(text, i, word, j)
                terms.append(term)
            else:
                i = j
                if word == "AND":
                    continue
                if word in ("OR", "NOT"):
                    raise FilterError(
                        f"{word} is not supported: terms separated by spaces must all hold; use != to exclude", start
                    )
                terms.append(Term(None, None, word))
        if len(terms) > MAX_TERMS:
            raise FilterError(f"too many terms (at most {MAX_TERMS})", start)
    return Filter(text, tuple(terms))


def _op_at(text: str, i: int) -> str | None:
    for op in _OPS:
        if text.startswith(op, i):
            return op
    return None


def _quoted(text: str, i: int) -> tuple[str, int]:
    """The string opened by the quote at ``i`` and the index after it (which must end the term)."""
    quote = text[i]
    k = i + 1
    out: list[str] = []
    while k < len(text):
        ch = text[k]
        if ch == "\\" and k + 1 < len(text):
            out.append(text[k + 1])
            k += 2
        elif ch == quote:
            k += 1
            if k < len(text) and not text[k].isspace():
                raise FilterError("expected a space after the closing quote", k)
            return "".join(out), k
        else:
            out.append(ch)
            k += 1
    raise FilterError(f"unterminated {quote} quote", i)


def _resolve_field(word: str, start: int) -> tuple[str, _FieldSpec]:
    lowered = word.lower()
    if lowered.startswith("attr."):
        key = word[5:]
        if not key:
            raise FilterError("attr. needs an attribute key, e.g. attr.gen_ai.request.temperature", start)
        for offset, ch in enumerate(key):
            if ch in _QUOTES:
                raise FilterError("quotes are not allowed in an attribute key", start + 5 + offset)
        return "attr." + key, _GENERIC_ATTR
    for offset, ch in enumerate(word):
        if ch in _QUOTES:
            raise FilterError("quotes are not allowed in a field name", start + offset)
    name = _ALIASES.get(lowered, lowered)
    spec = _SPECS.get(name)
    if spec is None:
        known = [*_SPECS, *_ALIASES]
        close = difflib.get_close_matches(lowered, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise FilterError(f"unknown field {word!r}{hint}; fields: {', '.join(_SPECS)}, attr.<key>", start)
    return name, spec


def _comparison(text: str, start: int, word: str, j: int) -> tuple[Term, int]:
    """The comparison ``word`` OP value whose operator starts at ``j``, and the index after it."""
    name, spec = _resolve_field(word, start)
    op = _op_at(text, j)
    if op is None:  # a lone "!"
        raise FilterError("expected an operator: = != > >= < <= ~", j)
    k = j + len(op)
    op = "=" if op == "==" else op
    if op not in spec.ops:
        allowed = " ".join(o for o in _OPS if o in spec.ops)
        raise FilterError(f"{name} cannot use {op} (only {allowed})", j)
    if k >= len(text) or text[k].isspace():
        raise FilterError(f"missing value after {word}{op}", k)
    if text[k] in _QUOTES:
        raw, end = _quoted(text, k)
    else:
        end = k
        while end < len(text) and not text[end].isspace():
            end += 1
        raw = text[k:end]
    value = _value(name, spec, op, raw, k)
    if spec.kind == "bool" and value is False:  # retry=false is retry!=true (see the module doc)
        op, value = ("!=" if op == "=" else "="), True
    return Term(name, op, value), end


def _value(name: str, spec: _FieldSpec, op: str, raw: str, pos: int) -> object:
    kind = spec.kind
    stripped = raw.strip()
    if kind == "duration":
        match = _DURATION_RE.fullmatch(stripped)
        unit = match.group(2).lower() if match else ""
        if not match or (unit and unit not in _DURATION_UNITS):
            raise FilterError(f"{name} wants a duration with a unit: {_UNITS_HELP}", pos)
        number = float(match.group(1))
        if not unit:
            if number != 0:
                raise FilterError(f"{name} needs a unit: {_UNITS_HELP}", pos)
            unit = "ns"
        return _checked_int(number * _DURATION_UNITS[unit], pos)
    if kind == "cost":
        amount = stripped
        if amount.startswith("$"):
            amount = amount[1:]
        elif amount.endswith("$"):
            amount = amount[:-1]
        if not _NUMBER_RE.fullmatch(amount) or amount[0] in "+-":
            raise FilterError(f"{name} wants an amount in USD, e.g. 0.01 or $0.01", pos)
        return _checked_float(amount, pos)
    if kind == "score":
        if not _NUMBER_RE.fullmatch(stripped):
            raise FilterError(f"{name} wants a number, e.g. 0.5", pos)
        return _checked_float(stripped, pos)
    if kind == "count":
        match = _COUNT_RE.fullmatch(stripped)
        if not match:
            raise FilterError(f"{name} wants a whole number, e.g. 500 or 1.5k", pos)
        factor = {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2).lower()]
        return _checked_int(float(match.group(1)) * factor, pos)
    if kind == "status":
        key = stripped.lower()
        if key not in _STATUS_CODES:
            raise FilterError("status is ok, error or unset", pos)
        return key
    if kind == "kind":
        key = stripped.lower()
        if key not in KINDS:
            raise FilterError(f"kind is one of {', '.join(KINDS)}", pos)
        return key
    if kind == "bool":
        key = stripped.lower()
        if key not in _BOOLS:
            raise FilterError(f"{name} is true or false", pos)
        return _BOOLS[key]
    if kind == "trace":
        if not _HEX_RE.fullmatch(stripped):
            raise FilterError("trace wants hexadecimal digits of a trace id (at most 32)", pos)
        return stripped.lower()
    return raw  # text, model, generic: compared at run time


def _checked_float(text: str, pos: int) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise FilterError("number too large", pos)
    return value


def _checked_int(value: float, pos: int) -> int:
    if not math.isfinite(value) or abs(value) > _INT64_MAX:
        raise FilterError("number too large", pos)
    return int(round(value))


# --- run-time semantics, shared by the SQL functions and matches_span ---------------------

_DATE_SUFFIX_RE = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4})", re.ASCII)
_SEP = "\x1f"  # joins the parts of a span's text; the parser refuses control characters


def _fold(value: str) -> str:
    return value.casefold()


def _norm(value: Any) -> Any:
    """An attribute value as SQLite can hold it: str/int/float or None (bool as text, containers as JSON)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return value if -(1 << 63) <= value <= _INT64_MAX else str(value)
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False, default=str, sort_keys=False)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    return str(value)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _as_number(value: Any) -> float | int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        s = value.strip()
        if _NUMBER_RE.fullmatch(s):
            number = float(s)
            return number if math.isfinite(number) else None
    return None


def _order(a: Any, op: str, b: Any) -> bool:
    result: bool  # the comparisons of two Any values are Any to mypy
    if op == "=":
        result = a == b
    elif op == ">":
        result = a > b
    elif op == ">=":
        result = a >= b
    elif op == "<":
        result = a < b
    elif op == "<=":
        result = a <= b
    elif op == "!=":
        result = a != b
    else:
        result = False
    return result


def _eq(a: Any, b: str) -> bool | None:
    if a is None:
        return None
    return _fold(_as_text(a)) == b


def _has(a: Any, b: str) -> bool | None:
    if a is None:
        return None
    return b in _fold(_as_text(a))


def _model_is(a: Any, b: str) -> bool | None:
    """``a`` is model ``b`` (casefolded), or ``b`` plus a release-date suffix."""
    if a is None:
        return None
    model = _fold(_as_text(a))
    if model == b:
        return True
    return model.startswith(b) and bool(b) and _DATE_SUFFIX_RE.fullmatch(model, len(b)) is not None


def _cmp(a: Any, op: str, b: str) -> bool | None:
    """Generic comparison (prompt.version, attr.*): numeric when both are numbers, else casefolded text."""
    if a is None:
        return None
    if op == "~":
        return _fold(b) in _fold(_as_text(a))
    x, y = _as_number(a), _as_number(b)
    if x is not None and y is not None:
        return _order(x, op, y)
    if y is not None and op != "=":
        return False  # prompt.version>10 says nothing about "v2"
    return _order(_fold(_as_text(a)), op, _fold(b))


@functools.lru_cache(maxsize=128)
def _decoded_attributes(raw: bytes) -> tuple[dict[str, Any], str] | None:
    """(attributes normalized by ``_norm``, status message) of a serialized Span; None if garbage."""
    try:
        span = Span.FromString(raw)
    except Exception:
        return None
    return {kv.key: _norm(any_value_to_python(kv.value)) for kv in span.attributes}, span.status.message


def _text_of(parts: list[Any], attributes: dict[str, Any]) -> str:
    """Casefolded searchable text: the given parts and every attribute value."""
    texts = [_as_text(p) for p in parts if p is not None]
    texts += [_as_text(v) for v in attributes.values() if v is not None]
    return _fold(_SEP.join(texts).replace("\x00", _SEP))


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
    return _text_of(list(parts), decoded[0])


def _sql_str2(fn: Callable[[Any, str], bool | None]) -> Callable[[Any, Any], bool | None]:
    def call(a: Any, b: Any) -> bool | None:
        return fn(a, b) if isinstance(b, str) else None

    return call


def _sql_cmp(a: Any, op: Any, b: Any) -> bool | None:
    if not isinstance(op, str) or not isinstance(b, str) or op not in _ALL_OPS:
        return None
    return _cmp(a, op, b)


def _sql_is_groundedness(name: Any) -> bool:
    return is_groundedness(name)


_SQL_FUNCTIONS: tuple[tuple[str, int, Any], ...] = (
    ("tt_attr", 2, _sql_attr),
    ("tt_text", -1, _sql_text),
    ("tt_eq", 2, _sql_str2(_eq)),
    ("tt_has", 2, _sql_str2(_has)),
    ("tt_model_is", 2, _sql_str2(_model_is)),
    ("tt_cmp", 3, _sql_cmp),
    ("tt_is_groundedness", 1, _sql_is_groundedness),
)


def register_sql_functions(conn: sqlite3.Connection) -> None:
    """Define the SQL functions the compiled filters use, on ``conn``.

    * ``tt_attr(raw, key)``: the attribute ``key`` of a serialized Span (bools as
      'true'/'false', lists and maps as JSON, NaN as NULL);
    * ``tt_text(raw, part...)``: casefolded parts and attribute values, for free text;
    * ``tt_eq(a, b)`` / ``tt_has(a, b)``: casefolded ``a`` equals / contains ``b``
      (``b`` already casefolded);
    * ``tt_model_is(a, b)``: model ``a`` is ``b`` or ``b`` with a release-date suffix;
    * ``tt_cmp(a, op, b)``: generic comparison (numeric when both are numbers);
    * ``tt_is_groundedness(name)``: ``tracetui.evals.is_groundedness``.

    All are deterministic and return NULL instead of raising on garbage.
    """
    for name, nargs, fn in _SQL_FUNCTIONS:
        conn.create_function(name, nargs, _safe(fn), deterministic=True)


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
    if name is None:
        return f"instr(tt_text({a}.raw, {a}.name, {a}.service, {a}.status_message), ?) > 0", [_fold(str(value))]
    assert op is not None  # only free text (above) has no operator
    if name.startswith("attr."):
        return f"tt_cmp(tt_attr({a}.raw, ?), ?, ?)", [name[5:], op, value]
    spec = _SPECS[name]
    kind = spec.kind
    if kind in ("duration", "cost", "score", "count"):
        column = _span_number_sql(name, a) if a is not None else _trace_number_sql(name)
        return f"{column} {_SQL_OPS[op]} ?", [value]
    if kind == "model":
        fn = "tt_model_is" if op == "=" else "tt_has"
        folded = _fold(str(value))
        return f"({fn}({a}.request_model, ?) OR {fn}({a}.response_model, ?))", [folded, folded]
    if kind == "text":
        if a is None:
            column = f"traces.{spec.column}"
        elif name == "session":
            column = f"coalesce({a}.session_id, (SELECT tt_t.session_id FROM traces tt_t WHERE tt_t.trace_id = {a}.trace_id))"
        else:
            column = f"{a}.{spec.column}"
        fn = "tt_eq" if op == "=" else "tt_has"
        return f"{fn}({column}, ?)", [_fold(str(value))]
    if kind == "generic":
        return f"tt_cmp({a}.{spec.column}, ?, ?)", [op, value]
    if kind == "status":
        if a is None:
            return ("traces.error_count > 0" if value == "error" else "traces.error_count = 0"), []
        return f"{a}.status_code = ?", [_STATUS_CODES[str(value)]]
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


#: Operators as they appear in SQL (the parser only produces these keys).
_SQL_OPS = {"=": "=", ">": ">", ">=": ">=", "<": "<", "<=": "<="}
_SPANS_OF_TRACE = "SELECT 1 FROM spans tt_s WHERE tt_s.trace_id = traces.trace_id"


@dataclass(frozen=True)
class Filter:
    text: str
    terms: tuple[Term, ...]

    def is_empty(self) -> bool:
        return not self.terms

    def trace_where(self) -> tuple[str, list[Any]]:
        """SQL boolean expression over the `traces` table (alias `traces`) + its parameters. "1" when empty.

        Trace-level terms compare the trace row; the other comparisons must hold for one
        and the same span (one EXISTS); a span-level != becomes NOT EXISTS of its =; each
        free-text word is an EXISTS of its own.
        """
        parts: list[tuple[str, list[Any]]] = []
        together: list[tuple[str, list[Any]]] = []
        for term in self.terms:
            if term.field is None:
                sql, params = _positive_sql(term, "tt_s")
                parts.append((f"EXISTS ({_SPANS_OF_TRACE} AND {sql})", params))
            elif not term.field.startswith("attr.") and _SPECS[term.field].trace_level:
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

    def span_where(self, alias: str = "spans") -> tuple[str, list[Any]]:
        """SQL boolean expression over one span row (columns of `spans` under `alias`) + parameters."""
        if not isinstance(alias, str) or not _ALIAS_RE.fullmatch(alias):
            raise ValueError(f"not an SQL alias: {alias!r}")
        return _join([_term_sql(term, alias) for term in self.terms])

    def matches_span(self, span: dict[str, Any]) -> bool:
        """The same filter in Python over a span dict shaped like `tracetui spans --json` output.

        ``session`` falls back to ``span["trace_session_id"]`` when the span has none of its
        own (``span_where`` reads the trace's session from the database).
        """
        return all(_term_matches(term, span) for term in self.terms)


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
    if name is None:
        parts = [span.get("name"), span.get("service"), span.get("status_message")]
        return _fold(str(value)) in _text_of(parts, {k: _norm(v) for k, v in attributes.items()})
    if name.startswith("attr."):
        return _cmp(_norm(attributes.get(name[5:])), str(op), str(value))
    spec = _SPECS[name]
    kind = spec.kind
    if kind in ("duration", "cost", "score", "count"):
        number = _span_number(name, span)
        return None if number is None else _order(number, str(op), value)
    if kind == "model":
        fn = _model_is if op == "=" else _has
        folded = _fold(str(value))
        return bool(fn(span.get("request_model"), folded)) or bool(fn(span.get("response_model"), folded))
    if kind == "text":
        if name == "session":
            actual = span.get("session_id")
            if actual is None:
                actual = span.get("trace_session_id")
        else:
            actual = span.get(spec.column)
        return (_eq if op == "=" else _has)(actual, _fold(str(value)))
    if kind == "generic":
        return _cmp(span.get(spec.column), str(op), str(value))
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

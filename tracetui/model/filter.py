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
* ``status``: ``ok``, ``error`` or ``unset``; ``kind``: one of ``tracetui.model.rows.KINDS``;
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

Traces (``tracetui.store.filter_sql.trace_where``):

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

Spans (``tracetui.store.filter_sql.span_where`` / ``tracetui.query.filter_match.matches_span``): every term applies to the span
itself, except ``session`` (the span's own session id, else its trace's) and
``groundedness`` (the worst groundedness evaluation of that span).

Groundedness is the minimum score of the evaluations whose name
``tracetui.llm.evals.is_groundedness`` accepts (the same rule in every backend).

This module parses; each backend compiles the parsed :class:`Filter` (SQLite:
tracetui.store.filter_sql), and tracetui.query.filter_match evaluates it over span
dicts. The value semantics below (casefolding, numeric-or-text comparison, model
release suffixes) are shared by all of them.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from tracetui.model.rows import KINDS

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
ALL_OPS = _TEXT_OPS | _NUM_OPS


@dataclass(frozen=True)
class FieldSpec:
    kind: str  # how values parse and compile: text, model, duration, cost, score, count, status, kind, bool, trace, generic
    ops: frozenset[str]
    trace_level: bool  # compared with the traces row in trace_where (else: EXISTS over spans)
    description: str
    column: str = ""  # spans column (text / generic / count kinds)


SPECS: dict[str, FieldSpec] = {
    "model": FieldSpec("model", _TEXT_OPS, False,
                        "request or response model; = also matches a dated release (gpt-4o: gpt-4o-2024-08-06)"),
    "provider": FieldSpec("text", _TEXT_OPS, False, "provider (openai, anthropic, ...)", "provider"),
    "service": FieldSpec("text", _TEXT_OPS, True, "service name (for traces: the trace's service)", "service"),
    "name": FieldSpec("text", _TEXT_OPS, False, "span name (for traces: any span, root included)", "name"),
    "kind": FieldSpec("kind", _EQ, False, "span kind: " + "/".join(KINDS)),
    "status": FieldSpec("status", _EQ, True, "ok, error or unset (for traces: error = any span failed)"),
    "duration": FieldSpec("duration", _NUM_OPS, True, "span duration (for traces: wall clock), e.g. duration>2s"),
    "ttft": FieldSpec("duration", _NUM_OPS, False, "time to first token, e.g. ttft>500ms"),
    "tokens": FieldSpec("count", _NUM_OPS, True, "input + output tokens (for traces: totals), e.g. tokens>1k"),
    "input_tokens": FieldSpec("count", _NUM_OPS, True, "input tokens (for traces: total)", "input_tokens"),
    "output_tokens": FieldSpec("count", _NUM_OPS, True, "output tokens (for traces: total)", "output_tokens"),
    "cost": FieldSpec("cost", _NUM_OPS, True, "cost in USD (for traces: total), e.g. cost>$0.01"),
    "groundedness": FieldSpec("score", _NUM_OPS, True, "worst groundedness score (0..1), e.g. groundedness<0.5"),
    "session": FieldSpec("text", _TEXT_OPS, True, "session / conversation id", "session_id"),
    "user": FieldSpec("text", _TEXT_OPS, False, "user id", "user_id"),
    "prompt": FieldSpec("text", _TEXT_OPS, False, "prompt (template) name", "prompt_name"),
    "prompt.version": FieldSpec("generic", ALL_OPS, False, "prompt version, numeric when it is a number",
                                 "prompt_version"),
    "error_type": FieldSpec("text", _TEXT_OPS, False, "error type, e.g. error~timeout", "error_type"),
    "trace": FieldSpec("trace", _TEXT_OPS, True, "trace id: hex prefix (=) or substring (~)"),
    "retry": FieldSpec("bool", _EQ, False, "the call is a retry of an earlier one: retry=true"),
    "fallback": FieldSpec("bool", _EQ, False, "the call is a fallback after a failed one: fallback=true"),
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
FIELDS: dict[str, str] = {name: spec.description for name, spec in SPECS.items()}
FIELDS.update({alias: f"same as {target}" for alias, target in _ALIASES.items()})
FIELDS["attr.<key>"] = "any span attribute, e.g. attr.gen_ai.request.temperature>=0.5 (numeric when both are numbers)"

_GENERIC_ATTR = FieldSpec("generic", ALL_OPS, False, "span attribute")

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
STATUS_CODES = {"unset": 0, "ok": 1, "error": 2}


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
        if text.startswith(TEXT_PREFIX, i) or text[i : i + len(TEXT_PREFIX)].lower() == TEXT_PREFIX:
            term, i = _text_search(text, i + len(TEXT_PREFIX))
            terms.append(term)
        elif ch in _QUOTES:
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


def _text_search(text: str, k: int) -> tuple[Term, int]:
    """The ``text:`` term whose value starts at ``k`` (quoted, or one bare word), and the index after it."""
    if k >= len(text) or text[k].isspace():
        raise FilterError('missing search after text: (e.g. text:"refund policy")', k)
    if text[k] in _QUOTES:
        query, end = _quoted(text, k)
        offset = k + 1
    else:
        end = k
        while end < len(text) and not text[end].isspace():
            end += 1
        query, offset = text[k:end], k
    problem = fts_problem(query)
    if problem is not None:
        message, at = problem
        raise FilterError(f"text: {message}", min(offset + at, max(end - 1, k)))
    return Term(TEXT_FIELD, TEXT_OP, query), end


# --- text: searches (SQLite FTS5 query syntax) -------------------------------------------

#: The term ``text:"..."``: a full-text search of conversations (field TEXT_FIELD, operator TEXT_OP).
TEXT_PREFIX = "text:"
TEXT_FIELD = "text"
TEXT_OP = "match"
#: The one column of the index, for FTS5 column filters (``content:word``).
_FTS_COLUMNS = frozenset({"content"})
_FTS_TOKEN = re.compile(r'\s+|"(?:[^"]|"")*"|"|[\w\x1a\u0080-\U0010ffff]+|[()*:^+,{}-]|.', re.DOTALL)
_FTS_BARE = re.compile(r"[\w\x1a\u0080-\U0010ffff]+")


class _FtsSyntax(Exception):
    def __init__(self, message: str, at: int) -> None:
        self.message, self.at = message, at


class _FtsParser:
    """Recursive descent over FTS5's query grammar (https://sqlite.org/fts5.html, section 3).

    query := or; or := and (OR and)*; and := not ([AND] not)*; not := unit (NOT unit)*;
    unit := [-][column :] ( "(" query ")" | NEAR "(" phrase... [, N] ")" | [^] phrase );
    phrase := word [*] (+ word [*])*; word := "quoted" | bareword.
    """

    def __init__(self, query: str) -> None:
        self.tokens = [(m.group(), m.start()) for m in _FTS_TOKEN.finditer(query) if not m.group().isspace()]
        self.i = 0
        self.end = len(query)

    def peek(self) -> str | None:
        return self.tokens[self.i][0] if self.i < len(self.tokens) else None

    def at(self) -> int:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else self.end

    def take(self) -> str:
        token = self.tokens[self.i][0]
        self.i += 1
        return token

    def fail(self, message: str) -> _FtsSyntax:
        return _FtsSyntax(message, self.at())

    def query(self) -> None:
        self.conjunction()
        while self.peek() == "OR":
            self.take()
            self.conjunction()

    def conjunction(self) -> None:
        self.negation()
        while (token := self.peek()) is not None and token not in ("OR", ")"):
            if token == "AND":
                self.take()
            elif token == "(" or self.tokens[self.i - 1][0] == ")":
                # FTS5 joins a group to its neighbour only with an explicit AND
                raise self.fail("write AND (or OR) between a group in ( ) and what is next to it")
            self.negation()

    def negation(self) -> None:
        self.unit()
        while self.peek() == "NOT":
            self.take()
            self.unit()

    def unit(self) -> None:
        token = self.peek()
        if token is None:
            raise self.fail("the search ends where a word was expected")
        if token in ("-", "{") or (self.i + 1 < len(self.tokens) and self.tokens[self.i + 1][0] == ":"):
            self.column_filter()
            token = self.peek()
        if token == "(":
            self.take()
            self.query()
            if self.peek() != ")":
                raise self.fail('missing ")"')
            self.take()
        elif token == "NEAR" and self.i + 1 < len(self.tokens) and self.tokens[self.i + 1][0] == "(":
            self.near()
        else:
            if token == "^":
                self.take()
            self.phrase()

    def column_filter(self) -> None:
        if self.peek() == "-":
            self.take()
        if self.peek() == "{":
            self.take()
            while self.peek() not in ("}", None):
                self.column()
            if self.peek() != "}":
                raise self.fail('missing "}"')
            self.take()
        else:
            self.column()
        if self.peek() != ":":
            raise self.fail('expected ":" after a column name')
        self.take()

    def column(self) -> None:
        token = self.peek()
        if token is None or token.strip('"').replace('""', '"') not in _FTS_COLUMNS:
            raise self.fail(
                f"{token!r} is not a column (the index has one: content); put words with -, : or . "
                'in double quotes, e.g. "gpt-4o"'
            )
        self.take()

    def near(self) -> None:
        self.take()
        self.take()  # NEAR (
        self.phrase()
        while self.peek() not in (")", ",", None):
            self.phrase()
        if self.peek() == ",":
            self.take()
            distance = self.peek()
            if distance is None or not distance.isdigit():
                raise self.fail("NEAR(... , N) needs a number")
            self.take()
        if self.peek() != ")":
            raise self.fail('missing ")" after NEAR(')
        self.take()

    def phrase(self) -> None:
        self.word()
        while self.peek() == "+":
            self.take()
            self.word()

    def word(self) -> None:
        token = self.peek()
        if token is None:
            raise self.fail("the search ends where a word was expected")
        if token == '"':
            raise self.fail('unterminated " quote')
        if token in ("AND", "OR", "NOT"):
            raise self.fail(f"{token} needs a word before and after it")
        if not (token.startswith('"') or _FTS_BARE.fullmatch(token)):
            raise self.fail(f'{token!r} must be inside double quotes (e.g. "gpt-4o")')
        self.take()
        if self.peek() == "*":
            self.take()


def fts_problem(query: str) -> tuple[str, int] | None:
    """What is wrong with an FTS5 query (message, offset in ``query``), or None when SQLite will accept it.

    Checked here, as the user types, so the filter line can put a caret under the
    problem; the SQLite backend reports anything this misses when it runs the search.
    """
    if not query.strip():
        return "the search is empty", 0
    parser = _FtsParser(query)
    try:
        parser.query()
        if parser.peek() is not None:
            raise parser.fail(f"unexpected {parser.peek()!r}")
    except _FtsSyntax as exc:
        return exc.message, exc.at
    return None


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


def _resolve_field(word: str, start: int) -> tuple[str, FieldSpec]:
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
    spec = SPECS.get(name)
    if spec is None:
        known = [*SPECS, *_ALIASES]
        close = difflib.get_close_matches(lowered, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise FilterError(f"unknown field {word!r}{hint}; fields: {', '.join(SPECS)}, attr.<key>", start)
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


def _value(name: str, spec: FieldSpec, op: str, raw: str, pos: int) -> object:
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
        if key not in STATUS_CODES:
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


def fold(value: str) -> str:
    return value.casefold()


def normalize_value(value: Any) -> Any:
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


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def as_number(value: Any) -> float | int | None:
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


def order(a: Any, op: str, b: Any) -> bool:
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


def text_eq(a: Any, b: str) -> bool | None:
    if a is None:
        return None
    return fold(as_text(a)) == b


def text_has(a: Any, b: str) -> bool | None:
    if a is None:
        return None
    return b in fold(as_text(a))


def model_is(a: Any, b: str) -> bool | None:
    """``a`` is model ``b`` (casefolded), or ``b`` plus a release-date suffix."""
    if a is None:
        return None
    model = fold(as_text(a))
    if model == b:
        return True
    return model.startswith(b) and bool(b) and _DATE_SUFFIX_RE.fullmatch(model, len(b)) is not None


def compare(a: Any, op: str, b: str) -> bool | None:
    """Generic comparison (prompt.version, attr.*): numeric when both are numbers, else casefolded text."""
    if a is None:
        return None
    if op == "~":
        return fold(b) in fold(as_text(a))
    x, y = as_number(a), as_number(b)
    if x is not None and y is not None:
        return order(x, op, y)
    if y is not None and op != "=":
        return False  # prompt.version>10 says nothing about "v2"
    return order(fold(as_text(a)), op, fold(b))


def text_of(parts: list[Any], attributes: dict[str, Any]) -> str:
    """Casefolded searchable text: the given parts and every attribute value."""
    texts = [as_text(p) for p in parts if p is not None]
    texts += [as_text(v) for v in attributes.values() if v is not None]
    return fold(_SEP.join(texts).replace("\x00", _SEP))


@dataclass(frozen=True)
class Filter:
    text: str
    terms: tuple[Term, ...]

    def is_empty(self) -> bool:
        return not self.terms

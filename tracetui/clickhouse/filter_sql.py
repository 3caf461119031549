"""The filter language (tracetui.model.filter) and the LLM fields as ClickHouse SQL.

Everything a user types reaches ClickHouse as a bound parameter (``{p3:String}``),
never as SQL text. What is ours (attribute keys, kind names) is written as quoted
literals by :func:`lit`.

The exporter keeps attributes as strings in ``SpanAttributes``; each LLM field
is read from the keys tracetui's normalizer reads it from, for every family
(tracetui.llm.semconv: :func:`~tracetui.llm.semconv.attribute_sources`,
``TTFT_SOURCES``, ``KIND_SOURCES``), first non-empty key first:

* **model**, **provider**, **session**, **user**, **prompt**, **error type**,
  **tokens**: those keys;
* **ttft**: the reported attributes in their units, traceAI's and OpenLIT's
  ``gen_ai.server.time_to_first_token``, else the first chunk event after the
  start of the last attempt (exception events before a successful end);
* **kind**: the kind attributes through the same value tables, then vLLM's span
  name, then token counts (a span that counts tokens is a model call);
* **groundedness**: OTel's ``gen_ai.evaluation.result`` events and log records
  whose ``gen_ai.evaluation.name`` is a groundedness name (the SQL twin of
  :func:`tracetui.llm.evals.is_groundedness`), worst score per span or trace.

What only Python decides, because it needs prices or the comparison of calls
with each other (**cost**, **retry**, **fallback**), is left out of the SQL:
:func:`residual` returns those terms, and the reader applies them to the rows
of the page it returns (the UI says so: ``Reader.filter_note``).

Trace-level readings (tracetui.model.filter) are those of the SQLite backend,
except that a trace's ``duration`` and ``service`` are its root span's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from tracetui.llm.evals import ATTRIBUTE_PREFIXES
from tracetui.llm.evals import EVENT_NAME as EVALUATION_EVENT
from tracetui.llm.semconv import (
    FIRST_TOKEN_EVENTS,
    KIND_SOURCES,
    MODEL_NAMES,
    PARAM_SOURCES,
    PROVIDER_ALIASES,
    SERVER_TTFT,
    TTFT_SOURCES,
    attribute_sources,
)
from tracetui.model.filter import TEXT_FIELD, Filter, FilterError, Term, as_number, fold
from tracetui.model.reader import NONE_KEY
from tracetui.model.views import TraceRow
from tracetui.otlp.decode import UNKNOWN_SERVICE

#: Terms no SQL decides (prices, and comparisons of calls with each other).
PYTHON_ONLY = frozenset(("cost", "retry", "fallback"))


class Tables(NamedTuple):
    traces: str  # qualified, quoted: `db`.`otel_traces`
    logs: str | None
    #: Evaluation results only Python reads (attribute forms: traceAI, OpenInference, ``eval.*``, evaluator
    #: spans): (trace id hex, span id hex, name, score), found by the reader and bound as one parameter.
    extra_scores: tuple[tuple[str, str, str, float], ...] = ()


#: Attribute key prefixes of the evaluation forms Python reads (tracetui.llm.evals.ATTRIBUTE_PREFIXES).
EVALUATION_PREFIXES = ATTRIBUTE_PREFIXES


class Query(NamedTuple):
    sql: str
    params: dict[str, Any]
    columns: tuple[str, ...] = ()


def lit(text: str) -> str:
    """A ClickHouse string literal for text of ours (keys, names), never for user input."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _attr(key: str, column: str = "SpanAttributes") -> str:
    """An attribute's value ('' when absent) of a map column of the table: found in the map's ``keys`` subcolumn
    (LowCardinality: a cheap scan) and read from its ``values`` at that index, a few times cheaper than the
    map's subscript, which compares every key's text (10M spans: ~0.05 s of CPU a key against ~0.5 s, beside the
    ~3.5 s that reading the values takes once)."""
    return f"{column}.values[indexOf({column}.keys, {lit(key)})]"


def _has(key: str, column: str = "SpanAttributes") -> str:
    return f"has({column}.keys, {lit(key)})"


def first_of(keys: tuple[str, ...], column: str = "SpanAttributes") -> str:
    """The first non-empty of these attributes (NULL when none is)."""
    return "coalesce(" + ", ".join(f"nullIf({_attr(k, column)}, '')" for k in keys) + ", NULL)"


def to_int(expr: str) -> str:
    """A number as Int64 (truncated, as Python's int()), NULL for NaN, infinities and what does not fit:
    never an error, whatever a span holds."""
    return f"accurateCastOrNull(trunc({expr}), 'Int64')"


def _int_of(keys: tuple[str, ...]) -> str:
    values = ", ".join(f"toInt64OrNull({_attr(k)}), {to_int(f'toFloat64OrNull({_attr(k)})')}" for k in keys)
    return f"coalesce({values}, NULL)"


def text_sql(field: str) -> str:
    return first_of(attribute_sources(field))


def tokens_sql(which: str = "tokens") -> str:
    """Input, output or (``tokens``) input + output tokens of a span; NULL when it counts none."""
    if which != "tokens":
        return _int_of(attribute_sources(which))
    tin, tout = tokens_sql("input_tokens"), tokens_sql("output_tokens")
    return f"if(isNull({tin}) AND isNull({tout}), NULL, ifNull({tin}, 0) + ifNull({tout}, 0))"


def service_sql() -> str:
    """The span's service as the decoder names it (the exporter writes "" when there is none)."""
    return f"if(ServiceName = '', {lit(UNKNOWN_SERVICE)}, ServiceName)"


def _param_model(key: str) -> str:
    return f"nullIf(JSONExtractString({_attr(key)}, 'model'), '')"


def request_model_sql() -> str:
    """The request model as tracetui.llm.semconv reads it (traceAI's ``gen_ai.request.model`` is the
    response model), then the request parameters' ``model``, then OpenInference's model name."""
    sources = attribute_sources("request_model")
    plain = [f"nullIf({_attr(k)}, '')" for k in sources]
    traceai = [f"nullIf({_attr(k)}, '')" for k in sources if k != "gen_ai.request.model"]
    rest = [_param_model(k) for k in PARAM_SOURCES] + [f"nullIf({_attr(k)}, '')" for k in MODEL_NAMES]
    return (f"if({_has('gen_ai.span.kind')}, coalesce({', '.join([*traceai, *rest])}), "
            f"coalesce({', '.join([*plain, *rest])}))")  # fmt: skip


def response_model_sql() -> str:
    sources = [f"nullIf({_attr(k)}, '')" for k in attribute_sources("response_model")]
    traceai = f"if({_has('gen_ai.span.kind')}, nullIf({_attr('gen_ai.request.model')}, ''), NULL)"
    return f"coalesce({', '.join(sources)}, {traceai}, nullIf({_attr('llm.model_name')}, ''))"


def provider_sql() -> str:
    """The provider in OTel's spelling (tracetui.llm.semconv.canonical_provider)."""
    keys = "[" + ", ".join(lit(k) for k in PROVIDER_ALIASES) + "]"
    values = "[" + ", ".join(lit(v) for v in PROVIDER_ALIASES.values()) + "]"
    raw = text_sql("provider")
    k = f"lowerUTF8(trimBoth({raw}))"
    return (f"if(isNull({raw}), NULL, transform({k}, {keys}, {values}, if(position({k}, '.') > 0, "
            f"transform(splitByChar('.', {k})[1], {keys}, {values}, {k}), {k})))")  # fmt: skip


def error_type_sql() -> str:
    """``error.type``, else (on a failed span) its first exception event's ``exception.type``; the
    official OpenAI instrumentation's ``<class 'openai.APIError'>`` read as ``openai.APIError``."""
    from_event = ("if(StatusCode IN ('Error', 'STATUS_CODE_ERROR'), nullIf(arrayFirst((a, n) -> n = 'exception', "
                  "`Events.Attributes`, `Events.Name`)['exception.type'], ''), NULL)")  # fmt: skip
    found = f"coalesce({text_sql('error_type')}, {from_event})"
    return f"replaceRegexpOne({found}, '^<class \\'(.*)\\'>$', '\\1')"


def session_sql() -> str:
    return text_sql("session_id")


def kind_sql() -> str:
    """The span's LLM kind (``llm``, ``tool``, ``agent``...), NULL for other spans."""
    parts = []
    for key, mapping in KIND_SOURCES:
        keys = "[" + ", ".join(lit(k) for k in mapping) + "]"
        values = "[" + ", ".join(lit(v) for v in mapping.values()) + "]"
        value = _attr(key)
        if key == "operation.name":
            value = f"splitByChar(' ', {value})[1]"
        looked = (f"transform({value}, {keys}, {values}, transform(upper({value}), {keys}, {values}, "
                  f"transform(lower({value}), {keys}, {values}, '')))")  # fmt: skip
        parts.append(f"nullIf({looked}, '')")
    parts.append("if(SpanName = 'llm_request', 'llm', NULL)")
    parts.append(f"if(isNotNull({tokens_sql()}), 'llm', NULL)")
    return "coalesce(" + ", ".join(parts) + ")"


def is_model_call_sql() -> str:
    return f"ifNull({kind_sql()} = 'llm', 0)"


def model_call_keys_sql() -> str:
    """A superset of :func:`is_model_call_sql` that reads the attributes' keys only (a kind or token key, or
    vLLM's span name): ClickHouse moves it to PREWHERE, and the attribute values are then read only in the
    granules where it holds (the table is ordered by service and span name, so LLM spans are together)."""
    keys = [key for key, _ in KIND_SOURCES] + [k for name in ("input_tokens", "output_tokens")
                                                for k in attribute_sources(name)]  # fmt: skip
    return f"(hasAny(SpanAttributes.keys, [{', '.join(lit(k) for k in keys)}]) OR SpanName = 'llm_request')"


def _event_times() -> str:
    return "arrayMap(t -> toUnixTimestamp64Nano(t), `Events.Timestamp`)"


def attempt_start_sql() -> str:
    """Start (ns) of the span's last attempt: after its last exception event, when the span then succeeded."""
    last_exception = f"arrayMax(arrayFilter((t, n) -> n = 'exception', {_event_times()}, `Events.Name`))"
    return (f"if(StatusCode NOT IN ('Error', 'STATUS_CODE_ERROR') AND has(`Events.Name`, 'exception'), "
            f"greatest({last_exception}, toUnixTimestamp64Nano(Timestamp)), toUnixTimestamp64Nano(Timestamp))")  # fmt: skip


def _first_token_names() -> str:
    return "[" + ", ".join(lit(n) for n in sorted(FIRST_TOKEN_EVENTS)) + "]"


def first_token_sql() -> str:
    """Time (ns) of the span's first first-token event (0 when it has none)."""
    return f"arrayFirst((t, n) -> has({_first_token_names()}, n), {_event_times()}, `Events.Name`)"


def ttft_sql(attempt: str | None = None, first: str | None = None) -> str:
    """Time to first token (ns), as tracetui.llm.semconv reads it; NULL when the span has none. ``attempt`` and
    ``first``: names (aliases) already holding :func:`attempt_start_sql` and :func:`first_token_sql` (ClickHouse
    evaluates a repeated expression with lambdas each time it is written)."""
    attempt, first = attempt or attempt_start_sql(), first or first_token_sql()
    parts = [to_int(f"toFloat64OrNull({_attr(key)}) * {factor!r}") for key, factor in TTFT_SOURCES]
    server = _attr(SERVER_TTFT)
    parts.append(f"if({_has('gen_ai.span.kind')}, {to_int(f'toFloat64OrNull({server}) * 1e6')}, NULL)")
    parts.append(f"if({_attr('telemetry.sdk.name')} = 'openlit' AND lower({_attr('gen_ai.request.stream')}) != 'false' "
                 f"AND toFloat64OrNull({server}) > 0, {to_int(f'toFloat64OrNull({server}) * 1e9')}, NULL)")  # fmt: skip
    parts.append(f"if(hasAny(`Events.Name`, {_first_token_names()}) AND {first} >= {attempt}, "
                 f"toInt64({first}) - toInt64({attempt}), NULL)")  # fmt: skip
    parts = [f"if({p} >= 0, {p}, NULL)" for p in parts]
    return "coalesce(" + ", ".join(parts) + ")"


def decode_rate_sql(attempt: str | None = None, ttft: str | None = None, output: str | None = None) -> str:
    """Output tokens per second after the first token (NULL without both); ``attempt``, ``ttft``, ``output``:
    names already holding the last attempt's start, the TTFT and the output tokens (ifNull'ed to 0 is the same)."""
    attempt, ttft = attempt or attempt_start_sql(), ttft or ttft_sql()
    output = output or tokens_sql("output_tokens")
    decode_ns = f"(toInt64(toUnixTimestamp64Nano(Timestamp) + Duration) - toInt64({attempt}) - {ttft})"
    return f"if({output} > 0 AND {decode_ns} > 0, {output} / ({decode_ns} / 1e9), NULL)"


#: Attribute key prefixes that make a span worth decoding for the list: LLM families, HTTP, evaluations.
_CALL_PREFIXES = (
    "gen_ai.", "llm.", "ai.", "traceloop.", "openinference.", "langsmith.", "litellm.", "fi.", "http.", "eval.",
    "evaluations.", "annotations.", "embedding.", "operation.name", "input.", "output.", "request_data",
    "metadata.", "pydantic_ai.", "autogen.", "claude_agent.", "time_to_first_token", "telemetry.sdk.name",
)  # fmt: skip


def call_span_sql() -> str:
    """A superset of the spans the normalizer gives a kind or an HTTP status, and of evaluation spans."""
    tests = " OR ".join(f"startsWith(k, {lit(p)})" for p in _CALL_PREFIXES)
    return f"(arrayExists(k -> {tests}, SpanAttributes.keys) OR SpanName = 'llm_request' OR has(`Events.Name`, {lit(EVALUATION_EVENT)}))"


def is_groundedness_sql(name: str) -> str:
    """SQL twin of tracetui.llm.evals.is_groundedness over a name expression."""
    n = f"replaceAll(replaceAll(lowerUTF8({name}), '-', '_'), ' ', '_')"
    inverse = ("unground", "not_ground", "nonground", "non_ground", "unfaithful", "hallucinat")
    return (f"((position({n}, 'grounded') > 0 OR position({n}, 'faithful') > 0) AND NOT multiSearchAny({n}, "
            f"[{', '.join(lit(p) for p in inverse)}]))")  # fmt: skip


def evaluation_attributes_sql() -> str:
    """Spans that may carry evaluation results as attributes (or, as evaluator spans, point at their target)."""
    tests = " OR ".join(f"startsWith(k, {lit(prefix)})" for prefix in EVALUATION_PREFIXES)
    return (
        f"(arrayExists(k -> {tests}, SpanAttributes.keys) OR upper({_attr('openinference.span.kind')}) = 'EVALUATOR')"
    )


def evaluation_keys_sql() -> str:
    """A superset of :func:`evaluation_attributes_sql` that reads the attributes' keys only (for a PREWHERE: the
    values, prompts included, are then read only where a span may hold evaluation results)."""
    tests = " OR ".join(f"startsWith(k, {lit(prefix)})" for prefix in EVALUATION_PREFIXES)
    return f"(arrayExists(k -> {tests}, SpanAttributes.keys) OR {_has('openinference.span.kind')})"


def evaluation_scores_sql(tables: Tables, p: _Params) -> str:
    """(TraceId, SpanId, name, score) of every evaluation result, each once (one sent both as a span event
    and as a log record is one result, as in the SQLite backend): OTel's span events and log records in
    SQL, then the ones Python read from attributes (``tables.extra_scores``, bound through ``p``)."""
    ga = "gen_ai.evaluation."
    parts = [
        f"SELECT TraceId, SpanId, ev['{ga}name'] AS name, toFloat64OrNull(ev['{ga}score.value']) AS score, "
        f"ev['{ga}score.label'] AS label FROM {tables.traces} ARRAY JOIN `Events.Name` AS en, `Events.Attributes` AS ev "
        f"WHERE en = {lit(EVALUATION_EVENT)}"
    ]
    if tables.logs is not None:
        parts.append(
            f"SELECT TraceId, SpanId, LogAttributes['{ga}name'], toFloat64OrNull(LogAttributes['{ga}score.value']), "
            f"LogAttributes['{ga}score.label'] FROM {tables.logs} WHERE EventName = {lit(EVALUATION_EVENT)} "
            f"OR LogAttributes['event.name'] = {lit(EVALUATION_EVENT)}"
        )
    if tables.extra_scores:
        bound = p.bind(list(tables.extra_scores), "Array(Tuple(String, String, String, Float64))")
        parts.append(f"SELECT x.1, x.2, x.3, x.4, '' FROM (SELECT arrayJoin({bound}) AS x)")
    return "SELECT DISTINCT TraceId, SpanId, name, score, label FROM (" + " UNION ALL ".join(parts) + ")"


def groundedness_query(tables: Tables) -> Query:
    p = _Params()
    return Query(
        f"SELECT TraceId, SpanId, score FROM ({evaluation_scores_sql(tables, p)}) "
        f"WHERE {is_groundedness_sql('name')} AND isNotNull(score) AND isFinite(score)",
        p.values,
    )


# --- compiling a filter ---------------------------------------------------------------------------


@dataclass
class _Params:
    values: dict[str, Any] = field(default_factory=dict)

    def bind(self, value: Any, kind: str) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"{{{name}:{kind}}}"


class Compiled(NamedTuple):
    sql: str  # "" when nothing compiles
    params: dict[str, Any]


#: Trace totals only Python counts (each request once, across families): decided on the page, like cost.
_TRACE_TOTALS = frozenset(("tokens", "input_tokens", "output_tokens"))


def residual(flt: Filter, trace_level: bool = True) -> Filter | None:
    """The terms the reader applies in Python to the page (None when SQL decides every term)."""
    python = PYTHON_ONLY | _TRACE_TOTALS if trace_level else PYTHON_ONLY
    terms = tuple(t for t in flt.terms if t.field in python)
    return Filter(" ".join(_term_text(t) for t in terms), terms) if terms else None


def _term_text(term: Term) -> str:
    return f"{term.field}{term.op}{term.value}"


_ORDER = {">": ">", ">=": ">=", "<": "<", "<=": "<=", "=": "=", "!=": "="}


def _model_match(column: str, value: str, op: str, p: _Params) -> str:
    folded = f"lowerUTF8({column})"
    bound = p.bind(fold(value), "String")
    if op == "~":
        return f"position({folded}, {bound}) > 0"
    suffix = f"substring({folded}, lengthUTF8({bound}) + 1)"
    return (f"({folded} = {bound} OR (startsWith({folded}, {bound}) AND {bound} != '' AND "
            f"match({suffix}, '^-(?:\\\\d{{4}}-\\\\d{{2}}-\\\\d{{2}}|\\\\d{{8}}|\\\\d{{4}})$')))")  # fmt: skip


def _text_match(column: str, value: str, op: str, p: _Params) -> str:
    bound = p.bind(fold(str(value)), "String")
    if op == "~":
        return f"position(lowerUTF8({column}), {bound}) > 0"
    return f"lowerUTF8({column}) = {bound}"


def _generic(column: str, op: str, value: str, p: _Params) -> str:
    """tracetui.model.filter.compare: numeric when both are numbers, else casefolded text."""
    if op == "~":
        return f"position(lowerUTF8({column}), {p.bind(fold(value), 'String')}) > 0"
    number = as_number(value)
    text = f"lowerUTF8({column}) {_ORDER[op]} {p.bind(fold(value), 'String')}"
    if number is None:
        return text
    numeric = f"toFloat64OrNull({column}) {_ORDER[op]} {p.bind(float(number), 'Float64')}"
    fallback = text if op in ("=", "!=") else "0"
    return f"if(isNotNull(toFloat64OrNull({column})), {numeric}, {fallback})"


def _number(expr: str, op: str, value: Any, p: _Params, kind: str = "Float64") -> str:
    return f"{expr} {_ORDER[op]} {p.bind(value, kind)}"


_STATUS = {"error": "('Error', 'STATUS_CODE_ERROR')", "ok": "('Ok', 'STATUS_CODE_OK')",
           "unset": "('Unset', 'STATUS_CODE_UNSET', '')"}  # fmt: skip


def _span_positive(term: Term, p: _Params, tables: Tables) -> str | None:
    """SQL that holds when the span matches ``term`` read with ``=`` for ``!=`` (NULL reads as no match)."""
    name, op, value = term.field, "=" if term.op == "!=" else str(term.op), term.value
    if name is None:
        haystack = ("concat(SpanName, ' ', ServiceName, ' ', StatusMessage, ' ', "
                    "arrayStringConcat(mapValues(SpanAttributes), ' '))")  # fmt: skip
        return f"positionCaseInsensitiveUTF8({haystack}, {p.bind(str(value), 'String')}) > 0"
    if name.startswith("attr."):
        key = p.bind(name[5:], "String")
        found = f"SpanAttributes.values[indexOf(SpanAttributes.keys, {key})]"
        return f"(has(SpanAttributes.keys, {key}) AND {_generic(found, op, str(value), p)})"
    if name in PYTHON_ONLY:
        return None
    if name == "model":
        request, response = request_model_sql(), response_model_sql()
        return f"({_model_match(request, str(value), op, p)} OR {_model_match(response, str(value), op, p)})"
    if name == "service":
        return _text_match(service_sql(), str(value), op, p)
    if name == "provider":
        return _text_match(provider_sql(), str(value), op, p)
    if name == "name":
        return _text_match("SpanName", str(value), op, p)
    if name == "session":  # the span's own, else its trace's
        own = session_sql()
        traces = f"TraceId IN (SELECT TraceId FROM {tables.traces} WHERE {_text_match(own, str(value), op, p)})"
        return f"if(isNotNull({own}), {_text_match(own, str(value), op, p)}, {traces})"
    if name == "error_type":
        return _text_match(error_type_sql(), str(value), op, p)
    if name in ("user", "prompt"):
        return _text_match(text_sql("user_id" if name == "user" else "prompt_name"), str(value), op, p)
    if name == "prompt.version":
        return _generic(text_sql("prompt_version"), op, str(value), p)
    if name == "status":
        return f"StatusCode IN {_STATUS[str(value)]}"
    if name == "kind":
        return f"ifNull({kind_sql()}, 'other') = {p.bind(str(value), 'String')}"
    if name == "duration":
        return _number("Duration", op, int(value), p, "Int64")  # type: ignore[call-overload]
    if name == "ttft":
        return _number(ttft_sql(), op, int(value), p, "Int64")  # type: ignore[call-overload]
    if name in ("tokens", "input_tokens", "output_tokens"):
        return _number(tokens_sql(name), op, int(value), p, "Int64")  # type: ignore[call-overload]
    if name == "groundedness":
        scores = (f"SELECT TraceId, SpanId FROM ({evaluation_scores_sql(tables, p)}) WHERE {is_groundedness_sql('name')} "
                  f"AND isNotNull(score) AND NOT isNaN(score) GROUP BY TraceId, SpanId "
                  f"HAVING {_number('min(score)', op, float(value), p)}")  # type: ignore[arg-type]  # fmt: skip
        return f"(TraceId, SpanId) IN ({scores})"
    if name == "trace":
        bound = p.bind(str(value).lower(), "String")
        return f"position(TraceId, {bound}) > 0" if op == "~" else f"startsWith(TraceId, {bound})"
    raise AssertionError(name)


def _span_term(term: Term, p: _Params, tables: Tables) -> str | None:
    positive = _span_positive(term, p, tables)
    if positive is None:
        return None
    return f"NOT ifNull({positive}, 0)" if term.op == "!=" else f"ifNull({positive}, 0)"


def refuse_text_search(flt: Filter) -> None:
    """ClickHouse has no copy of the full-text index: a ``text:`` term is refused with a clear error."""
    if any(term.field == TEXT_FIELD for term in flt.terms):
        raise FilterError(
            "text: searches need the full-text index of a local database (tracetui serve / view --db); "
            'ClickHouse sources do not have one: use free text ("refund policy") instead'
        )


def span_condition(flt: Filter, tables: Tables, p: _Params | None = None) -> Compiled:
    """The filter's span-level reading (every term on the span itself) as a WHERE condition on spans;
    Python-only terms are left out."""
    refuse_text_search(flt)
    p = p or _Params()
    parts = [sql for sql in (_span_term(t, p, tables) for t in flt.terms) if sql is not None]
    return Compiled(" AND ".join(parts), p.values)


_TRACE_LEVEL = frozenset(("duration", "service", "status", "trace", "session", "groundedness"))


def trace_condition(flt: Filter, tables: Tables) -> Compiled:
    """The filter's trace-level reading as a condition on root spans (``TraceId IN`` subqueries)."""
    refuse_text_search(flt)
    p = _Params()
    parts: list[str] = []
    together: list[str] = []  # span-level terms that must hold on one span
    for term in flt.terms:
        name, negated = term.field, term.op == "!="
        if name in PYTHON_ONLY or name in _TRACE_TOTALS:
            continue  # trace totals count each request once: only Python knows (residual)
        if name in _TRACE_LEVEL:
            parts.append(_trace_term(term, p, tables))
        elif name is None:
            parts.append(f"TraceId IN (SELECT TraceId FROM {tables.traces} WHERE {_span_term(term, p, tables)})")
        elif negated:
            positive = replace_op(term, "=")
            condition = _span_term(positive, p, tables)
            parts.append(f"TraceId NOT IN (SELECT TraceId FROM {tables.traces} WHERE {condition})")
        else:
            sql = _span_term(term, p, tables)
            if sql is not None:
                together.append(sql)
    if together:
        parts.append(f"TraceId IN (SELECT TraceId FROM {tables.traces} WHERE {' AND '.join(together)})")
    return Compiled(" AND ".join(parts), p.values)


def replace_op(term: Term, op: str) -> Term:
    return Term(term.field, op, term.value)


def _trace_term(term: Term, p: _Params, tables: Tables) -> str:
    """A trace-level term on the root span row (its own columns, or a subquery over the trace's spans)."""
    name, op = term.field, "=" if term.op == "!=" else str(term.op)
    value = term.value
    if name == "duration":
        positive = _number("Duration", op, int(value), p, "Int64")  # type: ignore[call-overload]
    elif name == "service":
        positive = _text_match(service_sql(), str(value), op, p)
    elif name == "trace":
        bound = p.bind(str(value).lower(), "String")
        positive = f"position(TraceId, {bound}) > 0" if op == "~" else f"startsWith(TraceId, {bound})"
    elif name == "session":
        positive = (f"TraceId IN (SELECT TraceId FROM {tables.traces} WHERE "
                    f"{_text_match(session_sql(), str(value), op, p)})")  # fmt: skip
    elif name == "status":
        failed = f"TraceId IN (SELECT TraceId FROM {tables.traces} WHERE StatusCode IN {_STATUS['error']})"
        positive = failed if value == "error" else f"NOT {failed}"
    else:  # groundedness: the trace's worst score
        scores = (f"SELECT TraceId FROM ({evaluation_scores_sql(tables, p)}) WHERE {is_groundedness_sql('name')} "
                  f"AND isNotNull(score) AND NOT isNaN(score) GROUP BY TraceId "
                  f"HAVING {_number('min(score)', op, float(value), p)}")  # type: ignore[arg-type]  # fmt: skip
        positive = f"TraceId IN ({scores})"
    return f"NOT ifNull({positive}, 0)" if term.op == "!=" else f"ifNull({positive}, 0)"


# --- the Python-only terms, on the rows of one page -------------------------------------------------


def matches_trace_row(flt: Filter, row: TraceRow, calls_of: Callable[[bytes], list[dict[str, Any]]]) -> bool:
    """Python-only terms of the trace-level reading: ``cost`` on the trace's total, ``retry`` / ``fallback``
    on its calls (``calls_of``: the trace's call spans as ``spans --json`` dicts)."""
    from tracetui.query.filter_match import matches_span

    for term in flt.terms:
        if term.field == "cost" or term.field in _TRACE_TOTALS:
            if term.field == "cost":
                total: float | None = row.cost_usd
            else:
                total = {"tokens": row.input_tokens + row.output_tokens, "input_tokens": row.input_tokens,
                         "output_tokens": row.output_tokens}[term.field]  # fmt: skip
            hit = total is not None and not math.isnan(total) and _compare(total, str(term.op), float(term.value))  # type: ignore[arg-type]
            if not (not hit if term.op == "!=" else hit):
                return False
        else:
            positive = any(matches_span(Filter("", (replace_op(term, "="),)), s) for s in calls_of(row.trace_id))
            if positive == (term.op == "!="):
                return False
    return True


def _compare(a: float, op: str, b: float) -> bool:
    op = "=" if op == "!=" else op
    return {"=": a == b, ">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]


# --- statistics ----------------------------------------------------------------------------------


def _group_key(by: str, route_attribute: str | None, p: _Params, missing: str | None = NONE_KEY) -> str:
    """The group of a call; ``route`` reads the run's root (``root_service``, ``root_name``, ``root_attributes``
    of the join in :func:`_calls`). ``missing``: the key of calls without one (None: NULL, as SQLite's columns)."""
    if by == "model":
        found = f"coalesce({request_model_sql()}, {response_model_sql()})"
        return found if missing is None else f"ifNull({found}, {lit(missing)})"
    if by == "prompt_version":
        name, version = text_sql("prompt_name"), text_sql("prompt_version")
        if missing is None:
            return f"multiIf(isNotNull({name}), concat({name}, '@', ifNull({version}, {lit(NONE_KEY)})), {version})"
        return (f"multiIf(isNotNull({name}), concat({name}, '@', ifNull({version}, {lit(NONE_KEY)})), "
                f"ifNull({version}, {lit(missing)}))")  # fmt: skip
    if route_attribute:
        key = p.bind(route_attribute, "String")
        return (f"multiIf(has(SpanAttributes.keys, {key}), SpanAttributes.values[indexOf(SpanAttributes.keys, {key})], "
                f"mapContains(root_attributes, {key}), root_attributes[{key}], {lit(NONE_KEY)})")  # fmt: skip
    return f"concat(if(root_name = '', {service_sql()}, root_service), ' / ', if(root_name = '', SpanName, root_name))"


def _window(since_ns: int | None, p: _Params) -> str:
    return "1" if since_ns is None else f"Timestamp >= fromUnixTimestamp64Nano({p.bind(since_ns, 'Int64')})"


def _calls(
    tables: Tables, by: str, since_ns: int | None, flt: Filter | None, route: str | None, p: _Params,
    until_ns: int | None = None, cohort: bool = False,
) -> str:  # fmt: skip
    """One row per counted call in the window that matches ``flt`` (each span once), the facts as columns.

    Counted: kind llm, and no model call of the window below it (a framework's span over the provider's).
    One scan: the model calls of the window are read once, and each trace's parents of model calls are
    gathered over them (a window function), rather than found again by a second scan (``NOT IN``).
    ``until_ns``: calls that started before it only (applied after the parents are gathered, so a call
    whose model call below it starts later is still not counted). ``cohort``: every group key (``key`` is
    the route, ``model_key`` and ``prompt_key`` NULL where a call has none), the cap and the output tokens
    as counted (:func:`cohort_query`)."""
    window = _window(since_ns, p)
    matched = span_condition(flt, tables, p).sql if flt is not None and not flt.is_empty() else ""
    usage = ", ".join(f"ifNull({tokens_sql(name)}, 0) AS {name}" for name in USAGE)
    reported = "coalesce(" + ", ".join(_reported(k) for k in REPORTED_COST) + ", NULL)"
    roots = ""
    if cohort:
        by, route = "route", None
    if by == "route":  # the run's service and name, or the attribute on its root span
        roots = (f" LEFT JOIN (SELECT TraceId, argMin({service_sql()}, Timestamp) AS root_service, "
                 f"argMin(SpanName, Timestamp) AS root_name, argMin(SpanAttributes, Timestamp) AS root_attributes "
                 f"FROM {tables.traces} WHERE ParentSpanId = '' AND TraceId IN (SELECT TraceId FROM {tables.traces} "
                 f"WHERE {model_call_keys_sql()} AND {window} AND {is_model_call_sql()}) GROUP BY TraceId) AS roots "
                 "USING (TraceId)")  # fmt: skip
    key = f"{_group_key(by, route, p)} AS key"
    if cohort:
        output = tokens_sql("output_tokens")
        key += (f", {_group_key('model', None, p, None)} AS model_key, {_group_key('prompt_version', None, p, None)} "
                f"AS prompt_key, {max_tokens_sql()} AS max_tokens, if({output} >= 0, {output}, NULL) AS output_count")  # fmt: skip
    until = "" if until_ns is None else f" AND start < {p.bind(_clamp64(until_ns), 'Int64')}"
    model_calls = (
        f"SELECT {key}, TraceId, SpanId, ParentSpanId, toUnixTimestamp64Nano(Timestamp) AS start, "
        f"Duration AS duration, {attempt_start_sql()} AS _attempt, {first_token_sql()} AS _first, "
        f"{ttft_sql('_attempt', '_first')} AS ttft, {decode_rate_sql('_attempt', 'ttft', 'output_tokens')} AS rate, "
        f"StatusCode IN ('Error', 'STATUS_CODE_ERROR') AS failed, ifNull({request_model_sql()}, '') AS request, "
        f"ifNull({response_model_sql()}, '') AS response, ifNull({provider_sql()}, '') AS provider, {usage}, "
        f"{reported} AS reported, {matched or '1'} AS matched FROM {tables.traces}{roots} "
        f"WHERE {model_call_keys_sql()} AND {window} AND {is_model_call_sql()} LIMIT 1 BY TraceId, SpanId"
    )  # fmt: skip
    return (f"SELECT * EXCEPT (ParentSpanId, _attempt, _first, matched, below) FROM (SELECT *, groupArray(ParentSpanId) OVER "
            f"(PARTITION BY TraceId) AS below FROM ({model_calls})) WHERE matched AND NOT has(below, SpanId){until}")  # fmt: skip


#: Token counts the pricer reads, and the attributes where a library reports a call's cost itself.
USAGE = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
REPORTED_COST = ("llm.cost.total", "gen_ai.cost.total", "operation.cost", "gen_ai.usage.cost", "gen_ai.cost.total_cost")


def _reported(key: str) -> str:
    """A cost the span reports itself (tracetui.llm.semconv._reported_cost): not negative, and OpenLIT's 0
    for a model missing from its price list is no cost."""
    value = f"toFloat64OrNull({_attr(key)})"
    if key == "gen_ai.usage.cost":
        return f"if({value} >= 0 AND NOT ({value} = 0 AND {_attr('telemetry.sdk.name')} = 'openlit'), {value}, NULL)"
    return f"if({value} >= 0, {value}, NULL)"


def calls_query(tables: Tables, by: str, since_ns: int | None, flt: Filter | None, route: str | None) -> Query:
    """Every call's facts: key, trace, start, duration, failed, ttft, rate, span."""
    p = _Params()
    calls = _calls(tables, by, since_ns, flt, route, p)
    return Query(f"SELECT key, TraceId, start, duration, failed, ttft, rate, SpanId FROM ({calls})", p.values)


#: Most recent calls' durations per group (the Stats screen's latency histogram).
RECENT = 2000
FIGURE_COLUMNS = (
    "key", "count", "runs", "durations", "ttfts", "tokens_per_s", "errors", "groundedness", "recent", "usage",
)  # fmt: skip
#: Each element of a figures row's ``usage``: token sums per model and provider, apart from the calls whose
#: library reported their cost (priced in Python: prices are linear in tokens).
USAGE_COLUMNS = ("response", "request", "provider", "reported", "calls", *USAGE, "reported_usd")


def figures_query(tables: Tables, by: str, since_ns: int | None, flt: Filter | None, route: str | None) -> Query:
    """Per group: counts, exact duration and TTFT percentiles (linear interpolation, as tracetui.query.stats),
    mean decode rate, errors, mean groundedness of the calls' scores, the most recent durations, and the token
    sums to price (``usage``, USAGE_COLUMNS). One query, the calls computed once: aggregated per group, model and
    provider first (aggregate states), then the states merged per group."""
    p = _Params()
    calls = _calls(tables, by, since_ns, flt, route, p)
    scores = (f"SELECT TraceId, SpanId, groupArray(score) AS scores FROM ({evaluation_scores_sql(tables, p)}) "
              f"WHERE {is_groundedness_sql('name')} AND isNotNull(score) AND isFinite(score) GROUP BY TraceId, SpanId")  # fmt: skip
    sums = ", ".join(f"sum(c.{name}) AS {name}" for name in USAGE)
    fine = (
        "SELECT c.key AS key, c.response AS response, c.request AS request, c.provider AS provider, "
        "isNotNull(c.reported) AS has_reported, count() AS n, uniqExactState(c.TraceId) AS runs, "
        "quantilesExactInclusiveState(0.5, 0.95, 0.99)(c.duration) AS durations, "
        "quantilesExactInclusiveIfState(0.5, 0.95, 0.99)(c.ttft, isNotNull(c.ttft)) AS ttfts, "
        "avgIfState(c.rate, isNotNull(c.rate)) AS rate, sum(c.failed) AS failed, "
        "sum(arraySum(e.scores)) AS score_sum, sum(length(e.scores)) AS score_n, "
        f"groupArraySortedState({RECENT})((-c.start, c.duration)) AS recent, {sums}, "
        "sumIf(c.reported, isNotNull(c.reported)) AS reported_usd "
        f"FROM ({calls}) AS c LEFT JOIN ({scores}) AS e ON c.TraceId = e.TraceId AND c.SpanId = e.SpanId "
        "GROUP BY key, response, request, provider, has_reported"
    )
    usage = ", ".join(("response", "request", "provider", "has_reported", "n", *USAGE, "reported_usd"))
    sql = (
        "SELECT key, sum(n), uniqExactMerge(runs), quantilesExactInclusiveMerge(0.5, 0.95, 0.99)(durations), "
        "quantilesExactInclusiveIfMerge(0.5, 0.95, 0.99)(ttfts), avgIfMerge(rate), sum(failed), "
        "if(sum(score_n) > 0, sum(score_sum) / sum(score_n), NULL), "
        f"arrayReverse(arrayMap(x -> x.2, groupArraySortedMerge({RECENT})(recent))), groupArray(tuple({usage})) "
        f"FROM ({fine}) GROUP BY key"
    )
    return Query(sql, p.values, FIGURE_COLUMNS)


# --- cohorts (compare, regression sets) ----------------------------------------------------------

_INT64 = (1 << 63) - 1


def _clamp64(value: int) -> int:
    return max(-_INT64, min(_INT64, value))


def max_tokens_sql() -> str:
    """The output cap a call was made with, as tracetui.llm.semconv reads it: the ``max_tokens`` attributes, first
    non-empty first (a negative one is no cap, as the decoder's range check makes it), else ``max_tokens`` /
    ``max_completion_tokens`` / ``max_output_tokens`` of the request parameters' JSON when it is a positive
    integer there (not a float, not a string)."""
    found = _int_of(attribute_sources("max_tokens"))
    in_json = []
    for key in PARAM_SOURCES:
        value = _attr(key)
        for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
            number = f"JSONExtractInt({value}, {lit(name)})"
            in_json.append(
                f"if(JSONType({value}, {lit(name)}) IN ('Int64', 'UInt64') AND {number} > 0, {number}, NULL)"
            )
    return f"if(isNull({found}), coalesce({', '.join(in_json)}, NULL), if({found} >= 0, {found}, NULL))"


#: A cohort row (:func:`cohort_query`): the call's facts, the token counts and reported cost to price it, its
#: run's wall clock and its Stats keys (model, prompt version: NULL where it has none; route).
COHORT_COLUMNS = (
    "TraceId", "SpanId", "start", "duration", "failed", "ttft", "rate", "output_count", "max_tokens", "reported",
    "response", "request", "provider", *USAGE, "run", "model_key", "prompt_key", "key",
)  # fmt: skip


def cohort_query(
    tables: Tables, since_ns: int | None, until_ns: int | None, flt: Filter | None, runs_from_ns: int | None = None
) -> Query:
    """Counted calls started in [since_ns, until_ns) matching ``flt``'s SQL terms, oldest first, each with its
    run's wall clock: the spread of every span of the run, read over the runs that have a model call in the
    window (``runs_from_ns``: no span of those runs starts earlier, from the trace-id table)."""
    p = _Params()
    calls = _calls(tables, "route", since_ns, flt, None, p, until_ns=until_ns, cohort=True)
    runs_from = "" if runs_from_ns is None else (
        f" AND Timestamp >= fromUnixTimestamp64Nano({p.bind(_clamp64(runs_from_ns), 'Int64')})")  # fmt: skip
    runs = (
        "SELECT TraceId, greatest(max(toUnixTimestamp64Nano(Timestamp) + toInt64(Duration)) - "
        f"min(toUnixTimestamp64Nano(Timestamp)), 0) AS run FROM {tables.traces} WHERE TraceId IN (SELECT TraceId "
        f"FROM {tables.traces} WHERE {model_call_keys_sql()} AND {_window(since_ns, p)}){runs_from} GROUP BY TraceId"
    )
    columns = ", ".join("r.run" if name == "run" else f"c.{name}" for name in COHORT_COLUMNS)
    sql = (f"SELECT {columns} FROM ({calls}) AS c LEFT JOIN ({runs}) AS r ON c.TraceId = r.TraceId "
           "ORDER BY c.start, c.TraceId, c.SpanId")  # fmt: skip
    return Query(sql, p.values, COHORT_COLUMNS)

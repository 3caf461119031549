"""What one export adds to the store, computed before it reaches the writer.

Everything here is pure Python over decoded span rows, so it runs where the
request is decoded (a decode worker process, see tracetui.ingest.workers)
rather than on the single writer thread, which only has to insert:

* each row gets its timing-analysis columns (``ANALYSIS_COLUMNS``);
* each trace gets a summary (span count, bounds, root, errors, model usage),
  as the named parameters of the writer's trace-row statements;
* each trace whose spans all arrived in this export gets its analysis
  (retries, fallbacks, counted totals, slowest call, time split).

The analysis assumes the trace is new. The writer uses it only when that is
true; for a trace that already had spans stored it re-analyzes from the
database and corrects the rows it inserted (``writer.update_timing``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tracetui.llm.timing import Call, analyze
from tracetui.model.rows import COL, SPAN_COLUMNS, SPLIT_KEYS, Decoded

#: Columns the timing analysis fills, appended to each decoded row.
ANALYSIS_COLUMNS = ("is_retry", "is_fallback", "retry_ns", "counted", "retry_offset_ns", "retry_source")
NO_ANALYSIS = (0, 0, None, None, None, None)
#: A row as decoded, before the analysis columns.
BASE_WIDTH = len(SPAN_COLUMNS)

#: Traces bigger than this are not re-analyzed on every batch (it would cost
#: O(spans) per batch); their split stays as last computed.
MAX_ANALYZED_SPANS = 20_000

#: Trace-row fields set by the timing analysis.
TIMING_FIELDS = (
    "retries", "fallbacks", "slowest_span_id", "slowest_name", "slowest_ns", "tokenless_calls",
    *(f"split_{key}_ns" for key in SPLIT_KEYS),
)  # fmt: skip

_I_TRACE, _I_SPAN, _I_PARENT, _I_NAME = COL["trace_id"], COL["span_id"], COL["parent_span_id"], COL["name"]
_I_SERVICE, _I_START, _I_END, _I_STATUS = COL["service"], COL["start_ns"], COL["end_ns"], COL["status_code"]
_I_KIND, _I_IN, _I_OUT, _I_COST = COL["llm_kind"], COL["input_tokens"], COL["output_tokens"], COL["cost_usd"]
_I_SESSION, _I_HTTP, _I_RAW = COL["session_id"], COL["http_status"], COL["raw"]

CALL_COLUMNS = (
    "span_id", "parent_span_id", "llm_kind", "request_model", "response_model", "status_code", "start_ns", "end_ns",
    "ttft_ns", "attempt_offset_ns", "resend_count", "link_span_id", "input_tokens", "output_tokens", "cost_usd",
    "cost_source", "http_status", "provenance",
)  # fmt: skip
_call_fields = operator.itemgetter(*(COL[c] for c in CALL_COLUMNS))


def call_from_row(row: tuple) -> Call:
    return Call(*_call_fields(row))


#: Attributes that hold what a model call was asked, in every dialect tracetui.llm.chat reads
#: (flattened ones start with these too).
_INPUT_PREFIXES = (
    "gen_ai.input.messages", "gen_ai.system_instructions", "gen_ai.prompt", "llm.input_messages", "llm.prompts",
    "input.value", "traceloop.entity.input", "request_data",
)  # fmt: skip


class CallInput:
    """What a model call was asked, as its span's input attributes (``analyze``'s ``input_of``).

    Two calls recorded by one library (the same input keys) are compared by the
    attributes' bytes, which costs next to nothing. Calls recorded differently
    (another provider's instrumentation puts the system prompt elsewhere) are
    compared by their input messages as tracetui.llm.chat reads them.
    """

    __slots__ = ("_keys", "_parts", "_attributes")

    def __init__(self, attributes) -> None:
        self._attributes = attributes
        self._parts = sorted((kv.key, kv.value.SerializeToString()) for kv in attributes
                             if kv.key.startswith(_INPUT_PREFIXES))  # fmt: skip
        self._keys = [key for key, _ in self._parts]

    def __bool__(self) -> bool:
        return bool(self._parts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CallInput):
            return NotImplemented
        if self._keys == other._keys:
            return self._parts == other._parts
        return self._messages() == other._messages()

    __hash__ = None  # type: ignore[assignment]

    def _messages(self) -> tuple:
        from tracetui.llm.chat import extract_messages  # only when two libraries' records are compared
        from tracetui.model.anyvalue import attributes_to_dict

        messages = extract_messages(attributes_to_dict(self._attributes))
        return tuple((m.role, " ".join(m.content.split())) for m in messages if m.direction == "input")


def input_of_raw(raw: bytes | None) -> CallInput | None:
    """What a model call was asked, from its serialized span; None when the span holds no input.

    Used to tell whether a call replaces a failed one with the same input (a
    fallback). Content the library did not put on the span (content capture
    off, or sent as log records only) reads as unknown (None), never as "same".
    """
    if not raw:
        return None
    try:
        found = CallInput(Span.FromString(raw).attributes)
    except Exception:  # noqa: BLE001 - a span that cannot be read has no known input
        return None
    return found or None


@dataclass(slots=True)
class TraceSummary:
    """What a batch of spans adds to one trace row."""

    span_count: int = 0
    start_ns: int = 0
    end_ns: int = 0
    errors: int = 0
    first_name: str = ""
    first_service: str = ""
    root_span_id: bytes | None = None
    root_name: str | None = None
    root_start_ns: int | None = None
    root_service: str | None = None
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    unpriced_calls: int = 0
    #: The user's conversation id: the root's if it has one, else the first seen.
    session_id: str | None = None
    #: Rows with an LLM kind (model, tool, agent... calls): the trace needs timing analysis.
    calls: int = 0
    #: HTTP client spans: attempts of a model call when one is their parent (stored or to come).
    attempts: int = 0

    def add(self, row: tuple) -> None:
        start, end = row[_I_START], row[_I_END]
        if self.span_count == 0 or start < self.start_ns:
            self.start_ns, self.first_name, self.first_service = start, row[_I_NAME], row[_I_SERVICE]
        if self.span_count == 0 or end > self.end_ns:
            self.end_ns = end
        self.span_count += 1
        if row[_I_STATUS] == 2:
            self.errors += 1
        if row[_I_PARENT] is None and (self.root_start_ns is None or start < self.root_start_ns):
            self.root_span_id, self.root_name = row[_I_SPAN], row[_I_NAME]
            self.root_start_ns, self.root_service = start, row[_I_SERVICE]
        session = row[_I_SESSION]
        if session is not None and (self.session_id is None or row[_I_PARENT] is None):
            self.session_id = session
        kind = row[_I_KIND]
        if kind is not None:
            self.calls += 1
        elif row[_I_HTTP] is not None:
            self.attempts += 1
        # Only model calls count: agent spans often repeat their children's usage.
        # (tracetui.llm.timing refines this to leaf calls, each request once.)
        if kind == "llm" or kind == "embedding":
            if kind == "llm":
                self.llm_calls += 1
            self.input_tokens += row[_I_IN] or 0
            self.output_tokens += row[_I_OUT] or 0
            if row[_I_COST] is not None:
                self.cost_usd = (self.cost_usd or 0.0) + row[_I_COST]
            elif row[_I_IN] or row[_I_OUT]:
                self.unpriced_calls += 1

    def params(self, trace_id: bytes) -> dict[str, object]:
        """The named parameters of the writer's INSERT / merge of a trace row (``now`` added there)."""
        return {
            "trace_id": trace_id,
            "root_span_id": self.root_span_id,
            "root_name": self.root_name,
            "root_start_ns": self.root_start_ns,
            "first_name": self.first_name,
            "service": self.root_service if self.root_service is not None else self.first_service,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "span_count": self.span_count,
            "errors": self.errors,
            "llm_calls": self.llm_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "unpriced_calls": self.unpriced_calls,
            "session_id": self.session_id,
            "calls": self.calls,
            "attempts": self.attempts,
        }


def summarize(rows: list[tuple]) -> dict[bytes, TraceSummary]:
    summaries: dict[bytes, TraceSummary] = {}
    for row in rows:
        summary = summaries.get(row[_I_TRACE])
        if summary is None:
            summary = summaries[row[_I_TRACE]] = TraceSummary()
        summary.add(row)
    return summaries


@dataclass(slots=True)
class TimingResult:
    """What one trace's analysis writes: per-span values and trace-row fields."""

    span_values: dict[bytes, tuple]
    trace_values: dict[str, object]


def timing_result(analysis, names: Mapping[bytes, str | None]) -> TimingResult:
    span_values = {
        span_id: (
            int(t.is_retry),
            int(t.is_fallback),
            t.retry_ns,
            int(analysis.counted.get(span_id, True)),
            t.retry_offset_ns,
            t.retry_source,
        )  # fmt: skip
        for span_id, t in analysis.calls.items()
    }
    for span_id, counted in analysis.counted.items():  # embeddings: counted, never retried
        if span_id not in span_values:
            span_values[span_id] = (0, 0, None, int(counted), None, None)
    totals, slowest = analysis.totals, analysis.slowest
    trace_values: dict[str, object] = {
        "retries": analysis.retries,
        "fallbacks": analysis.fallbacks,
        "llm_calls": totals.llm_calls,
        "input_tokens": totals.input_tokens,
        "output_tokens": totals.output_tokens,
        "cost_usd": totals.cost_usd,
        "unpriced_calls": totals.unpriced_calls,
        "tokenless_calls": totals.tokenless_calls,
        "slowest_span_id": slowest.span_id if slowest else None,
        "slowest_name": names.get(slowest.span_id) if slowest else None,
        "slowest_ns": (slowest.end_ns - slowest.start_ns) if slowest else None,
    }
    trace_values.update({f"split_{key}_ns": ns for key, ns in analysis.split.items()})
    return TimingResult(span_values, trace_values)


def no_timing(start_ns: int, end_ns: int) -> dict[str, object]:
    """Timing fields of a trace without model or tool calls: all of its time is "other"."""
    values: dict[str, object] = dict.fromkeys(TIMING_FIELDS, 0)
    values.update(slowest_span_id=None, slowest_name=None, slowest_ns=None)
    values["split_other_ns"] = max(0, end_ns - start_ns)
    return values


def _analyze(rows: list[tuple], summaries: dict[bytes, TraceSummary]) -> dict[bytes, TimingResult]:
    """Analyze each trace from ``rows`` alone, as if none of its spans were stored before."""
    grouped: dict[bytes, tuple[list[tuple], dict[bytes, bytes | None]]] = {}
    for row in rows:
        trace_id = row[_I_TRACE]
        if not summaries[trace_id].calls:
            continue
        entry = grouped.get(trace_id)
        if entry is None:
            entry = grouped[trace_id] = ([], {})
        entry[1][row[_I_SPAN]] = row[_I_PARENT]
        entry[0].append(row)
    results = {}
    for trace_id, (trace_rows, parents) in grouped.items():
        summary = summaries[trace_id]
        if summary.span_count <= MAX_ANALYZED_SPANS:
            results[trace_id] = analyze_rows(trace_rows, summary.start_ns, summary.end_ns, parents)
    return results


def analyze_rows(rows: list[tuple], start_ns: int, end_ns: int, parents: dict[bytes, bytes | None]) -> TimingResult:
    """The timing analysis of one trace whose wall clock and span tree are known.

    ``rows`` are decoded rows of the trace (those without an LLM kind or an HTTP
    status are skipped, so a backend may pass only the calls); ``parents`` maps
    every span of the trace to its parent, calls or not.
    """
    call_rows = [row for row in rows if row[_I_KIND] is not None or row[_I_HTTP] is not None]
    calls = [call_from_row(row) for row in call_rows]
    names = {row[_I_SPAN]: row[_I_NAME] for row in call_rows}
    return timing_result(analyze(calls, start_ns, end_ns, parents, _raw_inputs(call_rows)), names)


def _raw_inputs(call_rows: list[tuple]) -> Callable[[Call], CallInput | None]:
    """``analyze``'s ``input_of`` over the rows of one trace's calls (indexed on first use: most traces
    have no failed call, and are never asked)."""
    raws: dict[bytes, bytes] = {}

    def input_of(call: Call) -> CallInput | None:
        if not raws:
            raws.update((row[_I_SPAN], row[_I_RAW]) for row in call_rows)
        return input_of_raw(raws.get(call.span_id))

    return input_of


def prepare(decoded: Decoded) -> Decoded:
    """Summaries and timing of ``decoded.spans`` (rows as decoded); appends the analysis columns.

    Idempotent: rows that already carry analysis columns get fresh ones
    (the importer merges many requests, then prepares the whole).
    """
    rows = [row[:BASE_WIDTH] if len(row) > BASE_WIDTH else row for row in decoded.spans]
    summaries = summarize(rows)
    # A span twice in one export: which copy is stored is up to the database, so
    # nothing is analyzed from memory (the writer rebuilds such traces from what it stored).
    results = _analyze(rows, summaries) if _unique(rows) else {}
    decoded.spans = _with_analysis(rows, {trace_id: r.span_values for trace_id, r in results.items()})
    decoded.traces = {trace_id: s.params(trace_id) for trace_id, s in summaries.items()}
    decoded.timing = {trace_id: r.trace_values for trace_id, r in results.items()}
    return decoded


def _unique(rows: list[tuple]) -> bool:
    """No span twice among ``rows`` (span ids alone first: distinct, as they nearly always are, they settle it)."""
    if len({row[_I_SPAN] for row in rows}) == len(rows):
        return True
    return len({(row[_I_TRACE], row[_I_SPAN]) for row in rows}) == len(rows)


def _with_analysis(rows: list[tuple], span_values: dict[bytes, dict[bytes, tuple]]) -> list[tuple]:
    """Each row with its analysis columns appended (``NO_ANALYSIS`` where its trace or span has none)."""
    out = []
    for row in rows:
        values = span_values.get(row[_I_TRACE])
        out.append(row + (values.get(row[_I_SPAN], NO_ANALYSIS) if values is not None else NO_ANALYSIS))
    return out

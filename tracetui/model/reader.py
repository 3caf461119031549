"""The seam between where traces are kept and everything that shows them.

:class:`Reader` is everything the UI and the commands read; :class:`PinBoard`
is the one thing the UI writes. ``tracetui.store.reader.SqliteReader`` is the
SQLite implementation, ``tracetui.query.memory.MemoryReader`` an in-memory one
filled through the receiver's own decode and normalize code. A new backend (a
ClickHouse reader, say) implements these two protocols and the UI does not
change: ``tracetui/ui`` may import ``tracetui.model`` and ``tracetui.query`` but
never ``tracetui.store`` (an import-linter contract, pyproject.toml).

Rules every implementation keeps:

* Every method may block (SQL, network): the UI calls them from thread
  workers only, never on the event loop. Calls may come from several threads
  at once.
* The filter arrives parsed (:class:`~tracetui.model.filter.Filter`); each
  backend compiles it to its own query language and must give the same
  answer as :func:`tracetui.query.filter_match.matches_span` on every span.
* The trace list is ordered newest first by start time, then by arrival
  (``seq``, which only grows). A *horizon* is a ``seq``: the list shows traces
  that arrived at or before it, so rows do not shift under the user's cursor
  while new traces keep arriving; ``count_newer`` says how many wait above it.
* Ids are raw bytes (16 for a trace, 8 for a span), as OTLP sends them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple, Protocol

from tracetui.model.config import ContentPolicy
from tracetui.model.filter import Filter
from tracetui.model.views import Counters, SessionRow, SpanDetail, SpanRow, TraceRow

#: Key of the group of calls that have no model / route / prompt version.
NONE_KEY = "(none)"
#: The stats groupings: model (request model, else response model), route, prompt version.
GROUPINGS = ("model", "route", "prompt_version")

#: One LLM call as :meth:`Reader.llm_calls` returns it, positions named by these constants. A plain
#: tuple, not a class: the stats screen reads 100,000s of them at once and tuples cost least to build.
CALL_TRACE, CALL_START, CALL_DURATION, CALL_ERROR, CALL_TTFT, CALL_RATE, CALL_RETRY, CALL_FALLBACK, CALL_COST = range(9)
#: The last position: the call's span id (evaluations are keyed by trace id and span id).
CALL_SPAN = 9
#: (trace id, start ns, duration ns, is error, ttft ns | None, decode tokens/s | None, is retry,
#: is fallback, cost USD | None, span id | None)
CallFacts = tuple[bytes, int, int, int, int | None, float | None, int, int, float | None, bytes | None]


#: :meth:`Reader.span_pages`' first page: more than a screenful of the tree's top.
FIRST_PAGE = 1_000
#: Its later pages: few enough round trips, small enough to report progress ("loading 40,000 of 100,000").
PAGE = 20_000


def pages_of(spans: list[SpanRow], first: int = FIRST_PAGE, size: int = PAGE) -> Iterator[list[SpanRow]]:
    """:meth:`Reader.span_pages` for a backend that reads a trace whole: the list cut as the protocol pages it."""
    start, limit = 0, first
    while start < len(spans):
        yield spans[start : start + limit]
        start, limit = start + limit, size


class CohortCall(NamedTuple):
    """One counted LLM call with what a compare of two cohorts needs (:meth:`Reader.cohort_calls`)."""

    trace_id: bytes
    span_id: bytes
    start_ns: int
    duration_ns: int
    error: int  # 1 or 0 (flags stay ints: backends return them so, and sums count them)
    ttft_ns: int | None
    tokens_per_s: float | None  # decode rate (output tokens over the time after the first token)
    output_tokens: int | None
    max_tokens: int | None  # the cap the call was made with
    retry: int | None  # None: the backend cannot tell (ClickHouse: it compares no calls with each other)
    fallback: int | None
    cost_usd: float | None
    run_ns: int  # wall clock of the call's run (its trace)
    #: The call's Stats groups (None: no key): model, prompt version and route as tracetui.query.stats groups them.
    model: str | None = None
    prompt_version: str | None = None
    route: str | None = None


class EvaluationResult(NamedTuple):
    """One stored evaluation or feedback result (:meth:`Reader.evaluation_results`)."""

    trace_id: bytes
    span_id: bytes | None  # None: about the whole run
    name: str
    score: float | None
    label: str | None
    explanation: str | None  # for feedback: the user's note
    source: str
    time_ns: int


class StoredSpan(NamedTuple):
    """A span as it arrived (serialized ``opentelemetry.proto.trace.v1.Span``) with its resource and scope."""

    span_id: bytes
    raw: bytes
    resource: bytes  # serialized Resource (b"" when none)
    scope: bytes  # serialized InstrumentationScope (b"" when none)
    schema_url: str


class StoredLog(NamedTuple):
    """A log record as it arrived (serialized ``LogRecord``) with its resource and scope."""

    span_id: bytes | None
    event_name: str | None
    raw: bytes
    resource: bytes
    scope: bytes
    schema_url: str


class HistogramPoint(NamedTuple):
    """One point of a GenAI histogram metric (explicit bounds), for the metric-derived percentiles."""

    model: str
    name: str
    unit: str | None
    operation: str | None
    bounds: list[float]
    counts: list[int]
    min: float | None
    max: float | None
    total: int  # values counted (the point's count)
    dropped_attributes: int


class GroupFigures(NamedTuple):
    """One group's figures computed where the calls are stored (:meth:`Reader.call_figures`)."""

    key: str
    calls: int
    runs: int
    durations_ns: tuple[float | None, float | None, float | None]  # p50, p95, p99
    ttfts_ns: tuple[float | None, float | None, float | None]
    tokens_per_s: float | None
    errors: int
    #: Calls that were retries / fallbacks; None where the backend cannot tell (they compare calls).
    retries: int | None
    fallbacks: int | None
    cost_usd: float | None  # the priced calls' total
    groundedness: float | None  # mean of the calls' groundedness scores
    #: Durations of the most recent calls, oldest first; with ``method`` set, values spread evenly over the
    #: sketch's ranks instead (a picture of the whole distribution, for the histogram).
    recent_ns: tuple[float, ...]
    #: How the percentiles were obtained when not exactly (tracetui.model.sketch.METHOD); None: exact.
    method: str | None = None


def first_calls_of(calls: Iterable[CohortCall] | None) -> dict[bytes, int | None] | None:
    """:meth:`Reader.first_calls` from the calls of :meth:`Reader.cohort_calls` (oldest first)."""
    if calls is None:
        return None
    firsts: dict[bytes, int | None] = {}
    for call in calls:
        if call.trace_id not in firsts:
            firsts[call.trace_id] = call.ttft_ns
    return firsts


class Reader(Protocol):
    """Read-only access to stored traces: everything the UI and the commands ask."""

    #: Evaluation score at or above which a result passes (groundedness badges, "x/y passed").
    threshold: float

    def close(self) -> None: ...

    # --- change detection and the header ----------------------------------------------------

    def data_version(self) -> int:
        """A number that changes whenever new data is committed (cheap: the UI polls it)."""
        ...

    def counters(self) -> Counters:
        """Totals for the header, the receiver's published status, and the store's size and health."""
        ...

    def content_policy(self) -> ContentPolicy:
        """Where message content may be copied: the policy the data was received under (``serve --no-content`` /
        ``--redact``, recorded with the data). Every export and copy of the data follows it (tracetui.query.scrub)."""
        ...

    # --- the trace list -----------------------------------------------------------------------

    def max_seq(self) -> int:
        """The newest trace's arrival number (0 when empty): the horizon of a fresh list."""
        ...

    def count_traces(self, horizon: int | None = None, flt: Filter | None = None, cap: int | None = None) -> int:
        """Traces matching ``flt`` with seq <= ``horizon``; with ``cap``, at most ``cap`` (a filtered count
        checks each trace's spans, so the list counts no further than it can show quickly)."""
        ...

    def count_newer(self, horizon: int, flt: Filter | None = None) -> int:
        """Traces matching ``flt`` that arrived after ``horizon``."""
        ...

    def traces(
        self, offset: int = 0, limit: int = 100, horizon: int | None = None, flt: Filter | None = None
    ) -> list[TraceRow]:
        """One window of the list (newest first; ``limit`` -1 for all), with each trace's evaluations."""
        ...

    def trace(self, trace_id: bytes) -> TraceRow | None: ...

    def neighbor_trace(self, trace_id: bytes, *, newer: bool, horizon: int | None = None) -> bytes | None:
        """The trace next to ``trace_id`` in the list's order, or None at either end."""
        ...

    def trace_ids_starting(self, prefix_hex: str, limit: int = 2) -> list[bytes]:
        """Up to ``limit`` trace ids that start with these hex digits (none for non-hex text)."""
        ...

    def session_totals(self, session_id: str) -> dict[str, Any]:
        """Runs, LLM calls, tokens, cost and unpriced calls of one conversation."""
        ...

    def sessions(self, limit: int | None = 1000) -> list[SessionRow]:
        """Conversations (runs that share a session id), the most recently active first (``limit`` None:
        all), each added up as tracetui.query.sessions.session_row adds up its runs."""
        ...

    def session_runs(self, session_id: str) -> list[TraceRow]:
        """The runs of one conversation in the order they started, each with its evaluations."""
        ...

    # --- one trace ----------------------------------------------------------------------------

    def spans(self, trace_id: bytes) -> list[SpanRow]:
        """The trace's spans in start order, each with its worst groundedness score."""
        ...

    def span_pages(self, trace_id: bytes, first: int = FIRST_PAGE, size: int = PAGE) -> Iterator[list[SpanRow]]:
        """:meth:`spans` a page at a time: ``first`` spans, then pages of ``size``, never an empty page.

        The trace view draws the first page (the top of the tree) while the rest load, so a
        100,000-span trace opens as fast as a small one. A backend that reads a trace whole
        may yield it as one page.
        """
        ...

    def span_detail(self, trace_id: bytes, span_id: bytes) -> SpanDetail | None:
        """One span in full: its normalized columns (``row``: the names of tracetui.model.rows.SPAN_COLUMNS
        without ``raw``, the analysis columns, ``scope_version`` and ``library``), attributes, events, links,
        resource, scope, log records and evaluations."""
        ...

    def span_details(self, trace_id: bytes) -> list[SpanDetail]:
        """Every span of the trace in full, in start order (``tracetui spans --json``, in one go)."""
        ...

    def iter_span_details(self, trace_id: bytes) -> Iterator[SpanDetail]:
        """:meth:`span_details` one span at a time, in memory that does not grow with the trace where the
        backend can (``tracetui spans --json`` streams a 100,000-span trace)."""
        ...

    def span_evaluations(self, trace_id: bytes, span_id: bytes) -> list[dict[str, Any]]:
        """The span's evaluation results (name, score, label, explanation, source), oldest first, each once."""
        ...

    def matching_span_ids(self, trace_id: bytes, flt: Filter) -> set[bytes]:
        """Spans of one trace that match the filter (the filter's span-level reading)."""
        ...

    def stored_spans(self, trace_id: bytes) -> list[StoredSpan]:
        """The trace's spans as they arrived, in start order (export, copy as text)."""
        ...

    def stored_logs(self, trace_id: bytes) -> list[StoredLog]:
        """The trace's log records as they arrived, oldest first."""
        ...

    # --- statistics ---------------------------------------------------------------------------

    def llm_calls(
        self,
        by: str,
        *,
        since_ns: int | None = None,
        flt: Filter | None = None,
        route_attribute: str | None = None,
        span_ids: bool = True,
    ) -> dict[str, list[CallFacts]]:
        """Counted LLM calls started at or after ``since_ns`` that match ``flt``, grouped by ``by``.

        ``by`` is one of :data:`GROUPINGS`; calls without a key are grouped under :data:`NONE_KEY`
        (the figures are computed by ``tracetui.query.stats``, the same for every backend).
        ``span_ids=False``: the caller does not need them (no evaluations to join), and a backend
        may leave that position None.
        """
        ...

    def call_figures(
        self, by: str, *, since_ns: int | None = None, flt: Filter | None = None, route_attribute: str | None = None
    ) -> list[GroupFigures] | None:
        """The figures of :meth:`llm_calls`' groups computed by the backend itself (percentiles in the
        database), or None: the caller computes them from :meth:`llm_calls` (tracetui.query.stats)."""
        ...

    def cohort_calls(
        self, *, since_ns: int | None = None, until_ns: int | None = None, flt: Filter | None = None
    ) -> list[CohortCall] | None:
        """Counted LLM calls started in [since_ns, until_ns) that match ``flt`` (span-level, as in
        :meth:`llm_calls`), oldest first; None when this backend cannot list them (compare says so)."""
        ...

    def first_calls(
        self, *, since_ns: int | None = None, until_ns: int | None = None, flt: Filter | None = None
    ) -> dict[bytes, int | None] | None:
        """The runs of :meth:`cohort_calls` (the traces with a call), each with the TTFT of its first call
        there: one entry per run, not per call (the Stats "users:" line); None when this backend cannot
        list calls."""
        ...

    def evaluation_results(self, trace_ids: set[bytes]) -> list[EvaluationResult]:
        """Every evaluation and feedback result stored for these traces."""
        ...

    def filter_note(self, flt: Filter) -> str | None:
        """What the user should know about how this backend applies ``flt`` (None: nothing to add)."""
        ...

    def groundedness_scores(self) -> dict[tuple[bytes, bytes], list[float]]:
        """(trace id, span id) -> the finite scores of that span's groundedness-style evaluations."""
        ...

    def histogram_points(self, names: list[str], since_ns: int | None = None) -> list[HistogramPoint]:
        """Points of these histogram metrics with a model, whose interval ended at or after ``since_ns``."""
        ...


class PinBoard(Protocol):
    """What the UI writes: which trace is on screen (so that retention keeps it while it is looked at),
    and the user's own feedback on a run or a call."""

    def pin(self, owner: str, trace_id: bytes | None) -> None:
        """Set (or with None, clear) ``owner``'s pin; best effort, may block (call it off the event loop)."""
        ...

    def record_feedback(self, trace_id: bytes, span_id: bytes | None, thumb: int, note: str | None) -> None:
        """Store the user's thumbs up (+1) or down (-1) on a call (``span_id``) or a whole run (None), with an
        optional note, as an evaluation result from source "you"; raises OSError saying why it could not."""
        ...

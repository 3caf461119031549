"""What a reader returns: the rows of the trace list, the spans of one trace, one span in full, the counters.

Plain data shared by every backend (tracetui.store.reader for SQLite) and every
consumer (the UI, the commands, the queries in tracetui.query). No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tracetui.model.anyvalue import any_value_to_python, attributes_to_dict
from tracetui.model.fmt import fmt_counted
from tracetui.model.rows import SPLIT_KEYS

NO_ROOT = "no root yet"
SPAN_KIND_NAMES = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
STATUS_NAMES = {0: "unset", 1: "ok", 2: "error"}


@dataclass(frozen=True, slots=True)
class TraceRow:
    """One row of the trace list."""

    seq: int
    trace_id: bytes
    root_name: str | None
    first_name: str
    service: str
    start_ns: int
    end_ns: int
    span_count: int
    error_count: int
    llm_calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    retries: int = 0
    fallbacks: int = 0
    split_retry_ns: int = 0
    split_fallback_ns: int = 0
    split_ttft_ns: int = 0
    split_decode_ns: int = 0
    split_response_ns: int = 0
    split_tool_ns: int = 0
    split_other_ns: int = 0
    unpriced_calls: int = 0
    session_id: str | None = None
    slowest_span_id: bytes | None = None
    slowest_name: str | None = None
    slowest_ns: int | None = None
    #: Successful model calls without token counts: tokens and cost are incomplete.
    tokenless_calls: int = 0
    # evaluations, filled in by Reader.traces()/trace() for a given pass threshold
    groundedness: float | None = None
    #: The groundedness shown is only an estimate (tracetui judge --judge lexical): shown with "≈".
    groundedness_estimated: bool = False
    evals_passed: int = 0
    evals_total: int = 0

    @property
    def split(self) -> dict[str, int]:
        """Where the run's wall-clock went (ns), parts adding up to its duration."""
        return {key: getattr(self, f"split_{key}_ns") for key in SPLIT_KEYS}

    @property
    def name(self) -> str:
        return self.root_name if self.root_name is not None else self.first_name

    @property
    def has_root(self) -> bool:
        return self.root_name is not None

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)

    @property
    def cost_incomplete(self) -> bool:
        """Some calls add nothing to the cost: no price for their model, or no token counts."""
        return bool(self.unpriced_calls or self.tokenless_calls)

    @property
    def incomplete(self) -> list[str]:
        """What the run's totals lack, in words ("2 calls without token counts")."""
        notes = []
        if self.tokenless_calls:
            notes.append(fmt_counted(self.tokenless_calls, "call") + " without token counts")
        if self.unpriced_calls:
            notes.append(fmt_counted(self.unpriced_calls, "unpriced call"))
        return notes

    def to_json(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id.hex(),
            "name": self.name,
            "has_root": self.has_root,
            "service": self.service,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "duration_ms": self.duration_ns / 1e6,
            "span_count": self.span_count,
            "errors": self.error_count,
            "llm_calls": self.llm_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "unpriced_calls": self.unpriced_calls,
            "tokenless_calls": self.tokenless_calls,
            "incomplete": self.incomplete,
            "session_id": self.session_id,
            "slowest_span": None
            if self.slowest_span_id is None
            else {
                "span_id": self.slowest_span_id.hex(),
                "name": self.slowest_name,
                "duration_ms": (self.slowest_ns or 0) / 1e6,
                "share": (self.slowest_ns or 0) / self.duration_ns if self.duration_ns else None,
            },
            "groundedness": self.groundedness,
            "evals_passed": self.evals_passed,
            "evals_total": self.evals_total,
            "retries": self.retries,
            "fallbacks": self.fallbacks,
            "time_split_ms": {key: ns / 1e6 for key, ns in self.split.items()},
        }


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One conversation: the runs (traces) that share a session / conversation id, added up.

    Sums are over the runs; ``duration_ns`` is the runs' own time added (not the wall clock from
    the first run's start to the last one's end: a user who waits a day between two questions
    did not make the agent slower), ``first_start_ns`` / ``last_end_ns`` give that span of time.
    """

    session_id: str
    runs: int
    first_start_ns: int
    last_start_ns: int  # the latest run's start: the list is ordered by it, most recent first
    last_end_ns: int
    duration_ns: int
    llm_calls: int
    tokens: int
    cost_usd: float | None  # None: no run could be priced
    unpriced_calls: int
    tokenless_calls: int
    errors: int  # error spans over all runs
    error_runs: int  # runs with at least one error
    #: The lowest groundedness score of any of its runs (None: none was evaluated).
    groundedness: float | None
    #: What the conversation started with: its first run's name, and that run's service.
    first_name: str
    service: str

    @property
    def cost_incomplete(self) -> bool:
        return bool(self.unpriced_calls or self.tokenless_calls)

    def to_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "runs": self.runs,
            "first_run": self.first_name,
            "service": self.service,
            "first_start_ns": self.first_start_ns,
            "last_start_ns": self.last_start_ns,
            "last_end_ns": self.last_end_ns,
            "duration_ms": self.duration_ns / 1e6,
            "llm_calls": self.llm_calls,
            "tokens": self.tokens,
            "cost_usd": self.cost_usd,
            "unpriced_calls": self.unpriced_calls,
            "tokenless_calls": self.tokenless_calls,
            "errors": self.errors,
            "error_runs": self.error_runs,
            "groundedness": self.groundedness,
        }


@dataclass(slots=True)
class SpanRow:
    """One span of an open trace, without its raw payload."""

    span_id: bytes
    parent_span_id: bytes | None
    name: str
    span_kind: int
    service: str
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str
    llm_kind: str | None = None
    provider: str | None = None
    request_model: str | None = None
    response_model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    streaming: int | None = None
    ttft_ns: int | None = None
    cost_usd: float | None = None
    dropped: int = 0
    decode_ns: int | None = None
    tokens_per_s: float | None = None
    attempt_offset_ns: int | None = None
    is_retry: int = 0
    is_fallback: int = 0
    retry_ns: int | None = None
    #: Where in the span the final attempt started (retries inside it), and what showed the retry.
    retry_offset_ns: int | None = None
    retry_source: str | None = None
    #: An HTTP client span's status (an attempt of the model call above it).
    http_status: int | None = None
    #: The instrumentation scope that sent the span (the library, for "not reported by ...").
    library: str | None = None
    #: The normalizer's provenance JSON (where each LLM field came from).
    provenance: str | None = None
    # filled by Reader.spans from the evaluations table
    groundedness: float | None = None
    groundedness_estimated: bool = False
    # filled by tree building
    depth: int = 0
    children: list[SpanRow] = field(default_factory=list)
    orphan: bool = False

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)

    @property
    def is_error(self) -> bool:
        return self.status_code == 2

    @property
    def model(self) -> str | None:
        return self.response_model or self.request_model


@dataclass(slots=True)
class SpanDetail:
    """Everything about one span, decoded for display."""

    row: dict[str, Any]
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    links: list[dict[str, Any]]
    resource: dict[str, Any]
    scope: dict[str, Any]
    trace_state: str
    flags: int
    #: Log records tied to the span: {"event_name", "time_ns", "attributes", "body"}.
    logs: list[dict[str, Any]] = field(default_factory=list)
    #: Evaluations of the span: {"name", "score", "label", "explanation", "source"}.
    evaluations: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def decode(
        cls,
        row: dict[str, Any],
        raw: bytes,
        resource: bytes,
        scope: bytes,
        logs: list[dict[str, Any]],
        evaluations: list[dict[str, Any]],
    ) -> SpanDetail:
        """The detail of a stored span: its columns, and the serialized span, resource and scope decoded."""
        span = Span.FromString(raw)
        decoded_scope = InstrumentationScope.FromString(scope)
        return cls(
            logs=logs,
            evaluations=evaluations,
            row=row,
            attributes=attributes_to_dict(span.attributes),
            events=[
                {"name": e.name, "time_ns": e.time_unix_nano, "attributes": attributes_to_dict(e.attributes)}
                for e in span.events
            ],
            links=[
                {
                    "trace_id": link.trace_id.hex(),
                    "span_id": link.span_id.hex(),
                    "attributes": attributes_to_dict(link.attributes),
                    "trace_state": link.trace_state,
                }
                for link in span.links
            ],
            resource=attributes_to_dict(Resource.FromString(resource).attributes),
            scope={
                "name": decoded_scope.name,
                "version": decoded_scope.version,
                "attributes": {kv.key: any_value_to_python(kv.value) for kv in decoded_scope.attributes},
            },
            trace_state=span.trace_state,
            flags=span.flags,
        )


def log_entry(event_name: str | None, time_ns: int, raw: bytes) -> dict[str, Any]:
    """A stored log record as SpanDetail.logs holds it (GenAI content and evaluation events)."""
    record = LogRecord.FromString(raw)
    return {
        "event_name": event_name,
        "time_ns": time_ns,
        "severity": record.severity_text or record.severity_number,
        "attributes": attributes_to_dict(record.attributes),
        "body": any_value_to_python(record.body),
    }


@dataclass(frozen=True, slots=True)
class Counters:
    span_count: int
    trace_count: int
    receiver: dict[str, Any] | None
    db_bytes: int
    llm_calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    #: Traces and spans retention removed (tracetui.store.retention) since the database was created or purged.
    evicted_traces: int = 0
    evicted_spans: int = 0
    #: The receiver's last write failure, if recent (tracetui.store.health): {"problem", "message", ...}.
    store_problem: dict[str, Any] | None = None
    #: Where the traces are read from when no receiver of ours writes them (a ClickHouse table), for the header.
    source: str | None = None
    #: Spans the full-text indexer has not reached yet (at most 100,000 counted); None: no index on this source.
    index_behind: int | None = None
    #: False when ``cost_usd`` is not counted (a backend that prices only the calls on screen).
    costed: bool = True
    #: When set, ``llm_calls`` and ``tokens`` count only the spans that started at or after this time (ns): a
    #: backend whose whole-table totals cost too much counts from shortly before the reader's first look on
    #: (what the header's "since start" needs). None: every span stored.
    totals_since_ns: int | None = None
    #: The groundedness judge's last state (tracetui.jobs.judge.publish_state), when one runs beside the receiver.
    judge: dict[str, Any] | None = None
    #: How far the Stats rollup's background fill of an upgraded database has come (0..1); None: complete.
    stats_backfill: float | None = None

    def to_json(self) -> dict[str, Any]:
        """For ``tracetui status --json``."""
        return {
            "span_count": self.span_count,
            "trace_count": self.trace_count,
            "evicted_traces": self.evicted_traces,
            "evicted_spans": self.evicted_spans,
            "llm_calls": self.llm_calls,
            "tokens": self.tokens,
            "cost_usd": self.cost_usd,
            "db_bytes": self.db_bytes,
            "receiver": self.receiver,
            "store_problem": self.store_problem,
            "judge": self.judge,
            "stats_backfill": self.stats_backfill,
        } | ({} if self.totals_since_ns is None else {"llm_calls_and_tokens_since_ns": self.totals_since_ns})

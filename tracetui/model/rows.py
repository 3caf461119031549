"""The row contract: what a decoded export holds and the column order the store writes it in.

Everything here is plain data, shared by the wire decoders (tracetui.otlp), the
LLM normalizer (tracetui.llm) and the store (tracetui.store). Nothing here does I/O.

A span row is a tuple in ``SPAN_COLUMNS`` order: the OTLP span's own fields, then the
canonical LLM fields the normalizer (tracetui.llm.semconv.normalize_span) fills in
``NORMALIZED_COLUMNS`` order. tracetui.store.batch.prepare appends the analysis
columns (trace summaries, timing) before the writer inserts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: At most this many distinct reasons are quoted in a partial-success message.
_MAX_REASONS = 5

#: Canonical columns, in the order ``normalize_span`` returns them.
NORMALIZED_COLUMNS: tuple[str, ...] = (
    "llm_kind",
    "provider",
    "request_model",
    "response_model",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "streaming",
    "ttft_ns",
    "finish_reason",
    "session_id",
    "user_id",
    "prompt_name",
    "prompt_version",
    "error_type",
    "cost_usd",
    "cost_source",
    "provenance",
    # span-local timing (docs/timing.md); cross-span facts (retry, fallback) come later
    "link_span_id",
    "resend_count",
    "attempt_offset_ns",
    "decode_ns",
    "tokens_per_s",
    # joins evaluation results that name the response instead of the span
    "response_id",
    # an HTTP client span's status (0: no response): one attempt of the model call above it
    "http_status",
    # the output cap the call was made with (gen_ai.request.max_tokens and its aliases)
    "max_tokens",
)

KINDS = ("llm", "embedding", "tool", "retriever", "agent", "chain", "evaluator", "other")

#: The parts a run's wall clock is split into (``traces.split_<key>_ns``), in priority order.
SPLIT_KEYS = ("retry", "fallback", "ttft", "decode", "response", "tool", "other")


@dataclass(slots=True)
class Source:
    """A resource + instrumentation scope pair, stored once per distinct value."""

    #: The row id it is stored under: derived from the digest, so span rows can
    #: carry it from the decoder (see Writer._store_sources for older databases).
    id: int
    digest: bytes
    service: str
    resource: bytes
    scope_name: str
    scope_version: str
    scope: bytes
    schema_url: str


@dataclass(slots=True)
class Decoded:
    """What one export request (traces or logs) holds, ready for the writer."""

    sources: dict[bytes, Source] = field(default_factory=dict)
    #: One tuple per accepted span, in ``SPAN_COLUMNS`` order (then the
    #: analysis columns, once tracetui.store.batch.prepare has run).
    spans: list[tuple[Any, ...]] = field(default_factory=list)
    #: One tuple per accepted log record, in ``LOG_COLUMNS`` order.
    logs: list[tuple[Any, ...]] = field(default_factory=list)
    #: Evaluation results found in spans or log records: (trace id, span id, response id, name, score,
    #: label, explanation, source, time ns), as tracetui.otlp.decode.add_evaluations appends them.
    evaluations: list[tuple[Any, ...]] = field(default_factory=list)
    #: Per trace: the summary of its spans here, as trace-row parameters
    #: (tracetui.store.batch.prepare fills it, and the analysis columns of each row).
    traces: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    #: Per trace whose spans all arrived here: its timing analysis, as trace-row fields.
    timing: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    #: What the rows are, for messages: "span(s)", "log record(s)" or "metric data point(s)".
    unit: str = "span(s)"
    #: GenAI metric series, points and exemplars (tracetui.otlp.metrics.DecodedMetrics), for metric exports.
    metrics: Any = None
    #: Long strings cut out of the spans' raw bytes, by digest (tracetui.store.blobs.compact_rows).
    blobs: dict[bytes, bytes] = field(default_factory=dict)
    #: Provenance JSON of the span rows, by the id that replaced it in them (tracetui.store.blobs.compact_rows).
    provenances: dict[bytes, str] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.spans) + len(self.logs) + (len(self.metrics.points) if self.metrics is not None else 0)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    @property
    def rejection_message(self) -> str:
        """Human-readable summary for OTLP ``partial_success.error_message``."""
        parts = [f"{n} {self.unit}: {reason}" for reason, n in list(self.reasons.items())[:_MAX_REASONS]]
        return "rejected " + "; ".join(parts) if parts else ""


#: Column order of a span row (the writer's INSERT uses the same order).
SPAN_COLUMNS: tuple[str, ...] = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "source_id",
    "service",
    "start_ns",
    "end_ns",
    "status_code",
    "status_message",
    "dropped_attributes",
    "dropped_events",
    "dropped_links",
    "raw",
    *NORMALIZED_COLUMNS,
)
COL = {name: i for i, name in enumerate(SPAN_COLUMNS)}


#: Column order of a log record row.
LOG_COLUMNS: tuple[str, ...] = (
    "digest",
    "trace_id",
    "span_id",
    "time_ns",
    "observed_ns",
    "severity_number",
    "severity_text",
    "event_name",
    "source_id",
    "service",
    "raw",
)

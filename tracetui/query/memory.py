"""Traces held in memory: a second :class:`~tracetui.model.reader.Reader`, beside the SQLite one.

It proves the seam: the UI runs over it unchanged (the navigation tests do), so
the screens depend on the protocol and nothing else. It is filled the way the
receiver fills the database, through the same code: OTLP bytes are decoded and
normalized by ``tracetui.otlp.decode`` and analyzed by
``tracetui.store.batch.prepare``; only the storing differs. Each ``add`` re-runs
the analysis over everything held, so a trace split across requests comes out
as it would from the store.

What it does not do: filter the trace *list* (a filter's trace-level reading
is only compiled to SQL so far; ``matching_span_ids`` and the statistics, which
use the span-level reading, do filter), hold metrics, or evict anything. It is
meant for tests and small captures, not for a live stream.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from tracetui.llm.evals import is_groundedness, passed, preferred_scores
from tracetui.model.anyvalue import span_attribute_text
from tracetui.model.config import ContentPolicy
from tracetui.model.filter import Filter
from tracetui.model.reader import (
    FIRST_PAGE,
    GROUPINGS,
    NONE_KEY,
    PAGE,
    CallFacts,
    CohortCall,
    EvaluationResult,
    GroupFigures,
    HistogramPoint,
    StoredLog,
    StoredSpan,
    first_calls_of,
    pages_of,
)
from tracetui.model.rows import LOG_COLUMNS, SPAN_COLUMNS, Decoded, Source
from tracetui.model.views import Counters, SessionRow, SpanDetail, SpanRow, TraceRow, log_entry
from tracetui.otlp.signals import decode_request
from tracetui.query.filter_match import matches_span
from tracetui.query.sessions import group_runs
from tracetui.store.batch import ANALYSIS_COLUMNS, no_timing, prepare

_SPAN_FIELDS = (*SPAN_COLUMNS, *ANALYSIS_COLUMNS)
_TRACE_FIELDS = (
    "root_name", "first_name", "service", "start_ns", "end_ns", "span_count", "llm_calls", "input_tokens",
    "output_tokens", "cost_usd", "retries", "fallbacks", "split_retry_ns", "split_fallback_ns", "split_ttft_ns",
    "split_decode_ns", "split_response_ns", "split_tool_ns", "split_other_ns", "unpriced_calls", "session_id",
    "slowest_span_id", "slowest_name", "slowest_ns", "tokenless_calls",
)  # fmt: skip


@dataclass(slots=True)
class _Evaluation:
    trace_id: bytes
    span_id: bytes | None
    response_id: str | None
    name: str
    score: float | None
    label: str | None
    explanation: str | None
    source: str
    time_ns: int


@dataclass(slots=True)
class _Held:
    """Everything derived from the requests added so far (replaced whole on each add)."""

    traces: list[TraceRow] = field(default_factory=list)  # arrival order (seq = index + 1)
    by_trace: dict[bytes, TraceRow] = field(default_factory=dict)
    spans: dict[bytes, list[dict[str, Any]]] = field(default_factory=dict)  # trace -> span rows, start order
    sources: dict[int, Source] = field(default_factory=dict)
    logs: dict[bytes, list[dict[str, Any]]] = field(default_factory=dict)  # trace -> log rows, time order
    evaluations: dict[bytes, list[_Evaluation]] = field(default_factory=dict)  # trace -> its results


class MemoryReader:
    """A :class:`~tracetui.model.reader.Reader` over OTLP requests held in memory."""

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        self._lock = threading.Lock()
        self._decoded = Decoded()
        self._held = _Held()
        self._version = 0

    @classmethod
    def of(cls, traces: Iterable[bytes] = (), logs: Iterable[bytes] = (), threshold: float = 0.5) -> MemoryReader:
        """A reader holding these serialized ExportTraceServiceRequests and ExportLogsServiceRequests."""
        reader = cls(threshold)
        reader.add(traces, logs)
        return reader

    def add(self, traces: Iterable[bytes] = (), logs: Iterable[bytes] = ()) -> None:
        """Decode and hold more requests (raises tracetui.otlp.decode.DecodeError on a bad one)."""
        parts = [decode_request("traces", data) for data in traces] + [decode_request("logs", d) for d in logs]
        with self._lock:
            for part in parts:
                self._decoded.sources.update(part.sources)
                self._decoded.spans += part.spans
                self._decoded.logs += part.logs
                self._decoded.evaluations += part.evaluations
            self._held = _build(self._decoded)
            self._version += 1

    def close(self) -> None:
        pass

    # --- change detection and the header ------------------------------------------------------

    def data_version(self) -> int:
        return self._version

    def content_policy(self) -> ContentPolicy:
        """Nothing records a policy here: the data is kept and copied as it was sent."""
        return ContentPolicy()

    def counters(self) -> Counters:
        held = self._held
        return Counters(
            span_count=sum(len(spans) for spans in held.spans.values()),
            trace_count=len(held.traces),
            receiver=None,
            db_bytes=0,
            llm_calls=sum(t.llm_calls for t in held.traces),
            tokens=sum(t.input_tokens + t.output_tokens for t in held.traces),
            cost_usd=math.fsum(t.cost_usd or 0.0 for t in held.traces),
        )

    # --- the trace list -----------------------------------------------------------------------

    def _listed(self, horizon: int | None, flt: Filter | None, newer: bool = False) -> list[TraceRow]:
        if flt is not None and not flt.is_empty():
            raise NotImplementedError("the in-memory reader does not filter the trace list")
        rows = self._held.traces
        if horizon is not None:
            rows = [t for t in rows if (t.seq > horizon if newer else t.seq <= horizon)]
        return rows

    def max_seq(self) -> int:
        return len(self._held.traces)

    def count_traces(self, horizon: int | None = None, flt: Filter | None = None, cap: int | None = None) -> int:
        count = len(self._listed(horizon, flt))
        return count if cap is None else min(count, cap)

    def count_newer(self, horizon: int, flt: Filter | None = None) -> int:
        return len(self._listed(horizon, flt, newer=True))

    def traces(
        self, offset: int = 0, limit: int = 100, horizon: int | None = None, flt: Filter | None = None
    ) -> list[TraceRow]:
        rows = sorted(self._listed(horizon, flt), key=_list_order)
        rows = rows[offset:] if limit < 0 else rows[offset : offset + limit]
        return [self._with_evaluations(row) for row in rows]

    def trace(self, trace_id: bytes) -> TraceRow | None:
        row = self._held.by_trace.get(trace_id)
        return self._with_evaluations(row) if row is not None else None

    def neighbor_trace(self, trace_id: bytes, *, newer: bool, horizon: int | None = None) -> bytes | None:
        here = self._held.by_trace.get(trace_id)
        if here is None:
            return None
        rows = sorted(self._listed(horizon, None), key=_list_order)
        position = next((i for i, row in enumerate(rows) if row.trace_id == trace_id), None)
        if position is None:  # beyond the horizon: nothing is next to it in the list
            return None
        step = position - 1 if newer else position + 1
        return rows[step].trace_id if 0 <= step < len(rows) else None

    def trace_ids_starting(self, prefix_hex: str, limit: int = 2) -> list[bytes]:
        text = prefix_hex.strip().lower()
        if not text or len(text) > 32 or any(c not in "0123456789abcdef" for c in text):
            return []
        return sorted(t for t in self._held.by_trace if t.hex().startswith(text))[:limit]

    def session_totals(self, session_id: str) -> dict[str, Any]:
        runs = [t for t in self._held.traces if t.session_id == session_id]
        costs = [t.cost_usd for t in runs if t.cost_usd is not None]
        return {"session_id": session_id, "runs": len(runs), "llm_calls": sum(t.llm_calls for t in runs),
                "tokens": sum(t.input_tokens + t.output_tokens for t in runs),
                "cost_usd": math.fsum(costs) if costs else None,
                "unpriced_calls": sum(t.unpriced_calls for t in runs)}  # fmt: skip

    def sessions(self, limit: int | None = 1000) -> list[SessionRow]:
        return group_runs((self._with_evaluations(t) for t in self._held.traces if t.session_id), limit)

    def session_runs(self, session_id: str) -> list[TraceRow]:
        runs = [self._with_evaluations(t) for t in self._held.traces if t.session_id == session_id]
        return sorted(runs, key=lambda r: (r.start_ns, r.seq))

    def _with_evaluations(self, row: TraceRow) -> TraceRow:
        results = _deduplicated(self._held.evaluations.get(row.trace_id, []))
        if not results:
            return row
        grounded = [e.score for e in results if e.score is not None and is_groundedness(e.name)]
        decided = [v for v in (passed(e.score, e.label, self.threshold) for e in results) if v is not None]
        return replace(row, groundedness=min(grounded) if grounded else None, evals_passed=sum(decided),
                       evals_total=len(decided))  # fmt: skip

    # --- one trace ----------------------------------------------------------------------------

    def spans(self, trace_id: bytes) -> list[SpanRow]:
        grounded: dict[bytes, float] = {}
        for e in self._held.evaluations.get(trace_id, []):
            if e.span_id is not None and e.score is not None and is_groundedness(e.name):
                grounded[e.span_id] = min(e.score, grounded.get(e.span_id, e.score))
        return [_span_row(row, self._held.sources, grounded.get(row["span_id"])) for row in self._spans(trace_id)]

    def span_pages(self, trace_id: bytes, first: int = FIRST_PAGE, size: int = PAGE) -> Iterator[list[SpanRow]]:
        return pages_of(self.spans(trace_id), first, size)

    def decoded_rows(self, trace_id: bytes) -> list[tuple]:
        """The trace's spans as decoded rows (``SPAN_COLUMNS`` order), for an analysis of one's own."""
        return [tuple(row[name] for name in SPAN_COLUMNS) for row in self._spans(trace_id)]

    def _spans(self, trace_id: bytes) -> list[dict[str, Any]]:
        return self._held.spans.get(trace_id, [])

    def _span(self, trace_id: bytes, span_id: bytes) -> dict[str, Any] | None:
        return next((row for row in self._spans(trace_id) if row["span_id"] == span_id), None)

    def span_detail(self, trace_id: bytes, span_id: bytes) -> SpanDetail | None:
        found = self._span(trace_id, span_id)
        if found is None:
            return None
        source = self._held.sources[found["source_id"]]
        record = {key: value for key, value in found.items() if key != "raw"}
        record["scope_version"] = source.scope_version
        record["library"] = _library(found, self._held.sources)
        logs = [log_entry(log["event_name"], log["time_ns"], log["raw"])
                for log in self._held.logs.get(trace_id, []) if log["span_id"] == span_id]  # fmt: skip
        evaluations = self.span_evaluations(trace_id, span_id)
        return SpanDetail.decode(record, found["raw"], source.resource, source.scope, logs, evaluations)

    def span_details(self, trace_id: bytes) -> list[SpanDetail]:
        found = (self.span_detail(trace_id, row["span_id"]) for row in self._spans(trace_id))
        return [detail for detail in found if detail is not None]

    def iter_span_details(self, trace_id: bytes) -> Iterator[SpanDetail]:
        return iter(self.span_details(trace_id))

    def span_evaluations(self, trace_id: bytes, span_id: bytes) -> list[dict[str, Any]]:
        mine = [e for e in self._held.evaluations.get(trace_id, []) if e.span_id == span_id]
        return [{"name": e.name, "score": e.score, "label": e.label, "explanation": e.explanation, "source": e.source}
                for e in _deduplicated(mine)]  # fmt: skip

    def matching_span_ids(self, trace_id: bytes, flt: Filter) -> set[bytes]:
        from tracetui.query.export import span_json  # export builds on this module's protocol, not on it

        session = self._held.by_trace[trace_id].session_id if trace_id in self._held.by_trace else None
        return {bytes.fromhex(s["span_id"]) for s in span_json(self, trace_id)
                if matches_span(flt, {**s, "trace_session_id": session})}  # fmt: skip

    def stored_spans(self, trace_id: bytes) -> list[StoredSpan]:
        sources = self._held.sources
        return [StoredSpan(row["span_id"], row["raw"], sources[row["source_id"]].resource,
                           sources[row["source_id"]].scope, sources[row["source_id"]].schema_url)
                for row in self._spans(trace_id)]  # fmt: skip

    def stored_logs(self, trace_id: bytes) -> list[StoredLog]:
        sources = self._held.sources
        return [StoredLog(log["span_id"], log["event_name"], log["raw"], sources[log["source_id"]].resource,
                          sources[log["source_id"]].scope, sources[log["source_id"]].schema_url)
                for log in self._held.logs.get(trace_id, [])]  # fmt: skip

    # --- statistics ---------------------------------------------------------------------------

    def llm_calls(
        self,
        by: str,
        *,
        since_ns: int | None = None,
        flt: Filter | None = None,
        route_attribute: str | None = None,
        span_ids: bool = True,  # always given: they cost nothing here
    ) -> dict[str, list[CallFacts]]:
        if by not in GROUPINGS:
            raise ValueError(f"cannot group by {by!r} (one of: {', '.join(GROUPINGS)})")
        groups: dict[str, list[CallFacts]] = {}
        for trace, row in self._counted_calls(since_ns, None, flt):
            key = self._group_key(by, row, trace, route_attribute)
            groups.setdefault(NONE_KEY if key is None else key, []).append(_call_facts(row))
        return groups

    def _counted_calls(
        self, since_ns: int | None, until_ns: int | None, flt: Filter | None
    ) -> Iterator[tuple[TraceRow, dict[str, Any]]]:
        """(run, call row) of the counted LLM calls started in [since_ns, until_ns) matching ``flt``."""
        for trace in self._held.traces:
            if since_ns is not None and trace.end_ns < since_ns:
                continue
            matching = self.matching_span_ids(trace.trace_id, flt) if flt is not None and not flt.is_empty() else None
            for row in self._spans(trace.trace_id):
                start = row["start_ns"]
                if row["llm_kind"] != "llm" or row["counted"] == 0:
                    continue
                if (since_ns is not None and start < since_ns) or (until_ns is not None and start >= until_ns):
                    continue
                if matching is None or row["span_id"] in matching:
                    yield trace, row

    def _group_key(self, by: str, row: dict[str, Any], trace: TraceRow, attribute: str | None) -> str | None:
        if by == "model":
            return row["request_model"] or row["response_model"] or None
        if by == "prompt_version":
            if row["prompt_name"]:
                return f"{row['prompt_name']}@{row['prompt_version'] or NONE_KEY}"
            return row["prompt_version"] or None
        if attribute:
            value = span_attribute_text(row["raw"], attribute)
            root = self._span(trace.trace_id, _root_id(self._spans(trace.trace_id))) if value is None else None
            return value if root is None else span_attribute_text(root["raw"], attribute)
        return f"{trace.service} / {trace.name}"

    def call_figures(
        self, by: str, *, since_ns: int | None = None, flt: Filter | None = None, route_attribute: str | None = None
    ) -> list[GroupFigures] | None:
        return None  # tracetui.query.stats computes them from llm_calls

    def first_calls(
        self, *, since_ns: int | None = None, until_ns: int | None = None, flt: Filter | None = None
    ) -> dict[bytes, int | None] | None:
        return first_calls_of(self.cohort_calls(since_ns=since_ns, until_ns=until_ns, flt=flt))

    def cohort_calls(
        self, *, since_ns: int | None = None, until_ns: int | None = None, flt: Filter | None = None
    ) -> list[CohortCall]:
        found: list[CohortCall] = []
        for trace, row in self._counted_calls(since_ns, until_ns, flt):
            start = row["start_ns"]
            found.append(CohortCall(
                row["trace_id"], row["span_id"], start, max(row["end_ns"] - start, 0), int(row["status_code"] == 2),
                row["ttft_ns"], row["tokens_per_s"], row["output_tokens"], row["max_tokens"],
                int(row["is_retry"] != 0), int(row["is_fallback"] != 0), row["cost_usd"],
                max(trace.end_ns - trace.start_ns, 0),
                *(self._group_key(by, row, trace, None) for by in ("model", "prompt_version", "route")),
            ))  # fmt: skip
        found.sort(key=lambda call: call.start_ns)
        return found

    def evaluation_results(self, trace_ids: set[bytes]) -> list[EvaluationResult]:
        held = [e for trace_id in trace_ids for e in self._held.evaluations.get(trace_id, [])]
        return [
            EvaluationResult(e.trace_id, e.span_id, e.name, e.score, e.label, e.explanation, e.source, e.time_ns)
            for e in _deduplicated(held)
        ]

    def filter_note(self, flt: Filter) -> str | None:
        return None  # every term is decided over every trace

    def groundedness_scores(self) -> dict[tuple[bytes, bytes], list[float]]:
        found: dict[tuple[bytes, bytes], list[tuple[float, str | None]]] = {}
        for e in _deduplicated([e for results in self._held.evaluations.values() for e in results]):
            if e.span_id is not None and e.score is not None and math.isfinite(e.score) and is_groundedness(e.name):
                found.setdefault((e.trace_id, e.span_id), []).append((float(e.score), e.label))
        return {key: preferred_scores(results) for key, results in found.items()}

    def histogram_points(self, names: list[str], since_ns: int | None = None) -> list[HistogramPoint]:
        return []  # metrics are not held in memory


# --- building what is held ----------------------------------------------------------------------


def _build(decoded: Decoded) -> _Held:
    """Analyze every span held (once each, the first copy kept, as the store's unique index does)."""
    seen: set[tuple[bytes, bytes]] = set()
    unique = []
    for row in decoded.spans:
        key = (row[0], row[1])
        if key not in seen:
            seen.add(key)
            unique.append(row[: len(SPAN_COLUMNS)])
    batch = prepare(Decoded(sources=decoded.sources, spans=unique))
    held = _Held(sources={source.id: source for source in decoded.sources.values()})
    for arrival, values in enumerate(batch.spans):
        span = dict(zip(_SPAN_FIELDS, values, strict=True))
        span["id"] = arrival + 1
        held.spans.setdefault(span["trace_id"], []).append(span)
    for spans in held.spans.values():
        spans.sort(key=lambda r: (r["start_ns"], r["id"]))
    for seq, (trace_id, params) in enumerate(batch.traces.items(), start=1):
        timing = batch.timing.get(trace_id) or no_timing(int(params["start_ns"]), int(params["end_ns"]))
        fields: dict[str, Any] = {**params, **timing}
        trace = TraceRow(seq, trace_id, error_count=fields["errors"], **{k: fields[k] for k in _TRACE_FIELDS})
        held.traces.append(trace)
        held.by_trace[trace_id] = trace
    for log_values in decoded.logs:
        log = dict(zip(LOG_COLUMNS, log_values, strict=True))
        held.logs.setdefault(log["trace_id"], []).append(log)
    for logs in held.logs.values():
        logs.sort(key=lambda log: log["time_ns"])
    for values in decoded.evaluations:
        evaluation = _resolved(_Evaluation(*values), held)
        held.evaluations.setdefault(evaluation.trace_id, []).append(evaluation)
    return held


def _resolved(evaluation: _Evaluation, held: _Held) -> _Evaluation:
    """An evaluation that named only the response it judged, attached to the span that produced it."""
    if evaluation.span_id is not None or not evaluation.response_id:
        return evaluation
    for trace_id, spans in held.spans.items():
        if evaluation.trace_id in (trace_id, b""):
            for row in spans:
                if row["response_id"] == evaluation.response_id:
                    return replace(evaluation, trace_id=trace_id, span_id=row["span_id"])
    return evaluation


def _deduplicated(evaluations: list[_Evaluation]) -> list[_Evaluation]:
    """One result per (span, name, score, label), its routes joined in ``source``, oldest first."""
    kept: dict[tuple, _Evaluation] = {}
    for e in sorted(evaluations, key=lambda e: e.time_ns):
        key = (e.trace_id, e.span_id or e.response_id, e.name, e.score, e.label)
        if key not in kept:
            kept[key] = replace(e)
        elif e.source not in kept[key].source:
            kept[key].source += " + " + e.source
    return list(kept.values())


def _list_order(row: TraceRow) -> tuple[int, int]:
    return (-row.start_ns, -row.seq)


def _root_id(spans: list[dict[str, Any]]) -> bytes:
    roots = [row for row in spans if row["parent_span_id"] is None]
    return roots[0]["span_id"] if roots else b""


def _library(row: dict[str, Any], sources: dict[int, Source]) -> str:
    """The scope that wrote the span's LLM fields: the one its provenance names, else its own."""
    try:
        named = json.loads(row["provenance"]).get("library") if row["provenance"] else None
    except (ValueError, AttributeError):
        named = None
    return named or sources[row["source_id"]].scope_name


def _span_row(row: dict[str, Any], sources: dict[int, Source], groundedness: float | None) -> SpanRow:
    return SpanRow(
        row["span_id"], row["parent_span_id"], row["name"], row["kind"], row["service"], row["start_ns"],
        row["end_ns"], row["status_code"], row["status_message"], row["llm_kind"], row["provider"],
        row["request_model"], row["response_model"], row["input_tokens"], row["output_tokens"], row["streaming"],
        row["ttft_ns"], row["cost_usd"], row["dropped_attributes"] + row["dropped_events"] + row["dropped_links"],
        row["decode_ns"], row["tokens_per_s"], row["attempt_offset_ns"], row["is_retry"], row["is_fallback"],
        row["retry_ns"], row["retry_offset_ns"], row["retry_source"], row["http_status"], _library(row, sources),
        row["provenance"], groundedness=groundedness,
    )  # fmt: skip


def _call_facts(row: dict[str, Any]) -> CallFacts:
    return (row["trace_id"], row["start_ns"], max(row["end_ns"] - row["start_ns"], 0), int(row["status_code"] == 2),
            row["ttft_ns"], row["tokens_per_s"], int(row["is_retry"] != 0), int(row["is_fallback"] != 0),
            row["cost_usd"], row["span_id"])  # fmt: skip

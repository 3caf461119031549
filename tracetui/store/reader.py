"""Read-only queries: everything the UI and the scripting commands ask.

Every method is blocking SQL: the UI calls them from thread workers only.
One connection is shared under a lock (Textual's thread workers run on a pool,
so calls arrive from different threads).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tracetui.evals import is_groundedness, passed
from tracetui.fmt import fmt_counted
from tracetui.otlp.decode import any_value_to_python, attributes_to_dict
from tracetui.store.health import read_problem
from tracetui.store.schema import connect_reader
from tracetui.timing import SPLIT_KEYS, first_token_note, retry_note, tokens_estimated_note

NO_ROOT = "no root yet"
SPAN_KIND_NAMES = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
STATUS_NAMES = {0: "unset", 1: "ok", 2: "error"}


def _ms(ns: int | None) -> float | None:
    return None if ns is None else ns / 1e6


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


_TRACE_COLS = (
    "id, trace_id, root_name, first_name, service, start_ns, end_ns, span_count, error_count, "
    "llm_calls, input_tokens, output_tokens, cost_usd, retries, fallbacks, "
    + ", ".join(f"split_{key}_ns" for key in SPLIT_KEYS)
    + ", unpriced_calls, session_id, slowest_span_id, slowest_name, slowest_ns, tokenless_calls"
)


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


def library_sql(provenance: str, scope_name: str) -> str:
    """SQL for the instrumentation scope that wrote a span's LLM fields, as column ``library``: its own
    scope, or the one the normalizer names (LiteLLM writes its calls onto the app's spans)."""
    return (f"coalesce(json_extract(CASE WHEN json_valid({provenance}) THEN {provenance} END, '$.library'), "
            f"{scope_name}) AS library")  # fmt: skip


_SPAN_COLS = (
    "span_id, parent_span_id, name, kind, service, start_ns, end_ns, status_code, status_message, "
    "llm_kind, provider, request_model, response_model, input_tokens, output_tokens, streaming, ttft_ns, "
    "cost_usd, dropped_attributes + dropped_events + dropped_links, decode_ns, tokens_per_s, attempt_offset_ns, "
    "is_retry, is_fallback, retry_ns, retry_offset_ns, retry_source, http_status, "
    + library_sql("spans.provenance", "(SELECT scope_name FROM sources WHERE sources.id = spans.source_id)")
    + ", provenance"
)


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
        }


class Reader:
    """Read-only access to a tracetui database."""

    def __init__(self, path: Path, threshold: float = 0.5) -> None:
        self.path = Path(path)
        #: Score at or above which an evaluation passes (groundedness badges, "x/y passed").
        self.threshold = threshold
        self._conn = connect_reader(self.path)
        self._lock = threading.Lock()
        self._functions = False
        self._ensure_functions()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _all(self, sql: str, params: Sequence | dict = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def _one(self, sql: str, params: Sequence | dict = ()) -> tuple | None:
        with self._lock:
            return self._conn.execute(sql, params).fetchone()

    def run(self, fn):
        """Run ``fn(connection)`` under the reader's lock (for modules that build their own SQL)."""
        with self._lock:
            return fn(self._conn)

    def _ensure_functions(self) -> None:
        """The SQL functions compiled filters call (attribute lookups on the raw spans)."""
        if not self._functions:
            try:
                from tracetui.filters import register_sql_functions
            except ImportError:  # pragma: no cover - only while the filter module is missing
                return
            register_sql_functions(self._conn)
            self._functions = True

    def _dicts(self, sql: str, params: tuple | dict = ()) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._conn.execute(sql, params)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, values, strict=True)) for values in cur.fetchall()]

    # --- change detection ----------------------------------------------------

    def data_version(self) -> int:
        """Changes whenever another connection commits (cheap; poll it)."""
        row = self._one("PRAGMA data_version")
        return int(row[0]) if row else 0

    def counters(self) -> Counters:
        meta = dict(self._all("SELECT key, value FROM meta"))
        receiver = None
        if meta.get("receiver"):
            try:
                receiver = json.loads(meta["receiver"])
            except ValueError:
                receiver = None
        page = self._one("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")
        wal = self.path.with_name(self.path.name + "-wal")
        wal_bytes = wal.stat().st_size if wal.exists() else 0
        return Counters(
            span_count=int(meta.get("span_count") or 0),
            trace_count=int(meta.get("trace_count") or 0),
            receiver=receiver,
            db_bytes=(page[0] if page else 0) + wal_bytes,
            llm_calls=int(meta.get("llm_calls") or 0),
            tokens=int(meta.get("tokens") or 0),
            cost_usd=float(meta.get("cost_usd") or 0.0),
            evicted_traces=int(meta.get("evicted_traces") or 0),
            evicted_spans=int(meta.get("evicted_spans") or 0),
            store_problem=read_problem(self.path),
        )

    # --- trace list ----------------------------------------------------------

    def max_seq(self) -> int:
        row = self._one("SELECT max(id) FROM traces")
        return int(row[0] or 0) if row else 0

    def _where(self, horizon: int | None, where: tuple[str, list] | None, newer: bool = False) -> tuple[str, list]:
        """WHERE clause for the list: the arrival horizon and a compiled filter (parameters only)."""
        clauses, params = [], []
        if horizon is not None:
            clauses.append("traces.id > ?" if newer else "traces.id <= ?")
            params.append(horizon)
        if where is not None and where[0].strip() not in ("", "1"):
            clauses.append(f"({where[0]})")
            params += list(where[1])
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def count_traces(self, horizon: int | None = None, where: tuple[str, list] | None = None) -> int:
        clause, params = self._where(horizon, where)
        row = self._one(f"SELECT count(*) FROM traces{clause}", params)
        return int(row[0]) if row else 0

    def count_newer(self, horizon: int, where: tuple[str, list] | None = None) -> int:
        """Traces that arrived after ``horizon`` (an index range on the rowid)."""
        clause, params = self._where(horizon, where, newer=True)
        row = self._one(f"SELECT count(*) FROM traces{clause}", params)
        return int(row[0]) if row else 0

    def traces(
        self, offset: int = 0, limit: int = 100, horizon: int | None = None, where: tuple[str, list] | None = None
    ) -> list[TraceRow]:
        """Traces newest first (by start time): only those with seq <= horizon, matching ``where``."""
        clause, params = self._where(horizon, where)
        rows = self._all(
            f"SELECT {_TRACE_COLS} FROM traces{clause} ORDER BY start_ns DESC, id DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return self._with_evaluations([TraceRow(*r) for r in rows])

    def matching_span_ids(self, trace_id: bytes, where: tuple[str, list]) -> set[bytes]:
        """Spans of one trace that match a compiled filter (``Filter.span_where("spans")``)."""
        return {
            r[0]
            for r in self._all(
                f"SELECT spans.span_id FROM spans AS spans WHERE spans.trace_id = ? AND ({where[0]})",
                (trace_id, *where[1]),
            )
        }

    def trace(self, trace_id: bytes) -> TraceRow | None:
        row = self._one(f"SELECT {_TRACE_COLS} FROM traces WHERE trace_id = ?", (trace_id,))
        return self._with_evaluations([TraceRow(*row)])[0] if row else None

    def _with_evaluations(self, rows: list[TraceRow]) -> list[TraceRow]:
        """Worst groundedness and passed/total evaluations of each trace (one query for the lot)."""
        if not rows:
            return rows
        found: dict[bytes, list[tuple]] = {}
        ids = [r.trace_id for r in rows]
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            for trace_id, name, score, label in self._all(
                f"SELECT trace_id, name, score, label FROM evaluations WHERE trace_id IN ({','.join('?' * len(chunk))})",
                chunk,
            ):
                found.setdefault(trace_id, []).append((name, score, label))
        if not found:
            return rows
        out = []
        for row in rows:
            results = found.get(row.trace_id)
            if not results:
                out.append(row)
                continue
            grounded = [score for name, score, _ in results if score is not None and is_groundedness(name)]
            verdicts = [passed(score, label, self.threshold) for _, score, label in results]
            decided = [v for v in verdicts if v is not None]
            out.append(
                replace(
                    row,
                    groundedness=min(grounded) if grounded else None,
                    evals_passed=sum(decided),
                    evals_total=len(decided),
                )
            )
        return out

    def session_totals(self, session_id: str) -> dict[str, Any]:
        """Runs, LLM calls, tokens and cost of one conversation (leaf calls, each request once)."""
        row = self._one(
            "SELECT count(*), sum(llm_calls), sum(input_tokens + output_tokens), sum(cost_usd), sum(unpriced_calls) "
            "FROM traces WHERE session_id = ?",
            (session_id,),
        )
        runs, calls, tokens, cost, unpriced = row if row else (0, 0, 0, None, 0)
        return {"session_id": session_id, "runs": runs, "llm_calls": calls or 0, "tokens": tokens or 0,
                "cost_usd": cost, "unpriced_calls": unpriced or 0}  # fmt: skip

    def neighbor_trace(self, trace_id: bytes, *, newer: bool, horizon: int | None = None) -> bytes | None:
        """The trace next to ``trace_id`` in the list's order (newest first), or None at either end."""
        row = self._one("SELECT start_ns, id FROM traces WHERE trace_id = ?", (trace_id,))
        if row is None:
            return None
        start, seq = row
        limit = "" if horizon is None else " AND id <= ?"
        params: tuple = (start, start, seq) + (() if horizon is None else (horizon,))
        if newer:
            sql = ("SELECT trace_id FROM traces WHERE (start_ns > ? OR (start_ns = ? AND id > ?))" + limit
                   + " ORDER BY start_ns, id LIMIT 1")  # fmt: skip
        else:
            sql = ("SELECT trace_id FROM traces WHERE (start_ns < ? OR (start_ns = ? AND id < ?))" + limit
                   + " ORDER BY start_ns DESC, id DESC LIMIT 1")  # fmt: skip
        found = self._one(sql, params)
        return found[0] if found else None

    def trace_ids_starting(self, prefix_hex: str, limit: int = 2) -> list[bytes]:
        """Up to ``limit`` stored trace ids that start with these hex digits (none for non-hex text)."""
        text = prefix_hex.strip().lower()
        if not text or len(text) > 32:
            return []
        try:
            lo = bytes.fromhex(text.ljust(32, "0"))
            hi = bytes.fromhex(text.ljust(32, "f"))
        except ValueError:
            return []
        rows = self._all("SELECT trace_id FROM traces WHERE trace_id BETWEEN ? AND ? LIMIT ?", (lo, hi, limit))
        return [row[0] for row in rows]

    # --- one trace -----------------------------------------------------------

    def spans(self, trace_id: bytes) -> list[SpanRow]:
        rows = self._all(f"SELECT {_SPAN_COLS} FROM spans WHERE trace_id = ? ORDER BY start_ns, id", (trace_id,))
        spans = [SpanRow(*r) for r in rows]
        grounded: dict[bytes, float] = {}
        for span_id, name, score in self._all(
            "SELECT span_id, name, score FROM evaluations WHERE trace_id = ? AND score IS NOT NULL", (trace_id,)
        ):
            if is_groundedness(name):
                grounded[span_id] = min(score, grounded.get(span_id, score))
        if grounded:
            for span in spans:
                span.groundedness = grounded.get(span.span_id)
        return spans

    def span_detail(self, trace_id: bytes, span_id: bytes) -> SpanDetail | None:
        found = self._dicts(
            f"SELECT s.*, src.resource, src.scope, src.scope_version, {library_sql('s.provenance', 'src.scope_name')} "
            "FROM spans s JOIN sources src ON src.id = s.source_id WHERE s.trace_id = ? AND s.span_id = ?",
            (trace_id, span_id),
        )
        if not found:
            return None
        record = found[0]
        span = Span.FromString(record.pop("raw"))
        resource = Resource.FromString(record.pop("resource") or b"")
        scope = InstrumentationScope.FromString(record.pop("scope") or b"")
        return SpanDetail(
            logs=self.span_logs(trace_id, span_id),
            evaluations=self.span_evaluations(trace_id, span_id),
            row=record,
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
            resource=attributes_to_dict(resource.attributes),
            scope={
                "name": scope.name,
                "version": scope.version,
                "attributes": {kv.key: any_value_to_python(kv.value) for kv in scope.attributes},
            },
            trace_state=span.trace_state,
            flags=span.flags,
        )

    def span_logs(self, trace_id: bytes, span_id: bytes) -> list[dict[str, Any]]:
        """Log records that belong to a span (GenAI events: content, evaluations), oldest first."""
        out = []
        for row in self._all(
            "SELECT event_name, time_ns, raw FROM logs WHERE trace_id = ? AND span_id = ? ORDER BY time_ns, id",
            (trace_id, span_id),
        ):
            record = LogRecord.FromString(row[2])
            out.append(
                {
                    "event_name": row[0],
                    "time_ns": row[1],
                    "severity": record.severity_text or record.severity_number,
                    "attributes": attributes_to_dict(record.attributes),
                    "body": any_value_to_python(record.body),
                }
            )
        return out

    def span_evaluations(self, trace_id: bytes, span_id: bytes) -> list[dict[str, Any]]:
        return [
            {"name": r[0], "score": r[1], "label": r[2], "explanation": r[3], "source": r[4]}
            for r in self._all(
                "SELECT name, score, label, explanation, group_concat(source, ' + ') FROM ("
                "SELECT * FROM evaluations WHERE trace_id = ? AND span_id = ? ORDER BY time_ns, id) "
                "GROUP BY name, score, label ORDER BY min(time_ns)",
                (trace_id, span_id),
            )
        ]

    def span_json(self, trace_id: bytes) -> list[dict[str, Any]]:
        """The spans of one trace for ``tracetui spans --json``."""
        rows = self._dicts(
            f"SELECT s.*, src.resource, {library_sql('s.provenance', 'src.scope_name')} "
            "FROM spans s JOIN sources src ON src.id = s.source_id "
            "WHERE s.trace_id = ? ORDER BY s.start_ns, s.id",
            (trace_id,),
        )
        out = []
        for r in rows:
            span = Span.FromString(r["raw"])
            resource = Resource.FromString(r["resource"] or b"")
            out.append(
                {
                    "trace_id": r["trace_id"].hex(),
                    "span_id": r["span_id"].hex(),
                    "parent_span_id": r["parent_span_id"].hex() if r["parent_span_id"] else None,
                    "name": r["name"],
                    "kind": r["llm_kind"] or "other",
                    "span_kind": SPAN_KIND_NAMES.get(r["kind"], str(r["kind"])),
                    "service": r["service"],
                    "start_ns": r["start_ns"],
                    "end_ns": r["end_ns"],
                    "duration_ms": max(0, r["end_ns"] - r["start_ns"]) / 1e6,
                    "status": STATUS_NAMES.get(r["status_code"], str(r["status_code"])),
                    "status_message": r["status_message"],
                    "attributes": attributes_to_dict(span.attributes),
                    "events": [
                        {"name": e.name, "time_ns": e.time_unix_nano, "attributes": attributes_to_dict(e.attributes)}
                        for e in span.events
                    ],
                    "links": [
                        {
                            "trace_id": k.trace_id.hex(),
                            "span_id": k.span_id.hex(),
                            "attributes": attributes_to_dict(k.attributes),
                        }
                        for k in span.links
                    ],  # fmt: skip
                    "resource": attributes_to_dict(resource.attributes),
                    "dropped": {
                        "attributes": r["dropped_attributes"],
                        "events": r["dropped_events"],
                        "links": r["dropped_links"],
                    },
                    "provider": r["provider"],
                    "request_model": r["request_model"],
                    "response_model": r["response_model"],
                    "input_tokens": r["input_tokens"],
                    "output_tokens": r["output_tokens"],
                    "cache_read_tokens": r["cache_read_tokens"],
                    "cache_write_tokens": r["cache_write_tokens"],
                    "reasoning_tokens": r["reasoning_tokens"],
                    "streaming": None if r["streaming"] is None else bool(r["streaming"]),
                    "ttft_ms": _ms(r["ttft_ns"]),
                    "decode_ms": _ms(r["decode_ns"]),
                    "tokens_per_s": r["tokens_per_s"],
                    "retry_ms": _ms(r["retry_ns"]),
                    "retry_source": r["retry_source"],
                    "is_retry": bool(r["is_retry"]),
                    "is_fallback": bool(r["is_fallback"]),
                    "finish_reason": r["finish_reason"],
                    "error_type": r["error_type"],
                    "session_id": r["session_id"],
                    "user_id": r["user_id"],
                    "prompt_name": r["prompt_name"],
                    "prompt_version": r["prompt_version"],
                    "cost_usd": r["cost_usd"],
                    "cost_source": r["cost_source"],
                    "evaluations": self.span_evaluations(r["trace_id"], r["span_id"]),
                    "counted": None if r["counted"] is None else bool(r["counted"]),
                    "provenance": json.loads(r["provenance"]) if r["provenance"] else {},
                    **_not_reported(r),
                }
            )
        return out


def _not_reported(r: dict[str, Any]) -> dict[str, Any]:
    """What a model call's library did not report, in words (``spans --json``); {} for other spans."""
    if r["llm_kind"] != "llm":
        return {}
    provenance = json.loads(r["provenance"]) if r["provenance"] else {}
    tokens_note = None
    if r["input_tokens"] is None or r["output_tokens"] is None:  # as tracetui.timing counts tokenless calls
        if r["status_code"] != 2:
            tokens_note = "no token counts" if r["input_tokens"] == r["output_tokens"] else "token counts incomplete"
    else:
        tokens_note = tokens_estimated_note(provenance, r["library"])
    return {
        "first_token_note": first_token_note(r["streaming"], r["ttft_ns"], r["library"]),
        "retry_note": retry_note(r["retry_source"], r["library"], provenance),
        "tokens_note": tokens_note,
    }

"""Read-only queries: everything the UI and the scripting commands ask.

Every method is blocking SQL: the UI calls them from thread workers only.
One connection is shared under a lock (Textual's thread workers run on a pool,
so calls arrive from different threads).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tracetui.llm.evals import is_groundedness, passed
from tracetui.llm.timing import first_token_note, retry_note, tokens_estimated_note
from tracetui.model.anyvalue import any_value_to_python, attributes_to_dict
from tracetui.model.filter import Filter
from tracetui.model.rows import SPLIT_KEYS
from tracetui.model.views import SPAN_KIND_NAMES, STATUS_NAMES, Counters, SpanDetail, SpanRow, TraceRow
from tracetui.store.filter_sql import register_sql_functions, span_where, trace_where
from tracetui.store.health import read_problem
from tracetui.store.schema import connect_reader

_TRACE_COLS = (
    "id, trace_id, root_name, first_name, service, start_ns, end_ns, span_count, error_count, "
    "llm_calls, input_tokens, output_tokens, cost_usd, retries, fallbacks, "
    + ", ".join(f"split_{key}_ns" for key in SPLIT_KEYS)
    + ", unpriced_calls, session_id, slowest_span_id, slowest_name, slowest_ns, tokenless_calls"
)


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


def _ms(ns: int | None) -> float | None:
    return None if ns is None else ns / 1e6


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

    def _where(self, horizon: int | None, flt: Filter | None, newer: bool = False) -> tuple[str, list]:
        """WHERE clause for the list: the arrival horizon and the filter compiled to SQL (parameters only)."""
        clauses, params = [], []
        if horizon is not None:
            clauses.append("traces.id > ?" if newer else "traces.id <= ?")
            params.append(horizon)
        if flt is not None and not flt.is_empty():
            sql, values = trace_where(flt)
            clauses.append(f"({sql})")
            params += values
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def count_traces(self, horizon: int | None = None, flt: Filter | None = None) -> int:
        clause, params = self._where(horizon, flt)
        row = self._one(f"SELECT count(*) FROM traces{clause}", params)
        return int(row[0]) if row else 0

    def count_newer(self, horizon: int, flt: Filter | None = None) -> int:
        """Traces that arrived after ``horizon`` (an index range on the rowid)."""
        clause, params = self._where(horizon, flt, newer=True)
        row = self._one(f"SELECT count(*) FROM traces{clause}", params)
        return int(row[0]) if row else 0

    def traces(
        self, offset: int = 0, limit: int = 100, horizon: int | None = None, flt: Filter | None = None
    ) -> list[TraceRow]:
        """Traces newest first (by start time): only those with seq <= horizon, matching ``flt``."""
        clause, params = self._where(horizon, flt)
        rows = self._all(
            f"SELECT {_TRACE_COLS} FROM traces{clause} ORDER BY start_ns DESC, id DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return self._with_evaluations([TraceRow(*r) for r in rows])

    def matching_span_ids(self, trace_id: bytes, flt: Filter) -> set[bytes]:
        """Spans of one trace that match the filter (its span-level reading, tracetui.model.filter)."""
        sql, params = span_where(flt, "spans")
        rows = self._all(
            f"SELECT spans.span_id FROM spans AS spans WHERE spans.trace_id = ? AND ({sql})", (trace_id, *params)
        )
        return {r[0] for r in rows}

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
    if r["input_tokens"] is None or r["output_tokens"] is None:  # as tracetui.llm.timing counts tokenless calls
        if r["status_code"] != 2:
            tokens_note = "no token counts" if r["input_tokens"] == r["output_tokens"] else "token counts incomplete"
    else:
        tokens_note = tokens_estimated_note(provenance, r["library"])
    return {
        "first_token_note": first_token_note(r["streaming"], r["ttft_ns"], r["library"]),
        "retry_note": retry_note(r["retry_source"], r["library"], provenance),
        "tokens_note": tokens_note,
    }

"""The SQLite implementation of :class:`tracetui.model.reader.Reader`.

Every method is blocking SQL: the UI calls them from thread workers only.
One connection is shared under a lock (Textual's thread workers run on a pool,
so calls arrive from different threads).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from tracetui.llm.evals import is_groundedness, passed, worst_groundedness
from tracetui.model.config import ContentPolicy
from tracetui.model.filter import TEXT_FIELD, Filter
from tracetui.model.reader import (
    FIRST_PAGE,
    PAGE,
    CallFacts,
    CohortCall,
    EvaluationResult,
    GroupFigures,
    HistogramPoint,
    StoredLog,
    StoredSpan,
)
from tracetui.model.rows import SPLIT_KEYS
from tracetui.model.views import Counters, SessionRow, SpanDetail, SpanRow, TraceRow, log_entry
from tracetui.store import rollup, stats_sql, text_index
from tracetui.store.blobs import Blobs, provenance_sql
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


_PROVENANCE = provenance_sql("s.provenance")

_SPAN_COLS = (
    "span_id, parent_span_id, name, kind, service, start_ns, end_ns, status_code, status_message, "
    "llm_kind, provider, request_model, response_model, input_tokens, output_tokens, streaming, ttft_ns, "
    "cost_usd, dropped_attributes + dropped_events + dropped_links, decode_ns, tokens_per_s, attempt_offset_ns, "
    "is_retry, is_fallback, retry_ns, retry_offset_ns, retry_source, http_status, "
    + library_sql(
        provenance_sql("spans.provenance"), "(SELECT scope_name FROM sources WHERE sources.id = spans.source_id)"
    )
    + ", "
    + provenance_sql("spans.provenance")
)


#: Positions of SpanRow's text fields: a trace's rows repeat the same names, services, models and provenance,
#: and one string object for each distinct value halves what an open 100,000-span trace holds (123 -> 68 MB).
#: The newest runs a dense ``text:`` search checks one by one before it collects every match's run
#: (SqliteReader._newest_window): at ~10 spans a run and ~25 µs a span, at most ~0.5 s.
TEXT_WINDOW_RUNS = 2_000

_TEXT_FIELDS = tuple(i for i, f in enumerate(fields(SpanRow)) if f.type in ("str", "str | None"))


def _span_row(values: Sequence[Any], texts: dict[str, str]) -> SpanRow:
    """A SpanRow whose repeated texts are the objects already in ``texts`` (one dict for a whole trace)."""
    row = list(values)
    for i in _TEXT_FIELDS:
        text = row[i]
        if text is not None:
            row[i] = texts.setdefault(text, text)
    return SpanRow(*row)


def _some_spans(trace_id: bytes, span_ids: Sequence[bytes] | None, prefix: str = "") -> tuple[str, tuple[bytes, ...]]:
    """The condition (after ``trace_id = ?``) and parameters for some spans of a trace (None: all its spans)."""
    if span_ids is None:
        return f" AND {prefix}span_id IS NOT NULL", (trace_id,)
    return f" AND {prefix}span_id IN ({','.join('?' * len(span_ids))})", (trace_id, *span_ids)


#: Span id -> its groundedness results in a trace, (score, label) each (llm.evals.worst_groundedness picks one).
_Grounded = dict[bytes, list[tuple[float, str | None]]]

#: A page's place in a trace's start order: (start_ns, id) of the previous page's last span.
_SpanKey = tuple[int, int]


def _after(key: _SpanKey | None, prefix: str = "") -> tuple[str, tuple[int, ...]]:
    """The keyset condition for the spans after ``key`` in (start_ns, id) order (a page costs its own rows,
    not an OFFSET's)."""
    return ("", ()) if key is None else (f" AND ({prefix}start_ns, {prefix}id) > (?, ?)", key)


def _json_object(text: object) -> dict[str, Any] | None:
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class SqliteReader:
    """Read-only access to a tracetui database (implements tracetui.model.reader.Reader)."""

    def __init__(self, path: Path, threshold: float = 0.5) -> None:
        self.path = Path(path)
        #: Score at or above which an evaluation passes (groundedness badges, "x/y passed").
        self.threshold = threshold
        #: Stats come from the rollup (tracetui.store.rollup) once this many spans are stored; below, from a scan.
        self.exact_below_spans = rollup.EXACT_BELOW_SPANS
        self._conn = connect_reader(self.path)
        self._lock = threading.Lock()
        #: Rebuilds the spans' raw bytes (tracetui.store.blobs); used under ``_lock``.
        self._blobs = Blobs(self._conn)
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

    def _ensure_functions(self) -> None:
        """The SQL functions compiled filters call (attribute lookups on the raw spans)."""
        if not self._functions:
            register_sql_functions(self._conn, self._blobs)
            self._functions = True

    def _expand(self, raws: list[bytes]) -> list[bytes]:
        """The spans' original bytes (tracetui.store.blobs)."""
        with self._lock:
            return self._blobs.expand_all(raws)

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

    def content_policy(self) -> ContentPolicy:
        row = self._one("SELECT value FROM meta WHERE key = ?", (text_index.POLICY_KEY,))
        return ContentPolicy.from_json(row[0] if row else None)

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
            judge=_json_object(meta.get("judge")),
            index_behind=self._index_behind(meta.get(text_index.CURSOR_KEY)),
            stats_backfill=self._stats_backfill(),
        )

    def _stats_backfill(self) -> float | None:
        with self._lock:
            return rollup.progress(self._conn)

    def _index_behind(self, cursor: object) -> int | None:
        if cursor is None:  # no indexer ever ran on this file
            return None
        row = self._one("SELECT count(*) FROM (SELECT 1 FROM spans WHERE id > ? LIMIT ?)",
                        (int(cursor), text_index.MAX_BEHIND_COUNT))  # type: ignore[call-overload]  # fmt: skip
        return int(row[0]) if row else 0

    # --- trace list ----------------------------------------------------------

    def max_seq(self) -> int:
        row = self._one("SELECT max(id) FROM traces")
        return int(row[0] or 0) if row else 0

    def _where(
        self, horizon: int | None, flt: Filter | None, newer: bool = False, text_per_run: bool = False
    ) -> tuple[str, list]:
        """WHERE clause for the list: the arrival horizon and the filter compiled to SQL (parameters only)."""
        clauses, params = [], []
        if horizon is not None:
            clauses.append("traces.id > ?" if newer else "traces.id <= ?")
            params.append(horizon)
        if flt is not None and not flt.is_empty():
            sql, values = trace_where(flt, text_per_run)
            clauses.append(f"({sql})")
            params += values
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def _newest_window(self, horizon: int | None, flt: Filter | None, wanted: int) -> tuple[str, list] | None:
        """For a filter with dense ``text:`` searches: a WHERE clause that checks runs one by one, newest
        first, among the newest TEXT_WINDOW_RUNS only (``None``: collect every match's run instead, see
        text_index.per_run_pays).

        The answer is exact when the window holds ``wanted`` matching runs, since any run outside it is
        older than all of them; otherwise the caller asks again without the window.
        """
        queries = [str(t.value) for t in (flt.terms if flt else ()) if t.field == TEXT_FIELD]
        if not queries or wanted > TEXT_WINDOW_RUNS // 2:
            return None
        if not all(text_index.per_run_pays(self._conn, q) for q in queries):
            return None
        clause, params = self._where(horizon, flt, text_per_run=True)
        oldest = self._one(
            f"SELECT start_ns FROM traces{' WHERE id <= ?' if horizon is not None else ''} "
            "ORDER BY start_ns DESC, id DESC LIMIT 1 OFFSET ?",
            (*([horizon] if horizon is not None else []), TEXT_WINDOW_RUNS - 1),
        )
        if oldest is None:  # fewer runs than the window: all of them, one by one
            return clause, params
        return f"{clause} AND traces.start_ns >= ?", [*params, oldest[0]]

    def count_traces(self, horizon: int | None = None, flt: Filter | None = None, cap: int | None = None) -> int:
        window = self._newest_window(horizon, flt, cap) if cap is not None else None
        if window is not None and cap is not None:
            clause, params = window
            row = self._one(f"SELECT count(*) FROM (SELECT 1 FROM traces{clause} ORDER BY start_ns DESC, id DESC "
                            "LIMIT ?)", (*params, cap))  # fmt: skip
            if row and row[0] >= cap:
                return int(row[0])
        if flt is None or flt.is_empty():
            # The writer keeps the count in meta, in the transactions that add and evict traces: counting
            # the table took 11 ms warm, 152 ms cold per refresh at 1M traces (10M spans), several times a second.
            kept = self._one("SELECT value FROM meta WHERE key = 'trace_count'")
            if kept is not None and kept[0] is not None:
                return max(0, int(kept[0]) - (self.count_newer(horizon) if horizon is not None else 0))
        clause, params = self._where(horizon, flt)
        if cap is None:
            row = self._one(f"SELECT count(*) FROM traces{clause}", params)
        else:  # stops at the cap: the first traces checked against their spans, not the whole table
            row = self._one(f"SELECT count(*) FROM (SELECT 1 FROM traces{clause} LIMIT ?)", (*params, cap))
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
        order = "ORDER BY start_ns DESC, id DESC LIMIT ? OFFSET ?"
        window = self._newest_window(horizon, flt, offset + limit)
        if window is not None:
            clause, params = window
            rows = self._all(f"SELECT {_TRACE_COLS} FROM traces{clause} {order}", (*params, limit, offset))
            if len(rows) == limit:
                return self._with_evaluations([TraceRow(*r) for r in rows])
        clause, params = self._where(horizon, flt)
        rows = self._all(f"SELECT {_TRACE_COLS} FROM traces{clause} {order}", (*params, limit, offset))
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
            grounded, estimated = worst_groundedness(
                [(score, label) for name, score, label in results if score is not None and is_groundedness(name)]
            )
            verdicts = [passed(score, label, self.threshold) for _, score, label in results]
            decided = [v for v in verdicts if v is not None]
            out.append(
                replace(
                    row,
                    groundedness=grounded,
                    groundedness_estimated=estimated,
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

    def sessions(self, limit: int | None = 1000) -> list[SessionRow]:
        """Conversations added up in SQL over the whole table (the partial index traces_by_session), then
        the worst groundedness of the sessions listed (one query over their runs' evaluations)."""
        rows = self._all(
            "SELECT session_id, count(*), min(start_ns), max(start_ns), max(end_ns), sum(max(end_ns - start_ns, 0)), "
            "sum(llm_calls), sum(input_tokens + output_tokens), sum(cost_usd), sum(unpriced_calls), "
            "sum(tokenless_calls), sum(error_count), sum(error_count > 0), "
            "(SELECT coalesce(f.root_name, f.first_name) || char(0) || f.service FROM traces f "
            " WHERE f.session_id = traces.session_id ORDER BY f.start_ns, f.id LIMIT 1) "
            "FROM traces WHERE session_id IS NOT NULL GROUP BY session_id "
            "ORDER BY max(start_ns) DESC, session_id DESC LIMIT ?",
            (-1 if limit is None else limit,),
        )
        worst = self._worst_groundedness([r[0] for r in rows])
        out = []
        for (
            sid,
            runs,
            first,
            last,
            end,
            duration,
            calls,
            tokens,
            cost,
            unpriced,
            tokenless,
            errors,
            failed,
            named,
        ) in rows:
            name, _, service = (named or "").partition("\0")
            out.append(SessionRow(sid, runs, first, last, end, duration, calls, tokens, cost, unpriced, tokenless,
                                  errors, failed, worst.get(sid), name, service))  # fmt: skip
        return out

    def _worst_groundedness(self, session_ids: list[str]) -> dict[str, float]:
        """Session id -> the lowest groundedness score of its runs' evaluations (sessions with one)."""
        worst: dict[str, float] = {}
        for i in range(0, len(session_ids), 500):
            chunk = session_ids[i : i + 500]
            for sid, name, score in self._all(
                "SELECT t.session_id, e.name, e.score FROM traces t JOIN evaluations e ON e.trace_id = t.trace_id "
                f"WHERE t.session_id IN ({','.join('?' * len(chunk))}) AND e.score IS NOT NULL",
                chunk,
            ):
                if is_groundedness(name) and (sid not in worst or score < worst[sid]):
                    worst[sid] = score
        return worst

    def session_runs(self, session_id: str) -> list[TraceRow]:
        rows = self._all(f"SELECT {_TRACE_COLS} FROM traces WHERE session_id = ? ORDER BY start_ns, id", (session_id,))
        return self._with_evaluations([TraceRow(*r) for r in rows])

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
        return self._span_rows(trace_id, None, -1, self._groundedness(trace_id), {})[0]

    def span_pages(self, trace_id: bytes, first: int = FIRST_PAGE, size: int = PAGE) -> Iterator[list[SpanRow]]:
        """Keyset pages in (start_ns, id) order: each page's query reads the trace's index entries, not an OFFSET."""
        grounded = self._groundedness(trace_id)
        texts: dict[str, str] = {}
        page, key = self._span_rows(trace_id, None, first, grounded, texts)
        limit = first
        while page:
            yield page
            if len(page) < limit:
                return
            limit = size
            page, key = self._span_rows(trace_id, key, size, grounded, texts)

    def _span_rows(
        self, trace_id: bytes, after: _SpanKey | None, limit: int, grounded: _Grounded, texts: dict[str, str]
    ) -> tuple[list[SpanRow], _SpanKey | None]:
        """Up to ``limit`` (-1: all) spans after ``after`` in start order, and the key of the last one."""
        cond, params = _after(after)
        rows = self._all(
            f"SELECT {_SPAN_COLS}, start_ns, id FROM spans WHERE trace_id = ?{cond} ORDER BY start_ns, id LIMIT ?",
            (trace_id, *params, limit),
        )
        spans = [_span_row(r[:-2], texts) for r in rows]
        if grounded:
            for span in spans:
                span.groundedness, span.groundedness_estimated = worst_groundedness(grounded.get(span.span_id, []))
        return spans, ((rows[-1][-2], rows[-1][-1]) if rows else None)

    def _groundedness(self, trace_id: bytes) -> _Grounded:
        """Span id -> its groundedness results (score, label) in this trace (worst_groundedness picks one)."""
        grounded: _Grounded = {}
        for span_id, name, score, label in self._all(
            "SELECT span_id, name, score, label FROM evaluations WHERE trace_id = ? AND score IS NOT NULL", (trace_id,)
        ):
            if is_groundedness(name):
                grounded.setdefault(span_id, []).append((score, label))
        return grounded

    def span_detail(self, trace_id: bytes, span_id: bytes) -> SpanDetail | None:
        found = self._details(trace_id, [span_id])
        return found[0] if found else None

    def span_details(self, trace_id: bytes) -> list[SpanDetail]:
        return self._details(trace_id, None)

    def iter_span_details(self, trace_id: bytes, size: int = 2_000) -> Iterator[SpanDetail]:
        """Pages of ``size`` spans (keyset on start_ns, id), each with its own logs and evaluations."""
        key: _SpanKey | None = None
        while True:
            page = self._details(trace_id, None, after=key, limit=size)
            yield from page
            if len(page) < size:
                return
            key = (page[-1].row["start_ns"], page[-1].row["id"])

    def _details(
        self, trace_id: bytes, span_ids: Sequence[bytes] | None, *, after: _SpanKey | None = None, limit: int = -1
    ) -> list[SpanDetail]:
        """Some spans' details (None: every span's, or a page of ``limit`` after ``after``): three queries."""
        some, params = _some_spans(trace_id, span_ids, "s.")
        cond, key = _after(after, "s.")
        records = self._span_records(
            f"s.trace_id = ?{some}{cond} ORDER BY s.start_ns, s.id LIMIT ?", (*params, *key, limit)
        )
        if not records:
            return []
        if span_ids is None and (after is not None or len(records) == limit):
            span_ids = [record["span_id"] for record in records]  # a page: its own logs and evaluations
        logs, evaluations = self._logs_by_span(trace_id, span_ids), self._evaluations_by_span(trace_id, span_ids)
        return [self._decoded(record, logs, evaluations) for record in records]

    def _span_records(self, where: str, params: Sequence) -> list[dict[str, Any]]:
        """Stored spans as rows (``raw`` the span's original bytes) with their resource and scope, ``where`` on ``spans s``."""
        records = self._dicts(
            # (the second "provenance" column, the JSON of an interned one, replaces the first in each record)
            f"SELECT s.*, src.resource, src.scope, src.scope_version, {library_sql(_PROVENANCE, 'src.scope_name')}, "
            f"{_PROVENANCE} AS provenance "
            f"FROM spans s JOIN sources src ON src.id = s.source_id WHERE {where}",
            tuple(params),
        )
        for record, raw in zip(records, self._expand([r["raw"] for r in records]), strict=True):
            record["raw"] = raw
        return records

    @staticmethod
    def _decoded(record: dict[str, Any], logs: dict, evaluations: dict) -> SpanDetail:
        raw, resource, scope = record.pop("raw"), record.pop("resource") or b"", record.pop("scope") or b""
        found = record["span_id"]
        return SpanDetail.decode(record, raw, resource, scope, logs.get(found, []), evaluations.get(found, []))

    def span_details_after(self, after_id: int, limit: int) -> list[SpanDetail]:
        """The next ``limit`` spans in storage order (``spans.id`` > ``after_id``), with their log records.

        For the background indexer (tracetui.jobs.indexer); ``detail.row["id"]`` is the span's ``spans.id``.
        """
        return self.span_details_by_id(f"s.id > ? ORDER BY s.id LIMIT {int(limit)}", (after_id,))

    def span_details_by_id(self, where: str, params: Sequence) -> list[SpanDetail]:
        """Details of the spans ``where`` selects (on ``spans s``), with their log records; no evaluations."""
        records = self._span_records(where, params)
        if not records:
            return []
        keys = [(r["trace_id"], r["span_id"]) for r in records]
        logs: dict[tuple[bytes, bytes], list[dict[str, Any]]] = {}
        for i in range(0, len(keys), 400):  # two parameters a span, under SQLite's 999
            chunk = keys[i : i + 400]
            marks = ",".join("(?, ?)" for _ in chunk)
            for trace_id, span_id, event_name, time_ns, raw in self._all(
                "SELECT trace_id, span_id, event_name, time_ns, raw FROM logs "
                f"WHERE (trace_id, span_id) IN (VALUES {marks}) ORDER BY time_ns, id",
                [value for key in chunk for value in key],
            ):
                logs.setdefault((trace_id, span_id), []).append(log_entry(event_name, time_ns, raw))
        out = []
        for record in records:
            own = {record["span_id"]: logs.get((record["trace_id"], record["span_id"]), [])}
            out.append(self._decoded(record, own, {}))
        return out

    def span_logs(self, trace_id: bytes, span_id: bytes) -> list[dict[str, Any]]:
        """Log records that belong to a span (GenAI events: content, evaluations), oldest first."""
        return self._logs_by_span(trace_id, [span_id]).get(span_id, [])

    def _logs_by_span(self, trace_id: bytes, span_ids: Sequence[bytes] | None) -> dict[bytes, list[dict[str, Any]]]:
        some, params = _some_spans(trace_id, span_ids)
        out: dict[bytes, list[dict[str, Any]]] = {}
        for found, event_name, time_ns, raw in self._all(
            f"SELECT span_id, event_name, time_ns, raw FROM logs WHERE trace_id = ?{some} ORDER BY time_ns, id", params
        ):
            out.setdefault(found, []).append(log_entry(event_name, time_ns, raw))
        return out

    def span_evaluations(self, trace_id: bytes, span_id: bytes) -> list[dict[str, Any]]:
        return self._evaluations_by_span(trace_id, [span_id]).get(span_id, [])

    def _evaluations_by_span(
        self, trace_id: bytes, span_ids: Sequence[bytes] | None
    ) -> dict[bytes, list[dict[str, Any]]]:
        """Each result once (one may arrive as a span event and as a log record), its routes joined."""
        some, params = _some_spans(trace_id, span_ids)
        out: dict[bytes, list[dict[str, Any]]] = {}
        for found, name, score, label, explanation, source in self._all(
            "SELECT span_id, name, score, label, explanation, group_concat(source, ' + ') FROM ("
            f"SELECT * FROM evaluations WHERE trace_id = ?{some} ORDER BY time_ns, id) "
            "GROUP BY span_id, name, score, label ORDER BY min(time_ns)",
            params,
        ):
            out.setdefault(found, []).append(
                {"name": name, "score": score, "label": label, "explanation": explanation, "source": source}
            )
        return out

    def stored_spans(self, trace_id: bytes) -> list[StoredSpan]:
        rows = self._all(
            "SELECT s.span_id, s.raw, src.resource, src.scope, src.schema_url "
            "FROM spans s JOIN sources src ON src.id = s.source_id "
            "WHERE s.trace_id = ? ORDER BY s.start_ns, s.id",
            (trace_id,),
        )
        raws = self._expand([row[1] for row in rows])
        return [
            StoredSpan(span_id, raw, resource or b"", scope or b"", url or "")
            for (span_id, _, resource, scope, url), raw in zip(rows, raws, strict=True)
        ]

    def stored_logs(self, trace_id: bytes) -> list[StoredLog]:
        rows = self._all(
            "SELECT l.span_id, l.event_name, l.raw, src.resource, src.scope, src.schema_url "
            "FROM logs l JOIN sources src ON src.id = l.source_id "
            "WHERE l.trace_id = ? ORDER BY l.time_ns, l.id",
            (trace_id,),
        )
        return [StoredLog(span_id, event, raw, resource or b"", scope or b"", url or "")
                for span_id, event, raw, resource, scope, url in rows]  # fmt: skip

    # --- statistics (tracetui.store.stats_sql) ---------------------------------------------

    def llm_calls(
        self,
        by: str,
        *,
        since_ns: int | None = None,
        flt: Filter | None = None,
        route_attribute: str | None = None,
        span_ids: bool = True,
    ) -> dict[str, list[CallFacts]]:
        with self._lock:
            return stats_sql.llm_calls(
                self._conn, by, since_ns=since_ns, flt=flt, route_attribute=route_attribute, span_ids=span_ids
            )

    def call_figures(
        self, by: str, *, since_ns: int | None = None, flt: Filter | None = None, route_attribute: str | None = None
    ) -> list[GroupFigures] | None:
        if by == "route" and route_attribute:
            return None  # the rollup keeps no span attributes: tracetui.query.stats scans the calls
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'span_count'").fetchone()
            if int(row[0] if row and row[0] else 0) < self.exact_below_spans:
                return None  # a scan is cheap here, and its percentiles exact
            # None for a filter on more than the grouping dimensions (rollup.CUBE_FIELDS): a scan, too
            return rollup.figures(self._conn, by, since_ns, flt)

    def cohort_calls(
        self, *, since_ns: int | None = None, until_ns: int | None = None, flt: Filter | None = None
    ) -> list[CohortCall]:
        with self._lock:
            return stats_sql.cohort_calls(self._conn, since_ns=since_ns, until_ns=until_ns, flt=flt)

    def first_calls(
        self, *, since_ns: int | None = None, until_ns: int | None = None, flt: Filter | None = None
    ) -> dict[bytes, int | None]:
        with self._lock:
            return stats_sql.first_calls(self._conn, since_ns=since_ns, until_ns=until_ns, flt=flt)

    def evaluation_results(self, trace_ids: set[bytes]) -> list[EvaluationResult]:
        with self._lock:
            return stats_sql.evaluation_results(self._conn, trace_ids)

    def filter_note(self, flt: Filter) -> str | None:
        return None  # every term is decided over every trace

    def groundedness_scores(self) -> dict[tuple[bytes, bytes], list[float]]:
        with self._lock:
            return stats_sql.groundedness_scores(self._conn)

    def histogram_points(self, names: list[str], since_ns: int | None = None) -> list[HistogramPoint]:
        with self._lock:
            return stats_sql.histogram_points(self._conn, names, since_ns)

"""A :class:`~tracetui.model.reader.Reader` over the ClickHouse exporter's tables.

The database does the heavy work, Python only what is on screen:

* **The list** is one query over root spans (``ParentSpanId = ''``), newest
  first, the filter compiled to parameterized SQL (tracetui.clickhouse.filter_sql).
  For the page it returns, the trace-id table (``<traces>_trace_id_ts``, filled
  by the exporter's materialized view) gives each trace's time range, so the
  queries that follow read only the partitions those traces live in:
  aggregates per trace (span count, errors, bounds, first span) computed by
  ClickHouse, then the page's *call* spans (model, tool, agent, HTTP and
  evaluation spans, found by their attribute keys) and every span's parent id,
  which go through tracetui's own decoder, normalizer and timing analysis for
  tokens, cost, the time split, retries, fallbacks and badges.
* **One trace** is read whole (its spans and log records) and held in a
  :class:`~tracetui.query.memory.MemoryReader`, so the trace view, the detail
  pane, export and ``spans --json`` are computed exactly as for spans received
  over OTLP. The last few traces opened are kept until new data arrives.
* **Statistics** are ClickHouse ``quantiles`` per group over the window
  (:meth:`ClickHouseReader.call_figures`); only the evaluations are joined in Python.

Arrival order: ClickHouse keeps none, so a trace's ``seq`` is its root span's
start (ns). The list's horizon is therefore a time: runs that arrive late with
an older start appear in their place rather than above the horizon.

Every query goes through one lock: the HTTP client keeps one session, which
ClickHouse does not let two queries use at once.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any, Protocol

from tracetui.clickhouse import filter_sql
from tracetui.clickhouse.convert import ERROR_CODES, LOG_COLUMNS, TRACE_COLUMNS, logs_request, spans_request
from tracetui.clickhouse.schema import TableShape, quote_identifier
from tracetui.llm import pricing
from tracetui.llm.evals import EVENT_NAME as EVALUATION_EVENT
from tracetui.llm.evals import FEEDBACK_EVENTS, FEEDBACK_SCORE_KEYS, SOURCE_SPAN_EVENT
from tracetui.llm.semconv import attribute_sources
from tracetui.model.config import ContentPolicy
from tracetui.model.filter import Filter
from tracetui.model.reader import (
    FIRST_PAGE,
    GROUPINGS,
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
from tracetui.model.rows import COL
from tracetui.model.views import Counters, SessionRow, SpanDetail, SpanRow, TraceRow
from tracetui.otlp.signals import decode_request
from tracetui.query.filter_match import matches_span
from tracetui.query.memory import MemoryReader
from tracetui.query.sessions import group_runs
from tracetui.store.batch import MAX_ANALYZED_SPANS, analyze_rows, no_timing


class Connection(Protocol):
    """What the reader needs of a connection (tracetui.clickhouse.connect.Connection, or one borrowed)."""

    @property
    def client(self) -> Any: ...

    def close(self) -> None: ...


#: The span columns read back for decoding, in TRACE_COLUMNS order (times as integer nanoseconds).
SPAN_COLUMNS = tuple(
    "toUnixTimestamp64Nano(Timestamp)" if name == "Timestamp"
    else "arrayMap(t -> toUnixTimestamp64Nano(t), `Events.Timestamp`)" if name == "Events.Timestamp"
    else f"`{name}`"
    for name in TRACE_COLUMNS
)  # fmt: skip
SPAN_SELECT = ", ".join(SPAN_COLUMNS)
#: Attributes that hold message content (prompts, completions, tool arguments and results), which no list figure
#: reads (tracetui.llm.semconv reads scalar fields only; the analysis compares inputs only after a failed call):
#: left out of the list's page (ClickHouse ``match``, RE2).
CONTENT_KEYS = (
    r"^(gen_ai\.(input|output)\.messages|gen_ai\.system_instructions|gen_ai\.(prompt|completion)(\.\d+\.content)?"
    r"|llm\.(input|output)_messages\.\d+\.message\.content|input\.value|output\.value"
    r"|traceloop\.entity\.(input|output)|ai\.prompt(\.messages)?|ai\.response\.text|gen_ai\.tool\.call\.(arguments|result))$"
)
#: With terms only Python decides (cost, retry, fallback, trace token totals), the newest runs matching the
#: rest of the filter that are read and decided (their rows built in pages of RESIDUAL_PAGE).
RESIDUAL_SCAN = 1000
RESIDUAL_PAGE = 200
#: Most spans read for evaluation results kept in attributes (evaluator spans): those forms are rare beside
#: OTel's events and log records, which SQL reads whatever their number.
EXTRA_EVALUATION_SPANS = 100_000
#: Traces whose evaluation results one query reads (their ids are one bound parameter: ~70 KB).
EVALUATION_CHUNK = 2000
#: Runs the sessions view reads at most (their rows are built as the list's are: tokens and cost come from
#: our own analysis of each run's calls, not from SQL); the most recently active sessions come first.
SESSION_RUN_SCAN = 5000
#: Where a cohort row's token counts start (filter_sql.COHORT_COLUMNS).
_USAGE_AT = filter_sql.COHORT_COLUMNS.index(filter_sql.USAGE[0])
#: Log record names that carry evaluation results or user feedback (tracetui.llm.evals.from_log_record).
_RESULT_LOG_NAMES = [EVALUATION_EVENT, *sorted(FEEDBACK_EVENTS)]
#: Seconds a data version is taken as current (the UI's watcher polls every 0.2 s with a reader of its own).
VERSION_TTL = 0.2
#: List rows kept built (a few screens' worth, and the traces a filter scanned).
_CACHED_ROWS = 5000
#: Traces kept decoded in memory (the one on screen, and the ones just left).
_CACHED_TRACES = 4
#: How late a span may reach the table (the Collector's batches, clocks) and still be counted in the header's
#: LLM calls and tokens: they count from this long before the reader's first look, and a minute is final this
#: long after it ends.
TOTALS_LAG_NS = 10 * 60 * 1_000_000_000
_MINUTE_NS = 60 * 1_000_000_000
#: Seconds added on each side of the trace-id table's range: it holds whole seconds, and the
#: start of the last span, not its end (the exporter's materialized view).
_PAD_NS = 1_000_000_000


def _qualified(database: str, table: str) -> str:
    return f"{quote_identifier(database)}.{quote_identifier(table)}"


def _hex(trace_id: bytes) -> str:
    return trace_id.hex()


class ClickHouseReader:
    """Read-only access to the exporter's tables (implements tracetui.model.reader.Reader)."""

    def __init__(
        self, conn: Connection, shape: TableShape, threshold: float = 0.5, lock: threading.Lock | None = None
    ) -> None:
        self.threshold = threshold
        self._conn = conn
        self._client = conn.client
        self._shape = shape
        #: Readers of one connection share its lock (one HTTP session: one query at a time).
        self._lock = lock or threading.Lock()
        self._traces = _qualified(shape.database, shape.traces_table)
        self._ids = _qualified(shape.database, shape.trace_id_table) if shape.trace_id_table else None
        self._logs = _qualified(shape.database, shape.logs_table) if shape.logs_table else None
        self._log_columns = [name for name in LOG_COLUMNS if name in shape.log_columns]
        self._log_select = ", ".join(
            "toUnixTimestamp64Nano(Timestamp)" if name == "Timestamp" else f"`{name}`" for name in self._log_columns
        )
        self._tables = filter_sql.Tables(self._traces, self._logs)
        spec = getattr(conn, "spec", None)
        where = spec.display() if spec is not None and hasattr(spec, "display") else "ClickHouse"
        #: What the header says: the table and where it is (never the password).
        self._label = f"{shape.database}.{shape.traces_table} @ {where}"
        self._cache: OrderedDict[bytes, MemoryReader] = OrderedDict()
        self._cache_version: int | None = None
        #: trace id -> its root's start, for the traces in _cache (see trace()).
        self._seqs: dict[bytes, int] = {}
        self._counters: tuple[int, Counters] | None = None
        #: The header's LLM calls and tokens count from here (ns; set on the first counters()), and
        #: (counted up to, calls, tokens) of the minutes already final.
        self._totals_since: int | None = None
        self._totals_closed: tuple[int, int, int] = (0, 0, 0)
        self._decided_cache: dict[tuple, list[TraceRow]] = {}
        self._version: tuple[float, int] | None = None
        self._extra: tuple[int, filter_sql.Tables] | None = None
        self._evaluated: tuple[int, set[str]] | None = None
        #: trace id hex -> (what the row was built from, the row): see _trace_rows.
        self._rows_cache: dict[str, tuple[tuple, TraceRow]] = {}

    def close(self) -> None:
        self._conn.close()

    # --- queries ------------------------------------------------------------------------------

    def _rows(self, sql: str, params: dict[str, Any] | None = None) -> Sequence[Sequence[Any]]:
        with self._lock:
            return self._client.query(sql, parameters=params or {}).result_rows

    def _value(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        rows = self._rows(sql, params)
        return rows[0][0] if rows else None

    def _query_tables(self) -> filter_sql.Tables:
        """The tables, with the evaluation results only Python reads (found again when data arrives)."""
        version = self.data_version()
        with self._lock:
            if self._extra is not None and self._extra[0] == version:
                return self._extra[1]
        found = []
        spans = self._rows(
            f"SELECT {SPAN_SELECT} FROM {self._traces} PREWHERE {filter_sql.evaluation_keys_sql()} "
            f"WHERE {filter_sql.evaluation_attributes_sql()} "
            f"LIMIT 1 BY TraceId, SpanId LIMIT {EXTRA_EVALUATION_SPANS}"
        )
        if spans:
            decoded = decode_request("traces", spans_request([dict(zip(TRACE_COLUMNS, r, strict=True)) for r in spans]))
            for trace_id, span_id, _response, name, score, _label, _text, source, _time in decoded.evaluations:
                if source != SOURCE_SPAN_EVENT and span_id and score is not None and math.isfinite(score):
                    found.append((trace_id.hex(), span_id.hex(), name, float(score)))
        tables = self._tables._replace(extra_scores=tuple(found))
        with self._lock:
            self._extra = (version, tables)
        return tables

    # --- change detection and the header ------------------------------------------------------

    def data_version(self) -> int:
        """Rows in the tables: a trivial count, answered from the parts' metadata. Asked again at most every
        VERSION_TTL seconds: the methods that read one trace ask it on each call, a cursor move each."""
        now = time.monotonic()
        with self._lock:
            if self._version is not None and now - self._version[0] < VERSION_TTL:
                return self._version[1]
        logs = f" + (SELECT count() FROM {self._logs})" if self._logs else ""
        version = int(self._value(f"SELECT (SELECT count() FROM {self._traces}){logs}") or 0)
        with self._lock:
            self._version = (now, version)
        return version

    def content_policy(self) -> ContentPolicy:
        """The Collector records no policy: the data is kept and copied as it was sent."""
        return ContentPolicy()

    def counters(self) -> Counters:
        """Spans and runs in the table (both answered from a count over one column or the parts' metadata), its
        size, and the LLM calls and tokens of the spans that started since TOTALS_LAG_NS before this reader's
        first call (``Counters.totals_since_ns``): the header shows what arrived since the UI started, and
        counting those over the whole table is a scan of every span's attributes (9 s at 10M spans)."""
        version = self.data_version()
        if self._counters is not None and self._counters[0] == version:
            return self._counters[1]
        spans, roots = self._rows(
            f"SELECT (SELECT count() FROM {self._traces}), (SELECT count() FROM {self._traces} WHERE ParentSpanId = '')"
        )[0]
        calls, tokens = self._recent_totals()
        size = self._value(
            "SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND database = {db:String} "
            "AND table IN {tables:Array(String)}",
            {
                "db": self._shape.database,
                "tables": [t for t in (self._shape.traces_table, self._shape.logs_table) if t],
            },
        )
        counters = Counters(span_count=int(spans), trace_count=int(roots), receiver=None, db_bytes=int(size or 0),
                            llm_calls=calls, tokens=tokens, source=self._label, costed=False,
                            totals_since_ns=self._totals_since)  # fmt: skip
        self._counters = (version, counters)
        return counters

    def _recent_totals(self) -> tuple[int, int]:
        """(LLM calls, tokens) of the spans that started at or after ``_totals_since``, per minute: the minutes
        that ended more than TOTALS_LAG_NS ago are counted once and kept, only the rest is read again."""
        now = time.time_ns()
        if self._totals_since is None:
            self._totals_since = now - TOTALS_LAG_NS
            self._totals_closed = (self._totals_since, 0, 0)
        since, calls, tokens = self._totals_closed
        found = self._rows(
            f"SELECT intDiv(toUnixTimestamp64Nano(Timestamp), {_MINUTE_NS}) AS m, "
            f"countIf({filter_sql.is_model_call_sql()}), sum(ifNull({filter_sql.tokens_sql()}, 0)) "
            f"FROM {self._traces} WHERE Timestamp >= fromUnixTimestamp64Nano({{since:Int64}}) GROUP BY m ORDER BY m",
            {"since": since},
        )
        closed_before = (now - TOTALS_LAG_NS) // _MINUTE_NS * _MINUTE_NS
        open_calls = open_tokens = 0
        for minute, n, t in found:
            if (int(minute) + 1) * _MINUTE_NS <= closed_before:
                calls, tokens, since = calls + int(n), tokens + int(t), (int(minute) + 1) * _MINUTE_NS
            else:
                open_calls, open_tokens = open_calls + int(n), open_tokens + int(t)
        self._totals_closed = (max(since, closed_before), calls, tokens)
        return calls + open_calls, tokens + open_tokens

    # --- the trace list -----------------------------------------------------------------------

    def _list_where(self, horizon: int | None, flt: Filter | None, newer: bool = False) -> tuple[str, dict[str, Any]]:
        clauses, params = ["ParentSpanId = ''"], {}
        if horizon is not None:
            clauses.append(f"Timestamp {'>' if newer else '<='} fromUnixTimestamp64Nano({{horizon:Int64}})")
            params["horizon"] = horizon
        if flt is not None and not flt.is_empty():
            compiled = filter_sql.trace_condition(flt, self._query_tables())
            if compiled.sql:
                clauses.append(compiled.sql)
                params.update(compiled.params)
        return " AND ".join(clauses), params

    def max_seq(self) -> int:
        found = self._rows(
            f"SELECT toUnixTimestamp64Nano(max(Timestamp)), count() FROM {self._traces} WHERE ParentSpanId = ''"
        )
        return int(found[0][0]) if found and found[0][1] else 0

    def count_traces(self, horizon: int | None = None, flt: Filter | None = None, cap: int | None = None) -> int:
        decided = self._decided(horizon, flt)
        if decided is not None:
            count = len(decided)
        else:
            where, params = self._list_where(horizon, flt)
            count = int(self._value(f"SELECT uniqExact(TraceId) FROM {self._traces} WHERE {where}", params) or 0)
        return count if cap is None else min(count, cap)

    def count_newer(self, horizon: int, flt: Filter | None = None) -> int:
        decided = self._decided(horizon, flt, newer=True)
        if decided is not None:
            return len(decided)
        where, params = self._list_where(horizon, flt, newer=True)
        return int(self._value(f"SELECT uniqExact(TraceId) FROM {self._traces} WHERE {where}", params) or 0)

    def _roots(self, where: str, params: dict[str, Any], offset: int, limit: int) -> list[tuple[bytes, int]]:
        """(trace id, root start ns) of one page of the list, newest first."""
        page = "" if limit < 0 else f" LIMIT {int(limit)} OFFSET {int(offset)}"
        found = self._rows(
            f"SELECT TraceId, toUnixTimestamp64Nano(Timestamp) FROM {self._traces} WHERE {where} "
            f"ORDER BY Timestamp DESC, TraceId DESC LIMIT 1 BY TraceId{page}",
            params,
        )
        return [(bytes.fromhex(t), int(ts)) for t, ts in found if t]

    def _decided(self, horizon: int | None, flt: Filter | None, newer: bool = False) -> list[TraceRow] | None:
        """With Python-only terms in ``flt``: the matching rows among the newest RESIDUAL_SCAN runs that match
        the rest of it (kept until new data arrives); None without such terms."""
        residual = filter_sql.residual(flt) if flt is not None else None
        if residual is None:
            return None
        key = (self.data_version(), horizon, newer, flt.text if flt is not None else "")
        with self._lock:
            found = self._decided_cache.get(key)
        if found is not None:
            return found
        where, params = self._list_where(horizon, flt, newer)
        roots = self._roots(where, params, 0, RESIDUAL_SCAN)
        found = []
        for i in range(0, len(roots), RESIDUAL_PAGE):
            found += self._trace_rows(roots[i : i + RESIDUAL_PAGE], residual)
        with self._lock:
            if len(self._decided_cache) >= 8:
                self._decided_cache.clear()
            self._decided_cache[key] = found
        return found

    def traces(
        self, offset: int = 0, limit: int = 100, horizon: int | None = None, flt: Filter | None = None
    ) -> list[TraceRow]:
        """One page of the list, newest first (with Python-only terms: a page of :meth:`_decided`)."""
        decided = self._decided(horizon, flt)
        if decided is not None:
            return decided[offset:] if limit < 0 else decided[offset : offset + limit]
        where, params = self._list_where(horizon, flt)
        return self._trace_rows(self._roots(where, params, offset, limit))

    def trace(self, trace_id: bytes) -> TraceRow | None:
        held = self._held(trace_id)
        row = held.trace(trace_id) if held is not None else None
        if row is None or held is None:
            return None
        seq = self._seqs.get(trace_id)
        if seq is None:
            # seq is the root's start, as in the list (the held trace has it: no second look-up); found once
            # per held trace (10,000 spans as rows take ~30 ms, and the UI asks again on each data change)
            roots = [span.start_ns for span in held.spans(trace_id) if span.parent_span_id is None]
            seq = self._seqs[trace_id] = min(roots) if roots else row.start_ns
        return replace(row, seq=seq)

    def _root_start(self, trace_id: bytes) -> int | None:
        found = self._value(
            f"SELECT toUnixTimestamp64Nano(min(Timestamp)) FROM {self._traces} "
            "WHERE TraceId = {t:String} AND ParentSpanId = ''" + self._range_clause(trace_id),
            {"t": _hex(trace_id)},
        )
        return int(found) if found else None

    def neighbor_trace(self, trace_id: bytes, *, newer: bool, horizon: int | None = None) -> bytes | None:
        start = self._root_start(trace_id)
        if start is None:
            return None
        params: dict[str, Any] = {"ts": start, "t": _hex(trace_id)}
        beyond = ""
        if horizon is not None:
            beyond, params["horizon"] = " AND Timestamp <= fromUnixTimestamp64Nano({horizon:Int64})", horizon
        at = "fromUnixTimestamp64Nano({ts:Int64})"
        if newer:
            cond, order = f"(Timestamp > {at} OR (Timestamp = {at} AND TraceId > {{t:String}}))", "ASC"
        else:
            cond, order = f"(Timestamp < {at} OR (Timestamp = {at} AND TraceId < {{t:String}}))", "DESC"
        found = self._value(
            f"SELECT TraceId FROM {self._traces} WHERE ParentSpanId = '' AND {cond}{beyond} "
            f"ORDER BY Timestamp {order}, TraceId {order} LIMIT 1",
            params,
        )
        return bytes.fromhex(found) if found else None

    def trace_ids_starting(self, prefix_hex: str, limit: int = 2) -> list[bytes]:
        text = prefix_hex.strip().lower()
        if not text or len(text) > 32 or any(c not in "0123456789abcdef" for c in text):
            return []
        table = self._ids or self._traces
        found = self._rows(
            f"SELECT DISTINCT TraceId FROM {table} WHERE startsWith(TraceId, {{p:String}}) ORDER BY TraceId LIMIT {int(limit)}",
            {"p": text},
        )
        return [bytes.fromhex(t) for (t,) in found if t]

    def session_totals(self, session_id: str) -> dict[str, Any]:
        session = filter_sql.session_sql()
        roots = self._rows(
            f"SELECT TraceId, toUnixTimestamp64Nano(min(Timestamp)) FROM {self._traces} "
            f"WHERE ParentSpanId = '' AND {session} = {{s:String}} GROUP BY TraceId LIMIT 10000",
            {"s": session_id},
        )
        runs = self._trace_rows([(bytes.fromhex(t), int(ts)) for t, ts in roots if t])
        costs = [t.cost_usd for t in runs if t.cost_usd is not None]
        return {"session_id": session_id, "runs": len(runs), "llm_calls": sum(t.llm_calls for t in runs),
                "tokens": sum(t.input_tokens + t.output_tokens for t in runs),
                "cost_usd": math.fsum(costs) if costs else None,
                "unpriced_calls": sum(t.unpriced_calls for t in runs)}  # fmt: skip

    def sessions(self, limit: int | None = 1000) -> list[SessionRow]:
        """The most recently active sessions (by their root spans' session id), added up from the rows of
        their runs: at most SESSION_RUN_SCAN runs are read, so the oldest sessions of a long list may be left
        out or short of runs."""
        session = filter_sql.session_sql()
        page = "" if limit is None else f" LIMIT {int(limit)}"
        picked = self._rows(
            f"SELECT {session} AS s FROM {self._traces} WHERE ParentSpanId = '' AND isNotNull(s) "
            f"GROUP BY s ORDER BY max(Timestamp) DESC, s DESC{page}"
        )
        ids = [sid for (sid,) in picked]
        if not ids:
            return []
        runs = self._session_roots(f"{session} IN {{ids:Array(String)}}", {"ids": ids})
        return group_runs(runs, limit)

    def session_runs(self, session_id: str) -> list[TraceRow]:
        return self._session_roots(f"{filter_sql.session_sql()} = {{s:String}}", {"s": session_id})

    def _session_roots(self, condition: str, params: dict[str, Any]) -> list[TraceRow]:
        """The runs whose root span meets ``condition`` (a session id test), oldest first, each with its session."""
        session = filter_sql.session_sql()
        found = self._rows(
            f"SELECT TraceId, toUnixTimestamp64Nano(min(Timestamp)), any({session}) FROM {self._traces} "
            f"WHERE ParentSpanId = '' AND {condition} GROUP BY TraceId "
            f"ORDER BY min(Timestamp), TraceId LIMIT {SESSION_RUN_SCAN}",
            params,
        )
        roots = [(bytes.fromhex(t), int(ts)) for t, ts, _ in found if t]
        sessions = {bytes.fromhex(t): sid for t, _, sid in found if t}
        rows: list[TraceRow] = []
        for i in range(0, len(roots), RESIDUAL_PAGE):
            rows += self._trace_rows(roots[i : i + RESIDUAL_PAGE])
        return [replace(row, session_id=sessions[row.trace_id]) for row in rows]

    # --- the rows of a page -------------------------------------------------------------------

    def _bounds(self, ids: list[str], earliest_root: int) -> tuple[int, int | None]:
        """Nanosecond range holding every span of these traces, from the trace-id table (padded)."""
        if self._ids is None:
            return earliest_root - 3600 * _PAD_NS, None  # no lookup table: an hour of clock skew, no end
        found = self._rows(
            f"SELECT toUnixTimestamp(min(Start)), toUnixTimestamp(max(End)) FROM {self._ids} "
            "WHERE TraceId IN {ids:Array(String)}",
            {"ids": ids},
        )
        if not found or found[0][0] is None or found[0][1] == 0:
            return earliest_root - 3600 * _PAD_NS, None
        return int(found[0][0]) * _PAD_NS - _PAD_NS, int(found[0][1]) * _PAD_NS + 2 * _PAD_NS

    def _range_clause(self, trace_id: bytes) -> str:
        """``AND Timestamp BETWEEN ...`` for one trace, from the trace-id table (no clause without one)."""
        if self._ids is None:
            return ""
        found = self._rows(
            f"SELECT toUnixTimestamp(min(Start)), toUnixTimestamp(max(End)) FROM {self._ids} WHERE TraceId = {{t:String}}",
            {"t": _hex(trace_id)},
        )
        if not found or found[0][1] == 0:
            return ""
        lo, hi = int(found[0][0]) - 1, int(found[0][1]) + 2
        return f" AND Timestamp BETWEEN toDateTime64({lo}, 9) AND toDateTime64({hi}, 9)"

    def _trace_rows(self, roots: list[tuple[bytes, int]], residual: Filter | None = None) -> list[TraceRow]:
        """The list rows of these traces (root start ns each), in the order given; with ``residual``, only
        the rows whose trace matches those (Python-only) terms.

        A row built once is kept while its trace's span count, bounds and evaluation log records stay
        the same (they are read for every page anyway): scrolling back, refiltering and the live list
        rebuild only the runs that changed.
        """
        if not roots:
            return []
        ids = [_hex(trace_id) for trace_id, _ in roots]
        lo, hi = self._bounds(ids, min(ts for _, ts in roots))
        window = "Timestamp >= fromUnixTimestamp64Nano({lo:Int64})" + (
            "" if hi is None else " AND Timestamp <= fromUnixTimestamp64Nano({hi:Int64})"
        )
        params = {"ids": ids, "lo": lo, "hi": hi}
        within = f"TraceId IN {{ids:Array(String)}} AND {window}"
        errors = ", ".join(f"'{code}'" for code in ERROR_CODES)
        aggregates = {
            row[0]: row[1:]
            for row in self._rows(
                "SELECT TraceId, toUnixTimestamp64Nano(min(Timestamp)), max(toUnixTimestamp64Nano(Timestamp) + Duration), "
                f"uniqExact(SpanId), uniqExactIf(SpanId, StatusCode IN ({errors})), argMin(SpanName, Timestamp) "
                f"FROM {self._traces} WHERE {within} GROUP BY TraceId",
                params,
            )
        }
        logs = self._evaluation_logs(within, params)
        log_counts: dict[str, int] = {}
        for log in logs:
            log_counts[log["TraceId"]] = log_counts.get(log["TraceId"], 0) + 1
        keys = {t: (*found, log_counts.get(t, 0)) for t, found in aggregates.items()}
        with self._lock:
            built = {
                t: self._rows_cache[t][1]
                for t in ids
                if t in self._rows_cache and self._rows_cache[t][0] == keys.get(t)
            }
        missing = [t for t in ids if t in aggregates and t not in built]
        page = None
        if missing or residual is not None:
            failed = [t for t, found in aggregates.items() if found[3]]
            wanted = missing if residual is None else [t for t in ids if t in aggregates]
            page, parents = self._page(wanted, window, params, logs, failed)
            for hexed in missing:
                trace_id = bytes.fromhex(hexed)
                built[hexed] = self._row(page, parents.get(trace_id, {}), trace_id, aggregates[hexed])
            with self._lock:
                if len(self._rows_cache) > _CACHED_ROWS:
                    self._rows_cache.clear()
                self._rows_cache.update((t, (keys[t], built[t])) for t in missing)
        out = []
        for trace_id, root_start in roots:
            row = built.get(_hex(trace_id))
            if row is None:
                continue
            row = replace(row, seq=root_start)
            if residual is None or filter_sql.matches_trace_row(residual, row, lambda t: _call_dicts(page, t)):  # type: ignore[arg-type]
                out.append(row)
        return out

    def _page(
        self, ids: list[str], window: str, params: dict[str, Any], logs: list[dict[str, Any]], full: list[str]
    ) -> tuple[MemoryReader, dict[bytes, dict[bytes, bytes | None]]]:
        """Every span of these traces, decoded with their evaluation log records: the call spans (and roots) whole
        but for their message content (kept in the traces of ``full``, those with a failed span, where the
        analysis compares the inputs of a failed call and the next one), the other spans without attributes,
        events or links (the analysis needs them in the tree only). So the page's own analysis is the trace's,
        done once. Also the parent of every span, by trace."""
        params = {**params, "ids": ids, "full": full}
        within = f"TraceId IN {{ids:Array(String)}} AND {window}"
        call = f"(ParentSpanId = '' OR {filter_sql.call_span_sql()})"
        content = f"mapFilter((k, v) -> NOT match(k, {filter_sql.lit(CONTENT_KEYS)}), SpanAttributes)"
        kept = {
            "SpanAttributes": f"if({call}, if(TraceId IN {{full:Array(String)}}, SpanAttributes, {content}), map())",
            **{name: f"if({call}, `{name}`, [])" for name in TRACE_COLUMNS if name.startswith(("Events.", "Links."))},
            "Events.Timestamp": f"if({call}, arrayMap(t -> toUnixTimestamp64Nano(t), `Events.Timestamp`), [])",
        }
        select = ", ".join(kept.get(name, column) for name, column in zip(TRACE_COLUMNS, SPAN_COLUMNS, strict=True))
        spans = self._rows(f"SELECT {select} FROM {self._traces} WHERE {within} LIMIT 1 BY TraceId, SpanId", params)
        parents: dict[bytes, dict[bytes, bytes | None]] = {}
        trace_at, span_at, parent_at = (TRACE_COLUMNS.index(n) for n in ("TraceId", "SpanId", "ParentSpanId"))
        for row in spans:
            parents.setdefault(bytes.fromhex(row[trace_at]), {})[bytes.fromhex(row[span_at])] = (
                bytes.fromhex(row[parent_at]) if row[parent_at] else None
            )
        wanted = set(ids)
        # each form let go as soon as the next is made: the page's peak memory is the decoded page, not all of them
        request = spans_request([dict(zip(TRACE_COLUMNS, r, strict=True)) for r in spans])
        del spans
        data = request.SerializeToString()
        del request
        page = MemoryReader(self.threshold)
        page.add(
            [data],
            [logs_request([log for log in logs if log["TraceId"] in wanted]).SerializeToString()] if logs else [],
        )
        return page, parents

    def _row(
        self, page: MemoryReader, parents: dict[bytes, bytes | None], trace_id: bytes, aggregates: Sequence[Any]
    ) -> TraceRow:
        """One list row: ClickHouse's aggregates, our analysis of the trace's calls, the evaluations' badges."""
        start, end, span_count, errors_found, first_name = aggregates
        held = page.trace(trace_id)
        rows = page.decoded_rows(trace_id)
        has_kinds = any(r[COL["llm_kind"]] is not None for r in rows)
        has_calls = has_kinds or any(r[COL["http_status"]] is not None for r in rows)
        timing: dict[str, Any] = {}
        if held is None or not has_kinds or len(rows) > MAX_ANALYZED_SPANS:  # the page analyzed none of it
            timing = (analyze_rows(rows, int(start), int(end), parents).trace_values if has_calls
                      else no_timing(int(start), int(end)))  # fmt: skip
        base = held if held is not None else TraceRow(0, trace_id, None, first_name, "", 0, 0, 0, 0, 0, 0, 0, None)
        return replace(
            base, first_name=first_name, start_ns=int(start), end_ns=int(end),
            span_count=int(span_count), error_count=int(errors_found), **timing,
        )  # fmt: skip

    def _evaluation_logs(self, within: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Log records of these traces that carry evaluation results (OTel's ``gen_ai.evaluation.result``)."""
        if self._logs is None:
            return []
        named = "EventName = {ev:String} OR " if "EventName" in self._log_columns else ""
        rows = self._rows(
            f"SELECT {self._log_select} FROM {self._logs} WHERE TraceId IN {{ids:Array(String)}} AND "
            f"({named}LogAttributes['event.name'] = {{ev:String}} OR LogAttributes['event_name'] = {{ev:String}})",
            {**params, "ev": EVALUATION_EVENT},
        )
        return [dict(zip(self._log_columns, r, strict=True)) for r in rows]

    # --- one trace ----------------------------------------------------------------------------

    def _held(self, trace_id: bytes) -> MemoryReader | None:
        """The whole trace, decoded (cached until new data arrives)."""
        version = self.data_version()
        if version != self._cache_version:
            self._cache.clear()
            self._seqs.clear()
            self._cache_version = version
        held = self._cache.get(trace_id)
        if held is not None:
            self._cache.move_to_end(trace_id)
            return held
        params = {"t": _hex(trace_id)}
        within = "TraceId = {t:String}" + self._range_clause(trace_id)
        spans = self._rows(f"SELECT {SPAN_SELECT} FROM {self._traces} WHERE {within} LIMIT 1 BY SpanId", params)
        if not spans:
            return None
        logs = []
        if self._logs is not None:
            logs = [dict(zip(self._log_columns, r, strict=True)) for r in self._rows(
                f"SELECT {self._log_select} FROM {self._logs} WHERE TraceId = {{t:String}} ORDER BY Timestamp", params
            )]  # fmt: skip
        # each form let go as soon as the next is made (a 10,000-span trace: ~60 MB less at the peak)
        request = spans_request([dict(zip(TRACE_COLUMNS, r, strict=True)) for r in spans])
        del spans
        data = request.SerializeToString()
        del request
        held = MemoryReader(self.threshold)
        held.add([data], [logs_request(logs).SerializeToString()] if logs else [])
        del data
        self._cache[trace_id] = held
        while len(self._cache) > _CACHED_TRACES:
            self._seqs.pop(self._cache.popitem(last=False)[0], None)
        return held

    def spans(self, trace_id: bytes) -> list[SpanRow]:
        held = self._held(trace_id)
        return held.spans(trace_id) if held is not None else []

    def span_pages(self, trace_id: bytes, first: int = FIRST_PAGE, size: int = PAGE) -> Iterator[list[SpanRow]]:
        """The trace read whole (one query), then cut into the protocol's pages."""
        return pages_of(self.spans(trace_id), first, size)

    def span_detail(self, trace_id: bytes, span_id: bytes) -> SpanDetail | None:
        held = self._held(trace_id)
        return held.span_detail(trace_id, span_id) if held is not None else None

    def span_details(self, trace_id: bytes) -> list[SpanDetail]:
        held = self._held(trace_id)
        return held.span_details(trace_id) if held is not None else []

    def iter_span_details(self, trace_id: bytes) -> Iterator[SpanDetail]:
        """The trace's details read whole (the ClickHouse path reads a trace in one go)."""
        return iter(self.span_details(trace_id))

    def span_evaluations(self, trace_id: bytes, span_id: bytes) -> list[dict[str, Any]]:
        held = self._held(trace_id)
        return held.span_evaluations(trace_id, span_id) if held is not None else []

    def matching_span_ids(self, trace_id: bytes, flt: Filter) -> set[bytes]:
        held = self._held(trace_id)
        return held.matching_span_ids(trace_id, flt) if held is not None else set()

    def stored_spans(self, trace_id: bytes) -> list[StoredSpan]:
        held = self._held(trace_id)
        return held.stored_spans(trace_id) if held is not None else []

    def stored_logs(self, trace_id: bytes) -> list[StoredLog]:
        held = self._held(trace_id)
        return held.stored_logs(trace_id) if held is not None else []

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
        """Every call's facts, read with SQL (no Python normalization); the Stats screen uses
        :meth:`call_figures` instead, which leaves the percentiles to ClickHouse."""
        if by not in GROUPINGS:
            raise ValueError(f"cannot group by {by!r} (one of: {', '.join(GROUPINGS)})")
        query = filter_sql.calls_query(self._query_tables(), by, since_ns, flt, route_attribute)
        groups: dict[str, list[CallFacts]] = {}
        for key, *facts in self._rows(query.sql, query.params):
            trace_id, start, duration, error, ttft, rate, span_id = facts
            groups.setdefault(key, []).append((bytes.fromhex(trace_id), int(start), int(duration), int(error),
                                               None if ttft is None else int(ttft), rate, 0, 0, None,
                                               bytes.fromhex(span_id) if span_ids else None))  # fmt: skip
        return groups

    def call_figures(
        self, by: str, *, since_ns: int | None = None, flt: Filter | None = None, route_attribute: str | None = None
    ) -> list[GroupFigures]:
        """Per group, computed by ClickHouse: exact percentiles, rates and means; the cost is priced here
        from token sums per model (prices are linear in tokens). Retries and fallbacks are not known (None):
        telling them needs the calls compared with each other."""
        if by not in GROUPINGS:
            raise ValueError(f"cannot group by {by!r} (one of: {', '.join(GROUPINGS)})")
        query = filter_sql.figures_query(self._query_tables(), by, since_ns, flt, route_attribute)
        out = []
        for key, count, runs, durations, ttfts, rate, errors, grounded, recent, usage in self._rows(
            query.sql, query.params
        ):
            out.append(GroupFigures(
                key=str(key), calls=int(count), runs=int(runs), durations_ns=_three(durations, count),
                ttfts_ns=_three(ttfts, count), tokens_per_s=_finite(rate), errors=int(errors), retries=None,
                fallbacks=None, cost_usd=_priced(usage), groundedness=_finite(grounded),
                recent_ns=tuple(int(d) for d in recent),
            ))  # fmt: skip
        return out

    def first_calls(
        self, *, since_ns: int | None = None, until_ns: int | None = None, flt: Filter | None = None
    ) -> dict[bytes, int | None] | None:
        return first_calls_of(self.cohort_calls(since_ns=since_ns, until_ns=until_ns, flt=flt))

    def cohort_calls(
        self, *, since_ns: int | None = None, until_ns: int | None = None, flt: Filter | None = None
    ) -> list[CohortCall]:
        """The calls of the Stats query (tracetui.clickhouse.filter_sql.cohort_query), each with its cap, output
        tokens, keys and run; the cost is the reported one, else priced here from the call's tokens (as the
        decoder prices a span). Retries and fallbacks are not known (None): telling them needs the calls compared
        with each other. A ``cost`` term is decided here on each call; ``retry`` / ``fallback`` terms cannot be
        (ValueError)."""
        residual = filter_sql.residual(flt, trace_level=False) if flt is not None else None
        if residual is not None and any(t.field != "cost" for t in residual.terms):
            names = ", ".join(dict.fromkeys(str(t.field) for t in residual.terms if t.field != "cost"))
            raise ValueError(f"{names}: this source cannot tell retries and fallbacks apart from other calls")
        query = filter_sql.cohort_query(self._query_tables(), since_ns, until_ns, flt, self._runs_from(since_ns))
        pricer = pricing.pricer()
        found = []
        for row in self._rows(query.sql, query.params):
            trace, span, start, duration, failed, ttft, rate, output, cap, reported, response, request, provider = row[
                :_USAGE_AT
            ]
            usage = row[_USAGE_AT : _USAGE_AT + len(filter_sql.USAGE)]
            run, model, prompt, route = row[_USAGE_AT + len(filter_sql.USAGE) :]
            cost = _finite(reported)
            if cost is None:
                tokens = {name: int(n) for name, n in zip(filter_sql.USAGE, usage, strict=True)}
                cost, _ = pricer.price((response or None, request or None), provider or None, tokens, int(start))  # type: ignore[arg-type]
            call = CohortCall(
                bytes.fromhex(trace), bytes.fromhex(span), int(start), int(duration), int(failed),
                None if ttft is None else int(ttft), _finite(rate), None if output is None else int(output),
                None if cap is None else int(cap), None, None, cost, int(run or 0), model, prompt, route,
            )  # fmt: skip
            if residual is None or matches_span(residual, {"cost_usd": cost}):
                found.append(call)
        return found

    def _runs_from(self, since_ns: int | None) -> int | None:
        """With a window: no span of a run with a span in it starts before this (ns, from the trace-id table)."""
        if since_ns is None or self._ids is None:
            return None
        found = self._value(
            f"SELECT toUnixTimestamp(min(Start)) FROM {self._ids} WHERE toUnixTimestamp(End) >= {{s:Int64}}",
            {"s": since_ns // _PAD_NS - 1},
        )
        return None if not found else int(found) * _PAD_NS - _PAD_NS

    def evaluation_results(self, trace_ids: set[bytes]) -> list[EvaluationResult]:
        """Every evaluation and feedback result of these traces, read as the other backends read them: their
        spans that may carry results (events, attributes, evaluator spans) and their evaluation and feedback log
        records, decoded by tracetui's own readers (results that name only the response they judged are attached
        to the span that gave it), EVALUATION_CHUNK traces a query."""
        evaluated = self._evaluated_traces()
        ids = sorted(t for t in map(_hex, trace_ids) if t in evaluated)
        found: list[EvaluationResult] = []
        for i in range(0, len(ids), EVALUATION_CHUNK):
            found += self._evaluation_results(ids[i : i + EVALUATION_CHUNK])
        return found

    def _evaluation_results(self, ids: list[str]) -> list[EvaluationResult]:
        params: dict[str, Any] = {"ids": ids}
        window = ""
        if self._ids is not None:
            lo, hi = self._bounds(ids, 0)
            if hi is not None:
                window, params["lo"], params["hi"] = (
                    " AND Timestamp BETWEEN fromUnixTimestamp64Nano({lo:Int64}) AND fromUnixTimestamp64Nano({hi:Int64})",
                    lo, hi,
                )  # fmt: skip
        logs = self._feedback_logs(params)
        # a record that names only the response it judged is attached to the span with that response id
        answering = sorted({log["TraceId"] for log in logs if not log.get("SpanId")})
        keys = "[" + ", ".join(filter_sql.lit(k) for k in attribute_sources("response_id")) + "]"
        answered = f" OR (TraceId IN {{answering:Array(String)}} AND hasAny(SpanAttributes.keys, {keys}))"
        spans = self._rows(
            f"SELECT {SPAN_SELECT} FROM {self._traces} WHERE TraceId IN {{ids:Array(String)}}{window} AND "
            f"({filter_sql.evaluation_attributes_sql()} OR has(`Events.Name`, {filter_sql.lit(EVALUATION_EVENT)})"
            f"{answered if answering else ''}) LIMIT 1 BY TraceId, SpanId",
            {**params, "answering": answering} if answering else params,
        )
        if not spans and not logs:
            return []
        held = MemoryReader(self.threshold)
        held.add(
            [spans_request([dict(zip(TRACE_COLUMNS, r, strict=True)) for r in spans]).SerializeToString()] if spans else [],
            [_results_as_sent(logs_request(logs)).SerializeToString()] if logs else [],
        )  # fmt: skip
        return held.evaluation_results({bytes.fromhex(t) for t in ids})

    def _feedback_logs(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Log records of these traces named as evaluation results or user feedback."""
        if self._logs is None:
            return []
        rows = self._rows(
            f"SELECT {self._log_select} FROM {self._logs} WHERE TraceId IN {{ids:Array(String)}} AND "
            f"{self._feedback_named()} ORDER BY Timestamp",
            {"ids": params["ids"], "names": _RESULT_LOG_NAMES},
        )
        return [dict(zip(self._log_columns, r, strict=True)) for r in rows]

    def _feedback_named(self) -> str:
        """Log records named as evaluation results or user feedback (a superset: the names as tracetui.llm.evals
        compares them, case, dashes and spaces aside; ``{names:Array(String)}``: _RESULT_LOG_NAMES)."""
        folded = "replaceAll(replaceAll(lowerUTF8(trimBoth({})), '-', '_'), ' ', '_') IN {{names:Array(String)}}"
        sources = ["LogAttributes['event.name']", "LogAttributes['event_name']"]
        if "EventName" in self._log_columns:
            sources.insert(0, "EventName")
        return "(" + " OR ".join(folded.format(s) for s in sources) + ")"

    def _evaluated_traces(self) -> set[str]:
        """Ids (hex) of the traces that may hold evaluation or feedback results (found again when data arrives):
        a compare over 100,000s of runs reads the results of these only."""
        version = self.data_version()
        with self._lock:
            if self._evaluated is not None and self._evaluated[0] == version:
                return self._evaluated[1]
        event = filter_sql.lit(EVALUATION_EVENT)
        found = {t for (t,) in self._rows(
            f"SELECT DISTINCT TraceId FROM {self._traces} PREWHERE {filter_sql.evaluation_keys_sql()} OR "
            f"has(`Events.Name`, {event}) WHERE {filter_sql.evaluation_attributes_sql()} OR has(`Events.Name`, {event})"
        )}  # fmt: skip
        if self._logs is not None:
            found.update(t for (t,) in self._rows(
                f"SELECT DISTINCT TraceId FROM {self._logs} WHERE {self._feedback_named()}", {"names": _RESULT_LOG_NAMES}
            ))  # fmt: skip
        with self._lock:
            self._evaluated = (version, found)
        return found

    def filter_note(self, flt: Filter) -> str | None:
        residual = filter_sql.residual(flt)
        if residual is None:
            return None
        names = ", ".join(dict.fromkeys(str(t.field) for t in residual.terms))
        return f"{names}: decided in Python, among the newest {RESIDUAL_SCAN:,} runs"

    def groundedness_scores(self) -> dict[tuple[bytes, bytes], list[float]]:
        found: dict[tuple[bytes, bytes], list[float]] = {}
        query = filter_sql.groundedness_query(self._query_tables())
        for trace_hex, span_hex, score in self._rows(query.sql, query.params):
            if trace_hex and span_hex and score is not None and math.isfinite(score):
                found.setdefault((bytes.fromhex(trace_hex), bytes.fromhex(span_hex)), []).append(float(score))
        return found

    def histogram_points(self, names: list[str], since_ns: int | None = None) -> list[HistogramPoint]:
        return []  # the exporter's metric tables are not read (yet)


def _results_as_sent(request: Any) -> Any:
    """The request's evaluation and feedback records closer to what the app sent, where the exporter's flattening
    would change what tracetui.llm.evals reads: a structured (kvlist) body, which the exporter writes as JSON
    text, read back as one (else the feedback's thumb is lost and the JSON read as its note); and the feedback
    score attributes (tracetui.llm.evals.FEEDBACK_SCORE_KEYS) that hold a number's text read as numbers (apps send
    a number; as text, the readers take it for no score, as a SQLite store does for a score sent as text)."""
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                for kv in record.attributes:
                    if kv.key in FEEDBACK_SCORE_KEYS and kv.value.WhichOneof("value") == "string_value":
                        try:
                            number = float(kv.value.string_value.strip())
                        except ValueError:
                            continue
                        if math.isfinite(number):
                            kv.value.double_value = number
                text = record.body.string_value if record.body.WhichOneof("value") == "string_value" else ""
                if text.startswith("{") and text.endswith("}"):
                    try:
                        body = json.loads(text)
                    except ValueError:
                        continue
                    if isinstance(body, dict):
                        record.body.kvlist_value.SetInParent()
                        for key, value in body.items():
                            _json_value(record.body.kvlist_value.values.add(key=str(key)).value, value)
    return request


def _json_value(target: Any, value: Any) -> None:
    """An AnyValue from a JSON value of a body the exporter wrote (nested values as their JSON text)."""
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int) and -(1 << 63) <= value < (1 << 63):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, str):
        target.string_value = value
    else:
        target.string_value = json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _priced(usage: Sequence[Sequence[Any]]) -> float | None:
    """A group's priced total from its ``usage`` (filter_sql.USAGE_COLUMNS): reported costs as reported, the rest
    priced from its token sums per model and provider (None when nothing could be priced)."""
    pricer, now = pricing.pricer(), time.time_ns()
    total: float | None = None
    for response, request, provider, reported, _calls, *counts, reported_usd in usage:
        if reported:
            cost: float | None = float(reported_usd)
        else:
            tokens = {name: int(n) for name, n in zip(filter_sql.USAGE, counts, strict=True)}
            cost, _ = pricer.price((response or None, request or None), provider or None, tokens, now)  # type: ignore[arg-type]
        if cost is not None:
            total = (total or 0.0) + cost
    return total


def _three(values: Sequence[float], count: int) -> tuple[float | None, float | None, float | None]:
    """p50, p95, p99 from ClickHouse's ``quantiles`` (NaN, or nothing, when no value was counted)."""
    found = [_finite(v) for v in values] if count else []
    return (found[0], found[1], found[2]) if len(found) == 3 else (None, None, None)


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _call_dicts(page: MemoryReader, trace_id: bytes) -> list[dict[str, Any]]:
    """The page's call spans of one trace as ``spans --json`` dicts (for terms applied in Python)."""
    from tracetui.query.export import span_json

    return [s for s in span_json(page, trace_id) if s.get("kind")]

"""The OpenTelemetry Collector ClickHouse exporter's tables: its DDL, and the check that a table has its shape.

What the DDL follows (``open-telemetry/opentelemetry-collector-contrib``,
``exporter/clickhouseexporter/internal/sqltemplates/``, the v0.162.0 era, late 2026):

* :data:`TRACES_TABLE_SQL`: ``traces_table.sql``, the released default with bloom-filter
  indexes and the column ``COMMENT`` clauses of PR #48036 (merged 2026-04-29). The same
  columns without comments are at commit ``f92a5763be13aeb59ecf6f8b47e31d54109191bb``.
  Not the text-index template of PR #50878 (still open), whose columns are the same.
* :data:`TRACE_ID_TS_TABLE_SQL`: ``traces_id_ts_lookup_table.sql`` at commit
  ``61540ced55e993255df9bcfca48ed89a87d3914f``.
* :data:`TRACE_ID_TS_MV_SQL`: ``traces_id_ts_lookup_mv.sql`` at commit
  ``57b29d74154d72320747c8dd2a0b4a1629a39187``.
* :data:`LOGS_TABLE_SQL`: ``logs_table.sql`` after PR #47720 (merged 2026-04-17: no
  ``TimestampTime``, the ``__otel_materialized_*`` columns, ordered by five-minute
  buckets) and PR #48036 (comments), its ``{{else}}`` branch: the bloom-filter and
  ``tokenbf_v1`` indexes every server version accepts. Upstream takes the other branch,
  ``text(...)`` indexes, on ClickHouse >= 26.2; the columns are the same either way.

Caveat: this was read through a search index of GitHub, not a checkout (the repository
was too large to fetch), so there is no ``git log`` behind it: the commits named are
upstream but not certainly the newest, and the traces COMMENT variant and the newest logs
DDL were found without a repository attached (their content matches the PRs above).
Before pinning to a release, compare with
``git -C <contrib> log -1 -- exporter/clickhouseexporter/internal/sqltemplates``.
Research notes: /work/notes/ch_exporter.md, sections 1 and 2.

The statements are verbatim apart from the placeholders: Go's ``%q.%q`` /
``"%s"."%s"`` / ``{{ident ...}}`` become ``{database}.{table}`` (quoted by
:func:`quote_identifier`), ``ON CLUSTER`` is left out (``{cluster}`` is empty, as the
exporter's default ``cluster_name: ""`` leaves it), ``{engine}`` is ``MergeTree()``
(``table_engine`` defaults) and ``{ttl}`` is empty unless a TTL is asked for.

Tables the exporter wrote in other years differ (old logs without scope columns, ``Int64``
durations, JSON attribute columns): a reader checks the columns it needs with
:func:`check_shape` instead of assuming this DDL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

#: ``traces_table.sql``: the released default (bloom-filter indexes, PR #48036 comments).
TRACES_TABLE_SQL = """\
CREATE TABLE IF NOT EXISTS {database}.{table} {cluster} (
    Timestamp DateTime64(9) COMMENT 'Span start timestamp with nanosecond precision' CODEC(Delta, ZSTD(1)),
    TraceId String COMMENT 'W3C trace identifier' CODEC(ZSTD(1)),
    SpanId String COMMENT 'Unique span identifier within the trace' CODEC(ZSTD(1)),
    ParentSpanId String COMMENT 'Span identifier of the parent span' CODEC(ZSTD(1)),
    TraceState String COMMENT 'W3C tracestate header value' CODEC(ZSTD(1)),
    SpanName LowCardinality(String) COMMENT 'Logical name of the span operation' CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) COMMENT 'Span kind (CLIENT, SERVER, PRODUCER, CONSUMER, INTERNAL)' CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) COMMENT 'Service that emitted the span (resource attribute service.name)' CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) COMMENT 'Resource attributes as key-value pairs' CODEC(ZSTD(1)),
    ScopeName String COMMENT 'Instrumentation scope name (e.g. library name)' CODEC(ZSTD(1)),
    ScopeVersion String COMMENT 'Instrumentation scope version' CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) COMMENT 'Span attributes as key-value pairs' CODEC(ZSTD(1)),
    Duration UInt64 COMMENT 'Span duration in nanoseconds' CODEC(ZSTD(1)),
    StatusCode LowCardinality(String) COMMENT 'Span status code (UNSET, OK, ERROR)' CODEC(ZSTD(1)),
    StatusMessage String COMMENT 'Human-readable status message for errors' CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
) ENGINE = {engine}
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp))
{ttl}
SETTINGS index_granularity=8192, ttl_only_drop_parts = 1
"""

#: ``traces_id_ts_lookup_table.sql``: each trace's first and last span start, in seconds (``{table}`` is the
#: lookup table itself, ``<traces>_trace_id_ts``).
TRACE_ID_TS_TABLE_SQL = """\
CREATE TABLE IF NOT EXISTS {database}.{table} {cluster} (
    TraceId String CODEC(ZSTD(1)),
    Start DateTime CODEC(Delta, ZSTD(1)),
    End DateTime CODEC(Delta, ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = {engine}
    PARTITION BY toDate(Start)
    ORDER BY (TraceId, Start)
    {ttl}
    SETTINGS index_granularity=8192, ttl_only_drop_parts = 1
"""

#: ``traces_id_ts_lookup_mv.sql``: fills the lookup table on every insert into the traces table (one row per
#: insert block and trace, not merged: read it with ``min(Start)``, ``max(End)`` and ``GROUP BY TraceId``).
TRACE_ID_TS_MV_SQL = """\
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.{view} {cluster}
TO {database}.{lookup}
AS SELECT
              TraceId,
              min(Timestamp) as Start,
              max(Timestamp) as End
   FROM {database}.{traces}
   WHERE TraceId != ''
   GROUP BY TraceId
"""

#: ``logs_table.sql`` after PR #47720 and #48036, its ``{{else}}`` (bloom-filter) index branch.
LOGS_TABLE_SQL = """\
CREATE TABLE IF NOT EXISTS {database}.{table} {cluster} (
    `Timestamp` DateTime64(9) COMMENT 'Event timestamp with nanosecond precision' CODEC(Delta(8), ZSTD(1)),
    `TraceId` String COMMENT 'W3C trace identifier' CODEC(ZSTD(1)),
    `SpanId` String COMMENT 'W3C span identifier' CODEC(ZSTD(1)),
    `TraceFlags` UInt8 COMMENT 'W3C trace flags',
    `SeverityText` LowCardinality(String) COMMENT 'Log severity as text' CODEC(ZSTD(1)),
    `SeverityNumber` UInt8 COMMENT 'Log severity as number (1-24)',
    `ServiceName` LowCardinality(String) COMMENT 'Service that emitted the log' CODEC(ZSTD(1)),
    `Body` String COMMENT 'Log message body' CODEC(ZSTD(1)),
    `ResourceSchemaUrl` LowCardinality(String) COMMENT 'Schema URL for the resource' CODEC(ZSTD(1)),
    `ResourceAttributes` Map(LowCardinality(String), String) COMMENT 'Resource attributes as key-value pairs' CODEC(ZSTD(1)),
    `ScopeSchemaUrl` LowCardinality(String) COMMENT 'Schema URL for the instrumentation scope' CODEC(ZSTD(1)),
    `ScopeName` String COMMENT 'Instrumentation scope name' CODEC(ZSTD(1)),
    `ScopeVersion` LowCardinality(String) COMMENT 'Instrumentation scope version' CODEC(ZSTD(1)),
    `ScopeAttributes` Map(LowCardinality(String), String) COMMENT 'Instrumentation scope attributes' CODEC(ZSTD(1)),
    `LogAttributes` Map(LowCardinality(String), String) COMMENT 'Log record attributes' CODEC(ZSTD(1)),
    `EventName` String COMMENT 'Event name for log records representing events' CODEC(ZSTD(1)),
    `__otel_materialized_k8s.cluster.name` LowCardinality(String) MATERIALIZED ResourceAttributes['k8s.cluster.name'] CODEC(ZSTD(1)),
    `__otel_materialized_k8s.container.name` LowCardinality(String) MATERIALIZED ResourceAttributes['k8s.container.name'] CODEC(ZSTD(1)),
    `__otel_materialized_k8s.deployment.name` LowCardinality(String) MATERIALIZED ResourceAttributes['k8s.deployment.name'] CODEC(ZSTD(1)),
    `__otel_materialized_k8s.namespace.name` LowCardinality(String) MATERIALIZED ResourceAttributes['k8s.namespace.name'] CODEC(ZSTD(1)),
    `__otel_materialized_k8s.node.name` LowCardinality(String) MATERIALIZED ResourceAttributes['k8s.node.name'] CODEC(ZSTD(1)),
    `__otel_materialized_k8s.pod.name` LowCardinality(String) MATERIALIZED ResourceAttributes['k8s.pod.name'] CODEC(ZSTD(1)),
    `__otel_materialized_k8s.pod.uid` LowCardinality(String) MATERIALIZED ResourceAttributes['k8s.pod.uid'] CODEC(ZSTD(1)),
    `__otel_materialized_deployment.environment.name` LowCardinality(String) MATERIALIZED ResourceAttributes['deployment.environment.name'] CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_scope_attr_key mapKeys(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_scope_attr_value mapValues(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_log_attr_key mapKeys(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_log_attr_value mapValues(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_lower_body lower(Body) TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8
) ENGINE = {engine}
PARTITION BY toDate(Timestamp)
ORDER BY (toStartOfFiveMinutes(Timestamp), ServiceName, Timestamp)
{ttl}
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
"""

#: The exporter's ``table_engine`` default (name ``MergeTree``, no params).
DEFAULT_ENGINE = "MergeTree()"

#: What a reader selects from the traces table: every column the exporter's INSERT writes.
TRACE_COLUMNS_REQUIRED: frozenset[str] = frozenset({
    "Timestamp", "TraceId", "SpanId", "ParentSpanId", "TraceState", "SpanName", "SpanKind", "ServiceName",
    "ResourceAttributes", "ScopeName", "ScopeVersion", "SpanAttributes", "Duration", "StatusCode", "StatusMessage",
    "Events.Timestamp", "Events.Name", "Events.Attributes",
    "Links.TraceId", "Links.SpanId", "Links.TraceState", "Links.Attributes",
})  # fmt: skip
#: What a reader needs from the logs table; older exporter builds' tables have these too.
LOG_COLUMNS_REQUIRED: frozenset[str] = frozenset({
    "Timestamp", "TraceId", "SpanId", "SeverityText", "SeverityNumber", "ServiceName", "Body",
    "ResourceAttributes", "ScopeName", "ScopeVersion", "LogAttributes",
})  # fmt: skip
#: Logs columns a reader uses when the table has them (:attr:`TableShape.log_columns` says which it has).
LOG_COLUMNS_OPTIONAL: frozenset[str] = frozenset({
    "EventName", "ScopeAttributes", "TraceFlags", "ResourceSchemaUrl", "ScopeSchemaUrl",
})  # fmt: skip
#: The lookup table's columns (:data:`TRACE_ID_TS_TABLE_SQL`); a table of that name without them is ignored.
TRACE_ID_TS_COLUMNS: frozenset[str] = frozenset({"TraceId", "Start", "End"})
#: Attribute columns that the exporter's ``json: true`` option turns into ``JSON`` (``Array(JSON)`` for Nested).
_ATTRIBUTE_COLUMNS = frozenset({
    "ResourceAttributes", "SpanAttributes", "ScopeAttributes", "LogAttributes", "Events.Attributes", "Links.Attributes",
})  # fmt: skip


class Client(Protocol):
    """What this module uses of a ``clickhouse_connect`` client (so it imports nothing heavy)."""

    def command(self, cmd: str, parameters: Any = None) -> Any: ...

    def query(self, query: str, parameters: Any = None) -> Any: ...


class SchemaMismatch(ValueError):
    """The tables are not the exporter's (a column or the table is missing, or a variant tracetui cannot read)."""


@dataclass(frozen=True)
class TableShape:
    """Which of the exporter's tables exist, as :func:`check_shape` found them."""

    database: str
    traces_table: str
    #: None when there is no logs table (a Collector that exports traces only).
    logs_table: str | None
    #: ``<traces>_trace_id_ts``, the per-trace time range lookup; None when absent (it only speeds up reads).
    trace_id_table: str | None
    #: Every column of the logs table (empty without one): which of :data:`LOG_COLUMNS_OPTIONAL` to select.
    log_columns: frozenset[str]


def quote_identifier(name: str) -> str:
    """``name`` as a backquoted ClickHouse identifier, safe for any text (backslashes and backquotes escaped)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def trace_id_table_name(traces_table: str) -> str:
    """The exporter's name for the lookup table beside ``traces_table``."""
    return f"{traces_table}_trace_id_ts"


def create_statements(
    database: str, traces_table: str = "otel_traces", logs_table: str = "otel_logs", ttl_days: int = 0
) -> list[str]:
    """The statements the exporter runs at start (``create_schema: true``), in its order.

    ``CREATE DATABASE IF NOT EXISTS``, the traces table, its lookup table and the
    materialized view that fills it, then the logs table; every one ``IF NOT
    EXISTS``, so running them against existing tables changes nothing. ``ttl_days``
    > 0 adds the exporter's TTL clause (whole days, as its ``ttl: 72h`` and the like).
    """
    if ttl_days < 0:
        raise ValueError(f"ttl_days must be 0 (keep everything) or more, not {ttl_days}")
    db = quote_identifier(database)
    lookup_name = trace_id_table_name(traces_table)

    def ttl(field: str) -> str:
        return f"TTL {field} + toIntervalDay({ttl_days})" if ttl_days else ""

    common = {"database": db, "cluster": "", "engine": DEFAULT_ENGINE}
    return [
        f"CREATE DATABASE IF NOT EXISTS {db}",
        TRACES_TABLE_SQL.format(**common, table=quote_identifier(traces_table), ttl=ttl("toDateTime(Timestamp)")),
        TRACE_ID_TS_TABLE_SQL.format(**common, table=quote_identifier(lookup_name), ttl=ttl("toDateTime(Start)")),
        TRACE_ID_TS_MV_SQL.format(
            database=db,
            cluster="",
            view=quote_identifier(f"{lookup_name}_mv"),
            lookup=quote_identifier(lookup_name),
            traces=quote_identifier(traces_table),
        ),
        LOGS_TABLE_SQL.format(**common, table=quote_identifier(logs_table), ttl=ttl("toDateTime(Timestamp)")),
    ]


def ensure_schema(
    client: Client, database: str, traces_table: str = "otel_traces", logs_table: str = "otel_logs"
) -> None:
    """Create the exporter's database and tables where they are missing (existing ones are left as they are)."""
    for statement in create_statements(database, traces_table, logs_table):
        client.command(statement)


_SHAPE_QUERY = """\
SELECT table, name, type
FROM system.columns
WHERE database = {database:String} AND table IN ({traces:String}, {lookup:String}, {logs:String})"""


def check_shape(client: Client, database: str, traces_table: str, logs_table: str | None) -> TableShape:
    """Check that the tables are the exporter's, in one query on ``system.columns``.

    Raises :class:`SchemaMismatch` with what to do when the traces table is missing,
    lacks a column of :data:`TRACE_COLUMNS_REQUIRED`, or stores its attributes as
    ``JSON`` (the exporter's ``json: true`` option); the same for a logs table that
    exists. A missing logs table (or ``logs_table=None``) is no error.
    """
    lookup = trace_id_table_name(traces_table)
    parameters = {"database": database, "traces": traces_table, "lookup": lookup, "logs": logs_table or ""}
    columns: dict[str, dict[str, str]] = {}
    for table, name, type_ in client.query(_SHAPE_QUERY, parameters=parameters).result_rows:
        columns.setdefault(table, {})[name] = type_

    traces = columns.get(traces_table)
    if traces is None:
        raise SchemaMismatch(f"no table {database}.{traces_table} (is --traces-table right?)")
    _check_columns(database, traces_table, traces, TRACE_COLUMNS_REQUIRED)
    logs = columns.get(logs_table) if logs_table else None
    if logs is not None:
        _check_columns(database, str(logs_table), logs, LOG_COLUMNS_REQUIRED)
    lookup_columns = columns.get(lookup, {})
    return TableShape(
        database=database,
        traces_table=traces_table,
        logs_table=logs_table if logs is not None else None,
        trace_id_table=lookup if lookup_columns.keys() >= TRACE_ID_TS_COLUMNS else None,
        log_columns=frozenset(logs or ()),
    )


def _check_columns(database: str, table: str, types: dict[str, str], required: frozenset[str]) -> None:
    """Raise SchemaMismatch naming the first missing column (in sorted order) or the JSON variant."""
    json_columns = sorted(name for name in _ATTRIBUTE_COLUMNS & types.keys() if _is_json(types[name]))
    if json_columns:
        raise SchemaMismatch(
            f"table {database}.{table} stores attributes as JSON ({', '.join(json_columns)}): that is the "
            "ClickHouse exporter's `json: true` schema, which tracetui does not support yet; it reads the default "
            "Map(LowCardinality(String), String) schema (docs/team.md)"
        )
    missing = sorted(required - types.keys())
    if missing:
        raise SchemaMismatch(
            f"table {database}.{table} has no column {missing[0]}: it is not the OpenTelemetry Collector "
            "ClickHouse exporter's schema (docs/team.md)"
        )


def _is_json(type_: str) -> bool:
    """``JSON``, ``JSON(...)``, ``Object('json')`` or those in an ``Array`` (the Nested attribute columns)."""
    inner = type_.removeprefix("Array(").removesuffix(")") if type_.startswith("Array(") else type_
    return inner == "JSON" or inner.startswith(("JSON(", "Object("))

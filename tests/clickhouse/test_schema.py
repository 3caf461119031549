"""The exporter's DDL runs as written, and check_shape tells its tables from others, on a real engine (chdb)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tracetui.clickhouse import convert
from tracetui.clickhouse.connect import Connection
from tracetui.clickhouse.schema import (
    LOG_COLUMNS_OPTIONAL,
    LOG_COLUMNS_REQUIRED,
    TRACE_COLUMNS_REQUIRED,
    SchemaMismatch,
    TableShape,
    check_shape,
    create_statements,
    ensure_schema,
    quote_identifier,
)


@pytest.fixture
def conn(chdb: Connection) -> Connection:
    """The session's chdb server (tests/conftest.py); each test works in a database of its own."""
    return chdb


@pytest.fixture
def database(conn: Connection, request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty database of this test's own."""
    name = f"s_{request.node.name}"
    conn.client.command(f"CREATE DATABASE {quote_identifier(name)}")
    yield name
    conn.client.command(f"DROP DATABASE IF EXISTS {quote_identifier(name)}")


def test_the_exporter_tables_pass(conn: Connection, database: str) -> None:
    ensure_schema(conn.client, database)
    ensure_schema(conn.client, database)  # IF NOT EXISTS throughout: a second run changes nothing
    shape = check_shape(conn.client, database, "otel_traces", "otel_logs")
    assert shape == TableShape(
        database=database,
        traces_table="otel_traces",
        logs_table="otel_logs",
        trace_id_table="otel_traces_trace_id_ts",
        log_columns=shape.log_columns,
    )
    assert shape.log_columns >= LOG_COLUMNS_REQUIRED | LOG_COLUMNS_OPTIONAL


def test_the_required_columns_are_what_the_converter_writes() -> None:
    assert set(convert.TRACE_COLUMNS) == TRACE_COLUMNS_REQUIRED
    assert set(convert.LOG_COLUMNS) <= LOG_COLUMNS_REQUIRED | LOG_COLUMNS_OPTIONAL


def test_no_logs_table_is_fine(conn: Connection, database: str) -> None:
    for statement in create_statements(database)[:4]:  # the database, traces, lookup table and view
        conn.client.command(statement)
    shape = check_shape(conn.client, database, "otel_traces", "otel_logs")
    assert (shape.logs_table, shape.log_columns, shape.trace_id_table) == (None, frozenset(), "otel_traces_trace_id_ts")
    assert check_shape(conn.client, database, "otel_traces", None).logs_table is None


def test_no_lookup_table_is_fine(conn: Connection, database: str) -> None:
    conn.client.command(create_statements(database)[1])
    assert check_shape(conn.client, database, "otel_traces", "otel_logs").trace_id_table is None


def test_a_missing_traces_table_is_named(conn: Connection, database: str) -> None:
    with pytest.raises(SchemaMismatch) as caught:
        check_shape(conn.client, database, "otel_traces", "otel_logs")
    assert str(caught.value) == f"no table {database}.otel_traces (is --traces-table right?)"


def test_a_table_without_span_attributes_is_refused(conn: Connection, database: str) -> None:
    conn.client.command(create_statements(database)[1])
    conn.client.command(f"ALTER TABLE {database}.otel_traces DROP INDEX idx_span_attr_key")
    conn.client.command(f"ALTER TABLE {database}.otel_traces DROP INDEX idx_span_attr_value")
    conn.client.command(f"ALTER TABLE {database}.otel_traces DROP COLUMN SpanAttributes")
    with pytest.raises(SchemaMismatch) as caught:
        check_shape(conn.client, database, "otel_traces", "otel_logs")
    assert str(caught.value) == (
        f"table {database}.otel_traces has no column SpanAttributes: it is not the OpenTelemetry Collector "
        "ClickHouse exporter's schema (docs/team.md)"
    )


def test_a_logs_table_of_another_shape_is_refused(conn: Connection, database: str) -> None:
    conn.client.command(create_statements(database)[1])
    conn.client.command(f"CREATE TABLE {database}.otel_logs (Timestamp DateTime64(9), Body String) ORDER BY Timestamp")
    with pytest.raises(SchemaMismatch, match=f"table {database}.otel_logs has no column LogAttributes"):
        check_shape(conn.client, database, "otel_traces", "otel_logs")


def test_the_json_variant_is_named_as_unsupported(conn: Connection, database: str) -> None:
    ddl = create_statements(database)[1]
    ddl = ddl.replace("SpanAttributes Map(LowCardinality(String), String)", "SpanAttributes JSON")
    ddl = "\n".join(line for line in ddl.splitlines() if "idx_span_attr" not in line)
    conn.client.command(ddl)
    with pytest.raises(SchemaMismatch) as caught:
        check_shape(conn.client, database, "otel_traces", "otel_logs")
    message = str(caught.value)
    assert "SpanAttributes" in message and "json: true" in message and "not support" in message


def test_odd_names_are_quoted(conn: Connection) -> None:
    database, traces, logs = "we`ird db", "my traces", "my.logs"
    try:
        ensure_schema(conn.client, database, traces, logs)
        shape = check_shape(conn.client, database, traces, logs)
        assert (shape.traces_table, shape.logs_table, shape.trace_id_table) == (traces, logs, "my traces_trace_id_ts")
    finally:
        conn.client.command(f"DROP DATABASE IF EXISTS {quote_identifier(database)}")


def test_ttl_days(conn: Connection, database: str) -> None:
    for statement in create_statements(database, ttl_days=3):
        conn.client.command(statement)
    ddl = conn.client.command(f"SHOW CREATE TABLE {database}.otel_traces")
    assert "TTL toDateTime(Timestamp) + toIntervalDay(3)" in str(ddl)
    with pytest.raises(ValueError, match="ttl_days"):
        create_statements(database, ttl_days=-1)


def test_statements_follow_the_exporter_order() -> None:
    statements = create_statements("otel")
    assert [s.split("(")[0].split("\n")[0].strip() for s in statements] == [
        "CREATE DATABASE IF NOT EXISTS `otel`",
        "CREATE TABLE IF NOT EXISTS `otel`.`otel_traces`",
        "CREATE TABLE IF NOT EXISTS `otel`.`otel_traces_trace_id_ts`",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS `otel`.`otel_traces_trace_id_ts_mv`",
        "CREATE TABLE IF NOT EXISTS `otel`.`otel_logs`",
    ]
    assert all("MergeTree()" in s for s in statements[1:3] + statements[4:])

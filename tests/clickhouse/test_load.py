"""``tracetui import --into chdb:PATH``: the SQLite import's files, into the exporter's tables through the server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import FIXTURES, iter_spans, make_request, make_span, read_records, requests_of, sid, tid
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tracetui.cli.main import main
from tracetui.clickhouse.connect import Connection, connect, parse_source
from tracetui.clickhouse.load import insert_requests
from tracetui.clickhouse.schema import SchemaMismatch, create_statements, ensure_schema, quote_identifier

TRACES = FIXTURES / "handmade_agent.otlp"
LOGS = FIXTURES / "handmade_agent.logs.otlp"


def _logs_of(path: Path) -> list[ExportLogsServiceRequest]:
    return [ExportLogsServiceRequest.FromString(record) for record in read_records(path)]


def _record_count(requests: list[ExportLogsServiceRequest]) -> int:
    return sum(len(sl.log_records) for r in requests for rl in r.resource_logs for sl in rl.scope_logs)


@pytest.fixture
def conn(chdb: Connection) -> Connection:
    """The session's chdb server (tests/conftest.py); each test works in a database of its own."""
    return chdb


@pytest.fixture
def database(conn: Connection, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"l_{request.node.name}"
    yield name
    conn.client.command(f"DROP DATABASE IF EXISTS {quote_identifier(name)}")


@pytest.fixture
def target(conn: Connection, database: str) -> Connection:
    """The module's server, with this test's database as the source's (not closed: the client is shared)."""
    return Connection(conn.client, replace(conn.spec, database=database))


def _count(conn: Connection, sql: str) -> int:
    return int(conn.client.query(sql).result_rows[0][0])


def test_import_into_chdb_from_the_command_line(tmp_path: Path) -> None:
    target = tmp_path / "db"
    result = CliRunner().invoke(main, ["import", "--into", f"chdb:{target}", str(TRACES), str(LOGS)])
    assert result.exit_code == 0, result.output
    spans = [span for _, span in iter_spans(requests_of(TRACES))]
    traces = len({span.trace_id for span in spans})
    records = _record_count(_logs_of(LOGS))
    assert (
        f"imported {len(spans)} spans in {traces} traces and {records} log records from 2 files into chdb:{target}"
        in result.output
    )
    with connect(parse_source(f"chdb:{target}")) as conn:  # the import's server has exited: the directory opens
        assert _count(conn, "SELECT count() FROM otel_traces") == len(spans)
        assert _count(conn, "SELECT uniqExact(TraceId) FROM otel_traces") == traces
        assert _count(conn, "SELECT count() FROM otel_logs") == records
        assert _count(conn, "SELECT uniqExact(TraceId) FROM otel_traces_trace_id_ts") == traces


def test_a_bad_file_imports_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}')
    result = CliRunner().invoke(main, ["import", "--into", f"chdb:{tmp_path / 'db'}", str(TRACES), str(bad)])
    assert result.exit_code == 1
    assert "nothing imported" in result.output and "bad.json" in result.output
    assert not (tmp_path / "db").exists()  # rejected before a server was started


def test_into_and_db_are_alternatives(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["import", "--into", "chdb:x", "--db", str(tmp_path / "x.db"), str(TRACES)])
    assert result.exit_code == 2 and "--into and --db are alternatives" in result.output
    result = CliRunner().invoke(main, ["import", "--into", str(tmp_path / "x.db"), str(TRACES)])
    assert result.exit_code == 2 and "for a SQLite file use --db" in result.output


def test_batches_span_requests(target: Connection, database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = target
    ensure_schema(conn.client, database)
    requests = [make_request([make_span(tid(t), sid(t * 10 + s)) for s in range(3)]) for t in range(1, 8)]
    batches: list[int] = []
    insert = conn.client.insert

    def counting_insert(table: str, rows: list[tuple], **options: object) -> object:
        batches.append(len(rows))
        return insert(table, rows, **options)

    monkeypatch.setattr(conn.client, "insert", counting_insert)
    assert insert_requests(conn, requests, [], batch_rows=5) == (21, 0)
    assert batches == [5, 5, 5, 5, 1]
    assert _count(conn, f"SELECT count() FROM {database}.otel_traces") == 21


def test_logs_columns_the_table_lacks_are_left_out(target: Connection, database: str) -> None:
    conn = target
    ensure_schema(conn.client, database)
    conn.client.command(f"ALTER TABLE {database}.otel_logs DROP COLUMN EventName")  # a table from before EventName
    logs = _logs_of(LOGS)
    assert insert_requests(conn, [], logs) == (0, _record_count(logs))


def test_logs_without_a_logs_table_are_refused(target: Connection, database: str) -> None:
    conn = target
    for statement in create_statements(database)[:2]:
        conn.client.command(statement)
    with pytest.raises(SchemaMismatch, match=f"no table {database}.otel_logs"):
        insert_requests(conn, [], _logs_of(LOGS))

"""The chdb server: the stock clickhouse-connect HTTP client against a real embedded ClickHouse in a subprocess.

chdb lets one process at a time open a directory (and one directory per process), so
this process never imports it: everything goes through the server subprocess, one
per module, with a database of its own per test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import clickhouse_connect
import psutil
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from tracetui.clickhouse.connect import Connection, SourceError, connect, parse_source
from tracetui.clickhouse.schema import create_statements, quote_identifier

ROOT = Path(__file__).resolve().parents[2]
NS = 1_700_000_000_123_456_789  # a DateTime64(9) with every digit significant


@pytest.fixture(scope="module")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb-server") / "db"


@pytest.fixture(scope="module")
def conn(chdb_dir: Path) -> Iterator[Connection]:
    connection = connect(parse_source(f"chdb:{chdb_dir}"))
    yield connection
    connection.close()


@pytest.fixture
def database(conn: Connection, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of this test's own, with the exporter's tables."""
    name = f"t_{request.node.name}".replace("[", "_").replace("]", "").replace("-", "_")
    for statement in create_statements(name):
        conn.client.command(statement)
    yield name
    conn.client.command(f"DROP DATABASE IF EXISTS {quote_identifier(name)}")


def _server_port(conn: Connection) -> int:
    port = urlsplit(conn.client.url).port
    assert port is not None
    return port


def _gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether process ``pid`` has exited (a zombie nobody reaped counts) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


SPAN_COLUMNS = [
    "Timestamp", "TraceId", "SpanId", "ParentSpanId", "SpanName", "ServiceName", "SpanAttributes", "Duration",
    "Events.Timestamp", "Events.Name", "Events.Attributes",
]  # fmt: skip


def test_insert_and_read_back_map_nested_and_nanoseconds(conn: Connection, database: str) -> None:
    rows = [
        (NS, "ab" * 16, "cd" * 8, "", "root", "svc", {"gen_ai.request.model": "gpt-4o", "n": "3"}, 5_000,
         [NS + 1, NS + 2], ["first", "second"], [{"a": "b"}, {}]),
        (NS + 10, "ab" * 16, "ef" * 8, "cd" * 8, "child's \"call\"", "svc", {}, 7, [], [], []),
    ]  # fmt: skip
    conn.client.insert(f"{database}.otel_traces", rows, column_names=SPAN_COLUMNS)

    result = conn.client.query(
        f"SELECT toUnixTimestamp64Nano(Timestamp), SpanId, SpanName, SpanAttributes, Duration,"
        f" arrayMap(t -> toUnixTimestamp64Nano(t), `Events.Timestamp`), `Events.Name`, `Events.Attributes`"
        f" FROM {database}.otel_traces WHERE TraceId = {{trace:String}} AND SpanName != {{skip:String}}"
        f" ORDER BY Timestamp",
        parameters={"trace": "ab" * 16, "skip": "it's not there"},
    )
    assert result.result_rows == [
        (NS, "cd" * 8, "root", {"gen_ai.request.model": "gpt-4o", "n": "3"}, 5_000, [NS + 1, NS + 2],
         ["first", "second"], [{"a": "b"}, {}]),
        (NS + 10, "ef" * 8, "child's \"call\"", {}, 7, [], [], []),
    ]  # fmt: skip
    # The materialized view filled the lookup table (second precision) on the insert.
    lookup = conn.client.query(f"SELECT TraceId, toUnixTimestamp(Start) FROM {database}.otel_traces_trace_id_ts")
    assert lookup.result_rows == [("ab" * 16, NS // 10**9)]


def test_bound_parameters_are_never_spliced_into_the_sql(conn: Connection) -> None:
    hostile = "x' OR 1=1 -- \\ \" `"
    result = conn.client.query("SELECT {v:String} = 'x', {v:String}", parameters={"v": hostile})
    assert result.result_rows == [(False, hostile)]


def test_long_parameters_go_as_a_form(conn: Connection, database: str) -> None:
    conn.client.insert(f"{database}.otel_traces", [(NS, "ab" * 16)], column_names=["Timestamp", "TraceId"])
    ids = [f"{n:032x}" for n in range(400)] + ["ab" * 16]  # ~14 kB of parameters: multipart/form-data
    result = conn.client.query(
        f"SELECT count() FROM {database}.otel_traces WHERE TraceId IN {{ids:Array(String)}}", parameters={"ids": ids}
    )
    assert result.result_rows == [(1,)]


def test_settings_apply_to_their_own_request_only(conn: Connection) -> None:
    assert conn.client.query(
        "SELECT getSetting('max_result_rows')", settings={"max_result_rows": 1234}
    ).result_rows == [(1234,)]
    assert conn.client.query("SELECT getSetting('max_result_rows')").result_rows == [(0,)]


def test_the_database_parameter_is_honoured_per_request(conn: Connection, database: str) -> None:
    conn.client.insert(f"{database}.otel_traces", [(NS, "ab" * 16)], column_names=["Timestamp", "TraceId"])
    other = clickhouse_connect.get_client(
        host="127.0.0.1", port=_server_port(conn), compress=False, database=database, password=_password(conn)
    )
    try:
        assert other.query("SELECT currentDatabase(), count() FROM otel_traces").result_rows == [(database, 1)]
        # ...while the module's client, on another database, is unaffected.
        assert conn.client.query("SELECT currentDatabase()").result_rows == [("default",)]
    finally:
        other.close()


def _password(conn: Connection) -> str:
    """The one-time password connect() gave the server (tests only: it sits in the client's auth header)."""
    import base64

    header = conn.client.headers["Authorization"]
    return base64.b64decode(header.removeprefix("Basic ")).decode().partition(":")[2]


def test_a_wrong_password_is_refused(conn: Connection) -> None:
    with pytest.raises(DatabaseError) as caught:
        clickhouse_connect.get_client(host="127.0.0.1", port=_server_port(conn), compress=False, password="guess")
    assert "516" in str(caught.value) and "Authentication failed" in str(caught.value)


def test_sql_errors_surface_as_database_errors(conn: Connection, database: str) -> None:
    with pytest.raises(DatabaseError) as caught:
        conn.client.query(f"SELECT no_such_column FROM {database}.otel_traces")
    assert "UNKNOWN_IDENTIFIER" in str(caught.value) and "no_such_column" in str(caught.value)
    with pytest.raises(DatabaseError, match="UNKNOWN_TABLE"):
        conn.client.command(f"INSERT INTO {database}.missing VALUES (1)")
    assert conn.client.query("SELECT 1").result_rows == [(1,)]  # the server carries on


def test_a_second_server_on_the_same_directory_is_refused(conn: Connection, chdb_dir: Path) -> None:
    with pytest.raises(SourceError) as caught:
        connect(parse_source(f"chdb:{chdb_dir}"))
    assert f"another process already has {chdb_dir} open; chdb allows one" in str(caught.value)
    assert conn.client.query("SELECT 1").result_rows == [(1,)]


def test_the_server_exits_when_the_connection_closes(tmp_path: Path) -> None:
    connection = connect(parse_source(f"chdb:{tmp_path / 'db'}"))
    pid = connection.server_pid
    assert pid is not None
    connection.close()
    assert _gone(pid, timeout=0)
    # ...having closed its session: the directory opens again.
    with connect(parse_source(f"chdb:{tmp_path / 'db'}")) as again:
        assert again.client.query("SELECT 1").result_rows == [(1,)]


_CLIENT_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from tracetui.clickhouse.connect import connect, parse_source
    from tracetui.clickhouse.schema import check_shape, ensure_schema
    conn = connect(parse_source("chdb:" + sys.argv[1], database="otel"), create_database=True)
    ensure_schema(conn.client, "otel")
    check_shape(conn.client, "otel", "otel_traces", "otel_logs")
    conn.client.query("SELECT count() FROM otel.otel_traces WHERE TraceId = {t:String}", parameters={"t": "x"})
    heavy = sorted({name.split(".")[0] for name in sys.modules} & {"pandas", "pyarrow", "chdb", "numpy"})
    print(json.dumps({"heavy": heavy, "server": conn.server_pid}), flush=True)
    time.sleep(60)
""")


def test_the_client_process_stays_small_and_its_server_dies_with_it(tmp_path: Path) -> None:
    client = subprocess.Popen(
        [sys.executable, "-c", _CLIENT_SCRIPT, str(tmp_path / "db")], stdout=subprocess.PIPE, cwd=ROOT, text=True
    )
    try:
        assert client.stdout is not None
        report = json.loads(client.stdout.readline())
    finally:
        client.kill()  # no clean-up runs: only the closed stdin pipe tells the server
        client.wait()
    assert report["heavy"] == []
    assert _gone(report["server"]), "the chdb server outlived its parent"


def _start_server(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tracetui.clickhouse.chdb_server", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )


def test_sigterm_stops_the_server_cleanly(tmp_path: Path) -> None:
    server = _start_server(str(tmp_path / "db"))
    assert server.stdout is not None
    line = server.stdout.readline()
    assert line.startswith("LISTENING ") and line.split()[1].isdigit()
    server.send_signal(signal.SIGTERM)
    assert server.wait(10) == 0
    server.communicate()


def test_without_chdb_the_server_says_which_extra(tmp_path: Path) -> None:
    fake = tmp_path / "fake" / "chdb"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named chdb')\n")
    env = {**os.environ, "PYTHONPATH": f"{fake.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    server = _start_server(str(tmp_path / "db"), env=env)
    out, err = server.communicate(timeout=20)
    assert server.returncode == 2
    assert out == ""
    assert err.strip() == "tracetui chdb server: chdb is not installed: pip install 'tracetui[chdb]'"


def test_the_server_binds_loopback_only(tmp_path: Path) -> None:
    server = _start_server(str(tmp_path / "db"), "--host", "0.0.0.0")
    _, err = server.communicate(timeout=20)
    assert server.returncode == 2
    assert "loopback address only" in err

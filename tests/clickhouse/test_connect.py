"""``--source`` parsing and connecting: the URL forms, the password's precedence, and that it is never shown."""

from __future__ import annotations

import builtins
import importlib.util
import socket
from pathlib import Path

import pytest

from tracetui.clickhouse import chdb_server
from tracetui.clickhouse.connect import (
    CHDB_MESSAGE_PREFIX,
    CHDB_PASSWORD_ENV,
    SourceError,
    SourceSpec,
    connect,
    parse_source,
)

SECRET = "s3cr3t-Pa55"


@pytest.fixture(autouse=True)
def _no_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLICKHOUSE_PASSWORD", raising=False)


def test_clickhouse_url_in_full() -> None:
    spec = parse_source(f"clickhouse://alice:{SECRET}@ch.example.com:9123/otel")
    assert (spec.kind, spec.host, spec.port, spec.user, spec.password, spec.database, spec.secure) == (
        "clickhouse", "ch.example.com", 9123, "alice", SECRET, "otel", False,
    )  # fmt: skip
    assert (spec.traces_table, spec.logs_table, spec.path) == ("otel_traces", "otel_logs", None)


@pytest.mark.parametrize(
    ("text", "host", "port", "user", "database", "secure"),
    [
        ("clickhouse://localhost", "localhost", 8123, "default", "default", False),
        ("clickhouse://bob@localhost/", "localhost", 8123, "bob", "default", False),
        ("clickhouses://ch.example.com/logs", "ch.example.com", 8443, "default", "logs", True),
        ("clickhouses://ch.example.com:443", "ch.example.com", 443, "default", "default", True),
        ("clickhouse://[::1]:8124/db", "::1", 8124, "default", "db", False),
        ("CLICKHOUSE://Host.Example", "host.example", 8123, "default", "default", False),
        ("clickhouse://us%40er@h/my%20db", "h", 8123, "us@er", "my db", False),
    ],
)
def test_clickhouse_defaults(text: str, host: str, port: int, user: str, database: str, secure: bool) -> None:
    spec = parse_source(text)
    assert (spec.host, spec.port, spec.user, spec.database, spec.secure) == (host, port, user, database, secure)


def test_secure_and_options_override_the_url() -> None:
    spec = parse_source("clickhouse://h/db", secure=True, database="other", traces_table="t", logs_table="l")
    assert (spec.secure, spec.port, spec.database, spec.traces_table, spec.logs_table) == (
        True, 8443, "other", "t", "l",
    )  # fmt: skip
    assert parse_source("clickhouses://h", secure=False).port == 8123


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("chdb:data/ch", Path("data/ch")),
        ("chdb:/var/lib/ch", Path("/var/lib/ch")),
        ("chdb:///var/lib/ch", Path("/var/lib/ch")),
        ("chdb:~/ch", Path("~/ch").expanduser()),
    ],
)
def test_chdb_paths(text: str, expected: Path) -> None:
    spec = parse_source(text, database="otel")
    assert (spec.kind, spec.path, spec.database) == ("chdb", expected, "otel")
    assert spec.display() == f"chdb:{expected}"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("traces.db", "for a SQLite file use --db"),
        ("/home/me/.local/share/tracetui/traces.db", "for a SQLite file use --db"),
        ("http://localhost:8123", "clickhouse://HOST:8123"),
        ("tcp://localhost:9000", "not native TCP"),
        ("localhost:8123", "did you mean clickhouse://localhost:8123?"),
        ("postgres://h/db", "--source takes clickhouse://"),
        ("chdb:", "chdb: needs a directory"),
        ("chdb://host/x", "chdb:///abs/path"),
        ("clickhouse://:8123/db", "no host"),
        ("clickhouse://h:99999/db", "port"),
        ("clickhouse://h/db/extra", "one database name"),
        ("clickhouse://h/db?secure=1", "no ?options"),
    ],
)
def test_unusable_sources_say_what_to_write(text: str, says: str) -> None:
    with pytest.raises(SourceError) as caught:
        parse_source(text)
    assert says in str(caught.value)


def test_empty_table_name_is_refused() -> None:
    with pytest.raises(SourceError, match="traces table name is empty"):
        parse_source("clickhouse://h", traces_table="")


# --- the password --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("explicit", "in_file", "in_env", "expected"),
    [
        ("explicit", "from-file", "from-env", "explicit"),
        ("", "from-file", "from-env", ""),  # an explicit empty password still wins
        (None, "from-file", "from-env", "from-file"),
        (None, None, "from-env", "from-env"),
        (None, None, None, "from-url"),
    ],
)
def test_password_precedence(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    explicit: str | None,
    in_file: str | None,
    in_env: str | None,
    expected: str,
) -> None:
    password_file = None
    if in_file is not None:
        password_file = tmp_path / "pw"
        password_file.write_text(f"  {in_file}  \nsecond line ignored\n")
    if in_env is not None:
        monkeypatch.setenv("CLICKHOUSE_PASSWORD", in_env)
    spec = parse_source("clickhouse://u:from-url@h/db", password=explicit, password_file=password_file)
    assert spec.password == expected


def test_unreadable_password_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot read the password file"):
        parse_source("clickhouse://h", password_file=tmp_path / "missing")


def test_password_is_never_shown() -> None:
    spec = parse_source(f"clickhouse://alice:{SECRET}@h:8123/db")
    for text in (repr(spec), str(spec), spec.display()):
        assert SECRET not in text
    assert "alice" in spec.display()


def test_password_is_not_in_parse_errors() -> None:
    with pytest.raises(SourceError) as caught:
        parse_source(f"clickhouse://alice:{SECRET}@h:99999/db")
    assert SECRET not in str(caught.value)
    assert "alice:***@h:99999" in str(caught.value)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_error_names_host_and_cause_without_the_password() -> None:
    port = _closed_port()
    with pytest.raises(SourceError) as caught:
        connect(parse_source(f"clickhouse://alice:{SECRET}@127.0.0.1:{port}/db"))
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert "Connection refused" in message
    assert SECRET not in message and SECRET not in repr(caught.value)


# --- the optional extras ----------------------------------------------------------------------------


def _without(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    """Make ``import module`` fail as it does when the package is not installed."""
    real_import = builtins.__import__

    def fake_import(name: str, *args, **kwargs):
        if name == module or name.startswith(module + "."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_missing_clickhouse_connect_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _without(monkeypatch, "clickhouse_connect")
    with pytest.raises(SourceError) as caught:
        connect(SourceSpec(kind="clickhouse", host="127.0.0.1", port=_closed_port()))
    assert str(caught.value) == "ClickHouse support is an optional extra: pip install 'tracetui[clickhouse]'"
    with pytest.raises(SourceError, match=r"pip install 'tracetui\[chdb\]'"):
        connect(parse_source("chdb:/nonexistent/never-created"))


def test_missing_chdb_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "chdb" else real_find_spec(name, *a)
    )
    with pytest.raises(SourceError, match=r"pip install 'tracetui\[chdb\]'"):
        connect(parse_source(f"chdb:{tmp_path / 'db'}"))
    assert not (tmp_path / "db").exists()  # no server was started


def test_connect_and_the_server_agree_on_their_constants() -> None:
    assert CHDB_PASSWORD_ENV == chdb_server.PASSWORD_ENV
    assert CHDB_MESSAGE_PREFIX == chdb_server.MESSAGE_PREFIX

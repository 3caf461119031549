"""Migrations are race-free: receivers, views and CLI commands started at once on one file all succeed.

A newer file opened by this tracetui is refused with a message that says so, by every entry point.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import receiver_env, spawn_receiver

from tracetui.store.schema import MIGRATIONS, SCHEMA_VERSION

RECEIVERS = 3


def _tracetui(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tracetui", *args],
        cwd=cwd,
        env=receiver_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _old_database(path: Path, version: int) -> None:
    """A file as an older tracetui left it: schema ``version``, one trace in it."""
    conn = sqlite3.connect(path, isolation_level=None)
    for n in range(version):
        MIGRATIONS[n](conn)
    conn.execute(f"PRAGMA user_version={version}")
    conn.execute("INSERT INTO sources(id, digest, service, resource) VALUES (1, x'01', 'svc', x'')")
    conn.execute(
        "INSERT INTO spans(trace_id, span_id, name, kind, source_id, service, start_ns, end_ns, status_code, raw) "
        "VALUES (x'0102', x'03', 'old span', 1, 1, 'svc', 1, 2, 0, x'')"
    )
    conn.execute(
        "INSERT INTO traces(trace_id, root_span_id, root_name, first_name, service, start_ns, end_ns, span_count, "
        "error_count, updated_ns) VALUES (x'0102', x'03', 'old span', 'old span', 'svc', 1, 2, 1, 0, 0)"
    )
    conn.close()


@pytest.mark.parametrize("start", ["fresh", "old"])
def test_receivers_views_and_commands_started_at_once_all_succeed(tmp_path: Path, start: str) -> None:
    db = tmp_path / "race.db"
    if start == "fresh":
        db.touch(mode=0o600)  # an empty file: what a receiver creates first
    else:
        _old_database(db, 3)
    receivers = [spawn_receiver(["--db", str(db), "--grpc-port", "0", "--decode-workers", "1"], cwd=tmp_path)
                 for _ in range(RECEIVERS)]  # fmt: skip
    commands = [
        _tracetui("traces", "--db", str(db), "--json", cwd=tmp_path),
        _tracetui("stats", "--db", str(db), "--json", cwd=tmp_path),
        _tracetui("traces", "--db", str(db), cwd=tmp_path),
    ]
    try:
        for proc, lines, ready, _done in receivers:
            assert ready.wait(60)
            assert proc.poll() is None, "a receiver exited:\n" + "\n".join(lines)
            assert any(line.startswith("tracetui: listening ") for line in lines), "\n".join(lines)
        outputs = []
        for proc in commands:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            assert "Traceback" not in err
            outputs.append(out)
        rows = json.loads(outputs[0])
        assert [r["name"] for r in rows] == (["old span"] if start == "old" else [])
    finally:
        for proc, _lines, _ready, done in receivers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
            done.wait(5)
    for proc, lines, _ready, _done in receivers:
        assert proc.returncode == 0, "\n".join(lines)
        assert "duplicate column" not in "\n".join(lines)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    if start == "old":  # what was there survives the migration
        assert conn.execute("SELECT root_name FROM traces").fetchall() == [("old span",)]


COMMANDS = [
    ["traces"],
    ["traces", "--json"],
    ["spans", "--trace", "0102"],
    ["stats"],
    ["export", "0102"],
    ["purge", "--yes"],
    ["reindex"],
    ["import", "{fixture}"],
    ["view"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_a_newer_database_is_refused_clearly_by_every_command(tmp_path: Path, command: list[str]) -> None:
    db = tmp_path / "new.db"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    fixture = tmp_path / "one.json"
    fixture.write_text(
        '{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "0102030405060708090a0b0c0d0e0f10", '
        '"spanId": "0102030405060708", "name": "s", "startTimeUnixNano": "1", "endTimeUnixNano": "2"}]}]}]}'
    )
    args = [a.format(fixture=fixture) for a in command]
    proc = _tracetui(*args, "--db", str(db), cwd=tmp_path)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in err
    assert "newer" in err and "upgrade tracetui" in err, err


def test_a_newer_database_is_refused_clearly_by_the_receiver(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    proc, lines, _ready, done = spawn_receiver(["--db", str(db), "--grpc-port", "0"], cwd=tmp_path)
    assert proc.wait(60) == 1
    done.wait(5)
    err = "\n".join(lines)
    assert "Traceback" not in err
    assert "newer" in err and "upgrade tracetui" in err, err


@pytest.mark.parametrize("start", ["fresh", "old"])
def test_connections_opened_at_the_same_instant_migrate_once(tmp_path: Path, start: str) -> None:
    """The race itself, without process start-up spreading the contenders out: a barrier releases them together."""
    import threading

    from tracetui.store.schema import connect_reader, connect_writer

    db = tmp_path / "instant.db"
    if start == "old":
        _old_database(db, 3)
    else:
        db.touch(mode=0o600)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def open_one(n: int) -> None:
        barrier.wait()
        try:
            conn = connect_writer(db) if n % 2 else connect_reader(db)
            conn.close()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION

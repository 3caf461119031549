"""Fixtures for the non-UI suite: real receiver processes and databases in tmp_path."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from helpers import Receiver, fill_db, read_records, start_receiver, suite_fixture_files


@pytest.fixture
def start_rcv(tmp_path: Path):
    """Factory: start ``tracetui serve --headless`` (port 0 unless told); all are stopped at teardown."""
    started: list[Receiver] = []

    def start(*args: str, db: str | Path | None = "x.db", **kwargs) -> Receiver:
        db_path = tmp_path / db if db is not None else None
        rcv = start_receiver(db_path, *args, cwd=tmp_path, **kwargs)
        started.append(rcv)
        return rcv

    yield start
    for rcv in started:
        if rcv.alive():
            code = rcv.stop(signal.SIGTERM)
            assert code == 0, f"receiver exited with {code} on SIGTERM:\n{rcv.stderr}"


@pytest.fixture
def receiver(start_rcv) -> Receiver:
    """A fresh receiver of this test's own, on a free port, its database at tmp_path/x.db."""
    return start_rcv()


@pytest.fixture(scope="module")
def shared_receiver(tmp_path_factory) -> Receiver:
    """One receiver for the tests of a module that only look at their own trace ids.

    (Starting a receiver costs most of a second; tests that count everything in
    the database or stop the process use ``receiver`` / ``start_rcv`` instead.)
    """
    db = tmp_path_factory.mktemp("shared") / "shared.db"
    rcv = start_receiver(db, cwd=db.parent)
    yield rcv
    code = rcv.stop(signal.SIGTERM)
    assert code == 0, f"receiver exited with {code} on SIGTERM:\n{rcv.stderr}"


@pytest.fixture(scope="session")
def all_fixtures_db(tmp_path_factory) -> Path:
    """A database holding the suite's trace fixtures (helpers.SUITE_CAPTURES), written by tracetui's writer."""
    db = tmp_path_factory.mktemp("fixtures-db") / "fixtures.db"
    fill_db(db, [record for path in suite_fixture_files() for record in read_records(path)])
    return db


@pytest.fixture(scope="session")
def chdb(tmp_path_factory):
    """The session's embedded ClickHouse: our chdb server subprocess on a temporary directory, reached
    over HTTP by clickhouse-connect (chdb allows one process per directory; each test uses its own database)."""
    from tracetui.clickhouse.connect import connect, parse_source

    conn = connect(parse_source(f"chdb:{tmp_path_factory.mktemp('chdb')}"))
    yield conn
    conn.close()

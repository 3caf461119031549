"""Fixtures for UI tests: databases seeded through the real writer, apps with a fixed clock."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from helpers import fill_db as write_requests
from helpers import suite_fixture_files

from tracetui.otlp.files import read_length_delimited
from tracetui.query.memory import MemoryReader
from tracetui.store.pins import SqlitePins
from tracetui.store.reader import SqliteReader
from tracetui.store.writer import Writer

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
#: The captures the UI tests (and their snapshots) are drawn from: the first five. Later captures
#: (tests/llm/test_families.py) are left out so that adding one does not change every screen.
TRACE_FIXTURES = suite_fixture_files()
#: "Now" for the UI in tests: a minute after the last fixture span, so times are shown as clock times.
FIXED_NOW_NS = 1_795_483_750_000_000_000


@pytest.fixture(autouse=True)
def utc_timezone():
    """Clock columns are local time; pin the zone so snapshots do not depend on the machine."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


def fixture_requests(*names: str) -> list[bytes]:
    paths = [FIXTURES / n for n in names] if names else TRACE_FIXTURES
    return [record for path in paths for record in read_length_delimited(path)]


@pytest.fixture
def empty_db(tmp_path: Path) -> Path:
    db = tmp_path / "empty.db"
    Writer(db).stop()
    return db


@pytest.fixture
def fixtures_db(tmp_path: Path) -> Path:
    db = tmp_path / "fixtures.db"
    write_requests(db, fixture_requests())
    return db


@pytest.fixture
def agent_db(tmp_path: Path) -> Path:
    db = tmp_path / "agent.db"
    write_requests(db, fixture_requests("handmade_agent.otlp"))
    return db


#: The conversations of sessions_db: the OpenInference capture's runs dealt out to them in start order.
CONVERSATIONS = ("support-chat-1", "support-chat-2", "support-chat-3")


def session_requests() -> tuple[list[bytes], list[bytes]]:
    """Traces and logs with conversations: the OpenInference capture's eight runs dealt to CONVERSATIONS
    (``session.id`` on every span, as its ``using_session`` puts it), and the hand-made agent's two tickets
    (``gen_ai.conversation.id``, groundedness 0.92 and 0.18), its evaluation log records included."""
    from helpers import expected_traces, requests_of, sessions_in_turn, with_session_ids

    oi = requests_of(FIXTURES / "openinference_openai.otlp")
    dealt = sessions_in_turn(expected_traces(oi), CONVERSATIONS)
    traces = [*with_session_ids(oi, "session.id", dealt), *fixture_requests("handmade_agent.otlp")]
    return traces, fixture_requests("handmade_agent.logs.otlp")


@pytest.fixture
def sessions_db(tmp_path: Path) -> Path:
    db = tmp_path / "sessions.db"
    traces, logs = session_requests()
    write_requests(db, traces, logs)
    return db


# In-memory readers, filled from the same captures through the same decode and analysis: the tests
# that only drive navigation run over them (the UI cannot tell), the ones that check data over SQLite.


@pytest.fixture
def empty_mem() -> MemoryReader:
    return MemoryReader()


@pytest.fixture
def fixtures_mem() -> MemoryReader:
    return MemoryReader.of(fixture_requests())


@pytest.fixture
def agent_mem() -> MemoryReader:
    return MemoryReader.of(fixture_requests("handmade_agent.otlp"))


def make_app(source: Path | MemoryReader, poll_interval: float | None = None):
    """The app over a database file (its watcher polls it when ``poll_interval`` is set) or an in-memory reader."""
    from tracetui.ui.app import TraceTuiApp

    if isinstance(source, MemoryReader):
        reader, open_reader, pins = source, None, None
    else:
        db = source
        reader, open_reader, pins = SqliteReader(db), (lambda: SqliteReader(db)), SqlitePins(db)
    # freeze_gc=False: gc.freeze() is process-wide; the test process runs many apps.
    return TraceTuiApp(
        reader,
        open_reader=open_reader,
        pins=pins,
        listen="127.0.0.1:4317",
        poll_interval=poll_interval,
        clock=lambda: FIXED_NOW_NS,
        freeze_gc=False,
    )


async def settle(pilot, rounds: int = 3) -> None:
    """Let thread workers finish and their messages be handled."""
    for _ in range(rounds):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

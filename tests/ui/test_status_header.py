"""The header's receiver state, as a user sees it, from what the receiver wrote into the file."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from tests.ui.conftest import FIXED_NOW_NS, settle
from tracetui.store.reader import SqliteReader
from tracetui.ui.widgets.status_header import StatusHeader


def write_status(db, **status) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute(
            "INSERT INTO meta(key, value) VALUES ('receiver', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (json.dumps({"grpc": "127.0.0.1:4317", **status}),),
        )
    finally:
        conn.close()


async def header_text(db, receiver_alive, width: int = 160) -> str:
    from tracetui.ui.app import TraceTuiApp

    app = TraceTuiApp(
        SqliteReader(db), open_reader=lambda: SqliteReader(db), listen="127.0.0.1:4317", poll_interval=0.05, clock=lambda: FIXED_NOW_NS, freeze_gc=False,
        receiver_alive=receiver_alive,
    )  # fmt: skip
    async with app.run_test(size=(width, 30)) as pilot:
        await settle(pilot)
        header = app.screen.query_one(StatusHeader)
        deadline = time.monotonic() + 5
        while header.counters is None and time.monotonic() < deadline:
            await pilot.pause(0.05)
        return str(header.render())


@pytest.mark.parametrize(
    "alive,status,shown",
    [
        (lambda: True, {"state": "listening", "silent_s": 1}, "● 127.0.0.1:4317 grpc"),
        (lambda: True, {"state": "overloaded", "silent_s": 1}, "(busy: exporters asked to retry)"),
        # the receiver runs, but its writes fail (locked by another program, disk full): say so
        (lambda: True, {"state": "listening", "silent_s": 30}, "(cannot write the database for "),
        (lambda: False, {"state": "listening", "silent_s": 1}, "✗ receiver stopped"),
        # `tracetui view`: another process's receiver, judged from the file alone
        (None, {"state": "overloaded", "silent_s": 1}, "(busy: exporters asked to retry)"),
        (None, {"state": "listening", "silent_s": 30}, "○ no receiver writing"),
        (None, {"state": "stopped", "silent_s": 1}, "○ no receiver writing"),
    ],
    ids=["listening", "overloaded", "cannot-write", "stopped", "view-overloaded", "view-stale", "view-stopped"],
)
async def test_the_header_says_what_the_receiver_is_doing(empty_db, alive, status, shown):
    status = dict(status)
    status["heartbeat_ns"] = time.time_ns() - int(status.pop("silent_s") * 1e9)  # its last write, that long ago
    write_status(empty_db, **status)
    assert shown in await header_text(empty_db, alive)


async def test_the_header_says_the_disk_is_full_even_though_the_database_cannot_say_it(empty_db):
    """The receiver's heartbeat is fresh in the file, but its last commit failed for want of space."""
    from tracetui.store.health import HealthFile

    write_status(empty_db, state="listening", heartbeat_ns=time.time_ns())
    health = HealthFile(empty_db)
    health.report("disk full", f"the disk holding {empty_db} is full")
    for alive in (lambda: True, None):  # `serve` and `view`
        assert "✗ disk full: exports are refused (retryable) until space is freed" in await header_text(empty_db, alive)
    health.clear(time.time_ns())  # a later commit stored data: the disk has room again
    assert "disk full" not in await header_text(empty_db, lambda: True)
    health.close()


async def test_the_header_counts_what_retention_evicted(empty_db):
    write_status(empty_db, state="listening", heartbeat_ns=time.time_ns())
    assert "evicted" not in await header_text(empty_db, lambda: True)
    conn = sqlite3.connect(empty_db, isolation_level=None)
    conn.execute("INSERT INTO meta(key, value) VALUES ('evicted_traces', 1234), ('evicted_spans', 12340)")
    conn.close()
    assert "evicted 1.2k traces" in await header_text(empty_db, lambda: True)


@pytest.mark.parametrize("width", [80, 100, 160])
async def test_the_header_drops_whole_sections_when_narrow(empty_db, width):
    """At 80 columns the header ended in a bare "since" (the rest of "since start: $0  0 tok ..." cut):
    a section that does not fit is left out whole."""
    write_status(empty_db, state="listening", heartbeat_ns=time.time_ns())
    text = (await header_text(empty_db, lambda: True, width)).rstrip()
    assert len(text) <= width
    assert "0 traces" in text  # what arrived always shows
    if "since" in text:
        assert "LLM calls" in text
    if width >= 160:
        assert "since start: $0  0 tok  0 LLM calls" in text and "db " in text


async def test_the_header_says_the_index_lags_and_stops_saying_it_once_caught_up(tmp_path):
    """1,500 spans stored and not indexed yet: "indexing 1.5k behind"; the real indexer catches up while the
    UI runs, and the words go (a batch or so behind, under 1,000, is never shown)."""
    import asyncio

    from tests.helpers import fill_db, make_request, make_span, tid
    from tracetui.jobs.indexer import Indexer
    from tracetui.ui.app import TraceTuiApp

    db = tmp_path / "lag.db"
    fill_db(db, [make_request([make_span(tid(t), (s + 1).to_bytes(8, "big"), name=f"step {s}", start=s * 1000)
                               for s in range(100)]) for t in range(1, 16)])  # fmt: skip
    indexer = Indexer(db)  # records its cursor at 0: 1,500 spans behind
    write_status(db, state="listening", heartbeat_ns=time.time_ns())
    app = TraceTuiApp(
        SqliteReader(db), open_reader=lambda: SqliteReader(db), listen="127.0.0.1:4317", poll_interval=0.05,
        clock=lambda: FIXED_NOW_NS, freeze_gc=False, receiver_alive=lambda: True,
    )  # fmt: skip
    try:
        async with app.run_test(size=(160, 30)) as pilot:
            await settle(pilot)
            header = app.screen.query_one(StatusHeader)
            deadline = time.monotonic() + 5
            while "indexing" not in str(header.render()) and time.monotonic() < deadline:
                await pilot.pause(0.05)
            assert "indexing 1.5k behind" in str(header.render())
            await asyncio.to_thread(indexer.catch_up)
            deadline = time.monotonic() + 5
            while "indexing" in str(header.render()) and time.monotonic() < deadline:
                await pilot.pause(0.05)
            assert "indexing" not in str(header.render())
            assert "1.5k" in str(header.render()) or "1,500" in str(header.render())  # the spans are still counted
    finally:
        indexer.close()

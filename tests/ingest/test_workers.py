"""Ingest workers: they decode and write exports in their own processes, under one write lock.

The end-to-end comparison with decoding in place (two real receivers, every
fixture, identical rows) is in ingest/test_receiver_integration.py; these tests drive
the pool directly.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from helpers import integrity, make_request, make_span, sid, stored_counts, stored_span_keys, tid

from tracetui.ingest.workers import InlineDecoder, WorkerPool
from tracetui.otlp.decode import DecodeError
from tracetui.store.writer import Overloaded, StoreUnavailable, Writer


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "workers.db"


@pytest.fixture
def writer(db):
    w = Writer(db)  # creates the schema, runs the checkpoint thread, as in the receiver
    w.start()
    yield w
    w.stop()


@pytest.fixture
def pool(db, writer):
    p = WorkerPool(2, db)
    p.warm()
    writer.backlog = p.backlog
    yield p
    p.close()


def request(trace: int, spans: int, name: str = "s") -> bytes:
    spans_ = [make_span(tid(trace), sid(i), name=f"{name}{i}") for i in range(1, spans + 1)]
    return make_request(spans_).SerializeToString()


def test_exports_from_many_threads_are_all_stored_once(pool, writer, db):
    def send(first: int) -> None:
        for trace in range(first, first + 10):
            assert pool.store(writer, "traces", request(trace, 5)).count == 5

    threads = [threading.Thread(target=send, args=(1 + 10 * n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    pool.store(writer, "traces", request(1, 5))  # a resent export: nothing doubles
    assert stored_counts(db) == (200, 40)
    assert pool.spans_written == 200  # new spans only
    assert integrity(db) == "ok"


def test_parsed_messages_and_rejections_cross_the_boundary(pool, writer, db):
    good = make_span(tid(1), sid(1), name="ok")
    bad = make_span(tid(1), b"\x01\x02", name="short id")
    stored = pool.store(writer, "traces", make_request([good, bad]))  # an already parsed message (HTTP JSON path)
    assert stored.count == 1
    assert stored.rejected == 1 and "invalid span_id (2 bytes)" in stored.rejection_message
    assert stored_span_keys(db) == {(tid(1), sid(1))}


def test_undecodable_bytes_raise_decode_error_with_the_reason(pool, writer, db):
    with pytest.raises(DecodeError, match="not a valid ExportTraceServiceRequest"):
        pool.store(writer, "traces", b"\xff\xff\xff\xff garbage")
    # and the pool still works afterwards
    assert pool.store(writer, "traces", request(2, 1)).count == 1
    assert stored_counts(db) == (1, 1)


def test_a_locked_database_is_retryable_and_the_worker_carries_on(pool, writer, db):
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # `tracetui purge` or an import, in another process
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="database is locked"):
            pool.store(writer, "traces", request(3, 2))
        assert time.monotonic() - started >= 4  # SQLite's busy timeout (5 s) was honoured
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert stored_span_keys(db) == set()
    assert pool.store(writer, "traces", request(3, 2)).count == 2  # the exporter's retry
    assert stored_counts(db) == (2, 1)


def test_a_worker_waiting_for_the_disk_makes_the_next_big_export_retry(db, writer):
    pool = WorkerPool(2, db, max_pending_spans=100)
    pool.warm()
    writer.backlog = pool.backlog
    writer.max_pending_spans = 100  # one setting for both, as in the receiver ("caught up" = under half of it)
    writer.set_status(state="listening")
    assert _wait(lambda: _receiver_state(db) == "listening")
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    outcome: list[object] = []
    waiting = threading.Thread(target=lambda: outcome.append(_try(pool, writer, request(4, 60))))
    try:
        waiting.start()
        assert _wait(lambda: pool.backlog() == 60)  # decoded, waiting for the disk
        with pytest.raises(Overloaded, match="60 spans waiting"):
            pool.store(writer, "traces", request(5, 60))
        assert writer._status["state"] == "overloaded"  # for the UI, once the disk is free
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        waiting.join(30)
    try:
        assert outcome and not isinstance(outcome[0], Exception), outcome
        assert pool.store(writer, "traces", request(5, 60)).count == 60  # the exporter's retry
        assert {t for t, _ in stored_span_keys(db)} == {tid(4), tid(5)}
        assert _wait(lambda: _receiver_state(db) == "listening")  # caught up
    finally:
        pool.close()


def _wait(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _try(pool: WorkerPool, writer: Writer, data: bytes) -> object:
    try:
        return pool.store(writer, "traces", data)
    except Exception as exc:
        return exc


def _receiver_state(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'receiver'").fetchone()
    finally:
        conn.close()
    return json.loads(row[0])["state"] if row else ""


def test_a_killed_worker_costs_nothing(db, writer):
    pool = WorkerPool(1, db)
    try:
        pool.warm()
        (pid,) = pool._pool._processes  # the one worker
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        # The pool notices the dead worker, is rebuilt, and the export is stored.
        assert pool.store(writer, "traces", request(7, 3, name="after the crash")).count == 3
        assert pid not in pool._pool._processes
    finally:
        pool.close()
    assert stored_counts(db) == (3, 1)
    assert integrity(db) == "ok"


def test_inline_and_workers_answer_alike(pool, writer, tmp_path):
    other = Writer(tmp_path / "inline.db")
    other.start()
    try:
        data = make_request([make_span(tid(8), sid(1)), make_span(tid(8), b"")]).SerializeToString()
        assert InlineDecoder().store(other, "traces", data) == pool.store(writer, "traces", data)
    finally:
        other.stop()


def test_the_wal_stays_bounded_and_starts_over_while_workers_write(tmp_path):
    db = tmp_path / "wal.db"
    wal_bytes = 512 * 1024
    writer = Writer(db, wal_bytes=wal_bytes)  # its checkpoint thread serves the workers too
    writer.start()
    pool = WorkerPool(2, db, wal_bytes=wal_bytes)
    wal = Path(f"{db}-wal")
    biggest = 0
    try:

        def send(first: int) -> None:
            nonlocal biggest
            for trace in range(first, first + 40):
                spans = [
                    make_span(tid(trace), sid(i + 1), name=f"s{i}", attributes={"prompt": "x" * 2500})
                    for i in range(60)
                ]
                pool.store(writer, "traces", make_request(spans).SerializeToString())
                biggest = max(biggest, wal.stat().st_size)

        threads = [threading.Thread(target=send, args=(1 + 40 * n,)) for n in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        checkpointer = writer._checkpointer
        assert checkpointer is not None and checkpointer.checkpoints > 0
        # (Who copied the last frames so that the WAL could start over, the thread's
        # follow-up under the write lock or a worker past the hard bound, is timing.)
    finally:
        pool.close()
        writer.stop()
    # ~24 MB of WAL frames were written: bounded at ~4 MB, the WAL started over many times.
    assert biggest < 9 * wal_bytes, f"WAL grew to {biggest} bytes"
    assert stored_counts(db) == (80 * 60, 80)
    assert integrity(db) == "ok"


def test_exports_queued_past_the_byte_bound_are_told_to_retry(db, writer):
    from tracetui.ingest.ack import Outcome, ingest

    first = request(9, 60)
    pool = WorkerPool(2, db, max_queued_bytes=len(first))
    pool.warm()
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the first export waits in a worker for the disk
    results: list[object] = []
    sender = threading.Thread(target=lambda: results.append(ingest(writer, "traces", first, pool)))
    try:
        sender.start()
        assert _wait(lambda: pool.busy(writer) is not None)
        writer.backlog = pool.backlog
        writer.set_status(state="listening")
        turned_away = ingest(writer, "traces", request(10, 1), pool)
        assert turned_away.outcome is Outcome.BUSY
        assert "(1 export, " in turned_away.message and "waiting for an ingest worker" in turned_away.message
        assert writer._status["state"] == "overloaded"  # for the UI
        assert pool.backlog() == pool.max_pending_spans  # and it stays so while the bytes are queued
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        sender.join(30)
    try:
        (answer,) = results
        assert answer.outcome is Outcome.OK
        assert pool.busy(writer) is None
        assert _wait(lambda: _receiver_state(db) == "listening")  # caught up
        assert ingest(writer, "traces", request(10, 1), pool).outcome is Outcome.OK  # the retry
    finally:
        pool.close()
    assert {t for t, _ in stored_span_keys(db)} == {tid(9), tid(10)}


def test_a_worker_killed_while_holding_the_write_lock_does_not_wedge_the_others(db, writer):
    pool = WorkerPool(1, db)
    pool.warm()
    (pid,) = pool._pool._processes
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the worker takes the write lock, then waits for SQLite's
    results: list[object] = []
    sender = threading.Thread(target=lambda: results.append(_try(pool, writer, request(11, 3))))
    try:
        sender.start()
        assert _wait(lambda: pool.backlog() == 3)  # decoded, inside the lock
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)  # the rebuilt pool retries the export; its worker now needs the lock
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    started = time.monotonic()
    sender.join(30)
    try:
        (stored,) = results
        assert not isinstance(stored, Exception), stored
        assert time.monotonic() - started < 10  # not the 20 s commit timeout of a wedged lock
        assert pid not in pool._pool._processes
    finally:
        pool.close()
    assert stored_counts(db) == (3, 1)
    assert integrity(db) == "ok"

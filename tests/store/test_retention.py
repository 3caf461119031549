"""Retention evicts whole oldest traces, never a pinned one; purge empties the database."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
from helpers import make_request, make_span, sid, tid

from tracetui.otlp.decode import decode_spans
from tracetui.store.reader import SqliteReader
from tracetui.store.retention import Retention, enforce, parse_age, purge, used_bytes
from tracetui.store.schema import connect_writer
from tracetui.store.writer import Writer

NOW = time.time_ns()


def _noise(seed: int, size: int) -> str:
    """Text that does not compress (stored spans are deflated): its size is what it takes on disk."""
    import random

    return random.Random(seed).randbytes(size // 2).hex()


def fill(db: Path, traces: int, spans_per_trace: int = 5, *, age_s: float = 0, big: int = 0) -> None:
    writer = Writer(db)
    writer.start()
    try:
        for n in range(traces):
            # trace n starts n seconds after the first: trace 0 is the oldest
            start = NOW - int(age_s * 1e9) - (traces - n) * 10**9 - 1_700_000_000_000_000_000
            spans = [
                make_span(tid(n), sid(k + 1), sid(1) if k else None, name=f"t{n}s{k}", start=start + k * 1000,
                          attributes={"payload": _noise(n * 100 + k, big)} if big else None)
                for k in range(spans_per_trace)
            ]  # fmt: skip
            ticket = writer.submit(decode_spans(make_request(spans)))
            assert ticket.wait(10) and ticket.error is None
    finally:
        writer.stop()


def remaining(db: Path) -> list[bytes]:
    return sorted(t.trace_id for t in SqliteReader(db).traces(0, -1))


def test_max_spans_evicts_whole_oldest_traces(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    fill(db, 20)
    conn = connect_writer(db)
    evicted = enforce(conn, Retention(max_spans=50))
    kept = remaining(db)
    assert evicted == len(set(tid(n) for n in range(20)) - set(kept))
    assert kept == [tid(n) for n in range(20 - len(kept), 20)]  # the newest survive
    reader = SqliteReader(db)
    assert reader.counters().span_count == sum(t.span_count for t in reader.traces(0, -1)) <= 50
    assert all(t.span_count == 5 for t in reader.traces(0, -1))  # never half a trace
    assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == reader.counters().span_count
    # the list's count (the writer's, in meta) is the table's, at the front and at an arrival horizon
    assert reader.count_traces() == conn.execute("SELECT count(*) FROM traces").fetchone()[0] == len(kept)
    horizon = sorted(t.seq for t in reader.traces(0, -1))[2]
    assert reader.count_traces(horizon) == 3


def test_a_pinned_trace_is_never_evicted(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    fill(db, 10)
    conn = connect_writer(db)
    conn.execute("INSERT INTO pins(owner, trace_id, updated_ns) VALUES ('ui:1', ?, ?)", (tid(0), time.time_ns()))
    enforce(conn, Retention(max_spans=10))
    assert tid(0) in remaining(db)  # the oldest, but on screen
    # A stale pin (a UI that died long ago) does not protect anything.
    conn.execute("UPDATE pins SET updated_ns = 0")
    enforce(conn, Retention(max_spans=4))
    assert tid(0) not in remaining(db)


def test_max_age(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    fill(db, 5, age_s=3 * 3600)  # three hours old
    fill(db, 0)
    conn = connect_writer(db)
    assert enforce(conn, Retention(max_age_s=parse_age("1h"))) == 5
    assert remaining(db) == []


def test_max_db_size(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    fill(db, 40, big=20_000)
    conn = connect_writer(db)
    limit = used_bytes(conn) // 2
    enforce(conn, Retention(max_db_bytes=limit))
    assert used_bytes(conn) <= limit
    assert 0 < len(remaining(db)) < 40


def test_evicted_traces_take_their_evaluations_and_logs(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    span = make_span(tid(1), sid(1), name="chat", attributes={"gen_ai.operation.name": "chat"})
    span.events.add(name="gen_ai.evaluation.result", time_unix_nano=span.start_time_unix_nano)
    span.events[0].attributes.add(key="gen_ai.evaluation.name").value.string_value = "groundedness"
    span.events[0].attributes.add(key="gen_ai.evaluation.score.value").value.double_value = 0.3
    writer = Writer(db)
    writer.start()
    writer.submit(decode_spans(make_request([span]))).wait(10)
    writer.stop()
    conn = connect_writer(db)
    assert conn.execute("SELECT count(*) FROM evaluations").fetchone()[0] == 1
    enforce(conn, Retention(max_spans=0))
    assert conn.execute("SELECT count(*) FROM evaluations").fetchone()[0] == 0


def test_purge_empties_everything(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    fill(db, 10)
    conn = connect_writer(db)
    assert purge(conn) == 50
    reader = SqliteReader(db)
    assert reader.traces(0, -1) == [] and reader.counters().span_count == 0 and reader.count_traces() == 0
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("1.5h", 5400)]
)
def test_parse_age(text: str, seconds: float) -> None:
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1d", "5y", "1h30m"])
def test_parse_age_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_age(text)


def _commit_trace(db: Path, n: int, retention: Retention, start: int = 0) -> None:
    """One export of one 5-span trace through a Committer (what an ingest worker does), retention on."""
    from tracetui.store.batch import prepare
    from tracetui.store.writer import Committer

    spans = [make_span(tid(n), sid(k + 1), sid(1) if k else None, name=f"t{n}s{k}", start=start + k) for k in range(5)]
    committer = Committer(db, retention=retention)
    try:
        committer.commit([prepare(decode_spans(make_request(spans)))])
    finally:
        committer.close()


def test_a_commit_never_evicts_what_it_writes(tmp_path: Path) -> None:
    """Even the oldest trace of all survives the commit that stores it (it is acknowledged, so committed first)."""
    db = tmp_path / "c.db"
    fill(db, 20)
    _commit_trace(db, 100, Retention(max_spans=10), start=-(10**15))  # older than everything stored
    assert remaining(db) == [tid(100)]
    assert SqliteReader(db).counters().evicted_traces == 20
    _commit_trace(db, 101, Retention(max_spans=8))  # the next commit may evict it
    assert remaining(db) == [tid(101)]


def test_a_limit_far_below_the_database_is_reached_over_commits(tmp_path: Path, monkeypatch) -> None:
    """Each commit evicts a bounded amount (at least twice what it adds), so no transaction holds the lock long."""
    from tracetui.store import retention

    monkeypatch.setattr(retention, "MIN_EVICT_SPANS", 20)
    db = tmp_path / "l.db"
    fill(db, 20)  # 100 spans
    counts = []
    for n in range(100, 110):
        _commit_trace(db, n, Retention(max_spans=10))
        counts.append(SqliteReader(db).counters().span_count)
    assert counts[0] == 100 + 5 - 20  # 4 traces of 5 spans: the budget
    assert all(b <= a - 15 for a, b in itertools.pairwise(counts) if b > 10)  # shrinking by budget - added
    assert counts[-1] <= 10

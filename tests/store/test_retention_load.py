"""Retention holds under any load the receiver accepts: a flood never takes the database past its limit.

The real receiver (its ingest workers write and evict), raw gRPC clients over
loopback sending as fast as they are answered, and an observer reading the
database the whole time: every observation must be within the bound the
receiver guarantees (tracetui.store.retention): ``--max-spans N`` plus one
export, since each worker commits one export at a time and never evicts the
traces of the commit it is making.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from helpers import EXPORT_METHOD, channel_to, make_request, make_span

MAX_SPANS = 2_000
SPANS_PER_REQUEST = 200
CLIENTS = 4
#: Marks the trace ids of the template request; each send swaps in a fresh nonce.
MARKER = b"\xa5\x5a\xc3\x3c\x96\x69\x0f\xf0"
#: A flood that has not reached its span count by then stops, and its test says how far it got.
FLOOD_DEADLINE_S = 120.0


def _template(spans_per_trace: int) -> bytes:
    """One request of SPANS_PER_REQUEST small spans, its trace ids all starting with MARKER."""
    spans = []
    for t in range(SPANS_PER_REQUEST // spans_per_trace):
        trace_id = MARKER + t.to_bytes(8, "big")
        for k in range(spans_per_trace):
            span_id = (k + 1).to_bytes(8, "big")
            parent = (1).to_bytes(8, "big") if k else None
            spans.append(make_span(trace_id, span_id, parent, name=f"step {k}", start=k * 1000,
                                   attributes={"gen_ai.operation.name": "chat"}))  # fmt: skip
    return make_request(spans).SerializeToString()


@dataclass
class Flood:
    """Client threads that send the template, each send with fresh trace ids, until stopped."""

    port: int
    template: bytes
    acked: int = 0
    refused: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, client: int) -> None:
        channel = channel_to(self.port)
        export = channel.unary_unary(EXPORT_METHOD, request_serializer=None, response_deserializer=None)
        seq = 0
        try:
            while not self.stop.is_set():
                seq += 1
                data = self.template.replace(MARKER, client.to_bytes(2, "big") + seq.to_bytes(6, "big"))
                try:
                    export(data, timeout=30)
                except grpc.RpcError as exc:
                    assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED), exc
                    with self._lock:
                        self.refused += 1
                    time.sleep(0.05)
                    continue
                with self._lock:
                    self.acked += SPANS_PER_REQUEST
        finally:
            channel.close()


@dataclass
class Observation:
    spans: int
    db_bytes: int
    wal_bytes: int


def _observe(db: Path, stop: threading.Event, seen: list[Observation]) -> None:
    """Read the span count (the rows themselves, not a counter) and the file sizes, as often as possible."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=5000")
    try:
        while not stop.is_set():
            spans = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
            wal = Path(f"{db}-wal")
            seen.append(Observation(spans, db.stat().st_size, wal.stat().st_size if wal.exists() else 0))
            time.sleep(0.005)
    finally:
        conn.close()


def flood(
    start_rcv, spans_per_trace: int, at_least: int, *args: str, seconds: float = 0.0
) -> tuple[Flood, list[Observation], Path]:
    """Flood until ``at_least`` spans are acknowledged (and ``seconds`` have passed): a slow machine floods longer."""
    rcv = start_rcv(*args)
    run = Flood(rcv.port, _template(spans_per_trace))
    seen: list[Observation] = []
    stop_observing = threading.Event()
    observer = threading.Thread(target=_observe, args=(rcv.db_path, stop_observing, seen))
    clients = [threading.Thread(target=run.run, args=(n,)) for n in range(CLIENTS)]
    observer.start()
    for t in clients:
        t.start()
    started = time.monotonic()
    deadline = started + max(seconds, FLOOD_DEADLINE_S)
    while (run.acked < at_least or time.monotonic() - started < seconds) and time.monotonic() < deadline:
        time.sleep(0.05)
    run.stop.set()
    for t in clients:
        t.join(60)
    stop_observing.set()
    observer.join(10)
    return run, seen, rcv.db_path


def _check_bound(run: Flood, seen: list[Observation], db: Path) -> None:
    bound = MAX_SPANS + SPANS_PER_REQUEST
    assert seen, "the observer never read the database"
    worst = max(o.spans for o in seen)
    assert worst <= bound, f"{worst} spans stored at one observation; the bound is {bound}"
    # The flood was far beyond what the limit holds: retention really ran, at the ingest rate.
    assert run.acked >= 5 * MAX_SPANS, f"only {run.acked} spans acknowledged"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    stored = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
    # Every acknowledged span is either stored or counted as evicted: nothing vanished.
    assert stored + meta["evicted_spans"] == run.acked
    assert meta["span_count"] == stored <= bound
    # Whole traces only: every stored trace has all its spans, and the rows agree with the spans.
    partial = conn.execute(
        "SELECT count(*) FROM traces t WHERE span_count != (SELECT count(*) FROM spans s WHERE s.trace_id = t.trace_id)"
    ).fetchone()[0]
    assert partial == 0
    orphans = conn.execute("SELECT count(*) FROM spans WHERE trace_id NOT IN (SELECT trace_id FROM traces)").fetchone()
    assert orphans == (0,)
    conn.close()


@pytest.mark.parametrize("spans_per_trace", [10, 1], ids=["10-span traces", "1-span traces"])
def test_max_spans_holds_at_every_observation_of_a_flood(start_rcv, spans_per_trace: int) -> None:
    run, seen, db = flood(start_rcv, spans_per_trace, 5 * MAX_SPANS, "--max-spans", str(MAX_SPANS))
    _check_bound(run, seen, db)
    # The database file is bounded too: freed pages are reused, so it stays near what the limit holds.
    data_bytes = max(o.db_bytes for o in seen)
    assert data_bytes < 8 * 1024 * 1024, f"database file grew to {data_bytes} bytes for {MAX_SPANS} small spans"
    _check_wal(seen)


def _check_wal(seen: list[Observation]) -> None:
    """The WAL is bounded by the checkpoint thread, whatever retention does (tracetui.store.checkpoint)."""
    from tracetui.store.checkpoint import LIMIT_FACTOR, WAL_BYTES

    wal = max(o.wal_bytes for o in seen)
    assert wal <= LIMIT_FACTOR * WAL_BYTES + 8 * 1024 * 1024, f"the WAL reached {wal} bytes"


@pytest.mark.slow
@pytest.mark.parametrize("spans_per_trace", [10, 1], ids=["10-span traces", "1-span traces"])
def test_max_spans_holds_through_a_long_flood(start_rcv, spans_per_trace: int) -> None:
    run, seen, db = flood(start_rcv, spans_per_trace, 5 * MAX_SPANS, "--max-spans", str(MAX_SPANS), seconds=30.0)
    _check_bound(run, seen, db)
    assert max(o.db_bytes for o in seen) < 8 * 1024 * 1024
    _check_wal(seen)


def test_a_pinned_trace_survives_a_flood(start_rcv, tmp_path: Path) -> None:
    """The trace a UI has open is never evicted, however much arrives after it."""
    rcv = start_rcv("--max-spans", str(MAX_SPANS))
    first = bytes(range(1, 17))
    channel = channel_to(rcv.port)
    export = channel.unary_unary(EXPORT_METHOD, request_serializer=None, response_deserializer=None)
    span = make_span(first, (1).to_bytes(8, "big"), None, name="on screen")
    export(make_request([span]).SerializeToString(), timeout=10)
    channel.close()
    writer = sqlite3.connect(rcv.db_path, isolation_level=None)
    writer.execute("INSERT INTO pins(owner, trace_id, updated_ns) VALUES ('ui:test', ?, ?)", (first, time.time_ns()))
    writer.close()
    run = Flood(rcv.port, _template(10))
    clients = [threading.Thread(target=run.run, args=(n,)) for n in range(2)]
    for t in clients:
        t.start()
    time.sleep(1.5)
    run.stop.set()
    for t in clients:
        t.join(60)
    conn = sqlite3.connect(f"file:{rcv.db_path}?mode=ro", uri=True)
    assert conn.execute("SELECT name FROM spans WHERE trace_id = ?", (first,)).fetchall() == [("on screen",)]
    assert dict(conn.execute("SELECT key, value FROM meta"))["evicted_spans"] > 0
    conn.close()


def test_status_reports_what_retention_evicted(start_rcv) -> None:
    """`tracetui status --json` and the header's counters say how much retention removed."""
    import json
    import subprocess
    import sys

    from helpers import receiver_env

    run, _seen, db = flood(start_rcv, 10, 2 * MAX_SPANS, "--max-spans", str(MAX_SPANS))
    out = subprocess.run([sys.executable, "-m", "tracetui", "status", "--json", "--db", str(db)],
                         capture_output=True, text=True, env=receiver_env(), check=True, cwd=db.parent).stdout  # fmt: skip
    status = json.loads(out)
    assert status["evicted_spans"] > 0 and status["evicted_traces"] == status["evicted_spans"] // 10
    assert status["span_count"] + status["evicted_spans"] == run.acked
    assert status["span_count"] <= MAX_SPANS + SPANS_PER_REQUEST
    assert os.path.exists(db)


def test_max_db_mb_holds_at_every_observation_of_a_flood(start_rcv) -> None:
    """The data (pages in use) stays under --max-db-mb, so the file does too: freed pages are reused."""
    limit_mb = 3
    run, seen, db = flood(start_rcv, 10, 20_000, "--max-db-mb", str(limit_mb))
    assert run.acked >= 20_000, f"only {run.acked} spans acknowledged"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    assert dict(conn.execute("SELECT key, value FROM meta"))["evicted_spans"] > 0
    conn.close()
    # One commit's pages over the limit at most (an export of small spans is well under 1 MB).
    worst = max(o.db_bytes for o in seen)
    assert worst <= (limit_mb + 1) * 1024 * 1024, f"the database file reached {worst} bytes"


def test_max_age_holds_at_every_observation_of_a_flood(start_rcv) -> None:
    """Spans older than --max-age are gone by the next commit: at most one export's worth is ever stored."""
    run, seen, _db = flood(start_rcv, 10, 10_000, "--max-age", "1h")  # the template's spans are from 2023
    assert run.acked >= 10_000
    worst = max(o.spans for o in seen)
    assert worst <= SPANS_PER_REQUEST, f"{worst} expired spans stored at one observation"

"""The SQLite store: the writer (group commit, trace rows) and the read-only Reader, on real files."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest
from helpers import BASE_NS, kv_list, make_request, make_span, query_ro, sid, stored_span_keys, tid
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from tracetui.model.rows import Decoded
from tracetui.otlp.decode import decode_logs, decode_spans, parse_trace_request
from tracetui.store.reader import SqliteReader
from tracetui.store.schema import SCHEMA_VERSION, SchemaTooNew
from tracetui.store.writer import Overloaded, StoreUnavailable, Writer

ERROR, OK, UNSET = 2, 1, 0


def decoded(*spans, service="test-svc"):
    return decode_spans(parse_trace_request(make_request(list(spans), service=service).SerializeToString()))


_readers: list[SqliteReader] = []


def reader_for(db: Path) -> SqliteReader:
    """A Reader that is closed when the test ends."""
    reader = SqliteReader(db)
    _readers.append(reader)
    return reader


@pytest.fixture(autouse=True)
def _close_readers():
    yield
    while _readers:
        _readers.pop().close()


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def writer(db):
    w = Writer(db)
    w.start()
    yield w
    w.stop()


def store(writer: Writer, *spans, service="test-svc") -> None:
    ticket = writer.submit(decoded(*spans, service=service))
    assert ticket.wait(10), "not committed"
    assert ticket.error is None, ticket.error


def trace_row(db: Path, trace_id: bytes) -> dict:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM traces WHERE trace_id = ?", (trace_id,)).fetchone()
        return dict(row) if row else {}
    finally:
        conn.close()


def comparable(row: dict) -> dict:
    """A trace row without what legitimately differs between databases (arrival seq, wall clock)."""
    return {k: v for k, v in row.items() if k not in ("id", "updated_ns")}


def llm_span(trace, span, parent, name, start, tokens_in, tokens_out, cost, status=UNSET):
    return make_span(
        trace, span, parent, name=name, start=start, duration=500, status=status,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": tokens_in,
            "gen_ai.usage.output_tokens": tokens_out,
            "gen_ai.usage.cost": cost,
        },
    )  # fmt: skip


def agent_trace(n: int = 1):
    """A root, an LLM call that failed, a fallback LLM call and a tool call, in one trace."""
    t = tid(n)
    return [
        make_span(t, sid(1), name="agent run", start=0, duration=10_000),
        llm_span(t, sid(2), sid(1), "chat gpt-4o", 100, 50, 0, 0.001, status=ERROR),
        llm_span(t, sid(3), sid(1), "chat claude", 2_000, 60, 20, 0.002, status=OK),
        make_span(t, sid(4), sid(3), name="tool lookup", start=3_000, duration=100),
    ]


# --- the file -----------------------------------------------------------------------


def test_new_database_is_wal_with_schema_version_and_tables(writer, db):
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 1
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"spans", "traces"} <= tables
        span_cols = {r[1] for r in conn.execute("PRAGMA table_info(spans)")}
        assert {"trace_id", "span_id", "parent_span_id", "name", "start_ns", "end_ns", "raw"} <= span_cols
    finally:
        conn.close()


def test_database_files_are_owner_only_even_with_a_permissive_umask(db):
    old = os.umask(0)
    try:
        w = Writer(db)
    finally:
        os.umask(old)
    w.start()
    try:
        store(w, *agent_trace())
        for path in (db, db.with_name(db.name + "-wal")):
            assert path.exists()
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        w.stop()


def test_reopening_keeps_data_and_version(db):
    w = Writer(db)
    w.start()
    store(w, *agent_trace())
    w.stop()
    w = Writer(db)
    w.start()
    try:
        store(w, *agent_trace(2))
    finally:
        w.stop()
    reader = reader_for(db)
    assert {t.trace_id for t in reader.traces()} == {tid(1), tid(2)}
    assert reader.counters().span_count == 8


def test_a_database_from_a_newer_tracetui_is_refused(db):
    Writer(db).stop()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaTooNew):
        Writer(db)
    with pytest.raises(SchemaTooNew):
        reader_for(db)


def test_reader_never_creates_a_missing_database(tmp_path):
    missing = tmp_path / "nope.db"
    with pytest.raises(FileNotFoundError):
        SqliteReader(missing)
    assert not missing.exists()


# --- writing ------------------------------------------------------------------------------


def test_committed_batch_is_readable_with_its_trace_row(writer, db):
    store(writer, *agent_trace(1), *agent_trace(2)[:2])
    reader = reader_for(db)
    t1 = reader.trace(tid(1))
    assert t1.has_root and t1.name == "agent run"
    assert t1.service == "test-svc"
    assert t1.span_count == 4
    assert t1.error_count == 1
    assert t1.duration_ns == 10_000
    assert t1.llm_calls == 2 and t1.input_tokens == 110 and t1.output_tokens == 20
    assert t1.cost_usd == pytest.approx(0.003)
    spans = {s.name: s for s in reader.spans(tid(1))}
    assert spans["agent run"].parent_span_id is None
    assert spans["chat claude"].parent_span_id == sid(1)
    assert spans["tool lookup"].parent_span_id == sid(3)
    assert reader.trace(tid(2)).span_count == 2
    counters = reader.counters()
    assert (counters.span_count, counters.trace_count) == (6, 2)


def test_error_count_counts_only_error_status(writer, db):
    t = tid(3)
    store(
        writer,
        make_span(t, sid(1), status=UNSET),
        make_span(t, sid(2), sid(1), status=OK),
        make_span(t, sid(3), sid(1), status=ERROR, message="timeout"),
        make_span(t, sid(4), sid(1), status=ERROR),
    )
    store(writer, make_span(t, sid(5), sid(1), status=ERROR))  # the incremental path too
    assert reader_for(db).trace(t).error_count == 3


def test_resent_batch_is_stored_once(writer, db):
    spans = agent_trace()
    store(writer, *spans)
    store(writer, *spans)
    assert len(stored_span_keys(db)) == 4
    reader = reader_for(db)
    row = reader.trace(tid(1))
    assert (row.span_count, row.error_count, row.llm_calls, row.input_tokens) == (4, 1, 2, 110)
    assert row.cost_usd == pytest.approx(0.003)
    counters = reader.counters()
    assert (counters.span_count, counters.trace_count) == (4, 1)


def test_a_request_holding_the_same_span_twice_stores_it_once(writer, db):
    spans = agent_trace()
    store(writer, *spans, spans[1], spans[2])
    assert reader_for(db).trace(tid(1)).span_count == 4
    assert reader_for(db).counters().span_count == 4


def fresh_row(tmp_path: Path, spans) -> dict:
    db = tmp_path / f"fresh-{len(list(tmp_path.iterdir()))}.db"
    w = Writer(db)
    w.start()
    try:
        store(w, *spans)
    finally:
        w.stop()
    return comparable(trace_row(db, spans[0].trace_id))


def test_resend_with_new_spans_gives_the_same_trace_row_as_a_fresh_database(writer, db, tmp_path):
    spans = agent_trace()
    store(writer, *spans[1:3])  # two children
    store(writer, *spans)  # resent with the rest: the duplicates take the rebuild path
    fresh_dir = tmp_path / "fresh"
    fresh_dir.mkdir()
    assert comparable(trace_row(db, tid(1))) == fresh_row(fresh_dir, spans)


@pytest.mark.parametrize(
    "batches",
    [
        [[3], [2], [1], [0]],  # leaves first, root last
        [[1, 2], [0, 3]],
        [[0], [1, 2, 3]],
        [[3, 1], [0], [2]],
    ],
    ids=["one-by-one-root-last", "root-with-leaf", "root-first", "root-in-the-middle"],
)
def test_incremental_trace_row_equals_the_one_built_at_once(writer, db, tmp_path, batches):
    spans = agent_trace()
    for batch in batches:
        store(writer, *[spans[i] for i in batch])
    fresh_dir = tmp_path / "fresh"
    fresh_dir.mkdir()
    assert comparable(trace_row(db, tid(1))) == fresh_row(fresh_dir, spans)


def test_a_resend_does_not_rename_a_rootless_trace_when_start_times_tie(writer, db):
    # Coarse clocks give siblings equal start times; the stand-in name must not
    # flip just because an exporter resent a batch.
    t = tid(6)
    first = make_span(t, sid(9), sid(1), name="arrived first", start=100)
    second = make_span(t, sid(2), sid(1), name="arrived second", start=100)
    store(writer, first)
    store(writer, second)
    assert reader_for(db).trace(t).name == "arrived first"
    store(writer, first, second)
    assert reader_for(db).trace(t).name == "arrived first"


def test_children_before_root_show_no_root_until_it_arrives(writer, db):
    t = tid(7)
    root = make_span(t, sid(1), name="ticket-resolution agent", start=0, duration=5_000_000)
    late = make_span(t, sid(2), sid(1), name="step late", start=500)
    early = make_span(t, sid(3), sid(1), name="step early", start=200)
    earliest = make_span(t, sid(4), sid(1), name="step earliest", start=100)

    store(writer, late, early, service="tools")
    reader = reader_for(db)
    assert trace_row(db, t)["root_name"] is None
    row = reader.trace(t)
    assert not row.has_root
    assert row.name == "step early"  # the earliest span seen so far stands in
    assert row.to_json()["has_root"] is False

    store(writer, earliest, service="tools")
    row = reader.trace(t)
    assert not row.has_root and row.name == "step earliest" and row.span_count == 3

    store(writer, root, service="agent")
    row = reader.trace(t)
    assert row.has_root
    assert row.name == "ticket-resolution agent"
    assert trace_row(db, t)["root_name"] == "ticket-resolution agent"
    assert row.service == "agent"  # the root's service names the run
    assert row.span_count == 4
    assert row.start_ns == root.start_time_unix_nano
    assert row.end_ns == root.end_time_unix_nano


def test_raw_attributes_events_links_and_resource_are_kept(writer, db):
    t = tid(8)
    span = make_span(
        t, sid(2), sid(1), name="chat", status=ERROR, message="upstream timeout",
        attributes={"gen_ai.request.model": "gpt-4o", "n": 3, "ratio": 0.5, "ok": False, "tags": ["a", "b"],
                    "blob": b"\x01\x02", "nested": {"k": "v"}},
    )  # fmt: skip
    span.trace_state = "vendor=1"
    span.dropped_attributes_count = 2
    event = span.events.add(name="exception", time_unix_nano=span.start_time_unix_nano + 5)
    event.attributes.add(key="exception.type").value.string_value = "TimeoutError"
    link = span.links.add(trace_id=tid(9), span_id=sid(9), trace_state="a=b")
    link.attributes.add(key="link.reason").value.string_value = "fallback of"
    request = make_request([span], service="my-agent", **{"deployment.environment": "dev", "pid": 42})
    request.resource_spans[0].scope_spans[0].scope.name = "my.instrumentation"
    request.resource_spans[0].scope_spans[0].scope.version = "1.2.3"
    ticket = writer.submit(decode_spans(parse_trace_request(request.SerializeToString())))
    assert ticket.wait(10) and ticket.error is None

    detail = reader_for(db).span_detail(t, sid(2))
    assert detail.attributes == {
        "gen_ai.request.model": "gpt-4o", "n": 3, "ratio": 0.5, "ok": False, "tags": ["a", "b"],
        "blob": "0102", "nested": {"k": "v"},
    }  # fmt: skip
    assert detail.events == [
        {
            "name": "exception",
            "time_ns": span.start_time_unix_nano + 5,
            "attributes": {"exception.type": "TimeoutError"},
        }
    ]
    assert detail.links == [
        {"trace_id": tid(9).hex(), "span_id": sid(9).hex(), "attributes": {"link.reason": "fallback of"},
         "trace_state": "a=b"}
    ]  # fmt: skip
    assert detail.resource == {"deployment.environment": "dev", "pid": 42, "service.name": "my-agent"}
    assert detail.scope["name"] == "my.instrumentation" and detail.scope["version"] == "1.2.3"
    assert detail.trace_state == "vendor=1"
    assert detail.row["status_message"] == "upstream timeout"
    assert detail.row["dropped_attributes"] == 2
    assert reader_for(db).span_detail(t, sid(99)) is None


def test_trace_ids_by_prefix(writer, db):
    a = bytes.fromhex("abcd0000000000000000000000000001")
    b = bytes.fromhex("abce0000000000000000000000000002")
    store(writer, make_span(a, sid(1)), make_span(b, sid(1)))
    reader = reader_for(db)
    assert reader.trace_ids_starting(a.hex()) == [a]
    assert reader.trace_ids_starting(a.hex().upper()) == [a]
    assert reader.trace_ids_starting("abcd") == [a]
    assert reader.trace_ids_starting("abce0") == [b]
    assert reader.trace_ids_starting("abc") == [a, b]  # ambiguous
    assert reader.trace_ids_starting("abc", limit=1) == [a]
    assert reader.trace_ids_starting("ffff") == []  # no such trace
    assert reader.trace_ids_starting("not-hex") == []
    assert reader.trace_ids_starting("") == []
    assert reader.trace_ids_starting(a.hex() + "0") == []  # longer than an id
    assert reader.trace_ids_starting(tid(404).hex()) == []  # a well-formed id that was never stored


def test_absurd_numbers_never_fail_a_commit(writer, db):
    """One hostile exporter must not make a group commit fail for everyone in it."""
    hostile = {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 2**63 - 1,
               "gen_ai.usage.output_tokens": 2**63 - 1, "gen_ai.response.time_to_first_chunk": 1e200}  # fmt: skip
    bad = [make_span(tid(1), sid(i), name=f"hostile {i}", attributes=hostile) for i in range(1, 4)]
    innocent = agent_trace(2)
    tickets = [writer.submit(decoded(*bad)), writer.submit(decoded(*innocent))]
    for ticket in tickets:
        assert ticket.wait(10) and ticket.error is None, ticket.error
    resent = writer.submit(decoded(*bad))  # the rebuild path sums in SQL
    assert resent.wait(10) and resent.error is None, resent.error
    reader = reader_for(db)
    assert reader.trace(tid(1)).span_count == 3
    assert reader.trace(tid(2)).span_count == 4
    assert reader.trace(tid(2)).input_tokens == 110


# --- back-pressure and failures ----------------------------------------------------------------


def hold_write_lock(db: Path) -> sqlite3.Connection:
    """Another process-like connection holding the write lock on the same file."""
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    return blocker


def test_overloaded_when_too_many_spans_wait_and_nothing_accepted_is_lost(db):
    writer = Writer(db, max_pending_spans=10)
    writer.start()
    try:
        blocker = hold_write_lock(db)
        first = writer.submit(decoded(*[make_span(tid(1), sid(i)) for i in range(1, 7)]))  # 6 waiting
        second = writer.submit(decoded(*[make_span(tid(2), sid(i)) for i in range(1, 5)]))  # 10 waiting: at the limit
        rejected = decoded(make_span(tid(3), sid(1)))
        with pytest.raises(Overloaded):
            writer.submit(rejected)
        assert not first.wait(0.05), "acknowledged while the database was locked"
        blocker.execute("ROLLBACK")
        blocker.close()

        for ticket in (first, second):
            assert ticket.wait(10) and ticket.error is None
        keys = stored_span_keys(db)
        assert keys == {(tid(1), sid(i)) for i in range(1, 7)} | {(tid(2), sid(i)) for i in range(1, 5)}
        assert writer.pending_spans == 0

        retry = writer.submit(rejected)  # the exporter's retry is accepted once the queue drained
        assert retry.wait(10) and retry.error is None
        assert (tid(3), sid(1)) in stored_span_keys(db)
    finally:
        writer.stop()


def test_a_single_request_larger_than_the_queue_is_still_accepted_when_idle(db):
    writer = Writer(db, max_pending_spans=5)
    writer.start()
    try:
        store(writer, *[make_span(tid(1), sid(i)) for i in range(1, 21)])
        assert len(stored_span_keys(db)) == 20
    finally:
        writer.stop()


def test_a_locked_database_gives_a_retryable_error_and_the_writer_carries_on(db):
    writer = Writer(db)
    # The real busy timeout is 5 s; shorten it so the test does not sit through it.
    writer._conn.execute("PRAGMA busy_timeout=100")
    writer.start()
    try:
        blocker = hold_write_lock(db)
        spans = agent_trace()
        ticket = writer.submit(decoded(*spans))
        assert ticket.wait(10)
        assert isinstance(ticket.error, StoreUnavailable)
        assert "locked" in str(ticket.error)
        blocker.execute("ROLLBACK")
        blocker.close()
        assert stored_span_keys(db) == set()

        store(writer, *spans)  # the exporter retries: accepted, stored once
        assert len(stored_span_keys(db)) == 4
        assert reader_for(db).trace(tid(1)).span_count == 4
    finally:
        writer.stop()


def test_stop_writes_everything_queued_then_refuses_more(db):
    writer = Writer(db)
    writer.start()
    tickets = [writer.submit(decoded(*agent_trace(n))) for n in range(1, 11)]
    writer.stop()
    assert all(t.done.is_set() and t.error is None for t in tickets)
    assert len(stored_span_keys(db)) == 40
    with pytest.raises(StoreUnavailable):
        writer.submit(decoded(*agent_trace(11)))
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


# --- WAL checkpoints and the source cache -------------------------------------------


def test_checkpoints_keep_the_wal_bounded_without_stopping_the_writer(tmp_path):
    db = tmp_path / "wal.db"
    writer = Writer(db, wal_bytes=512 * 1024)
    writer.start()
    wal = Path(f"{db}-wal")
    biggest = 0
    try:
        for batch in range(80):  # ~80 x 60 spans x 2.5 KB = ~12 MB of rows, ~24 MB of WAL frames
            spans = [
                make_span(tid(batch + 1), sid(i + 1), name=f"s{i}", attributes={"prompt": "x" * 2500})
                for i in range(60)
            ]
            store(writer, *spans)
            biggest = max(biggest, wal.stat().st_size)
        assert writer._checkpointer is not None and writer._checkpointer.checkpoints > 0
    finally:
        writer.stop()
    # SQLite's own automatic checkpoints are off on the writer's connection; without the
    # checkpoint thread the WAL would hold all ~24 MB (14.5 MB measured with restarts
    # disabled). It starts over once past 4 x 512 KB, and past 8 x 512 KB the writer waits
    # for the background pass: never more than that plus one commit (~0.3 MB here).
    assert biggest < 9 * 512 * 1024, f"WAL grew to {biggest} bytes"
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == 80 * 60
    finally:
        conn.close()


def test_a_reader_holding_an_old_snapshot_does_not_stall_the_writer(tmp_path):
    """Past the WAL's hard bound a writer copies what it can, once: a reader's frames stay, commits go on."""
    import time

    db = tmp_path / "pinned.db"
    writer = Writer(db, wal_bytes=64 * 1024)  # hard bound: 8 x 64 KB
    writer.start()
    store(writer, make_span(tid(999), sid(1)))
    reader = sqlite3.connect(db, isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM spans").fetchone()[0] == 1  # a snapshot the WAL must keep
        started = time.monotonic()
        for batch in range(20):  # ~3 MB of frames, far past the bound while the reader pins them
            spans = [make_span(tid(batch + 1), sid(i + 1), attributes={"prompt": "x" * 2500}) for i in range(60)]
            store(writer, *spans)
        elapsed = time.monotonic() - started
        assert Path(f"{db}-wal").stat().st_size > 8 * 64 * 1024  # the reader did keep the WAL from starting over
        assert elapsed < 15, f"20 commits took {elapsed:.1f}s with a reader pinning the WAL"
        reader.execute("COMMIT")
    finally:
        reader.close()
        writer.stop()
    assert len(stored_span_keys(db)) == 20 * 60 + 1


def test_spans_written_after_a_purge_from_another_process_keep_their_resource(writer, db):
    from tracetui.store.retention import purge

    store(writer, make_span(tid(1), sid(1), name="before"), service="svc-a")
    other = sqlite3.connect(db, isolation_level=None)  # `tracetui purge` in another terminal
    try:
        purge(other)
    finally:
        other.close()
    store(writer, make_span(tid(2), sid(2), name="after"), service="svc-a")  # same resource as before the purge
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT s.name, src.service FROM spans s LEFT JOIN sources src ON src.id = s.source_id"
        ).fetchall()
    finally:
        conn.close()
    assert rows == [("after", "svc-a")]


def test_sources_stored_by_an_older_tracetui_keep_their_ids(writer, db):
    # Before schema 7 sources got sequential ids; a resource first seen then keeps its row.
    first = decoded(make_span(tid(1), sid(1), name="first"), service="svc-old")
    (source,) = first.sources.values()
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute(
            "INSERT INTO sources(id, digest, service, resource, scope_name, scope_version, scope, schema_url) "
            "VALUES (7, ?, ?, ?, '', '', ?, '')",
            (source.digest, source.service, source.resource, source.scope),
        )
    finally:
        conn.close()
    store(writer, make_span(tid(1), sid(1), name="first"), service="svc-old")
    store(writer, make_span(tid(2), sid(2), name="new resource"), service="svc-new")
    conn = sqlite3.connect(db)
    try:
        rows = dict(conn.execute("SELECT s.name, src.service FROM spans s JOIN sources src ON src.id = s.source_id"))
        assert conn.execute("SELECT count(*) FROM sources").fetchone()[0] == 2
    finally:
        conn.close()
    assert rows == {"first": "svc-old", "new resource": "svc-new"}


@pytest.mark.parametrize("with_calls", [False, True], ids=["plain", "model calls"])
def test_a_trace_split_over_exports_sums_the_same_in_one_commit_or_two(tmp_path, with_calls):
    trace = tid(7)
    root = make_span(trace, sid(1), name="root", start=0, duration=10_000_000)
    late = make_span(trace, sid(3), sid(1), name="late", start=9_000_000, duration=5_000_000)  # ends after the root
    if with_calls:
        child = llm_span(trace, sid(2), sid(1), "chat", 1_000_000, 100, 20, 0.5)
    else:
        child = make_span(trace, sid(2), sid(1), name="step", start=1_000_000, duration=2_000_000)
    first, second = (child, late), (root,)

    def stored(name: str, exports, one_commit: bool) -> dict:
        db = tmp_path / f"{name}.db"
        writer = Writer(db)
        if one_commit:  # queued before the writer runs: its first batch takes them all
            tickets = [writer.submit(decoded(*spans)) for spans in exports]
            writer.start()
        else:
            writer.start()
            tickets = []
            for spans in exports:
                tickets.append(writer.submit(decoded(*spans)))
                assert tickets[-1].wait(10)
        try:
            assert all(t.wait(10) and t.error is None for t in tickets)
            if one_commit:
                assert writer.commits == 1
        finally:
            writer.stop()
        return comparable(trace_row(db, trace))

    whole = stored("whole", [(*first, *second)], one_commit=True)
    assert whole["span_count"] == 3 and whole["root_name"] == "root"
    assert whole["end_ns"] - whole["start_ns"] == 14_000_000
    assert stored("one-commit", [first, second], one_commit=True) == whole
    assert stored("two-commits", [first, second], one_commit=False) == whole


def test_a_source_whose_derived_id_is_taken_gets_another(writer, db):
    spans = decoded(make_span(tid(1), sid(1), name="mine"), service="svc-mine")
    (source,) = spans.sources.values()
    conn = sqlite3.connect(db, isolation_level=None)
    try:  # another resource already holds the id derived from this one's digest
        conn.execute(
            "INSERT INTO sources(id, digest, service, resource) VALUES (?, ?, 'svc-other', x'')",
            (source.id, b"another digest.."),
        )
    finally:
        conn.close()
    store(writer, make_span(tid(1), sid(1), name="mine"), service="svc-mine")
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT s.name, src.service FROM spans s JOIN sources src ON src.id = s.source_id"
        ).fetchall()
    finally:
        conn.close()
    assert rows == [("mine", "svc-mine")]


def test_an_evaluation_known_first_by_response_id_merges_into_the_span_events_copy(writer, db):
    from tracetui.model.rows import Decoded

    row = ("groundedness", 0.9, "grounded", "", BASE_NS)
    waiting = Decoded(evaluations=[(b"", None, "resp-1", *row[:3], row[3], "log record", row[4])])
    assert writer.submit(waiting).wait(10)
    span = make_span(tid(5), sid(1), name="chat", attributes={"gen_ai.operation.name": "chat",
                                                              "gen_ai.response.id": "resp-1"})  # fmt: skip
    with_event = decoded(span)
    with_event.evaluations.append((tid(5), sid(1), "resp-1", *row[:3], row[3], "span event", row[4]))
    ticket = writer.submit(with_event)
    assert ticket.wait(10) and ticket.error is None
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT trace_id, span_id, name, score, source FROM evaluations").fetchall()
    finally:
        conn.close()
    assert rows == [(tid(5), sid(1), "groundedness", 0.9, "span event + log record")]


def _evaluation_log(trace_id: bytes, response_id: str, score: float) -> Decoded:
    """A groundedness result sent as a log record that names the trace and the call's response id, not its span."""
    record = LogRecord(
        time_unix_nano=BASE_NS + 9_000_000_000, trace_id=trace_id, event_name="gen_ai.evaluation.result",
        attributes=kv_list({"gen_ai.evaluation.name": "groundedness", "gen_ai.evaluation.score.value": score,
                            "gen_ai.response.id": response_id}),
    )  # fmt: skip
    return decode_logs(
        ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[record])])])
    )


def _calls(trace_id: bytes, *response_ids: str) -> list:
    return [
        make_span(trace_id, sid(n + 2), sid(1), name=f"chat {n}", start=n * 1_000_000,
                  attributes={"gen_ai.operation.name": "chat", "gen_ai.response.id": r})
        for n, r in enumerate(response_ids)
    ]  # fmt: skip


def _results(db: Path) -> list[tuple]:
    return query_ro(db, "SELECT trace_id, span_id, response_id, score FROM evaluations ORDER BY score")


@pytest.mark.parametrize("order", ["evaluation first", "span first"])
def test_an_evaluation_by_response_id_lands_on_its_call_whichever_arrives_first(writer, db, order):
    spans = [make_span(tid(8), sid(1), name="agent"), *_calls(tid(8), "resp-a", "resp-b")]
    other_trace = _calls(tid(9), "resp-b")  # another run that happens to reuse the id: not this result's call
    parts = [decoded(*spans, *other_trace), _evaluation_log(tid(8), "resp-b", 0.3)]
    for part in parts if order == "span first" else reversed(parts):
        ticket = writer.submit(part)
        assert ticket.wait(10) and ticket.error is None
    assert _results(db) == [(tid(8), sid(3), "resp-b", 0.3)]
    result = reader_for(db).span_evaluations(tid(8), sid(3))
    assert [(e["name"], e["score"]) for e in result] == [("groundedness", 0.3)]


def test_an_evaluation_whose_call_never_arrives_waits_without_being_lost(writer, db):
    for part in (_evaluation_log(tid(8), "resp-z", 0.7), decoded(*_calls(tid(9), "resp-z"))):
        ticket = writer.submit(part)
        assert ticket.wait(10) and ticket.error is None
    assert _results(db) == [(tid(8), None, "resp-z", 0.7)]  # the only call that returned resp-z is in another run
    ticket = writer.submit(decoded(*_calls(tid(8), "resp-z")))
    assert ticket.wait(10) and ticket.error is None
    assert _results(db) == [(tid(8), sid(2), "resp-z", 0.7)]


def test_an_evaluation_that_names_no_trace_finds_a_call_stored_before_it(writer, db):
    store(writer, *_calls(tid(6), "resp-1", "resp-2"))
    loose = Decoded(evaluations=[(b"", None, "resp-2", "groundedness", 0.8, None, None, "log record", BASE_NS)])
    ticket = writer.submit(loose)
    assert ticket.wait(10) and ticket.error is None
    assert _results(db) == [(tid(6), sid(3), "resp-2", 0.8)]

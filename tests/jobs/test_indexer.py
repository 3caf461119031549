"""The full-text index: built by the background indexer beside a real receiver, searched by `tracetui search`.

The database is made by the real receiver (`serve --headless`, which starts the
indexer) from every captured fixture, traces and logs. What each test searches for is
read from the fixtures themselves (a few words of a prompt and of a completion), never
written down here.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlite_utils
from helpers import channel_to, read_records, start_receiver, trace_fixture_files

from tracetui.jobs.indexer import Indexer
from tracetui.llm.chat import extract_messages
from tracetui.model.filter import FilterError, parse
from tracetui.store import text_index
from tracetui.store.reader import SqliteReader
from tracetui.store.retention import delete_traces
from tracetui.store.schema import connect_writer

WORD = re.compile(r"[A-Za-z0-9]+")  # as FTS5 unicode61 splits ASCII text


def _wait_indexed(db: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = sqlite3.connect(db)
        try:
            top = conn.execute("SELECT ifnull(max(id), 0) FROM spans").fetchone()[0]
            row = conn.execute("SELECT value FROM meta WHERE key = 'index_cursor'").fetchone()
        finally:
            conn.close()
        if row is not None and int(row[0]) >= top > 0:
            return
        time.sleep(0.1)
    raise AssertionError("the indexer did not catch up")


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("fts")
    receiver = start_receiver(tmp / "t.db", cwd=tmp)
    try:
        channel = channel_to(receiver.port)
        calls = {
            kind: channel.unary_unary(f"/opentelemetry.proto.collector.{kind}.v1.{service}/Export",
                                      request_serializer=None, response_deserializer=None)
            for kind, service in (("trace", "TraceService"), ("logs", "LogsService"))
        }  # fmt: skip
        for path in trace_fixture_files():
            logs = path.with_name(path.name.replace(".otlp", ".logs.otlp"))
            if logs.exists():  # content events first: the span is indexed with them
                for record in read_records(logs):
                    calls["logs"](record, timeout=10)
            for record in read_records(path):
                calls["trace"](record, timeout=10)
        channel.close()
        _wait_indexed(tmp / "t.db")
    finally:
        assert receiver.stop(signal.SIGTERM) == 0
    return tmp / "t.db"


def _search(db: Path, query: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tracetui", "search", "--db", str(db), query, *extra],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def _phrase(text: str) -> str | None:
    words = WORD.findall(text)
    return " ".join(words[:3]) if len(words) >= 3 else None


def _conversations(db: Path) -> dict[str, tuple[bytes, str | None, str | None]]:
    """Per library (instrumentation scope): one LLM span with a prompt and a completion phrase."""
    reader = SqliteReader(db)
    out: dict[str, tuple[bytes, str | None, str | None]] = {}
    try:
        for (trace_id,) in reader._all("SELECT trace_id FROM traces ORDER BY id"):
            for detail in reader.span_details(trace_id):
                library = detail.row.get("library") or "?"
                messages = extract_messages(detail.attributes, detail.logs)
                prompt = next(
                    (_phrase(m.content) for m in messages if m.direction == "input" and _phrase(m.content)), None
                )
                answer = next(
                    (_phrase(m.content) for m in messages if m.direction == "output" and _phrase(m.content)), None
                )
                if prompt and answer and library not in out:
                    out[library] = (detail.row["span_id"], prompt, answer)
    finally:
        reader.close()
    return out


def test_a_phrase_of_every_library_is_found_and_absent_text_is_not(db: Path) -> None:
    found = _conversations(db)
    assert len(found) >= 5, found.keys()
    for library, (span_id, prompt, answer) in found.items():
        for phrase in (prompt, answer):
            result = _search(db, f'"{phrase}"', "--json", "--limit", "10000")
            assert result.returncode == 0, result.stderr
            spans = {row["span_id"] for row in json.loads(result.stdout)}
            assert span_id.hex() in spans, (library, phrase)
            assert all("[" in row["snippet"] for row in json.loads(result.stdout))  # the match is marked
    result = _search(db, '"zebra quantum marmalade"', "--json")
    assert result.returncode == 0 and json.loads(result.stdout) == []


def test_text_term_combines_with_other_terms(db: Path) -> None:
    library, (span_id, prompt, _) = next(iter(_conversations(db).items()))
    reader = SqliteReader(db)
    try:
        hits = reader.traces(flt=parse(f"text:'\"{prompt}\"'"), limit=1000)
        assert hits
        none = reader.traces(flt=parse(f"text:'\"{prompt}\"' service=no-such-service"), limit=1000)
        assert none == []
        assert reader.matching_span_ids(hits[0].trace_id, parse(f"text:'\"{prompt}\"'"))
    finally:
        reader.close()


def test_a_dense_search_lists_the_same_runs_checked_newest_first(db: Path, monkeypatch) -> None:
    """A word in many spans is checked run by run among the newest runs (fast for the first page); the
    pages and the capped count must be exactly those of collecting every match, whatever the window."""
    import tracetui.store.reader as reader_module

    reader = SqliteReader(db)
    try:
        newest_first = [t.trace_id for t in reader.traces(limit=10_000)]
        conn = sqlite3.connect(db)
        text = " ".join(row[0] for row in conn.execute("SELECT content FROM span_text"))
        conn.close()
        words = sorted(set(re.findall(r"\b[a-z]{4,12}\b", text)))[:300]
        expected = {w: [t.trace_id for t in reader.traces(flt=parse(f"text:{w}"), limit=10_000)] for w in words}
        # a word in a few runs, none of them the newest: a window can hold fewer matches than a page
        # needs while older runs match
        word = next(w for w in words if len(expected[w]) >= 3 and newest_first[0] not in expected[w])
        monkeypatch.setattr(text_index, "DENSE_MATCHES", 1)  # every search checks runs one by one first
        for window in range(2, len(newest_first) + 4):
            monkeypatch.setattr(reader_module, "TEXT_WINDOW_RUNS", window)
            for offset, limit in ((0, 1), (0, 2), (1, 1), (0, 3)):
                page = [t.trace_id for t in reader.traces(offset, limit, flt=parse(f"text:{word}"))]
                assert page == expected[word][offset : offset + limit], (window, offset, limit)
            for cap in (1, 2, 3):
                assert reader.count_traces(flt=parse(f"text:{word}"), cap=cap) == min(cap, len(expected[word]))
    finally:
        reader.close()


def test_bad_search_syntax_is_a_clear_error(db: Path) -> None:
    with pytest.raises(FilterError, match="text:"):
        parse('text:"refund OR"')
    with pytest.raises(FilterError, match="double quotes"):
        parse("text:gpt-4o")
    result = _search(db, "refund AND")
    assert result.returncode != 0 and "search" in result.stderr and "Traceback" not in result.stderr


def test_sqlite_utils_reads_a_span_s_attributes(db: Path) -> None:
    conn = sqlite_utils.Database(db)
    rows = list(conn.query(
        "SELECT trace_id, span_id, json_extract(attributes, '$.\"gen_ai.request.model\"') AS model "
        "FROM spans_json WHERE model IS NOT NULL"))  # fmt: skip
    assert rows
    reader = SqliteReader(db)
    try:
        for row in rows:
            detail = reader.span_detail(bytes.fromhex(row["trace_id"]), bytes.fromhex(row["span_id"]))
            assert detail is not None and detail.attributes["gen_ai.request.model"] == row["model"]
    finally:
        reader.close()
    assert conn["span_text"].detect_fts() == "span_text_fts"


def test_resume_after_kill_9_and_eviction(db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "c.db"
    src = sqlite3.connect(db)
    src.execute(f"VACUUM INTO '{copy}'")
    src.close()
    conn = connect_writer(copy)
    conn.execute("DELETE FROM span_text")  # as if nothing were indexed yet
    conn.execute("UPDATE meta SET value = 0 WHERE key = 'index_cursor'")
    total = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
    job = [sys.executable, "-m", "tracetui", "job", "indexer", "--db", str(copy)]
    for _ in range(3):  # killed as soon as it made progress, twice; then left to finish
        proc = subprocess.Popen(job)
        deadline = time.monotonic() + 30
        while conn.execute("SELECT count(*) FROM span_text").fetchone()[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    indexer = Indexer(copy)
    indexer.catch_up()
    assert conn.execute("SELECT count(*) FROM span_text").fetchone()[0] == total
    conn.execute("INSERT INTO span_text_fts(span_text_fts) VALUES ('integrity-check')")

    victim = conn.execute("SELECT trace_id FROM traces ORDER BY id LIMIT 1").fetchone()[0]
    conn.execute("BEGIN IMMEDIATE")
    delete_traces(conn, [victim])
    conn.execute("COMMIT")
    left = conn.execute("SELECT count(*) FROM span_text WHERE trace_id = ?", (victim,)).fetchone()[0]
    assert left > 0  # not yet cleaned: searches skip them meanwhile
    reader = SqliteReader(copy)
    assert not any(t.trace_id == victim for t in reader.traces(flt=parse("text:a*"), limit=100000))
    reader.close()
    indexer.catch_up()
    indexer.close()
    assert conn.execute("SELECT count(*) FROM span_text WHERE trace_id = ?", (victim,)).fetchone()[0] == 0
    conn.close()


def test_search_skips_a_match_whose_span_was_evicted(db: Path, tmp_path: Path) -> None:
    """Between an eviction and the indexer's clean-up the index still holds the run's text: search skips it."""
    copy = tmp_path / "e.db"
    src = sqlite3.connect(db)
    src.execute(f"VACUUM INTO '{copy}'")
    src.close()
    library, (span_id, prompt, _) = next(iter(_conversations(copy).items()))
    before = json.loads(_search(copy, f'"{prompt}"', "--json", "--limit", "10000").stdout)
    victim = next(bytes.fromhex(row["trace_id"]) for row in before if row["span_id"] == span_id.hex())
    conn = connect_writer(copy)
    conn.execute("BEGIN IMMEDIATE")
    delete_traces(conn, [victim])  # as retention does; no indexer runs on the copy
    conn.execute("COMMIT")
    assert conn.execute("SELECT count(*) FROM span_text WHERE trace_id = ?", (victim,)).fetchone()[0] > 0
    conn.close()
    result = _search(copy, f'"{prompt}"', "--json", "--limit", "10000")
    assert result.returncode == 0, result.stderr
    after = json.loads(result.stdout)
    assert not any(row["trace_id"] == victim.hex() for row in after), library
    assert len(after) == len([row for row in before if row["trace_id"] != victim.hex()])

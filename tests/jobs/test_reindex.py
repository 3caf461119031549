"""`tracetui reindex` recomputes everything the receiver derived, identically, and survives being interrupted.

The database is made by the real receiver from the captured fixtures (traces
and log records, through gRPC), with a user price file and hostile token
counts. The derived columns are then wiped as an older tracetui might have
left them, and reindex must bring back every column of spans, traces and
evaluations exactly as ingest computed them.
"""

from __future__ import annotations

import math
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    channel_to,
    make_request,
    make_span,
    read_records,
    receiver_env,
    sid,
    start_receiver,
    tid,
    trace_fixture_files,
)

from tracetui.model.rows import NORMALIZED_COLUMNS

#: Position of traces.updated_ns (the wall clock of a row's last change), set by snapshot().
UPDATED_NS = -1
PRICES = '[models."house-llm"]\ninput = 3.0\noutput = 15.0\n'


def _hostile_and_custom_spans() -> bytes:
    """A model priced only by the user's file, and token counts no model reports."""
    t = time.time_ns() - 1_700_000_000_000_000_000  # (make_span adds a 2023 base)
    chat = {"gen_ai.operation.name": "chat", "gen_ai.system": "openai"}
    spans = [
        make_span(tid(900), sid(1), None, name="agent", start=t, duration=9_000_000),
        make_span(tid(900), sid(2), sid(1), name="chat house-llm", start=t + 1, attributes={
            **chat, "gen_ai.request.model": "house-llm", "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 200}),
        make_span(tid(900), sid(3), sid(1), name="chat huge", start=t + 2, attributes={
            **chat, "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 2**62,
            "gen_ai.usage.output_tokens": 5}),
        make_span(tid(900), sid(4), sid(1), name="chat nan", start=t + 3, attributes={
            **chat, "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": math.nan,
            "gen_ai.usage.output_tokens": -7}),
        make_span(tid(900), sid(5), sid(1), name="chat negative", start=t + 4, attributes={
            **chat, "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": -(2**62),
            "gen_ai.usage.output_tokens": 12}),
    ]  # fmt: skip
    return make_request(spans, service="hostile").SerializeToString()


def _ingest(tmp: Path, prices: Path) -> Path:
    """Every fixture (traces and logs) and the hostile spans, through a real receiver."""
    receiver = start_receiver(tmp / "r.db", "--prices", str(prices), cwd=tmp)
    try:
        channel = channel_to(receiver.port)
        calls = {
            kind: channel.unary_unary(f"/opentelemetry.proto.collector.{kind}.v1.{service}/Export",
                                      request_serializer=None, response_deserializer=None)
            for kind, service in (("trace", "TraceService"), ("logs", "LogsService"))
        }  # fmt: skip
        for path in trace_fixture_files():
            for record in read_records(path):
                calls["trace"](record, timeout=10)
            logs = path.with_name(path.name.replace(".otlp", ".logs.otlp"))
            if logs.exists():
                for record in read_records(logs):
                    calls["logs"](record, timeout=10)
        calls["trace"](_hostile_and_custom_spans(), timeout=10)
        channel.close()
    finally:
        assert receiver.stop(signal.SIGTERM) == 0
    return tmp / "r.db"


def snapshot(db: Path) -> dict[str, object]:
    """Every column of spans, traces and evaluations (evaluations without their row id), and the counters."""
    conn = sqlite3.connect(db)
    try:
        spans = conn.execute("SELECT * FROM spans ORDER BY id").fetchall()
        traces = conn.execute("SELECT * FROM traces ORDER BY id").fetchall()
        global UPDATED_NS
        UPDATED_NS = [r[1] for r in conn.execute("PRAGMA table_info(traces)")].index("updated_ns")
        cols = [r[1] for r in conn.execute("PRAGMA table_info(evaluations)") if r[1] != "id"]
        evaluations = sorted(conn.execute(f"SELECT {', '.join(cols)} FROM evaluations").fetchall(), key=repr)
        # the full-text indexer's own progress (index_*, content_policy) is not derived from the spans
        meta = dict(conn.execute("SELECT key, value FROM meta WHERE key != 'receiver' "
                                 "AND key NOT LIKE 'index\\_%' ESCAPE '\\' AND key != 'content_policy'"))  # fmt: skip
    finally:
        conn.close()
    return {"spans": spans, "traces": traces, "evaluations": evaluations, "meta": meta}


def _without_change_time(row: tuple) -> tuple:
    return row[:UPDATED_NS] + row[UPDATED_NS + 1 :]


def _assert_same(before: dict, after: dict, *, changed: bool = True) -> None:
    """Every column equal; where reindex had to rewrite a trace row (``changed``), all but its change time."""
    for table in ("spans", "traces", "evaluations"):
        assert len(after[table]) == len(before[table]), table
        for old, new in zip(before[table], after[table], strict=True):
            if table == "traces" and changed:
                old, new = _without_change_time(old), _without_change_time(new)
            assert new == old, f"{table} row differs:\n{old}\n{new}"
    meta_before, meta_after = before["meta"], after["meta"]
    assert meta_after.keys() == meta_before.keys()
    for key, value in meta_before.items():
        assert meta_after[key] == pytest.approx(value, rel=1e-9), key


def _wipe_derived(db: Path) -> None:
    """What an older tracetui (no pricing, no evaluations, an older normalizer) might have left."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute(f"UPDATE spans SET {', '.join(f'{c} = NULL' for c in NORMALIZED_COLUMNS)}, "
                 "is_retry = 0, is_fallback = 0, retry_ns = NULL, counted = NULL")  # fmt: skip
    conn.execute(
        "UPDATE traces SET llm_calls = 0, input_tokens = 0, output_tokens = 0, cost_usd = NULL, unpriced_calls = 0, "
        "retries = 0, fallbacks = 0, slowest_span_id = NULL, slowest_name = NULL, slowest_ns = NULL, "
        "split_ttft_ns = 0, split_decode_ns = 0, split_response_ns = 0, split_retry_ns = 0, split_fallback_ns = 0, "
        "split_tool_ns = 0, split_other_ns = 0, session_id = NULL"
    )
    conn.execute("DELETE FROM evaluations")
    conn.execute("UPDATE meta SET value = 0 WHERE key IN ('llm_calls', 'tokens', 'cost_usd')")
    conn.execute("COMMIT")
    conn.close()


def _run_reindex(db: Path, prices: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tracetui", "reindex", "--db", str(db), "--prices", str(prices)],
        capture_output=True, text=True, env=receiver_env(), timeout=120, cwd=db.parent, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> tuple[Path, Path, dict]:
    tmp = tmp_path_factory.mktemp("reindex")
    prices = tmp / "prices.toml"
    prices.write_text(PRICES)
    db = _ingest(tmp, prices)
    return db, prices, snapshot(db)


def _copy(db: Path, to: Path) -> Path:
    src = sqlite3.connect(db)
    dst = sqlite3.connect(to)
    src.backup(dst)
    src.close()
    dst.close()
    return to


def test_the_ingested_database_is_priced_and_clamped(ingested) -> None:
    db, _prices, _expected = ingested
    conn = sqlite3.connect(db)
    sources = dict(conn.execute("SELECT cost_source, count(*) FROM spans WHERE cost_usd IS NOT NULL GROUP BY 1"))
    assert sum(sources.values()) >= 5 and len(sources) >= 2, sources  # bundled prices and the user's file
    house = conn.execute("SELECT cost_usd FROM spans WHERE name = 'chat house-llm'").fetchone()[0]
    assert house == pytest.approx((1000 * 3.0 + 200 * 15.0) / 1e6)
    hostile = conn.execute("SELECT name, input_tokens, output_tokens FROM spans WHERE name IN "
                           "('chat huge', 'chat nan', 'chat negative') ORDER BY name").fetchall()  # fmt: skip
    assert hostile == [("chat huge", None, 5), ("chat nan", None, None), ("chat negative", None, 12)]
    trace = conn.execute("SELECT input_tokens, output_tokens FROM traces WHERE trace_id = ?", (tid(900),)).fetchone()
    assert trace == (1000, 200 + 5 + 12)  # only the sane counts add up
    assert conn.execute("SELECT count(*) FROM evaluations").fetchone()[0] > 0
    conn.close()


def test_reindex_recomputes_every_column_identically(ingested, tmp_path: Path) -> None:
    db, prices, expected = ingested
    copy = _copy(db, tmp_path / "copy.db")
    _wipe_derived(copy)
    wiped = snapshot(copy)
    assert wiped["spans"] != expected["spans"] and not wiped["evaluations"]
    done = _run_reindex(copy, prices)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    _assert_same(expected, snapshot(copy))


def test_reindex_of_an_intact_database_changes_nothing(ingested, tmp_path: Path) -> None:
    db, prices, expected = ingested
    copy = _copy(db, tmp_path / "copy.db")
    done = _run_reindex(copy, prices)
    assert done.returncode == 0, done.stderr
    _assert_same(expected, snapshot(copy), changed=False)  # not even a trace row's change time moved


def test_reindex_clamps_what_an_older_tracetui_stored_unclamped(ingested, tmp_path: Path) -> None:
    """2**62 tokens stored by a version that did not clamp: reindex clamps it as ingest does, without overflow."""
    db, prices, expected = ingested
    copy = _copy(db, tmp_path / "copy.db")
    conn = sqlite3.connect(copy, isolation_level=None)
    conn.execute("UPDATE spans SET input_tokens = 4611686018427387904 WHERE name IN ('chat huge', 'chat negative')")
    conn.close()
    done = _run_reindex(copy, prices)
    assert done.returncode == 0, done.stderr
    _assert_same(expected, snapshot(copy))


def test_an_interrupted_reindex_leaves_a_consistent_database_that_a_rerun_finishes(
    ingested, tmp_path: Path, monkeypatch
) -> None:
    from tracetui.jobs import reindex as reindex_module

    db, prices, expected = ingested
    copy = _copy(db, tmp_path / "copy.db")
    _wipe_derived(copy)
    monkeypatch.setattr(reindex_module, "BATCH_SPANS", 20)  # several batches
    real = reindex_module._reindex_traces
    calls = 0

    def fail_on_the_third_batch(conn, trace_ids):
        nonlocal calls
        calls += 1
        real(conn, trace_ids)  # the batch's writes happen, then the failure rolls them back
        if calls == 3:
            raise sqlite3.OperationalError("database or disk is full")
        return sum(1 for _ in trace_ids)

    monkeypatch.setattr(reindex_module, "_reindex_traces", fail_on_the_third_batch)
    with pytest.raises(sqlite3.OperationalError):
        reindex_module.reindex(copy, prices_path=prices)
    assert calls == 3
    conn = sqlite3.connect(copy)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # Consistent: every trace row agrees with its spans, and the counters with the trace rows.
    for trace_id, span_count, _tokens, _cost in conn.execute(
        "SELECT trace_id, span_count, input_tokens + output_tokens, cost_usd FROM traces"
    ).fetchall():
        spans = conn.execute("SELECT count(*) FROM spans WHERE trace_id = ?", (trace_id,)).fetchone()[0]
        assert spans == span_count
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    totals = conn.execute("SELECT sum(llm_calls), sum(input_tokens + output_tokens), sum(coalesce(cost_usd, 0)) "
                          "FROM traces").fetchone()  # fmt: skip
    assert (meta["llm_calls"], meta["tokens"]) == totals[:2]
    assert meta["cost_usd"] == pytest.approx(totals[2])
    half = snapshot(copy)
    done = {_without_change_time(r) for r in half["traces"]} & {_without_change_time(r) for r in expected["traces"]}
    assert 0 < len(done) < len(expected["traces"])  # part done, part not
    conn.close()
    monkeypatch.setattr(reindex_module, "_reindex_traces", real)
    reindex_module.reindex(copy, prices_path=prices)
    _assert_same(expected, snapshot(copy))


def _many_traces(db: Path, traces: int) -> None:
    """``traces`` priced agent runs (a root and three chat calls each), through tracetui's own decoder and writer."""
    from helpers import fill_db

    t = time.time_ns() - 1_700_000_000_000_000_000
    chat = {"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o"}
    requests = []
    for first in range(0, traces, 100):
        spans = []
        for n in range(first, min(first + 100, traces)):
            spans.append(make_span(tid(10_000 + n), sid(1), None, name="agent", start=t + n, duration=9_000_000))
            spans += [make_span(tid(10_000 + n), sid(k), sid(1), name="chat gpt-4o", start=t + n + k, attributes={
                **chat, "gen_ai.usage.input_tokens": 100 * k, "gen_ai.usage.output_tokens": 10 * k})
                for k in (2, 3, 4)]  # fmt: skip
        requests.append(make_request(spans))
    fill_db(db, requests)


def test_a_reindex_killed_midway_leaves_a_consistent_database_that_a_rerun_finishes(tmp_path: Path) -> None:
    """kill -9 during `tracetui reindex`: every committed batch is whole, and running it again gives the same result."""
    db = tmp_path / "big.db"
    _many_traces(db, 3_000)  # 12,000 spans: six batches
    expected = snapshot(db)
    _wipe_derived(db)
    proc = subprocess.Popen([sys.executable, "-m", "tracetui", "reindex", "--db", str(db)], stderr=subprocess.PIPE,
                            text=True, env=receiver_env(), cwd=tmp_path)  # fmt: skip
    assert proc.stderr is not None
    first = proc.stderr.readline()  # the first batch is committed
    assert first.startswith("reindex: "), first
    proc.kill()
    proc.wait(30)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    traces = conn.execute("SELECT llm_calls, input_tokens, cost_usd FROM traces").fetchall()
    done = sum(1 for calls, tokens, cost in traces if calls == 3 and tokens == 900 and cost)
    untouched = sum(1 for calls, tokens, cost in traces if calls == 0 and tokens == 0 and cost is None)
    assert done + untouched == len(traces)  # each trace row is either rebuilt or still as wiped: none half-done
    assert 0 < done < len(traces)
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    assert (meta["llm_calls"], meta["tokens"]) == (3 * done, 990 * done)  # the counters match the rows
    conn.close()
    rerun = subprocess.run([sys.executable, "-m", "tracetui", "reindex", "--db", str(db)], capture_output=True,
                           text=True, env=receiver_env(), cwd=tmp_path, timeout=120, check=False)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    _assert_same(expected, snapshot(db))

"""The Stats rollup (tracetui.store.rollup) gives the figures a scan of the calls gives, as the data changes.

Every database here is written by tracetui's real decoder and writer. Each
check computes Stats twice over the same file: once forced to scan the calls
(the exact figures) and once forced to read the rollup; counts, runs, rates,
cost and groundedness must be equal, percentiles within the sketch's stated 1 %.
The data changes the ways a live store does: roots and calls arriving after
their traces started, resent exports, evaluations added by another process,
retention evicting traces, purge, and an upgraded database filled in the background.
"""

from __future__ import annotations

import itertools
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import BASE_NS, fill_db, kv_list, make_request, make_span, requests_of, sid, suite_fixture_files, tid
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tracetui.model import sketch
from tracetui.model.filter import parse
from tracetui.otlp.decode import decode_spans
from tracetui.query.stats import GROUPINGS, GroupStats, compute
from tracetui.store import rollup
from tracetui.store.batch import prepare
from tracetui.store.reader import SqliteReader
from tracetui.store.retention import Retention, purge
from tracetui.store.schema import connect_writer
from tracetui.store.writer import INSERT_EVALUATION, Committer

MS = 10**6
S = 10**9
MODELS = ("gpt-4o", "claude-sonnet-4", "llama-3", None)
PROMPTS = (("triage", "v1"), ("triage", "v2"), ("answer", None), (None, "7"), None)
_PERCENTILES = ("p50_ms", "p95_ms", "p99_ms", "ttft_p50_ms", "ttft_p95_ms", "ttft_p99_ms")


def readers(db: Path) -> tuple[SqliteReader, SqliteReader]:
    """(scanning, rollup) readers of one file."""
    scan, rolled = SqliteReader(db), SqliteReader(db)
    scan.exact_below_spans = 1 << 62
    rolled.exact_below_spans = 0
    return scan, rolled


#: Filters on the grouping dimensions, which the rollup's filter cube answers (rollup.CUBE_FIELDS).
CUBE_FILTERS = (
    "model=gpt-4o",  # with response models gpt-4o-2025-01-01: = matches the dated release too
    "model~claude prompt=triage",
    "model!=llama-3",
    "prompt.version=v2",
    "prompt.version>5",  # numeric: only "7"
    "prompt!=answer service=shop",
    "service~sup kind=llm",
    "kind=tool",  # no call is
)


def assert_same(db: Path, windows: tuple[int | None, ...] = (None,), filters: tuple[str, ...] = ("",)) -> int:
    """Stats by every grouping over each window start (ns, on the 10 s grid; None: all) and filter agree;
    returns the calls."""
    scan, rolled = readers(db)
    calls = 0
    try:
        for since, text, by in itertools.product(windows, filters, GROUPINGS):
            window_s = None if since is None else 3600.0
            now = None if since is None else since + 3600 * S
            flt = parse(text) if text else None
            exact = compute(scan, by, window_s=window_s, now_ns=now, flt=flt)
            got = compute(rolled, by, window_s=window_s, now_ns=now, flt=flt)
            where = f"by {by}, filter {text!r}, since {since}"
            assert [(g.key, g.count, g.runs) for g in got] == [(g.key, g.count, g.runs) for g in exact], where
            for a, b in zip(got, exact, strict=True):
                same_group(a, b)
            calls += sum(g.count for g in exact) if by == "model" else 0
    finally:
        scan.close()
        rolled.close()
    return calls


def same_group(got: GroupStats, exact: GroupStats) -> None:
    assert got.percentiles is not None and sketch.METHOD in got.percentiles, "answered by a scan, not the rollup"
    assert exact.percentiles is None
    for name in ("error_rate", "retry_rate", "fallback_rate", "tokens_per_s", "cost_per_run", "groundedness"):
        a, b = getattr(got, name), getattr(exact, name)
        assert (a is None) == (b is None), f"{exact.key}: {name} {a!r} vs {b!r}"
        if b is not None:
            assert a == pytest.approx(b, rel=1e-9, abs=1e-12), f"{exact.key}: {name}"
    for name in _PERCENTILES:
        a, b = getattr(got, name), getattr(exact, name)
        assert (a is None) == (b is None), f"{exact.key}: {name} {a!r} vs {b!r}"
        if b is not None:  # the sketch's stated bound (tracetui.model.sketch), plus rounding
            assert abs(a - b) <= sketch.ALPHA * abs(b) + 1e-9, f"{exact.key}: {name} {a} vs exact {b}"
    assert len(got.durations_ms) == min(got.count, rollup.SAMPLE)


# --- generated traffic ---------------------------------------------------------------------


def chat(rng: random.Random, trace: int, n: int, start: int) -> Span:
    attrs: dict = {"gen_ai.operation.name": "chat"}
    model = rng.choice(MODELS)
    if model:
        attrs["gen_ai.request.model"] = model
        if rng.random() < 0.5:
            attrs["gen_ai.response.model"] = f"{model}-2025-01-01"
    if rng.random() < 0.7:
        attrs["gen_ai.response.time_to_first_chunk"] = rng.uniform(0.01, 2.0)
    if rng.random() < 0.8:
        attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"] = (
            rng.randint(1, 5000),
            rng.randint(1, 900),
        )
    if rng.random() < 0.6:
        attrs["llm.cost.total"] = round(rng.uniform(0.0001, 0.05), 6)
    prompt = rng.choice(PROMPTS)
    if prompt:
        if prompt[0]:
            attrs["gen_ai.prompt.name"] = prompt[0]
        if prompt[1]:
            attrs["gen_ai.prompt.version"] = prompt[1]
    status = Status.STATUS_CODE_ERROR if rng.random() < 0.15 else Status.STATUS_CODE_UNSET
    duration = int(rng.lognormvariate(20, 1.2))  # around half a second, a long tail
    span = make_span(tid(trace), sid(n), sid(1), name=f"chat {model}", start=start, duration=duration,
                     status=status, attributes=attrs, kind=Span.SPAN_KIND_CLIENT)  # fmt: skip
    if rng.random() < 0.3:
        span.events.add(
            time_unix_nano=BASE_NS + start + duration,
            name="gen_ai.evaluation.result",
            attributes=kv_list({"gen_ai.evaluation.name": "groundedness",
                                "gen_ai.evaluation.score.value": round(rng.random(), 3)}),
        )  # fmt: skip
    return span


def traffic(seed: int, traces: range, spread_s: int = 4 * 3600) -> list:
    """Export requests of agent runs: children before their root, roots late, a resent export, split traces."""
    rng = random.Random(seed)
    requests, late = [], []
    for trace in traces:
        start = rng.randrange(spread_s) * S + rng.randrange(S)
        calls = [chat(rng, trace, 10 + i, start + i * 700 * MS) for i in range(rng.randint(1, 6))]
        root = make_span(tid(trace), sid(1), name=rng.choice(("plan", "answer", "triage")), start=start,
                         duration=10 * S)  # fmt: skip
        service = rng.choice(("shop", "support"))
        if rng.random() < 0.3:  # the calls now, the root (and a last call) in a later export
            requests.append(make_request(calls[:-1] or calls, service=service))
            late.append(make_request([root, calls[-1]], service=service))
        else:
            requests.append(make_request([root, *calls], service=service))
    requests += late
    requests.append(requests[0])  # an export sent twice
    return requests


def test_generated_traffic_with_late_roots_and_calls(tmp_path: Path) -> None:
    db = tmp_path / "gen.db"
    fill_db(db, traffic(1, range(1, 300)))
    starts = [BASE_NS + h * 3600 * S + 10 * S * k for h, k in ((0, 7), (1, 95), (2, 0), (3, 200))]
    assert assert_same(db, (None, *starts)) > 500


def test_stats_filtered_on_the_grouping_dimensions_count_each_run_once(tmp_path: Path) -> None:
    """Each run here makes calls with several models and prompts, some late: a filter on one dimension,
    grouped by another, must count a run whose calls fall in two cells of one group once, and in a window
    only when one of its matching calls is in it."""
    db = tmp_path / "cube.db"
    fill_db(db, traffic(11, range(1, 300)))
    conn = sqlite3.connect(db)
    shared = conn.execute(
        "SELECT count(*) FROM (SELECT trace_id FROM spans WHERE llm_kind = 'llm' GROUP BY trace_id, request_model "
        "HAVING count(DISTINCT coalesce(prompt_name, '') || coalesce(prompt_version, '')) > 1)").fetchone()[0]  # fmt: skip
    assert shared > 50  # runs that one model's filter reaches through two prompts
    starts = [BASE_NS + h * 3600 * S + 10 * S * k for h, k in ((0, 7), (1, 95), (3, 200))]
    assert assert_same(db, (None, *starts), CUBE_FILTERS) > 0


def test_a_filter_on_other_fields_is_scanned_exactly(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    fill_db(db, traffic(12, range(1, 60)))
    _, rolled = readers(db)
    try:
        for text in ("ttft>500ms", "model=gpt-4o status=error", "attr.gen_ai.operation.name=chat", "triage"):
            groups = compute(rolled, "prompt_version", flt=parse(text))
            assert groups and all(g.percentiles is None for g in groups), text  # exact: no sketch label
    finally:
        rolled.close()


def test_fixtures_of_every_suite_library(tmp_path: Path) -> None:
    db = tmp_path / "fixtures.db"
    fill_db(db, [r for path in suite_fixture_files() for r in requests_of(path)])
    assert assert_same(db) > 0


def test_evaluations_written_by_another_process_count_before_and_after_the_job_sums_them(tmp_path: Path) -> None:
    db = tmp_path / "evals.db"
    fill_db(db, traffic(2, range(1, 80)))
    calls = sqlite3.connect(db).execute(
        "SELECT trace_id, span_id FROM spans WHERE llm_kind = 'llm' ORDER BY id LIMIT 40").fetchall()  # fmt: skip
    judge = connect_writer(db)  # as the judge (tracetui.jobs.judge) or the UI's feedback write
    judge.execute("BEGIN IMMEDIATE")
    for n, (trace_id, span_id) in enumerate(calls):
        judge.execute(INSERT_EVALUATION, (trace_id, span_id, None, "groundedness", n / 40, None, None, "judge", 1))
    judge.execute("COMMIT")
    judge.close()
    assert sqlite3.connect(db).execute("SELECT count(*) FROM stats_dirty").fetchone()[0] > 0
    assert_same(db)  # the reader corrects for the traces queued
    run_rollup_job(db)
    assert sqlite3.connect(db).execute("SELECT count(*) FROM stats_dirty").fetchone()[0] == 0
    assert_same(db)


def straddled(db: Path) -> list[int]:
    """Window starts (10 s boundaries) that fall between two LLM calls of one run."""
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT min(start_ns), max(start_ns) FROM spans WHERE llm_kind = 'llm' GROUP BY trace_id "
                        "ORDER BY trace_id").fetchall()  # fmt: skip
    conn.close()
    step = 10 * S
    return [hi - hi % step for lo, hi in rows if lo // step != hi // step]


def run_rollup_job(db: Path) -> None:
    """The real `tracetui job rollup` (without --follow: it sums what is queued, then exits)."""
    done = subprocess.run([sys.executable, "-m", "tracetui", "job", "rollup", "--db", str(db)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_a_live_writer_only_queues_and_stats_are_right_before_and_after_the_job_sums(tmp_path: Path) -> None:
    """The writer queues a commit's traces for the rollup job instead of summing them on the ack path:
    while they wait the reader corrects for the queue; the job sums them; a closing writer sums what is left."""
    db = tmp_path / "live.db"
    committer = Committer(db)
    try:
        for request in traffic(6, range(1, 200)):
            decoded = decode_spans(request)
            prepare(decoded)
            committer.commit([decoded])
        assert sqlite3.connect(db).execute("SELECT count(*) FROM stats_dirty").fetchone()[0] == 199
        assert sqlite3.connect(db).execute("SELECT count(*) FROM stats_bins").fetchone()[0] == 0
        cuts = straddled(db)[:3]  # windows that start amid runs: only their later calls count
        assert len(cuts) == 3
        assert assert_same(db, (None, *cuts), ("", *CUBE_FILTERS)) > 0  # queued cells and runs too
        run_rollup_job(db)
        assert sqlite3.connect(db).execute("SELECT count(*) FROM stats_dirty").fetchone()[0] == 0
        assert_same(db, (None, BASE_NS + 600 * S))
        for request in traffic(7, range(200, 260)):
            decoded = decode_spans(request)
            prepare(decoded)
            committer.commit([decoded])
    finally:
        committer.close()
    assert sqlite3.connect(db).execute("SELECT count(*) FROM stats_dirty").fetchone()[0] == 0
    assert_same(db, (None, BASE_NS + 600 * S))


def test_retention_evictions_and_purge(tmp_path: Path) -> None:
    db = tmp_path / "evict.db"
    committer = Committer(db, retention=Retention(max_spans=600))
    try:
        for request in traffic(3, range(1, 400), spread_s=3600):
            decoded = decode_spans(request)
            prepare(decoded)  # as the receiver does before it commits
            committer.commit([decoded])
    finally:
        committer.close()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT value FROM meta WHERE key = 'evicted_traces'").fetchone()[0] > 100
    assert_same(db, (None, BASE_NS + 1800 * S))
    purging = connect_writer(db)
    purge(purging)
    purging.close()
    assert conn.execute("SELECT count(*) FROM stats_bins").fetchone()[0] == 0
    assert assert_same(db) == 0
    fill_db(db, traffic(4, range(500, 560)))
    assert assert_same(db) > 0


def test_an_upgraded_database_is_filled_in_the_background(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    fill_db(db, traffic(5, range(1, 120)))
    before = sqlite3.connect(db)
    # as a tracetui from before the rollup left it: no rollup, the fill still to do
    for table in ("stats_bins", "stats_contrib", "stats_cells", "stats_runs"):
        before.execute(f"DELETE FROM {table}")
    top = before.execute("SELECT max(id) FROM traces").fetchone()[0]
    before.execute("UPDATE meta SET value = ? WHERE key = 'rollup_to'", (top,))
    before.execute("UPDATE meta SET value = 0 WHERE key = 'rollup_at'")
    before.commit()
    scan, rolled = readers(db)
    assert rolled.counters().stats_backfill == 0.0
    assert compute(rolled, "model")[0].percentiles is None  # not filled: the scan answers
    conn = connect_writer(db)
    seen = []
    while True:
        conn.execute("BEGIN IMMEDIATE")
        more = rollup.backfill_step(conn, batch=25)
        conn.execute("COMMIT")
        seen.append(rolled.counters().stats_backfill)
        if not more:
            break
    conn.close()
    assert seen[-1] is None and all(0 < s < 1 for s in seen[:-2]), seen
    scan.close()
    rolled.close()
    assert_same(db, (None, BASE_NS + 3600 * S))

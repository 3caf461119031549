"""Stats per model / route / prompt version: percentiles and rates against hand-computed figures.

The small database is written by tracetui's real decoder and writer from
hand-built OTLP spans; every expected figure below is worked out by hand from
the spans' chosen durations, time to first token, token counts and costs.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import (
    BASE_NS,
    fill_db,
    iter_spans,
    kv_list,
    make_request,
    make_span,
    plain_attributes,
    requests_of,
    sid,
    suite_fixture_files,
    tid,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tracetui.cli.main import main
from tracetui.llm import pricing
from tracetui.model.filter import FilterError, parse
from tracetui.query.stats import GROUPINGS, WINDOWS, GroupStats, compute, percentile
from tracetui.store.reader import SqliteReader

MS = 10**6
S = 10**9
ERROR = Status.STATUS_CODE_ERROR


# --- percentile ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        # [1, 2, 3, 4]: rank h = 3q/100 -> p50 at 1.5 (2.5), p95 at 2.85 (3.85), p99 at 2.97 (3.97)
        ([1, 2, 3, 4], 50, 2.5),
        ([1, 2, 3, 4], 95, 3.85),
        ([1, 2, 3, 4], 99, 3.97),
        ([1, 2, 3, 4], 0, 1.0),
        ([1, 2, 3, 4], 100, 4.0),
        ([1, 2, 3, 4], 25, 1.75),
        # [10, 20, 30, 40, 50]: h = 4q/100 -> p50 exactly the middle, p95 at 3.8 (48), p99 at 3.96 (49.6)
        ([10, 20, 30, 40, 50], 50, 30.0),
        ([10, 20, 30, 40, 50], 95, 48.0),
        ([10, 20, 30, 40, 50], 99, 49.6),
        # two values: straight line between them
        ([100, 300], 50, 200.0),
        ([100, 300], 95, 290.0),
        ([7], 50, 7.0),
        ([7], 99, 7.0),
        ([7], 0, 7.0),
        ([5, 5, 5], 95, 5.0),
    ],
)
def test_percentile_hand_computed(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected, abs=1e-12)


def test_percentile_of_nothing_is_none() -> None:
    assert percentile([], 50) is None
    assert percentile((), 99) is None


def test_percentile_rejects_q_outside_0_100() -> None:
    with pytest.raises(ValueError):
        percentile([1, 2], 101)
    with pytest.raises(ValueError):
        percentile([1, 2], -1)


def test_percentile_agrees_with_the_closest_ranks_definition() -> None:
    """Against a brute-force reading of 'linear': the value at fractional rank (n-1)q/100."""
    values = sorted([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0])
    for q in range(0, 101):
        rank = (len(values) - 1) * q / 100
        lo = int(rank)
        hi = min(lo + 1, len(values) - 1)
        expected = values[lo] * (1 - (rank - lo)) + values[hi] * (rank - lo)
        assert percentile(values, q) == pytest.approx(expected, abs=1e-9)


# --- a hand-made database ----------------------------------------------------------------


def chat(trace: int, n: int, model: str | None, *, parent: int = 1, start: int, duration: int,
         status: int = Status.STATUS_CODE_UNSET, ttft_s: float | None = None, tokens: tuple[int, int] | None = None,
         cost: float | None = None, response_model: str | None = None, prompt: tuple | None = None,
         evals: dict[str, float] | None = None, **extra) -> Span:  # fmt: skip
    attrs: dict = {"gen_ai.operation.name": "chat", **extra}
    if model is not None:
        attrs["gen_ai.request.model"] = model
    if response_model is not None:
        attrs["gen_ai.response.model"] = response_model
    if ttft_s is not None:
        attrs["gen_ai.response.time_to_first_chunk"] = ttft_s
    if tokens is not None:
        attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"] = tokens
    if cost is not None:
        attrs["llm.cost.total"] = cost
    if prompt is not None:
        name, version = prompt
        if name is not None:
            attrs["gen_ai.prompt.name"] = name
        if version is not None:
            attrs["gen_ai.prompt.version"] = version
    span = make_span(tid(trace), sid(n), sid(parent) if parent else None, name=f"chat {model}", start=start,
                     duration=duration, status=status, attributes=attrs, kind=Span.SPAN_KIND_CLIENT)  # fmt: skip
    for name, score in (evals or {}).items():
        span.events.add(
            time_unix_nano=BASE_NS + start + duration,
            name="gen_ai.evaluation.result",
            attributes=kv_list({"gen_ai.evaluation.name": name, "gen_ai.evaluation.score.value": score}),
        )
    return span


def root(trace: int, name: str, start: int, **attrs) -> Span:
    return make_span(tid(trace), sid(1), name=name, start=start, duration=2 * S, attributes=attrs)


T1, T2, T3, T4 = 0, 60 * S, 120 * S, 600 * S  # when each run starts (after BASE_NS)


def hand_made_requests():
    # T1 "shop / checkout": gpt-4o fails after 100 ms, the same model is retried (200 ms) under the same parent.
    t1 = [
        root(1, "checkout", T1, **{"app.route": "/checkout"}),
        chat(1, 2, "gpt-4o", start=T1, duration=100 * MS, status=ERROR, prompt=("checkout", "v1")),
        chat(1, 3, "gpt-4o", start=T1 + 150 * MS, duration=200 * MS, ttft_s=0.02, tokens=(1000, 90), cost=0.01,
             response_model="gpt-4o-2024-08-06", prompt=("checkout", "v1"), evals={"groundedness": 0.8},
             **{"app.route": "/api/chat"}),
    ]  # fmt: skip
    # T2 "shop / checkout": gpt-4o fails after 300 ms, then a fallback to claude-sonnet-4 (1 s) asked the same.
    question = {"gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "text", "content": "Pay order 42"}]}]'}
    t2 = [
        root(2, "checkout", T2),
        chat(2, 2, "gpt-4o", start=T2, duration=300 * MS, status=ERROR, prompt=("checkout", "v2"), **question),
        chat(2, 3, "claude-sonnet-4", start=T2 + 350 * MS, duration=1000 * MS, ttft_s=0.1, tokens=(2000, 450),
             cost=0.05, response_model="claude-sonnet-4-20250514", prompt=("checkout", "v2"), **question),
    ]  # fmt: skip
    # T3 "support / triage": one 400 ms gpt-4o call (prompt version 3 sent as a number, no prompt name);
    # an embedding call, which is not an LLM call.
    t3 = [
        root(3, "triage", T3, **{"app.route": "/triage"}),
        chat(3, 2, "gpt-4o", start=T3, duration=400 * MS, ttft_s=0.04, tokens=(500, 72), cost=0.03, prompt=(None, 3),
             evals={"groundedness": 0.6, "relevance": 0.1, "hallucination": 0.9}),
        make_span(tid(3), sid(3), sid(1), name="embeddings", start=T3, duration=50 * MS,
                  attributes={"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "text-embedding-3-small"}),
    ]  # fmt: skip
    # T4 "support / triage": a wrapper LLM span around the real (leaf) call to an unpriced local model,
    # and a call that names no model at all.
    t4 = [
        root(4, "triage", T4, **{"app.route": 7}),
        chat(4, 2, "my-local-llama-3", start=T4, duration=80 * MS, tokens=(10, 5), evals={"groundedness": 0.0}),
        chat(4, 3, "my-local-llama-3", parent=2, start=T4 + 10 * MS, duration=50 * MS, tokens=(10, 5)),
        chat(4, 4, None, start=T4 + 100 * MS, duration=10 * MS, prompt=("fallback-prompt", None)),
    ]  # fmt: skip
    return [make_request(t1, service="shop"), make_request(t2, service="shop"),
            make_request(t3, service="support"), make_request(t4, service="support")]  # fmt: skip


@pytest.fixture(scope="module")
def hand_db(tmp_path_factory) -> Path:
    old, pricing._pricer = pricing._pricer, pricing.Pricer()  # bundled prices only, never a user's price file
    try:
        db = tmp_path_factory.mktemp("stats") / "hand.db"
        fill_db(db, hand_made_requests())
        return db
    finally:
        pricing._pricer = old


@pytest.fixture
def conn(hand_db: Path):
    c = SqliteReader(hand_db)
    yield c
    c.close()


def group(key, count, runs, p, ttft, tokens_per_s, error, retry, fallback, cost_per_run, groundedness, durations):
    """The expected GroupStats, written out by hand (p and ttft: (p50, p95, p99) in ms)."""
    return GroupStats(key, count, runs, *p, *ttft, tokens_per_s, error, retry, fallback, cost_per_run, groundedness,
                      tuple(durations))  # fmt: skip


NONE3 = (None, None, None)


def assert_groups(actual: list[GroupStats], expected: list[GroupStats]) -> None:
    assert [g.key for g in actual] == [g.key for g in expected]
    for got, want in zip(actual, expected, strict=True):
        for name in GroupStats.__dataclass_fields__:
            a, b = getattr(got, name), getattr(want, name)
            if b is None or name in ("key", "count", "runs"):
                assert a == b, f"{want.key}: {name} = {a!r}, expected {b!r}"
            else:
                assert a == pytest.approx(b, rel=1e-9, abs=1e-9), f"{want.key}: {name} = {a!r}, expected {b!r}"


def test_by_model(conn: SqliteReader) -> None:
    # gpt-4o: 100 (error), 200 (retry), 300 (error), 400 ms in 3 runs. Sorted [100, 200, 300, 400]:
    #   p50 = 200 + 0.5 * 100 = 250, p95 = 300 + 0.85 * 100 = 385, p99 = 300 + 0.97 * 100 = 397.
    #   TTFT [20, 40]: p50 30, p95 20 + 0.95 * 20 = 39, p99 39.8.
    #   tokens/s over decode: 90 / (0.200 - 0.020) = 500 and 72 / (0.400 - 0.040) = 200 -> mean 350.
    #   cost (0.01 + 0.03) over 3 runs; groundedness mean(0.8, 0.6) (relevance and hallucination aren't).
    #   The dated response model "gpt-4o-2024-08-06" is grouped under the request model.
    # claude-sonnet-4: one 1 s fallback call, TTFT 100 ms, 450 / 0.9 = 500 tokens/s, cost 0.05.
    # my-local-llama-3: the 50 ms leaf call only (the 80 ms wrapper and its groundedness are not counted), unpriced.
    # (none): the 10 ms call without a model.
    assert_groups(
        compute(conn, "model"),
        [
            group("gpt-4o", 4, 3, (250, 385, 397), (30, 39, 39.8), 350, 0.5, 0.25, 0, 0.04 / 3, 0.7,
                  (100, 200, 300, 400)),
            group("(none)", 1, 1, (10, 10, 10), NONE3, None, 0, 0, 0, None, None, (10,)),
            group("claude-sonnet-4", 1, 1, (1000, 1000, 1000), (100, 100, 100), 500, 0, 0, 1, 0.05, None, (1000,)),
            group("my-local-llama-3", 1, 1, (50, 50, 50), NONE3, None, 0, 0, 0, None, None, (50,)),
        ],
    )  # fmt: skip


def test_by_route_service_and_run_name(conn: SqliteReader) -> None:
    # shop / checkout: T1 100 (error), 200 (retry); T2 300 (error), 1000 (fallback). Sorted [100, 200, 300, 1000]:
    #   p50 250, p95 = 300 + 0.85 * 700 = 895, p99 = 300 + 0.97 * 700 = 979. TTFT [20, 100]: 60, 96, 99.2.
    #   tokens/s 500 and 500; cost (0.01 + 0.05) / 2 runs; groundedness 0.8.
    # support / triage: T3 400; T4 50, 10 (oldest first). Sorted [10, 50, 400]:
    #   p50 50, p95 = 50 + 0.9 * 350 = 365, p99 = 50 + 0.98 * 350 = 393. TTFT [40]; 200 tokens/s; 0.03 / 2 runs.
    assert_groups(
        compute(conn, "route"),
        [
            group("shop / checkout", 4, 2, (250, 895, 979), (60, 96, 99.2), 500, 0.5, 0.25, 0.25, 0.03, 0.8,
                  (100, 200, 300, 1000)),
            group("support / triage", 3, 2, (50, 365, 393), (40, 40, 40), 200, 0, 0, 0, 0.015, 0.6, (400, 50, 10)),
        ],
    )  # fmt: skip


def test_by_route_attribute_on_the_span_else_its_root(conn: SqliteReader) -> None:
    # T1: the failed call has no app.route -> the root's "/checkout"; the retry has its own "/api/chat".
    # T2: neither the calls nor the root have one -> (none). T3: root "/triage". T4: root 7 (an int).
    # (none) [300, 1000]: p50 650, p95 965, p99 993. "7" [10, 50]: p50 30, p95 48, p99 49.6.
    assert_groups(
        compute(conn, "route", route_attribute="app.route"),
        [
            group("(none)", 2, 1, (650, 965, 993), (100, 100, 100), 500, 0.5, 0, 0.5, 0.05, None, (300, 1000)),
            group("7", 2, 1, (30, 48, 49.6), NONE3, None, 0, 0, 0, None, None, (50, 10)),
            group("/api/chat", 1, 1, (200, 200, 200), (20, 20, 20), 500, 0, 1, 0, 0.01, 0.8, (200,)),
            group("/checkout", 1, 1, (100, 100, 100), NONE3, None, 1, 0, 0, None, None, (100,)),
            group("/triage", 1, 1, (400, 400, 400), (40, 40, 40), 200, 0, 0, 0, 0.03, 0.6, (400,)),
        ],
    )  # fmt: skip


def test_by_prompt_version(conn: SqliteReader) -> None:
    # checkout@v1: [100 (error), 200 (retry)]: p50 150, p95 195, p99 199; one run.
    # checkout@v2: [300 (error), 1000 (fallback)]: p50 650, p95 965, p99 993; one run.
    # "3": the version alone (no prompt name), sent as a number. fallback-prompt@(none): a name without a version.
    assert_groups(
        compute(conn, "prompt_version"),
        [
            group("checkout@v1", 2, 1, (150, 195, 199), (20, 20, 20), 500, 0.5, 0.5, 0, 0.01, 0.8, (100, 200)),
            group("checkout@v2", 2, 1, (650, 965, 993), (100, 100, 100), 500, 0.5, 0, 0.5, 0.05, None, (300, 1000)),
            group("(none)", 1, 1, (50, 50, 50), NONE3, None, 0, 0, 0, None, None, (50,)),
            group("3", 1, 1, (400, 400, 400), (40, 40, 40), 200, 0, 0, 0, 0.03, 0.6, (400,)),
            group("fallback-prompt@(none)", 1, 1, (10, 10, 10), NONE3, None, 0, 0, 0, None, None, (10,)),
        ],
    )  # fmt: skip


def counts(groups: list[GroupStats]) -> dict[str, int]:
    return {g.key: g.count for g in groups}


def test_window_keeps_calls_started_since_now_minus_window(conn: SqliteReader) -> None:
    assert WINDOWS == {"5m": 300, "1h": 3600, "all": None}
    after_t4 = BASE_NS + T4 + 1 * S
    # 5 minutes before T4 + 1 s is after T3 (120 s): only T4's calls.
    assert counts(compute(conn, "model", window_s=300, now_ns=after_t4)) == {"my-local-llama-3": 1, "(none)": 1}
    # The hour reaches back past T1.
    assert counts(compute(conn, "model", window_s=3600, now_ns=after_t4))["gpt-4o"] == 4
    # The window starts exactly at T3's call: it is in (start >= now - window).
    at_t3 = BASE_NS + T3 + 300 * S
    assert counts(compute(conn, "model", window_s=300, now_ns=at_t3)) == {
        "gpt-4o": 1, "my-local-llama-3": 1, "(none)": 1}  # fmt: skip
    (gpt4o,) = [g for g in compute(conn, "model", window_s=300, now_ns=at_t3) if g.key == "gpt-4o"]
    assert (gpt4o.p50_ms, gpt4o.error_rate, gpt4o.cost_per_run) == (pytest.approx(400), 0, pytest.approx(0.03))
    assert "gpt-4o" not in counts(compute(conn, "model", window_s=300, now_ns=at_t3 + 1))
    # No window: everything, whatever "now" is.
    assert sum(counts(compute(conn, "model", window_s=None, now_ns=BASE_NS)).values()) == 7


def test_span_where_is_applied_with_its_parameters(conn: SqliteReader) -> None:
    # The shop's calls that did not fail: 200 (retry) and 1000 ms (fallback) in two runs.
    # p50 = 200 + 0.5 * 800 = 600, p95 = 200 + 0.95 * 800 = 960, p99 = 992; cost (0.01 + 0.05) / 2.
    only_shop = parse("service=shop status!=error")
    assert_groups(
        compute(conn, "route", flt=only_shop),
        [group("shop / checkout", 2, 2, (600, 960, 992), (60, 96, 99.2), 500, 0, 0.5, 0.5, 0.03, 0.8, (200, 1000))],
    )  # fmt: skip
    # parameters of the window come before the filter's: both apply
    assert counts(compute(conn, "model", window_s=300, now_ns=BASE_NS + T2 + 300 * S, flt=only_shop)) == {
        "claude-sonnet-4": 1}  # fmt: skip


def test_unknown_grouping_is_refused(conn: SqliteReader) -> None:
    assert GROUPINGS == ("model", "route", "prompt_version")
    with pytest.raises(ValueError, match="service"):
        compute(conn, "service")


def test_to_json_has_every_figure_and_durations_on_request(conn: SqliteReader) -> None:
    gpt4o = compute(conn, "model")[0]
    data = gpt4o.to_json()
    assert set(data) == {
        "key", "count", "runs", "p50_ms", "p95_ms", "p99_ms", "ttft_p50_ms", "ttft_p95_ms", "ttft_p99_ms",
        "tokens_per_s", "error_rate", "retry_rate", "fallback_rate", "cost_per_run", "groundedness",
    }  # fmt: skip
    assert json.loads(json.dumps(data)) == data
    assert gpt4o.to_json(durations=True)["durations_ms"] == pytest.approx([100, 200, 300, 400])


def store(db: Path, *requests) -> SqliteReader:
    fill_db(db, requests)
    return SqliteReader(db)


def test_durations_keep_the_most_recent(tmp_path: Path) -> None:
    import tracetui.query.stats as stats

    # 30 calls of 1, 2, ... 30 ms, started in that order, sent newest first
    spans = [root(9, "burst", 0)] + [
        chat(9, 10 + i, "m", start=i * MS, duration=(i + 1) * MS) for i in reversed(range(30))
    ]  # fmt: skip
    c = store(tmp_path / "burst.db", make_request(spans))
    old, stats.MAX_DURATIONS = stats.MAX_DURATIONS, 5
    try:
        (g,) = compute(c, "model")
    finally:
        stats.MAX_DURATIONS = old
        c.close()
    assert g.count == 30
    assert g.durations_ms == pytest.approx((26, 27, 28, 29, 30))
    # the percentiles still cover all 30: 1..30 ms -> p50 at rank 14.5 = 15.5 ms
    assert g.p50_ms == pytest.approx(15.5)


def test_route_of_a_run_without_its_root_yet_is_named_by_its_first_span(tmp_path: Path) -> None:
    orphan = chat(5, 2, "m", parent=99, start=0, duration=10 * MS)  # its parent (the root) never arrived
    c = store(tmp_path / "rootless.db", make_request([orphan], service="svc"))
    try:
        assert [(g.key, g.count) for g in compute(c, "route")] == [("svc / chat m", 1)]
        assert [(g.key, g.count) for g in compute(c, "route", route_attribute="app.route")] == [("(none)", 1)]
    finally:
        c.close()


def test_the_garbage_collector_is_left_as_it_was(conn: SqliteReader, hand_db: Path) -> None:
    import gc

    assert gc.isenabled()
    compute(conn, "model")
    assert gc.isenabled()
    gc.disable()
    try:
        compute(conn, "route")
        assert not gc.isenabled()
    finally:
        gc.enable()
    closed = SqliteReader(hand_db)
    closed.close()
    with pytest.raises(sqlite3.ProgrammingError):  # a query that fails half-way gives the collector back
        compute(closed, "model")
    assert gc.isenabled()


def test_a_huge_window_is_everything(conn: SqliteReader) -> None:
    assert compute(conn, "model", window_s=1e30, now_ns=BASE_NS) == compute(conn, "model")


# --- the command -----------------------------------------------------------------------


def run(*args: str):
    return CliRunner().invoke(main, ["stats", *args], env={"TRACETUI_DB": None}, catch_exceptions=False)


@pytest.mark.parametrize("by", GROUPINGS)
def test_cli_json_equals_compute(hand_db: Path, conn: SqliteReader, by: str) -> None:
    result = run("--db", str(hand_db), "--json", "--by", by)
    assert result.exit_code == 0, result.output
    # by model, each group also says what the GenAI metrics give (none were sent here)
    extra = {"from_metrics": None} if by == "model" else {}
    assert json.loads(result.stdout) == [{**g.to_json(), **extra} for g in compute(conn, by)]


def test_cli_route_attribute_and_window(hand_db: Path, conn: SqliteReader) -> None:
    result = run("--db", str(hand_db), "--json", "--by", "route", "--route-attribute", "app.route")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [g.to_json() for g in compute(conn, "route", route_attribute="app.route")]
    # The hand-made calls are from November 2023: nothing in the last 5 minutes or hour of the wall clock.
    for window in ("5m", "1h"):
        result = run("--db", str(hand_db), "--json", "--window", window)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == []
    result = run("--db", str(hand_db), "--json", "--window", "all")
    assert [g["key"] for g in json.loads(result.stdout)] == ["gpt-4o", "(none)", "claude-sonnet-4", "my-local-llama-3"]


def test_cli_table(hand_db: Path) -> None:
    result = run("--db", str(hand_db), "--by", "route")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split()[:4] == ["ROUTE", "CALLS", "RUNS", "P50"]
    assert rows[0].startswith("shop / checkout") and rows[0].split()[3:6] == ["4", "2", "250ms"]
    assert rows[1].startswith("support / triage") and rows[1].split()[3:6] == ["3", "2", "50ms"]
    # every row's columns line up under the header
    assert len({len(line) for line in result.stdout.splitlines()}) == 1


def test_cli_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    result = run("--db", str(tmp_path / "nope.db"), "--json")
    assert result.exit_code == 1
    assert "no database" in result.output


def test_cli_bad_choice_is_a_usage_error(hand_db: Path) -> None:
    assert run("--db", str(hand_db), "--by", "service").exit_code == 2
    assert run("--db", str(hand_db), "--window", "2d").exit_code == 2


def test_cli_filter_with_the_real_filter_module(hand_db: Path, conn: SqliteReader) -> None:
    # model=gpt-4o: the four gpt-4o calls (the dated response model too), figures as in test_by_model.
    result = run("--db", str(hand_db), "--json", "--filter", "model=gpt-4o")
    assert result.exit_code == 0, result.output
    assert_groups(
        [group_from_json(g) for g in json.loads(result.stdout)],
        [group("gpt-4o", 4, 3, (250, 385, 397), (30, 39, 39.8), 350, 0.5, 0.25, 0, 0.04 / 3, 0.7, ())],
    )  # fmt: skip
    # status=error by route: the shop's two failed gpt-4o calls, 100 and 300 ms, in two runs.
    result = run("--db", str(hand_db), "--json", "--by", "route", "--filter", "status=error")
    assert result.exit_code == 0, result.output
    assert_groups(
        [group_from_json(g) for g in json.loads(result.stdout)],
        [group("shop / checkout", 2, 2, (200, 290, 298), NONE3, None, 1, 0, 0, None, None, ())],
    )  # fmt: skip
    # the command's figures are compute()'s with the filter's own SQL
    flt = parse("duration>150ms duration<1s")
    result = run("--db", str(hand_db), "--json", "--filter", "duration>150ms duration<1s")
    expected = [{**g.to_json(), "from_metrics": None} for g in compute(conn, "model", flt=flt)]
    assert json.loads(result.stdout) == expected
    assert [g["count"] for g in json.loads(result.stdout)] == [3]  # 200, 300 and 400 ms
    # a bad filter: usage error (exit 2) that names --filter and shows where the problem is
    with pytest.raises(FilterError) as info:
        parse("duration>2")
    result = run("--db", str(hand_db), "--json", "--filter", "duration>2")
    assert result.exit_code == 2
    assert "--filter" in result.output and info.value.message in result.output
    assert "  duration>2\n" in result.output and " " * info.value.position + "^" in result.output


def group_from_json(data: dict) -> GroupStats:
    """The span-derived figures of one group of `stats --json` (``from_metrics`` is checked elsewhere)."""
    return GroupStats(**{k: v for k, v in data.items() if k != "from_metrics"})


# --- the fixtures -------------------------------------------------------------------------

#: What the fixture README says each library's "openai suite" does: one run per call.
OPENAI_SUITE = {"gpt-4o-mini": 4, "gpt-4.1-mini": 1, "gpt-4.1-nano": 1, "gpt-4.1": 1}
OPENAI_LIBRARIES = ("traceai_openai", "openinference_openai", "openllmetry_openai", "otel_v2_openai")


def _ms(span: Span) -> float:
    return (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6


def test_fixture_database_by_model(all_fixtures_db: Path) -> None:
    conn = SqliteReader(all_fixtures_db)
    try:
        groups = {g.key: g for g in compute(conn, "model")}
    finally:
        conn.close()
    # 4 libraries x the openai suite, plus the hand-made agent's two gpt-4o calls (one per run, one of them
    # timing out) and its fallback to claude-sonnet-4. Embeddings, agent, retrieval and tool spans are not calls.
    expected = {model: n * len(OPENAI_LIBRARIES) for model, n in OPENAI_SUITE.items()} | {
        "gpt-4o": 2, "claude-sonnet-4": 1}  # fmt: skip
    assert {key: g.count for key, g in groups.items()} == expected
    assert all(g.runs == g.count for g in groups.values())  # every call in a run of its own
    assert {key: g.error_rate for key, g in groups.items()} == {
        "gpt-4o-mini": 0,
        "gpt-4.1-mini": 0,
        "gpt-4.1-nano": 1,
        "gpt-4.1": 1,
        "gpt-4o": 0.5,
        "claude-sonnet-4": 0,
    }
    assert {key: g.fallback_rate for key, g in groups.items() if g.fallback_rate} == {"claude-sonnet-4": 1}
    # the SDK's own 429 retry is inside one span in every library: no call is a retry
    assert all(g.retry_rate == 0 for g in groups.values())
    assert (groups["gpt-4o"].groundedness, groups["claude-sonnet-4"].groundedness) == (0.18, 0.92)
    assert all(g.groundedness is None for key, g in groups.items() if key not in ("gpt-4o", "claude-sonnet-4"))
    # failed calls are never priced; the rest are
    assert groups["gpt-4.1-nano"].cost_per_run is None and groups["gpt-4.1"].cost_per_run is None
    assert groups["gpt-4o-mini"].cost_per_run > 0

    # Durations against the protos: every span of the openai suites except the embedding calls,
    # and the hand-made agent's "chat ..." spans.
    handmade = {}
    suite = []
    for path in suite_fixture_files():
        for _service, span in iter_spans(requests_of(path)):
            if path.stem == "handmade_agent":
                if span.name.startswith("chat "):
                    handmade.setdefault(span.name.removeprefix("chat "), []).append(span)
            elif "mbedding" not in span.name:
                suite.append(_ms(span))
    assert sorted(d for g in groups.values() for d in g.durations_ms) == pytest.approx(
        sorted(suite + [_ms(s) for spans in handmade.values() for s in spans]))  # fmt: skip
    gpt4o = sorted(_ms(s) for s in handmade["gpt-4o"])  # 2.4 s and the 30 s timeout
    assert groups["gpt-4o"].p50_ms == pytest.approx((gpt4o[0] + gpt4o[1]) / 2)
    assert groups["gpt-4o"].p95_ms == pytest.approx(gpt4o[0] + 0.95 * (gpt4o[1] - gpt4o[0]))
    assert groups["gpt-4o"].p99_ms == pytest.approx(gpt4o[0] + 0.99 * (gpt4o[1] - gpt4o[0]))
    (claude,) = handmade["claude-sonnet-4"]
    ttft_ms = plain_attributes(claude.attributes)["gen_ai.response.time_to_first_chunk"] * 1000
    assert groups["claude-sonnet-4"].p99_ms == pytest.approx(_ms(claude))
    assert groups["claude-sonnet-4"].ttft_p50_ms == pytest.approx(ttft_ms)
    # the test server answers the first token after about 150 ms
    assert 100 < groups["gpt-4o-mini"].ttft_p50_ms < 250


def test_newcomer_run_counts_one_fallback_in_ten_calls(tmp_path: Path) -> None:
    """Issue 13: a 500 retried, then a timeout, then the streamed final answer of the next step (no
    fallback: it asks something else), and elsewhere one real fallback (gpt-4o failed, gpt-4o-mini asked
    the same). Ten gpt-4o-mini calls in all: FALLBK 10 %, not the 20 % shown before."""

    def asked(text: str) -> dict:
        return {"gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": text}]}])}

    mini = "gpt-4o-mini"
    spans = [
        root(9, "agent", 0),
        chat(9, 2, mini, start=0, duration=20 * MS, status=ERROR, **asked("plan")),  # 500
        chat(9, 3, mini, start=220 * MS, duration=400 * MS, tokens=(50, 40), **asked("plan")),  # retried
        chat(9, 4, "gpt-4.1", start=700 * MS, duration=1000 * MS, status=ERROR, **asked("draft")),  # timeout
        chat(9, 5, mini, start=1750 * MS, duration=500 * MS, ttft_s=0.15, **asked("final answer")),  # streamed
        chat(9, 6, "gpt-4o", start=2300 * MS, duration=30 * MS, status=ERROR, **asked("lookup")),
        chat(9, 7, mini, start=2400 * MS, duration=300 * MS, tokens=(60, 30), **asked("lookup")),  # replaces it
    ]
    spans += [chat(9, 10 + i, mini, start=(3000 + 100 * i) * MS, duration=50 * MS, tokens=(5, 5), **asked(f"q{i}"))
              for i in range(6)]  # fmt: skip
    db = tmp_path / "newcomer.db"
    fill_db(db, [make_request(spans, service="newcomer")])
    reader = SqliteReader(db)
    try:
        groups = {g.key: g for g in compute(reader, "model")}
        (trace,) = reader.traces()
        run = (trace.retries, trace.fallbacks, trace.tokenless_calls)
    finally:
        reader.close()
    assert groups[mini].count == 10
    assert (groups[mini].fallback_rate, groups[mini].retry_rate) == (0.1, 0.1)
    assert run == (1, 1, 1)  # the streamed answer reported no usage

"""Two cohorts side by side: figures checked against values computed by hand, the verdict and --fail-on.

The cohorts are runs of one agent span and one chat call each, stored through tracetui's own
decoder and writer into a real SQLite file; evaluation results and user feedback arrive as
``gen_ai.evaluation.result`` span events, as apps send them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import fill_db, kv_list, make_request, make_span, sid, tid
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tracetui.cli.main import main
from tracetui.model.filter import parse
from tracetui.model.reader import first_calls_of
from tracetui.query import compare as cmp
from tracetui.store.reader import SqliteReader

MS = 1_000_000


def _event(name: str, start: int, **attrs) -> Span.Event:
    from helpers import BASE_NS

    return Span.Event(time_unix_nano=BASE_NS + start, name=name, attributes=kv_list(attrs))


def _evaluation(start: int, name: str, score: float | None = None, label: str | None = None) -> Span.Event:
    attrs: dict = {"gen_ai.evaluation.name": name}
    if score is not None:
        attrs["gen_ai.evaluation.score.value"] = score
    if label is not None:
        attrs["gen_ai.evaluation.score.label"] = label
    return _event("gen_ai.evaluation.result", start, **attrs)


def cohort_runs(
    first: int,
    model: str,
    durations_ms: list[float],
    *,
    grounded: float | None = None,
    errors: int = 0,
    output_tokens: int = 100,
    max_tokens: int = 256,
    ttft_ms: float | None = None,
    thumbs: dict[int, str] | None = None,
    gap_ms: int = 10_000,
):
    """One run (agent + chat call) per duration; run i starts ``gap_ms`` after run i-1."""
    requests = []
    for i, duration in enumerate(durations_ms):
        n = first + i
        start = n * gap_ms * MS
        call_attrs = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": model,
            "gen_ai.request.max_tokens": max_tokens,
            "gen_ai.usage.input_tokens": 50,
            "gen_ai.usage.output_tokens": output_tokens,
        }
        if ttft_ms is not None:
            call_attrs["gen_ai.response.time_to_first_chunk"] = ttft_ms / 1000
        call = make_span(
            tid(n), sid(2 * n + 1), sid(2 * n), name=f"chat {model}", start=start + MS,
            duration=int(duration * MS), attributes=call_attrs, kind=Span.SPAN_KIND_CLIENT,
            status=Status.STATUS_CODE_ERROR if i < errors else Status.STATUS_CODE_UNSET,
        )  # fmt: skip
        if grounded is not None:
            call.events.append(_evaluation(int(duration * MS), "groundedness", grounded))
        if thumbs and i in thumbs:
            call.events.append(_evaluation(int(duration * MS) + MS, "user_feedback", label=thumbs[i]))
        root = make_span(
            tid(n), sid(2 * n), name="support agent", start=start, duration=int(duration * MS) + 2 * MS,
            attributes={"gen_ai.operation.name": "invoke_agent"},
        )  # fmt: skip
        requests.append(make_request([root, call]))
    return requests


def _db(tmp_path: Path, *cohorts) -> Path:
    db = tmp_path / "compare.db"
    fill_db(db, [r for c in cohorts for r in c])
    return db


def _compare(db: Path, a: str, b: str, **rule) -> cmp.Comparison:
    reader = SqliteReader(db)
    try:
        return cmp.compare(reader, cmp.Cohort("A", a), cmp.Cohort("B", b), cmp.Rule(**rule))
    finally:
        reader.close()


def test_figures_match_the_values_computed_by_hand(tmp_path):
    # A: 40 calls of 20, 40, ..., 800 ms; B: 40 calls of 10, 20, ..., 400 ms.
    a = cohort_runs(0, "model-a", [20.0 * (i + 1) for i in range(40)], grounded=0.9, errors=4, max_tokens=256)
    b = cohort_runs(
        100, "model-b", [10.0 * (i + 1) for i in range(40)], grounded=0.6, output_tokens=200, max_tokens=512
    )
    c = _compare(_db(tmp_path, a, b), "model=model-a", "model=model-b")
    get = c.get
    assert (get("calls").a, get("calls").b, get("runs").a, get("runs").b) == (40, 40, 40, 40)
    # p50 = linear interpolation at rank 19.5 (0-based): (400 + 420) / 2 ms; B: (200 + 210) / 2
    assert get("p50").a == pytest.approx(410.0) and get("p50").b == pytest.approx(205.0)
    # p99 at rank 38.61: 780 + 0.61 * 20 = 792.2 ms; B: 390 + 0.61 * 10 = 396.1 ms
    assert get("p99").a == pytest.approx(792.2) and get("p99").b == pytest.approx(396.1)
    assert get("p99").relative == pytest.approx(-0.5)
    # p99 of 40 values has no 95 % order-statistic interval (upper rank ceil(39.6 + 1.23) + 1 = 42 > 40)
    assert get("p99").confidence == "n too small"
    # p50 has one: 1-based ranks floor(20 - 6.2) = 13 .. ceil(20 + 6.2) + 1 = 28 -> A [260, 560], B [130, 280] ms,
    # so the delta lies in [130 - 560, 280 - 260]
    assert (get("p50").low, get("p50").high) == pytest.approx((-430.0, 20.0))
    assert get("p50").confidence == "noise"  # the interval reaches 0
    assert get("error_rate").a == pytest.approx(0.1) and get("error_rate").b == 0
    assert (get("output_tokens").a, get("output_tokens").b) == (100, 200)
    assert get("groundedness").delta == pytest.approx(-0.3) and get("groundedness").significant
    assert get("groundedness_below").b == 0  # 0.6 is not below the 0.5 threshold
    assert c.caps_a == {"256": 40} and c.caps_b == {"512": 40}
    # the verdict: quality dropped (−0.30 beyond 0.05, significant) -> reject, caps warned about
    assert c.verdict.decision == "reject" and c.verdict.reason == "quality dropped"
    assert "groundedness −0.30" in c.verdict.line and "p99 −50 % (n too small)" in c.verdict.line
    assert any("max_tokens caps differ" in w and "256 ×40" in w and "512 ×40" in w for w in c.verdict.warnings)


def test_a_faster_cohort_with_quality_held_is_accepted_and_a_slower_one_rejected(tmp_path):
    # 800 calls a side: enough for p99's interval. B takes 60 % of A's time; groundedness equal.
    slow = [1000.0 + (i % 100) * 10 for i in range(800)]
    a = cohort_runs(0, "model-a", slow, grounded=0.9)
    b = cohort_runs(1000, "model-b", [d * 0.6 for d in slow], grounded=0.9)
    db = _db(tmp_path, a, b)
    c = _compare(db, "model=model-a", "model=model-b")
    p99 = c.get("p99")
    # each of 1000, 1010, ..., 1990 ms eight times: rank 799 * 0.99 = 791.01 lies between 1980 (index 791) and 1990
    assert p99.a == pytest.approx(1980.1) and p99.b == pytest.approx(1980.1 * 0.6)
    assert p99.significant and p99.direction == "better"
    assert c.verdict.decision == "accept" and c.verdict.reason == "faster, quality held"
    assert c.verdict.line.startswith("p99 −40 %, groundedness 0.00 (≈ noise)")
    assert not c.verdict.warnings  # same caps
    swapped = _compare(db, "model=model-b", "model=model-a")
    assert swapped.verdict.decision == "reject" and swapped.verdict.reason == "slower"
    # a higher bar than the gain: no clear change
    strict = _compare(db, "model=model-a", "model=model-b", min_gain=0.5)
    assert strict.verdict.decision == "no clear change"


def test_thumbs_down_rate_by_ttft_cohort(tmp_path):
    # fast runs (TTFT 0.4 s): 10 rated, 1 down; slow runs (TTFT 3.5 s): 10 rated, 6 down
    fast = cohort_runs(
        0, "m", [800.0] * 20, ttft_ms=400, thumbs={i: "thumbs_up" if i else "thumbs_down" for i in range(10)}
    )
    slow = cohort_runs(
        100, "m", [5000.0] * 20, ttft_ms=3500, thumbs={i: "thumbs_down" if i < 6 else "thumbs_up" for i in range(10)}
    )
    db = _db(tmp_path, fast, slow)
    c = _compare(db, "ttft<1s", "ttft>1s")
    bands = dict(c.thumbs_by_ttft)
    assert bands["TTFT < 1 s"].a == pytest.approx(0.1) and bands["TTFT < 1 s"].n_a == 10
    assert bands["> 3 s"].b == pytest.approx(0.6) and bands["> 3 s"].n_b == 10
    assert bands["1–3 s"].n_a == bands["1–3 s"].n_b == 0
    assert c.get("thumbs_down").a == pytest.approx(0.1) and c.get("thumbs_down").b == pytest.approx(0.6)
    assert c.get("feedback_rate").a == pytest.approx(0.5)
    # the Stats screen's line over every call: 7 of 20 rated runs down, by band 1 of 10 and 6 of 10
    reader = SqliteReader(db)
    try:
        felt = cmp.feelings(reader, cmp.Cohort("all"))
    finally:
        reader.close()
    assert (felt.down, felt.rated, felt.runs, felt.abandoned) == (7, 20, 40, 0)
    assert felt.bands == [("TTFT < 1 s", 1, 10), ("1–3 s", 0, 0), ("> 3 s", 6, 10)]
    assert felt.text() == (
        "thumbs down 35% of 20 rated runs · TTFT < 1 s 10% (10) · > 3 s 60% (10) · abandoned 0% of 40 runs"
    )


def test_newcombe_interval_matches_the_published_example():
    # Newcombe (1998), Statistics in Medicine 17:873, example (a): 56/70 vs 48/80, method 10: 0.0524 to 0.3339
    d = cmp._rate_delta("x", "x", 1, 48, 80, 56, 70)
    assert d.delta == pytest.approx(0.2)
    assert (d.low, d.high) == pytest.approx((0.0524, 0.3339), abs=5e-4)


def test_fail_on_rules_parse_and_name_their_problems():
    rules = cmp.parse_fail_on("groundedness<-0.05, p99_ttft>+10%")
    assert [(r.metric, r.op, r.value, r.relative) for r in rules] == [
        ("groundedness", "<", -0.05, False),
        ("p99_ttft", ">", 10.0, True),
    ]
    with pytest.raises(ValueError, match="bad --fail-on rule 'p99 ~ 3'"):
        cmp.parse_fail_on("p99 ~ 3")
    assert math.isclose(cmp.parse_fail_on("p99>−5%")[0].value, -5.0)


def test_compare_command_prints_figures_and_gates_ci(tmp_path):
    a = cohort_runs(0, "model-a", [20.0 * (i + 1) for i in range(40)], grounded=0.9)
    b = cohort_runs(100, "model-b", [10.0 * (i + 1) for i in range(40)], grounded=0.6)
    db = _db(tmp_path, a, b)
    runner = CliRunner()
    base = ["compare", "--db", str(db), "--a", "model=model-a", "--b", "model=model-b"]
    shown = runner.invoke(main, base, env={"TRACETUI_DB": None})
    assert shown.exit_code == 0, shown.output
    assert "call duration p50" in shown.output and "410ms" in shown.output and "205ms" in shown.output
    assert "verdict: p99 −50 % (n too small), groundedness −0.30 → reject: quality dropped" in shown.output
    failing = runner.invoke(main, [*base, "--fail-on", "groundedness<-0.05,p50>+10%"], env={"TRACETUI_DB": None})
    assert failing.exit_code == 1
    assert "FAIL groundedness<-0.05: groundedness changed by −0.3" in failing.output
    assert "ok   p50>+10%: p50 changed by −50.0 %" in failing.output
    passing = runner.invoke(main, [*base, "--fail-on", "p50>+10%,error_rate>0.02"], env={"TRACETUI_DB": None})
    assert passing.exit_code == 0, passing.output
    as_json = runner.invoke(main, [*base, "--json", "--fail-on", "groundedness<-0.5"], env={"TRACETUI_DB": None})
    assert as_json.exit_code == 0
    out = json.loads(as_json.output)
    assert out["verdict"]["decision"] == "reject" and out["deltas"] == "B - A"
    figure = next(f for f in out["figures"] if f["metric"] == "p50")
    assert (figure["a"], figure["b"], figure["relative"]) == (410.0, 205.0, -0.5)
    assert out["fail_on"] == [{"rule": "groundedness<-0.5", "failed": False,
                               "message": "groundedness<-0.5: groundedness changed by −0.3 (significant) → ok"}]  # fmt: skip
    unknown = runner.invoke(main, [*base, "--fail-on", "p42<1"], env={"TRACETUI_DB": None})
    assert unknown.exit_code == 1 and "no figure called 'p42'" in unknown.output
    bad = runner.invoke(main, [*base, "--fail-on", "p99 is bad"], env={"TRACETUI_DB": None})
    assert bad.exit_code == 2 and "bad --fail-on rule" in bad.output
    bad_filter = runner.invoke(main, ["compare", "--db", str(db), "--a", "ttft>3"], env={"TRACETUI_DB": None})
    assert bad_filter.exit_code == 2 and "'--a'" in bad_filter.output


def test_windows_before_and_after_a_change(tmp_path):
    # the same route before and after: runs 0..39 slow, runs 40..79 fast, the change between them
    from helpers import BASE_NS

    before = cohort_runs(0, "m", [400.0] * 40, gap_ms=1000)
    after = cohort_runs(40, "m", [100.0] * 40, gap_ms=1000)
    db = _db(tmp_path, before, after)
    change = BASE_NS + 40 * 1000 * MS
    reader = SqliteReader(db)
    try:
        c = cmp.compare(reader, cmp.Cohort("A", "", None, change), cmp.Cohort("B", "", change, None))
    finally:
        reader.close()
    assert (c.get("calls").a, c.get("calls").b) == (40, 40)
    assert (c.get("p50").a, c.get("p50").b) == (400.0, 100.0)


# --- the same on every backend: SQLite, and the ClickHouse exporter's tables ---------------------------


def _feedback_record(n: int, name: str, *, as_attribute: bool = False, body: dict | None = None, **attrs) -> LogRecord:
    """A feedback log record about run ``n`` as a whole (no span id), sent after the run (gap_ms 10,000)."""
    from helpers import BASE_NS, any_value

    if as_attribute:  # older SDKs: the event name as an attribute
        attrs = {"event.name": name, **attrs}
    record = LogRecord(
        time_unix_nano=BASE_NS + n * 10_000 * MS + 9_000 * MS, trace_id=tid(n),
        event_name="" if as_attribute else name, attributes=kv_list(attrs),
    )  # fmt: skip
    if body is not None:
        record.body.CopyFrom(any_value(body))
    return record


@pytest.fixture(scope="module", params=["sqlite", "clickhouse"])
def felt(request, tmp_path_factory):
    """Fast runs 0-19 (model m-fast, TTFT 0.4 s): 10 rated by span events (1 down), runs 15 and 16 down by log
    records (attributes; a structured body).
    Slow runs 100-119 (m-slow, TTFT 3.5 s): 10 rated (6 down), run 115 down by an older-style log record,
    runs 118 and 119 abandoned."""
    from helpers import both_backends

    fast = cohort_runs(
        0, "m-fast", [800.0] * 20, ttft_ms=400, thumbs={i: "thumbs_up" if i else "thumbs_down" for i in range(10)}
    )
    slow = cohort_runs(
        100, "m-slow", [5000.0] * 20, ttft_ms=3500, max_tokens=512,
        thumbs={i: "thumbs_down" if i < 6 else "thumbs_up" for i in range(10)},
    )  # fmt: skip
    records = [
        _feedback_record(15, "user_feedback", thumb="down", comment="too slow"),
        _feedback_record(16, "feedback", body={"rating": 0, "comment": "wrong invoice"}),
        _feedback_record(115, "Thumbs-Down", as_attribute=True, score=1.0),
        _feedback_record(118, "abandoned", label="true"),
        _feedback_record(119, "abandoned", label="true"),
    ]
    logs = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=records)])]
    ).SerializeToString()
    db = tmp_path_factory.mktemp("felt") / "felt.db"
    fill_db(db, [*fast, *slow], [logs])
    yield from both_backends(request, db)


def test_feelings_and_compare_read_feedback_the_same_on_every_backend(felt) -> None:
    """Span events, log records named as feedback (event name field or attribute, any case) and abandonment:
    the Stats screen's line and the compare figures; retry and fallback rates are unknown over ClickHouse."""
    line = cmp.feelings(felt, cmp.Cohort("all"))
    assert (line.down, line.rated, line.runs, line.abandoned) == (10, 23, 40, 2)
    assert line.text() == (
        "thumbs down 43% of 23 rated runs · TTFT < 1 s 25% (12) · > 3 s 64% (11) · abandoned 5% of 40 runs"
    )
    # the line reads a row per run (first_calls): the runs of the calls, with their first call's TTFT
    for flt in (None, parse("model=m-slow"), parse("ttft>1s")):
        firsts = felt.first_calls(flt=flt)
        assert firsts == first_calls_of(felt.cohort_calls(flt=flt)) and firsts
    notes = {r.explanation for r in felt.evaluation_results({tid(15), tid(16)})}
    assert notes == {"too slow", "wrong invoice"}
    c = cmp.compare(felt, cmp.Cohort("A", "model=m-fast"), cmp.Cohort("B", "model=m-slow"))
    assert (c.get("calls").a, c.get("runs").b) == (20, 20)
    assert (c.get("thumbs_down").a, c.get("thumbs_down").b) == (pytest.approx(3 / 12), pytest.approx(7 / 11))
    assert (c.get("abandoned").a, c.get("abandoned").b) == (0, pytest.approx(0.1))
    assert (c.get("p50_ttft").a, c.get("p50_ttft").b) == (pytest.approx(400.0), pytest.approx(3500.0))
    assert c.get("p50_run").a == pytest.approx(802.0) and c.get("cost_per_run").a is None  # model m-* has no price
    assert c.caps_a == {"256": 20} and c.caps_b == {"512": 20}
    retries = c.get("retry_rate")
    if isinstance(felt, SqliteReader):
        assert (retries.a, retries.b) == (0, 0) and c.notes == []
    else:
        assert (retries.a, retries.b) == (None, None) and cmp.format_value(retries, retries.a) == "—"
        assert c.notes == ["retry rate and fallback rate: not known over this source (it does not compare calls)"]
    assert (
        c.verdict.line == "p99 +525 % (n too small), groundedness: no scores → no clear change: too few calls to tell"
    )

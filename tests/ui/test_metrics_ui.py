"""GenAI metrics on screen: the Stats screen's "from metrics" table, and a span's TTFT from an exemplar."""

from __future__ import annotations

from pathlib import Path

from helpers import make_request, make_span, read_records, sid, tid, ttft_exemplar_request
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from tests.ui.conftest import FIXTURES, make_app, settle
from tests.ui.test_hostile_ui import screen_text
from tracetui.ingest.ack import Outcome, ingest
from tracetui.store.writer import Writer
from tracetui.ui.screens.stats import StatsScreen
from tracetui.ui.widgets.waterfall import Waterfall


def litellm_dropped() -> int:
    """LiteLLM's per-call attributes on the points of the time metrics (first export; the second repeats it)."""
    first = ExportMetricsServiceRequest.FromString(read_records(FIXTURES / "litellm_otel.metrics.otlp")[0])
    timing = (
        "gen_ai.client.operation.duration",
        "gen_ai.server.time_to_first_token",
        "gen_ai.server.time_per_output_token",
    )
    return sum(
        1
        for rm in first.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name in timing
        for point in metric.histogram.data_points
        for kv in point.attributes
        if kv.key in ("hidden_params", "metadata.applied_guardrails")
    )


def store(db: Path, signal: str, records: list[bytes]) -> None:
    writer = Writer(db)
    writer.start()
    try:
        for record in records:
            assert ingest(writer, signal, record).outcome is Outcome.OK
    finally:
        writer.stop()


async def litellm_stats_screen(tmp_path: Path, size: tuple[int, int]) -> str:
    """The Stats screen's text with LiteLLM's metrics stored (and no spans)."""
    db = tmp_path / "m.db"
    store(db, "metrics", read_records(FIXTURES / "litellm_otel.metrics.otlp"))
    app = make_app(db)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await pilot.press("S")
        await settle(pilot)
        assert isinstance(app.screen, StatsScreen)
        return screen_text(app)


async def test_stats_screen_shows_litellm_ttft_from_metrics_with_its_method(tmp_path: Path) -> None:
    """LiteLLM reports TTFT only as a metric: the Stats screen still shows it, labelled "from metrics"."""
    text = await litellm_stats_screen(tmp_path, (150, 40))
    words = " ".join(text.split())  # labels may wrap
    assert "from metrics, per model (histogram buckets, linear interpolation within a bucket" in words
    assert "error at most one bucket's width" in words
    assert f"{litellm_dropped()} per-call attributes dropped from metric points" in words
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.strip().startswith("gpt-")}
    # gpt-4.1-mini: one streamed call, TTFT 0.376 s by the metric (0.378 s by the app's clock)
    assert rows["gpt-4.1-mini"][1:2] == ["1"] and "376ms" in rows["gpt-4.1-mini"]
    assert "exact" in rows["gpt-4.1-mini"]
    # gpt-4o-mini: TTFT 0.156 s and 0.322 s; its p50 and p95
    assert "156ms" in rows["gpt-4o-mini"] and "322ms" in rows["gpt-4o-mini"]


async def test_a_span_shows_its_ttft_from_a_metric_exemplar_in_the_detail_pane(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    chat = make_span(tid(1), sid(2), sid(1), name="chat gpt-4o-mini", duration=800_000_000, attributes={
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.output_tokens": 30,
    })  # fmt: skip
    root = make_span(tid(1), sid(1), name="agent run", duration=900_000_000)
    store(db, "metrics", [ttft_exemplar_request(tid(1), sid(2), 0.32)])  # the metric first: it waits for its span
    store(db, "traces", [make_request([root, chat]).SerializeToString()])
    app = make_app(db)
    async with app.run_test(size=(140, 50)) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        waterfall = app.screen.query_one(Waterfall)
        waterfall.cursor_row = next(i for i, line in enumerate(waterfall.lines) if line.span.name == "chat gpt-4o-mini")
        await settle(pilot)
        body = str(app.screen.query_one("#detail-body").render())
        ttft_line = next(line for line in body.splitlines() if "first token" in line.lower() or "ttft" in line.lower())
        assert "320ms" in ttft_line and "metric exemplar (gen_ai.server.time_to_first_token)" in ttft_line


async def test_from_metrics_fits_80_columns(tmp_path: Path) -> None:
    """At 80x24 the label wrapped mid-phrase ("... within a" / "bucket; ...") and the table ran off the
    right edge ("TPOT P5"): the label is shortened and the least useful percentiles go first."""
    lines = (await litellm_stats_screen(tmp_path, (80, 24))).splitlines()
    title = next(i for i, line in enumerate(lines) if "from metrics" in line)
    assert "within a bucket" not in lines[title] and not lines[title + 1].startswith("bucket")
    header = next(line for line in lines if line.lstrip().startswith("MODEL"))
    titles = header.split("  ")
    assert all(t.strip() in ("", "MODEL", "CALLS", "P50", "P95", "TTFT P50", "TTFT P95", "TPOT P50", "ERROR ≤")
               for t in titles), header  # fmt: skip
    assert header.rstrip().endswith("ERROR ≤"), header  # the error bound is never cut off
    row = next(line for line in lines if line.strip().startswith("gpt-4.1-mini"))
    assert "376ms" in row and "exact" in row

"""The real app over the ClickHouse exporter's tables (chdb, through our chdb server over HTTP).

The UI does not know the backend: the same keys work, the header names the table,
new runs appear as the Collector writes them, and the list says which filter terms
it decided in Python.
"""

from __future__ import annotations

import threading

import pytest
from helpers import clickhouse_reader
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.ui.conftest import FIXED_NOW_NS, fixture_requests, settle
from tracetui.clickhouse.load import insert_requests
from tracetui.clickhouse.reader import ClickHouseReader
from tracetui.ui.screens.stats import StatsScreen
from tracetui.ui.screens.trace_view import TraceScreen
from tracetui.ui.widgets.status_header import StatusHeader
from tracetui.ui.widgets.trace_table import TraceTable
from tracetui.ui.widgets.waterfall import Waterfall


def app_over(reader: ClickHouseReader, poll_interval: float | None = None):
    from tracetui.ui.app import TraceTuiApp

    lock = reader._lock  # the readers of one connection share its lock, as the CLI's do
    return TraceTuiApp(
        reader,
        open_reader=lambda: ClickHouseReader(reader._conn, reader._shape, lock=lock),
        pins=None,
        poll_interval=poll_interval,
        clock=lambda: FIXED_NOW_NS,
        freeze_gc=False,
    )


@pytest.fixture
def agent_ch(chdb) -> ClickHouseReader:
    return clickhouse_reader(chdb, fixture_requests("handmade_agent.otlp"))


async def test_the_list_header_and_the_timeout_run(agent_ch: ClickHouseReader) -> None:
    app = app_over(agent_ch, poll_interval=0.05)
    async with app.run_test(size=(130, 36)) as pilot:
        for _ in range(60):
            await settle(pilot)
            header = str(app.screen.query_one(StatusHeader).render())
            if "spans" in header:
                break
        assert "otel_traces @ chdb:" in header and "no receiver" not in header
        table = app.screen.query_one(TraceTable)
        assert table.row_count == 2
        table.cursor_row = next(i for i in range(table.row_count) if table.row_at(i).span_count == 5)
        await settle(pilot)
        row_text = table.render_line(table.cursor_row - table.scroll_offset.y + 1).text
        assert "chat gpt-4o 88%" in row_text and "$0.0071" in row_text and "0.92" in row_text
        await pilot.press("s")  # the slowest call of the run, opened with its detail
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen)
        waterfall = app.screen.query_one(Waterfall)
        assert waterfall.lines[waterfall.cursor_row].span.name == "chat gpt-4o"
        detail = str(app.screen.query_one("#detail-body").render())
        assert "openai.APITimeoutError" in detail
        summary = str(app.screen.query_one("#trace-summary").render())
        assert "fallback 30.0s" in summary  # the time split: the failed call's 30 s went to the fallback
        await pilot.press("c")
        summary = str(app.screen.query_one("#trace-summary").render())
        assert "critical path 34.1s of 34.1s" in summary


async def test_stats_are_clickhouse_figures_and_retries_say_unknown(agent_ch: ClickHouseReader) -> None:
    app = app_over(agent_ch)
    async with app.run_test(size=(150, 36)) as pilot:
        await settle(pilot)
        await pilot.press("S")
        await settle(pilot)
        assert isinstance(app.screen, StatsScreen)
        table = app.screen.query_one("#stats-table")
        rows = {str(cells[0]).strip(): [str(c).strip() for c in cells]
                for cells in (table.get_row_at(i) for i in range(table.row_count))}  # fmt: skip
        assert set(rows) == {"gpt-4o", "claude-sonnet-4"}
        assert rows["gpt-4o"][1:6] == ["2", "2", "16.2s", "28.6s", "29.7s"]  # the 30 s timeout and a 2.4 s call
        assert "—" in rows["gpt-4o"]  # retry / fallback rates: not known to ClickHouse, never a wrong 0%
        assert "820ms" in rows["claude-sonnet-4"] and "0.92" in rows["claude-sonnet-4"]


async def test_python_only_terms_are_said_in_the_filter_line(agent_ch: ClickHouseReader) -> None:
    app = app_over(agent_ch)
    async with app.run_test(size=(150, 36)) as pilot:
        await settle(pilot)
        await pilot.press("slash")
        await pilot.press(*"cost>0.005")
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen.query_one(TraceTable).row_count == 1
        banner = str(app.screen.query_one("#new-banner").render())
        assert "filter: cost>0.005" in banner and "decided in Python" in banner


async def test_new_runs_appear_as_the_collector_writes_them(chdb) -> None:
    first, *rest = fixture_requests("openllmetry_openai.otlp")
    reader = clickhouse_reader(chdb, [first])
    app = app_over(reader, poll_interval=0.05)
    async with app.run_test(size=(130, 36)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(TraceTable)
        before = table.row_count
        conn = chdb.borrowed(reader._shape.database)
        requests = [ExportTraceServiceRequest.FromString(d) for d in rest]

        def write() -> None:  # the Collector's insert, on the reader's HTTP session: one query at a time
            with reader._lock:
                insert_requests(conn, requests, [])

        written = threading.Thread(target=write)
        written.start()
        written.join(30)
        for _ in range(100):
            await pilot.pause(0.05)
            if table.row_count > before:
                break
        assert table.row_count > before


async def test_two_marked_stats_rows_compare_over_clickhouse(chdb) -> None:
    """Space, space, C: the compare screen over ClickHouse shows the figures compare computes from the reader,
    retry and fallback rates as "—" and a note saying why."""
    from tests.ui.test_compare_ui import mark_rows, open_stats
    from tests.ui.test_hostile_ui import screen_text
    from tracetui.query import compare as cmp
    from tracetui.ui.screens.compare import CompareScreen

    reader = clickhouse_reader(chdb, fixture_requests())
    app = app_over(reader)
    async with app.run_test(size=(120, 36)) as pilot:
        await open_stats(pilot)
        await mark_rows(pilot, "gpt-4o-mini", "gpt-4.1-mini")
        await pilot.press("C")
        for _ in range(40):
            await settle(pilot)
            if isinstance(app.screen, CompareScreen) and "verdict:" in screen_text(app):
                break
        assert isinstance(app.screen, CompareScreen)
        text = screen_text(app)
        expected = cmp.compare(
            reader, cmp.Cohort("A", group=("model", "gpt-4o-mini")), cmp.Cohort("B", group=("model", "gpt-4.1-mini"))
        )
        assert f"verdict: {expected.verdict.line}" in " ".join(text.split())
        p50 = expected.get("p50")
        row = next(line for line in text.splitlines() if line.strip().startswith("call duration p50"))
        assert cmp.format_value(p50, p50.a) in row and cmp.format_value(p50, p50.b) in row
        retries = next(line for line in text.splitlines() if line.strip().startswith("retry rate"))
        assert "—" in retries and "%" not in retries
        assert app.screen.comparison is not None
        assert "retry rate and fallback rate: not known over this source" in " ".join(app.screen.comparison.notes)
        app.screen.query_one("#compare-body").scroll_end(animate=False)  # the notes, under the figures
        await settle(pilot)
        assert "not known over this source" in " ".join(screen_text(app).split())
    reader.close()

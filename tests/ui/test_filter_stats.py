"""The `/` filter line, quick toggles and the stats screen, in the real app."""

from __future__ import annotations

from pathlib import Path

from tests.ui.conftest import make_app, settle
from tracetui.query.export import span_json
from tracetui.store.reader import SqliteReader
from tracetui.ui.screens.stats import StatsScreen
from tracetui.ui.screens.trace_list import TraceListScreen
from tracetui.ui.screens.trace_view import TraceScreen
from tracetui.ui.widgets.filter_bar import DEBOUNCE_S
from tracetui.ui.widgets.trace_table import TraceTable
from tracetui.ui.widgets.waterfall import Waterfall


def shown_traces(app) -> list:
    table = app.screen.query_one(TraceTable)
    return [table.row_at(i) for i in range(table.row_count)]


def traces_with(db: Path, predicate) -> set[bytes]:
    """Expected rows, computed from the stored spans (not through the filter code)."""
    reader = SqliteReader(db)
    return {t.trace_id for t in reader.traces(0, -1) if any(predicate(s) for s in span_json(reader, t.trace_id))}


async def type_filter(pilot, text: str) -> None:
    await pilot.press("slash")
    bar_input = pilot.app.screen.query_one("#filter-input")
    bar_input.value = text
    await pilot.pause(DEBOUNCE_S + 0.1)
    await settle(pilot)


async def test_filter_narrows_the_list_live(fixtures_db: Path) -> None:
    app = make_app(fixtures_db)
    async with app.run_test(size=(130, 36)) as pilot:
        await settle(pilot)
        everything = len(shown_traces(app))
        await type_filter(pilot, "model=gpt-4.1-nano")
        expected = traces_with(fixtures_db, lambda s: "gpt-4.1-nano" in (s["request_model"] or ""))
        assert {t.trace_id for t in shown_traces(app)} == expected and 0 < len(expected) < everything
        assert "filter: model=gpt-4.1-nano" in str(app.screen.query_one("#new-banner").render())
        await type_filter(pilot, "duration>1s status=error")
        assert {t.trace_id for t in shown_traces(app)} == {
            t.trace_id for t in SqliteReader(fixtures_db).traces(0, -1) if t.duration_ns > 10**9 and t.error_count
        }
        await type_filter(pilot, "")
        assert len(shown_traces(app)) == everything


async def test_a_filtered_count_stops_at_the_cap_and_says_so(fixtures_db: Path, monkeypatch) -> None:
    """Counting every match checks each run's spans (seconds at 10M spans): the list counts up to a cap."""
    from tracetui.ui.screens import trace_list

    expected = traces_with(fixtures_db, lambda s: s["kind"] == "llm")
    assert len(expected) > 3
    monkeypatch.setattr(trace_list, "FILTER_COUNT_CAP", 3)
    app = make_app(fixtures_db)
    async with app.run_test(size=(130, 36)) as pilot:
        await settle(pilot)
        await type_filter(pilot, "kind=llm")
        banner = str(app.screen.query_one("#new-banner").render())
        assert "3+ runs match, the newest listed" in banner
        newest = sorted(SqliteReader(fixtures_db).traces(0, -1), key=lambda t: -t.start_ns)
        assert [t.trace_id for t in shown_traces(app)] == [t.trace_id for t in newest if t.trace_id in expected][:3]
    monkeypatch.setattr(trace_list, "FILTER_COUNT_CAP", len(expected))
    app = make_app(fixtures_db)
    async with app.run_test(size=(130, 36)) as pilot:
        await settle(pilot)
        await type_filter(pilot, "kind=llm")
        assert f"{len(expected)}+ runs match" in str(app.screen.query_one("#new-banner").render())
    monkeypatch.setattr(trace_list, "FILTER_COUNT_CAP", len(expected) + 1)
    app = make_app(fixtures_db)
    async with app.run_test(size=(130, 36)) as pilot:
        await settle(pilot)
        await type_filter(pilot, "kind=llm")
        assert f"({len(expected)} runs match;" in str(app.screen.query_one("#new-banner").render())


async def test_malformed_filter_shows_an_error_and_changes_nothing(fixtures_db: Path) -> None:
    app = make_app(fixtures_db)
    async with app.run_test(size=(130, 36)) as pilot:
        await settle(pilot)
        await type_filter(pilot, "model=gpt-4.1-nano")
        before = [t.trace_id for t in shown_traces(app)]
        for bad in (
            "duration>fast",
            "cost>>1",
            'name="unclosed',
            "'; DROP TABLE spans; --",
            '"x\'; DROP TABLE spans; --"',
        ):
            await type_filter(pilot, bad)
            error = str(app.screen.query_one("#filter-error").render())
            if bad.startswith('"'):
                # not a syntax error: free text that matches nothing, and the database is intact
                assert shown_traces(app) == [] and error.strip() == ""
            else:
                assert error.strip(), bad
                assert [t.trace_id for t in shown_traces(app)] == before
        assert SqliteReader(fixtures_db).count_traces() > 0


async def test_quick_toggle_errors_only(fixtures_db: Path) -> None:
    app = make_app(fixtures_db)
    async with app.run_test(size=(130, 36)) as pilot:
        await settle(pilot)
        await pilot.press("x")
        await pilot.pause(0.2)
        await settle(pilot)
        rows = shown_traces(app)
        assert rows and all(t.error_count for t in rows)
        assert len(rows) == sum(1 for t in SqliteReader(fixtures_db).traces(0, -1) if t.error_count)
        await pilot.press("x")
        await settle(pilot)
        assert len(shown_traces(app)) == SqliteReader(fixtures_db).count_traces()


async def test_filter_in_the_trace_view_keeps_matches_and_their_parents(agent_db: Path) -> None:
    app = make_app(agent_db)
    async with app.run_test(size=(130, 36)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(TraceTable)
        table.cursor_row = next(i for i in range(table.row_count) if table.row_at(i).span_count == 5)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen)
        await type_filter(pilot, "kind=tool")
        names = [line.span.name for line in app.screen.query_one(Waterfall).lines]
        assert names == ["ticket-resolution agent", "execute_tool lookup_invoice"]


async def test_stats_screen_groups_sorts_and_shows_a_histogram(fixtures_db: Path) -> None:
    app = make_app(fixtures_db)
    async with app.run_test(size=(150, 40)) as pilot:
        await settle(pilot)
        await pilot.press("S")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, StatsScreen)
        keys = [g.key for g in screen.groups]
        reader = SqliteReader(fixtures_db)
        models = {
            s["request_model"] or s["response_model"]
            for t in reader.traces(0, -1)
            for s in span_json(reader, t.trace_id)
            if s["kind"] == "llm"
        }
        assert set(keys) == models
        table = screen.query_one("#stats-table")
        assert table.row_count == len(keys)
        assert screen.query_one("#stats-histogram").data  # the selected row's latency histogram
        await pilot.press("o")  # sort by the next column (runs)
        await pilot.press("r")  # ascending
        await settle(pilot)
        counts = [int(str(table.get_row_at(i)[2])) for i in range(table.row_count)]
        assert counts == sorted(counts)
        await pilot.press("b")  # by route
        await settle(pilot)
        assert screen.by == "route" and all(" / " in g.key for g in screen.groups)
        await pilot.press("escape")
        assert isinstance(app.screen, TraceListScreen)


async def test_stats_follow_the_list_filter(fixtures_db: Path) -> None:
    app = make_app(fixtures_db)
    async with app.run_test(size=(150, 40)) as pilot:
        await settle(pilot)
        await type_filter(pilot, "provider=openai model~4.1")
        await pilot.press("enter")
        await pilot.press("S")
        await settle(pilot)
        assert {g.key for g in app.screen.groups} == {"gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano"}


async def test_stats_filtered_on_a_grouping_dimension_come_from_the_rollup_and_say_so(fixtures_db: Path,
                                                                                       monkeypatch) -> None:  # fmt: skip
    """On a big database (here: the rollup's threshold lowered) a filter on models is read from the rollup's
    cube: the same groups and counts as the exact scan, and the histogram's line names the sketch."""
    from tracetui.model.filter import parse
    from tracetui.query.stats import compute
    from tracetui.store import rollup

    exact = {(g.key, g.count, g.runs) for g in compute(SqliteReader(fixtures_db), "model", flt=parse("model~4.1"))}
    monkeypatch.setattr(rollup, "EXACT_BELOW_SPANS", 0)
    app = make_app(fixtures_db)
    async with app.run_test(size=(150, 40)) as pilot:
        await settle(pilot)
        await type_filter(pilot, "model~4.1")
        await pilot.press("enter")
        await pilot.press("S")
        await settle(pilot)
        assert {(g.key, g.count, g.runs) for g in app.screen.groups} == exact
        line = str(app.screen.query_one("#stats-histogram-title").render())
        assert "percentiles: log-bucket sketch, within 1%" in line, line


async def test_stats_routes_by_the_configured_attribute(agent_db: Path) -> None:
    """With a route attribute (here the agent's conversation id on the run's root span), routes are its values."""
    app = make_app(agent_db)
    app.route_attribute = "gen_ai.conversation.id"
    async with app.run_test(size=(150, 40)) as pilot:
        await settle(pilot)
        await pilot.press("S")
        await settle(pilot)
        await pilot.press("b")  # by model -> by route
        await settle(pilot)
        assert app.screen.by == "route"
        assert {g.key for g in app.screen.groups} == {"ticket-4821", "ticket-4822"}

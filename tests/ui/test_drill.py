"""Drill-down keys in the real app: slowest span, critical path, errors, neighbours, folding."""

from __future__ import annotations

from tests.ui.conftest import make_app, settle
from tracetui.query.memory import MemoryReader
from tracetui.ui.screens.trace_list import TraceListScreen
from tracetui.ui.screens.trace_view import TraceScreen
from tracetui.ui.widgets.trace_table import TraceTable
from tracetui.ui.widgets.waterfall import Waterfall


def cursor_name(app) -> str:
    waterfall = app.screen.query_one(Waterfall)
    return waterfall.lines[waterfall.cursor_row].span.name


async def open_timeout_run(pilot) -> None:
    """Select the 34 s ticket run (the one with the timeout and the fallback)."""
    table = pilot.app.screen.query_one(TraceTable)
    table.cursor_row = next(i for i in range(table.row_count) if table.row_at(i).span_count == 5)
    await settle(pilot)


async def enter_timeout_run(pilot) -> None:
    """Select the 34 s ticket run and open it (Enter)."""
    await open_timeout_run(pilot)
    await pilot.press("enter")
    await settle(pilot)


async def test_s_in_the_list_lands_on_the_30s_call_then_the_next_slowest(agent_mem: MemoryReader) -> None:
    app = make_app(agent_mem)
    async with app.run_test(size=(130, 36)) as pilot:
        await settle(pilot)
        await open_timeout_run(pilot)
        table = app.screen.query_one(TraceTable)
        slowest_cell = table.render_line(table.cursor_row - table.scroll_offset.y + 1).text
        assert "chat gpt-4o 88%" in slowest_cell  # the list's SLOWEST column: name and share of the run
        await pilot.press("s")
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen)
        assert cursor_name(app) == "chat gpt-4o"
        assert "chat gpt-4o" in str(app.screen.query_one("#detail-body").render())  # its detail is open
        await pilot.press("s")
        assert cursor_name(app) == "chat claude-sonnet-4"
        await pilot.press("s")
        assert cursor_name(app) == "retrieval kb-billing"


async def test_c_marks_the_critical_path_with_its_total(agent_mem: MemoryReader) -> None:
    app = make_app(agent_mem)
    async with app.run_test(size=(130, 36)) as pilot:
        await settle(pilot)
        await enter_timeout_run(pilot)
        waterfall = app.screen.query_one(Waterfall)
        assert waterfall.critical == frozenset()
        await pilot.press("c")
        names = {line.span.name for line in waterfall.lines if line.span.span_id in waterfall.critical}
        # Every step of this sequential run waits for the one before: all of it is on the path.
        assert names == {"ticket-resolution agent", "retrieval kb-billing", "execute_tool lookup_invoice",
                         "chat gpt-4o", "chat claude-sonnet-4"}  # fmt: skip
        summary = str(app.screen.query_one("#trace-summary").render())
        assert "critical path 34.1s of 34.1s" in summary and "chat gpt-4o 30.0s (88%)" in summary
        assert "┃" in waterfall.render_line(3).text
        await pilot.press("c")
        assert waterfall.critical == frozenset()


async def test_e_walks_the_errors_and_angle_brackets_change_run(fixtures_mem: MemoryReader) -> None:
    app = make_app(fixtures_mem)
    async with app.run_test(size=(130, 36)) as pilot:
        await settle(pilot)
        await enter_timeout_run(pilot)
        first = app.screen.trace_id
        await pilot.press("e")
        assert cursor_name(app) == "chat gpt-4o"
        assert app.screen.query_one(Waterfall).lines[app.screen.query_one(Waterfall).cursor_row].span.is_error
        await pilot.press("E")  # only one error: stays on it
        assert cursor_name(app) == "chat gpt-4o"
        await pilot.press("greater_than_sign")  # the oldest trace: nothing older, it stays
        await settle(pilot)
        assert app.screen.trace_id == first
        await pilot.press("less_than_sign")  # the next newer one in the list
        await settle(pilot)
        table_order = [row.trace_id for row in app.reader.traces(0, -1)]
        assert app.screen.trace_id == table_order[table_order.index(first) - 1]
        await pilot.press("greater_than_sign")
        await settle(pilot)
        assert app.screen.trace_id == first
        assert isinstance(app.screen, TraceScreen)


async def test_brackets_fold_and_enter_unfolds(agent_mem: MemoryReader) -> None:
    app = make_app(agent_mem)
    async with app.run_test(size=(130, 36)) as pilot:
        await settle(pilot)
        await enter_timeout_run(pilot)
        waterfall = app.screen.query_one(Waterfall)
        assert len(waterfall.lines) == 5
        await pilot.press("left_square_bracket")
        assert len(waterfall.lines) == 1 and waterfall.lines[0].collapsed
        assert "▶" in waterfall.render_line(0).text
        await pilot.press("enter")
        assert len(waterfall.lines) == 5
        await pilot.press("left_square_bracket", "right_square_bracket")
        assert len(waterfall.lines) == 5
        # s finds the slowest call even inside a folded subtree
        await pilot.press("left_square_bracket", "s")
        assert cursor_name(app) == "chat gpt-4o"


async def test_escape_returns_to_the_list(agent_mem: MemoryReader) -> None:
    app = make_app(agent_mem)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("s")
        await settle(pilot)
        await pilot.press("escape")
        assert isinstance(app.screen, TraceListScreen)


async def test_y_copies_the_run_summary_and_Y_the_span_attributes(agent_mem: MemoryReader) -> None:
    app = make_app(agent_mem)
    async with app.run_test(size=(130, 36)) as pilot:
        await settle(pilot)
        await open_timeout_run(pilot)
        await pilot.press("y")
        await settle(pilot)
        summary = app.clipboard
        assert "ticket-resolution agent" in summary and "chat gpt-4o" in summary and "30.0s" in summary
        await pilot.press("s")  # the slowest call: chat gpt-4o
        await settle(pilot)
        await pilot.press("Y")
        await settle(pilot)
        import json

        attributes = json.loads(app.clipboard)
        assert attributes["gen_ai.request.model"] == "gpt-4o"
        assert attributes["error.type"] == "openai.APITimeoutError"

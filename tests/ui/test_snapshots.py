"""SVG snapshots of the main screens (deterministic data, fixed clock and time zone).

Review changes with `pytest --snapshot-update` only after looking at snapshot_report.html.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ui.conftest import make_app, settle

SIZE = (110, 32)


async def open_fallback_call(pilot) -> None:
    """The 34 s agent run (last row) opened, the cursor on its fallback call to claude-sonnet-4."""
    await settle(pilot)
    await pilot.press("G", "enter")
    await settle(pilot)
    waterfall = pilot.app.screen.query_one("#waterfall")
    waterfall.cursor_row = next(i for i, line in enumerate(waterfall.lines) if line.span.name == "chat claude-sonnet-4")
    await settle(pilot)


class TestTraceList:
    def test_empty_state(self, snap_compare, empty_db: Path) -> None:
        """No traces yet: the screen tells the user how to send some."""

        async def run_before(pilot) -> None:
            await settle(pilot)

        assert snap_compare(make_app(empty_db), terminal_size=SIZE, run_before=run_before)

    def test_live_list(self, snap_compare, fixtures_db: Path) -> None:
        """Every fixture library's traces, newest first, errors counted."""

        async def run_before(pilot) -> None:
            await settle(pilot)

        assert snap_compare(make_app(fixtures_db), terminal_size=SIZE, run_before=run_before)


class TestTraceView:
    def test_agent_run_with_fallback(self, snap_compare, agent_db: Path) -> None:
        """The 34 s agent run: a 30 s gpt-4o timeout, then claude-sonnet-4 (cursor on it)."""

        assert snap_compare(make_app(agent_db), terminal_size=SIZE, run_before=open_fallback_call)


class TestDrillDown:
    def test_critical_path(self, snap_compare, agent_db: Path) -> None:
        """`c` on the 34 s run: the path, its total and the call that dominates it."""

        async def run_before(pilot) -> None:
            await settle(pilot)
            await pilot.press("G", "enter")
            await settle(pilot)
            await pilot.press("c")
            await settle(pilot)

        assert snap_compare(make_app(agent_db), terminal_size=SIZE, run_before=run_before)

    def test_stats_screen(self, snap_compare, fixtures_db: Path) -> None:
        """`S`: percentiles, rates and cost by model over every fixture library."""

        async def run_before(pilot) -> None:
            await settle(pilot)
            await pilot.press("S")
            await settle(pilot)

        assert snap_compare(make_app(fixtures_db), terminal_size=(150, 32), run_before=run_before)


class TestHelp:
    """`?` on the trace list: every key, grouped (it once drew an empty 6x2 box)."""

    @pytest.mark.parametrize("size", [(80, 24), (160, 45)], ids=["80x24", "160x45"])
    def test_help(self, snap_compare, agent_db: Path, size) -> None:
        async def run_before(pilot) -> None:
            await settle(pilot)
            await pilot.press("question_mark")
            await settle(pilot)

        assert snap_compare(make_app(agent_db), terminal_size=size, run_before=run_before)


WIDTHS = pytest.mark.parametrize("size", [(80, 24), (120, 36), (250, 60)], ids=["80x24", "120x36", "250x60"])


class TestWidths:
    """The three screens as designed for 80, 120 and 250 columns (issue 14)."""

    @WIDTHS
    def test_list(self, snap_compare, fixtures_db: Path, size) -> None:
        async def run_before(pilot) -> None:
            await settle(pilot)

        assert snap_compare(make_app(fixtures_db), terminal_size=size, run_before=run_before)

    @WIDTHS
    def test_trace_view(self, snap_compare, agent_db: Path, size) -> None:
        assert snap_compare(make_app(agent_db), terminal_size=size, run_before=open_fallback_call)

    @WIDTHS
    def test_stats(self, snap_compare, fixtures_db: Path, size) -> None:
        async def run_before(pilot) -> None:
            await settle(pilot)
            await pilot.press("slash", *"model=gpt-4o-mini", "enter")
            await settle(pilot)
            await pilot.press("S")
            await settle(pilot)

        assert snap_compare(make_app(fixtures_db), terminal_size=size, run_before=run_before)


class TestRunDiff:
    def test_diff_of_the_two_agent_runs(self, snap_compare, agent_db: Path) -> None:
        """The 34 s run marked (A), the clean 2.7 s run open (B), `d`: summary, aligned rows, B − A."""

        async def run_before(pilot) -> None:
            await settle(pilot)
            await pilot.press("G", "space", "g", "enter")
            await settle(pilot)
            await pilot.press("d")
            await settle(pilot)
            pilot.app.clear_notifications()  # the "Marked ..." toast
            await settle(pilot)

        assert snap_compare(make_app(agent_db), terminal_size=(120, 36), run_before=run_before)


class TestCompare:
    def test_compare_two_models(self, snap_compare, fixtures_db: Path) -> None:
        """`S`, space on gpt-4o-mini (A) and gpt-4.1-mini (B), `C`: every figure, B − A, the verdict and its rule."""

        async def run_before(pilot) -> None:
            from textual.widgets import DataTable

            await settle(pilot)
            await pilot.press("S")
            await settle(pilot)
            table = pilot.app.screen.query_one("#stats-table", DataTable)
            for model in ("gpt-4o-mini", "gpt-4.1-mini"):
                table.move_cursor(row=table.get_row_index(model))
                await pilot.press("space")
                await settle(pilot)
            await pilot.press("C")
            await settle(pilot)
            pilot.app.clear_notifications()  # the "Two rows marked" toast
            await settle(pilot)

        assert snap_compare(make_app(fixtures_db), terminal_size=(120, 36), run_before=run_before)


class TestSearchAndSessions:
    """Issue 21: a search inside the run, and the sessions view, at the three designed widths."""

    @WIDTHS
    def test_trace_view_with_a_search(self, snap_compare, agent_db: Path, size) -> None:
        """`/ INV-2291` in the 34 s run: matches marked », the count, the first match's detail highlighted."""

        async def run_before(pilot) -> None:
            await open_fallback_call(pilot)
            await pilot.press("slash", *"INV-2291", "enter")
            await settle(pilot)

        assert snap_compare(make_app(agent_db), terminal_size=size, run_before=run_before)

    @WIDTHS
    def test_sessions_view(self, snap_compare, sessions_db: Path, size) -> None:
        """`v`: the OpenInference runs dealt to three conversations and the agent's two tickets."""

        async def run_before(pilot) -> None:
            await settle(pilot)
            await pilot.press("v")
            await settle(pilot)

        assert snap_compare(make_app(sessions_db), terminal_size=size, run_before=run_before)

    def test_one_session(self, snap_compare, sessions_db: Path) -> None:
        """Enter on a conversation: its totals, then its runs oldest first."""

        async def run_before(pilot) -> None:
            await settle(pilot)
            await pilot.press("v")
            await settle(pilot)
            await pilot.press("enter")
            await settle(pilot)

        assert snap_compare(make_app(sessions_db), terminal_size=(120, 36), run_before=run_before)

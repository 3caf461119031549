"""Compare two cohorts in the real app: space marks two Stats rows, C compares them side by side.

The figures on screen are checked against tracetui.query.compare over the same database (whose
own figures tests/query/test_compare.py checks against values computed by hand).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from textual.widgets import DataTable, Input

from tests.ui.conftest import make_app, settle
from tests.ui.test_hostile_ui import assert_inert, record_notifications, screen_text
from tracetui.query import compare as cmp
from tracetui.store.reader import SqliteReader
from tracetui.ui.screens.compare import CompareDialog, CompareScreen
from tracetui.ui.screens.help import HelpScreen
from tracetui.ui.screens.stats import StatsScreen

SIZE = (120, 36)


def stats_keys(app) -> list[str]:
    table = app.screen.query_one("#stats-table", DataTable)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


async def mark_rows(pilot, *models: str) -> None:
    """On the Stats screen, put the cursor on each model's row and press space."""
    table = pilot.app.screen.query_one("#stats-table", DataTable)
    for model in models:
        table.move_cursor(row=table.get_row_index(model))
        await pilot.press("space")
        await settle(pilot)


async def open_stats(pilot) -> None:
    await settle(pilot)
    await pilot.press("S")
    await settle(pilot)
    assert isinstance(pilot.app.screen, StatsScreen)


async def test_two_marked_rows_compare_side_by_side(fixtures_db: Path) -> None:
    app = make_app(fixtures_db)
    async with app.run_test(size=SIZE) as pilot:
        await open_stats(pilot)
        await mark_rows(pilot, "gpt-4o-mini", "gpt-4.1-mini")
        keys = stats_keys(app)
        assert "A▸gpt-4o-mini" in keys and "B▸gpt-4.1-mini" in keys  # the marks, on the rows
        await pilot.press("C")
        await settle(pilot)
        assert isinstance(app.screen, CompareScreen)
        text = screen_text(app)
        assert " A  model gpt-4o-mini" in text and " B  model gpt-4.1-mini   deltas are B − A" in text

        reader = SqliteReader(fixtures_db)
        try:
            expected = cmp.compare(
                reader,
                cmp.Cohort("A", group=("model", "gpt-4o-mini")),
                cmp.Cohort("B", group=("model", "gpt-4.1-mini")),
            )
        finally:
            reader.close()
        p50 = expected.get("p50")
        row = next(line for line in text.splitlines() if line.strip().startswith("call duration p50"))
        for part in (cmp.format_value(p50, p50.a), cmp.format_value(p50, p50.b), cmp.format_change(p50)):
            assert part in row
        calls = next(line for line in text.splitlines() if line.strip().startswith("LLM calls"))
        assert str(expected.get("calls").a) in calls and str(expected.get("calls").b) in calls
        assert f"verdict: {expected.verdict.line}" in " ".join(text.split())
        assert "max_tokens caps differ" in text  # A asked for 200 on some calls, B for 120
        assert "order statistics (percentiles)" in text  # the method is stated

        await pilot.press("s")  # swap
        await settle(pilot)
        assert " A  model gpt-4.1-mini" in screen_text(app)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, StatsScreen)


async def test_a_third_mark_replaces_the_first_and_space_again_unmarks(fixtures_db: Path) -> None:
    app = make_app(fixtures_db)
    async with app.run_test(size=SIZE) as pilot:
        await open_stats(pilot)
        await mark_rows(pilot, "gpt-4o-mini", "gpt-4.1-mini", "gpt-4o")
        keys = stats_keys(app)
        assert "A▸gpt-4.1-mini" in keys and "B▸gpt-4o" in keys and "gpt-4o-mini" in keys
        await mark_rows(pilot, "gpt-4o")
        assert "gpt-4o" in stats_keys(app) and not any(k.startswith("B▸") for k in stats_keys(app))


async def test_compare_by_typed_filters_shows_them_literally(fixtures_db: Path) -> None:
    app = make_app(fixtures_db)
    async with app.run_test(size=SIZE) as pilot:
        await open_stats(pilot)
        await pilot.press("C")  # no marks: the compare line asks for two filters
        await settle(pilot)
        assert isinstance(app.screen, CompareDialog)
        assert "Compare two cohorts of LLM calls" in screen_text(app)
        app.screen.query_one("#compare-a", Input).value = 'model=gpt-4o-mini name~"[red]x"'
        app.screen.query_one("#compare-b", Input).value = "model=gpt-4o-mini"
        app.screen.query_one("#compare-b", Input).focus()
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, CompareScreen)
        text = screen_text(app)
        assert 'model=gpt-4o-mini name~"[red]x"' in text  # Rich markup in data: shown as typed
        assert_inert(text)
        assert "cohort A has no LLM calls" in " ".join(text.split())


async def test_the_dialog_names_a_bad_filter_and_stays_open(fixtures_db: Path) -> None:
    app = make_app(fixtures_db)
    async with app.run_test(size=SIZE) as pilot:
        await open_stats(pilot)
        await pilot.press("C")
        await settle(pilot)
        app.screen.query_one("#compare-a", Input).value = "ttft>3"
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, CompareDialog)
        assert "A: " in screen_text(app) and "ttft" in screen_text(app)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, StatsScreen)


async def test_x_exports_b_failing_calls_owner_only(agent_db: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    app = make_app(agent_db)
    seen = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await open_stats(pilot)
        await pilot.press("C")
        await settle(pilot)
        app.screen.query_one("#compare-a", Input).value = "model=claude-sonnet-4"
        app.screen.query_one("#compare-b", Input).value = "model=gpt-4o"
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("x")
        await settle(pilot)
        [written] = list(tmp_path.glob("tracetui-cohort-*.jsonl"))
        assert stat.S_IMODE(os.stat(written).st_mode) == 0o600
        [record] = [json.loads(line) for line in written.read_text().splitlines()]
        assert record["model"] == "gpt-4o"
        assert [e["score"] for e in record["evaluations"] if e["name"] == "groundedness"] == [0.18]
        assert any(f"Wrote 1 failing call of B to {written}" in s for s in seen)


async def test_help_on_the_compare_screen_lists_its_keys(agent_db: Path) -> None:
    app = make_app(agent_db)
    async with app.run_test(size=SIZE) as pilot:
        await open_stats(pilot)
        await mark_rows(pilot, "gpt-4o", "claude-sonnet-4")
        await pilot.press("C")
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        assert "Keys of the compare screen" in text
        assert "write B's calls with groundedness below the threshold" in text and "swap the two cohorts" in text

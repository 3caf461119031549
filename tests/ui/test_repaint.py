"""What a key press or a data change costs the screen: which lines are drawn again, what asks for a layout.

These are the hot paths measured by benchmarks/ui.py; here they are checked
by counting, not timed.
"""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest

from tests.ui.conftest import make_app, settle, write_requests
from tests.ui.test_app import make_request
from tracetui.ui import app as app_module
from tracetui.ui.screens.stats import StatsScreen
from tracetui.ui.screens.trace_list import TraceListScreen
from tracetui.ui.screens.trace_view import TraceScreen
from tracetui.ui.widgets.trace_table import TraceTable

BASE_NS = 1_795_483_000_000_000_000


def runs(first: int, count: int) -> list[bytes]:
    """``count`` one-span traces, one request each, later ones newer."""
    out = []
    for i in range(first, first + count):
        trace_id = i.to_bytes(16, "big")
        start = BASE_NS + i * 10**9
        out.append(make_request(trace_id, [(i.to_bytes(8, "big"), None, f"run {i}", start, start + 10**8)]))
    return out


@pytest.fixture
def many_db(tmp_path: Path) -> Path:
    db = tmp_path / "many.db"
    write_requests(db, runs(1, 60))
    return db


class Recorder:
    """Which lines of a widget are drawn, and which widgets ask for a layout."""

    def __init__(self, *widgets) -> None:
        self.lines: list[int] = []
        self.layouts: list[str] = []
        table = widgets[0]
        render_line = table.render_line

        def recording_render_line(y: int):
            self.lines.append(y)
            return render_line(y)

        table.render_line = recording_render_line
        for widget in widgets:
            refresh = widget.refresh

            def recording_refresh(*regions, _refresh=refresh, _widget=widget, **kwargs):
                if kwargs.get("layout"):
                    self.layouts.append(_widget.id or type(_widget).__name__)
                return _refresh(*regions, **kwargs)

            widget.refresh = recording_refresh

    def reset(self) -> None:
        self.lines.clear()
        self.layouts.clear()


async def test_cursor_move_repaints_two_lines_unless_the_list_scrolls(many_db: Path) -> None:
    app = make_app(many_db)
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(TraceTable)
        assert table.row_count == 60 and table.HEADER_LINES == 1
        seen = Recorder(table)
        await pilot.press("j")
        await settle(pilot)
        assert table.cursor_row == 1
        assert sorted(set(seen.lines)) == [1, 2]  # rows 0 and 1, below the header line
        assert "run 59" in table.render_line(2).text  # the new cursor row shows the second newest run

        # The cursor on the last visible row: the next move scrolls, and every line is drawn again.
        table.cursor_row = table.body_height - 1
        await settle(pilot)
        assert table.scroll_offset.y == 0
        seen.reset()
        await pilot.press("j")
        await settle(pilot)
        assert table.scroll_offset.y == 1
        assert sorted(set(seen.lines)) == list(range(table.size.height))

        # Back up without scrolling: two lines again.
        seen.reset()
        await pilot.press("k")
        await settle(pilot)
        assert table.scroll_offset.y == 1 and table.cursor_row == table.body_height - 1
        assert sorted(set(seen.lines)) == [table.body_height - 1, table.body_height]


async def test_new_arrivals_while_scrolled_away_update_the_banner_without_a_layout(many_db: Path) -> None:
    app = make_app(many_db)
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, TraceListScreen)
        table = screen.query_one(TraceTable)
        banner = screen.query_one("#new-banner")
        await pilot.press("j", "j")
        await settle(pilot)
        write_requests(many_db, runs(100, 1))
        app.check_now()
        await settle(pilot)
        assert banner.display and "1 new" in str(banner.render())  # appearing moves the list: one layout

        seen = Recorder(table, banner)
        drawn_before = [table.render_line(y).text for y in range(table.size.height)]
        seen.reset()
        write_requests(many_db, runs(101, 2))
        app.check_now()
        await settle(pilot)
        assert "3 new" in str(banner.render())
        assert seen.layouts == []  # the banner's text changed in place, and it stayed shown
        assert seen.lines == []  # the rows on screen did not change: the list was not drawn again
        assert [table.render_line(y).text for y in range(table.size.height)] == drawn_before
        assert table.cursor_row == 2 and table.row_at(2).name == "run 58"


async def test_following_new_arrivals_moves_the_scrollbar_without_a_layout(many_db: Path) -> None:
    app = make_app(many_db)
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(TraceTable)
        assert table.show_vertical_scrollbar
        seen = Recorder(table)
        write_requests(many_db, runs(100, 3))
        app.check_now()
        await settle(pilot)
        assert table.row_count == 63 and table.row_at(0).name == "run 102"
        assert "run 102" in table.render_line(1).text
        assert seen.layouts == []
        assert table.virtual_size.height == 64
        assert table.vertical_scrollbar.window_virtual_size == 64
        # The end of the list is still reachable.
        await pilot.press("G")
        await settle(pilot)
        assert table.cursor_row == 62 and table.scroll_offset.y == table.max_scroll_y
        assert "run 1" in table.render_line(table.size.height - 1).text


async def test_a_closed_screen_is_released(many_db: Path) -> None:
    app = make_app(many_db)
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen)
        trace_screen = weakref.ref(app.screen)
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("S")
        await settle(pilot)
        assert isinstance(app.screen, StatsScreen)
        stats_screen = weakref.ref(app.screen)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, TraceListScreen)
        # No data change happened since: nothing else would have dropped the app's watchers.
        gc.collect()
        assert trace_screen() is None
        assert stats_screen() is None


async def test_gc_freeze_once_the_first_screen_has_data(many_db: Path, monkeypatch) -> None:
    frozen = []
    monkeypatch.setattr(app_module, "_gc_frozen", False)
    monkeypatch.setattr(app_module.gc, "freeze", lambda: frozen.append(True))
    monkeypatch.setattr(app_module.gc, "get_threshold", lambda: (700, 10, 10))
    monkeypatch.setattr(app_module.gc, "set_threshold", lambda *t: frozen.append(t))
    for _ in range(2):  # once per process, not once per app
        app = make_app(many_db)
        app._freeze_gc = True
        async with app.run_test(size=(120, 30)) as pilot:
            await settle(pilot)
            assert app.screen.query_one(TraceTable).row_count == 60
            app.check_now()
            await settle(pilot)
    assert frozen == [True, (app_module.GC_GEN0_THRESHOLD, 10, 10)]

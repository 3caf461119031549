"""`+` / `-` record the user's thumbs on a run (list) or a call (trace view), with a note; `X` exports a cohort.

The feedback is read back from the database the app wrote, by the same reader the commands use,
and shows on screen like any other evaluation.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from textual.widgets import Input

from tests.ui.conftest import FIXED_NOW_NS, make_app, settle
from tests.ui.test_hostile_ui import record_notifications, screen_text
from tests.ui.test_snapshots import open_fallback_call
from tracetui.llm.feedback import thumb
from tracetui.store.reader import SqliteReader
from tracetui.ui.screens.feedback import FeedbackDialog
from tracetui.ui.screens.trace_list import TraceListScreen
from tracetui.ui.widgets.trace_table import TraceTable

SIZE = (120, 36)


def feedback_rows(db: Path) -> list:
    reader = SqliteReader(db)
    try:
        ids = {t.trace_id for t in reader.traces(limit=100)}
        return [r for r in reader.evaluation_results(ids) if r.source == "you"]
    finally:
        reader.close()


async def test_thumbs_down_on_a_run_with_a_note(agent_db: Path) -> None:
    app = make_app(agent_db)
    seen = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.screen.query_one(TraceTable)
        row = table.row_at(table.cursor_row)
        await pilot.press("minus")
        await settle(pilot)
        assert isinstance(app.screen, FeedbackDialog)
        assert f"👎 Thumbs down on the run {row.root_name}" in screen_text(app)
        app.screen.query_one(Input).value = "answered a different invoice"
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TraceListScreen)
        assert any(f"Recorded 👎 on the run {row.root_name} with your note." in s for s in seen)
        await pilot.press("S")  # the stats screen counts it: thumbs down by the TTFT of the run's first call
        await settle(pilot)
        assert "users: thumbs down 100% of 1 rated runs" in screen_text(app)
    [stored] = feedback_rows(agent_db)
    assert (stored.trace_id, stored.span_id, stored.name) == (row.trace_id, None, "user_feedback")
    assert thumb(stored.name, stored.score, stored.label) == -1
    assert stored.explanation == "answered a different invoice"


async def test_thumbs_up_on_the_selected_call_shows_in_its_details(agent_db: Path) -> None:
    app = make_app(agent_db)
    async with app.run_test(size=SIZE) as pilot:
        await open_fallback_call(pilot)  # the cursor on chat claude-sonnet-4
        await pilot.press("plus")
        await settle(pilot)
        assert "👍 Thumbs up on the call chat claude-sonnet-4 of ticket-resolution agent" in screen_text(app)
        await pilot.press("enter")  # no note
        await settle(pilot)
        await settle(pilot)
        assert "user_feedback" in screen_text(app)  # the detail pane lists it with the other evaluations
    [stored] = feedback_rows(agent_db)
    assert thumb(stored.name, stored.score, stored.label) == 1 and stored.explanation is None
    assert stored.span_id is not None


async def test_escape_records_nothing(agent_db: Path) -> None:
    app = make_app(agent_db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("plus")
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, TraceListScreen)
    assert feedback_rows(agent_db) == []


async def test_without_a_local_database_the_key_says_so(agent_mem) -> None:
    app = make_app(agent_mem)
    seen = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("minus")
        await settle(pilot)
        assert isinstance(app.screen, TraceListScreen)
    assert any("Feedback is stored in the local database" in s for s in seen)


async def test_x_exports_the_calls_matching_the_list_filter(agent_db: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    app = make_app(agent_db)
    seen = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("X")  # no filter yet: says how
        await settle(pilot)
        assert any("Filter the list first" in s for s in seen)
        await pilot.press("slash")
        await pilot.press(*"groundedness<0.5", "enter")
        await settle(pilot)
        await pilot.press("X")
        await settle(pilot)
    [written] = list(tmp_path.glob("tracetui-cohort-*.jsonl"))
    assert stat.S_IMODE(os.stat(written).st_mode) == 0o600
    [record] = [json.loads(line) for line in written.read_text().splitlines()]
    assert [e["score"] for e in record["evaluations"] if e["name"] == "groundedness"] == [0.18]
    assert any(f"Wrote 1 call matching groundedness<0.5 to {written}" in s for s in seen)


async def test_the_users_line_is_bounded_and_says_so(agent_db: Path, monkeypatch) -> None:
    monkeypatch.setattr("tracetui.ui.screens.stats.FEELINGS_MAX_CALLS", 2)  # the agent fixture has 3 calls
    app = make_app(agent_db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("S")
        await settle(pilot)
        text = " ".join(screen_text(app).split())
        assert "thumbs down by TTFT not counted over 3 calls (more than 2)" in text


async def test_x_under_no_content_writes_no_message_and_says_so(agent_db: Path, tmp_path: Path, monkeypatch) -> None:
    """The database records --no-content (as its receiver does): the set has ids and figures, no messages."""
    from tracetui.model.config import CONTENT_OMITTED, ContentPolicy
    from tracetui.store.text_index import record_policy_at

    record_policy_at(agent_db, ContentPolicy(keep_content=False))
    monkeypatch.chdir(tmp_path)
    app = make_app(agent_db)
    seen = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash")
        await pilot.press(*"groundedness<0.5", "enter")
        await settle(pilot)
        await pilot.press("X")
        await settle(pilot)
    [written] = list(tmp_path.glob("tracetui-cohort-*.jsonl"))
    [record] = [json.loads(line) for line in written.read_text().splitlines()]
    assert record["input"] and all(m["content"] == CONTENT_OMITTED for m in record["input"])
    assert record["output"] == CONTENT_OMITTED and record["model"]
    assert any("Wrote 1 call" in s and "Message content not kept" in s for s in seen)


class _HeldReader(SqliteReader):
    """The app's second reader (the "users:" line's), its call listing held until ``go`` is set."""

    def __init__(self, db: Path, go) -> None:
        super().__init__(db)
        self.go = go

    def first_calls(self, **kwargs):
        assert self.go.wait(30)
        return super().first_calls(**kwargs)


async def test_the_users_line_follows_the_figures_and_only_for_the_window_on_screen(agent_db: Path) -> None:
    """The figures do not wait for the "users:" line (it reads every call again); a line counted for a
    window the user has left is dropped."""
    import threading

    from tracetui.ui.app import TraceTuiApp
    from tracetui.ui.screens.stats import StatsScreen

    app = make_app(agent_db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("minus")
        await settle(pilot)
        await pilot.press("enter")  # a thumbs down on the newest run
        await settle(pilot)
    go = threading.Event()
    app = make_app(agent_db)
    assert isinstance(app, TraceTuiApp)
    app._open_reader = lambda: _HeldReader(agent_db, go)
    app.clock = lambda: FIXED_NOW_NS + 10 * 60 * 10**9  # ten minutes on: "5m" holds no run, "1h" both
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("S")
        for _ in range(20):
            await pilot.pause(0.05)
            if isinstance(app.screen, StatsScreen) and app.screen.groups:
                break
        screen = app.screen
        assert isinstance(screen, StatsScreen) and screen.window == "all"
        assert "claude-sonnet-4" in screen_text(app)  # the figures are on screen...
        assert "users:" not in screen_text(app)  # ...while the users' line is still being counted
        await pilot.press("w")  # to "5m", whose figures come while the line of "all" is still held
        for _ in range(20):
            await pilot.pause(0.05)
            if screen.window == "5m" and not screen._computing:
                break
        assert screen.window == "5m" and "claude-sonnet-4" not in screen_text(app)
        go.set()
        await pilot.pause(0.5)
        await settle(pilot)
        assert "users:" not in screen_text(app)  # the line of "all" came, for a window left: dropped
        await pilot.press("w")  # "1h": both runs, one rated
        for _ in range(40):
            await settle(pilot)
            if "users:" in screen_text(app):
                break
        assert "users: thumbs down 100% of 1 rated runs · abandoned 0% of 2 runs" in screen_text(app)

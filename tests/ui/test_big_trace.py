"""A trace bigger than one page opens with its first page, says it is loading, and is whole once the rest is in.

The reader is the real SQLite one over a real file; the one thing added is a gate that holds
the later pages of ``span_pages`` until the test lets them go, so that the screen between the
first page and the rest can be looked at (it lasts about a second on a 100,000-span trace).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from helpers import fill_db, make_request, make_span, sid, tid

from tests.ui.conftest import FIXED_NOW_NS, settle
from tests.ui.test_hostile_ui import record_notifications, screen_text
from tracetui.model.reader import FIRST_PAGE, PAGE
from tracetui.model.views import SpanRow
from tracetui.store.reader import SqliteReader
from tracetui.ui.app import TraceTuiApp
from tracetui.ui.screens.trace_view import TraceScreen
from tracetui.ui.widgets.waterfall import Waterfall

STEPS = 150  # x 10 tool calls + the steps + the root: 1,651 spans, more than FIRST_PAGE
TRACE = tid(7)


class LaterPagesWait:
    """The real reader; its ``span_pages`` yields the first page, then waits for ``go``."""

    def __init__(self, reader: SqliteReader, timeout: float = 10.0) -> None:
        self._reader = reader
        self.go = threading.Event()
        self.timeout = timeout

    def __getattr__(self, name: str):
        return getattr(self._reader, name)

    def span_pages(self, trace_id: bytes, first: int = FIRST_PAGE, size: int = PAGE) -> Iterator[list[SpanRow]]:
        pages = self._reader.span_pages(trace_id, first, size)
        yield next(pages)
        self.go.wait(self.timeout)
        yield from pages


def big_trace_db(path: Path) -> Path:
    """One sequential agent run; its slowest tool call and its only error come late, past the first page."""
    spans = [make_span(TRACE, sid(1), None, name="invoke_agent long-run", start=0, duration=STEPS * 100_000_000)]
    n = 2
    for step in range(STEPS):
        step_id = sid(n)
        n += 1
        t0 = step * 100_000_000
        spans.append(make_span(TRACE, step_id, sid(1), name=f"step {step}", start=t0, duration=100_000_000))
        for call in range(10):
            late = step == STEPS - 5
            spans.append(
                make_span(
                    TRACE,
                    sid(n),
                    step_id,
                    name="execute_tool slow-search" if late and call == 3 else "execute_tool lookup",
                    start=t0 + call * 9_000_000,
                    duration=80_000_000 if late and call == 3 else 1_000_000,
                    status=2 if late and call == 4 else 0,
                    attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup"},
                )
            )
            n += 1
    fill_db(path, [make_request(spans[i : i + 500]) for i in range(0, len(spans), 500)])
    return path


async def wait_for(pilot, predicate, rounds: int = 200) -> None:
    for _ in range(rounds):
        if predicate():
            return
        await pilot.pause(0.02)
    raise AssertionError("the screen never got there")


async def test_the_first_page_shows_at_once_and_s_waits_for_the_rest(tmp_path: Path) -> None:
    db = big_trace_db(tmp_path / "big.db")
    reader = LaterPagesWait(SqliteReader(db))
    total = 1 + STEPS * 11
    app = TraceTuiApp(reader, clock=lambda: FIXED_NOW_NS, freeze_gc=False)  # type: ignore[arg-type]
    async with app.run_test(size=(120, 36)) as pilot:
        notes = record_notifications(app)
        await settle(pilot)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, TraceScreen) and app.screen.partial is not None)
        await pilot.pause(0.1)
        text = screen_text(app)
        assert f"loading {FIRST_PAGE:,} of {total:,} spans…" in text
        assert "invoke_agent long-run" in text and "step 0" in text  # the top of the tree is drawn
        waterfall = app.screen.query_one(Waterfall)
        assert waterfall.row_count == FIRST_PAGE
        await pilot.press("s")  # the slowest call is past the first page: it waits for the rest
        await pilot.press("e")
        assert any("the slowest call is shown once all are in" in note for note in notes)
        assert any("errors can be walked once all are in" in note for note in notes)
        reader.go.set()
        await wait_for(pilot, lambda: app.screen.partial is None)
        await settle(pilot)
        assert waterfall.row_count == total
        assert "loading" not in screen_text(app)
        assert waterfall.lines[waterfall.cursor_row].span.name == "execute_tool slow-search"
        await pilot.press("e")
        assert waterfall.lines[waterfall.cursor_row].span.is_error
        assert any("Error 1 of 1" in note for note in notes)


def test_pages_are_the_spans_in_order_and_details_stream_the_same(tmp_path: Path) -> None:
    reader = SqliteReader(big_trace_db(tmp_path / "big.db"))
    whole = reader.spans(TRACE)
    pages = list(reader.span_pages(TRACE, 100, 400))
    assert [len(p) for p in pages] == [100, 400, 400, 400, 351]
    assert [s.span_id for p in pages for s in p] == [s.span_id for s in whole]
    streamed = list(reader.iter_span_details(TRACE, size=300))
    assert [d.row["span_id"] for d in streamed] == [d.row["span_id"] for d in reader.span_details(TRACE)]


def test_snapshot_of_a_big_trace_while_the_rest_loads(snap_compare, tmp_path: Path) -> None:
    """The first page drawn, "loading 1,000 of 1,651 spans…" where the time split goes."""
    # The app's exit waits for the gated worker: a shorter wait, still far longer than the snapshot takes.
    reader = LaterPagesWait(SqliteReader(big_trace_db(tmp_path / "big.db")), timeout=4.0)
    app = TraceTuiApp(reader, clock=lambda: FIXED_NOW_NS, freeze_gc=False)  # type: ignore[arg-type]

    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, TraceScreen) and app.screen.partial is not None)
        await pilot.pause(0.2)

    try:
        assert snap_compare(app, terminal_size=(120, 36), run_before=run_before)
    finally:
        reader.go.set()

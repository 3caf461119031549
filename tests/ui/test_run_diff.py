"""Diff two runs in the real app: space marks run A in the list, d diffs it with the open run (or the row)."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import make_request, make_span, sid, tid
from textual.widgets._footer import FooterKey

from tests.ui.conftest import make_app, settle
from tests.ui.test_hostile_ui import assert_inert, record_notifications, screen_text, strips_of
from tracetui.query.memory import MemoryReader
from tracetui.ui.marks import MARK_GLYPH
from tracetui.ui.screens.help import HelpScreen
from tracetui.ui.screens.run_diff import RunDiffScreen
from tracetui.ui.screens.trace_list import TraceListScreen
from tracetui.ui.screens.trace_view import TraceScreen
from tracetui.ui.widgets.diff_table import DiffTable
from tracetui.ui.widgets.trace_table import TraceTable

SIZE = (120, 36)


def row_of(app, span_count: int) -> int:
    """The list row of the handmade agent's 34 s run (5 spans) or its clean run (3 spans)."""
    table = app.screen.query_one(TraceTable)
    return next(i for i in range(table.row_count) if table.row_at(i).span_count == span_count)


def list_line(app, row: int) -> str:
    table = app.screen.query_one(TraceTable)
    return table.render_line(row - table.scroll_offset.y + table.HEADER_LINES).text


def footer_keys(app) -> list[tuple[str, str]]:
    return [(key.key_display, key.description) for key in app.screen.query(FooterKey)]


def diff_text(app) -> list[str]:
    """The diff screen's rows as drawn (header line first)."""
    table = app.screen.query_one(DiffTable)
    return [strip.text.rstrip() for strip in strips_of(table)]


async def mark_the_timeout_run(pilot) -> None:
    await settle(pilot)
    table = pilot.app.screen.query_one(TraceTable)
    table.cursor_row = row_of(pilot.app, 5)
    await settle(pilot)
    await pilot.press("space")
    await settle(pilot)


async def test_mark_open_the_other_run_and_diff_it(agent_db: Path) -> None:
    app = make_app(agent_db)
    async with app.run_test(size=SIZE) as pilot:
        await mark_the_timeout_run(pilot)
        marked = row_of(app, 5)
        assert list_line(app, marked).startswith(MARK_GLYPH)  # the mark, in the row's first cell
        assert not list_line(app, row_of(app, 3)).startswith(MARK_GLYPH)
        # The columns did not move: the marked row's time column starts where the other row's does.
        assert list_line(app, marked)[1:].index(":") == list_line(app, row_of(app, 3))[1:].index(":")
        banner = str(app.screen.query_one("#new-banner").render())
        assert f"{MARK_GLYPH} marked: ticket-resolution agent f88fdd41" in banner

        app.screen.query_one(TraceTable).cursor_row = row_of(app, 3)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen)
        await pilot.press("d")
        await settle(pilot)
        assert isinstance(app.screen, RunDiffScreen)

        summary = "\n".join(strip.text for strip in strips_of(app.screen.query_one("#diff-summary")))
        assert (
            "marked: ticket-resolution agent f88fdd41" in summary
            and "open: ticket-resolution agent 7d62cae1" in summary
        )
        assert "Δ = B − A" in summary
        assert "calls: 2 removed (1 LLM), 0 added" in summary
        assert "duration 34.1s → 2.71s (-31.4s faster)" in summary
        assert "cost $0.0071 → $0.00294 (-$0.00417 cheaper)" in summary
        assert "tokens 1,619 → 982 (-637 fewer)" in summary

        rows = diff_text(app)
        assert "A (marked)" in rows[0] and "B (open)" in rows[0] and "Δ = B − A" in rows[0]

        def line(name: str) -> str:
            return " ".join(next(r for r in rows if name in r).split())

        assert line("ticket-resolution agent") == "● ticket-resolution agent 34.1s 2.71s -31.4s faster"
        assert line("retrieval kb-billing") == "⌕ retrieval kb-billing 310ms 288ms -22ms faster"
        assert line("execute_tool lookup_invoice") == "− ▣ execute_tool lookup_invoice 210ms − removed (A only)"
        assert line("chat gpt-4o") == "◆ chat gpt-4o 30.0s 2.40s -27.6s faster"
        assert line("status") == "status error ok fixed"
        assert line("input tokens") == "input tokens — 918 B only"
        assert line("response model") == "response model — gpt-4o-2024-08-06 B only"
        assert line("chat claude-sonnet-4") == "− ◆ chat claude-sonnet-4 ⤷ 3.57s − removed (A only)"

        footer = footer_keys(app)
        assert ("esc", "Back") in footer and ("t ⏎", "Text diff") in footer
        assert ("tab", "Switch pane") not in footer
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen)


async def test_d_in_the_list_diffs_the_row_under_the_cursor(agent_mem: MemoryReader) -> None:
    app = make_app(agent_mem)
    async with app.run_test(size=SIZE) as pilot:
        await mark_the_timeout_run(pilot)
        app.screen.query_one(TraceTable).cursor_row = row_of(app, 3)
        await pilot.press("d")
        await settle(pilot)
        assert isinstance(app.screen, RunDiffScreen)
        assert "calls: 2 removed (1 LLM), 0 added" in screen_text(app)


async def test_space_again_unmarks_and_another_run_replaces_the_mark(agent_mem: MemoryReader) -> None:
    app = make_app(agent_mem)
    async with app.run_test(size=SIZE) as pilot:
        await mark_the_timeout_run(pilot)
        table = app.screen.query_one(TraceTable)
        table.cursor_row = row_of(app, 3)
        await pilot.press("space")  # another run: it takes the mark
        await settle(pilot)
        assert app.run_mark is not None and app.run_mark.trace_id.hex().startswith("7d62cae1")
        assert list_line(app, row_of(app, 3)).startswith(MARK_GLYPH)
        assert not list_line(app, row_of(app, 5)).startswith(MARK_GLYPH)
        assert "marked: ticket-resolution agent 7d62cae1" in str(app.screen.query_one("#new-banner").render())
        await pilot.press("space")  # the same run again: no mark
        await settle(pilot)
        assert app.run_mark is None
        assert not list_line(app, row_of(app, 3)).startswith(MARK_GLYPH)
        assert not app.screen.query_one("#new-banner").display


async def test_d_without_a_mark_says_how_to_mark(agent_mem: MemoryReader) -> None:
    app = make_app(agent_mem)
    async with app.run_test(size=SIZE) as pilot:
        notes = record_notifications(app)
        await settle(pilot)
        await pilot.press("d")  # in the list
        await settle(pilot)
        assert isinstance(app.screen, TraceListScreen)
        await pilot.press("enter", "d")  # in the trace view
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen)
        assert len(notes) == 2
        assert all("No run is marked" in n and "press space on a run to mark it" in n for n in notes)
        await pilot.press("escape", "space", "d")  # d on the marked run itself
        await settle(pilot)
        assert isinstance(app.screen, TraceListScreen)
        assert "This is the marked run" in notes[-1]


async def test_the_text_diff_of_two_calls_shows_the_changed_lines(agent_mem: MemoryReader) -> None:
    app = make_app(agent_mem)
    async with app.run_test(size=SIZE) as pilot:
        await mark_the_timeout_run(pilot)
        app.screen.query_one(TraceTable).cursor_row = row_of(app, 3)
        await pilot.press("d")
        await settle(pilot)
        table = app.screen.query_one(DiffTable)
        notes = record_notifications(app)
        table.cursor_row = next(
            i for i, ln in enumerate(table.lines) if table.row_at(i).span.name == "retrieval kb-billing"
        )
        await pilot.press("t")  # not an LLM call: says so
        assert "not an LLM call" in notes[-1]
        table.cursor_row = next(i for i, ln in enumerate(table.lines) if table.row_at(i).span.name == "chat gpt-4o")
        await pilot.press("enter")
        await settle(pilot)
        pane = app.screen.query_one("#text-diff")
        assert pane.display
        assert ("tab", "Switch pane") in footer_keys(app)  # offered only while the text diff is open
        body = str(app.screen.query_one("#text-diff-body").render())
        assert "Text diff of chat gpt-4o" in body
        assert "[system]" in body and "You are ACME's billing support agent." in body  # context: the same in both
        assert "-Customer 88213 says they were charged twice for invoice INV-2291 after updating their card." in body
        assert "+Customer 90411 asks whether the enterprise plan includes SSO at no extra cost." in body
        assert "+Yes, SSO is included at no extra cost" in body  # B's output; A's call timed out without one
        assert "-Customer 88213" in screen_text(app)  # drawn, not only held
        await pilot.press("escape")  # closes the text diff only
        await settle(pilot)
        assert not pane.display and isinstance(app.screen, RunDiffScreen)
        assert ("tab", "Switch pane") not in footer_keys(app)


async def test_help_lists_the_diff_keys(agent_mem: MemoryReader) -> None:
    app = make_app(agent_mem)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        keys = " ".join(screen_text(app).split())
        assert "space" in keys and "mark (or unmark) the run under the cursor" in keys
        assert "diff the run under the cursor (B) with the marked run (A)" in keys
        await pilot.press("escape")
        await mark_the_timeout_run(pilot)
        app.screen.query_one(TraceTable).cursor_row = row_of(app, 3)
        await pilot.press("d")
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        text = " ".join(screen_text(app).split())
        assert "Keys of the run diff" in text
        assert "text diff of the prompts and outputs" in text and "t ⏎" in text


# --- data shown literally ----------------------------------------------------------------------------

MARKUP = "[red]x[/red]"


def markup_runs() -> MemoryReader:
    """Two runs whose span names, models and messages hold Rich markup and an escape sequence."""
    requests = []
    for n, (duration, answer) in enumerate(((900, "[bold]old[/bold] answer"), (600, "[link=x]new[/link] answer"))):
        trace = tid(900 + n)
        root, call = sid(900 + 10 * n), sid(901 + 10 * n)
        messages = [{"role": "user", "parts": [{"type": "text", "content": f"ask {MARKUP} \x1b[31m{n}"}]}]
        output = [{"role": "assistant", "parts": [{"type": "text", "content": answer}]}]
        spans = [
            make_span(trace, root, name=f"agent {MARKUP}", start=n * 10**10, duration=10**9,
                      attributes={"gen_ai.operation.name": "invoke_agent"}),
            make_span(trace, call, root, name=f"chat {MARKUP}", start=n * 10**10 + 1000, duration=duration * 10**6,
                      attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": f"m{MARKUP}{n}",
                                  "gen_ai.input.messages": json.dumps(messages),
                                  "gen_ai.output.messages": json.dumps(output)}),
        ]  # fmt: skip
        requests.append(make_request(spans).SerializeToString())
    return MemoryReader.of(requests)


async def test_markup_in_names_models_and_messages_is_shown_literally() -> None:
    app = make_app(markup_runs())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("G", "space")
        await settle(pilot)
        assert f"marked: agent {MARKUP}" in str(app.screen.query_one("#new-banner").render())
        await pilot.press("g", "d")
        await settle(pilot)
        assert isinstance(app.screen, RunDiffScreen)
        rows = diff_text(app)
        assert any(f"chat {MARKUP}" in r and "-300ms faster" in r for r in rows)
        assert any(f"m{MARKUP}0" in r and f"m{MARKUP}1" in r for r in rows)  # the request model line
        summary = str(app.screen.query_one("#diff-summary").render())
        assert f"agent {MARKUP}" in summary
        table = app.screen.query_one(DiffTable)
        table.cursor_row = next(i for i in range(table.row_count) if table.row_at(i).span.llm_kind == "llm")
        await pilot.press("t")
        await settle(pilot)
        body = str(app.screen.query_one("#text-diff-body").render())
        assert f"-ask {MARKUP} \\e[31m0" in body and f"+ask {MARKUP} \\e[31m1" in body
        assert "-[bold]old[/bold] answer" in body and "+[link=x]new[/link] answer" in body
        assert_inert(screen_text(app) + body)
        for widget in (table, app.screen.query_one("#text-diff-body"), app.screen.query_one("#diff-summary")):
            for strip in strips_of(widget):
                assert not any(seg.style is not None and seg.style.link for seg in strip)

"""What a newcomer sees in the first five minutes, at 80x24, 120x36 and 250x60 (issue 14).

Each test reads the text the terminal would show (the compositor's lines), not
which screen is on top: the help screen once rendered an empty box while a test
that only checked `isinstance(app.screen, HelpScreen)` passed.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from textual.widget import Widget

from tests.ui.conftest import make_app, settle, write_requests
from tests.ui.test_app import make_request
from tests.ui.test_repaint import runs
from tracetui.cli.common import command_name
from tracetui.query.memory import MemoryReader
from tracetui.ui.screens.help import HelpScreen, binding_groups, key_label
from tracetui.ui.screens.stats import StatsScreen
from tracetui.ui.screens.trace_list import TraceListScreen, empty_state_text
from tracetui.ui.screens.trace_view import TraceScreen
from tracetui.ui.widgets.trace_table import TraceTable

SIZES = [(80, 24), (120, 36), (250, 60)]


def screen_lines(app) -> list[str]:
    """The terminal's lines, as drawn (every screen on the stack composited, modals over their screen)."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


def region_of(widget: Widget) -> tuple[int, int]:
    return widget.region.width, widget.region.height


async def open_agent_run(pilot) -> None:
    """The 34 s ticket-resolution run (the oldest, last row) in the trace view."""
    await pilot.press("G", "enter")
    await settle(pilot)
    assert isinstance(pilot.app.screen, TraceScreen)


# --- help ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(80, 24), (250, 60)])
@pytest.mark.parametrize("where", ["list", "trace", "stats"])
async def test_help_shows_every_key_of_the_screen_it_was_opened_on(agent_mem: MemoryReader, size, where) -> None:
    app = make_app(agent_mem)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        if where == "trace":
            await open_agent_run(pilot)
        elif where == "stats":
            await pilot.press("S")
            await settle(pilot)
        under = app.screen
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        box = app.screen.query_one("#help-box")
        assert box.region.width >= min(size[0], 100) - 1 and box.region.height >= 10
        seen: list[str] = []
        # Scroll through the whole help (it does not fit at 80x24) and collect what was on screen.
        for _ in range(12):
            seen += screen_lines(app)
            box.scroll_page_down(animate=False)
            await pilot.pause()
        text = "\n".join(seen)
        for title, bindings in binding_groups(under):
            assert title in text
            for binding in bindings:
                description = binding.tooltip or binding.description
                # Each key is on a line with the start of what it does.
                assert re.search(re.escape(key_label(binding)) + r" +" + re.escape(description[:20]), text), (
                    title,
                    key_label(binding),
                )
        await pilot.press("escape")
        assert app.screen is under


async def test_help_of_the_trace_list_names_its_keys_in_words(agent_mem: MemoryReader) -> None:
    app = make_app(agent_mem)
    async with app.run_test(size=(160, 45)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        text = "\n".join(screen_lines(app))
        assert "Keys of the trace list" in text
        assert "open the run at its slowest LLM or tool call" in text
        assert "back to the newest traces and follow new arrivals" in text
        assert "Ctrl+P" in text and "Esc" in text


# --- no widget collapses to nothing (the `auto` sizing trap) -----------------------------------


@pytest.mark.parametrize("size", SIZES)
async def test_every_screen_gives_its_main_content_room(fixtures_db: Path, agent_db: Path, size) -> None:
    """List, empty list, trace view (summary, bars, legend, details), stats, help: none is 0 wide or 0 high."""
    app = make_app(agent_db)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        list_screen = app.screen
        assert isinstance(list_screen, TraceListScreen)
        table = list_screen.query_one(TraceTable)
        assert region_of(table)[0] == size[0] and region_of(table)[1] >= size[1] - 3
        await open_agent_run(pilot)
        trace = app.screen
        for selector, least_height in (("#trace-summary", 3), ("#waterfall", 5), ("#legend", 1), ("#detail", 5)):
            width, height = region_of(trace.query_one(selector))
            assert width == size[0] and height >= least_height, selector
        body = trace.query_one("#detail-body")
        assert body.region.width >= size[0] - 4 and body.region.height >= 10
        await pilot.press("S")
        await settle(pilot)
        stats = app.screen
        assert isinstance(stats, StatsScreen)
        for selector, least_height in (("#stats-title", 1), ("#stats-table", 2), ("#stats-histogram", 5)):
            width, height = region_of(stats.query_one(selector))
            assert width >= size[0] - 2 and height >= least_height, selector
        await pilot.press("question_mark")
        await settle(pilot)
        keys = app.screen.query_one("#help-keys")
        assert keys.region.width >= min(size[0], 100) - 8 and keys.region.height >= 10  # border, padding, scroll bar


async def test_the_empty_list_gives_its_onboarding_text_room(empty_db: Path) -> None:
    app = make_app(empty_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        empty = app.screen.query_one("#empty")
        assert region_of(empty)[0] == 80 and region_of(empty)[1] >= 15


# --- g then Enter while runs arrive ---------------------------------------------------------------


class Gate:
    """Holds the trace list's next window query until released: a slow disk, made deterministic.

    The real Reader runs the real query once the gate opens; only its timing is controlled.
    """

    def __init__(self, reader) -> None:
        self.armed = False
        self.opened = threading.Event()
        self.waiting = threading.Event()
        self._traces = reader.traces

        def traces(*args, **kwargs):
            if self.armed:
                self.waiting.set()
                self.opened.wait(10)
            return self._traces(*args, **kwargs)

        reader.traces = traces

    async def hold(self, pilot, *keys: str) -> None:
        """Press ``keys`` and return once the trace list's query they caused is waiting at the gate."""
        self.armed = True
        await pilot.press(*keys)
        await asyncio.to_thread(self.waiting.wait, 10)

    async def release(self, pilot) -> None:
        self.armed = False
        self.opened.set()
        await settle(pilot)


async def test_g_then_enter_opens_the_newest_run_whatever_arrives_in_between(tmp_path: Path) -> None:
    db = tmp_path / "arrivals.db"
    write_requests(db, runs(1, 8))
    app = make_app(db)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await pilot.press("j", "j", "j")  # away from the top: the list holds still
        await settle(pilot)
        await asyncio.to_thread(write_requests, db, runs(9, 2))  # arrivals while frozen
        app.check_now()
        await settle(pilot)
        table = app.screen.query_one(TraceTable)
        assert table.row_at(0).name == "run 8"  # the frozen top, newer runs counted in the banner
        gate = Gate(app.reader)
        await gate.hold(pilot, "g")  # the jump's query is under way...
        await asyncio.to_thread(write_requests, db, runs(11, 1))  # ...and one more run arrives
        app.check_now()
        await pilot.press("enter")  # at once: the old top row is still drawn
        await gate.release(pilot)
        assert isinstance(app.screen, TraceScreen)
        assert app.screen.trace.name == "run 11"
        assert "run 11" in "\n".join(screen_lines(app))


async def test_s_after_a_new_filter_opens_a_run_that_matches(tmp_path: Path) -> None:
    db = tmp_path / "filtered.db"
    write_requests(db, runs(1, 6))
    app = make_app(db)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        gate = Gate(app.reader)
        await gate.hold(pilot, "slash", *"run 3", "enter")
        await pilot.press("s")  # open at the slowest call, as soon as the filtered rows are in
        await gate.release(pilot)
        assert isinstance(app.screen, TraceScreen)
        assert app.screen.trace.name == "run 3"


# --- layouts by width -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "width, columns",
    [
        (80, ["TIME", "RUN", "DURATION", "COST", "GROUNDED", "ERR"]),
        (120, ["TIME", "RUN", "SERVICE", "DURATION", "LLM", "TOKENS", "COST", "GROUNDED", "SLOWEST", "ERR"]),
        (250, ["TIME", "RUN", "SERVICE", "DURATION", "SPANS", "LLM", "TOKENS", "COST", "GROUNDED", "SLOWEST", "ERR"]),
    ],
)
async def test_the_list_is_designed_for_each_width(agent_mem: MemoryReader, width: int, columns: list[str]) -> None:
    app = make_app(agent_mem)
    async with app.run_test(size=(width, 36)) as pilot:
        await settle(pilot)
        lines = screen_lines(app)
        assert lines[1].split() == columns
        agent = next(line for line in lines if "ticket-resolution agent" in line and "34.1s" in line)
        assert "$0.0071" in agent and "✗" not in agent.split("$0.0071")[0]  # cost, then the groundedness badge
        assert "● 0.92 1/1" in agent
        assert all(len(line) <= width for line in lines)


async def test_the_run_name_loses_its_operation_prefix_before_it_is_cut(tmp_path: Path) -> None:
    db = tmp_path / "agents.db"
    base = 1_795_483_700_000_000_000
    name = "invoke_agent ticket-resolution-assistant"  # 40 characters; RUN is 31 cells at 80 columns
    write_requests(db, [make_request(bytes([7]) * 16, [(bytes([7]) * 8, None, name, base, base + 10**9)])])
    for width, shown in ((80, "ticket-resolution-assistant"), (250, name)):
        app = make_app(db)
        async with app.run_test(size=(width, 24)) as pilot:
            await settle(pilot)
            row = screen_lines(app)[2]
            assert shown in row and "…" not in row.split("1.00s")[0]
            if width == 80:
                assert "invoke_agent" not in row


async def test_extra_width_goes_to_the_columns_that_were_cut(agent_mem: MemoryReader) -> None:
    """At 250 columns the slowest call and the service are shown whole, not only a wider RUN."""
    app = make_app(agent_mem)
    async with app.run_test(size=(250, 60)) as pilot:
        await settle(pilot)
        text = "\n".join(screen_lines(app))
        assert "harness-handmade-agent" in text  # SERVICE, cut at 120 columns
        assert "chat gpt-4o 88%" in text


@pytest.mark.parametrize("width", [80, 120, 250])
async def test_the_trace_summary_fits_each_width_without_wrapping(agent_db: Path, width: int) -> None:
    app = make_app(agent_db)
    async with app.run_test(size=(width, 36)) as pilot:
        await settle(pilot)
        await open_agent_run(pilot)
        lines = screen_lines(app)
        assert lines[1].split("·")[0].strip() == "ticket-resolution agent"
        assert lines[1].rstrip().endswith("1 error")  # never "· 1\nerror"
        assert "34.1s" in lines[1] and "$0.0071" in lines[1]
        assert lines[2].startswith(" harness-handmade-agent")
        assert re.match(r" time( went to)?:  fallback 30\.0s  first token 820ms  decode 2\.75s", lines[3])
        legend = next(line for line in lines if "decode" in line and "error" in line and "other" in line)
        for glyph in "╳▒█▓░▆":
            assert legend.count(glyph) >= 1, glyph
        await pilot.press("c")
        await settle(pilot)
        assert "◆ critical path 34.1s of 34.1s" in screen_lines(app)[3]


async def test_the_stats_title_shows_the_filter_in_force_at_80_columns(fixtures_db: Path) -> None:
    app = make_app(fixtures_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"model=gpt-4o-mini duration>100ms", "enter")
        await settle(pilot)
        await pilot.press("S")
        await settle(pilot)
        title = screen_lines(app)[1]
        assert "filter: model=gpt-4o-mini duration>100ms" in title
        header = screen_lines(app)[2].split()
        assert header[:2] == ["KEY", "CALLS"] and "GROUND" in header and "$/RUN" in header
        assert all(len(line) <= 80 for line in screen_lines(app))


# --- hints that run -----------------------------------------------------------------------------------


def test_the_command_in_hints_is_the_console_script_when_tracetui_is_not_on_the_path(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "tracetui"  # what `make run` runs: .venv/bin/tracetui
    assert command_name(str(script), which=lambda _name: None) == str(script)
    assert command_name(str(script), which=lambda _name: str(script)) == "tracetui"
    elsewhere = tmp_path / "bin" / "tracetui"  # another tracetui on the PATH is not this one
    assert command_name(str(script), which=lambda _name: str(elsewhere)) == str(script)
    assert command_name("/x/tracetui/__main__.py", which=lambda _name: None).endswith(" -m tracetui")


def test_the_demo_hint_runs_as_printed_from_another_directory(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "tracetui"
    text = empty_state_text("127.0.0.1:14317", "127.0.0.1:14318", command_name(str(script), which=lambda _n: None))
    demo = text.plain.strip().splitlines()[-1].strip()
    assert demo == f"{script} demo --endpoint http://127.0.0.1:14317"
    done = subprocess.run([*shlex.split(demo), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "--endpoint" in done.stdout


async def test_the_empty_list_names_both_endpoints_and_the_sdks_that_use_them(empty_db: Path) -> None:
    app = make_app(empty_db)
    app.http = "127.0.0.1:4318"
    app.command = "/home/me/tracetui/.venv/bin/tracetui"
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        text = "\n".join(screen_lines(app))
        assert "Waiting for traces: gRPC 127.0.0.1:4317 · OTLP/HTTP 127.0.0.1:4318" in text
        grpc, http = (
            text.index("OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317"),
            text.index("OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318"),
        )
        assert text.index("Python SDK") < grpc < text.index("@opentelemetry/sdk-node") < http
        assert "Java agent" in text and ".NET" in text and "otlptracehttp" in text
        assert "/home/me/tracetui/.venv/bin/tracetui demo" in text


# --- one money format -------------------------------------------------------------------------------


async def test_a_span_shows_the_same_cost_in_the_tree_and_in_the_details(agent_db: Path) -> None:
    app = make_app(agent_db)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await open_agent_run(pilot)
        waterfall = app.screen.query_one("#waterfall")
        waterfall.cursor_row = next(
            i for i, line in enumerate(waterfall.lines) if line.span.name == "chat claude-sonnet-4"
        )
        await settle(pilot)
        lines = screen_lines(app)
        row = next(line for line in lines if "chat claude-sonnet-4" in line and "→" in line)
        detail = app.screen.query_one("#detail")
        for _ in range(3):  # the LLM fields' last line, below the fold
            detail.scroll_page_down(animate=False)
            await pilot.pause()
            lines += screen_lines(app)
        cost = next(line for line in lines if line.strip().startswith("cost "))
        assert "$0.0071 " in row
        assert cost.split()[1] == "$0.0071"
        assert "$0.0000" not in "\n".join(lines)


async def test_the_filter_line_has_room_when_open(fixtures_db: Path) -> None:
    app = make_app(fixtures_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("slash")
        await settle(pilot)
        field = app.screen.query_one("#filter-input")
        assert region_of(field)[0] == 80 and region_of(field)[1] == 1
        await pilot.press(*"duration>")
        await settle(pilot)
        # what was typed is drawn (it was hidden by a border); on a slow machine the line's syntax hint may
        # already show under it
        assert any(line.startswith(" duration>") for line in screen_lines(app)[-3:-1]), screen_lines(app)[-4:]
        await pilot.press(">")
        await settle(pilot)
        await asyncio.sleep(0.3)  # the filter applies after a pause in typing
        await settle(pilot)
        error = app.screen.query_one("#filter-error")
        assert region_of(error)[1] >= 1 and "^" in "\n".join(screen_lines(app))


async def test_the_command_palette_lists_the_screens_actions(agent_mem: MemoryReader) -> None:
    """Ctrl+P (Textual's own modal): its input and its list have room, and our actions are in it."""
    app = make_app(agent_mem)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await settle(pilot)
        await pilot.press(*"slowest")
        await asyncio.sleep(0.5)  # the palette searches its providers asynchronously
        await settle(pilot)
        text = "\n".join(screen_lines(app))
        assert "Slowest" in text and "open the run at its slowest LLM or tool call" in text


def test_at_250_columns_no_cell_is_cut_while_the_line_has_room() -> None:
    """250 columns left 22 cells blank at the right while SERVICE cut `harness-node-manual-http-js…`
    (a 29-character service name, from the node_manual_http_json capture) at its 28-cell cap."""
    from tracetui.ui.widgets.trace_table import layout

    widths = {column.key: width for column, width in layout(249)}
    assert widths["service"] >= len("harness-node-manual-http-json")
    assert sum(widths.values()) + len(widths) <= 249


@pytest.mark.parametrize(
    "models,shown",
    [
        (["my-local-llama"], "1 unpriced call"),  # was "unpriced + unpriced calls"
        (["my-local-llama", "gpt-4o-mini"], "$0.000013 + 1 unpriced call"),
    ],
)
async def test_the_summary_counts_unpriced_calls_in_words(tmp_path: Path, models: list[str], shown: str) -> None:
    from helpers import fill_db, make_request, make_span, sid, tid

    spans = [make_span(tid(9), sid(1), name="invoke_agent local", duration=3_000_000_000,
                       attributes={"gen_ai.operation.name": "invoke_agent"})]  # fmt: skip
    for n, model in enumerate(models, 2):
        spans.append(make_span(tid(9), sid(n), sid(1), name=f"chat {model}", start=n * 1_000_000, attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": 30, "gen_ai.usage.output_tokens": 15}))  # fmt: skip
    db = tmp_path / "unpriced.db"
    fill_db(db, [make_request(spans)])
    app = make_app(db)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        first_line = str(app.screen.query_one("#trace-summary").render()).splitlines()[0]
        assert shown in [part.strip() for part in first_line.split("·")], first_line


async def test_the_span_ids_line_of_the_details_is_not_cut_mid_phrase_at_80_columns(agent_db: Path) -> None:
    """At 80 columns "span …  trace …  parent" ended a line and the parent's id began the next."""
    app = make_app(agent_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("down")
        await settle(pilot)
        lines = [line.rstrip() for line in screen_lines(app)]
        ids = next(i for i, line in enumerate(lines) if line.lstrip().startswith("span "))
        assert not lines[ids].endswith("parent"), lines[ids : ids + 2]
        assert any(line.lstrip().startswith("parent ") and len(line.split()) == 2 for line in lines[ids : ids + 2])

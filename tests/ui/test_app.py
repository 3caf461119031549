"""The real app driven through Pilot, over databases written by the real writer."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.ui.conftest import TRACE_FIXTURES, fixture_requests, make_app, settle, write_requests
from tracetui.query.memory import MemoryReader
from tracetui.store.reader import SqliteReader
from tracetui.ui.screens.help import HelpScreen
from tracetui.ui.screens.trace_list import TraceListScreen
from tracetui.ui.screens.trace_view import TraceScreen
from tracetui.ui.widgets.trace_table import TraceTable
from tracetui.ui.widgets.waterfall import Waterfall


def make_request(trace_id: bytes, spans: list[tuple[bytes, bytes | None, str, int, int]], status: int = 0) -> bytes:
    """An export request with spans (span_id, parent_id, name, start_ns, end_ns)."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "ui-test"
    scope = rs.scope_spans.add()
    for span_id, parent, name, start, end in spans:
        span = scope.spans.add(trace_id=trace_id, span_id=span_id, name=name)
        span.start_time_unix_nano, span.end_time_unix_nano = start, end
        if parent:
            span.parent_span_id = parent
        span.status.code = status
    return request.SerializeToString()


def table_lines(table: TraceTable) -> list[str]:
    return [table.render_line(y).text for y in range(table.size.height)]


async def test_empty_database_shows_how_to_send_traces(empty_db: Path) -> None:
    app = make_app(empty_db)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, TraceListScreen)
        empty = app.screen.query_one("#empty")
        assert empty.display
        text = str(empty.render())
        assert "Waiting for traces" in text
        assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317" in text


async def test_list_shows_every_trace_newest_first(fixtures_db: Path) -> None:
    reader = SqliteReader(fixtures_db)
    stored = reader.traces(0, -1)
    app = make_app(fixtures_db)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(TraceTable)
        assert table.row_count == len(stored) == reader.count_traces()
        starts = [table.row_at(i).start_ns for i in range(table.row_count) if table.row_at(i)]
        assert starts == sorted(starts, reverse=True)
        lines = table_lines(table)
        header = lines[0].split()
        assert header[:2] == ["TIME", "RUN"] and header[-1] == "ERR"
        assert {"SERVICE", "DURATION", "LLM", "COST", "GROUNDED", "SLOWEST"} <= set(header)
        # The hand-made agent's 34 s run is listed by its root name with its 5 spans.
        agent = next(line for line in lines if "ticket-resolution agent" in line and "34.1s" in line)
        assert "$0.0071 " in agent and "● 0.92 1/1" in agent and "chat gpt-4o 88%" in agent


async def test_navigation_and_opening_a_trace(fixtures_mem: MemoryReader) -> None:
    app = make_app(fixtures_mem)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(TraceTable)
        await pilot.press("j", "j", "k")
        assert table.cursor_row == 1
        await pilot.press("G")
        assert table.cursor_row == table.row_count - 1
        await pilot.press("g")
        assert table.cursor_row == 0
        await pilot.press("pagedown")
        assert table.cursor_row > 1
        await pilot.press("home")
        # Open the hand-made agent run.
        target = next(i for i in range(table.row_count) if table.row_at(i).name == "ticket-resolution agent"
                      and table.row_at(i).span_count == 5)  # fmt: skip
        for _ in range(target):
            await pilot.press("down")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen)
        waterfall = app.screen.query_one(Waterfall)
        names = [line.span.name for line in waterfall.lines]
        assert names[0] == "ticket-resolution agent"
        assert sorted(names[1:]) == sorted(
            ["retrieval kb-billing", "execute_tool lookup_invoice", "chat gpt-4o", "chat claude-sonnet-4"]
        )
        assert all(line.span.depth == 1 for line in waterfall.lines[1:])
        # The 30 s timeout bar is drawn in the error style, the fallback has a bar too.
        await pilot.press("escape")
        assert isinstance(app.screen, TraceListScreen)


async def test_detail_pane_shows_status_attributes_events_links_resource(agent_db: Path) -> None:
    app = make_app(agent_db)
    async with app.run_test(size=(120, 60)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(TraceTable)
        # the 34 s run is the older one: last row
        await pilot.press("G", "enter")
        await settle(pilot)
        waterfall = app.screen.query_one(Waterfall)
        index = next(i for i, line in enumerate(waterfall.lines) if line.span.name == "chat claude-sonnet-4")
        waterfall.cursor_row = index
        await settle(pilot)
        body = str(app.screen.query_one("#detail-body").render())
        assert "chat claude-sonnet-4" in body and "ok" in body
        assert "gen_ai.response.time_to_first_chunk = 0.82" in body
        assert "gen_ai.evaluation.result" in body  # event
        assert "Links (1)" in body and "eff1b7b8ba8ff201" in body  # link to the failed gpt-4o call
        assert "service.name = harness-handmade-agent" in body  # resource
        waterfall.cursor_row = next(i for i, line in enumerate(waterfall.lines) if line.span.name == "chat gpt-4o")
        await settle(pilot)
        body = str(app.screen.query_one("#detail-body").render())
        assert "error: Request timed out after 30.0s" in body
        assert "exception" in body and "openai.APITimeoutError" in body
        await pilot.press("tab")
        assert app.screen.query_one("#detail").has_focus
        assert table is not None


async def test_list_updates_live_and_shows_new_count_when_scrolled_away(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    base = 1_795_483_700_000_000_000
    write_requests(db, [make_request(bytes([1]) * 16, [(bytes([1]) * 8, None, "first run", base, base + 10**9)])])
    app = make_app(db, poll_interval=0.05)
    async with app.run_test(size=(100, 24)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(TraceTable)
        assert table.row_count == 1

        async def wait_for(predicate) -> None:
            for _ in range(100):
                await settle(pilot, 1)
                if predicate():
                    return
                await asyncio.sleep(0.05)
            raise AssertionError("the list did not update")

        # Following: a new trace appears at the top while the app runs.
        await asyncio.to_thread(
            write_requests, db, [make_request(bytes([2]) * 16, [(bytes([2]) * 8, None, "second run", base + 2 * 10**9, base + 3 * 10**9)])]
        )  # fmt: skip
        await wait_for(lambda: table.row_count == 2)
        assert table.row_at(0).name == "second run"

        # Scrolled away: rows stay put and "1 new" appears instead.
        await pilot.press("j")
        assert table.row_at(1).name == "first run"
        await asyncio.to_thread(
            write_requests, db, [make_request(bytes([3]) * 16, [(bytes([3]) * 8, None, "third run", base + 4 * 10**9, base + 5 * 10**9)])]
        )  # fmt: skip
        banner = app.screen.query_one("#new-banner")
        await wait_for(lambda: banner.display)
        assert "1 new" in str(banner.render())
        assert table.row_count == 2 and table.cursor_row == 1 and table.row_at(1).name == "first run"

        # g jumps back to the head and follows again.
        await pilot.press("g")
        await wait_for(lambda: table.row_count == 3)
        assert table.row_at(0).name == "third run"
        assert not banner.display


async def test_trace_view_follows_spans_arriving_later(tmp_path: Path) -> None:
    """Children first, then the root: the view fills in and the root name replaces 'no root yet'."""
    db = tmp_path / "late-root.db"
    base = 1_795_483_700_000_000_000
    trace, root, child = bytes([7]) * 16, bytes([1]) * 8, bytes([2]) * 8
    write_requests(db, [make_request(trace, [(child, root, "child step", base + 10**8, base + 5 * 10**8)])])
    app = make_app(db, poll_interval=0.05)
    async with app.run_test(size=(100, 24)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(TraceTable)
        assert "no root yet" in table_lines(table)[1]
        await pilot.press("enter")
        await settle(pilot)
        waterfall = app.screen.query_one(Waterfall)
        assert [line.span.name for line in waterfall.lines] == ["child step"]
        assert waterfall.lines[0].span.orphan
        await asyncio.to_thread(
            write_requests, db, [make_request(trace, [(root, None, "the agent run", base, base + 10**9)])]
        )
        for _ in range(100):
            await settle(pilot, 1)
            if len(waterfall.lines) == 2:
                break
            await asyncio.sleep(0.05)
        assert [(line.span.name, line.span.depth) for line in waterfall.lines] == [
            ("the agent run", 0),
            ("child step", 1),
        ]
        await pilot.press("escape")
        await settle(pilot)
        assert "the agent run" in table_lines(table)[1]
        assert "no root yet" not in table_lines(table)[1]


async def test_hostile_names_are_drawn_literally(tmp_path: Path) -> None:
    db = tmp_path / "hostile.db"
    base = 1_795_483_700_000_000_000
    nasty = "[bold red]boom[/] \x1b[31mred\x1b[0m \x07bell \u202eevil"
    write_requests(db, [make_request(bytes([9]) * 16, [(bytes([9]) * 8, None, nasty, base, base + 10**9)])])
    app = make_app(db)
    async with app.run_test(size=(200, 24)) as pilot:  # RUN is 65 cells: the escaped name fits whole
        await settle(pilot)
        line = table_lines(app.screen.query_one(TraceTable))[1]
        assert "[bold red]boom[/]" in line
        assert "\\e[31mred\\e[0m" in line and "\\x07bell" in line and "\\u202eevil" in line
        assert "\x1b" not in line and "\x07" not in line
        await pilot.press("enter")
        await settle(pilot)
        waterfall = app.screen.query_one(Waterfall)
        drawn = waterfall.render_line(0).text
        assert "[bold red]boom[/]" in drawn and "\x1b" not in drawn
        body = str(app.screen.query_one("#detail-body").render())
        assert "[bold red]boom[/]" in body and "\x1b" not in body


async def test_help_lists_keys_and_closes(empty_mem: MemoryReader) -> None:
    app = make_app(empty_mem)
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, TraceListScreen)


async def test_usable_at_80x24(fixtures_mem: MemoryReader) -> None:
    app = make_app(fixtures_mem)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        header = table_lines(app.screen.query_one(TraceTable))[0].split()
        assert {"TIME", "RUN", "DURATION", "ERR"} <= set(header)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen)
        assert app.screen.query_one(Waterfall).size.height >= 5
        assert app.screen.query_one("#detail").size.height >= 5


def test_fixture_files_are_the_shared_ones() -> None:
    """tests/fixtures are byte-for-byte copies of ../shared/fixtures/otlp (when present)."""
    shared = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "otlp"
    assert TRACE_FIXTURES, "no trace fixtures found"
    for path in TRACE_FIXTURES:
        data = path.read_bytes()
        # framing sanity: the file is a sequence of length-prefixed records
        offset = 0
        while offset < len(data):
            (size,) = struct.unpack_from(">I", data, offset)
            offset += 4 + size
        assert offset == len(data)
        if shared.exists():
            assert data == (shared / path.name).read_bytes()
    assert fixture_requests()


async def test_the_trace_on_screen_is_pinned_against_retention_until_the_user_leaves_it(agent_db: Path) -> None:
    """The UI's one write (a PinBoard): the receiver's retention keeps a pinned trace while it is looked at."""
    import sqlite3

    def pins() -> list[bytes]:
        with sqlite3.connect(agent_db) as conn:
            return [row[0] for row in conn.execute("SELECT trace_id FROM pins")]

    async def until(condition) -> None:
        for _ in range(100):
            if condition():
                return
            await asyncio.sleep(0.02)

    app = make_app(agent_db, poll_interval=0.02)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert pins() == []
        opened = app.screen.query_one(TraceTable).row_at(0).trace_id
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen)
        await until(lambda: pins() == [opened])
        assert pins() == [opened]
        await pilot.press("escape")
        await until(lambda: pins() == [])
        assert pins() == []

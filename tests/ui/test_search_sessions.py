"""Search inside a run (`/`, `n`, `N`), the span filter on `f`, and the sessions view (`v`), as drawn.

Expected matches are computed here from the capture's protos (names, attributes, events), not by
tracetui.query.search.
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers import FIXTURES, expected_traces, make_request, make_span, plain, requests_of, sid, tid
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.ui.conftest import CONVERSATIONS, make_app, settle
from tests.ui.test_drill import cursor_name, enter_timeout_run
from tests.ui.test_first_minutes import screen_lines
from tracetui.query.memory import MemoryReader
from tracetui.ui.screens.sessions import SessionRunsScreen, SessionsScreen
from tracetui.ui.screens.trace_list import TraceListScreen
from tracetui.ui.screens.trace_view import TraceScreen
from tracetui.ui.widgets.session_table import SessionTable
from tracetui.ui.widgets.trace_table import TraceTable
from tracetui.ui.widgets.waterfall import Waterfall

SIZE = (130, 40)


def span_mentions(span: Span, needle: str) -> bool:
    """Whether the span's name, attributes or events hold ``needle`` (case-insensitive), read from the proto."""
    texts = [span.name, span.status.message]
    for kv in span.attributes:
        texts += [kv.key, json.dumps(plain(kv.value), ensure_ascii=False)]
    for event in span.events:
        texts.append(event.name)
        texts += [json.dumps(plain(kv.value), ensure_ascii=False) for kv in event.attributes]
    return any(needle.casefold() in text.casefold() for text in texts)


def timeout_run_spans() -> list[Span]:
    """The 34 s ticket run's spans (the trace with five), in start order."""
    traces = expected_traces(requests_of(FIXTURES / "handmade_agent.otlp"))
    run = next(t for t in traces.values() if t.span_count == 5)
    return sorted((s for _, s in run.spans), key=lambda s: s.start_time_unix_nano)


def marked_names(app) -> list[str]:
    """Names of the tree rows drawn with the match mark » in their first cell."""
    waterfall = app.screen.query_one(Waterfall)
    return [
        line.span.name for i, line in enumerate(waterfall.lines) if waterfall.render_row(i, 120, False).text[0] == "»"
    ]


def reversed_texts(app) -> list[str]:
    """Every run of reverse-video text on the terminal (the detail pane's highlighted matches)."""
    found = []
    for strip in app.screen._compositor.render_strips():
        found += [segment.text for segment in strip if segment.style and segment.style.reverse]
    return found


def search_line(app) -> str:
    return next(line for line in screen_lines(app) if "match" in line or "matches" in line)


async def search(pilot, text: str) -> None:
    await pilot.press("slash", *text, "enter")
    await settle(pilot)


async def test_slash_finds_the_spans_that_mention_the_text_and_n_N_walk_them(agent_mem: MemoryReader) -> None:
    needle = "INV-2291"
    spans = timeout_run_spans()
    expected = [s.name for s in spans if span_mentions(s, needle)]
    assert 1 < len(expected) < len(spans)  # the test means something: some spans hold it, some do not
    app = make_app(agent_mem)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await enter_timeout_run(pilot)
        await search(pilot, needle.lower())  # case-insensitive
        tree_order = [line.span.name for line in app.screen.query_one(Waterfall).lines]
        in_order = [name for name in tree_order if name in expected]
        assert sorted(marked_names(app)) == sorted(expected)
        assert cursor_name(app) == in_order[0]  # the search went to the first match
        assert f"match 1 of {len(expected)}" in search_line(app)
        assert any(text.casefold() == needle.casefold() for text in reversed_texts(app))  # highlighted in the pane

        await pilot.press("n")
        await settle(pilot)
        assert cursor_name(app) == in_order[1]
        assert f"match 2 of {len(expected)}" in search_line(app)
        await pilot.press("N")
        await pilot.press("N")  # before the first: wraps to the last
        await settle(pilot)
        assert cursor_name(app) == in_order[-1]
        assert f"match {len(expected)} of {len(expected)}" in search_line(app)

        await pilot.press("escape")  # clears the search first
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen)
        assert marked_names(app) == []
        assert not any("match" in line for line in screen_lines(app)[-3:])
        await pilot.press("escape")  # then goes back
        assert isinstance(app.screen, TraceListScreen)


async def test_the_match_is_highlighted_in_the_span_name(agent_mem: MemoryReader) -> None:
    app = make_app(agent_mem)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await enter_timeout_run(pilot)
        await search(pilot, "lookup_")
        waterfall = app.screen.query_one(Waterfall)
        row = next(i for i, line in enumerate(waterfall.lines) if line.span.name == "execute_tool lookup_invoice")
        segments = list(waterfall.render_row(row, 120, False))
        [hit] = [s for s in segments if s.text == "lookup_"]
        around = next(s for s in segments if s.text.startswith("invoice"))
        assert hit.style.bgcolor != around.style.bgcolor  # drawn differently from the rest of the name


async def test_f_still_hides_the_spans_that_do_not_match_a_filter(agent_mem: MemoryReader) -> None:
    spans = timeout_run_spans()
    calls = {s.name for s in spans if any(kv.key == "gen_ai.operation.name" and plain(kv.value) == "chat"
                                          for kv in s.attributes)}  # fmt: skip
    root = next(s.name for s in spans if not s.parent_span_id)
    app = make_app(agent_mem)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await enter_timeout_run(pilot)
        await pilot.press("f", *"kind=llm", "enter")
        await settle(pilot)
        shown = {line.span.name for line in app.screen.query_one(Waterfall).lines}
        assert shown == calls | {root}  # the calls, and their parent for context
        assert len(shown) < len(spans)


async def test_markup_and_escapes_in_data_stay_literal_when_highlighted() -> None:
    trace = tid(7)
    name = "[bold red]not markup[/] \x1b[31mred"
    spans = [
        make_span(trace, sid(1), name="agent", duration=5_000_000),
        make_span(trace, sid(2), sid(1), name=name, start=1_000_000, attributes={"note": "[link=x]click[/link]"}),
    ]
    app = make_app(MemoryReader.of([make_request(spans).SerializeToString()]))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        await search(pilot, "[bold")
        lines = "\n".join(screen_lines(app))
        assert "[bold red]not markup[/]" in lines  # in the tree and in the pane, as typed
        assert "\x1b" not in lines
        assert marked_names(app) == [name]
        assert "[bold" in reversed_texts(app)
        await search(pilot, "[link=x]")
        assert "[link=x]click[/link]" in "\n".join(screen_lines(app))
        assert "[link=x]" in reversed_texts(app)


async def test_a_search_that_matches_nothing_says_so(agent_mem: MemoryReader) -> None:
    app = make_app(agent_mem)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await enter_timeout_run(pilot)
        await search(pilot, "no such words here")
        assert any("no span matches" in line for line in screen_lines(app))
        assert marked_names(app) == []


# --- sessions --------------------------------------------------------------------------------


def session_truth() -> dict[str, list]:
    """Conversation -> its traces in start order, from the protos (as conftest.session_requests deals them)."""
    from helpers import sessions_in_turn

    traces = expected_traces(requests_of(FIXTURES / "openinference_openai.otlp"))
    dealt = sessions_in_turn(traces, CONVERSATIONS)
    out: dict[str, list] = {}
    for trace_id, name in dealt.items():
        out.setdefault(name, []).append(traces[trace_id])
    for runs in out.values():
        runs.sort(key=lambda t: t.start_ns)
    for trace in expected_traces(requests_of(FIXTURES / "handmade_agent.otlp")).values():
        ticket = next(
            plain(kv.value) for _, s in trace.spans for kv in s.attributes if kv.key == "gen_ai.conversation.id"
        )
        out[ticket] = [trace]
    return out


async def test_v_lists_the_conversations_and_enter_opens_one_then_its_run(sessions_db: Path) -> None:
    truth = session_truth()
    latest = sorted(truth, key=lambda name: max(t.start_ns for t in truth[name]), reverse=True)
    app = make_app(sessions_db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("v")
        await settle(pilot)
        assert isinstance(app.screen, SessionsScreen)
        lines = screen_lines(app)
        assert f"{len(truth)} conversations" in lines[1]
        header = next(i for i, line in enumerate(lines) if "SESSION" in line and "RUNS" in line)
        rows = lines[header + 1 : header + 1 + len(truth)]
        assert [next(name for name in truth if name in row) for row in rows] == latest  # most recent first
        for row in rows:
            name = next(n for n in truth if n in row)
            assert f" {len(truth[name])} " in row  # its runs
        ticket_rows = {next(n for n in truth if n in row): row for row in rows if "ticket-" in row}
        assert "✗ 0.18" in ticket_rows["ticket-4822"] and "● 0.92" in ticket_rows["ticket-4821"]

        table = app.screen.query_one(SessionTable)
        chat = "support-chat-1"
        table.cursor_row = latest.index(chat)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, SessionRunsScreen)
        runs = truth[chat]
        summary = screen_lines(app)[1]
        assert f"session {chat}" in summary and f"{len(runs)} runs" in summary
        table = app.screen.query_one(TraceTable)
        assert [table.row_at(i).trace_id for i in range(table.row_count)] == [t.trace_id for t in runs]
        drawn = "\n".join(screen_lines(app))
        assert all(t.root[1].name in drawn for t in runs)

        table.cursor_row = 1
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen) and app.screen.trace_id == runs[1].trace_id
        await pilot.press("escape")
        assert isinstance(app.screen, SessionRunsScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, SessionsScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, TraceListScreen)


async def test_the_sessions_view_says_how_runs_get_a_session_when_there_is_none() -> None:
    app = make_app(MemoryReader.of([make_request([make_span(tid(1), sid(1), name="alone")]).SerializeToString()]))
    async with app.run_test(size=(100, 24)) as pilot:
        await settle(pilot)
        await pilot.press("v")
        await settle(pilot)
        drawn = "\n".join(screen_lines(app))
        assert "No sessions yet" in drawn and "gen_ai.conversation.id" in drawn


async def test_help_names_the_new_keys(sessions_db: Path) -> None:
    app = make_app(sessions_db)
    async with app.run_test(size=(120, 50)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        text = "\n".join(screen_lines(app))
        assert "runs grouped by conversation" in text  # v in the trace list's keys
        await pilot.press("escape", "enter")
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        lines = screen_lines(app)
        row = {key: next(line for line in lines if f" {key} " in line and what in line)
               for key, what in (("/", "search this run"), ("f", "only the spans that match"),
                                 ("n", "next span that matches"), (">", "next (older) run"))}  # fmt: skip
        assert len(row) == 4
        await pilot.press("escape", "escape", "v")
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        assert any("Keys of the sessions view" in line for line in screen_lines(app))

"""The real app over hostile traces: it keeps drawing, and user text is only ever text.

Each database is written by the real decoder and writer (``write_requests``);
the app runs under ``run_test()``. Rendered lines are read back with
``render_line(y)``, so what is checked is what would reach the terminal.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from helpers import any_value
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from textual.widget import Widget

from tests.ui.conftest import make_app, settle, write_requests
from tracetui.model.views import SpanRow
from tracetui.query.drill import critical_path, run_of, slowest_spans
from tracetui.query.tree import MAX_GUIDE_DEPTH, build_tree, flatten
from tracetui.ui.screens.trace_list import TraceListScreen
from tracetui.ui.screens.trace_view import TraceScreen
from tracetui.ui.widgets.trace_table import TraceTable
from tracetui.ui.widgets.waterfall import Waterfall

BASE = 1_795_483_700_000_000_000  # shortly before the tests' fixed "now"
SECOND = 10**9
YEAR_2200_NS = 7_258_118_400 * SECOND
NASTY = "[bold red]boom[/] [link=https://evil.example]click[/link] \x1b[2J\x1b]0;pwned\x07\x1b[31mred\x1b[0m \u202eexe"
#: How NASTY must look on screen: markup as written, controls as visible escapes.
NASTY_SHOWN = (
    "[bold red]boom[/]",
    "[link=https://evil.example]click[/link]",
    "\\e[2J",
    "\\e]0;pwned\\x07",
    "\\u202eexe",
)
#: Spans in the big trace. 100,000 was measured by hand (see the test's docstring):
#: TRACETUI_BIG_TRACE_SPANS=100000 pytest tests/ui/test_hostile_ui.py -k huge
BIG_TRACE_SPANS = int(os.environ.get("TRACETUI_BIG_TRACE_SPANS", "20000"))


def tid(n: int) -> bytes:
    return bytes([0x70 + n]) * 16


def sid(n: int) -> bytes:
    return (0x5100_0000_0000_0000 + n).to_bytes(8, "big")


def kv(key: str, value) -> KeyValue:
    return KeyValue(key=key, value=any_value(value))


def span(trace: int, n: int, parent: int | None, name: str, start: int, end: int, *, status: int = 0,
         message: str = "", attributes: dict | None = None) -> Span:  # fmt: skip
    return Span(
        trace_id=tid(trace), span_id=sid(n), parent_span_id=sid(parent) if parent is not None else b"", name=name,
        start_time_unix_nano=start, end_time_unix_nano=end, status={"code": status, "message": message},
        attributes=[kv(k, v) for k, v in (attributes or {}).items()],
    )  # fmt: skip


def request(spans: list[Span], service: str = "hostile-ui") -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = service
    rs.scope_spans.add().spans.extend(spans)
    return req.SerializeToString()


def nested(levels: int, make) -> AnyValue:
    """A value nested ``levels`` deep, built without recursion."""
    value = AnyValue(string_value="bottom")
    for i in reversed(range(levels)):
        value = make(i, value)
    return value


def deep_kvlist(levels: int) -> AnyValue:
    return nested(levels, lambda i, v: AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=f"k{i}", value=v)])))


def deep_array(levels: int) -> AnyValue:
    return nested(levels, lambda i, v: AnyValue(array_value=ArrayValue(values=[v])))


CHAT = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 20, "gen_ai.response.time_to_first_chunk": 0.5}  # fmt: skip
TEN_MB = ("ten megabytes " * 800_000)[:10_000_000]


def hostile_requests() -> dict[str, bytes]:
    """One export per hostile case; trace n starts at BASE + n seconds (list order is newest first)."""
    t = lambda n: BASE + n * SECOND  # noqa: E731
    nasty_call = span(11, 2, 1, NASTY, t(11), t(11) + SECOND, status=2, message=NASTY,
                      attributes={**CHAT, "gen_ai.request.model": NASTY, NASTY: NASTY})  # fmt: skip
    event = nasty_call.events.add(name="gen_ai.evaluation.result", time_unix_nano=t(11) + SECOND)
    event.attributes.extend([kv("gen_ai.evaluation.name", NASTY), kv("gen_ai.evaluation.score.value", 0.1),
                             kv("gen_ai.evaluation.score.label", NASTY), kv("gen_ai.evaluation.explanation", NASTY)])  # fmt: skip
    nasty_call.events.add(name=NASTY, time_unix_nano=t(11))
    return {
        "orphan": request([span(1, 2, 999, "child of nobody", t(1), t(1) + SECOND)]),
        "cycles": request(
            [
                span(2, 1, 2, "two-cycle a", t(2), t(2) + SECOND),
                span(2, 2, 1, "two-cycle b", t(2) + 1, t(2) + SECOND),
                span(2, 3, 5, "three-cycle c", t(2) + 2, t(2) + SECOND),
                span(2, 4, 3, "three-cycle d", t(2) + 3, t(2) + SECOND),
                span(2, 5, 4, "three-cycle e", t(2) + 4, t(2) + SECOND),
            ]
        ),
        "self-parent": request(
            [span(3, 1, 1, "narcissus", t(3), t(3) + SECOND), span(3, 2, 1, "its child", t(3) + 1, t(3) + 2)]
        ),  # fmt: skip
        "end-before-start": request(
            [
                span(4, 1, None, "inverted root", t(4) + SECOND, t(4)),
                span(4, 2, 1, "inverted chat", t(4) + 2 * SECOND, t(4), attributes=CHAT),
            ]
        ),
        "zero-duration": request(
            [span(5, 1, None, "instant", t(5), t(5)), span(5, 2, 1, "instant chat", t(5), t(5), attributes=CHAT)]
        ),  # fmt: skip
        "1970-2200": request(
            [
                span(6, 1, None, "epoch root", 0, 0),
                span(6, 2, 1, "one ns", 1, 2),
                span(6, 3, 1, "year 2200", YEAR_2200_NS, YEAR_2200_NS + SECOND),
                span(6, 4, 1, "end of fixed64", t(6), 2**64 - 1, attributes=CHAT),
            ]
        ),
        "future": request([span(7, 1, None, "from 2200", YEAR_2200_NS, YEAR_2200_NS + SECOND)]),
        "ten-megabytes": request(
            [
                span(
                    8,
                    1,
                    None,
                    "big values " + "n" * 1_000_000,
                    t(8),
                    t(8) + SECOND,
                    attributes={"gen_ai.prompt": TEN_MB, "blob": b"\x00\xff" * 1_000_000},
                )
            ]
        ),
        "binary": request(
            [
                span(
                    9,
                    1,
                    None,
                    "binary",
                    t(9),
                    t(9) + SECOND,
                    attributes={
                        "payload": bytes(range(256)) + b"\xff\xfe\xc3(",
                        "mixed": [b"\x00", "x", 1, {"raw": b"\x80"}],
                    },
                )
            ]
        ),
        "deep": request(
            [
                span(
                    10,
                    1,
                    None,
                    "deeply nested",
                    t(10),
                    t(10) + SECOND,
                    attributes={"kvlist": deep_kvlist(30), "array": deep_array(45)},
                )
            ]
        ),
        "nasty": request([span(11, 1, None, NASTY, t(11), t(11) + 2 * SECOND), nasty_call], service=NASTY),
    }


@pytest.fixture(scope="module")
def hostile_db(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("hostile-ui") / "hostile.db"
    write_requests(db, list(hostile_requests().values()))
    return db


# --- reading the screen back --------------------------------------------------------------------


def strips_of(widget: Widget) -> list:
    return [widget.render_line(y) for y in range(widget.size.height)]


def screen_text(app) -> str:
    """Every rendered line of every visible widget of the current screen."""
    lines = []
    for widget in app.screen.walk_children(Widget):
        if widget.display and widget.size.height:
            for strip in strips_of(widget):
                text = "".join(segment.text for segment in strip)
                lines.append(text)
    return "\n".join(lines)


def assert_inert(text: str) -> None:
    """Nothing that a terminal would interpret: no ESC, BEL, CR or bidi override in drawn text."""
    for char in ("\x1b", "\x07", "\r", "\u202e"):
        assert char not in text, f"{char!r} reached the screen"


def record_notifications(app) -> list[str]:
    """Wrap app.notify: a 'Could not read the trace' notice means a worker failed."""
    seen: list[str] = []
    original = app.notify

    def notify(message, *args, **kwargs):
        seen.append(str(message))
        return original(message, *args, **kwargs)

    app.notify = notify
    return seen


async def until(pilot, predicate, rounds: int = 100) -> None:
    for _ in range(rounds):
        if predicate():
            return
        await settle(pilot, 1)
    raise AssertionError("the app did not get there")


def waterfall_names(app) -> list[str]:
    return [line.span.name for line in app.screen.query_one(Waterfall).lines]


def detail_text(app) -> str:
    return str(app.screen.query_one("#detail-body").render())


# --- the list ----------------------------------------------------------------------------------------


async def test_list_draws_every_hostile_trace_literally(hostile_db: Path) -> None:
    app = make_app(hostile_db)
    # 220 columns: RUN is 57 cells wide, room for the whole markup-laden name (it shares the spare width since #14)
    async with app.run_test(size=(220, 40)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(TraceTable)
        assert table.row_count == len(hostile_requests())
        lines = [strip.text for strip in strips_of(table)]
        text = screen_text(app)
        assert_inert(text)
        nasty_row = next(line for line in lines if "boom" in line)
        for shown in NASTY_SHOWN[:2]:
            assert shown in nasty_row  # the RUN column, drawn as the characters sent
        assert "\\e[2J" in nasty_row
        future_row = next(line for line in lines if "from 2200" in line)
        assert future_row.split()[0].startswith("2200")  # the year, not a wrapped or 1970 date
        epoch_row = next(line for line in lines if "epoch root" in line)
        assert epoch_row.split()[0] == "—"  # a zero time is unknown, not 1970
        assert "no root yet" in next(line for line in lines if "child of nobody" in line)
        assert "no root yet" in next(line for line in lines if "cycle" in line)
        assert len(next(line for line in lines if "big values" in line)) <= 220  # a 1 MB name fits its column
        assert lines == [strip.text for strip in strips_of(table)]  # stable on repaint


# --- each trace opened ------------------------------------------------------------------------------


async def test_every_hostile_trace_opens_and_draws(hostile_db: Path) -> None:
    app = make_app(hostile_db)
    async with app.run_test(size=(180, 50)) as pilot:
        notes = record_notifications(app)
        await settle(pilot)
        table = app.screen.query_one(TraceTable)
        listed = [table.row_at(i).trace_id for i in range(table.row_count)]
        await pilot.press("enter")  # the newest trace; `n` then walks the view through every older one
        await settle(pilot)
        seen: dict[str, dict] = {}
        for _i, trace_id in enumerate(listed):
            screen = app.screen
            assert isinstance(screen, TraceScreen)
            await until(pilot, lambda screen=screen, trace_id=trace_id: screen.trace_id == trace_id and screen.trace is not None
                        and screen.trace.trace_id == trace_id and bool(screen.waterfall.lines))  # fmt: skip
            names = waterfall_names(app)
            first = screen_text(app)
            rows = [strip.text for strip in strips_of(screen.waterfall)]
            detail = detail_text(app)
            summary = "".join(strip.text for strip in strips_of(screen.query_one("#trace-summary")))
            # The drill-down actions (keys c, s, e, G, tab) run over every hostile shape too;
            # called directly, as Pilot spends ~0.1 s per key press.
            screen.action_critical_path()
            screen.action_slowest()
            screen.action_next_error()
            screen.waterfall.action_last()
            screen.action_toggle_pane()
            screen.action_critical_path()
            screen.action_toggle_pane()
            await settle(pilot, 1)
            assert_inert(first + screen_text(app) + detail)
            seen[screen.trace.name[:20]] = {"names": names, "screen": first, "rows": rows, "detail": detail,
                                             "summary": summary}  # fmt: skip
            screen.action_next_trace()
            await settle(pilot)
        assert len(seen) == len(listed)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, TraceListScreen)
        assert [n for n in notes if "No older trace" in n]  # walked to the end
        assert not [n for n in notes if n.startswith("Could not")], notes

    # cycles: every span exactly once, each cycle cut at its earliest span
    cycles = seen["two-cycle a"]
    assert sorted(cycles["names"]) == ["three-cycle c", "three-cycle d", "three-cycle e", "two-cycle a", "two-cycle b"]
    assert sum("(parent missing)" in row for row in cycles["rows"]) == 2
    # a self-parent: once, as the root of its child
    assert seen["narcissus"]["names"] == ["narcissus", "its child"]
    # the orphan says so
    assert "child of nobody (parent missing)" in seen["child of nobody"]["rows"][0]
    # counts read as English: "1 span", "2 spans"
    assert re.search(r"·  1 span\b", seen["child of nobody"]["summary"])
    assert re.search(r"·  2 spans\b", seen["narcissus"]["summary"])
    # end before start: the bars' durations are never negative; the summary and the detail pane
    # explain it in the same words
    inverted = seen["inverted root"]
    assert inverted["names"] == ["inverted root", "inverted chat"]
    assert all(" 0ns " in row and "-1" not in row for row in inverted["rows"][:2])
    assert "-1.00s (end before start!)" in inverted["detail"]
    assert "inverted root  ·  -1.00s (end before start!)  ·  2 spans" in inverted["summary"]
    # zero duration
    assert all(" 0ns " in row for row in seen["instant"]["rows"][:2])
    # 1970 .. 2200 (and an end clamped to int64) in one trace
    assert seen["epoch root"]["names"] == ["epoch root", "one ns", "end of fixed64", "year 2200"]
    # 10 MB values: the pane shows a cut (the whole value is in `tracetui spans --json`)
    detail = seen["big values nnnnnnnnn"]["detail"]
    assert "10,000,000 characters, first 4,000 shown" in detail
    assert len(detail) < 100_000
    # binary values as hex
    assert "000102030405" in seen["binary"]["detail"] and '"80"' in seen["binary"]["detail"]
    # deep nesting is drawn; past 32 levels it is elided
    assert "bottom" in seen["deeply nested"]["detail"] and "nested too deep" in seen["deeply nested"]["detail"]


async def test_escape_sequences_and_markup_in_names_are_shown_as_text(hostile_db: Path) -> None:
    app = make_app(hostile_db)
    async with app.run_test(size=(200, 60)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(TraceTable)
        table.cursor_row = next(i for i in range(table.row_count) if "boom" in table.row_at(i).name)
        await pilot.press("enter")
        await settle(pilot)
        waterfall = app.screen.query_one(Waterfall)
        rows = [strip.text for strip in strips_of(waterfall)]
        summary = "".join(strip.text for strip in strips_of(app.screen.query_one("#trace-summary")))
        assert "[bold red]boom[/]" in rows[0]  # the name column is cut to fit; what is shown is literal
        for shown in NASTY_SHOWN[:3]:
            assert shown in summary
        assert "[bold red]boom[/]" in rows[1]  # the failed call, its model name beside it
        # The detail pane of the failed call: name, status message, attributes, events, evaluation.
        waterfall.cursor_row = 1
        await settle(pilot)
        detail = app.screen.query_one("#detail-body")
        drawn = "\n".join(strip.text for strip in strips_of(detail))
        body = str(detail.render())
        for shown in NASTY_SHOWN:
            assert shown in body
        assert body.count("[bold red]boom[/]") >= 6  # name, status, attribute key+value, event, evaluation
        assert "[bold red]boom[/]" in drawn
        assert_inert(screen_text(app) + body)
        # Markup was not interpreted: no segment on screen got a link or a style from user text.
        for widget in (waterfall, detail, app.screen.query_one("#trace-summary")):
            for strip in strips_of(widget):
                assert not any(seg.style is not None and seg.style.link for seg in strip)


# --- size ------------------------------------------------------------------------------------------


def big_trace(n: int) -> bytes:
    """A root, n/2 children under it and an (n/2 - 1)-deep chain: wide and deep at once."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "big"
    spans = rs.scope_spans.add().spans
    trace = tid(12)
    root = spans.add(trace_id=trace, span_id=sid(1), name="huge run")
    root.start_time_unix_nano, root.end_time_unix_nano = BASE, BASE + n * 1000 + 1000
    half = n // 2
    for i in range(2, n + 1):
        s = spans.add(trace_id=trace, span_id=sid(i), name=f"{'fan' if i <= half else 'chain'} {i}")
        s.parent_span_id = sid(1) if i <= half + 1 else sid(i - 1)
        s.start_time_unix_nano, s.end_time_unix_nano = BASE + i * 1000, BASE + i * 1000 + 500
    return req.SerializeToString()


async def test_a_huge_trace_opens(tmp_path: Path) -> None:
    """20,000 spans by default, to keep the suite's budget on a loaded 2-core machine.

    By hand, TRACETUI_BIG_TRACE_SPANS=100000 (2 cores, other jobs running): the test took
    8.8-9.7 s at load 1.4 and 15.0 s at load 3.4, of which building + writing the spans
    through the real writer 4.1-5.1 s and opening the trace view 2.6 s; drawing costs the
    same at any size (only visible lines are rendered). The layout code itself runs at
    100,000 spans in test_a_hundred_thousand_deep_chain_is_laid_out_in_linear_time.
    """
    n = BIG_TRACE_SPANS
    db = tmp_path / "big.db"
    started = time.monotonic()
    write_requests(db, [big_trace(n)])
    print(f"\n{n:,} spans: built and written in {time.monotonic() - started:.1f}s")
    app = make_app(db)
    async with app.run_test(size=(140, 40)) as pilot:
        notes = record_notifications(app)
        await settle(pilot)
        assert app.screen.query_one(TraceTable).row_at(0).span_count == n
        started = time.monotonic()
        await pilot.press("enter")
        await settle(pilot)
        opened = time.monotonic() - started
        print(f"{n:,} spans: trace view opened in {opened:.1f}s")
        waterfall = app.screen.query_one(Waterfall)
        assert waterfall.row_count == n and len(set(waterfall_names(app))) == n
        assert_inert(screen_text(app))
        await pilot.press("G")  # the bottom of the deep chain: guides elided, still one line
        await settle(pilot)
        last = strips_of(waterfall)[waterfall.size.height - 1].text
        assert f"chain {n}" in last and "…" in last
        for key in ("c", "s", "k", "c", "g"):
            await pilot.press(key)
            await settle(pilot, 1)
        assert_inert(screen_text(app))
        print(f"{n:,} spans: whole app session {time.monotonic() - started:.1f}s")
        assert not [m for m in notes if m.startswith("Could not")], notes
        assert opened < 10, f"opening a {n:,}-span trace took {opened:.1f}s"


@pytest.mark.timeout(30)  # the quadratic versions took minutes (flatten alone 37 s)
def test_a_hundred_thousand_deep_chain_is_laid_out_in_linear_time() -> None:
    """The view's tree and drill-down functions over 100,000 spans, each the parent of the next."""
    n = 100_000
    spans = [SpanRow(sid(i), sid(i - 1) if i > 1 else None, f"chain {i}", 1, "svc", BASE + i, BASE + 2 * n - i, 0, "")
             for i in range(1, n + 1)]  # fmt: skip
    roots = build_tree(spans)
    lines = flatten(roots)
    assert len(lines) == n and lines[-1].span.depth == n - 1
    assert lines[-1].guides.startswith("…") and len(lines[-1].guides) == 1 + 2 * MAX_GUIDE_DEPTH  # elided, one line
    assert run_of(sid(n), roots) is roots[0]  # what `s` and `c` ask with the cursor at the bottom
    steps = critical_path(roots[0])
    assert sum(step.duration_ns for step in steps) == roots[0].duration_ns  # the whole run is on the path
    assert slowest_spans(roots[0]) == []

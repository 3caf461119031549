"""Two runs aligned by structure: A (marked with space in the list) against B (the one open), deltas B − A.

Both runs' spans are read and aligned (tracetui.query.diff) in a thread worker; the screen draws
the summary and the aligned rows. Enter (or `t`) on an aligned model call reads both calls' messages
(the detail pane's own ``extract_messages``) in another worker and shows their text diff below.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Static

from tracetui.model.fmt import fit, fmt_counted, safe_text
from tracetui.model.views import SpanDetail, TraceRow
from tracetui.query.diff import MODEL_KINDS, Change, RunDiff, RunTotals, diff_runs
from tracetui.ui.context import tui
from tracetui.ui.lifecycle import forget_worker_when_done, set_display
from tracetui.ui.marks import MARK_GLYPH, RunMark
from tracetui.ui.widgets.cursor_list import CursorList
from tracetui.ui.widgets.diff_table import DiffTable, delta_text, value_text
from tracetui.ui.widgets.key_footer import KeyFooter
from tracetui.ui.widgets.status_header import StatusHeader

#: Lines of context around each change in the text diff of two calls' messages.
TEXT_DIFF_CONTEXT = 3


def open_diff(screen: Screen, trace_id: bytes) -> None:
    """Diff ``trace_id`` (B) with the marked run (A); without a mark, say how to make one."""
    app = tui(screen)
    mark = app.run_mark
    if mark is None:
        screen.notify(
            "No run is marked. In the trace list, press space on a run to mark it (A), "
            "then open another run (B) and press d.",
            title="Diff two runs",
            severity="warning",
            markup=False,
            timeout=6,
        )
        return
    if mark.trace_id == trace_id:
        screen.notify(
            f"This is the marked run ({mark.label()}): choose another run to diff it with.",
            markup=False,
            timeout=4,
        )
        return
    app.push_screen(RunDiffScreen(mark, trace_id))


@dataclass
class DiffLoaded(Message):
    trace_a: TraceRow | None
    trace_b: TraceRow | None
    diff: RunDiff


@dataclass
class TextDiffLoaded(Message):
    row: int
    text: Text


@dataclass
class DiffFailed(Message):
    error: str


def _totals_change(key: str, label: str, a: float | None, b: float | None, better: str | None) -> Change:
    delta = b - a if a is not None and b is not None else None
    return Change(key, label, a, b, delta, better)  # type: ignore[arg-type]


def _figure(label: str, change: Change) -> Text:
    """ "duration 34.1s → 2.71s (-31.4s faster)", the delta coloured by its verdict (and told in words)."""
    text = Text()
    text.append(f"{label} ", style="bold")
    text.append(f"{value_text(change.key, change.a)} → {value_text(change.key, change.b)} ")
    text.append(f"({delta_text(change)})", style={1: "green", -1: "red"}.get(change.verdict, ""))
    return text


def _flow(pieces: list[tuple[int, Text]], width: int, lines: int, separator: str = "   ") -> list[Text]:
    """``(priority, text)`` pieces flowed in order onto at most ``lines`` lines of ``width`` cells; while they
    do not fit, the piece with the highest priority number goes (priority 0 stays, cut if it must)."""
    pieces = list(pieces)
    while True:
        out: list[Text] = [Text()]
        for _, piece in pieces:
            if out[-1].cell_len and out[-1].cell_len + len(separator) + piece.cell_len > width:
                out.append(Text())
            if out[-1].cell_len:
                out[-1].append(separator)
            out[-1].append_text(piece)
        droppable = [p for p in pieces if p[0] > 0]
        if (len(out) <= lines and all(line.cell_len <= width for line in out)) or not droppable:
            for line in out:
                line.truncate(width, overflow="ellipsis")
            return out[:lines]
        pieces.remove(max(droppable, key=lambda p: p[0]))


#: Cells of the first summary line that are not the two runs' names.
_HEAD_FIXED = len(" A  ⚑ marked:    B  open:    Δ = B − A") + 1


def summary_text(
    diff: RunDiff, trace_a: TraceRow | None, trace_b: TraceRow | None, mark: RunMark, mark_b: RunMark, width: int
) -> Text:
    """Three lines: which run is A and which B; calls added and removed; duration, cost and tokens A → B.

    Each line fits ``width``: the names are cut first, then the least useful figures go.
    """
    side = max(12, (width - _HEAD_FIXED) // 2)
    text = Text()
    text.append(" A ", style="bold reverse")
    text.append(f" {MARK_GLYPH} marked: {fit(mark.label(side - 9), side)}   ")
    text.append(" B ", style="bold reverse")
    text.append(f" open: {fit(mark_b.label(side - 9), side)}   ")
    text.append("Δ = B − A", style="bold")
    text.truncate(width, overflow="ellipsis")
    removed, added = diff.calls("removed"), diff.calls("added")
    llm_removed, llm_added = diff.calls("removed", MODEL_KINDS), diff.calls("added", MODEL_KINDS)
    calls = Text("calls: ", style="bold")
    calls.append(f"{removed} removed" + (f" ({llm_removed} LLM)" if removed else ""), style="red" if removed else "")
    calls.append(", ")
    calls.append(f"{added} added" + (f" ({llm_added} LLM)" if added else ""), style="green" if added else "")
    pieces: list[tuple[int, Text]] = [(0, calls)]
    if trace_a is None or trace_b is None:
        pieces.append((0, Text("(a run is no longer in the database)", style="italic")))
    else:
        ta, tb = RunTotals.of(trace_a), RunTotals.of(trace_b)
        pieces += [
            (1, _figure("duration", _totals_change("duration", "duration", ta.duration_ns, tb.duration_ns, "lower"))),
            (1, _figure("cost", _totals_change("cost_usd", "cost", ta.cost_usd, tb.cost_usd, "lower"))),
            (2, _figure("tokens", _totals_change("input_tokens", "tokens", ta.tokens, tb.tokens, None))),
            (4, Text(f"LLM calls {ta.llm_calls} → {tb.llm_calls}")),
        ]
    pieces.append((3, Text(f"{fmt_counted(len(diff.pairs), 'span')} aligned", style="dim")))
    for line in _flow(pieces, width - 1, 2):
        text.append("\n ")
        text.append_text(line)
    return text


def _message_lines(detail: SpanDetail | None) -> tuple[list[str], list[str]]:
    """(input lines, output lines) of one call's messages, system instructions included, made safe."""
    from tracetui.llm.chat import extract_messages

    if detail is None:
        return ["(this span is no longer in the database)"], []
    out: dict[str, list[str]] = {"input": [], "output": []}
    for message in extract_messages(detail.attributes, detail.logs):
        lines = out.setdefault(message.direction, [])
        head = f"[{safe_text(message.role, 20)}]"
        if message.name:
            head += f" ({safe_text(message.name, 40)})"
        if message.tool_call_id:
            head += f" ← result of {safe_text(message.tool_call_id, 60)}"
        if message.finish_reason:
            head += f"  finish: {safe_text(message.finish_reason, 30)}"
        lines.append(head)
        if message.content:
            lines += [safe_text(line, 2000) for line in message.content.split("\n")]
        for call in message.tool_calls:
            lines.append(f"→ {safe_text(call.name or '?', 80)}({safe_text(call.arguments or '', 400)})")
    return out["input"], out["output"]


def text_diff(name: str, detail_a: SpanDetail | None, detail_b: SpanDetail | None) -> Text:
    """The unified diff of two calls' prompts (input messages, system included) and outputs, drawn literally."""
    text = Text()
    text.append(f"Text diff of {safe_text(name, 80)}", style="bold")
    text.append("   − only in A (marked)", style="red")
    text.append("   + only in B (open)", style="green")
    text.append("   Esc closes\n", style="dim")
    inputs_a, outputs_a = _message_lines(detail_a)
    inputs_b, outputs_b = _message_lines(detail_b)
    for title, a, b in (("prompt (input messages, system included)", inputs_a, inputs_b),
                        ("output", outputs_a, outputs_b)):  # fmt: skip
        text.append(f"\n── {title} ──\n", style="bold underline")
        if not a and not b:
            text.append("  (no messages recorded on either call)\n", style="dim")
            continue
        if a == b:
            text.append(f"  identical ({fmt_counted(len(a), 'line')})\n", style="dim")
            continue
        for line in list(difflib.unified_diff(a, b, lineterm="", n=TEXT_DIFF_CONTEXT))[2:]:
            if line.startswith("@@"):
                text.append(line + "\n", style="dim")
            elif line.startswith("-"):
                text.append(line + "\n", style="red")
            elif line.startswith("+"):
                text.append(line + "\n", style="green")
            else:
                text.append(line + "\n")
    return text


class RunDiffScreen(Screen):
    """Run A (marked) against run B (open), aligned by structure; deltas are B − A."""

    BINDINGS = [
        Binding("escape", "back", "Back", show=True, tooltip="close the text diff, else back to the run"),
        Binding(
            "t,enter",
            "text_diff",
            "Text diff",
            show=True,
            key_display="t ⏎",
            tooltip="text diff of the prompts and outputs of the aligned LLM call under the cursor (Enter too)",
        ),
        Binding(
            "tab",
            "toggle_pane",
            "Switch pane",
            show=True,
            tooltip="switch between the rows and the text diff (to scroll it)",
        ),
    ]
    DEFAULT_CSS = """
    RunDiffScreen #diff-summary { height: auto; max-height: 3; background: $boost; }
    RunDiffScreen #diff-table { height: 1fr; min-height: 5; }
    RunDiffScreen #text-diff { height: 1fr; min-height: 5; border-top: solid $primary 50%; padding: 0 1; }
    RunDiffScreen #text-diff:focus { border-top: solid $accent; }
    RunDiffScreen #text-diff > Static { width: 1fr; }
    """

    def __init__(self, mark: RunMark, trace_id: bytes) -> None:
        """
        Args:
            mark: run A, the marked run.
            trace_id: run B, the run open (or under the cursor in the list).
        """
        super().__init__()
        self.mark = mark
        self.trace_id = trace_id
        self.trace_a: TraceRow | None = None
        self.trace_b: TraceRow | None = None
        self.diff: RunDiff | None = None
        #: The diff row whose text diff is shown or being read.
        self._text_for: int | None = None

    def compose(self) -> ComposeResult:
        yield StatusHeader(tui(self).listen, id="status")
        yield Static(Text(" Aligning the two runs…", style="dim"), id="diff-summary")
        yield DiffTable(id="diff-table")
        with VerticalScroll(id="text-diff", can_focus=True):
            yield Static("", id="text-diff-body")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one("#text-diff").display = False
        self.table.focus()
        self._load_diff(self.mark.trace_id, self.trace_id)

    @property
    def table(self) -> DiffTable:
        return self.query_one(DiffTable)

    # --- loading -------------------------------------------------------------

    @work(thread=True, group="run-diff", exit_on_error=False, description="align two runs")
    @forget_worker_when_done
    def _load_diff(self, trace_a: bytes, trace_b: bytes) -> None:
        reader = tui(self).reader
        try:
            row_a, row_b = reader.trace(trace_a), reader.trace(trace_b)
            diff = diff_runs(reader.spans(trace_a), reader.spans(trace_b))
        except Exception as exc:
            self.post_message(DiffFailed(str(exc)))
            return
        self.post_message(DiffLoaded(row_a, row_b, diff))

    @on(DiffLoaded)
    def _diff_loaded(self, message: DiffLoaded) -> None:
        self.trace_a, self.trace_b, self.diff = message.trace_a, message.trace_b, message.diff
        self.table.set_diff(message.diff)
        self._update_summary()

    @on(DiffFailed)
    def _diff_failed(self, message: DiffFailed) -> None:
        self.notify(f"Could not diff the runs: {message.error}", severity="error", markup=False)

    def _run_b(self) -> RunMark:
        """Run B named like the marked one (name and short id)."""
        return RunMark(self.trace_id, self.trace_b.name if self.trace_b is not None else "?")

    def _update_summary(self) -> None:
        if self.diff is None:
            return
        width = max(40, self.size.width - 1)
        text = summary_text(self.diff, self.trace_a, self.trace_b, self.mark, self._run_b(), width)
        self.query_one("#diff-summary", Static).update(text)

    def on_resize(self) -> None:
        self._update_summary()

    # --- text diff -------------------------------------------------------------

    @on(CursorList.Selected, "#diff-table")
    def _selected(self, _message: CursorList.Selected) -> None:
        self.action_text_diff()

    def action_text_diff(self) -> None:
        """Read both calls' messages and show their text diff below the rows."""
        table = self.table
        row = table.row_at(table.cursor_row)
        if row is None:
            return
        if row.status != "aligned" or row.span.llm_kind != "llm":
            where = {"removed": "only in A", "added": "only in B"}.get(row.status)
            why = f"this span is {where}" if where else "this span is not an LLM call"
            self.notify(f"Text diff: {why}. Move to an aligned LLM call (◆).", markup=False, timeout=3)
            return
        assert row.a is not None and row.b is not None
        index = table.lines[table.cursor_row].row
        self._text_for = index
        body = self.query_one("#text-diff-body", Static)
        body.update(Text("Reading both calls' messages…", style="dim"))
        self._show_text_pane(True)
        self._load_text_diff(index, row.span.name, row.a.span_id, row.b.span_id)

    @work(thread=True, group="text-diff", exit_on_error=False, description="diff two calls' messages")
    @forget_worker_when_done
    def _load_text_diff(self, index: int, name: str, span_a: bytes, span_b: bytes) -> None:
        reader = tui(self).reader
        try:
            detail_a = reader.span_detail(self.mark.trace_id, span_a)
            detail_b = reader.span_detail(self.trace_id, span_b)
            text = text_diff(name, detail_a, detail_b)
        except Exception as exc:
            self.post_message(DiffFailed(str(exc)))
            return
        self.post_message(TextDiffLoaded(index, text))

    @on(TextDiffLoaded)
    def _text_diff_loaded(self, message: TextDiffLoaded) -> None:
        if message.row != self._text_for:
            return  # a later request wins
        self.query_one("#text-diff-body", Static).update(message.text)
        self.query_one("#text-diff").scroll_home(animate=False)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Tab (switch pane) is offered only while the text diff is open."""
        if action == "toggle_pane":
            panes = self.query("#text-diff")  # empty until composed
            return bool(panes) and bool(panes.first().display)
        return True

    def _show_text_pane(self, show: bool) -> None:
        set_display(self.query_one("#text-diff"), show)
        self.refresh_bindings()

    def action_toggle_pane(self) -> None:
        pane = self.query_one("#text-diff")
        if not pane.display:
            return
        if self.table.has_focus:
            pane.focus()
        else:
            self.table.focus()

    def action_back(self) -> None:
        pane = self.query_one("#text-diff")
        if pane.display:
            self._text_for = None
            self._show_text_pane(False)
            self.table.focus()
            return
        self.app.pop_screen()

"""One trace: the span tree with waterfall bars above, the selected span's details below."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static

from tracetui.fmt import fmt_duration, safe_text
from tracetui.store.reader import SpanDetail, TraceRow
from tracetui.tree import TreeLine, build_tree, flatten
from tracetui.ui.widgets.cursor_list import CursorList
from tracetui.ui.widgets.span_detail import SpanDetailPane
from tracetui.ui.widgets.status_header import StatusHeader
from tracetui.ui.widgets.waterfall import Waterfall


#: Our own constant markup (no user text): colour samples matching the bars.
LEGEND = (
    " [$error]▒▒[/] retry  [$warning]▒▒[/] first token  [$success]██[/] decode  "
    "[$secondary]██[/] response (not streamed)  [$error]░░[/] error  [$foreground 45%]██[/] other"
    "   ↻ retried  ⤷ fallback"
)
SPLIT_LABELS = {
    "retry": "retry",
    "fallback": "fallback",
    "ttft": "first token",
    "decode": "decode",
    "response": "LLM response",
    "tool": "tools",
    "other": "other",
}


@dataclass
class TraceLoaded(Message):
    trace: TraceRow | None
    roots: list
    lines: list[TreeLine]


@dataclass
class DetailLoaded(Message):
    span_id: bytes
    detail: SpanDetail | None


@dataclass
class LoadFailed(Message):
    error: str


class TraceScreen(Screen):
    """Tree + waterfall + detail for one trace; reloads when new spans of it arrive."""

    BINDINGS = [
        Binding("escape", "back", "Back", show=True),
        Binding("tab", "toggle_pane", "Switch pane", show=True),
        Binding("left,h", "collapse", "Collapse", show=False),
        Binding("right,l", "expand", "Expand", show=False),
    ]

    def __init__(self, trace_id: bytes) -> None:
        super().__init__()
        self.trace_id = trace_id
        self.trace: TraceRow | None = None
        self.roots: list = []
        self.collapsed: set[bytes] = set()
        self._detail_for: bytes | None = None
        self._loading = False
        self._reload_pending = False

    def compose(self) -> ComposeResult:
        yield StatusHeader(self.app.listen, id="status")  # type: ignore[attr-defined]
        yield Static("", id="trace-summary")
        yield Waterfall(id="waterfall")
        yield Static(LEGEND, id="legend")
        yield SpanDetailPane(id="detail")
        yield Footer()

    def on_mount(self) -> None:
        self.watch(self.app, "data_version", self._data_changed, init=False)
        self.watch(self.app, "counters", self._counters_changed, init=True)
        self.query_one(Waterfall).focus()
        self.reload()

    @property
    def waterfall(self) -> Waterfall:
        return self.query_one(Waterfall)

    # --- loading -------------------------------------------------------------

    def _counters_changed(self, update) -> None:
        if update is not None:
            self.query_one(StatusHeader).update_counters(update.counters, update.receiver_alive, update.at_monotonic)

    def _data_changed(self, _version: int) -> None:
        self.reload()

    def reload(self) -> None:
        if self._loading:
            self._reload_pending = True
            return
        self._loading = True
        self._load_trace(self.trace_id, frozenset(self.collapsed), self.trace)

    @work(thread=True, group="trace", exit_on_error=False, description="load trace")
    def _load_trace(self, trace_id: bytes, collapsed: frozenset[bytes], known: TraceRow | None) -> None:
        reader = self.app.reader  # type: ignore[attr-defined]
        try:
            trace = reader.trace(trace_id)
            if known is not None and trace is not None and (trace.span_count, trace.end_ns) == (
                known.span_count,
                known.end_ns,
            ):
                self.post_message(TraceLoaded(trace, [], []))  # nothing new: keep what is drawn
                return
            spans = reader.spans(trace_id)
            roots = build_tree(spans)
            lines = flatten(roots, collapsed)
        except Exception as exc:
            self.post_message(LoadFailed(str(exc)))
            return
        self.post_message(TraceLoaded(trace, roots, lines))

    @on(TraceLoaded)
    def _trace_loaded(self, message: TraceLoaded) -> None:
        self._loading = False
        first_load = self.trace is None
        if message.trace is None:
            self.query_one("#trace-summary", Static).update(" This trace is no longer in the database.")
        elif message.lines or first_load:
            self.trace = message.trace
            self.roots = message.roots
            self._show_lines(message.lines)
        if self._reload_pending:
            self._reload_pending = False
            self.reload()

    @on(LoadFailed)
    def _load_failed(self, message: LoadFailed) -> None:
        self._loading = False
        self.notify(f"Could not read the trace: {message.error}", severity="error", markup=False)

    def _show_lines(self, lines: list[TreeLine]) -> None:
        waterfall = self.waterfall
        selected = waterfall.line_at(waterfall.cursor_row)
        selected_id = selected.span.span_id if selected else None
        trace = self.trace
        if trace is None:
            return
        waterfall.set_lines(lines, trace.start_ns, trace.end_ns)
        if selected_id is not None:
            for i, line in enumerate(lines):
                if line.span.span_id == selected_id:
                    waterfall.cursor_row = i
                    break
        self._update_summary()
        self._request_detail()

    def _update_summary(self) -> None:
        trace = self.trace
        if trace is None:
            return
        parts = [
            f" {safe_text(trace.name, 80)}" + ("" if trace.has_root else " (no root yet)"),
            fmt_duration(trace.duration_ns),
            f"{trace.span_count} spans",
        ]
        if trace.llm_calls:
            parts.append(f"{trace.llm_calls} LLM call{'s' if trace.llm_calls != 1 else ''}")
        if trace.error_count:
            parts.append(f"{trace.error_count} error{'s' if trace.error_count != 1 else ''}")
        parts.append(safe_text(trace.service, 40))
        text = Text("  ·  ".join(parts))
        split = [(SPLIT_LABELS[k], ns) for k, ns in trace.split.items() if ns]
        if trace.llm_calls and split:
            text.append("\n time went to: ", style="not bold")
            text.append("  ".join(f"{label} {fmt_duration(ns)}" for label, ns in split), style="not bold")
        self.query_one("#trace-summary", Static).update(text)
        self.query_one(StatusHeader).title = ""

    # --- detail --------------------------------------------------------------

    @on(CursorList.Highlighted, "#waterfall")
    def _span_highlighted(self, _message: CursorList.Highlighted) -> None:
        self._request_detail()

    def _request_detail(self) -> None:
        line = self.waterfall.line_at(self.waterfall.cursor_row)
        if line is None or line.span.span_id == self._detail_for:
            return
        self._detail_for = line.span.span_id
        self._load_detail(self.trace_id, line.span.span_id)

    @work(thread=True, group="detail", exit_on_error=False, description="load span detail")
    def _load_detail(self, trace_id: bytes, span_id: bytes) -> None:
        try:
            detail = self.app.reader.span_detail(trace_id, span_id)  # type: ignore[attr-defined]
        except Exception as exc:
            self.post_message(LoadFailed(str(exc)))
            return
        self.post_message(DetailLoaded(span_id, detail))

    @on(DetailLoaded)
    def _detail_loaded(self, message: DetailLoaded) -> None:
        if message.span_id == self._detail_for:  # a later selection wins
            self.query_one(SpanDetailPane).show(message.detail)

    # --- keys ----------------------------------------------------------------

    @on(CursorList.Selected, "#waterfall")
    def _selected(self, _message: CursorList.Selected) -> None:
        line = self.waterfall.line_at(self.waterfall.cursor_row)
        if line is not None and line.collapsed:
            self.action_expand()
        else:
            self.query_one(SpanDetailPane).focus()

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_toggle_pane(self) -> None:
        if self.waterfall.has_focus:
            self.query_one(SpanDetailPane).focus()
        else:
            self.waterfall.focus()

    def _relayout(self) -> None:
        self._show_lines(flatten(self.roots, self.collapsed))

    def action_collapse(self) -> None:
        line = self.waterfall.line_at(self.waterfall.cursor_row)
        if line is not None and line.span.children and not line.collapsed:
            self.collapsed.add(line.span.span_id)
            self._relayout()

    def action_expand(self) -> None:
        line = self.waterfall.line_at(self.waterfall.cursor_row)
        if line is not None and line.collapsed:
            self.collapsed.discard(line.span.span_id)
            self._relayout()

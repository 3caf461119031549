"""One trace: the span tree with waterfall bars above, the selected span's details below.

A big trace opens a screenful first: the reader pages the spans in start order
(``Reader.span_pages``), the first page's tree is drawn at once, and the rest
arrive in the background ("loading 40,000 of 100,000 spans…" in the summary).
What needs the whole trace (the slowest call, the critical path, the error
count) waits for the last page: ``s`` and ``c`` are applied then, ``e`` says so.
"""

from __future__ import annotations

from copy import copy
from dataclasses import dataclass

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Static

from tracetui.llm.timing import first_token_note
from tracetui.model.filter import Filter, parse
from tracetui.model.fmt import fit, fmt_cost, fmt_counted, fmt_duration, fmt_elapsed, join_to_fit, safe_text, short_name
from tracetui.model.freed_memory import trim_freed_memory
from tracetui.model.views import SpanDetail, SpanRow, TraceRow
from tracetui.query.drill import (
    critical_path,
    path_summary,
    run_of,
    run_roots,
    slowest_spans,
    walk,
)
from tracetui.query.search import matching_spans, search_index
from tracetui.query.tree import TreeLine, build_tree, flatten
from tracetui.ui.context import tui
from tracetui.ui.lifecycle import forget_worker_when_done, unwatch_app
from tracetui.ui.widgets.cursor_list import CursorList
from tracetui.ui.widgets.filter_bar import FilterBar
from tracetui.ui.widgets.key_footer import KeyFooter
from tracetui.ui.widgets.search_bar import SearchBar
from tracetui.ui.widgets.span_detail import SpanDetailPane
from tracetui.ui.widgets.status_header import StatusHeader
from tracetui.ui.widgets.waterfall import SEGMENT_CHARS, Waterfall

#: (bar component, colour, label, short label): the legend, in the order the pieces appear in a bar.
#: The "response" label is filled per trace by response_label(): what a one-piece bar means there.
LEGEND_ITEMS = (
    ("waterfall--retry", "$error", "retry", "retry"),
    ("waterfall--ttft", "$warning", "first token", "1st token"),
    ("waterfall--decode", "$success", "decode", "decode"),
    ("waterfall--response", "$secondary", "response", "response"),
    ("waterfall--error", "$error", "error", "error"),
    ("waterfall--bar", "$foreground 45%", "other", "other"),
)
LEGEND_MARKS = "↻ retried  ⤷ fallback"
#: Closing a trace this big gives its memory back to the system (~0.8 KB of rows, tree and lines a span).
TRIM_AFTER_SPANS = 10_000


def response_label(spans: list) -> str:
    """What a one-piece "response" bar means in these spans: why their model calls have no first token.

    "not streamed" only where the library said so; "first token not reported by
    <library>" where it said nothing: not reported is not "no" (docs/timing.md).
    """
    notes = sorted({note for s in spans if s.llm_kind == "llm" and not s.is_error
                    and (note := first_token_note(s.streaming, s.ttft_ns, s.library))})  # fmt: skip
    return "response" + (f" ({'; '.join(notes)})" if notes else "")


def legend(response: str = "response", width: int = 200) -> Content:
    """The bar legend: a sample of each piece's own glyph (waterfall.SEGMENT_CHARS) in its colour, fitted to ``width``.

    Glyphs differ as well as colours, so it reads on a monochrome terminal. Narrower
    terminals get one-cell samples and short labels, then lose the ↻ / ⤷ marks. The
    "response" label (``response_label``) may hold a library's name (data), so labels are plain
    text, never markup.
    """
    for sample, short, marks in ((2, False, True), (1, False, True), (1, True, True), (1, True, False)):
        items = [(SEGMENT_CHARS[c] * sample, colour,
                  response if c == "waterfall--response" and not short else (short_label if short else label))
                 for c, colour, label, short_label in LEGEND_ITEMS]  # fmt: skip
        plain = "  ".join(f"{glyph} {label}" for glyph, _, label in items) + (f"   {LEGEND_MARKS}" if marks else "")
        if len(plain) + 1 <= width:
            break
    content = Content(" ")
    for i, (glyph, colour, label) in enumerate(items):
        # Textual markup for our own constant glyphs ($variables are theme colours); labels as plain text.
        content += Content.from_markup(f"{'  ' if i else ''}[{colour}]{glyph}[/] ") + Content(safe_text(label, 160))
    return content + Content(f"   {LEGEND_MARKS}" if marks else "")


SPLIT_LABELS = {
    "retry": "retry",
    "fallback": "fallback",
    "ttft": "first token",
    "decode": "decode",
    "response": "LLM response",
    "tool": "tools",
    "other": "other",
}


def _fingerprint(trace: TraceRow) -> tuple:
    """What changes when a trace gains spans, costs or evaluations."""
    return (trace.span_count, trace.end_ns, trace.cost_usd, trace.evals_total, trace.groundedness, trace.root_name)


@dataclass
class SpansMatched(Message):
    trace_id: bytes
    text: str
    span_ids: set[bytes]


@dataclass
class SearchDone(Message):
    trace_id: bytes
    text: str
    index: dict[bytes, str]
    hits: set[bytes]
    move: bool  # typed: go to the first match; after a reload: stay where the cursor is


@dataclass
class NeighborFound(Message):
    trace_id: bytes | None
    newer: bool


@dataclass
class TraceLoaded(Message):
    """The trace's tree, or its first page (``loading``: (spans read, spans in all)), or nothing new."""

    trace_id: bytes
    trace: TraceRow | None
    roots: list
    lines: list[TreeLine]
    session: dict | None = None
    loading: tuple[int, int] | None = None
    #: The collapsed subtrees ``lines`` were flattened with.
    collapsed: frozenset[bytes] = frozenset()


@dataclass
class SpansLoading(Message):
    """Progress of a big trace's later pages."""

    trace_id: bytes
    loaded: int
    total: int


@dataclass
class DetailLoaded(Message):
    span_id: bytes
    detail: SpanDetail | None


@dataclass
class LoadFailed(Message):
    error: str


def _cost_words(cost_usd: float | None, unpriced_calls: int) -> str:
    """The run's cost in the summary: "$0.0133", "$0.0133 + 1 unpriced call", or "2 unpriced calls" when
    no call could be priced ("" when there is no cost at all)."""
    unpriced = fmt_counted(unpriced_calls, "unpriced call") if unpriced_calls else ""
    if cost_usd is None:
        return unpriced
    return fmt_cost(cost_usd) + (f" + {unpriced}" if unpriced else "")


class TraceScreen(Screen):
    """Tree + waterfall + detail for one trace; reloads when new spans of it arrive."""

    BINDINGS = [
        Binding("escape", "back", "Back", show=True, tooltip="clear the search, else go back to the list"),
        Binding(
            "s",
            "slowest",
            "Slowest",
            show=True,
            tooltip="jump to the run's slowest LLM or tool call; again for the next slowest",
        ),
        Binding(
            "c",
            "critical_path",
            "Critical path",
            show=True,
            tooltip="show / hide the critical path of the run, with its total",
        ),
        Binding("e", "next_error", "Next error", show=True, tooltip="next error span"),
        Binding("E", "previous_error", "Prev error", show=False, tooltip="previous error span"),
        Binding(
            "greater_than_sign",
            "next_trace",
            "Next run",
            show=True,
            key_display=">",
            tooltip="next (older) run without leaving this view",
        ),
        Binding(
            "less_than_sign",
            "previous_trace",
            "Prev run",
            show=False,
            key_display="<",
            tooltip="previous (newer) run without leaving this view",
        ),
        Binding("tab", "toggle_pane", "Switch pane", show=True, tooltip="switch between the tree and the details"),
        Binding(
            "y",
            "copy_summary",
            "Copy summary",
            show=False,
            tooltip="copy the run's summary (tree, timings, cost, prompts) to the clipboard",
        ),
        Binding(
            "Y",
            "copy_attributes",
            "Copy attributes",
            show=False,
            tooltip="copy the selected span's raw attributes as JSON",
        ),
        Binding(
            "slash",
            "search",
            "Search",
            show=True,
            key_display="/",
            tooltip="search this run's span names, attributes and messages; matches are marked » and highlighted",
        ),
        Binding("n", "next_match", "Next match", show=False, tooltip="next span that matches the search"),
        Binding("N", "previous_match", "Prev match", show=False, tooltip="previous span that matches the search"),
        Binding(
            "f",
            "filter",
            "Filter",
            show=True,
            tooltip="show only the spans that match a filter (and their parents)",
        ),
        Binding(
            "d",
            "diff",
            "Diff",
            show=True,
            tooltip="diff this run (B) with the run marked with space in the trace list (A)",
        ),
        Binding(
            "plus",
            "feedback(1)",
            "👍",
            show=False,
            key_display="+",
            tooltip="thumbs up on the selected LLM call (else on the run), with an optional note",
        ),
        Binding(
            "minus",
            "feedback(-1)",
            "👎",
            show=False,
            key_display="-",
            tooltip="thumbs down on the selected LLM call (else on the run), with an optional note",
        ),
        Binding(
            "left,h,left_square_bracket",
            "collapse",
            "Collapse",
            show=False,
            key_display="[ ← h",
            tooltip="collapse the subtree under the cursor",
        ),
        Binding(
            "right,l,right_square_bracket",
            "expand",
            "Expand",
            show=False,
            key_display="] → l",
            tooltip="expand the subtree under the cursor (Enter on a collapsed span too)",
        ),
    ]

    def __init__(self, trace_id: bytes, *, show_slowest: bool = False, horizon: int | None = None) -> None:
        """
        Args:
            trace_id: the trace to show.
            show_slowest: select the run's slowest call once loaded (`s` pressed in the list).
            horizon: the trace list's arrival horizon, so n/p walk the same rows it shows.
        """
        super().__init__()
        self.trace_id = trace_id
        self._show_slowest = show_slowest
        self.horizon = horizon
        #: (run span id, position) of the last `s` press, so the next one moves on.
        self._slow_cursor: tuple[bytes, int] | None = None
        self.critical: bool = False
        self._critical_text = ""
        #: The legend's "response" label for the spans on screen (response_label), kept for resizes.
        self._legend_response = "response"
        #: Totals of the conversation this run belongs to (Reader.session_totals), if any.
        self.session: dict | None = None
        self.span_filter: Filter = parse("")
        #: Span ids matching span_filter (None: no filter).
        self.matches: set[bytes] | None = None
        self.trace: TraceRow | None = None
        self.roots: list = []
        self.collapsed: set[bytes] = set()
        self._detail_for: bytes | None = None
        self._loading = False
        self._reload_pending = False
        #: (spans read, spans in all) while a big trace's later pages load; None once the tree is whole.
        self.partial: tuple[int, int] | None = None
        #: The `/` search: its text ("" : none), the spans that hold it, and the run's searchable text
        #: (tracetui.query.search, built on the first search; None until then or after new spans arrive).
        self.search_text = ""
        self.search_hits: set[bytes] = set()
        self._search_index: dict[bytes, str] | None = None

    def compose(self) -> ComposeResult:
        yield StatusHeader(tui(self).listen, id="status")
        yield Static("", id="trace-summary")
        yield Waterfall(id="waterfall")
        yield Static(legend(), id="legend")
        yield SpanDetailPane(id="detail")
        yield SearchBar(id="search-bar")
        yield FilterBar(id="filter-bar")
        yield KeyFooter()

    def on_unmount(self) -> None:
        tui(self).pin(None)
        unwatch_app(self)  # else the app's watcher lists keep this screen (and its spans) alive
        if self.trace is not None and self.trace.span_count >= TRIM_AFTER_SPANS:
            # its rows, tree and lines are freed once the screen goes: give their pages back to the system
            # then, so that the next screen does not add its peak to this one's (benchmarks/ui.py, 10M)
            self.app.set_timer(0.5, trim_freed_memory)

    def on_mount(self) -> None:
        tui(self).pin(self.trace_id)
        self.watch(self.app, "data_version", self._data_changed, init=False)
        self.query_one(Waterfall).focus()
        self.reload()

    @property
    def waterfall(self) -> Waterfall:
        return self.query_one(Waterfall)

    # --- loading -------------------------------------------------------------

    def _data_changed(self, _version: int) -> None:
        self.reload()

    def reload(self) -> None:
        if self._loading:
            self._reload_pending = True
            return
        self._loading = True
        self._load_trace(self.trace_id, frozenset(self.collapsed), self.trace)

    @work(thread=True, group="trace", exit_on_error=False, description="load trace")
    @forget_worker_when_done
    def _load_trace(self, trace_id: bytes, collapsed: frozenset[bytes], known: TraceRow | None) -> None:
        reader = tui(self).reader
        try:
            trace = reader.trace(trace_id)
            if known is not None and trace is not None and _fingerprint(trace) == _fingerprint(known):
                self.post_message(TraceLoaded(trace_id, trace, [], []))  # nothing new: keep what is drawn
                return
            session = reader.session_totals(trace.session_id) if trace is not None and trace.session_id else None
            spans: list[SpanRow] = []
            for page in reader.span_pages(trace_id):
                if trace_id != self.trace_id:  # n / p moved on: stop reading this one
                    self.post_message(TraceLoaded(trace_id, None, [], []))
                    return
                spans.extend(page)
                total = max(trace.span_count if trace is not None else 0, len(spans))
                if len(spans) == len(page) and len(spans) < total and known is None:
                    # The first page of a big trace: draw its tree now (over copies: the whole tree,
                    # built below from the same rows, must not change what is on screen meanwhile).
                    roots = build_tree([copy(span) for span in spans])
                    lines = flatten(roots, collapsed)
                    self.post_message(
                        TraceLoaded(trace_id, trace, roots, lines, session, (len(spans), total), collapsed)
                    )
                elif len(spans) < total and known is None:
                    self.post_message(SpansLoading(trace_id, len(spans), total))
            roots = build_tree(spans)
            lines = flatten(roots, collapsed)
        except Exception as exc:
            self.post_message(LoadFailed(str(exc)))
            return
        self.post_message(TraceLoaded(trace_id, trace, roots, lines, session, None, collapsed))

    @on(TraceLoaded)
    def _trace_loaded(self, message: TraceLoaded) -> None:
        if message.loading is None:
            self._loading = False
        if message.trace_id != self.trace_id:
            pass  # an earlier trace's (n / p moved on)
        elif message.trace is None:
            self.query_one("#trace-summary", Static).update(" This trace is no longer in the database.")
        elif message.lines or self.trace is None or self.partial is not None:
            self._apply(message)
        if self._reload_pending and not self._loading:
            self._reload_pending = False
            self.reload()

    def _apply(self, message: TraceLoaded) -> None:
        """Show a loaded tree (a first page, or the whole trace) and what waited for the whole of it."""
        if self.trace is not None and self.partial is None:
            self._detail_for = None  # the trace changed: its selected span's evaluations may have too
        first_load = self.trace is None
        self.trace = message.trace
        self.roots = message.roots
        self.session = message.session
        self.partial = message.loading
        self._search_index = None  # new spans (or another run): the search reads the run again
        lines = message.lines
        if message.collapsed != self.collapsed:  # collapsed or expanded while the rest loaded
            lines = flatten(self.roots, self.collapsed)
        self._show_lines(lines)
        if self.search_text:
            self._run_search(move=first_load)
        if self.partial is not None:
            return
        if self._show_slowest:
            self._show_slowest = False
            self.action_slowest()
        elif self.critical:
            self._mark_critical_path()

    @on(SpansLoading)
    def _spans_loading(self, message: SpansLoading) -> None:
        if message.trace_id == self.trace_id and self.partial is not None:
            self.partial = (message.loaded, message.total)
            self._update_summary()

    def _still_loading(self, what: str) -> bool:
        """While the rest of a big trace loads: say that ``what`` waits for it (True), else False."""
        if self.partial is None:
            return False
        loaded, total = self.partial
        self.notify(f"Loading {loaded:,} of {total:,} spans: {what} once all are in.", markup=False, timeout=3)
        return True

    @on(LoadFailed)
    def _load_failed(self, message: LoadFailed) -> None:
        self._loading = False
        self.notify(f"Could not read the trace: {message.error}", severity="error", markup=False)

    def _visible(self, lines: list[TreeLine]) -> list[TreeLine]:
        """With a span filter, only the matches and their ancestors (for context)."""
        if self.matches is None:
            return lines
        keep: set[bytes] = set()
        parents = {s.span_id: s.parent_span_id for r in self.roots for s in walk(r)}
        for span_id in self.matches:
            node: bytes | None = span_id
            hops = 0
            while node is not None and node not in keep and hops < 100_000:
                keep.add(node)
                node, hops = parents.get(node), hops + 1
        return [line for line in lines if line.span.span_id in keep]

    def _show_lines(self, lines: list[TreeLine]) -> None:
        lines = self._visible(lines)
        waterfall = self.waterfall
        selected = waterfall.line_at(waterfall.cursor_row)
        selected_id = selected.span.span_id if selected else None
        trace = self.trace
        if trace is None:
            return
        waterfall.set_lines(lines, trace.start_ns, trace.end_ns)
        self._legend_response = response_label([line.span for line in lines])
        self.query_one("#legend", Static).update(legend(self._legend_response, self.size.width))
        if selected_id is not None:
            for i, line in enumerate(lines):
                if line.span.span_id == selected_id:
                    waterfall.cursor_row = i
                    break
        self._update_summary()
        self._request_detail()

    def _update_summary(self) -> None:
        """Three lines that each fit the width: the run; its service, evaluations and session; where its time went.

        Narrow terminals get shorter lines, not wrapped ones: narrower separators first,
        then the name's operation prefix, then the least useful parts (span count, LLM
        calls, session), and the name is cut only when nothing else can go.
        """
        trace = self.trace
        if trace is None:
            return
        width = max(20, self.size.width - 2)
        name = safe_text(trace.name, 80) + ("" if trace.has_root else " (no root yet)")
        first = [
            (0, fmt_elapsed(trace.start_ns, trace.end_ns)),
            (3, fmt_counted(trace.span_count, "span")),
            (2, fmt_counted(trace.llm_calls, "LLM call") if trace.llm_calls else ""),
            (0, _cost_words(trace.cost_usd, trace.unpriced_calls)),
            # calls whose tokens and cost are missing from the totals
            (1, fmt_counted(trace.tokenless_calls, "call") + " without token counts" if trace.tokenless_calls else ""),
            (0, fmt_counted(trace.error_count, "error") if trace.error_count else ""),
        ]
        if len(" · ".join([name, *(text for _, text in first if text)])) > width:
            name = short_name(name, 0)  # "invoke_agent ticket-resolution" -> "ticket-resolution"
        second = [(0, safe_text(trace.service, 40))]
        if trace.evals_total:
            estimate = " (estimate)" if trace.groundedness_estimated else ""
            grounded = f"groundedness {trace.groundedness:.2f}{estimate}, " if trace.groundedness is not None else ""
            second.append((1, f"{grounded}{trace.evals_passed}/{trace.evals_total} evals passed"))
        if self.session and self.session["runs"] > 1:
            second.append((2, f"session {safe_text(self.session['session_id'], 30)}: {self.session['runs']} runs, "
                              f"{fmt_cost(self.session['cost_usd'])}"))  # fmt: skip
        text = Text(" " + join_to_fit([(0, name), *first], width))
        text.append("\n " + join_to_fit(second, width), style="not bold")
        if self.partial is not None:
            loaded, total = self.partial
            text.append("\n " + fit(f"loading {loaded:,} of {total:,} spans…", width), style="not bold")
        elif self.critical and self._critical_text:
            text.append("\n ◆ " + fit(self._critical_text, width - 2), style="bold")
        elif trace.llm_calls and (split := self._time_split(width)):
            text.append("\n " + split, style="not bold")
        self.query_one("#trace-summary", Static).update(text)
        self.query_one(StatusHeader).title = ""

    def _time_split(self, width: int) -> str:
        """'time went to: first token 820ms  decode 2.75s ...', fitted: a shorter lead first, then the smallest parts go."""
        assert self.trace is not None
        split = [(SPLIT_LABELS[key], ns) for key, ns in self.trace.split.items() if ns]
        if not split:
            return ""
        rank = {label: i for i, (label, _) in enumerate(sorted(split, key=lambda part: -part[1]), start=1)}
        items = [(rank[label], f"{label} {fmt_duration(ns)}") for label, ns in split]
        lead = "time went to:"
        if len("  ".join([lead, *(text for _, text in items)])) > width:
            lead = "time:"
        return join_to_fit([(0, lead), *items], width, separators=("  ",))

    def on_resize(self) -> None:
        """The summary lines and the legend are fitted to the width."""
        self.query_one("#legend", Static).update(legend(self._legend_response, self.size.width))
        self._update_summary()

    # --- detail --------------------------------------------------------------

    @on(CursorList.Highlighted, "#waterfall")
    def _span_highlighted(self, _message: CursorList.Highlighted) -> None:
        self._request_detail()
        if self.search_text:
            self._show_search_count()

    def _request_detail(self) -> None:
        line = self.waterfall.line_at(self.waterfall.cursor_row)
        if line is None or line.span.span_id == self._detail_for:
            return
        self._detail_for = line.span.span_id
        self._load_detail(self.trace_id, line.span.span_id)

    @work(thread=True, group="detail", exit_on_error=False, description="load span detail")
    @forget_worker_when_done
    def _load_detail(self, trace_id: bytes, span_id: bytes) -> None:
        try:
            detail = tui(self).reader.span_detail(trace_id, span_id)
        except Exception as exc:
            self.post_message(LoadFailed(str(exc)))
            return
        self.post_message(DetailLoaded(span_id, detail))

    @on(DetailLoaded)
    def _detail_loaded(self, message: DetailLoaded) -> None:
        if message.span_id == self._detail_for:  # a later selection wins
            self.query_one(SpanDetailPane).show(message.detail, self.search_text)

    # --- keys ----------------------------------------------------------------

    @on(CursorList.Selected, "#waterfall")
    def _selected(self, _message: CursorList.Selected) -> None:
        line = self.waterfall.line_at(self.waterfall.cursor_row)
        if line is not None and line.collapsed:
            self.action_expand()
        else:
            self.query_one(SpanDetailPane).focus()

    def action_back(self) -> None:
        if self.search_text:
            self.query_one(SearchBar).action_clear()
        else:
            self.app.pop_screen()

    def action_toggle_pane(self) -> None:
        if self.waterfall.has_focus:
            self.query_one(SpanDetailPane).focus()
        else:
            self.waterfall.focus()

    def _relayout(self) -> None:
        self._show_lines(flatten(self.roots, self.collapsed))

    def _cursor_span(self):
        line = self.waterfall.line_at(self.waterfall.cursor_row)
        return line.span if line is not None else None

    def action_collapse(self) -> None:
        """Collapse the subtree under the cursor."""
        line = self.waterfall.line_at(self.waterfall.cursor_row)
        if line is not None and line.span.children and not line.collapsed:
            self.collapsed.add(line.span.span_id)
            self._relayout()

    def action_expand(self) -> None:
        """Expand the subtree under the cursor, all the way down."""
        span = self._cursor_span()
        if span is not None:
            before = len(self.collapsed)
            self.collapsed -= {s.span_id for s in walk(span)}
            if len(self.collapsed) != before:
                self._relayout()

    def select_span(self, span_id: bytes) -> None:
        """Move the cursor to a span, expanding its collapsed ancestors."""
        index = self._line_index(span_id)
        if index is None:
            for root in self.roots:
                path = [s.span_id for s in walk(root)]
                if span_id in path:
                    self.collapsed.clear()  # simplest way to make it visible
                    self._relayout()
                    break
            index = self._line_index(span_id)
        if index is not None:
            self.waterfall.cursor_row = index

    def _line_index(self, span_id: bytes) -> int | None:
        for i, line in enumerate(self.waterfall.lines):
            if line.span.span_id == span_id:
                return i
        return None

    def _current_run(self):
        span = self._cursor_span()
        run = run_of(span.span_id, self.roots) if span is not None else None
        if run is None:
            runs = run_roots(self.roots)
            run = runs[0] if runs else None
        return run

    # --- drill-down ----------------------------------------------------------

    def action_slowest(self) -> None:
        """Jump to the slowest LLM or tool call of this run; again for the next slowest."""
        if self._still_loading("the slowest call is shown"):
            self._show_slowest = True
            return
        run = self._current_run()
        if run is None:
            return
        ranked = slowest_spans(run)
        if not ranked:
            self.notify("This run has no LLM or tool calls.", markup=False)
            return
        position = 0
        if self._slow_cursor and self._slow_cursor[0] == run.span_id:
            position = (self._slow_cursor[1] + 1) % len(ranked)
        self._slow_cursor = (run.span_id, position)
        span = ranked[position]
        self.select_span(span.span_id)
        share = span.duration_ns / run.duration_ns if run.duration_ns else 0
        self.notify(
            f"{'Slowest' if position == 0 else f'#{position + 1} slowest'} of {len(ranked)}: "
            f"{safe_text(span.name, 60)}  {fmt_duration(span.duration_ns)} ({share:.0%} of the run)",
            markup=False,
            timeout=4,
        )

    def action_critical_path(self) -> None:
        """Highlight the chain of work the run's end waited for (toggle)."""
        self.critical = not self.critical
        if self.critical and self._still_loading("the critical path is marked"):
            return
        if self.critical:
            self._mark_critical_path()
        else:
            self.waterfall.set_critical(frozenset())
            self._update_summary()

    def _mark_critical_path(self) -> None:
        run = self._current_run()
        if run is None:
            return
        steps = critical_path(run)
        total, top, top_ns = path_summary(steps)
        self.waterfall.set_critical(frozenset(step.span.span_id for step in steps))
        text = f"critical path {fmt_duration(total)} of {fmt_duration(run.duration_ns)}"
        if top is not None and total:
            text += f" — {safe_text(top.name, 50)} {fmt_duration(top_ns)} ({top_ns / total:.0%})"
        self._critical_text = text
        self._update_summary()

    def _error_lines(self) -> list[int]:
        return [i for i, line in enumerate(self.waterfall.lines) if line.span.is_error]

    def action_next_error(self) -> None:
        self._jump_error(+1)

    def action_previous_error(self) -> None:
        self._jump_error(-1)

    def _jump_error(self, step: int) -> None:
        if self._still_loading("errors can be walked"):
            return
        # Look through collapsed subtrees too: errors must not hide.
        if self.collapsed and not any(
            s.is_error for line in self.waterfall.lines for s in [line.span]
        ) and any(s.is_error for r in self.roots for s in walk(r)):  # fmt: skip
            self.collapsed.clear()
            self._relayout()
        errors = self._error_lines()
        if not errors:
            self.notify("No errors in this trace.", markup=False)
            return
        here = self.waterfall.cursor_row
        after = [i for i in errors if (i > here if step > 0 else i < here)]
        target = (after[0] if step > 0 else after[-1]) if after else (errors[0] if step > 0 else errors[-1])
        self.waterfall.cursor_row = target
        self.notify(f"Error {errors.index(target) + 1} of {len(errors)}", markup=False, timeout=2)

    def action_copy_summary(self) -> None:
        tui(self).copy_trace_summary(self.trace_id)

    def action_diff(self) -> None:
        """Diff this run (B) with the marked one (A)."""
        from tracetui.ui.screens.run_diff import open_diff

        open_diff(self, self.trace_id)

    def action_feedback(self, thumb: int) -> None:
        """Thumbs up / down on the LLM call under the cursor, or on the whole run for any other span."""
        from tracetui.ui.screens.feedback import ask_feedback

        span = self._cursor_span()
        run = (self.trace.root_name or self.trace.first_name) if self.trace is not None else self.trace_id.hex()[:8]
        if span is not None and span.llm_kind == "llm":
            ask_feedback(self, thumb, self.trace_id, span.span_id, f"the call {span.name} of {run}")
        else:
            ask_feedback(self, thumb, self.trace_id, None, f"the run {run}")

    def action_copy_attributes(self) -> None:
        span = self._cursor_span()
        if span is not None:
            tui(self).copy_span_attributes(self.trace_id, span.span_id)

    # --- filter ---------------------------------------------------------------

    def action_filter(self) -> None:
        self.query_one(FilterBar).open(self.span_filter.text)

    @on(FilterBar.Applied)
    def _filter_applied(self, message: FilterBar.Applied) -> None:
        self.span_filter = message.filter
        if message.filter.is_empty():
            self.matches = None
            self._relayout()
        else:
            self._match_spans(self.trace_id, message.filter)

    @on(FilterBar.Closed)
    def _filter_closed(self, _message: FilterBar.Closed) -> None:
        self.waterfall.focus()

    @work(thread=True, group="span-filter", exit_on_error=False, description="filter spans")
    @forget_worker_when_done
    def _match_spans(self, trace_id: bytes, flt: Filter) -> None:
        try:
            ids = tui(self).reader.matching_span_ids(trace_id, flt)
        except Exception as exc:
            self.post_message(LoadFailed(str(exc)))
            return
        self.post_message(SpansMatched(trace_id, flt.text, ids))

    @on(SpansMatched)
    def _spans_matched(self, message: SpansMatched) -> None:
        if message.trace_id != self.trace_id or message.text != self.span_filter.text:
            return  # a later filter or another trace won
        self.matches = message.span_ids
        self._relayout()
        total = sum(1 for r in self.roots for _ in walk(r))
        if self.partial is not None:
            total = self.partial[1]
        self.notify(f"{len(message.span_ids)} of {total} spans match", markup=False, timeout=2)

    # --- search inside the run --------------------------------------------------

    def action_search(self) -> None:
        self.query_one(SearchBar).open()

    @on(SearchBar.Changed)
    def _search_changed(self, message: SearchBar.Changed) -> None:
        self.search_text = message.text
        if message.text:
            self._run_search(move=True)
            return
        self.search_hits = set()
        self.waterfall.set_search("", frozenset())
        self.query_one(SpanDetailPane).set_search("")

    @on(SearchBar.Closed)
    def _search_closed(self, _message: SearchBar.Closed) -> None:
        self.waterfall.focus()

    def _run_search(self, move: bool) -> None:
        self._search(self.trace_id, self.search_text, self._search_index, move)

    @work(thread=True, group="search", exclusive=True, exit_on_error=False, description="search the run")
    @forget_worker_when_done
    def _search(self, trace_id: bytes, text: str, index: dict[bytes, str] | None, move: bool) -> None:
        try:
            if index is None:
                index = search_index(tui(self).reader.span_details(trace_id))
        except Exception as exc:
            self.post_message(LoadFailed(str(exc)))
            return
        self.post_message(SearchDone(trace_id, text, index, matching_spans(index, text), move))

    @on(SearchDone)
    def _search_done(self, message: SearchDone) -> None:
        if message.trace_id != self.trace_id:
            return  # another run is on screen now
        self._search_index = message.index
        if message.text != self.search_text:
            return  # a later search wins
        self.search_hits = message.hits
        self.waterfall.set_search(message.text, frozenset(message.hits))
        self.query_one(SpanDetailPane).set_search(message.text)
        if message.move and message.hits and self._cursor_span_id() not in message.hits:
            self._jump_match(+1)
        self._show_search_count()

    def _cursor_span_id(self) -> bytes | None:
        span = self._cursor_span()
        return span.span_id if span is not None else None

    def _ordered_hits(self) -> list[bytes]:
        """The matching spans in tree order (top to bottom, collapsed subtrees included)."""
        return [s.span_id for r in self.roots for s in walk(r) if s.span_id in self.search_hits]

    def _show_search_count(self) -> None:
        """'match 2 of 5 · n / N' when the cursor is on a match, else how many spans match."""
        bar = self.query_one(SearchBar)
        hits = self._ordered_hits()
        if not self.search_text:
            bar.set_count("")
        elif not hits:
            bar.set_count(Text("no span matches", style="bold"))
        else:
            here = self._cursor_span_id()
            where = f"match {hits.index(here) + 1} of {len(hits)}" if here in hits else fmt_counted(len(hits), "match")
            text = Text(where, style="bold")
            text.append("  n next · N previous", style="dim")
            bar.set_count(text)

    def action_next_match(self) -> None:
        self._jump_match(+1)

    def action_previous_match(self) -> None:
        self._jump_match(-1)

    def _jump_match(self, step: int) -> None:
        """Move to the next / previous matching span in tree order (wrapping), opening collapsed subtrees."""
        if not self.search_text:
            self.notify("No search: press / to search this run.", markup=False, timeout=3)
            return
        order = {span_id: i for i, span_id in enumerate(s.span_id for r in self.roots for s in walk(r))}
        hits = [span_id for span_id in order if span_id in self.search_hits]
        if self.matches is not None:  # the span filter (f) hides some: move between the ones shown
            hits = [span_id for span_id in hits if span_id in self.matches]
        if not hits:
            self.notify("No span matches the search.", markup=False, timeout=2)
            return
        here = self._cursor_span_id()
        position = order.get(here, -1) if here is not None else -1
        after = [h for h in hits if (order[h] > position if step > 0 else order[h] < position)]
        target = (after[0] if step > 0 else after[-1]) if after else (hits[0] if step > 0 else hits[-1])
        self.select_span(target)
        self._show_search_count()

    def action_next_trace(self) -> None:
        self._find_neighbor(self.trace_id, newer=False)

    def action_previous_trace(self) -> None:
        self._find_neighbor(self.trace_id, newer=True)

    @work(thread=True, group="neighbor", exit_on_error=False, description="find the next trace")
    @forget_worker_when_done
    def _find_neighbor(self, trace_id: bytes, newer: bool) -> None:
        found = tui(self).reader.neighbor_trace(trace_id, newer=newer, horizon=self.horizon)
        self.post_message(NeighborFound(found, newer))

    @on(NeighborFound)
    def _neighbor_found(self, message: NeighborFound) -> None:
        if message.trace_id is None:
            self.notify("No newer trace." if message.newer else "No older trace.", markup=False, timeout=2)
            return
        self.trace_id = message.trace_id
        tui(self).pin(self.trace_id)
        self.trace = None
        self.partial = None
        self.roots = []
        self.collapsed.clear()
        self._slow_cursor = None
        self._detail_for = None
        self.waterfall.cursor_row = 0
        self.reload()

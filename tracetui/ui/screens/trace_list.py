"""The home screen: the live list of traces."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Static

from tracetui.model.filter import Filter, parse
from tracetui.model.fmt import fmt_counted, safe_text
from tracetui.model.views import TraceRow
from tracetui.ui.context import tui
from tracetui.ui.lifecycle import forget_worker_when_done, set_display, unwatch_app
from tracetui.ui.marks import MARK_GLYPH, RunMark
from tracetui.ui.widgets.cursor_list import CursorList
from tracetui.ui.widgets.filter_bar import FilterBar, toggle_term
from tracetui.ui.widgets.key_footer import KeyFooter
from tracetui.ui.widgets.status_header import StatusHeader
from tracetui.ui.widgets.trace_table import WINDOW, TraceTable


@dataclass
class WindowLoaded(Message):
    """A window of trace rows read by a worker."""

    offset: int
    rows: list[TraceRow]
    total: int
    newer: int
    max_seq: int
    horizon: int | None
    filter_text: str = ""
    #: What the backend says about how it applied the filter (Reader.filter_note), shown in the banner.
    filter_note: str | None = None
    #: The filtered count stopped at FILTER_COUNT_CAP: there are at least ``total`` matches.
    capped: bool = False


#: A filtered list counts its matches up to here ("1,000+ runs match"), plus twice the offset of the rows
#: it reads, so scrolling down extends the count. Each trace is checked against its spans: for
#: ``model=... ttft>500ms`` an exact count took 2.5 s at 1M spans and over 10 s at 10M, a count of 10,000
#: matches 0.7-0.8 s, of 1,000 about 0.08 s (benchmarks/ui.py). The rows are read newest first and stop at
#: the window.
FILTER_COUNT_CAP = 1_000


@dataclass
class WindowFailed(Message):
    error: str


def _port(address: str | None, default: int) -> str:
    return address.rsplit(":", 1)[-1] if address and ":" in address else str(default)


def empty_state_text(listen: str | None, http: str | None = None, command: str = "tracetui") -> Text:
    """What to do when nothing has arrived yet: both endpoints, which SDKs use which, and a demo that runs.

    The SDK defaults (checked in each project's docs/source, December 2026): the Python
    SDK and .NET export OTLP over gRPC to localhost:4317 (.NET Framework builds use
    HTTP); Node's @opentelemetry/sdk-node and the Java agent use OTLP/HTTP protobuf on
    localhost:4318; in Go the package decides (otlptracegrpc: 4317, otlptracehttp: 4318).
    ``command`` is how this tracetui runs from any directory (cli_common.command_name).
    Fits 80x24.
    """
    grpc_port, http_port = _port(listen, 4317), _port(http, 4318)
    listen = listen or "localhost:4317"
    http = http or f"{listen.rsplit(':', 1)[0]}:{http_port}"
    text = Text(justify="left")
    text.append("Waiting for traces", style="bold")
    text.append(f": gRPC {safe_text(listen)} · OTLP/HTTP {safe_text(http)}\n\n")
    text.append("Point your app's OpenTelemetry exporter here, by its default protocol:\n")
    text.append("  Python SDK, .NET, Go otlptracegrpc: gRPC\n")
    text.append(f"    export OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:{safe_text(grpc_port)}\n", style="bold")
    text.append("  Node (@opentelemetry/sdk-node), Java agent, Go otlptracehttp: HTTP\n")
    text.append(f"    export OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:{safe_text(http_port)}\n\n", style="bold")
    text.append("See it work now, in another terminal:\n")
    endpoint = "" if grpc_port == "4317" else f" --endpoint http://127.0.0.1:{safe_text(grpc_port)}"
    text.append(f"  {safe_text(command)} demo{endpoint}", style="bold")
    return text


class TraceListScreen(Screen):
    """Newest traces first; follows new arrivals until the user moves away from the top."""

    BINDINGS = [
        Binding("enter", "open_trace", "Open", show=True, tooltip="open the trace under the cursor"),
        Binding("s", "open_slowest", "Slowest", show=True, tooltip="open the run at its slowest LLM or tool call"),
        Binding(
            "g",
            "follow",
            "Top / follow",
            show=True,
            key_display="g",
            tooltip="back to the newest traces and follow new arrivals",
        ),
        Binding(
            "slash",
            "filter",
            "Filter",
            show=True,
            key_display="/",
            tooltip="filter: free text and field op value terms, e.g. model=gpt-4o duration>2s",
        ),
        Binding(
            "v",
            "sessions",
            "Sessions",
            show=True,
            tooltip="runs grouped by conversation (session id): totals, worst groundedness, errors; Enter: its runs",
        ),
        Binding(
            "y",
            "copy_summary",
            "Copy summary",
            show=False,
            tooltip="copy the run's summary (tree, timings, cost, prompts) to the clipboard",
        ),
        Binding(
            "space",
            "toggle_mark",
            "Mark",
            show=True,
            key_display="space",
            tooltip="mark (or unmark) the run under the cursor as run A of a diff; one mark at a time",
        ),
        Binding(
            "d",
            "diff",
            "Diff",
            show=True,
            tooltip="diff the run under the cursor (B) with the marked run (A)",
        ),
        Binding(
            "plus",
            "feedback(1)",
            "👍",
            show=False,
            key_display="+",
            tooltip="thumbs up on the run under the cursor, with an optional note",
        ),
        Binding(
            "minus",
            "feedback(-1)",
            "👎",
            show=False,
            key_display="-",
            tooltip="thumbs down on the run under the cursor, with an optional note",
        ),
        Binding(
            "X",
            "export_cohort",
            "Export cohort",
            show=False,
            tooltip="write the LLM calls matching the filter (e.g. groundedness<0.5) as a regression set (JSON lines)",
        ),
        Binding("x", "toggle_errors", "Errors only", show=False, tooltip="quick toggle: runs with errors only"),
        Binding("m", "toggle_llm", "LLM only", show=False, tooltip="quick toggle: runs with LLM calls only"),
        Binding(
            "w", "toggle_slow", "Slow only", show=False, tooltip="quick toggle: runs slower than the slow threshold"
        ),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.horizon: int | None = None  # None: following the newest traces
        self.filter: Filter = parse("")
        self.newer = 0
        self._max_seq = 0
        self._loading = False
        self._pending_offset: int | None = None
        self._banner_text: Text | None = None
        #: The rows drawn belong to an older horizon or filter (after g or a new filter, until the reload lands).
        self._stale = False
        #: Reader.filter_note for the filter on screen (a backend that decides some terms on recent runs only).
        self._filter_note: str | None = None
        self._count_capped = False
        #: Enter (False) or s (True) pressed while the rows were stale: opened once the right rows are in.
        self._open_pending: bool | None = None

    def compose(self) -> ComposeResult:
        app = tui(self)
        yield StatusHeader(app.listen, id="status")
        yield Static("", id="new-banner")
        yield TraceTable(id="traces")
        yield Static(empty_state_text(app.listen, app.http, app.command), id="empty")
        yield FilterBar(id="filter-bar")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.watch(self.app, "data_version", self._data_changed, init=False)
        self.watch(self.app, "run_mark", self._mark_changed, init=False)
        self.query_one("#new-banner").display = False
        self.request_window(0)

    def on_unmount(self) -> None:
        unwatch_app(self)

    @property
    def table(self) -> TraceTable:
        return self.query_one(TraceTable)

    @property
    def following(self) -> bool:
        return self.horizon is None

    # --- loading -------------------------------------------------------------

    def _data_changed(self, _version: int) -> None:
        self.request_window(self._window_offset())

    def _window_offset(self) -> int:
        return max(0, self.table.cursor_row - WINDOW // 2)

    def request_window(self, offset: int) -> None:
        """Load rows around ``offset`` (one query in flight; the latest request wins)."""
        if self._loading:
            self._pending_offset = offset
            return
        self._loading = True
        self._load_window(offset, self.horizon, self.filter)

    @work(thread=True, group="trace-list", exit_on_error=False, description="load trace list window")
    @forget_worker_when_done
    def _load_window(self, offset: int, horizon: int | None, flt: Filter) -> None:
        reader = tui(self).reader
        cap = None if flt.is_empty() else FILTER_COUNT_CAP + 2 * offset
        try:
            if horizon is None:
                max_seq = reader.max_seq()
                total, newer = reader.count_traces(None, flt, cap), 0
            else:
                max_seq = horizon
                total, newer = reader.count_traces(horizon, flt, cap), reader.count_newer(horizon, flt)
            rows = reader.traces(offset, WINDOW, horizon, flt)
            note = None if flt.is_empty() else reader.filter_note(flt)
        except Exception as exc:  # a locked or damaged file: say so, keep drawing
            self.post_message(WindowFailed(str(exc)))
            return
        capped = cap is not None and total >= cap
        self.post_message(WindowLoaded(offset, rows, total, newer, max_seq, horizon, flt.text, note, capped))

    @on(WindowFailed)
    def _window_failed(self, message: WindowFailed) -> None:
        self._loading = False
        self.notify(f"Could not read traces: {message.error}", severity="error", markup=False)

    @on(WindowLoaded)
    def _window_loaded(self, message: WindowLoaded) -> None:
        self._loading = False
        if message.horizon == self.horizon and message.filter_text == self.filter.text:
            self._stale = False
            if self.following:
                self._max_seq = message.max_seq
            self.newer = message.newer
            self._filter_note = message.filter_note
            self._count_capped = message.capped
            table = self.table
            table.set_window(message.offset, message.rows, message.total)
            self._update_banner()
            empty = message.total == 0 and self.following and self.filter.is_empty()
            set_display(self.query_one("#empty"), empty)
            set_display(table, not empty)
            tui(self).startup_done()
            if self._open_pending is not None:
                show_slowest, self._open_pending = self._open_pending, None
                self.action_open_trace(show_slowest)
        if (
            self._pending_offset is not None
            or message.horizon != self.horizon
            or message.filter_text != self.filter.text
        ):
            offset = self._pending_offset if self._pending_offset is not None else self._window_offset()
            self._pending_offset = None
            self.request_window(offset)

    @on(TraceTable.WindowNeeded)
    def _window_needed(self, message: TraceTable.WindowNeeded) -> None:
        self.request_window(message.offset)

    # --- follow / freeze -----------------------------------------------------

    @on(CursorList.Highlighted, "#traces")
    def _cursor_moved(self, message: CursorList.Highlighted) -> None:
        if message.row == 0 and not self.following:
            self.action_follow()
        elif message.row > 0 and self.following:
            # The user moved away from the head: keep their rows still and count arrivals.
            self.horizon = self._max_seq
            self.newer = 0

    def action_follow(self) -> None:
        self._stale = self._stale or not self.following
        self.horizon = None
        self.newer = 0
        self.table.cursor_row = 0
        self._update_banner()
        self.request_window(0)

    def _update_banner(self) -> None:
        """The filter / "N new" line above the list.

        Called on every data change, so it costs a repaint of one line, not a layout:
        the banner is one row high whatever it says (app.tcss), so its text is
        replaced with ``layout=False``; only showing or hiding it moves the list.
        """
        banner = self.query_one("#new-banner", Static)
        text = Text()
        if not self.filter.is_empty():
            text.append(f" filter: {safe_text(self.filter.text, 80)}", style="bold")
            count = self.table.row_count
            if self._count_capped:
                counted = f"{count:,}+ runs match, the newest listed"
            else:
                counted = f"{fmt_counted(count, 'run')} {'matches' if count == 1 else 'match'}"
            text.append(f"  ({counted}; / to edit)", style="dim")
            if self._filter_note:
                text.append(f"  {safe_text(self._filter_note, 120)}", style="yellow")
        if self.newer and not self.following:
            text.append(f" ↑ {self.newer:,} new — press g to jump to the newest", style="bold")
        mark = tui(self).run_mark
        if mark is not None:
            text.append(f" {MARK_GLYPH} marked: {mark.label()}", style="bold")
            text.append("  (d: diff a run with it)", style="dim")
        if text != self._banner_text:
            self._banner_text = text
            banner.update(text, layout=False)
        set_display(banner, bool(text.plain))

    # --- mark and diff -------------------------------------------------------

    def _mark_changed(self, _mark: RunMark | None) -> None:
        self.table.clear_cache()
        self._update_banner()

    def action_toggle_mark(self) -> None:
        """Mark the run under the cursor as run A of a diff (it replaces any other mark); again: unmark it."""
        row = self.table.row_at(self.table.cursor_row)
        if row is None:
            return
        app = tui(self)
        if app.run_mark is not None and app.run_mark.trace_id == row.trace_id:
            app.run_mark = None
            self.notify("Mark removed.", markup=False, timeout=2)
        else:
            app.run_mark = RunMark(row.trace_id, row.name)
            self.notify(
                f"Marked {app.run_mark.label()} as run A: open another run and press d to diff them.",
                markup=False,
                timeout=4,
            )

    def action_diff(self) -> None:
        """Diff the run under the cursor (B) with the marked run (A)."""
        row = self.table.row_at(self.table.cursor_row)
        if row is not None:
            from tracetui.ui.screens.run_diff import open_diff

            open_diff(self, row.trace_id)

    # --- filtering -----------------------------------------------------------

    def action_filter(self) -> None:
        self.query_one(FilterBar).open(self.filter.text)

    @on(FilterBar.Applied)
    def _filter_applied(self, message: FilterBar.Applied) -> None:
        if message.filter.text == self.filter.text:
            return
        self.filter = message.filter
        tui(self).filter_text = message.text
        self._stale = True
        self.horizon = None
        self.newer = 0
        self.table.cursor_row = 0
        self.request_window(0)

    @on(FilterBar.Closed)
    def _filter_closed(self, _message: FilterBar.Closed) -> None:
        self.table.focus()
        self._update_banner()

    def _toggle(self, term: str) -> None:
        self.query_one(FilterBar).set_text(toggle_term(self.filter.text, term))

    def action_toggle_errors(self) -> None:
        self._toggle("status=error")

    def action_toggle_llm(self) -> None:
        self._toggle("kind=llm")

    def action_toggle_slow(self) -> None:
        self._toggle(f"duration>{getattr(self.app, 'slow_threshold', '5s')}")

    # --- opening -------------------------------------------------------------

    @on(CursorList.Selected, "#traces")
    def _selected(self, message: CursorList.Selected) -> None:
        self.action_open_trace()

    def action_open_trace(self, show_slowest: bool = False) -> None:
        """Open the run under the cursor; right after g or a new filter, the one that will be there.

        `g` moves the cursor to the top at once, but the rows of the newest runs arrive
        from a worker a moment later: until then the top row is still the run that was
        newest when the list stopped following. Enter pressed in between waits for them.
        """
        if self._stale:
            self._open_pending = show_slowest
            return
        row = self.table.row_at(self.table.cursor_row)
        if row is not None:
            from tracetui.ui.screens.trace_view import TraceScreen

            self.app.push_screen(TraceScreen(row.trace_id, show_slowest=show_slowest, horizon=self.horizon))

    def action_feedback(self, thumb: int) -> None:
        from tracetui.ui.screens.feedback import ask_feedback

        row = self.table.row_at(self.table.cursor_row)
        if row is not None:
            ask_feedback(self, thumb, row.trace_id, None, f"the run {row.root_name or row.first_name}")

    def action_export_cohort(self) -> None:
        """The LLM calls matching the list's filter, as a regression set in the current directory."""
        from tracetui.query.cohort import default_path

        if self.filter.is_empty():
            self.notify("Filter the list first (/, e.g. groundedness<0.5): X exports the calls that match.",
                        severity="warning", markup=False, timeout=5)  # fmt: skip
            return
        self._export_cohort(self.filter, default_path())

    @work(thread=True, group="cohort-export", exit_on_error=False, description="export a cohort")
    @forget_worker_when_done
    def _export_cohort(self, flt: Filter, path: str) -> None:
        from tracetui.query.cohort import write_cohort
        from tracetui.query.scrub import policy_note

        try:
            count = write_cohort(tui(self).reader, path, flt)
            note = policy_note(tui(self).reader.content_policy())
        except Exception as exc:
            self.app.call_from_thread(self.notify, f"Could not export: {exc}", severity="error", markup=False)
            return
        self.app.call_from_thread(
            self.notify,
            f"Wrote {count} call{'s' if count != 1 else ''} matching {flt.text} to {path} (readable by you only). "
            f"{note}".rstrip(),
            markup=False,
            timeout=8,
        )

    def action_copy_summary(self) -> None:
        row = self.table.row_at(self.table.cursor_row)
        if row is not None:
            tui(self).copy_trace_summary(row.trace_id)

    def action_sessions(self) -> None:
        from tracetui.ui.screens.sessions import SessionsScreen

        self.app.push_screen(SessionsScreen())

    def action_open_slowest(self) -> None:
        """Open the selected run at its slowest LLM or tool call."""
        self.action_open_trace(show_slowest=True)

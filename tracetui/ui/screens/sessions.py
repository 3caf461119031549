"""`v`: runs grouped by conversation, and one conversation's runs in the order they happened.

A chat agent answers one question per run; what the user lived through is the
conversation. The sessions screen lists conversations (runs sharing a session /
conversation id, as tracetui.llm.semconv normalizes every family's name for it)
with their totals and the worst groundedness of any run; Enter shows one
conversation's runs oldest first, and Enter there opens a run's trace view.
Both follow new data while open.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Static

from tracetui.model.fmt import fmt_cost, fmt_count, fmt_counted, fmt_duration, join_to_fit, safe_text
from tracetui.model.views import SessionRow, TraceRow
from tracetui.query.sessions import DEFAULT_LIMIT, session_row
from tracetui.ui.context import tui
from tracetui.ui.lifecycle import forget_worker_when_done, set_display, unwatch_app
from tracetui.ui.widgets.cursor_list import CursorList
from tracetui.ui.widgets.key_footer import KeyFooter
from tracetui.ui.widgets.session_table import SessionTable
from tracetui.ui.widgets.status_header import StatusHeader
from tracetui.ui.widgets.trace_table import TraceTable

#: The attributes a session id is read from, as the empty screen names them (the first few of semconv's list).
SESSION_KEYS_HINT = (
    "gen_ai.conversation.id, session.id, langfuse.session.id, traceloop…session_id, Vercel metadata.sessionId"
)


@dataclass
class SessionsLoaded(Message):
    rows: list[SessionRow]


@dataclass
class RunsLoaded(Message):
    session_id: str
    runs: list[TraceRow]


@dataclass
class SessionsFailed(Message):
    error: str


def session_summary(row: SessionRow, threshold: float, width: int, note: str = "") -> str:
    """One line about a conversation, fitted to ``width``: runs, time, tokens, cost, groundedness, errors
    (and ``note``, the first to go)."""
    grounded = ""
    if row.groundedness is not None:
        grounded = f"worst groundedness {row.groundedness:.2f}" + (" ✗" if row.groundedness < threshold else "")
    cost = fmt_cost(row.cost_usd) if row.cost_usd is not None else ""
    if cost and row.cost_incomplete:
        cost += " (incomplete)"
    parts = [
        (0, f"session {safe_text(row.session_id, 60)}"),
        (0, fmt_counted(row.runs, "run")),
        (1, f"{fmt_duration(row.duration_ns)} in runs"),
        (3, f"{fmt_count(row.tokens)} tokens" if row.tokens else ""),
        (1, cost),
        (2, grounded),
        (0, fmt_counted(row.errors, "error") if row.errors else ""),
        (4, note),
    ]
    return join_to_fit(parts, width)


class _Followed(Screen):
    """A screen that reloads what it shows when new data is committed (one load in flight)."""

    def __init__(self) -> None:
        super().__init__()
        self._loading = False
        self._reload_pending = False

    def on_mount(self) -> None:
        self.watch(self.app, "data_version", lambda _version: self.reload(), init=False)
        self.reload()

    def on_unmount(self) -> None:
        unwatch_app(self)

    def reload(self) -> None:
        if self._loading:
            self._reload_pending = True
            return
        self._loading = True
        self._read()

    def _read(self) -> None:
        """Start the thread worker that reads what the screen shows (it posts a message when done)."""
        raise NotImplementedError

    def _loaded(self) -> None:
        self._loading = False
        if self._reload_pending:
            self._reload_pending = False
            self.reload()

    @on(SessionsFailed)
    def _failed(self, message: SessionsFailed) -> None:
        self._loaded()
        self.notify(f"Could not read sessions: {message.error}", severity="error", markup=False)

    def action_back(self) -> None:
        self.app.pop_screen()


class SessionsScreen(_Followed):
    """Every conversation, the most recently active first."""

    BINDINGS = [
        Binding("escape", "back", "Back", show=True, tooltip="back to the trace list"),
        Binding("enter", "open_session", "Open", show=True, tooltip="the session's runs, in the order they started"),
    ]

    def compose(self) -> ComposeResult:
        app = tui(self)
        yield StatusHeader(app.listen, id="status")
        yield Static("", id="sessions-title")
        yield SessionTable(id="sessions")
        yield Static("", id="sessions-empty")
        yield KeyFooter()

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one(SessionTable).focus()

    def _read(self) -> None:
        self._read_sessions()

    @work(thread=True, group="sessions", exit_on_error=False, description="load sessions")
    @forget_worker_when_done
    def _read_sessions(self) -> None:
        try:
            rows = tui(self).reader.sessions(DEFAULT_LIMIT)
        except Exception as exc:
            self.post_message(SessionsFailed(str(exc)))
            return
        self.post_message(SessionsLoaded(rows))

    @on(SessionsLoaded)
    def _sessions_loaded(self, message: SessionsLoaded) -> None:
        self._loaded()
        table = self.query_one(SessionTable)
        table.set_rows(message.rows)
        self._update_title()
        set_display(table, bool(message.rows))
        empty = self.query_one("#sessions-empty", Static)
        set_display(empty, not message.rows)
        if not message.rows:
            text = Text("No sessions yet.", style="bold")
            text.append(f"\n\nRuns are grouped by their session / conversation id: {SESSION_KEYS_HINT}.")
            text.append("\nRuns without one are in the trace list only.")
            empty.update(text)

    def _update_title(self) -> None:
        rows = self.query_one(SessionTable).rows
        runs = sum(r.runs for r in rows)
        text = f" Sessions: {fmt_counted(len(rows), 'conversation')}, {fmt_counted(runs, 'run')}"
        if len(rows) >= DEFAULT_LIMIT:
            text += f" (the {DEFAULT_LIMIT:,} most recently active)"
        self.query_one("#sessions-title", Static).update(Text(text + " · most recent first · Enter: its runs"))

    @on(CursorList.Selected, "#sessions")
    def _selected(self, _message: CursorList.Selected) -> None:
        self.action_open_session()

    def action_open_session(self) -> None:
        table = self.query_one(SessionTable)
        row = table.row_at(table.cursor_row)
        if row is not None:
            self.app.push_screen(SessionRunsScreen(row.session_id))


class SessionRunsScreen(_Followed):
    """One conversation: its totals, then its runs oldest first (Enter opens one)."""

    BINDINGS = [
        Binding("escape", "back", "Back", show=True, tooltip="back to the sessions"),
        Binding("enter", "open_trace", "Open", show=True, tooltip="open the run under the cursor"),
    ]

    def __init__(self, session_id: str) -> None:
        super().__init__()
        self.session_id = session_id
        self.session: SessionRow | None = None

    def compose(self) -> ComposeResult:
        app = tui(self)
        yield StatusHeader(app.listen, id="status")
        yield Static(Text(f" session {safe_text(self.session_id, 60)}"), id="session-summary")
        yield TraceTable(id="session-runs")
        yield KeyFooter()

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one(TraceTable).focus()

    def _read(self) -> None:
        self._read_runs()

    @work(thread=True, group="session-runs", exit_on_error=False, description="load a session's runs")
    @forget_worker_when_done
    def _read_runs(self) -> None:
        try:
            runs = tui(self).reader.session_runs(self.session_id)
        except Exception as exc:
            self.post_message(SessionsFailed(str(exc)))
            return
        self.post_message(RunsLoaded(self.session_id, runs))

    @on(RunsLoaded)
    def _runs_loaded(self, message: RunsLoaded) -> None:
        self._loaded()
        table = self.query_one(TraceTable)
        table.set_window(0, message.runs, len(message.runs))
        self.session = session_row(self.session_id, message.runs) if message.runs else None
        self._update_summary()

    def _update_summary(self) -> None:
        width = max(20, self.size.width - 2)
        if self.session is None:
            text = f"session {safe_text(self.session_id, 60)}: no runs left (retention removed them)"
        else:
            text = session_summary(self.session, tui(self).threshold, width, "runs oldest first")
        self.query_one("#session-summary", Static).update(Text(" " + text))

    def on_resize(self) -> None:
        self._update_summary()

    @on(CursorList.Selected, "#session-runs")
    def _selected(self, _message: CursorList.Selected) -> None:
        self.action_open_trace()

    def action_open_trace(self) -> None:
        table = self.query_one(TraceTable)
        row = table.row_at(table.cursor_row)
        if row is not None:
            from tracetui.ui.screens.trace_view import TraceScreen

            self.app.push_screen(TraceScreen(row.trace_id))

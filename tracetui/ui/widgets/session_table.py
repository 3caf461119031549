"""The sessions view's list: one row per conversation, the most recently active first.

A session list is short next to the trace list (one row per conversation, not per
run), so the widget holds every row it is given; its columns are fitted to the
width the way the trace list's are (``trace_table.layout``).
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from tracetui.model.fmt import fmt_clock, fmt_cost, fmt_count, fmt_duration, safe_text, short_name
from tracetui.model.views import SessionRow
from tracetui.ui.context import tui
from tracetui.ui.widgets.cursor_list import CursorList, pad
from tracetui.ui.widgets.trace_table import Column, layout

#: At 80 columns: last run, session (ids are long: conv_ and 16 hex digits, UUIDs), runs, duration, cost,
#: groundedness and errors; from 120 also tokens, the first run's name and the service.
SESSION_COLUMNS: tuple[Column, ...] = (
    Column("last", "LAST RUN", 11, priority=1),
    Column("session", "SESSION", 20, priority=0, grow=1, max_width=40),
    Column("runs", "RUNS", 4, right=True, priority=1),
    Column("duration", "DURATION", 8, right=True, priority=2),
    Column("tokens", "TOKENS", 6, right=True, priority=5),
    Column("cost", "COST", 10, right=True, priority=2),
    Column("grounded", "GROUNDED", 8, priority=2),
    Column("errors", "ERR", 3, right=True, priority=1),
    Column("first", "FIRST RUN", 14, priority=4, grow=3, max_width=60),
    Column("service", "SERVICE", 12, priority=6, grow=1, max_width=30),
)


def session_cell(column: Column, row: SessionRow, now_ns: int | None, threshold: float, width: int) -> str:
    key = column.key
    if key == "last":
        return fmt_clock(row.last_start_ns, now_ns)
    if key == "session":
        return safe_text(row.session_id, 200)
    if key == "runs":
        return str(row.runs)
    if key == "duration":
        return fmt_duration(row.duration_ns)
    if key == "tokens":
        return fmt_count(row.tokens) if row.tokens else ""
    if key == "cost":
        if row.cost_usd is None:
            return "unpriced" if row.unpriced_calls else ""
        return fmt_cost(row.cost_usd) + ("+" if row.cost_incomplete else "")
    if key == "grounded":
        if row.groundedness is None:
            return ""
        return f"{'●' if row.groundedness >= threshold else '✗'} {row.groundedness:.2f}"
    if key == "errors":
        return str(row.errors) if row.errors else ""
    if key == "first":
        return short_name(safe_text(row.first_name, 200), width)
    if key == "service":
        return safe_text(row.service, 60)
    return ""


class SessionTable(CursorList):
    """Line-API list of sessions (see module docstring)."""

    HEADER_LINES = 1
    COMPONENT_CLASSES = {
        "session-table--header",
        "session-table--cursor",
        "session-table--error",
        "session-table--dim",
        "session-table--good",
    }
    DEFAULT_CSS = """
    SessionTable > .session-table--header { text-style: bold; color: $text-muted; background: $boost; }
    SessionTable > .session-table--cursor { background: $block-cursor-blurred-background; }
    SessionTable:focus > .session-table--cursor {
        background: $block-cursor-background; color: $block-cursor-foreground;
    }
    SessionTable > .session-table--error { color: $error; }
    SessionTable > .session-table--dim { color: $text-muted; }
    SessionTable > .session-table--good { color: $success; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: list[SessionRow] = []

    def set_rows(self, rows: list[SessionRow]) -> None:
        """Replace the rows, keeping the cursor on the same session when it is still listed."""
        here = self.row_at(self.cursor_row)
        self.rows = rows
        self.set_row_count(len(rows))
        if here is not None:
            for i, row in enumerate(rows):
                if row.session_id == here.session_id:
                    self.cursor_row = i
                    break

    def row_at(self, index: int) -> SessionRow | None:
        return self.rows[index] if 0 <= index < len(self.rows) else None

    def row_key(self, index: int) -> object:
        return (index, self.rows[index]) if index < len(self.rows) else (index, None)

    def render_header(self, line: int, width: int) -> Strip:
        style = self.component_style("session-table--header")
        segments = [Segment(" ", style)]
        for column, w in layout(width - 1, SESSION_COLUMNS, "session"):
            segments.append(pad(column.title, w, style, right=column.right))
            segments.append(Segment(" ", style))
        return Strip(segments).crop_extend(0, width, style)

    def render_row(self, index: int, width: int, cursor: bool) -> Strip:
        base = self.base_style
        if cursor:
            base = base + self.component_style("session-table--cursor")
        row = self.rows[index]
        app = tui(self)
        now_ns, threshold = app.clock(), app.threshold
        error = self.component_style("session-table--error", partial=True)
        segments = [Segment(" ", base)]
        for column, w in layout(width - 1, SESSION_COLUMNS, "session"):
            style = base
            if column.key == "errors" and row.errors:
                style = base + error + Style(bold=True)
            elif column.key in ("last", "service", "first") or (column.key == "cost" and row.cost_usd is None):
                style = base + self.component_style("session-table--dim", partial=True)
            elif column.key == "grounded" and row.groundedness is not None:
                failing = row.groundedness < threshold
                style = base + (error if failing else self.component_style("session-table--good", partial=True))
            segments.append(pad(session_cell(column, row, now_ns, threshold, w), w, style, right=column.right))
            segments.append(Segment(" ", base))
        return Strip(segments)

"""The live trace list: one row per trace, newest first.

The widget never holds the whole list: it holds a window of rows around what
is visible and asks its screen (``WindowNeeded``) for another window when the
cursor or the scroll position leaves it. Memory therefore stays flat however
many traces the database has.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

from rich.segment import Segment
from rich.style import Style
from textual.message import Message
from textual.strip import Strip

from tracetui.model.fmt import fit, fmt_clock, fmt_cost, fmt_count, fmt_duration, safe_text, short_name
from tracetui.model.views import TraceRow
from tracetui.ui.context import tui
from tracetui.ui.marks import MARK_GLYPH
from tracetui.ui.widgets.cursor_list import CursorList, pad

#: Rows fetched per window; several screens' worth.
WINDOW = 200


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    #: Cells the column needs; for a flexible column, the least it is given.
    width: int
    right: bool = False
    #: Columns are dropped highest number first when the terminal is too narrow (the run is never dropped).
    priority: int = 5
    #: Share of the spare width a flexible column takes (0: fixed width).
    grow: int = 0
    #: Widest a flexible column grows. Past every column's widest, the rest of the line stays blank:
    #: a row reads better compact at the left than stretched across 250 cells.
    max_width: int = 0


#: Designed for three widths (the layout tests snapshot them): at 80 columns time, run, duration, cost,
#: groundedness and errors; from 120 also service, LLM calls, tokens and the slowest call; spans from 122.
#: The spare width is shared by the columns whose text gets cut (run, service, slowest), not given to RUN alone.
COLUMNS: tuple[Column, ...] = (
    Column("time", "TIME", 11, priority=1),
    Column("run", "RUN", 24, priority=0, grow=3, max_width=72),
    Column("service", "SERVICE", 12, priority=6, grow=1, max_width=40),
    Column("duration", "DURATION", 8, right=True, priority=1),
    Column("spans", "SPANS", 5, right=True, priority=9),
    Column("llm", "LLM", 3, right=True, priority=7),
    Column("tokens", "TOKENS", 6, right=True, priority=8),
    Column("cost", "COST", 10, right=True, priority=2),  # fmt_cost is at most 10 cells
    Column("grounded", "GROUNDED", 11, priority=2),
    Column("slowest", "SLOWEST", 18, priority=5, grow=2, max_width=48),
    Column("errors", "ERR", 3, right=True, priority=1),
)


def _needed(columns: list[Column]) -> int:
    return sum(c.width + 1 for c in columns)


def _share(columns: list[Column], spare: int) -> dict[str, int]:
    """Spare cells for each flexible column, by its ``grow`` share, capped at its ``max_width``."""
    extra = {c.key: 0 for c in columns if c.grow}
    open_ = [c for c in columns if c.grow]
    while spare > 0 and open_:
        weight = sum(c.grow for c in open_)
        given = 0
        for c in open_:
            want = spare * c.grow // weight or 1
            if c.max_width:
                want = min(want, c.max_width - c.width - extra[c.key])
            want = min(want, spare - given)
            extra[c.key] += want
            given += want
        spare -= given
        open_ = [c for c in open_ if not c.max_width or c.width + extra[c.key] < c.max_width]
        if not given:
            break
    return extra


@lru_cache(maxsize=32)
def layout(width: int, columns: tuple[Column, ...] = COLUMNS, keep: str = "run") -> tuple[tuple[Column, int], ...]:
    """Which of ``columns`` fit in ``width`` cells and how wide each is (cached: drawn for every row).

    Columns go highest ``priority`` first; the one named ``keep`` never goes.
    """
    shown = list(columns)
    while _needed(shown) > width and len(shown) > 2:
        shown.remove(max((c for c in shown if c.key != keep), key=lambda c: c.priority))
    extra = _share(shown, max(0, width - _needed(shown)))
    return tuple((c, c.width + extra.get(c.key, 0)) for c in shown)


def cell_text(
    column: Column, row: TraceRow, now_ns: int | None = None, threshold: float = 0.5, width: int = 200
) -> str:
    key = column.key
    if key == "time":
        return fmt_clock(row.start_ns, now_ns)
    if key == "run":
        if row.has_root:
            return short_name(safe_text(row.name, 200), width)
        return f"⋯ no root yet · {short_name(safe_text(row.name, 200), width - 16)}"
    if key == "service":
        return safe_text(row.service, 60)
    if key == "duration":
        return fmt_duration(row.duration_ns)
    if key == "spans":
        return fmt_count(row.span_count)
    if key == "llm":
        return str(row.llm_calls) if row.llm_calls else ""
    if key == "tokens":
        total = row.input_tokens + row.output_tokens
        return fmt_count(total) if total else ""
    if key == "cost":
        if row.cost_usd is None:  # "?": calls ran, but none reported the token counts a cost needs
            return "unpriced" if row.unpriced_calls else "?" if row.tokenless_calls else ""
        return fmt_cost(row.cost_usd) + ("+" if row.cost_incomplete else "")
    if key == "grounded":
        parts = []
        if row.groundedness is not None:
            mark = "≈" if row.groundedness_estimated else " "  # an estimate (the lexical judge), never a judged score
            parts.append(f"{'●' if row.groundedness >= threshold else '✗'}{mark}{row.groundedness:.2f}")
        if row.evals_total:
            parts.append(f"{row.evals_passed}/{row.evals_total}")
        return " ".join(parts)
    if key == "slowest":
        if not row.slowest_name or not row.slowest_ns:
            return ""
        share = f" {row.slowest_ns / row.duration_ns:.0%}" if row.duration_ns else ""
        name = short_name(safe_text(row.slowest_name, 60), width - len(share))
        return f"{fit(name, width - len(share))}{share}"  # the share stays visible; the name is cut
    if key == "errors":
        return str(row.error_count) if row.error_count else ""
    return ""


class TraceTable(CursorList):
    """Line-API list of traces (see module docstring)."""

    HEADER_LINES = 1
    COMPONENT_CLASSES = {
        "trace-table--header",
        "trace-table--cursor",
        "trace-table--error",
        "trace-table--dim",
        "trace-table--loading",
        "trace-table--good",
        "trace-table--mark",
    }
    DEFAULT_CSS = """
    TraceTable > .trace-table--header { text-style: bold; color: $text-muted; background: $boost; }
    TraceTable > .trace-table--cursor { background: $block-cursor-blurred-background; }
    TraceTable:focus > .trace-table--cursor { background: $block-cursor-background; color: $block-cursor-foreground; }
    TraceTable > .trace-table--error { color: $error; }
    TraceTable > .trace-table--dim { color: $text-muted; }
    TraceTable > .trace-table--loading { color: $text-disabled; }
    TraceTable > .trace-table--good { color: $success; }
    TraceTable > .trace-table--mark { color: $accent; text-style: bold; }
    """

    class WindowNeeded(Message):
        """Rows around ``offset`` are not loaded yet."""

        def __init__(self, offset: int) -> None:
            super().__init__()
            self.offset = offset

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._rows: dict[int, TraceRow] = {}
        self._loaded = range(0)
        self._requested: int | None = None
        #: The local date the cached lines were drawn on (the TIME column shows the date for other days).
        self._day: tuple[int, int] | None = None

    # --- data ----------------------------------------------------------------

    def set_window(self, offset: int, rows: list[TraceRow], total: int) -> None:
        """Replace the loaded window (called by the screen, on the event loop).

        The lines already drawn are kept (``row_key`` covers everything a row shows),
        and the list is not repainted at all when the rows on screen did not change:
        the usual case when the user has scrolled away from the newest traces and
        new ones keep arriving above.
        """
        before = self._visible_keys()
        old_total = self.row_count
        self._rows = {offset + i: row for i, row in enumerate(rows)}
        self._loaded = range(offset, offset + len(rows))
        self._requested = None
        now = time.localtime(tui(self).clock() / 1e9)
        today = (now.tm_year, now.tm_yday)
        same_day = today == self._day
        self._day = today
        self.set_row_count(
            total,
            keep_cache=same_day,
            repaint=not same_day or total != old_total or self._visible_keys() != before,
        )

    def _visible_keys(self) -> list[object]:
        top = self.scroll_offset.y
        return [self.row_key(i) for i in range(top, min(self.row_count, top + self.body_height))]

    def row_at(self, index: int) -> TraceRow | None:
        return self._rows.get(index)

    @property
    def loaded_range(self) -> range:
        return self._loaded

    def row_key(self, index: int) -> object:
        row = self._rows.get(index)
        if row is None:
            return (index, None)
        # Everything a row shows: lines are reused across window reloads.
        return (index, row.trace_id, row.trace_id == self._marked_id(), row.span_count, row.start_ns, row.end_ns, row.error_count, row.root_name,
                row.first_name, row.service, row.llm_calls, row.input_tokens, row.output_tokens, row.cost_usd,
                row.unpriced_calls, row.tokenless_calls, row.groundedness, row.groundedness_estimated, row.evals_passed, row.evals_total, row.slowest_name,
                row.slowest_ns)  # fmt: skip

    def _marked_id(self) -> bytes | None:
        mark = tui(self).run_mark
        return mark.trace_id if mark is not None else None

    def _need(self, index: int) -> None:
        offset = max(0, index - WINDOW // 2)
        if self._requested != offset:
            self._requested = offset
            self.post_message(self.WindowNeeded(offset))

    def watch_cursor_row(self, old: int, new: int) -> None:
        super().watch_cursor_row(old, new)
        margin = self.body_height
        wanted = range(max(0, new - margin), min(self.row_count, new + margin + 1))
        window = self.loaded_range
        if wanted and (wanted.start < window.start or wanted.stop > window.stop):
            self._need(new)

    # --- drawing -------------------------------------------------------------

    def render_header(self, line: int, width: int) -> Strip:
        style = self.component_style("trace-table--header")
        segments = [Segment(" ", style)]
        for column, w in layout(width - 1):
            segments.append(pad(column.title, w, style, right=column.right))
            segments.append(Segment(" ", style))
        return Strip(segments).crop_extend(0, width, style)

    def render_row(self, index: int, width: int, cursor: bool) -> Strip:
        base = self.base_style
        if cursor:
            base = base + self.component_style("trace-table--cursor")
        row = self._rows.get(index)
        if row is None:
            self._need(index)
            loading = base + self.component_style("trace-table--loading")
            return Strip([Segment("  …", loading)])
        error = self.component_style("trace-table--error", partial=True)
        dim = self.component_style("trace-table--dim", partial=True)
        app = tui(self)
        now_ns = app.clock()
        threshold = app.threshold
        good = self.component_style("trace-table--good", partial=True)
        # The first cell (blank on other rows, and in the header) marks run A of a diff: the columns do not move.
        if row.trace_id == self._marked_id():
            segments = [Segment(MARK_GLYPH, base + self.component_style("trace-table--mark", partial=True))]
        else:
            segments = [Segment(" ", base)]
        for column, w in layout(width - 1):
            style = base
            if column.key == "errors" and row.error_count:
                style = base + error + Style(bold=True)
            elif (
                column.key in ("time", "service")
                or (column.key == "run" and not row.has_root)
                or column.key == "cost"
                and row.cost_usd is None
            ):
                style = base + dim
            elif column.key == "grounded" and (row.groundedness is not None or row.evals_total):
                worst_fails = row.groundedness is not None and row.groundedness < threshold
                failing = worst_fails or row.evals_passed < row.evals_total
                style = base + (error if failing else good)
            segments.append(pad(cell_text(column, row, now_ns, threshold, w), w, style, right=column.right))
            segments.append(Segment(" ", base))
        return Strip(segments)

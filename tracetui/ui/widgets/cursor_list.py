"""A keyboard-driven list drawn with Textual's line API.

Only the visible lines are ever rendered, so the cost of a repaint does not
depend on how many rows the list has. Subclasses say how many rows there are
and how to draw one; this class owns the cursor, scrolling, keys, mouse and a
small cache of rendered lines.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.reactive import var
from textual.scroll_view import ScrollView
from textual.strip import Strip


class CursorList(ScrollView, can_focus=True):
    """Base class: a scrolling list with a row cursor and an optional fixed header line."""

    BINDINGS = [
        Binding("up,k", "cursor_up", "Up", show=False, key_display="↑ k"),
        Binding("down,j", "cursor_down", "Down", show=False, key_display="↓ j"),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("g,home", "first", "Top", show=False, key_display="g Home", tooltip="first row"),
        Binding("G,end", "last", "Bottom", show=False, key_display="G End", tooltip="last row"),
        Binding("enter", "select", "Open", show=True, tooltip="open / show details"),
    ]

    DEFAULT_CSS = """
    CursorList {
        overflow-x: hidden;
        overflow-y: auto;
        scrollbar-size-vertical: 1;
    }
    """

    #: Lines drawn above the rows, not scrolled (a column header).
    HEADER_LINES = 0

    cursor_row: var[int] = var(0, always_update=False)
    """Index of the highlighted row."""

    class Selected(Message):
        """Enter (or a double click) on a row."""

        def __init__(self, sender: CursorList, row: int) -> None:
            super().__init__()
            self.list = sender
            self.row = row

        @property
        def control(self) -> CursorList:
            return self.list

    class Highlighted(Message):
        """The cursor moved to another row."""

        def __init__(self, sender: CursorList, row: int) -> None:
            super().__init__()
            self.list = sender
            self.row = row

        @property
        def control(self) -> CursorList:
            return self.list

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._line_cache: LRUCache[tuple, Strip] = LRUCache(256)
        self._row_count = 0

    # --- for subclasses ------------------------------------------------------

    @property
    def row_count(self) -> int:
        return self._row_count

    def set_row_count(self, count: int) -> None:
        """Tell the list how many rows it has (keeps the cursor in range)."""
        self._row_count = max(0, count)
        self.virtual_size = Size(self.size.width, self._row_count + self.HEADER_LINES)
        if self.cursor_row >= self._row_count:
            self.cursor_row = max(0, self._row_count - 1)
        self.clear_cache()

    def render_row(self, index: int, width: int, cursor: bool) -> Strip:
        """Draw row ``index`` into ``width`` cells."""
        raise NotImplementedError

    def render_header(self, line: int, width: int) -> Strip:
        return Strip.blank(width)

    def row_key(self, index: int) -> object:
        """Identity of a row's content, for the line cache. Override when rows change in place."""
        return index

    def clear_cache(self) -> None:
        self._line_cache.clear()
        self.refresh()

    # --- rendering -----------------------------------------------------------

    @property
    def body_height(self) -> int:
        return max(1, self.scrollable_content_region.height - self.HEADER_LINES)

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        if y < self.HEADER_LINES:
            return self.render_header(y, width)
        index = self.scroll_offset.y + y - self.HEADER_LINES
        if index >= self._row_count:
            return Strip.blank(width, self.rich_style)
        cursor = index == self.cursor_row and self._row_count > 0
        key = (self.row_key(index), cursor, width, self.has_focus)
        strip = self._line_cache.get(key)
        if strip is None:
            strip = self.render_row(index, width, cursor).crop_extend(0, width, self.rich_style)
            self._line_cache[key] = strip
        return strip

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._line_cache.clear()

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(event.size.width, self._row_count + self.HEADER_LINES)
        self.clear_cache()
        self.scroll_cursor_visible()

    def on_focus(self) -> None:
        self.clear_cache()

    def on_blur(self) -> None:
        self.clear_cache()

    # --- cursor --------------------------------------------------------------

    def validate_cursor_row(self, row: int) -> int:
        return max(0, min(row, self._row_count - 1)) if self._row_count else 0

    def watch_cursor_row(self, old: int, new: int) -> None:
        self.refresh()
        self.scroll_cursor_visible()
        self.post_message(self.Highlighted(self, new))

    def scroll_cursor_visible(self) -> None:
        top = self.scroll_offset.y
        height = self.body_height
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False, immediate=True)
        elif self.cursor_row >= top + height:
            self.scroll_to(y=self.cursor_row - height + 1, animate=False, immediate=True)

    def action_cursor_up(self) -> None:
        self.cursor_row -= 1

    def action_cursor_down(self) -> None:
        self.cursor_row += 1

    def action_page_up(self) -> None:
        self.cursor_row -= self.body_height

    def action_page_down(self) -> None:
        self.cursor_row += self.body_height

    def action_first(self) -> None:
        self.cursor_row = 0

    def action_last(self) -> None:
        self.cursor_row = self._row_count - 1

    def action_select(self) -> None:
        if self._row_count:
            self.post_message(self.Selected(self, self.cursor_row))

    def on_click(self, event: events.Click) -> None:
        y = event.y - self.HEADER_LINES
        if y < 0:
            return
        row = self.scroll_offset.y + y
        if row < self._row_count:
            self.cursor_row = row
            if event.chain >= 2:
                self.action_select()


def pad(text: str, width: int, style: Style, *, right: bool = False) -> Segment:
    """One fixed-width cell of a row (text must already be safe and fit)."""
    from rich.cells import cell_len, set_cell_size

    if cell_len(text) > width:
        text = set_cell_size(text, max(0, width - 1)) + "…" if width > 1 else set_cell_size(text, width)
    padding = " " * max(0, width - cell_len(text))
    return Segment(padding + text if right else text + padding, style)

"""A keyboard-driven list drawn with Textual's line API.

Only the visible lines are ever rendered, so the cost of a repaint does not
depend on how many rows the list has. Subclasses say how many rows there are
and how to draw one; this class owns the cursor, scrolling, keys, mouse and a
small cache of rendered lines.

Keys and data changes are the hot paths, so the list repaints as little as it
can: a cursor move that does not scroll repaints two lines (the old and the
new cursor row), not the whole list; a row count change that keeps the
scrollbar as it was does not ask the screen for a layout; styles are looked up
once per style change, not once per drawn line.
"""

from __future__ import annotations

from math import ceil

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.reactive import var
from textual.scroll_view import ScrollView
from textual.scrollbar import ScrollBar, ScrollBarRender
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

    class RowMessage(Message):
        """Something happened to one row of a list."""

        def __init__(self, sender: CursorList, row: int) -> None:
            super().__init__()
            self.list = sender
            self.row = row

        @property
        def control(self) -> CursorList:
            return self.list

    class Selected(RowMessage):
        """Enter (or a double click) on a row."""

    class Highlighted(RowMessage):
        """The cursor moved to another row."""

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._line_cache: LRUCache[tuple, Strip] = LRUCache(256)
        self._row_count = 0
        #: Rich styles looked up since the last style change (see ``component_style``).
        self._style_cache: dict[tuple[str, bool], Style] = {}
        self._base_style: Style | None = None
        #: One of Textual's component Styles objects when the caches were filled: Textual
        #: replaces them all when it re-applies CSS to this widget (focus, theme, ...).
        self._styles_token: object = None

    # --- for subclasses ------------------------------------------------------

    @property
    def row_count(self) -> int:
        return self._row_count

    def set_row_count(self, count: int, *, keep_cache: bool = False, repaint: bool = True) -> None:
        """Tell the list how many rows it has (keeps the cursor in range).

        Args:
            count: number of rows.
            keep_cache: keep the rendered lines (the subclass's ``row_key`` identifies
                each row's content); otherwise every line is drawn again.
            repaint: repaint the list; False when the caller knows the visible rows
                did not change (only with ``keep_cache``).
        """
        self._row_count = max(0, count)
        self._set_virtual_height(self._row_count + self.HEADER_LINES)
        if self.cursor_row >= self._row_count:
            self.cursor_row = max(0, self._row_count - 1)
        if not keep_cache:
            self.clear_cache()
        elif repaint:
            self.refresh()

    def _set_virtual_height(self, height: int) -> None:
        """Set the virtual size; without a screen layout when the scrollbar does not change.

        Assigning ``virtual_size`` asks the whole screen for a layout (tens of ms with
        the footer), which the trace list would pay on every data change while it
        follows new arrivals. A layout is only needed when the vertical scrollbar
        appears or disappears (the content width changes) or the width changed;
        otherwise the scrollbar's thumb is all that moves.
        """
        new = Size(self.size.width, height)
        old = self.virtual_size
        if new == old:
            return
        viewport = self.scrollable_content_region.height
        if (
            self.is_mounted
            and new.width == old.width
            and self.show_vertical_scrollbar
            and old.height > viewport
            and height > viewport
        ):
            self.set_reactive(CursorList.virtual_size, new)
            self.vertical_scrollbar.window_virtual_size = height  # repaints the thumb
            if self.scroll_y > self.max_scroll_y:
                self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)
        else:
            self.virtual_size = new

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

    # --- styles --------------------------------------------------------------

    def _check_styles(self) -> None:
        """Drop cached styles and lines when Textual has re-applied CSS to the component classes."""
        components = self._component_styles
        token = next(iter(components.values()), None) if components else None
        if token is not self._styles_token:
            self._styles_token = token
            self._style_cache.clear()
            self._base_style = None
            self._line_cache.clear()

    @property
    def base_style(self) -> Style:
        """``rich_style`` (which walks every ancestor), cached until the styles change."""
        if self._base_style is None:
            self._base_style = self.rich_style
        return self._base_style

    def component_style(self, name: str, partial: bool = False) -> Style:
        """``get_component_rich_style``, cached until the styles change.

        Textual's own cache is emptied by every ``refresh()``, so the first line drawn
        after each repaint would otherwise rebuild each component style (~0.1 ms each).
        """
        key = (name, partial)
        style = self._style_cache.get(key)
        if style is None:
            style = self._style_cache[key] = self.get_component_rich_style(name, partial=partial)
        return style

    def _forget_styles(self) -> None:
        self._style_cache.clear()
        self._base_style = None

    # --- rendering -----------------------------------------------------------

    @property
    def body_height(self) -> int:
        return max(1, self.scrollable_content_region.height - self.HEADER_LINES)

    def render_line(self, y: int) -> Strip:
        self._check_styles()
        width = self.scrollable_content_region.width
        if y < self.HEADER_LINES:
            return self.render_header(y, width)
        index = self.scroll_offset.y + y - self.HEADER_LINES
        if index >= self._row_count:
            return Strip.blank(width, self.base_style)
        cursor = index == self.cursor_row and self._row_count > 0
        key = (self.row_key(index), cursor, width, self.has_focus)
        strip = self._line_cache.get(key)
        if strip is None:
            strip = self.render_row(index, width, cursor).crop_extend(0, width, self.base_style)
            self._line_cache[key] = strip
        return strip

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._forget_styles()
        self._line_cache.clear()

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(event.size.width, self._row_count + self.HEADER_LINES)
        self.clear_cache()
        self.scroll_cursor_visible()

    def on_focus(self) -> None:
        self._forget_styles()
        self.clear_cache()

    def on_blur(self) -> None:
        self._forget_styles()
        self.clear_cache()

    # --- cursor --------------------------------------------------------------

    def validate_cursor_row(self, row: int) -> int:
        return max(0, min(row, self._row_count - 1)) if self._row_count else 0

    def watch_cursor_row(self, old: int, new: int) -> None:
        if not self.scroll_cursor_visible():
            # The rows stay where they are: repaint only the two whose cursor state changed.
            self.refresh_row(old)
            self.refresh_row(new)
        self.post_message(self.Highlighted(self, new))

    def refresh_row(self, index: int) -> None:
        """Repaint one row, if it is on screen."""
        top = self.scroll_offset.y
        if top <= index < top + self.body_height:
            self.refresh_line(index + self.HEADER_LINES)  # virtual line: rows start below the header

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        """ScrollView's, except that the scrollbar is not redrawn when its thumb stays in the same cells.

        Moving the cursor past the bottom scrolls by one row per key; in a list of
        thousands of rows the thumb moves by a fraction of an eighth of a cell, yet
        Textual redraws the whole scrollbar (a third of the cost of that key's update).
        """
        if self.show_vertical_scrollbar:
            bar = self.vertical_scrollbar
            thumb = _thumb_cells(bar, new_value)
            if thumb is not None and thumb == _thumb_cells(bar, bar.position):
                bar.set_reactive(ScrollBar.position, bar.validate_position(new_value))
            else:
                bar.position = new_value
        if round(old_value) != round(new_value):
            self.refresh(self.size.region)

    def scroll_cursor_visible(self) -> bool:
        """Scroll so the cursor row is visible; True if the list scrolled (and will be repainted)."""
        top = self.scroll_offset.y
        height = self.body_height
        if self.cursor_row < top:
            target = self.cursor_row
        elif self.cursor_row >= top + height:
            target = self.cursor_row - height + 1
        else:
            return False
        self.scroll_to(y=target, animate=False, immediate=True)
        if self.scroll_offset.y == top:  # could not scroll (not laid out yet, or at the end)
            self.refresh()
        return True

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


def _thumb_cells(bar: ScrollBar, position: float) -> tuple[int, int] | None:
    """Where a vertical scrollbar draws its thumb, in eighths of a cell (as ``ScrollBarRender.render_bar``).

    None when the thumb is not drawn from these figures (nothing to compare).
    """
    size, virtual, window = bar.size.height, bar.window_virtual_size, bar.window_size
    if not (window and size and virtual and size != virtual and virtual > window):
        return None
    eighths = len(ScrollBarRender.VERTICAL_BARS)
    thumb = max(1, window / (virtual / size))
    start = int((size - thumb) * (bar.validate_position(position) / (virtual - window)) * eighths)
    return start, start + ceil(thumb * eighths)


def pad(text: str, width: int, style: Style, *, right: bool = False) -> Segment:
    """One fixed-width cell of a row (text must already be safe and fit)."""
    if cell_len(text) > width:
        text = set_cell_size(text, max(0, width - 1)) + "…" if width > 1 else set_cell_size(text, width)
    padding = " " * max(0, width - cell_len(text))
    return Segment(padding + text if right else text + padding, style)

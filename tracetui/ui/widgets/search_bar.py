"""The trace view's `/` search line: what to look for in this run, and how many spans hold it.

It stays on screen while a search is active (the count, with n / N to move), and
goes away when the search is cleared (Esc in the line, or an empty search).
The same ``:focus`` rule as the filter line (filter_bar.py) keeps the Input one row high.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input, Static

PLACEHOLDER = "search this run: span names, attributes, messages, tool calls…"
#: Typing pauses this long before the search runs.
DEBOUNCE_S = 0.15


class SearchBar(Horizontal):
    """Input line plus the match count; hidden until `/`."""

    DEFAULT_CSS = """
    SearchBar { height: 1; display: none; background: $boost; }
    SearchBar.-open { display: block; }
    SearchBar > Input, SearchBar > Input:focus {
        border: none; height: 1; padding: 0 1; background: $boost; width: 1fr;
    }
    SearchBar > #search-count { width: auto; padding: 0 1; color: $text-muted; }
    """
    BINDINGS = [
        Binding("escape", "clear", "Clear search", show=True),
        # A binding, not Input.Submitted: the message would arrive after the keys typed right after Enter
        # (n, N), which would then still go to the line.
        Binding("enter", "done", "Search", show=False, priority=True),
    ]

    class Changed(Message):
        """The text to look for changed ("" : no search)."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class Closed(Message):
        """Editing ended (Enter, or Esc which also cleared the search)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Input(placeholder=PLACEHOLDER, id="search-input")
        yield Static("", id="search-count")

    @property
    def input(self) -> Input:
        return self.query_one(Input)

    @property
    def text(self) -> str:
        return self.input.value.strip()

    def open(self) -> None:
        self.add_class("-open")
        self.input.focus()
        self.input.cursor_position = len(self.input.value)

    def set_count(self, text: Text | str) -> None:
        self.query_one("#search-count", Static).update(text)

    def action_clear(self) -> None:
        """Clear the search and hide the line."""
        if self._timer is not None:
            self._timer.stop()
        self.input.value = ""
        self.remove_class("-open")
        self.post_message(self.Changed(""))
        self.post_message(self.Closed())

    @on(Input.Changed, "#search-input")
    def _changed(self, _event: Input.Changed) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(DEBOUNCE_S, self._apply)

    def action_done(self) -> None:
        """Enter: search for what is typed and leave the line (it stays on screen while there is a search)."""
        if self._timer is not None:
            self._timer.stop()
        self._apply()
        if not self.text:
            self.remove_class("-open")
        self.screen.set_focus(None)
        self.post_message(self.Closed())

    def _apply(self) -> None:
        self.post_message(self.Changed(self.text))

"""The `/` filter line: parses as you type, applies only what parses, shows where it does not."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input, Static

from tracetui.model.filter import Filter, FilterError, parse

PLACEHOLDER = "filter: model=gpt-4o duration>2s ttft>500ms status=error cost>0.01 groundedness<0.5 attr.key=value text…"
#: Typing pauses this long before the filter is applied (keeps keys instant on big databases).
DEBOUNCE_S = 0.15


def toggle_term(text: str, term: str) -> str:
    """Add ``term`` to a filter text, or remove it when it is already there (quick toggles)."""
    words = text.split()
    if term in words:
        return " ".join(w for w in words if w != term)
    return " ".join([*words, term])


class FilterBar(Vertical):
    """Input line plus an error line; hidden until `/`.

    The ``:focus`` rule matters (Textual 8.2): Input's own ``Input:focus`` rule is more
    specific than ``FilterBar > Input`` and brought its tall border back on a one-row
    field, so what the user typed was not drawn at all.
    """

    DEFAULT_CSS = """
    FilterBar { height: auto; display: none; }
    FilterBar.-open { display: block; }
    FilterBar > Input, FilterBar > Input:focus { border: none; height: 1; padding: 0 1; background: $boost; }
    FilterBar > #filter-error { color: $error; height: auto; padding: 0 1; }
    """
    BINDINGS = [
        Binding("escape", "close", "Close filter", show=True),
    ]

    class Applied(Message):
        """A filter that parsed (possibly empty: show everything)."""

        def __init__(self, text: str, flt: Filter) -> None:
            super().__init__()
            self.text = text
            self.filter = flt

    class Closed(Message):
        """The bar was closed (Enter or Esc); the applied filter stays."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Input(placeholder=PLACEHOLDER, id="filter-input")
        error = Static("", id="filter-error")
        error.display = False  # a row only while there is an error to show
        yield error

    @property
    def input(self) -> Input:
        return self.query_one(Input)

    def open(self, text: str | None = None) -> None:
        if text is not None:
            self.input.value = text
        self.add_class("-open")
        self.input.focus()
        self.input.cursor_position = len(self.input.value)

    def action_close(self) -> None:
        self.remove_class("-open")
        self.post_message(self.Closed())

    def set_text(self, text: str) -> None:
        """Replace the filter text (quick toggles) and apply it at once."""
        self.input.value = text
        self._apply()

    @on(Input.Changed, "#filter-input")
    def _changed(self, _event: Input.Changed) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(DEBOUNCE_S, self._apply)

    @on(Input.Submitted, "#filter-input")
    def _submitted(self, _event: Input.Submitted) -> None:
        if self._apply():
            self.action_close()

    def _apply(self) -> bool:
        text = self.input.value
        error = self.query_one("#filter-error", Static)
        try:
            flt = parse(text)
        except FilterError as exc:
            # Show where, change nothing.
            message = Text(" " * (exc.position + 1) + "^ ", style="bold")
            message.append(str(exc))
            error.update(message)
            error.display = True
            return False
        error.update("")
        error.display = False
        self.post_message(self.Applied(text, flt))
        return True

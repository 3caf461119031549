"""`?`: every key, grouped — built from the bindings themselves, so it never drifts."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

_KEY_NAMES = {
    "up": "↑", "down": "↓", "left": "←", "right": "→", "enter": "Enter", "escape": "Esc", "tab": "Tab",
    "pageup": "PgUp", "pagedown": "PgDn", "home": "Home", "end": "End", "question_mark": "?", "slash": "/",
    "left_square_bracket": "[", "right_square_bracket": "]", "ctrl+c": "Ctrl+C", "ctrl+p": "Ctrl+P",
}  # fmt: skip


def key_label(binding: Binding) -> str:
    if binding.key_display:
        return binding.key_display
    return " ".join(_KEY_NAMES.get(k.strip(), k.strip()) for k in binding.key.split(","))


def binding_groups() -> list[tuple[str, list[Binding]]]:
    """(group title, bindings) for every screen and list, in the order a user meets them."""
    from tracetui.ui.app import TraceTuiApp
    from tracetui.ui.screens.stats import StatsScreen
    from tracetui.ui.screens.trace_list import TraceListScreen
    from tracetui.ui.screens.trace_view import TraceScreen
    from tracetui.ui.widgets.cursor_list import CursorList

    def of(cls) -> list[Binding]:
        return [b for b in cls.BINDINGS if isinstance(b, Binding)]

    return [
        ("Move (lists and trees)", of(CursorList)),
        ("Trace list", of(TraceListScreen)),
        ("Trace view", of(TraceScreen)),
        ("Stats", of(StatsScreen)),
        ("Everywhere", [*of(TraceTuiApp), Binding("ctrl+p", "command_palette", "Command palette: every action")]),
    ]


def help_table() -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for group, bindings in binding_groups():
        table.add_row(Text(group, style="bold underline"), "")
        for binding in bindings:
            table.add_row(key_label(binding), binding.tooltip or binding.description)
        table.add_row("", "")
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,question_mark,q", "dismiss", "Close", show=True),
    ]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: auto; max-width: 90%; height: auto; max-height: 90%;
        border: round $primary; background: $surface; padding: 0 2;
    }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(Text("tracetui keys", style="bold"))
            yield Static(help_table())
            yield Static(Text("Esc closes this help.", style="dim"))

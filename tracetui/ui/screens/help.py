"""`?`: every key, grouped."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEY_GROUPS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "Move",
        (
            ("↑ ↓  j k", "previous / next row"),
            ("PgUp PgDn", "page up / down"),
            ("g  Home", "first row (in the trace list: follow new traces)"),
            ("G  End", "last row"),
        ),
    ),
    (
        "Trace list",
        (
            ("Enter", "open the trace under the cursor"),
        ),
    ),
    (
        "Trace view",
        (
            ("Enter", "show the span's details (expands a collapsed span)"),
            ("← →  h l", "collapse / expand the span's subtree"),
            ("Tab", "switch between the tree and the details"),
            ("Esc", "back to the trace list"),
        ),
    ),
    (
        "Everywhere",
        (
            ("?", "this help"),
            ("Ctrl+P", "command palette"),
            ("q  Ctrl+C", "quit (stops the receiver after it has written everything)"),
        ),
    ),
)


def help_table() -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for group, keys in KEY_GROUPS:
        table.add_row(Text(group, style="bold underline"), "")
        for key, what in keys:
            table.add_row(key, what)
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

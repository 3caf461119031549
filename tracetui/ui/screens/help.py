"""`?`: every key of the screen the user is on, grouped — built from the bindings themselves, so it never drifts.

Sizing (Textual 8.2): the box is ``width: auto`` only in appearance. A
``VerticalScroll`` with ``width: auto; height: auto`` around ``Static``s that
are themselves auto-sized resolves to the scroll bars' own size (6x2) and its
children to 0x0: the help showed an empty box. The box therefore has a width
in cells (capped by the terminal), its height follows its content up to 90% of
the screen, and the content is ``width: 1fr`` so it takes the box's width; it
scrolls when it does not fit (80x24).
"""

from __future__ import annotations

import dataclasses

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

_KEY_NAMES = {
    "up": "↑", "down": "↓", "left": "←", "right": "→", "enter": "Enter", "escape": "Esc", "tab": "Tab",
    "pageup": "PgUp", "pagedown": "PgDn", "home": "Home", "end": "End", "question_mark": "?", "slash": "/",
    "left_square_bracket": "[", "right_square_bracket": "]", "ctrl+c": "Ctrl+C", "ctrl+p": "Ctrl+P",
}  # fmt: skip

#: The filter line's own keys (its Input handles them, so they are not bindings).
FILTER_KEYS = [
    Binding("enter", "apply", "Apply the filter and close the line"),
    Binding("escape", "close", "Close the line; the applied filter stays"),
]
#: The detail pane of the trace view scrolls like any Textual scroll view.
DETAIL_KEYS = [
    Binding("up,down", "scroll", "Scroll the details (after Tab)", key_display="↑ ↓ PgUp PgDn"),
]
#: The stats table is Textual's DataTable, with its own cursor keys.
TABLE_KEYS = [
    Binding("up,down", "cursor", "Move between rows (the histogram follows)", key_display="↑ ↓ PgUp PgDn"),
]
#: The compare screen is one scroll view.
SCROLL_KEYS = [
    Binding("up,down", "scroll", "Scroll the figures", key_display="↑ ↓ PgUp PgDn"),
]


#: The text diff of two calls is a scroll view too.
TEXT_DIFF_KEYS = [
    Binding("up,down", "scroll", "Scroll the text diff (after Tab)", key_display="↑ ↓ PgUp PgDn"),
]


def key_label(binding: Binding) -> str:
    if binding.key_display:
        return binding.key_display
    return " ".join(_KEY_NAMES.get(k.strip(), k.strip()) for k in binding.key.split(","))


def _of(cls) -> list[Binding]:
    return [b for b in cls.BINDINGS if isinstance(b, Binding)]


def _keys(bindings: list[Binding]) -> set[str]:
    return {k.strip() for b in bindings for k in b.key.split(",")}


def _minus(bindings: list[Binding], taken: set[str]) -> list[Binding]:
    """``bindings`` without the keys a screen binds itself (its meaning wins: on the trace list `g` follows)."""
    out = []
    for binding in bindings:
        keys = [k.strip() for k in binding.key.split(",")]
        left = [k for k in keys if k not in taken]
        if left and left != keys:
            binding = dataclasses.replace(binding, key=",".join(left), key_display=None)
        if left:
            out.append(binding)
    return out


def _everywhere() -> list[Binding]:
    from tracetui.ui.app import TraceTuiApp

    return [*_of(TraceTuiApp), Binding("ctrl+p", "command_palette", "Command palette: every action")]


def binding_groups(screen: Screen | None = None) -> list[tuple[str, list[Binding]]]:
    """(group title, bindings) for the keys that work on ``screen``; every screen's when None."""
    from tracetui.ui.screens.compare import CompareScreen
    from tracetui.ui.screens.run_diff import RunDiffScreen
    from tracetui.ui.screens.sessions import SessionRunsScreen, SessionsScreen
    from tracetui.ui.screens.stats import StatsScreen
    from tracetui.ui.screens.trace_list import TraceListScreen
    from tracetui.ui.screens.trace_view import TraceScreen
    from tracetui.ui.widgets.cursor_list import CursorList

    move = ("Move (lists and trees)", _of(CursorList))
    filter_line = ("Filter line (/)", FILTER_KEYS)
    everywhere = ("Everywhere", _everywhere())
    if isinstance(screen, TraceListScreen):
        own = _of(TraceListScreen)
        return [("Trace list", own), (move[0], _minus(move[1], _keys(own))), filter_line, everywhere]
    if isinstance(screen, TraceScreen):
        own = _of(TraceScreen)
        return [("Trace view", own), (move[0], _minus(move[1], _keys(own))), ("Detail pane", DETAIL_KEYS),
                filter_line, everywhere]  # fmt: skip
    if isinstance(screen, (SessionsScreen, SessionRunsScreen)):
        own = _of(type(screen))
        title = "Sessions" if isinstance(screen, SessionsScreen) else "Session"
        return [(title, own), (move[0], _minus(move[1], _keys(own))), everywhere]
    if isinstance(screen, StatsScreen):
        return [("Stats", _of(StatsScreen)), ("Move", TABLE_KEYS), everywhere]
    if isinstance(screen, CompareScreen):
        return [("Compare", _of(CompareScreen)), ("Move", SCROLL_KEYS), everywhere]
    if isinstance(screen, RunDiffScreen):
        own = _of(RunDiffScreen)
        return [("Run diff", own), (move[0], _minus(move[1], _keys(own))), ("Text diff", TEXT_DIFF_KEYS), everywhere]
    return [
        move,
        ("Trace list", _of(TraceListScreen)),
        ("Trace view", _of(TraceScreen)),
        ("Sessions", _of(SessionsScreen)),
        ("Session", _of(SessionRunsScreen)),
        ("Stats", _of(StatsScreen)),
        ("Run diff", _of(RunDiffScreen)),
        ("Compare", _of(CompareScreen)),
        filter_line,
        everywhere,
    ]


def help_table(screen: Screen | None = None) -> Group:
    """Each group: its title, then a two-column grid (key, what it does); key columns aligned across groups."""
    groups = binding_groups(screen)
    key_width = max(len(key_label(b)) for _, bindings in groups for b in bindings)
    parts: list = []
    for group, bindings in groups:
        parts.append(Text(group, style="bold underline"))
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True, min_width=key_width)
        table.add_column()
        for binding in bindings:
            table.add_row(key_label(binding), binding.tooltip or binding.description)
        parts += [table, Text("")]
    return Group(*parts)


def screen_title(screen: Screen | None) -> str:
    from tracetui.ui.screens.compare import CompareScreen
    from tracetui.ui.screens.run_diff import RunDiffScreen
    from tracetui.ui.screens.sessions import SessionRunsScreen, SessionsScreen
    from tracetui.ui.screens.stats import StatsScreen
    from tracetui.ui.screens.trace_list import TraceListScreen
    from tracetui.ui.screens.trace_view import TraceScreen

    names = {TraceListScreen: "the trace list", TraceScreen: "the trace view", StatsScreen: "the stats screen",
             RunDiffScreen: "the run diff", CompareScreen: "the compare screen", SessionsScreen: "the sessions view",
             SessionRunsScreen: "a session"}  # fmt: skip
    return next((f"Keys of {name}" for cls, name in names.items() if isinstance(screen, cls)), "tracetui keys")


class HelpScreen(ModalScreen[None]):
    """The keys of ``screen`` (the one under this modal), grouped; scrolls when they do not fit."""

    BINDINGS = [
        Binding("escape,question_mark,q", "dismiss", "Close", show=True),
    ]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > #help-box {
        width: 100; max-width: 100%; height: auto; max-height: 90%;
        border: round $primary; background: $surface; padding: 0 2;
    }
    HelpScreen #help-box > Static { width: 1fr; height: auto; }
    HelpScreen #help-title { margin-bottom: 1; }
    """

    def __init__(self, screen: Screen | None = None) -> None:
        super().__init__()
        self.for_screen = screen

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(Text(screen_title(self.for_screen), style="bold"), id="help-title")
            yield Static(help_table(self.for_screen), id="help-keys")
            yield Static(Text("Esc, q or ? closes this help.  ↑ ↓ PgUp PgDn scroll it.", style="dim"))

    def on_mount(self) -> None:
        self.query_one("#help-box").focus()  # so ↑ ↓ PgUp PgDn scroll it at once

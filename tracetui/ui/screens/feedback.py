"""`+` / `-`: the user's thumbs up or down on a run or a call, with an optional note.

Stored through the app's PinBoard (the local database) as an evaluation result from source
"you" (tracetui.llm.feedback), then shown like any evaluation and counted by compare.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Input, Static

from tracetui.model.fmt import safe_text
from tracetui.ui.context import tui

#: Longest note kept (the evaluations' explanation column cuts longer text anyway).
MAX_NOTE = 2000


class FeedbackDialog(ModalScreen[str | None]):
    """One line for an optional note; Enter records, Esc cancels (nothing is written)."""

    BINDINGS = [Binding("escape", "dismiss_none", "Cancel", show=True)]
    DEFAULT_CSS = """
    FeedbackDialog { align: center middle; }
    FeedbackDialog > #feedback-box {
        width: 80; max-width: 100%; height: auto; border: round $primary; background: $surface; padding: 0 1;
    }
    """

    def __init__(self, thumb: int, what: str) -> None:
        super().__init__()
        self.thumb, self.what = thumb, what

    def compose(self) -> ComposeResult:
        title = f"{'👍 Thumbs up' if self.thumb > 0 else '👎 Thumbs down'} on {self.what}"
        with Vertical(id="feedback-box"):
            yield Static(Text(title, style="bold"), id="feedback-title")
            yield Input("", placeholder="a note (optional): what was wrong, or right", max_length=MAX_NOTE,
                        id="feedback-note")  # fmt: skip
            yield Static(Text("Enter records it (source: you) · Esc cancels", style="dim"))

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def action_dismiss_none(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())


def ask_feedback(screen: Screen, thumb: int, trace_id: bytes, span_id: bytes | None, what: str) -> None:
    """Open the note line for a thumb on ``what`` (a run, or one call: ``span_id``), then record it."""
    app = tui(screen)
    if not app.can_record_feedback:
        screen.notify(
            "Feedback is stored in the local database: it cannot be recorded on this source.",
            severity="warning",
            markup=False,
            timeout=5,
        )
        return
    label = safe_text(what, 60)

    def done(note: str | None) -> None:
        if note is not None:
            app.record_feedback(trace_id, span_id, thumb, note or None, label)

    app.push_screen(FeedbackDialog(thumb, label), done)

"""The run the user marked with `space` in the trace list: run A of a diff (`d`).

One mark at a time, kept on the app (``TraceTuiApp.run_mark``) so the list, the trace view and
the diff screen all see it. The stats screen's marks (rows of a cohort compare) are another thing
and live elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from tracetui.model.fmt import safe_text, short_name

#: Drawn in the first cell of the marked row of the trace list (one cell, East Asian width neutral).
MARK_GLYPH = "⚑"


@dataclass(frozen=True, slots=True)
class RunMark:
    """A marked run: its trace id and the name it had in the list when marked."""

    trace_id: bytes
    name: str

    @property
    def short_id(self) -> str:
        return self.trace_id.hex()[:8]

    def label(self, width: int = 40) -> str:
        """ "ticket-resolution agent f88fdd41": the name (made safe, cut to ``width``) and the short trace id."""
        return f"{short_name(safe_text(self.name, width), width)} {self.short_id}"

"""The UI's writes to SQLite (implements tracetui.model.reader.PinBoard).

Pins: retention (tracetui.store.retention) does not evict a pinned trace while its pin
is fresh, so the trace under the user's eyes does not vanish mid-read. Each UI
process owns one row, keyed by an owner string such as ``ui:<pid>@<host>``.

Feedback: the user's thumbs up / down (``+`` / ``-`` in the UI) is one row of the
``evaluations`` table, named ``user_feedback`` with source ``you`` (tracetui.llm.feedback),
read back like any evaluation the app sent. Pressing the same thumb again on the same
target replaces its note.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from tracetui.llm.feedback import FEEDBACK_NAME, SOURCE_YOU

_FEEDBACK = (
    "INSERT INTO evaluations(trace_id, span_id, response_id, name, score, label, explanation, source, time_ns) "
    "VALUES (?, ?, NULL, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(trace_id, ifnull(span_id, ifnull(response_id, '')), name, ifnull(score, 'none'), ifnull(label, '')) "
    "DO UPDATE SET explanation = excluded.explanation, source = excluded.source, time_ns = excluded.time_ns"
)


class SqlitePins:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def pin(self, owner: str, trace_id: bytes | None) -> None:
        """Set or clear ``owner``'s pin. Best effort: a read-only or busy file is not an error."""
        try:
            conn = sqlite3.connect(self.path, timeout=1.0, isolation_level=None)
            try:
                if trace_id is None:
                    conn.execute("DELETE FROM pins WHERE owner = ?", (owner,))
                else:
                    conn.execute(
                        "INSERT INTO pins(owner, trace_id, updated_ns) VALUES (?, ?, ?) ON CONFLICT(owner) "
                        "DO UPDATE SET trace_id = excluded.trace_id, updated_ns = excluded.updated_ns",
                        (owner, trace_id, time.time_ns()),
                    )
            finally:
                conn.close()
        except sqlite3.Error:
            pass

    def record_feedback(self, trace_id: bytes, span_id: bytes | None, thumb: int, note: str | None) -> None:
        up = thumb > 0
        try:
            conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
            try:
                conn.execute(
                    _FEEDBACK,
                    (trace_id, span_id, FEEDBACK_NAME, 1.0 if up else 0.0, "thumbs_up" if up else "thumbs_down",
                     note or None, SOURCE_YOU, time.time_ns()),
                )  # fmt: skip
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise OSError(f"could not store the feedback in {self.path}: {exc}") from None

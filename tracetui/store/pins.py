"""The UI's one write to SQLite: which trace each open UI shows (implements tracetui.model.reader.PinBoard).

Retention (tracetui.store.retention) does not evict a pinned trace while its pin
is fresh, so the trace under the user's eyes does not vanish mid-read. Each UI
process owns one row, keyed by an owner string such as ``ui:<pid>@<host>``.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path


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

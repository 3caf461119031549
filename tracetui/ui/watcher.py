"""Notices new commits without touching the event loop.

A plain thread polls ``PRAGMA data_version`` (a few microseconds; changes
whenever another connection commits) and posts one replaceable message when
it moves. It also samples the counters for the header once a second.
``post_message`` is thread-safe; nothing here waits on the UI.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from textual.message import Message

from tracetui.store.reader import Reader
from tracetui.ui.messages import CountersUpdated, DataChanged

COUNTER_PERIOD_S = 1.0
#: How often the pin of the trace on screen is refreshed (retention honours pins for 5 minutes).
PIN_REFRESH_S = 60.0


class DbWatcher(threading.Thread):
    def __init__(
        self,
        db_path: Path,
        post: Callable[[Message], object],
        interval: float = 0.2,
        receiver_alive: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(name="tracetui-db-watcher", daemon=True)
        self._path = db_path
        self._post = post
        self._interval = interval
        self._receiver_alive = receiver_alive
        self._stop = threading.Event()
        #: The trace on screen (set from the UI thread; a plain attribute swap is atomic).
        self.pinned: bytes | None = None
        self._owner = f"ui:{os.getpid()}@{socket.gethostname()}"

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:  # runs on the watcher thread
        reader: Reader | None = None
        last_version: int | None = None
        next_counters = 0.0
        pinned_written: bytes | None = None
        next_pin = 0.0
        while not self._stop.is_set():
            try:
                if reader is None:
                    reader = Reader(self._path)
                version = reader.data_version()
                if version != last_version:
                    last_version = version
                    self._post(DataChanged(version))
                now = time.monotonic()
                if now >= next_counters:
                    next_counters = now + COUNTER_PERIOD_S
                    alive = self._receiver_alive() if self._receiver_alive else None
                    self._post(CountersUpdated(reader.counters(), alive, now))
                pinned = self.pinned
                if pinned != pinned_written or (pinned is not None and now >= next_pin):
                    self._write_pin(pinned)
                    pinned_written, next_pin = pinned, now + PIN_REFRESH_S
            except FileNotFoundError:
                pass  # the receiver has not created the file yet
            except Exception:  # a locked or replaced file: reopen on the next tick
                if reader is not None:
                    reader.close()
                reader = None
            self._stop.wait(self._interval)
        if reader is not None:
            reader.close()
        if pinned_written is not None:
            self._write_pin(None)

    def _write_pin(self, trace_id: bytes | None) -> None:
        """Tell the receiver's retention which trace is on screen (best effort: the file may be read-only)."""
        try:
            conn = sqlite3.connect(self._path, timeout=1.0, isolation_level=None)
            try:
                if trace_id is None:
                    conn.execute("DELETE FROM pins WHERE owner = ?", (self._owner,))
                else:
                    conn.execute(
                        "INSERT INTO pins(owner, trace_id, updated_ns) VALUES (?, ?, ?) ON CONFLICT(owner) "
                        "DO UPDATE SET trace_id = excluded.trace_id, updated_ns = excluded.updated_ns",
                        (self._owner, trace_id, time.time_ns()),
                    )
            finally:
                conn.close()
        except sqlite3.Error:
            pass

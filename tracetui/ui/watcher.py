"""Notices new commits without touching the event loop.

A plain thread polls ``PRAGMA data_version`` (a few microseconds; changes
whenever another connection commits) and posts one replaceable message when
it moves. It also samples the counters for the header once a second.
``post_message`` is thread-safe; nothing here waits on the UI.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from textual.message import Message

from tracetui.store.reader import Reader
from tracetui.ui.messages import CountersUpdated, DataChanged

COUNTER_PERIOD_S = 1.0


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

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:  # runs on the watcher thread
        reader: Reader | None = None
        last_version: int | None = None
        next_counters = 0.0
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
            except FileNotFoundError:
                pass  # the receiver has not created the file yet
            except Exception:  # a locked or replaced file: reopen on the next tick
                if reader is not None:
                    reader.close()
                reader = None
            self._stop.wait(self._interval)
        if reader is not None:
            reader.close()

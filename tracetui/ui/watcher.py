"""Notices new data without touching the event loop.

A plain thread polls its own reader's ``data_version`` (for SQLite, ``PRAGMA
data_version``: a few microseconds, and it changes whenever another connection
commits) and posts one replaceable message when it moves. It also samples the
counters for the header once a second, and keeps the pin of the trace on screen
fresh (the UI's one write, tracetui.model.reader.PinBoard).
``post_message`` is thread-safe; nothing here waits on the UI.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable

from textual.message import Message

from tracetui.model.reader import PinBoard, Reader
from tracetui.ui.messages import CountersUpdated, DataChanged

COUNTER_PERIOD_S = 1.0
#: How often the pin of the trace on screen is refreshed (retention honours pins for 5 minutes).
PIN_REFRESH_S = 60.0


class DbWatcher(threading.Thread):
    def __init__(
        self,
        open_reader: Callable[[], Reader],
        post: Callable[[Message], object],
        interval: float = 0.2,
        receiver_alive: Callable[[], bool] | None = None,
        pins: PinBoard | None = None,
    ) -> None:
        """``open_reader`` gives the watcher a reader of its own (opened on its thread, reopened after
        an error), so that polling never waits behind a long query of the screens."""
        super().__init__(name="tracetui-db-watcher", daemon=True)
        self._open_reader = open_reader
        self._pins = pins
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
                    reader = self._open_reader()
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
        """Tell the receiver's retention which trace is on screen (best effort)."""
        if self._pins is not None:
            self._pins.pin(self._owner, trace_id)

"""WAL checkpoints on their own thread, so writers hardly wait for them.

In WAL mode every commit appends pages to the ``-wal`` file; a checkpoint
copies them back into the database file and fsyncs it. SQLite normally runs
one inside the COMMIT that pushes the WAL past 1,000 pages: at ingest rates
that is several times a second, and the writer (and every export waiting on
its commit) stood still for it, about a fifth of the writer's time under load.

Here the writers' connections (tracetui.store.writer.Committer, in the
receiver and in each ingest worker) have automatic checkpoints off. The
receiver's checkpoint thread watches the WAL's size; once it has grown past
``wal_bytes`` it runs a PASSIVE checkpoint on its own connection (it never
blocks writers or readers) while they go on committing. SQLite can only start
the WAL over once a checkpoint has copied *every* frame, which a checkpoint
racing busy writers never does; so once the WAL holds ``RESTART_FACTOR`` times
that size, the thread copies the few frames added meanwhile under the write
lock (tracetui.store.lock), with no writer active, and the next commit starts
the WAL from the beginning. ``journal_size_limit`` keeps the file near that
size. Should the thread fall far behind (starved, a slow disk), a writer
past ``LIMIT_FACTOR`` copies everything itself before it lets go of the lock
(:func:`bound_wal`): the WAL stays bounded whatever the load. A reader that
holds one snapshot for a long time still keeps the WAL from starting over, as
it always did.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from tracetui.store.health import ThrottledLog
from tracetui.store.lock import WriteLock

log = logging.getLogger(__name__)
#: A full disk fails every checkpoint poll (20 a second): one line every few seconds says it.
_warnings = ThrottledLog(log)

#: Checkpoint in the background once the WAL is this big (SQLite's own default is ~4 MB).
WAL_BYTES = 16 * 1024 * 1024
#: Let the WAL start over once it holds this many times WAL_BYTES: until then the
#: background passes copy all but the last few commits and writers never wait;
#: then the thread copies those few under the write lock (writers wait for that
#: copy; it cost the writer 11% of its time when done after every pass).
RESTART_FACTOR = 4
#: Past this many times WAL_BYTES the background passes are too slow for the
#: writers (a starved thread, a slow disk): a writer catches up itself before it
#: releases the write lock, so the WAL never grows past about this size.
LIMIT_FACTOR = 8

#: How often the checkpoint thread looks at the WAL's size (writers in other
#: processes cannot wake it; the receiver's own writer does).
POLL_SECONDS = 0.05


def wal_size(db_path: Path | str) -> int:
    try:
        return os.stat(f"{db_path}-wal").st_size
    except OSError:
        return 0


def bound_wal(conn: sqlite3.Connection, db_path: Path | str, wal_bytes: int = WAL_BYTES) -> None:
    """Called by a writer after each commit, while it still holds the write lock.

    Past ``LIMIT_FACTOR`` times ``wal_bytes`` the background passes are not
    keeping up: copy what can be copied now (after the running pass, if any),
    so that the next commit can start the WAL over.
    """
    if wal_size(db_path) < LIMIT_FACTOR * wal_bytes:
        return
    deadline = time.monotonic() + 60
    while True:
        try:
            busy, _frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            _warnings.log(logging.WARNING, "checkpoint", "checkpoint: %s", exc)
            return
        # busy: the background pass is running (one checkpoint at a time); let it
        # finish, then copy the rest. Frames a reader still needs stay in the WAL
        # whatever we do: one pass is all a writer can do about them.
        if not busy or time.monotonic() > deadline:
            return
        time.sleep(0.01)


class Checkpointer:
    """The background checkpoint thread (one per receiver, whoever writes)."""

    def __init__(self, path: Path, lock: WriteLock, wal_bytes: int = WAL_BYTES) -> None:
        self.path = Path(path)
        self.lock = lock
        self.wal_bytes = wal_bytes
        #: Background passes completed.
        self.checkpoints = 0
        self._wake = threading.Event()
        self._stopping = False
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._frame_bytes = self._conn.execute("PRAGMA page_size").fetchone()[0] + 24
        self._thread = threading.Thread(target=self._run, name="tracetui-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def nudge(self) -> None:
        """A commit just happened here: look at the WAL now rather than at the next poll."""
        if wal_size(self.path) >= self.wal_bytes:
            self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(30)
        self._conn.close()

    def _run(self) -> None:
        while True:
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()
            if self._stopping:
                return
            if wal_size(self.path) < self.wal_bytes:
                continue
            try:
                busy, frames, _copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                self.checkpoints += 1
                if not busy and frames * self._frame_bytes >= RESTART_FACTOR * self.wal_bytes:
                    # Copy what was committed during the pass, with no writer active,
                    # so that the next commit can start the WAL over.
                    with self.lock:
                        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as exc:  # busy, disk trouble: the next poll tries again
                _warnings.log(logging.WARNING, "checkpoint", "checkpoint: %s", exc)

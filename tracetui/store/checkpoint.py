"""WAL checkpoints on their own thread, so the writer hardly waits for them.

In WAL mode every commit appends pages to the ``-wal`` file; a checkpoint
copies them back into the database file and fsyncs it. SQLite normally runs
one inside the COMMIT that pushes the WAL past 1,000 pages: at ingest rates
that is several times a second, and the writer thread (and every export
waiting on its commit) stood still for it, about a fifth of the writer's
time under load.

Here the writer's connection has automatic checkpoints off. Once the WAL has
grown past ``wal_bytes``, this thread runs a PASSIVE checkpoint on its own
connection (it never blocks the writer or readers) while the writer goes on
committing. SQLite can only start the WAL over once a checkpoint has copied
*every* frame, which a checkpoint racing a busy writer never does; so after
a background pass, once the WAL has reached ``RESTART_FACTOR`` times that
size, the writer copies the few frames it added meanwhile itself, between two
commits (:meth:`Checkpointer.after_commit`), and its next commit starts the
WAL from the beginning. ``journal_size_limit`` keeps the file near that size.
Should the background pass fall far behind, the writer waits for it
(``LIMIT_FACTOR``): the WAL stays bounded whatever the load. A reader that holds one snapshot for a
long time still keeps the WAL from starting over, as it always did.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

#: Checkpoint in the background once the WAL is this big (SQLite's own default is ~4 MB).
WAL_BYTES = 16 * 1024 * 1024
#: Let the WAL start over once it is this many times WAL_BYTES: until then the
#: background passes copy all but the last few commits and the writer never
#: waits; then the writer copies those few itself (its share of checkpointing
#: was 11% of its time when it did so after every pass).
RESTART_FACTOR = 4
#: Past this many times WAL_BYTES the background pass is too slow for the
#: writer (a starved thread, a slow disk): the writer waits for it to finish
#: and catches up itself, so the WAL never grows past about this size.
LIMIT_FACTOR = 8


class Checkpointer:
    def __init__(self, path: Path, wal_bytes: int = WAL_BYTES) -> None:
        self.path = Path(path)
        self.wal_path = Path(f"{path}-wal")
        self.wal_bytes = wal_bytes
        #: Background passes completed, and how many of them the writer has followed up.
        self.checkpoints = 0
        self._followed = 0
        self._wake = threading.Event()
        #: Set while no background pass is running.
        self._idle = threading.Event()
        self._idle.set()
        self._stopping = False
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._thread = threading.Thread(target=self._run, name="tracetui-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wal_size(self) -> int:
        try:
            return os.stat(self.wal_path).st_size
        except OSError:
            return 0

    def after_commit(self, writer_conn: sqlite3.Connection) -> None:
        """Called on the writer's thread, with its connection, after each commit."""
        size = self.wal_size()
        if size < self.wal_bytes:
            return
        over_limit = size >= LIMIT_FACTOR * self.wal_bytes
        if over_limit:
            self._idle.wait(60)  # back-pressure: let the running pass finish first
        if over_limit or (size >= RESTART_FACTOR * self.wal_bytes and self.checkpoints > self._followed):
            # Copy what was committed since the last background pass (a few
            # commits' worth), so that the next commit can restart the WAL.
            self._followed = self.checkpoints
            try:
                busy, frames, copied = writer_conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as exc:
                log.warning("checkpoint: %s", exc)
                return
            if not busy and frames == copied:
                return  # caught up
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(30)
        self._conn.close()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            self._idle.clear()
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                self.checkpoints += 1
            except sqlite3.Error as exc:  # busy, disk trouble: the next nudge tries again
                log.warning("checkpoint: %s", exc)
            finally:
                self._idle.set()

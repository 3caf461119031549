"""The receiver's write lock: one write transaction at a time, across its processes.

The receiver writes from several processes (its ingest workers, see
tracetui.ingest.workers, and its own writer thread for status, retention and
checkpoints). SQLite serializes writers itself, but a writer that finds the
database locked sleeps in its busy handler (1, 2, 5, 10... ms) and retries:
the lock sits free while writers sleep, and who gets it next is luck. An
exclusive ``flock`` on a file beside the database queues them in the kernel
instead, and wakes the next one the moment the lock is released.

``flock``, not a multiprocessing lock: the kernel releases it when its holder
dies, so a worker killed in the middle of a write cannot wedge the others.
Other programs (``tracetui purge``, an import) do not take it; SQLite's own
locking still keeps them correct, they only wait in the busy handler. Where
there is no ``flock`` (Windows) the lock only orders the threads of a process,
and the same holds for the worker processes.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


def lock_path(db_path: Path | str) -> Path:
    return Path(f"{db_path}-lock")


class WriteLock:
    """An exclusive lock shared by every receiver process writing ``db_path``.

    Safe to share between the threads of a process too: ``flock`` alone
    would not exclude them (the lock belongs to the open file, which they share).
    """

    def __init__(self, db_path: Path | str) -> None:
        self.path = lock_path(db_path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._threads = threading.Lock()

    def __enter__(self) -> WriteLock:
        self._threads.acquire()
        if fcntl is None:
            return self
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)  # releases the GIL while it waits
        except BaseException:
            self._threads.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if fcntl is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()

    @contextmanager
    def transaction(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """Hold the lock around one write transaction on ``conn``: committed when the block ends, rolled
        back (and the error raised again) when it raises."""
        with self:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

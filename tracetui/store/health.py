"""Write failures the user must hear about: a full disk, said so where the UI can read it.

The receiver's status lives in the database (``meta``), which is exactly what
cannot be written when the disk is full. So each writing process (the
receiver's writer thread and every ingest worker) also records its last write
failure in a small file beside the database, ``<db>-health``, created at
start with its full size so that rewriting it later needs no new disk blocks
(an in-place ``pwrite``). The UI header and ``tracetui status`` read it
(:func:`read_problem`) and show a recent failure instead of guessing from a
silent heartbeat.

Repeated failures are logged at most once per ``LOG_INTERVAL_S`` with a count of
what was held back (:class:`ThrottledLog`): a full disk fails every commit and
every checkpoint poll, and one line a few seconds says it as well as a hundred.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

try:
    import resource
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]

#: Bytes of the health file (one JSON object, padded with spaces).
SIZE = 4096
#: A failure recorded this long ago no longer describes the receiver.
RECENT_S = 10.0
LOG_INTERVAL_S = 5.0
#: Below this much free space, an I/O error while writing is taken for a full disk
#: (SQLite reports a write refused with EFBIG, a file size limit, as an I/O error).
LOW_SPACE_BYTES = 1024 * 1024


def health_path(db_path: Path | str) -> Path:
    return Path(f"{db_path}-health")


def no_room(exc: BaseException, db_path: Path | str) -> str | None:
    """Why a failed write found no room for the database: "disk full", "file size limit", or None (another cause)."""
    if isinstance(exc, OSError):
        if exc.errno == errno.EFBIG:
            return "file size limit"
        return "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else None
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL:
        return "disk full"
    if code is not None and code & 0xFF == sqlite3.SQLITE_IOERR:
        # SQLite reports a write refused with EFBIG (and some ENOSPC) as a plain I/O error.
        if _at_file_size_limit(db_path):
            return "file size limit"
        try:
            st = os.statvfs(Path(db_path).parent)
        except OSError:
            return None
        if st.f_bavail * st.f_frsize < LOW_SPACE_BYTES:
            return "disk full"
    return None


def _file_size_limit() -> int | None:
    """This process's file size limit (``ulimit -f``) in bytes, or None."""
    if resource is None:
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def _at_file_size_limit(db_path: Path | str) -> bool:
    limit = _file_size_limit()
    if limit is None:
        return False
    for suffix in ("", "-wal"):
        try:
            if os.stat(f"{db_path}{suffix}").st_size + LOW_SPACE_BYTES >= limit:
                return True
        except OSError:
            pass
    return False


def describe_failure(exc: BaseException, db_path: Path | str) -> str:
    """What an exporter (and the log) is told when a commit fails."""
    room = no_room(exc, db_path)
    if room == "disk full":
        return (
            f"the disk holding {db_path} is full ({exc}); nothing was stored from this export: "
            "retry once space is freed"
        )
    if room == "file size limit":
        return (
            f"{db_path} reached this process's file size limit (ulimit -f: {_file_size_limit():,} bytes; {exc}); "
            "nothing was stored from this export: retry once the limit is raised or the database made smaller"
        )
    return f"database write failed: {exc}"


class HealthFile:
    """Where this process records its write failures: one file shared by the receiver's processes (see above)."""

    def __init__(self, db_path: Path | str) -> None:
        self.path = health_path(db_path)
        self._fd = -1
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            if os.fstat(self._fd).st_size < SIZE:
                os.pwrite(self._fd, b" " * SIZE, 0)  # its blocks, now, while there is room
        except OSError:
            pass  # a full disk at start: the header falls back to the silent heartbeat

    def report(self, problem: str, message: str) -> None:
        """Record a failure (``problem``: "disk full", "file size limit" or "write failed")."""
        self._write({"problem": problem, "message": message, "at_ns": time.time_ns(), "pid": os.getpid()})

    def clear(self, since_ns: int) -> None:
        """A commit that started at ``since_ns`` stored data: a failure reported before then is over.

        Whichever process reported it: any commit that finds room shows the
        disk has room again. (A failure reported after ``since_ns``, by another
        process, stays.) One 4 KB read per commit.
        """
        if self._fd < 0:
            return
        try:
            data = os.pread(self._fd, SIZE, 0).strip()
            current = json.loads(data) if data else {}
        except (OSError, ValueError):
            return
        at = current.get("at_ns") if isinstance(current, dict) else None
        if isinstance(at, int) and at < since_ns:
            self._write({})

    def _write(self, record: dict) -> None:
        if self._fd < 0:
            return
        data = json.dumps(record).encode()
        if len(data) > SIZE:  # a very long path: keep the record valid JSON, the message shorter
            record = {**record, "message": record["message"][: SIZE // 8]}
            data = json.dumps(record).encode()[:SIZE]
        data = data.ljust(SIZE)
        try:
            os.pwrite(self._fd, data, 0)
        except OSError:
            pass

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_problem(db_path: Path | str, now_ns: int | None = None) -> dict | None:
    """The most recent write failure recorded beside ``db_path``, if it is recent; else None."""
    try:
        data = health_path(db_path).read_bytes()[:SIZE].strip()
        record = json.loads(data) if data else {}
    except (OSError, ValueError):
        return None
    at = record.get("at_ns") if isinstance(record, dict) else None
    if not isinstance(at, int) or (now_ns or time.time_ns()) - at > RECENT_S * 1e9:
        return None
    return record


class ThrottledLog:
    """A logger for failures that repeat: the first now, then at most one per interval, with a count."""

    def __init__(self, logger: logging.Logger, interval_s: float = LOG_INTERVAL_S) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(self, level: int, key: str, message: str, *args: object) -> None:
        """Log ``message % args`` unless ``key`` was logged less than ``interval_s`` ago."""
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -1e9) < self.interval_s:
                self._held[key] = self._held.get(key, 0) + 1
                return
            self._last[key] = now
            held = self._held.pop(key, 0)
        if held:
            message += f" (and {held} more like it in the last {self.interval_s:.0f}s)"
        self.logger.log(level, message, *args)

"""The Stats rollup's background fill: an upgraded database opens at once and is summed up behind it.

A database written before the rollup existed (schema < 12) holds traces the writer
never summed (tracetui.store.rollup). Summing ten million spans takes minutes, so the
migration only records how far there is to go (meta ``rollup_to``), and this job,
which ``tracetui serve`` starts beside its receiver as ``tracetui job rollup``, sums
the old trace rows a small batch per transaction under the receiver's write lock,
oldest first, keeping its place in meta ``rollup_at``. New traces are summed by the
writer as they arrive. Until the fill is done, Stats scans as before and the
header says "stats: backfilling N %". A restart, or ``kill -9``, resumes from the
last committed batch. The job exits when there is nothing left to fill.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from tracetui.store import rollup
from tracetui.store.lock import WriteLock
from tracetui.store.schema import SchemaTooNew, connect_writer

#: Pause between batches: the receiver gets the lock (and the cores) in between.
PAUSE_S = 0.01


def pending(path: Path) -> bool:
    """Whether this database has a fill to do (cheap: two meta rows; migrates the file). False when it cannot
    be opened (the receiver, which opens it next, says why) or does not exist (a new one has none)."""
    if not Path(path).exists():
        return False
    try:
        conn = connect_writer(Path(path))
    except (SchemaTooNew, sqlite3.Error, OSError):
        return False
    try:
        return rollup.progress(conn) is not None
    finally:
        conn.close()


def fill(path: Path, should_stop: Callable[[], bool] = lambda: False, batch: int = rollup.BACKFILL_BATCH) -> bool:
    """Fill until done (True) or ``should_stop()`` (False)."""
    conn = connect_writer(Path(path))
    lock = WriteLock(Path(path))
    try:
        while not should_stop():
            with lock:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    more = rollup.backfill_step(conn, batch)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            if not more:
                return True
            time.sleep(PAUSE_S)
        return False
    finally:
        lock.close()
        conn.close()


def main(argv: list[str]) -> int:
    """``tracetui job rollup --db PATH``: fills, then exits (also when its parent goes)."""
    parser = argparse.ArgumentParser(prog="tracetui job rollup")
    parser.add_argument("--db", required=True, type=Path)
    args = parser.parse_args(argv)
    parent = os.getppid()
    while True:
        try:
            fill(args.db, lambda: os.getppid() != parent)
            return 0
        except SchemaTooNew:  # the receiver beside it says so, once
            return 1
        except sqlite3.OperationalError as exc:  # e.g. the disk is full: try again later
            print(f"tracetui rollup: {exc}", flush=True)
            time.sleep(1.0)
        except KeyboardInterrupt:
            return 0

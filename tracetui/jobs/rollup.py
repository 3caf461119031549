"""The Stats rollup's job beside the receiver: it sums what the writer queued, and fills an upgraded database.

The writer does not sum a commit's traces into the rollup (tracetui.store.rollup): that
cost the receiver 12 us a span. It queues them in ``stats_dirty``, and this job, which
``tracetui serve`` starts beside its receiver as ``tracetui job rollup`` (at nice 10, like
the indexer and the judge), takes them DRAIN_BATCH traces a transaction under the write
lock. Readers correct for what is still queued, so Stats is never stale.

A database written before the rollup existed (schema < 13) holds traces the writer
never summed. Summing ten million spans takes minutes, so the migration only records
how far there is to go (meta ``rollup_to``), and this job sums the old trace rows a
small batch per transaction too, oldest first, keeping its place in meta
``rollup_at``. Until that fill is done, Stats scans as before and the header says
"stats: backfilling N %". A restart, or ``kill -9``, resumes from the last committed
batch. The job exits with its parent.
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
#: Pause when nothing is queued.
IDLE_S = 0.5


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


def drain(path: Path, should_stop: Callable[[], bool] = lambda: False, idle_s: float = IDLE_S) -> None:
    """Sum the queued traces (and fill an upgraded database first) until ``should_stop()``."""
    while not Path(path).exists():  # the receiver creates it (and says so if it cannot)
        if should_stop():
            return
        time.sleep(idle_s)
    if not fill(path, should_stop):
        return
    conn = connect_writer(Path(path))
    lock = WriteLock(Path(path))
    try:
        while not should_stop():
            with lock:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    taken = rollup.refresh(conn, [], queued_limit=rollup.DRAIN_BATCH)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            time.sleep(PAUSE_S if taken == rollup.DRAIN_BATCH else idle_s)
    finally:
        lock.close()
        conn.close()


def main(argv: list[str]) -> int:
    """``tracetui job rollup --db PATH [--follow]``: fills an upgraded database, sums what is queued, and exits
    (``--follow``, as ``serve`` starts it: goes on summing what arrives until its parent goes)."""
    parser = argparse.ArgumentParser(prog="tracetui job rollup")
    parser.add_argument("--db", required=True, type=Path)
    parser.add_argument("--follow", action="store_true")
    args = parser.parse_args(argv)
    parent = os.getppid()
    while True:
        try:
            if args.follow:
                drain(args.db, lambda: os.getppid() != parent)
            else:
                fill(args.db)
                drain(args.db, lambda: rollup_queue_empty(args.db), idle_s=0.0)
            return 0
        except SchemaTooNew:  # the receiver beside it says so, once
            return 1
        except sqlite3.OperationalError as exc:  # e.g. the disk is full: try again later
            print(f"tracetui rollup: {exc}", flush=True)
            time.sleep(1.0)
        except KeyboardInterrupt:
            return 0


def rollup_queue_empty(path: Path) -> bool:
    conn = connect_writer(Path(path))
    try:
        return rollup.queued(conn, 1) == 0
    finally:
        conn.close()

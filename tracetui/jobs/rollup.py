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
    return _in_batches(path, lambda conn: rollup.backfill_step(conn, batch), should_stop, follow=False)


def drain(path: Path, should_stop: Callable[[], bool] = lambda: False, *, follow: bool = True) -> None:
    """Fill an upgraded database, then sum the queued traces: until ``should_stop()`` when ``follow``
    (waiting for the receiver to create the file), else until the queue is empty."""
    if follow:
        while not Path(path).exists():  # the receiver creates it (and says so if it cannot)
            if should_stop():
                return
            time.sleep(IDLE_S)
    if fill(path, should_stop):
        _in_batches(path, lambda conn: rollup.drain_step(conn) == rollup.DRAIN_BATCH, should_stop, follow=follow)


def _in_batches(path: Path, step: Callable[[sqlite3.Connection], bool], should_stop: Callable[[], bool], *,
                follow: bool) -> bool:  # fmt: skip
    """Run ``step`` (True: there is more) a transaction at a time under the receiver's write lock, until
    ``should_stop()`` (False) or, unless ``follow``, until there is no more (True)."""
    conn = connect_writer(Path(path))
    lock = WriteLock(Path(path))
    try:
        while not should_stop():
            with lock.transaction(conn):
                more = step(conn)
            if not more and not follow:
                return True
            time.sleep(PAUSE_S if more else IDLE_S)
        return False
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
            drain(args.db, lambda: os.getppid() != parent, follow=args.follow)
            return 0
        except SchemaTooNew:  # the receiver beside it says so, once
            return 1
        except sqlite3.OperationalError as exc:  # e.g. the disk is full: try again later
            print(f"tracetui rollup: {exc}", flush=True)
            time.sleep(1.0)
        except KeyboardInterrupt:
            return 0

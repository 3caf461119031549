"""An upgraded database: opened at once, its Stats rollup filled by `tracetui job rollup` in the background.

The database is written by tracetui's real writer, then taken back to schema 12 as a
tracetui from before the rollup left it (no rollup tables, no triggers). Opening it
migrates in an instant; until the real job process has filled the rollup, Stats scans
(exact) and the header's counters say how far the fill has come; after, the rollup
answers and agrees with the scan.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from helpers import BASE_NS, fill_db

from tests.store.test_rollup import CUBE_FILTERS, assert_same, readers, run_rollup_job, traffic
from tracetui.model.filter import parse
from tracetui.query.stats import compute
from tracetui.store.reader import SqliteReader
from tracetui.store.schema import MIGRATIONS, add_filter_cube, add_stats_rollup

#: The schema a tracetui from before the rollup wrote (the migration that adds it starts there).
BEFORE_THE_ROLLUP = next(version for version, step in MIGRATIONS.items() if step is add_stats_rollup)
#: The schema before the rollup's filter cube.
BEFORE_THE_CUBE = next(version for version, step in MIGRATIONS.items() if step is add_filter_cube)


def as_before_the_rollup(db: Path) -> None:
    conn = sqlite3.connect(db)
    for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'stats_%'"
    ).fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    for table in ("stats_bins", "stats_contrib", "stats_dirty", "stats_cells", "stats_runs"):
        conn.execute(f"DROP TABLE {table}")
    conn.execute("DELETE FROM meta WHERE key IN ('rollup_to', 'rollup_at', 'cube_to', 'cube_at')")
    conn.execute(f"PRAGMA user_version = {BEFORE_THE_ROLLUP}")
    conn.commit()
    conn.close()


def test_an_old_database_opens_at_once_and_the_job_fills_its_rollup(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    fill_db(db, traffic(7, range(1, 150)))
    as_before_the_rollup(db)

    scan, rolled = readers(db)  # opening migrates: nothing summed yet
    assert rolled.counters().stats_backfill == 0.0
    assert [g.percentiles for g in compute(rolled, "model")] == [None] * len(compute(scan, "model"))
    scan.close()
    rolled.close()

    run_rollup_job(db)

    reader = SqliteReader(db)
    assert reader.counters().stats_backfill is None
    reader.close()
    assert_same(db, (None, BASE_NS + 7200 * 10**9))


async def test_serve_fills_it_and_the_header_says_so_meanwhile(tmp_path: Path) -> None:
    import signal

    from helpers import start_receiver, wait_until

    from tests.ui.test_status_header import header_text

    db = tmp_path / "old.db"
    fill_db(db, traffic(8, range(1, 60)))
    as_before_the_rollup(db)
    # `view` (no receiver) is up at once; the header says the rollup is still to fill
    assert "stats: backfilling 0%" in await header_text(db, lambda: False, width=250)

    def progress():
        reader = SqliteReader(db)
        try:
            return reader.counters().stats_backfill
        finally:
            reader.close()

    receiver = start_receiver(db, cwd=tmp_path)  # serve starts `tracetui job rollup` beside itself
    try:
        assert wait_until(lambda: progress() is None, timeout=60), receiver.stderr
        assert "stats: backfilling" not in await header_text(db, lambda: True, width=250)
    finally:
        assert receiver.stop(signal.SIGTERM) == 0, receiver.stderr
    assert_same(db)


def test_beside_a_live_receiver_the_job_sums_what_arrives(tmp_path: Path) -> None:
    """The receiver's writer only queues the traces of each commit; `serve`'s rollup job sums them
    while it runs (the queue empties without another commit), and Stats agree with the scan."""
    import signal

    from helpers import channel_to, exporter_stub, query_ro, start_receiver, wait_until

    db = tmp_path / "live.db"
    receiver = start_receiver(db, cwd=tmp_path)
    try:
        with channel_to(receiver.port) as channel:
            export = exporter_stub(channel)
            for request in traffic(9, range(1, 120)):
                export(request.SerializeToString(), timeout=30)

        def summed() -> bool:
            (queued,) = query_ro(db, "SELECT count(*) FROM stats_dirty")[0]
            (contributions,) = query_ro(db, "SELECT count(*) FROM stats_contrib")[0]
            return queued == 0 and contributions == 119

        assert wait_until(summed, timeout=60), receiver.stderr
        assert_same(db, (None, BASE_NS + 600 * 10**9))
    finally:
        assert receiver.stop(signal.SIGTERM) == 0, receiver.stderr


def as_before_the_filter_cube(db: Path) -> None:
    """Back to schema 14: the rollup kept, without its filter cube (calls summed without their cells)."""
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT trace_id, contrib FROM stats_contrib").fetchall()
    conn.executemany("UPDATE stats_contrib SET contrib = ? WHERE trace_id = ?",
                     [(json.dumps([call[:12] for call in json.loads(text)], separators=(",", ":")), trace_id)
                      for trace_id, text in rows])  # fmt: skip
    conn.execute("DELETE FROM stats_bins WHERE grouping = 'cell'")
    conn.execute("DROP TABLE stats_cells")
    conn.execute("DROP TABLE stats_runs")
    conn.execute("DELETE FROM meta WHERE key IN ('cube_to', 'cube_at')")
    conn.execute(f"PRAGMA user_version = {BEFORE_THE_CUBE}")
    conn.commit()
    conn.close()


def test_a_database_from_before_the_filter_cube_keeps_its_rollup_while_the_job_fills_the_cube(tmp_path: Path) -> None:
    db = tmp_path / "v14.db"
    fill_db(db, traffic(10, range(1, 150)))
    as_before_the_filter_cube(db)

    _, rolled = readers(db)  # opening migrates: the cube is empty, to be filled
    try:
        assert rolled.counters().stats_backfill == 0.0
        assert all(g.percentiles for g in compute(rolled, "model"))  # unfiltered: still the rollup
        filtered = compute(rolled, "prompt_version", flt=parse("model=gpt-4o"))
        assert filtered and all(g.percentiles is None for g in filtered)  # filtered: a scan until filled
    finally:
        rolled.close()

    run_rollup_job(db)

    reader = SqliteReader(db)
    assert reader.counters().stats_backfill is None
    reader.close()
    assert_same(db, (None, BASE_NS + 7200 * 10**9), ("", *CUBE_FILTERS))

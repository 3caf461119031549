"""The background indexer: the full-text index and the JSON attributes, off the acknowledgement path.

``tracetui serve`` starts it as a process of its own (``tracetui job indexer``), so the
receiver acknowledges exports without extracting any text. It follows ``spans.id`` (the
storage order) from the cursor kept in ``meta`` (``index_cursor``): each step reads the
next batch through the store's reader (tracetui.store.reader, so however ``raw`` is
stored reaches it), extracts the text (tracetui.llm.content) and writes the batch and the
cursor in one small transaction under the receiver's write lock. A restart, or a
``kill -9`` at any moment, resumes from the last committed cursor: nothing is indexed
twice or skipped.

After evictions (meta ``evicted_spans`` changed) it deletes, in small batches too, the
rows whose span is gone; searches skip such rows meanwhile.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from tracetui.llm.content import attributes_json, span_text
from tracetui.model.config import ContentPolicy
from tracetui.model.views import SpanDetail
from tracetui.store import text_index
from tracetui.store.lock import WriteLock
from tracetui.store.reader import SqliteReader
from tracetui.store.schema import connect_writer

#: Spans per transaction: the receiver waits at most one such batch for the lock.
BATCH = 500
#: Rows looked at per clean-up transaction.
CLEAN_BATCH = 5_000
IDLE_S = 0.2


def _row(detail: SpanDetail, policy: ContentPolicy) -> tuple:
    row = detail.row
    text = span_text(detail.attributes, detail.events, detail.logs, row.get("status_message") or "", policy)
    return row["id"], row["trace_id"], row["span_id"], text, attributes_json(detail.attributes, policy)


class Indexer:
    """One database's indexer; ``step()`` does one batch and says whether there was work."""

    def __init__(self, path: Path, policy: ContentPolicy | None = None, batch: int = BATCH) -> None:
        self.path = Path(path)
        self.policy = policy = policy or ContentPolicy()
        self.batch = batch
        self.conn = connect_writer(self.path)  # migrates, and creates the FTS index (sqlite-utils)
        self.lock = WriteLock(self.path)
        self.reader = SqliteReader(self.path)
        with self.lock:
            self._write(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (text_index.POLICY_KEY, policy.to_json()),
            )
            self._write("INSERT OR IGNORE INTO meta(key, value) VALUES (?, 0)", (text_index.CURSOR_KEY,))

    def close(self) -> None:
        self.reader.close()
        self.lock.close()
        self.conn.close()

    def _write(self, sql: str, params: tuple) -> None:
        self.conn.execute(sql, params)

    def _meta_int(self, key: str) -> int:
        value = text_index.meta_value(self.conn, key)
        return int(value or 0)

    def step(self) -> bool:
        """Index the next batch of spans, or clean up after evictions; False when there was nothing to do."""
        if self._clean():
            return True
        cursor = self._meta_int(text_index.CURSOR_KEY)
        details = self.reader.span_details_after(cursor, self.batch)
        if not details:
            return False
        rows = [_row(detail, self.policy) for detail in details]
        ids = [(row[0],) for row in rows]
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                # plain executemany: sqlite-utils' insert_all commits on its own, and cursor and rows
                # must commit together (that is what makes a kill -9 harmless)
                self.conn.executemany(f"DELETE FROM {text_index.TABLE} WHERE id = ?", ids)
                self.conn.executemany(f"INSERT INTO {text_index.TABLE} VALUES (?, ?, ?, ?, ?)", rows)
                self.conn.execute(
                    "UPDATE meta SET value = max(value, ?) WHERE key = ?", (rows[-1][0], text_index.CURSOR_KEY)
                )
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        return True

    def _clean(self) -> bool:
        """After evictions or a purge: delete rows whose span is gone, CLEAN_BATCH rows a transaction."""
        evicted = self._meta_int("evicted_spans")
        top = self.conn.execute("SELECT ifnull(max(id), 0) FROM spans").fetchone()[0]
        cursor = self._meta_int(text_index.CURSOR_KEY)
        if evicted == self._meta_int(text_index.CLEANED_KEY) and cursor <= top:
            return False
        done = 0
        while True:
            with self.lock:
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    ids = [r[0] for r in self.conn.execute(
                        f"SELECT id FROM {text_index.TABLE} WHERE id > ? ORDER BY id LIMIT ?", (done, CLEAN_BATCH))]  # fmt: skip
                    if ids:
                        self.conn.execute(
                            f"DELETE FROM {text_index.TABLE} WHERE id BETWEEN ? AND ? AND NOT EXISTS (SELECT 1 FROM "
                            f"spans s WHERE s.id = {text_index.TABLE}.id AND s.span_id = {text_index.TABLE}.span_id)",
                            (ids[0], ids[-1]),
                        )
                        done = ids[-1]
                    else:  # finished: remember what was cleaned; after a purge, index from the start again
                        self.conn.execute(
                            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                            (text_index.CLEANED_KEY, evicted),
                        )
                        if cursor > top:
                            self.conn.execute("UPDATE meta SET value = ? WHERE key = ?",
                                              (min(cursor, top), text_index.CURSOR_KEY))  # fmt: skip
                    self.conn.execute("COMMIT")
                except BaseException:
                    self.conn.execute("ROLLBACK")
                    raise
            if not ids:
                return True

    def catch_up(self) -> int:
        """Index until nothing is left (``tracetui reindex``, tests); returns the steps taken."""
        steps = 0
        while self.step():
            steps += 1
        return steps


def reindex(path: Path, policy: ContentPolicy | None = None) -> None:
    """Rebuild the index from nothing (``tracetui reindex``), with the recorded policy unless given one."""
    conn = connect_writer(Path(path))
    try:
        recorded = ContentPolicy.from_json(text_index.meta_value(conn, text_index.POLICY_KEY))
        with WriteLock(path):
            text_index.rebuild(conn)
    finally:
        conn.close()
    indexer = Indexer(path, policy or recorded)
    try:
        indexer.catch_up()
    finally:
        indexer.close()


def run(path: Path, policy: ContentPolicy, should_stop: Callable[[], bool]) -> None:
    """Index as spans arrive until ``should_stop()``; the loop of ``tracetui job indexer``."""
    indexer = Indexer(path, policy)
    try:
        while not should_stop():
            try:
                busy = indexer.step()
            except sqlite3.OperationalError as exc:  # e.g. the disk is full: try again later
                print(f"tracetui indexer: {exc}", flush=True)
                busy = False
            if not busy:
                time.sleep(IDLE_S)
    finally:
        indexer.close()


def main(argv: list[str]) -> int:
    """``tracetui job indexer --db PATH [--no-content] [--redact P]...``: exits with its parent."""
    parser = argparse.ArgumentParser(prog="tracetui job indexer")
    parser.add_argument("--db", required=True, type=Path)
    parser.add_argument("--no-content", action="store_true")
    parser.add_argument("--redact", action="append", default=[])
    args = parser.parse_args(argv)
    policy = ContentPolicy(not args.no_content, tuple(args.redact))
    parent = os.getppid()
    try:
        run(args.db, policy, lambda: os.getppid() != parent)
    except KeyboardInterrupt:
        pass
    return 0

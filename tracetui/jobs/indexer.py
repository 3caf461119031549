"""The background indexer: the full-text index and the JSON attributes, off the acknowledgement path.

``tracetui serve`` starts it as a process of its own (``tracetui job indexer``), so the
receiver acknowledges exports without extracting any text. It follows ``spans.id`` (the
storage order) from the cursor kept in ``meta`` (``index_cursor``): each step reads the
next batch through the store's reader (tracetui.store.reader, so however ``raw`` is
stored reaches it), extracts the text (tracetui.llm.content) and writes the batch and the
cursor in one small transaction under the receiver's write lock. A restart, or a
``kill -9`` at any moment, resumes from the last committed cursor: nothing is indexed
twice or skipped.

Log records can arrive after their span was indexed (the official OTel OpenAI
instrumentation, among others, sends message content as log events, exported on their
own schedule). A second cursor follows ``logs.id`` (``index_log_cursor``): each step
also looks at the log records that arrived since, and indexes again the spans among
theirs that were indexed already, in the same kind of small transaction. A span indexed
later reads its log records then.

After evictions (meta ``evicted_spans`` changed) it deletes, in small batches too, the
rows whose span is gone; searches skip such rows meanwhile.

The policy it was started with is recorded in the database (meta ``content_policy``);
every export follows it (tracetui.query.scrub). When the index was built under another
policy, it is rebuilt from nothing, so that no copy keeps what the new policy keeps out.
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
from tracetui.store.schema import SchemaTooNew, connect_writer

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
            if self._built_under() not in (None, policy):
                print("tracetui indexer: the content policy changed: rebuilding the full-text index", flush=True)
                text_index.rebuild(self.conn)
            text_index.record_policy(self.conn, policy)
            text_index.set_meta(self.conn, text_index.INDEX_POLICY_KEY, policy.to_json())
            if text_index.meta_value(self.conn, text_index.CURSOR_KEY) is None:
                # nothing indexed yet: every span will be read with the log records stored by then
                self._write("INSERT INTO meta(key, value) VALUES (?, 0)", (text_index.CURSOR_KEY,))
                self._write("INSERT OR IGNORE INTO meta(key, value) SELECT ?, ifnull(max(id), 0) FROM logs",
                            (text_index.LOG_CURSOR_KEY,))  # fmt: skip
            else:  # an index made before late log records were followed: look at them all once
                self._write("INSERT OR IGNORE INTO meta(key, value) VALUES (?, 0)", (text_index.LOG_CURSOR_KEY,))

    def _built_under(self) -> ContentPolicy | None:
        """The policy `span_text` holds copies under (None when nothing was indexed yet)."""
        if text_index.meta_value(self.conn, text_index.CURSOR_KEY) is None:
            return None
        built = text_index.meta_value(self.conn, text_index.INDEX_POLICY_KEY)
        # before index_policy existed, the indexer recorded its own policy as content_policy
        return ContentPolicy.from_json(built or text_index.meta_value(self.conn, text_index.POLICY_KEY))

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
        """Index the next batch of late log records and of spans, or clean up after evictions; False when there
        was nothing to do."""
        if self._clean():
            return True
        # Log records up to `logs_top` are read with every span indexed from here on; the spans indexed before
        # already account for those up to the log cursor. So the late ones are those in between, on spans
        # indexed before: no span is indexed twice for a log record it was read with.
        logs_top = self.conn.execute("SELECT ifnull(max(id), 0) FROM logs").fetchone()[0]
        late = self._index_late_logs(logs_top)
        spans = self._index_spans()
        return late or spans

    def _index_spans(self) -> bool:
        cursor = self._meta_int(text_index.CURSOR_KEY)
        details = self.reader.span_details_after(cursor, self.batch)
        if not details:
            return False
        self._commit([_row(detail, self.policy) for detail in details], text_index.CURSOR_KEY, details[-1].row["id"])
        return True

    def _index_late_logs(self, logs_top: int) -> bool:
        """Index again the spans indexed before whose log records arrived since (up to ``logs_top``)."""
        after = self._meta_int(text_index.LOG_CURSOR_KEY)
        if after > logs_top:  # after a purge (ids start again): follow from the start
            self._commit([], text_index.LOG_CURSOR_KEY, logs_top, grow=False)
            return False
        if after == logs_top:
            return False
        found = self.conn.execute(
            "SELECT l.id, s.id FROM (SELECT id, trace_id, span_id FROM logs WHERE id > ? AND id <= ? ORDER BY id "
            "LIMIT ?) l LEFT JOIN spans s ON s.trace_id = l.trace_id AND s.span_id = l.span_id AND s.id <= ? "
            "ORDER BY l.id",
            (after, logs_top, self.batch, self._meta_int(text_index.CURSOR_KEY)),
        ).fetchall()
        # all of them read: the cursor goes to logs_top (records deleted meanwhile need no look)
        cursor = found[-1][0] if len(found) == self.batch else logs_top
        span_ids = sorted({span for _, span in found if span is not None})
        details = (
            self.reader.span_details_by_id(f"s.id IN ({','.join('?' * len(span_ids))})", span_ids) if span_ids else []
        )
        self._commit([_row(detail, self.policy) for detail in details], text_index.LOG_CURSOR_KEY, cursor)
        return bool(found)

    def _commit(self, rows: list[tuple], cursor_key: str, cursor: int, grow: bool = True) -> None:
        """Replace ``rows`` in `span_text` and move the cursor ``cursor_key`` to ``cursor``, in one transaction."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                # plain executemany: sqlite-utils' insert_all commits on its own, and cursor and rows
                # must commit together (that is what makes a kill -9 harmless)
                self.conn.executemany(f"DELETE FROM {text_index.TABLE} WHERE id = ?", [(row[0],) for row in rows])
                self.conn.executemany(f"INSERT INTO {text_index.TABLE} VALUES (?, ?, ?, ?, ?)", rows)
                update = "max(value, ?)" if grow else "?"
                self.conn.execute(f"UPDATE meta SET value = {update} WHERE key = ?", (cursor, cursor_key))
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

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
    except SchemaTooNew:  # the receiver beside it says so, once
        return 1
    except KeyboardInterrupt:
        pass
    return 0

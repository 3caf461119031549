"""The full-text index of conversations: the `span_text` table and its FTS5 index.

`span_text` (schema v10) holds, per span, the text worth searching and the
attributes as JSON; the background indexer (tracetui.jobs.indexer) fills it off the
acknowledgement path. sqlite-utils creates the FTS5 table over it with the triggers
that keep the two in step (``enable_fts(..., create_triggers=True)``), and rebuilds
it; the index and its triggers sit on `span_text` only, never on `spans`, so the
receiver's inserts pay nothing for search.

A `span_text` row whose span is gone (evicted, purged, its rowid reused by another
span) is never returned: every search joins `spans` on id *and* span id. The
indexer deletes such rows in small batches after evictions.

Searches return the newest matches first (``ORDER BY rowid DESC``, which FTS5
answers from its index without ranking every match): a common word over a million
spans costs the same as a rare one for the first page.
"""

from __future__ import annotations

import re
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracetui.model.config import ContentPolicy
from tracetui.model.filter import FilterError
from tracetui.store.lock import WriteLock
from tracetui.store.schema import connect_reader, connect_writer

if TYPE_CHECKING:
    import sqlite_utils

TABLE = "span_text"
FTS = "span_text_fts"
#: meta keys: the last spans.id indexed, the evicted-span count seen by the last clean-up, the content policy.
CURSOR_KEY = "index_cursor"
CLEANED_KEY = "index_cleaned"
POLICY_KEY = "content_policy"
#: meta keys: the last logs.id looked at for late log records, and the policy `span_text` was built under.
LOG_CURSOR_KEY = "index_log_cursor"
INDEX_POLICY_KEY = "index_policy"
#: Snippet markers: the match is highlighted between these (the CLI draws them bold, --json keeps them).
MARK_OPEN, MARK_CLOSE = "\x02", "\x03"
#: "indexing N behind" counts at most this far (a count is a scan of the rows behind).
MAX_BEHIND_COUNT = 100_000


def _sqlite_utils(conn: sqlite3.Connection) -> sqlite_utils.Database:
    """sqlite-utils over ``conn``, imported only here (creating or dropping the index) and without pandas.

    sqlite-utils imports pandas and numpy at import when they are installed (chdb
    brings them), only to map their types for inserts, which we never make through
    it: that cost each process that imported it about 75 MB of memory and half a
    second. They are hidden from that one import; nothing else is affected.
    """
    hidden = [name for name in ("pandas", "numpy") if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # "import pandas" raises ImportError
    try:
        import sqlite_utils
    finally:
        for name in hidden:
            del sys.modules[name]
    return sqlite_utils.Database(conn, execute_plugins=False)


def ensure_text_index(conn: sqlite3.Connection) -> None:
    """Create the FTS5 index over `span_text` and its triggers if missing (sqlite-utils; a no-op when present).

    Runs outside any transaction: sqlite-utils creates it with ``executescript``.
    Two processes doing it at once: the second finds it made.
    """
    if has_text_index(conn):
        return
    db = _sqlite_utils(conn)
    try:
        db[TABLE].enable_fts(["content"], create_triggers=True, replace=True)  # type: ignore[union-attr]
    except sqlite3.OperationalError as exc:
        if "already exists" not in str(exc):
            raise


def has_text_index(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (FTS,)).fetchone() is not None


def rebuild(conn: sqlite3.Connection) -> None:
    """Empty `span_text` and drop its FTS index (``tracetui reindex``), then create the index anew, empty."""
    db = _sqlite_utils(conn)
    if has_text_index(conn):
        db[TABLE].disable_fts()  # type: ignore[union-attr]
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(f"DELETE FROM {TABLE}")
        conn.execute(
            "DELETE FROM meta WHERE key IN (?, ?, ?, ?)", (CURSOR_KEY, CLEANED_KEY, LOG_CURSOR_KEY, INDEX_POLICY_KEY)
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    ensure_text_index(conn)


def meta_value(conn: sqlite3.Connection, key: str) -> Any:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def set_meta(conn: sqlite3.Connection, key: str, value: object) -> None:
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value)
    )


def recorded_policy(conn: sqlite3.Connection) -> ContentPolicy | None:
    """The content policy the database records (its receiver's ``--no-content`` / ``--redact``), None if none."""
    text = meta_value(conn, POLICY_KEY)
    return ContentPolicy.from_json(text) if text else None


def record_policy(conn: sqlite3.Connection, policy: ContentPolicy) -> None:
    """Record the policy every copy of this database's data follows (the caller holds the write lock)."""
    set_meta(conn, POLICY_KEY, policy.to_json())


def record_policy_at(path: Path, policy: ContentPolicy) -> None:
    """Record ``policy`` in the database at ``path`` (the receiver, as it starts), under the write lock."""
    conn = connect_writer(path)
    try:
        with WriteLock(path):
            record_policy(conn, policy)
    finally:
        conn.close()


def policy_of(path: Path) -> ContentPolicy | None:
    """The policy the database at ``path`` records; None when it records none or cannot be read (yet)."""
    if not path.exists():
        return None
    try:
        conn = connect_reader(path)
    except (sqlite3.Error, OSError, RuntimeError):  # a bad or newer file: the receiver says so when it opens it
        return None
    try:
        return recorded_policy(conn)
    except sqlite3.Error:
        return None
    finally:
        conn.close()


_FTS_ERROR = re.compile(r"^(?:fts5: )?(.*)$")


def syntax_message(exc: sqlite3.OperationalError) -> str | None:
    """The user-facing message for an FTS5 query SQLite refused, or None when ``exc`` is about something else."""
    text = str(exc)
    if "fts5" in text or "unknown special query" in text or "no such column" in text:
        detail = _FTS_ERROR.sub(r"\1", text)
        return f"bad text: search syntax ({detail}); put words with special characters in double quotes"
    return None


def match_sql(span_alias: str) -> str:
    """SQL true when the span ``span_alias`` (a `spans` row) has indexed text matching the one ``?`` parameter."""
    return (
        f"{span_alias}.id IN (SELECT tt_f.rowid FROM {FTS} tt_f WHERE {FTS} MATCH ?) "
        f"AND EXISTS (SELECT 1 FROM {TABLE} tt_x WHERE tt_x.id = {span_alias}.id AND tt_x.span_id = {span_alias}.span_id)"
    )


def trace_match_sql(per_run: bool = False) -> str:
    """SQL true when a span of the `traces` row has indexed text matching the one ``?`` parameter.

    By default every match's run is collected once (cost grows with the matches: 1.3 s for a word in
    489k of 1.1M spans); ``per_run`` looks each run's spans up in the index instead (cost grows with
    the runs checked, ~25 µs a span), for a search that matches densely (see ``per_run_pays``).
    """
    if per_run:
        return (
            f"EXISTS (SELECT 1 FROM spans tt_s JOIN {FTS} tt_f ON tt_f.rowid = tt_s.id "
            f"WHERE tt_s.trace_id = traces.trace_id AND {FTS} MATCH ? "
            f"AND EXISTS (SELECT 1 FROM {TABLE} tt_x WHERE tt_x.id = tt_s.id AND tt_x.span_id = tt_s.span_id))"
        )
    return (
        f"traces.trace_id IN (SELECT tt_t.trace_id FROM {FTS} tt_f JOIN {TABLE} tt_t ON tt_t.id = tt_f.rowid "
        f"JOIN spans tt_s ON tt_s.id = tt_t.id AND tt_s.span_id = tt_t.span_id WHERE {FTS} MATCH ?)"
    )


#: A search matching at least this many spans is dense: the newest runs are likely to match, so the
#: list checks runs newest first (``trace_match_sql(per_run=True)``) within a bounded window.
DENSE_MATCHES = 20_000


def per_run_pays(conn: sqlite3.Connection, query: str) -> bool:
    """Whether checking runs one by one is the cheaper way to list the runs matching ``query``.

    True for a query matching at least DENSE_MATCHES spans (counted up to that, from the index
    alone: ~1 ms), unless it has a prefix (``word*``): FTS5 merges a prefix's whole doclist on every
    lookup, 38 ms each on 1.1M spans, so those are always collected once. False when there is no
    index or the query is malformed (the query itself then says why).
    """
    if "*" in query:
        return False
    try:
        row = conn.execute(f"SELECT count(*) FROM (SELECT 1 FROM {FTS} WHERE {FTS} MATCH ? LIMIT ?)",
                           (query, DENSE_MATCHES)).fetchone()  # fmt: skip
    except sqlite3.OperationalError:
        return False
    return bool(row) and row[0] >= DENSE_MATCHES


def search(conn: sqlite3.Connection, query: str, limit: int = 50) -> list[dict[str, Any]]:
    """The newest ``limit`` spans whose text matches the FTS5 ``query``, with their run and a snippet.

    Raises FilterError for a query FTS5 refuses, and when there is no index yet.
    The snippet has the matched words between MARK_OPEN and MARK_CLOSE.
    """
    if not has_text_index(conn):
        raise FilterError("there is no full-text index yet: run `tracetui serve` (it indexes) or `tracetui reindex`")
    sql = (
        f"SELECT s.trace_id, s.span_id, s.name, s.service, s.start_ns, s.end_ns, s.llm_kind, s.request_model, "
        f"coalesce(tr.root_name, tr.first_name) AS run, "
        f"snippet({FTS}, 0, '{MARK_OPEN}', '{MARK_CLOSE}', '…', 16) AS snippet "
        f"FROM {FTS} f JOIN {TABLE} t ON t.id = f.rowid "
        f"JOIN spans s ON s.id = t.id AND s.span_id = t.span_id "
        f"LEFT JOIN traces tr ON tr.trace_id = s.trace_id "
        f"WHERE {FTS} MATCH ? ORDER BY f.rowid DESC LIMIT ?"
    )
    try:
        cursor = conn.execute(sql, (query, int(limit)))
    except sqlite3.OperationalError as exc:
        message = syntax_message(exc)
        if message is None:
            raise
        raise FilterError(message) from None
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

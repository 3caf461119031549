"""The database schema, its migrations and how connections are opened.

One SQLite file in WAL mode is the only channel between the receiver process
(one writer connection) and any number of UI or scripting processes (read-only
connections). The schema version lives in ``PRAGMA user_version``; migrations
only ever move forward.

Storage choices worth knowing before changing anything here:

* ``spans.raw`` holds the span exactly as it arrived (a serialized OTLP
  ``Span`` message: attributes, events, links, status, dropped counts). It is
  lossless (int vs double, bytes values) and costs one C call to produce, where
  flattening attributes to JSON in Python would cost most of the ingest budget.
  The columns beside it are what queries need, plus the normalized LLM fields
  (``tracetui reindex`` can recompute those from ``raw``).
* Resource and instrumentation scope repeat for every span of a request, so
  they are stored once in ``sources`` and referenced by id.
* Long JSON strings inside a span (system prompts, tool definitions, earlier
  turns of a conversation: agents re-send them with every call) are stored
  once, in ``blobs``, keyed by digest; the span's ``raw`` then holds its bytes
  with those strings replaced by their digests (a *compact raw*, see
  tracetui.store.blobs), from which the exact original bytes are rebuilt by
  concatenation. Read ``raw`` only through ``blobs.Blobs.expand``. Retention
  deletes the blobs no span uses any more.
* ``traces`` holds one row per trace, maintained by the writer in the same
  transaction as the spans it summarizes.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

SCHEMA_VERSION = 15
#: Page size of a new database file (tracetui.store.blobs keeps span rows small; see connect_writer).
PAGE_SIZE = 8192

_V1 = """
CREATE TABLE sources (
    id            INTEGER PRIMARY KEY,
    digest        BLOB NOT NULL UNIQUE,
    service       TEXT NOT NULL,
    resource      BLOB NOT NULL,      -- serialized opentelemetry.proto.resource.v1.Resource
    scope_name    TEXT NOT NULL DEFAULT '',
    scope_version TEXT NOT NULL DEFAULT '',
    scope         BLOB,               -- serialized InstrumentationScope
    schema_url    TEXT NOT NULL DEFAULT ''
);

CREATE TABLE spans (
    id                 INTEGER PRIMARY KEY,
    trace_id           BLOB NOT NULL,
    span_id            BLOB NOT NULL,
    parent_span_id     BLOB,            -- NULL for a root span
    name               TEXT NOT NULL,
    kind               INTEGER NOT NULL,  -- OTLP SpanKind
    source_id          INTEGER NOT NULL REFERENCES sources(id),
    service            TEXT NOT NULL,
    start_ns           INTEGER NOT NULL,
    end_ns             INTEGER NOT NULL,
    status_code        INTEGER NOT NULL,  -- 0 unset, 1 ok, 2 error
    status_message     TEXT NOT NULL DEFAULT '',
    dropped_attributes INTEGER NOT NULL DEFAULT 0,
    dropped_events     INTEGER NOT NULL DEFAULT 0,
    dropped_links      INTEGER NOT NULL DEFAULT 0,
    raw                BLOB NOT NULL,     -- serialized opentelemetry.proto.trace.v1.Span
    -- normalized LLM fields (tracetui.llm.semconv); NULL when not applicable
    llm_kind           TEXT,
    provider           TEXT,
    request_model      TEXT,
    response_model     TEXT,
    input_tokens       INTEGER,
    output_tokens      INTEGER,
    cache_read_tokens  INTEGER,
    cache_write_tokens INTEGER,
    reasoning_tokens   INTEGER,
    streaming          INTEGER,
    ttft_ns            INTEGER,
    finish_reason      TEXT,
    session_id         TEXT,
    user_id            TEXT,
    prompt_name        TEXT,
    prompt_version     TEXT,
    error_type         TEXT,
    cost_usd           REAL,
    cost_source        TEXT,
    provenance         TEXT             -- JSON: canonical field -> where it came from
);
CREATE UNIQUE INDEX spans_by_trace ON spans(trace_id, span_id);

CREATE TABLE traces (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order of the first span
    trace_id       BLOB NOT NULL UNIQUE,
    root_span_id   BLOB,
    root_name      TEXT,               -- NULL until the root span arrives ("no root yet")
    root_start_ns  INTEGER,
    first_name     TEXT NOT NULL,      -- name of the earliest span seen, for rootless traces
    service        TEXT NOT NULL,
    start_ns       INTEGER NOT NULL,
    end_ns         INTEGER NOT NULL,
    span_count     INTEGER NOT NULL,
    error_count    INTEGER NOT NULL,
    llm_calls      INTEGER NOT NULL DEFAULT 0,
    input_tokens   INTEGER NOT NULL DEFAULT 0,
    output_tokens  INTEGER NOT NULL DEFAULT 0,
    cost_usd       REAL,
    updated_ns     INTEGER NOT NULL    -- wall clock of the last change
);
CREATE INDEX traces_by_start ON traces(start_ns);

-- Small key/value facts: running counters, the receiver's status.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value
);
"""

#: Forward migrations: MIGRATIONS[n] moves a database from version n to n + 1.
# v2: log records (GenAI events: evaluation results, message content), joined to
# their span by trace and span id.
_V2 = """
CREATE TABLE logs (
    id              INTEGER PRIMARY KEY,
    digest          BLOB NOT NULL UNIQUE,   -- makes a resent export idempotent
    trace_id        BLOB,
    span_id         BLOB,
    time_ns         INTEGER NOT NULL,
    observed_ns     INTEGER NOT NULL,
    severity_number INTEGER NOT NULL,
    severity_text   TEXT NOT NULL,
    event_name      TEXT,
    source_id       INTEGER NOT NULL REFERENCES sources(id),
    service         TEXT NOT NULL,
    raw             BLOB NOT NULL            -- serialized opentelemetry.proto.logs.v1.LogRecord
);
CREATE INDEX logs_by_span ON logs(trace_id, span_id);
"""


# v3: the timing model (docs/timing.md). Span-local facts from the
# normalizer, cross-span ones (retry, fallback) from tracetui.llm.timing, and the
# trace's wall-clock split into where the time went.
_V3 = """
ALTER TABLE spans ADD COLUMN link_span_id BLOB;
ALTER TABLE spans ADD COLUMN resend_count INTEGER;
ALTER TABLE spans ADD COLUMN attempt_offset_ns INTEGER;
ALTER TABLE spans ADD COLUMN decode_ns INTEGER;
ALTER TABLE spans ADD COLUMN tokens_per_s REAL;
ALTER TABLE spans ADD COLUMN is_retry INTEGER NOT NULL DEFAULT 0;
ALTER TABLE spans ADD COLUMN is_fallback INTEGER NOT NULL DEFAULT 0;
ALTER TABLE spans ADD COLUMN retry_ns INTEGER;
ALTER TABLE traces ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE traces ADD COLUMN fallbacks INTEGER NOT NULL DEFAULT 0;
ALTER TABLE traces ADD COLUMN split_ttft_ns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE traces ADD COLUMN split_decode_ns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE traces ADD COLUMN split_response_ns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE traces ADD COLUMN split_retry_ns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE traces ADD COLUMN split_fallback_ns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE traces ADD COLUMN split_tool_ns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE traces ADD COLUMN split_other_ns INTEGER NOT NULL DEFAULT 0
"""


# v4: cost and evaluations. `counted` says whether an LLM span is in the
# totals (leaf calls only, one of each duplicated request); evaluations are
# many per span, deduplicated when one result arrives by several routes.
_V4 = """
ALTER TABLE spans ADD COLUMN response_id TEXT;
ALTER TABLE spans ADD COLUMN counted INTEGER;
CREATE INDEX spans_by_response_id ON spans(response_id) WHERE response_id IS NOT NULL;
ALTER TABLE traces ADD COLUMN unpriced_calls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE traces ADD COLUMN session_id TEXT;
CREATE INDEX traces_by_session ON traces(session_id) WHERE session_id IS NOT NULL;
CREATE TABLE evaluations (
    id             INTEGER PRIMARY KEY,
    trace_id       BLOB NOT NULL,
    span_id        BLOB,            -- the evaluated span; NULL until found by response id
    response_id    TEXT,
    name           TEXT NOT NULL,
    score          REAL,
    label          TEXT,
    explanation    TEXT,
    source         TEXT NOT NULL,
    time_ns        INTEGER NOT NULL
);
CREATE INDEX evaluations_by_span ON evaluations(trace_id, span_id);
CREATE INDEX evaluations_unresolved ON evaluations(response_id) WHERE span_id IS NULL;
CREATE UNIQUE INDEX evaluations_once ON evaluations(
    trace_id, ifnull(span_id, ifnull(response_id, '')), name, ifnull(score, 'none'), ifnull(label, '')
)
"""


# v5: the slowest LLM or tool call of each trace, for the list's drill-down column.
_V5 = """
ALTER TABLE traces ADD COLUMN slowest_span_id BLOB;
ALTER TABLE traces ADD COLUMN slowest_name TEXT;
ALTER TABLE traces ADD COLUMN slowest_ns INTEGER
"""


# v6: traces a UI is showing, so retention never evicts them from under it.
_V6 = """
CREATE TABLE pins (
    owner      TEXT PRIMARY KEY,   -- one row per running UI (pid@host)
    trace_id   BLOB NOT NULL,
    updated_ns INTEGER NOT NULL
)
"""


# v7: GenAI metrics (tracetui.otlp.metrics, tracetui.store.metrics). A series is a
# metric + source + the attributes kept; its points are per-interval deltas
# (cumulative exports are turned into deltas against metric_cumulative, the
# last point seen of each exporter series and start time); exemplars that name
# a span wait in metric_exemplars until that span can take their value.
_V7 = """
CREATE TABLE metric_series (
    id          INTEGER PRIMARY KEY,     -- derived from digest, like sources.id
    digest      BLOB NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    unit        TEXT NOT NULL,
    kind        TEXT NOT NULL,           -- 'histogram' or 'sum'
    source_id   INTEGER NOT NULL REFERENCES sources(id),
    service     TEXT NOT NULL,
    attributes  TEXT NOT NULL,           -- the kept attributes, JSON
    model       TEXT,
    provider    TEXT,
    operation   TEXT,
    error_type  TEXT,
    token_type  TEXT
);
CREATE INDEX metric_series_by_name ON metric_series(name, model);
CREATE TABLE metric_points (
    id          INTEGER PRIMARY KEY,
    series_id   INTEGER NOT NULL REFERENCES metric_series(id),
    stream      INTEGER NOT NULL,        -- hash of the exporter's own series (all its attributes)
    start_ns    INTEGER NOT NULL,        -- the interval this delta covers
    time_ns     INTEGER NOT NULL,
    count       INTEGER,                 -- histograms
    sum         REAL,
    min         REAL,                    -- of the interval, or bounds from the cumulative series
    max         REAL,
    bounds      TEXT,                    -- JSON array of explicit bounds
    counts      TEXT,                    -- JSON array of bucket counts
    value       REAL,                    -- sums
    dropped     INTEGER NOT NULL DEFAULT 0  -- attributes dropped from this point
);
CREATE UNIQUE INDEX metric_points_once ON metric_points(series_id, stream, start_ns, time_ns);
CREATE INDEX metric_points_by_time ON metric_points(time_ns);
CREATE TABLE metric_cumulative (
    series_id   INTEGER NOT NULL,
    stream      INTEGER NOT NULL,
    start_ns    INTEGER NOT NULL,
    time_ns     INTEGER NOT NULL,
    count       INTEGER,
    sum         REAL,
    counts      TEXT,
    bounds      TEXT,
    value       REAL,
    PRIMARY KEY (series_id, stream, start_ns)
) WITHOUT ROWID;
CREATE TABLE metric_exemplars (
    trace_id    BLOB NOT NULL,
    span_id     BLOB NOT NULL,
    metric      TEXT NOT NULL,
    value_ns    INTEGER NOT NULL,
    time_ns     INTEGER NOT NULL,
    applied     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (trace_id, span_id, metric)
) WITHOUT ROWID;
CREATE INDEX metric_exemplars_pending ON metric_exemplars(trace_id) WHERE applied = 0
"""


# v8: timing honesty (issue 13). An HTTP client span's status, so the attempts under a
# model call show its retries; where a retry was seen and where in its span the final
# attempt began; calls that reported no token counts (the run's totals are incomplete).
_V8 = """
ALTER TABLE spans ADD COLUMN http_status INTEGER;
ALTER TABLE spans ADD COLUMN retry_offset_ns INTEGER;
ALTER TABLE spans ADD COLUMN retry_source TEXT;
ALTER TABLE traces ADD COLUMN tokenless_calls INTEGER NOT NULL DEFAULT 0
"""
# v9: the output cap of each call (issue 18: cohorts compare fairly only with equal caps).
# Rows stored before it keep NULL until `tracetui reindex` reads their raw spans again.
_V9 = """
ALTER TABLE spans ADD COLUMN max_tokens INTEGER
"""
# v10: no index on spans.response_id (issue 19: it cost about 9 % of ingest throughput on every
# LLM span). An evaluation that names only a response id finds its span among the spans of its own
# trace, or of the spans written after it (tracetui.store.writer.resolve_evaluations).
_V10 = """
DROP INDEX IF EXISTS spans_by_response_id
"""

# v11: the text of each span for full-text search, and its attributes as JSON (issue 21).
# Filled off the acknowledgement path by the background indexer (tracetui.jobs.indexer), which
# creates the FTS5 table and its triggers on `span_text` with sqlite-utils (never on `spans`).
# `id` is the span's `spans.id`; a row whose span is gone (evicted, purged, the id reused) is
# skipped by every search (joined on id *and* span_id) and removed by the indexer.
# `spans_json` is for sqlite-utils / Datasette users: hex ids, the main columns, attributes as JSON.
_V11 = """
CREATE TABLE span_text (
    id          INTEGER PRIMARY KEY,   -- spans.id
    trace_id    BLOB NOT NULL,
    span_id     BLOB NOT NULL,
    content     TEXT NOT NULL,         -- messages, tool arguments and results, documents, errors
    attributes  TEXT NOT NULL          -- the span's attributes, JSON (content per the content policy)
);
CREATE VIEW spans_json AS
SELECT s.id, hex(s.trace_id) AS trace_id, hex(s.span_id) AS span_id, hex(s.parent_span_id) AS parent_span_id,
       s.name, s.service, s.start_ns, s.end_ns, (s.end_ns - s.start_ns) / 1e6 AS duration_ms,
       s.status_code, s.status_message, s.llm_kind, s.provider, s.request_model, s.response_model,
       s.input_tokens, s.output_tokens, s.cost_usd, s.session_id, t.attributes
FROM spans s JOIN span_text t ON t.id = s.id AND t.span_id = s.span_id
"""

# v12: long repeated strings stored once (tracetui.store.blobs). A span's raw may now be a
# compact raw (it starts with blobs.MARK) naming blobs by digest; rows stored before keep
# their plain serialized Span and read as they are. A rowid table, not WITHOUT ROWID: blobs
# of 1-4 KB fit a rowid table's leaf pages, where an index-ordered table would spill them
# to overflow pages of their own.
# The normalizer's provenance JSON (~250 bytes, the same for every call one library records) is
# stored once in `provenances`: spans.provenance then holds its id (an 8-byte blob) (blobs.provenance_sql
# reads either); rows stored before keep their text.
_V12 = """
CREATE TABLE blobs (
    id         INTEGER PRIMARY KEY,
    digest     BLOB NOT NULL UNIQUE,   -- blake2b-128 of bytes
    bytes      BLOB NOT NULL,
    last_span  INTEGER NOT NULL        -- spans.id at least as high as its users' (less blobs.SLACK)
);
CREATE INDEX blobs_by_last_span ON blobs(last_span);
CREATE TABLE provenances (
    id         BLOB PRIMARY KEY,       -- its 8-byte digest (blobs.provenance_id)
    json       TEXT NOT NULL           -- the normalizer's provenance JSON
) WITHOUT ROWID
"""


# v13: the Stats rollup (issue 19; tracetui.store.rollup). `stats_bins`: LLM-call figures per grouping
# (model, prompt_version, route), key and time bin at three sizes (10 s, 10 min, 6 h), percentile
# sketches included; `stats_contrib`: what each trace added there, so a trace that changes (late spans,
# evaluations, reindex, eviction) is taken out and put back exactly. The triggers queue the traces
# whose figures changed outside the writer's own hook (evaluations from the judge or the UI, span
# updates, deletions) in `stats_dirty`; readers correct for that queue until a writer drains it.
# (The triggers test for the row rather than INSERT OR IGNORE: the conflict clause of the statement that
# fired them would override theirs.) A database that already holds traces is filled in the background
# (`tracetui job rollup`): meta `rollup_to` is the last trace row to fill, `rollup_at` how far it got.
_V13 = (
    """
CREATE TABLE stats_bins (
    grouping   TEXT NOT NULL,
    level      INTEGER NOT NULL,
    bin        INTEGER NOT NULL,
    key        TEXT NOT NULL,
    calls      INTEGER NOT NULL,
    runs       INTEGER NOT NULL,
    errors     INTEGER NOT NULL,
    retries    INTEGER NOT NULL,
    fallbacks  INTEGER NOT NULL,
    cost_sum   REAL NOT NULL,
    cost_n     INTEGER NOT NULL,
    rate_sum   REAL NOT NULL,
    rate_n     INTEGER NOT NULL,
    score_sum  REAL NOT NULL,
    score_n    INTEGER NOT NULL,
    durations  TEXT NOT NULL,
    ttfts      TEXT NOT NULL,
    PRIMARY KEY (grouping, level, bin, key)
) WITHOUT ROWID
""",
    """
CREATE TABLE stats_contrib (  -- a rowid table: rows of ~1 KB pack badly WITHOUT ROWID (SQLite's advice)
    trace_id  BLOB PRIMARY KEY,
    contrib   TEXT NOT NULL
)
""",
    """
CREATE TABLE stats_dirty (
    trace_id  BLOB PRIMARY KEY
) WITHOUT ROWID
""",
    """
CREATE TRIGGER stats_dirty_eval_insert AFTER INSERT ON evaluations WHEN new.span_id IS NOT NULL
BEGIN INSERT INTO stats_dirty(trace_id) SELECT new.trace_id WHERE NOT EXISTS (SELECT 1 FROM stats_dirty WHERE trace_id = new.trace_id); END
""",
    """
CREATE TRIGGER stats_dirty_eval_update AFTER UPDATE ON evaluations WHEN new.span_id IS NOT NULL
BEGIN INSERT INTO stats_dirty(trace_id) SELECT new.trace_id WHERE NOT EXISTS (SELECT 1 FROM stats_dirty WHERE trace_id = new.trace_id); END
""",
    """
CREATE TRIGGER stats_dirty_eval_delete AFTER DELETE ON evaluations WHEN old.span_id IS NOT NULL
BEGIN INSERT INTO stats_dirty(trace_id) SELECT old.trace_id WHERE NOT EXISTS (SELECT 1 FROM stats_dirty WHERE trace_id = old.trace_id); END
""",
    """
CREATE TRIGGER stats_dirty_span_update AFTER UPDATE ON spans WHEN new.llm_kind = 'llm' OR old.llm_kind = 'llm'
BEGIN INSERT INTO stats_dirty(trace_id) SELECT new.trace_id WHERE NOT EXISTS (SELECT 1 FROM stats_dirty WHERE trace_id = new.trace_id); END
""",
    """
CREATE TRIGGER stats_dirty_run_update AFTER UPDATE OF root_name, first_name, service ON traces
WHEN new.llm_calls > 0 AND (old.root_name IS NOT new.root_name OR old.first_name IS NOT new.first_name
                            OR old.service IS NOT new.service)
BEGIN INSERT INTO stats_dirty(trace_id) SELECT new.trace_id WHERE NOT EXISTS (SELECT 1 FROM stats_dirty WHERE trace_id = new.trace_id); END
""",
    """
CREATE TRIGGER stats_dirty_run_delete AFTER DELETE ON traces
WHEN EXISTS (SELECT 1 FROM stats_contrib WHERE trace_id = old.trace_id)
BEGIN INSERT INTO stats_dirty(trace_id) SELECT old.trace_id WHERE NOT EXISTS (SELECT 1 FROM stats_dirty WHERE trace_id = old.trace_id); END
""",
    """
INSERT OR REPLACE INTO meta(key, value) VALUES ('rollup_to', (SELECT ifnull(max(id), 0) FROM traces))
""",
    """
INSERT OR REPLACE INTO meta(key, value) VALUES ('rollup_at', 0)
""",
)


# v15: the Stats rollup's filter cube (tracetui.store.rollup, "Filtered Stats"). `stats_cells`: each
# combination of the call columns a grouping-dimension filter reads (model, provider, service, prompt) with the
# three group keys, once; its columns are named as in `spans`, so a filter compiled for spans
# (tracetui.store.filter_sql.span_where) selects the cells it matches, with the same semantics.
# `stats_bins` holds the calls' figures per cell (grouping 'cell', key: the cell's id); `stats_runs` counts
# runs by the set of cells their calls fell in, so a filtered window counts each run once. The rollup
# job refills the existing traces in the background: meta `cube_to` / `cube_at`, like `rollup_to` / `rollup_at`.
_V15 = """
CREATE TABLE stats_cells (
    id              INTEGER PRIMARY KEY,
    cell            TEXT NOT NULL UNIQUE,   -- JSON of the columns below: the cell's identity
    model_key       TEXT,
    prompt_key      TEXT,
    route           TEXT,
    request_model   TEXT,
    response_model  TEXT,
    provider        TEXT,
    prompt_name     TEXT,
    prompt_version  TEXT,
    service         TEXT,
    llm_kind        TEXT NOT NULL DEFAULT 'llm'
);
CREATE TABLE stats_runs (
    level      INTEGER NOT NULL,
    bin        INTEGER NOT NULL,
    sig        TEXT NOT NULL,
    runs       INTEGER NOT NULL,
    PRIMARY KEY (level, bin, sig)
) WITHOUT ROWID;
INSERT OR REPLACE INTO meta(key, value) VALUES ('cube_to', (SELECT ifnull(max(id), 0) FROM traces));
INSERT OR REPLACE INTO meta(key, value) VALUES ('cube_at', 0)
"""


def add_stats_rollup(conn: sqlite3.Connection) -> None:
    """Migration 12 -> 13 (issue 19, the Stats rollup): statement by statement (trigger bodies hold ';')."""
    for statement in _V13:
        conn.execute(statement)


def add_filter_cube(conn: sqlite3.Connection) -> None:
    """Migration 14 -> 15 (issue 19, Stats filtered on the grouping dimensions from the rollup)."""
    _run_script(conn, _V15)


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    """Run DDL statements inside the caller's transaction.

    (``executescript`` would COMMIT first, making a migration non-atomic.)
    """
    without_comments = re.sub(r"--[^\n]*", "", script)
    for statement in without_comments.split(";"):
        if statement.strip():
            conn.execute(statement)


def add_metric_tables(conn: sqlite3.Connection) -> None:
    """Migration 6 -> 7 (issue 13, metrics): its own function, so it can be renumbered at merge."""
    _run_script(conn, _V7)


#: Forward migrations: MIGRATIONS[n] moves a database from version n to n + 1.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    0: lambda conn: _run_script(conn, _V1),
    1: lambda conn: _run_script(conn, _V2),
    2: lambda conn: _run_script(conn, _V3),
    3: lambda conn: _run_script(conn, _V4),
    4: lambda conn: _run_script(conn, _V5),
    5: lambda conn: _run_script(conn, _V6),
    6: add_metric_tables,
    7: lambda conn: _run_script(conn, _V8),
    8: lambda conn: _run_script(conn, _V9),
    9: lambda conn: _run_script(conn, _V10),
    10: lambda conn: _run_script(conn, _V11),
    11: lambda conn: _run_script(conn, _V12),
    12: add_stats_rollup,
    13: lambda conn: None,  # v14: raws may be compressed (blobs.ZMARK); only older versions must refuse the file
    14: add_filter_cube,
}


class SchemaTooNew(RuntimeError):
    """The file was written by a newer tracetui than this one."""


def create_private_file(path: Path) -> None:
    """Create the database file readable by its owner only (traces hold prompts).

    SQLite gives the -wal and -shm files the permissions of the main file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)


def _same(value: bytes) -> bytes:
    return value


# Binding parameters: CPython's sqlite3 binds int, float and str directly but
# sends every other value (None and bytes included) through its adapter
# protocol, which looks for an adapter, then for __adapt__, then for
# __conform__ before binding it unchanged: about 0.5 µs per NULL and 1 µs per
# blob. A span row has ~40 parameters, mostly NULLs, so that lookup was half
# of the cost of an insert. Registering identity adapters for the two types
# makes the first lookup succeed (measured: 23 -> 9 µs for a 45-NULL row).
# The values bound are the same; this is process-wide and harmless elsewhere.
# a C function that returns None for any key (typeshed's dict.get overloads do not match the adapter signature)
sqlite3.register_adapter(type(None), {}.get)  # type: ignore[arg-type]
sqlite3.register_adapter(bytes, _same)


def add_meta(conn: sqlite3.Connection, **deltas: float) -> None:
    """Add to the running counters in ``meta`` (spans, traces, LLM calls, tokens, cost, evictions, metric points)."""
    conn.executemany(
        "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
        [(key, value) for key, value in deltas.items() if value],
    )


def connect_writer(path: Path) -> sqlite3.Connection:
    """Open the single read-write connection and bring the schema up to date."""
    path = Path(path)
    if not path.exists():
        create_private_file(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    # First, so that everything below waits for a process starting at the same
    # moment (switching a fresh file to WAL takes an exclusive lock) instead of failing.
    conn.execute("PRAGMA busy_timeout=5000")
    # A new file gets 8 KB pages: with span rows of 0.3-2 KB, a 4 KB leaf page left a fifth of itself
    # unused (the row that did not fit starts the next page). An existing file keeps its own size.
    conn.execute(f"PRAGMA page_size={PAGE_SIZE:d}")
    _use_wal(conn)
    # NORMAL in WAL mode: a commit survives the process being killed (the WAL is
    # written before COMMIT returns); only a power cut can lose the last commits.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA cache_size=-32000")  # 32 MB
    migrate(conn)
    from tracetui.store.text_index import ensure_text_index  # imports this module

    ensure_text_index(conn)
    return conn


def _use_wal(conn: sqlite3.Connection, timeout_s: float = 10.0) -> None:
    """Switch the file to WAL mode (once per file; a no-op afterwards).

    The switch needs the file to itself, and SQLite answers "database is
    locked" at once rather than calling the busy handler when another
    connection is in a transaction (a second process migrating a fresh file at
    the same moment): so wait and retry here.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def connect_reader(path: Path) -> sqlite3.Connection:
    """Open a read-only connection (UI and scripting commands).

    Raises FileNotFoundError when there is no database at ``path``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no tracetui database at {path}")
    ensure_schema(path)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA query_only=1")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        conn.close()
        raise SchemaTooNew(
            f"{path} was written by a newer tracetui (schema {version} > {SCHEMA_VERSION}): upgrade tracetui to open it"
        )
    return conn


def ensure_schema(path: Path) -> None:
    """Bring an existing file up to this version's schema (before opening it read-only).

    Leaves it alone when it is not writable: the reader will then say what is wrong.
    """
    path = Path(path)
    if not path.exists() or not os.access(path, os.W_OK):
        return
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            migrate(conn)
    finally:
        conn.close()


def migrate(conn: sqlite3.Connection) -> int:
    """Apply every pending migration, each in its own transaction. Returns the version.

    The version is read again inside each write transaction: two processes
    opening a fresh or old file at the same moment (two receivers, a receiver
    and a `view`) would otherwise both see the old version and both run the
    same migration, the second failing on "duplicate column name".
    """
    version = _schema_version(conn)
    while version < SCHEMA_VERSION:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = _schema_version(conn)  # another process may have migrated while we waited
            if version < SCHEMA_VERSION:
                MIGRATIONS[version](conn)
                version += 1
                conn.execute(f"PRAGMA user_version={version:d}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return version


def _schema_version(conn: sqlite3.Connection) -> int:
    """The file's schema version; raises SchemaTooNew for a file a newer tracetui wrote."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"database schema {version} is newer than this tracetui ({SCHEMA_VERSION}): upgrade tracetui to open it"
        )
    return version

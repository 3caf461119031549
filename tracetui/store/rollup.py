"""The Stats rollup: LLM-call figures kept per time bin by the writer, so Stats costs the same at any size.

Stats used to read every counted LLM call in the window (tracetui.store.stats_sql):
seconds at a million spans, half a minute at ten million. Here the writer keeps,
per grouping (model, prompt version, route), key and time bin, what
``tracetui.query.stats`` computes: calls, runs, errors, retries, fallbacks, cost,
decode rates, groundedness scores, and log-bucket sketches of durations and
time to first token (tracetui.model.sketch: every percentile within 1 % of the
exact one, and labelled so). A window then reads a few hundred rows.

**Bins.** Three sizes (:data:`LEVELS_S`: 10 s, 10 min, 6 h), each call counted
in each. A window ``[since, now]`` starts at the 10 s boundary at or before
``since`` (so "1h" counts the calls of 1 h 0 s to 1 h 10 s; the figures' label
says so) and is then covered exactly by 10 s bins up to the next 10 min
boundary, 10 min bins up to the next 6 h boundary, and 6 h bins after that: at
most 59 + 35 rows per key plus the 6 h bins. "all" reads the 6 h bins only. No
partial bin is read, so no edge needs a scan (the spans table has no index on
start time to make one cheap). Small databases are scanned instead, exactly
(tracetui.store.reader.SqliteReader.call_figures).

**Runs** (distinct traces per group, for cost per run) are not additive over
bins. Each trace counts as a run of a group in the bin of its *last* call of
that group, at every size: a trace has a call in a window ``[since, now]`` if and
only if its last one is in it, and exactly one of the bins covering the window
holds that last call. So the sum over the window's bins is exact.

**Filtered Stats.** A filter whose terms all compare the grouping dimensions
(:data:`CUBE_FIELDS`: ``model=gpt-4o``, ``prompt=triage``, ``prompt.version>5``,
``service!=shop``, ...) is answered from a cube. Each distinct combination of a
call's request and response model, provider, prompt name and version, service,
and its three group keys is a *cell* (``stats_cells``, stored once; its columns
are named as in ``spans``, so the filter compiled for spans by
tracetui.store.filter_sql selects the cells it matches, with the scan's own
semantics). The calls' figures are kept per cell like any grouping (grouping
``cell``); a filtered window sums its matching cells by group key.
Runs cannot be summed over cells: a run whose calls fall in two matching cells
of one group would count twice. So runs are counted by *signature*
(``stats_runs``, :func:`_signatures`): per bin, how many traces had their calls
in which set of cells, written so that summing a window's bins gives, for each
trace, exactly the cells it has calls in within the window. A group then counts
a trace once if any of those cells matches. Signatures repeat (the same agent
makes the same calls), so the table stays a few rows per bin.

**Exact under change.** A trace's contribution is a function of the whole trace
(its calls' flags change when siblings arrive, its route when the root arrives,
its groundedness when an evaluation does). ``stats_contrib`` keeps the calls
each trace was summed from (what it added to the 10 s bins, and so to the
coarser ones, is computed from them again), and :func:`refresh` takes that out
and puts the trace's current contribution back.
Nothing of this is on the acknowledgement path: the writer only queues in
``stats_dirty`` the traces of every commit, after retention has run
(tracetui.store.writer.Committer.commit, :func:`queue`), and triggers
(tracetui.store.schema, v13) queue the traces that anyone else changed (the
judge's and the UI's evaluations, reindex, span updates, deleted traces). The
rollup job beside the receiver (``tracetui job rollup``, tracetui.jobs.rollup)
drains the queue in small transactions. Until then a reader corrects for the
queued traces (:func:`figures`), so an answer is never stale; past MAX_DIRTY
queued (a flood the job cannot keep up with) Stats scans the calls instead.

**Upgrades.** A database that held traces before these tables existed is filled
by :func:`backfill_step` (``tracetui job rollup``, started by ``serve``) in small
transactions, oldest trace row first: the rollup (schema 13), then the filter
cube (schema 15). Until a fill is done :func:`figures` answers None for what
needs it and Stats scans as before; the header shows the progress (:func:`progress`).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable
from typing import Any

from tracetui.llm.evals import is_groundedness
from tracetui.model import sketch
from tracetui.model.filter import Filter
from tracetui.model.reader import GROUPINGS, NONE_KEY, GroupFigures
from tracetui.store.filter_sql import span_where
from tracetui.store.stats_sql import MODEL_KEY, PROMPT_KEY, ROUTE_KEY, RUN_JOIN

#: Bin sizes in seconds, finest first; each divides the next.
LEVELS_S = (10, 600, 21_600)
#: The finest bin in ns: a window's start is rounded down to a multiple of it.
STEP_NS = LEVELS_S[0] * 1_000_000_000
_RATIOS = tuple(size // LEVELS_S[0] for size in LEVELS_S)
#: Below this many spans stored, SqliteReader scans the calls instead (well under 0.1 s, exact percentiles).
EXACT_BELOW_SPANS = 50_000
#: How many queued traces a reader corrects for before it prefers the scan (a reindex of everything).
MAX_DIRTY = 2_000
#: Queued traces the rollup job (tracetui.jobs.rollup) sums per transaction.
DRAIN_BATCH = 500
#: Trace rows per background transaction (the receiver waits at most one for the write lock).
BACKFILL_BATCH = 200
#: Most values the histogram gets from a sketch (the scan's cap on recent durations, too).
SAMPLE = 2_000

_CHUNK = 500
_CALLS = (
    "SELECT spans.trace_id, spans.span_id, spans.start_ns, max(spans.end_ns - spans.start_ns, 0), "
    "spans.status_code = 2, spans.ttft_ns, spans.tokens_per_s, spans.is_retry != 0, spans.is_fallback != 0, "
    f"spans.cost_usd, {MODEL_KEY}, {PROMPT_KEY}, {ROUTE_KEY}, "
    "spans.request_model, spans.response_model, spans.provider, spans.prompt_name, spans.prompt_version, "
    f"spans.service FROM spans AS spans{RUN_JOIN} "
    "WHERE spans.trace_id IN ({marks}) AND spans.llm_kind = 'llm' AND (spans.counted IS NULL OR spans.counted != 0)"
)
_SCORES = (
    "SELECT trace_id, span_id, name, score FROM evaluations "
    "WHERE trace_id IN ({marks}) AND span_id IS NOT NULL AND score IS NOT NULL"
)

# An entry's figures, by position: counts and sums, then the two sketches ({bucket: count}).
CALLS, RUNS, ERRORS, RETRIES, FALLBACKS, COST, COST_N, RATE, RATE_N, SCORE, SCORE_N, DURATIONS, TTFTS = range(13)
_SUMS = range(DURATIONS)
_FIELDS = "calls, runs, errors, retries, fallbacks, cost_sum, cost_n, rate_sum, rate_n, score_sum, score_n"
_UPSERT = (
    f"INSERT OR REPLACE INTO stats_bins(grouping, level, bin, key, {_FIELDS}, durations, ttfts) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_RANGE = (
    f"SELECT bin, key, {_FIELDS}, durations, ttfts FROM stats_bins "
    "WHERE grouping = ? AND level = ? AND bin BETWEEN ? AND ?"
)

Entry = list[Any]  # the figures above

#: The filter cube's grouping in ``stats_bins``: one key per cell (a ``stats_cells`` id once stored).
CELL = "cell"
#: The filter fields a cell decides (its columns are named as in ``spans``): a filter of only these terms
#: is answered from the cube. ``kind``: every counted call is an LLM call.
CUBE_FIELDS = frozenset(("model", "provider", "service", "prompt", "prompt.version", "kind"))
#: A cell's JSON: the three group keys (by position, :data:`_GROUP_AT`), then the columns filters read.
_CELL_COLUMNS = ("model_key", "prompt_key", "route", "request_model", "response_model", "provider",
                 "prompt_name", "prompt_version", "service")  # fmt: skip
_GROUP_AT = {"model": 0, "prompt_version": 1, "route": 2}
_INSERT_CELL = (
    f"INSERT OR IGNORE INTO stats_cells(cell, {', '.join(_CELL_COLUMNS)}) VALUES (?{', ?' * len(_CELL_COLUMNS)})"
)
#: The background fills, in order (meta keys: the last trace row to fill, how far it got). The rollup's own
#: (an upgrade from before schema 13), then the filter cube's (from before 15).
ROLLUP_FILL = ("rollup_to", "rollup_at")
CUBE_FILL = ("cube_to", "cube_at")

#: A run signature: the cells a trace's calls fell in at or after a bin, and those at or after its next one.
Signature = tuple[tuple[str, ...], tuple[str, ...]]


class Contribution:
    """What traces add to the rollup: figures per (grouping, 10 s bin, key), the filter cube's cells keyed
    by their JSON, and runs per (bin size, bin, :data:`Signature`) (see "Filtered Stats" above)."""

    __slots__ = ("bins", "runs")

    def __init__(self) -> None:
        self.bins: dict[tuple[str, int, str], Entry] = {}
        self.runs: dict[tuple[int, int, Signature], int] = {}


def _empty() -> Entry:
    return [0, 0, 0, 0, 0, 0.0, 0, 0.0, 0, 0.0, 0, {}, {}]


# --- one trace's contribution ---------------------------------------------------------------


def calls_of(conn: sqlite3.Connection, trace_ids: Iterable[bytes]) -> dict[bytes, list[list]]:
    """The counted LLM calls of each of these traces that has any, as a contribution is computed from them:
    ``[start, duration, error, ttft, rate, retry, fallback, cost, model, prompt, route, groundedness scores,
    [request model, response model, provider, prompt name, prompt version, service]]`` (a trace summed before
    schema 15 was stored without the last one)."""
    ids = list(trace_ids)
    out: dict[bytes, list[list]] = {}
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        marks = ",".join("?" * len(chunk))
        calls = conn.execute(_CALLS.format(marks=marks), chunk).fetchall()
        if not calls:
            continue
        scores = _scores(conn, chunk, marks)
        for trace_id, span_id, *rest in calls:
            grounded = scores.get((trace_id, span_id)) if scores else None
            out.setdefault(trace_id, []).append([*rest[:11], grounded, rest[11:]])
    return out


def contributions(conn: sqlite3.Connection, trace_ids: Iterable[bytes]) -> dict[bytes, Contribution]:
    """The current contribution of each of these traces that has counted LLM calls (read from the tables)."""
    return {trace_id: contribution(calls) for trace_id, calls in calls_of(conn, trace_ids).items()}


def _scores(conn: sqlite3.Connection, chunk: list[bytes], marks: str) -> dict[tuple[bytes, bytes], list[float]]:
    """(trace id, span id) -> finite groundedness scores, as tracetui.store.stats_sql.groundedness_scores reads them."""
    found: dict[tuple[bytes, bytes], list[float]] = {}
    for trace_id, span_id, name, score in conn.execute(_SCORES.format(marks=marks), chunk):
        if isinstance(score, (int, float)) and math.isfinite(score) and is_groundedness(name):
            found.setdefault((trace_id, span_id), []).append(float(score))
    return found


def contribution(calls: list[list]) -> Contribution:
    """What a trace with these calls (:func:`calls_of`) adds to the 10 s bins, and its run signatures."""
    out = Contribution()
    bins = out.bins
    last: dict[tuple[str, str], tuple[int, int]] = {}  # (grouping, key) -> (start, 10 s bin) of its last call
    cells: dict[str, int] = {}  # cell -> start of its last call
    for call in calls:
        start, duration, error, ttft, rate, retry, fallback, cost, model, prompt, route, grounded = call[:12]
        fine = start // STEP_NS
        at = sketch.bucket(duration), None if ttft is None else sketch.bucket(ttft)  # once, not per grouping
        for grouping, key in (("model", model), ("prompt_version", prompt), ("route", route)):
            key = NONE_KEY if key is None else str(key)
            entry = bins.get((grouping, fine, key))
            if entry is None:
                entry = bins[(grouping, fine, key)] = _empty()
            _add_call(entry, at, error, rate, retry, fallback, cost, grounded)
            seen = last.get((grouping, key))
            if seen is None or start > seen[0]:
                last[(grouping, key)] = (start, fine)
        if len(call) > 12:  # the cell's columns (a trace summed before schema 15 has none: it is filled again)
            cell = json.dumps([model, prompt, route, *call[12]], separators=(",", ":"))
            entry = bins.get((CELL, fine, cell))
            if entry is None:
                entry = bins[(CELL, fine, cell)] = _empty()
            _add_call(entry, at, error, rate, retry, fallback, cost, grounded)
            if start > cells.get(cell, start - 1):
                cells[cell] = start
    for (grouping, key), (_, fine) in last.items():
        bins[(grouping, fine, key)][RUNS] += 1
    if cells:
        _signatures(out.runs, cells)
    return out


def _signatures(runs: dict[tuple[int, int, Signature], int], cells: dict[str, int]) -> None:
    """A trace's run signatures at every bin size, from the start of the last call of each of its cells.

    At a size, let b1 < b2 < ... be the bins holding some cell's last call and S(b) the cells whose last
    call is at or after bin b. The trace adds one run to (b_i, (S(b_i), S(b_i+1))). Read over the bins
    of a window from b on, these telescope to S(b): the cells the trace has calls in within the window.
    """
    for level, size in enumerate(LEVELS_S):
        size_ns = size * 1_000_000_000
        at = {cell: start // size_ns for cell, start in cells.items()}
        edges = sorted(set(at.values()))
        later: tuple[str, ...] = ()
        for b in reversed(edges):  # S(b) grows as b goes back
            now = tuple(sorted(cell for cell, x in at.items() if x >= b))
            key = (level, b, (now, later))
            runs[key] = runs.get(key, 0) + 1
            later = now


def _add_call(entry: Entry, at: tuple[int, int | None], error, rate, retry, fallback, cost, grounded) -> None:
    """Count one call into ``entry``; ``at``: its duration's and time to first token's sketch buckets."""
    entry[CALLS] += 1
    entry[ERRORS] += error or 0
    entry[RETRIES] += retry or 0
    entry[FALLBACKS] += fallback or 0
    if cost is not None:
        entry[COST] += cost
        entry[COST_N] += 1
    if rate is not None:
        entry[RATE] += rate
        entry[RATE_N] += 1
    if grounded:
        entry[SCORE] += math.fsum(grounded)
        entry[SCORE_N] += len(grounded)
    durations = entry[DURATIONS]
    durations[at[0]] = durations.get(at[0], 0) + 1
    if at[1] is not None:
        ttfts = entry[TTFTS]
        ttfts[at[1]] = ttfts.get(at[1], 0) + 1


def encode(calls: list[list]) -> str:
    """A trace's calls as stored in ``stats_contrib``: its contribution is computed from them again when
    it is taken out (about a third of the bytes and of the encoding time of the contribution itself)."""
    return json.dumps(calls, separators=(",", ":"))


def decode(text: str) -> Contribution:
    return contribution(json.loads(text))


def _pairs(counts: dict[int, int]) -> list[int]:
    return [v for index in sorted(counts) for v in (index, counts[index])]


def _counts(pairs: list[int]) -> dict[int, int]:
    return dict(zip(pairs[::2], pairs[1::2], strict=True))


# --- the writer's side ------------------------------------------------------------------------


def refresh(conn: sqlite3.Connection, trace_ids: Iterable[bytes]) -> None:
    """Bring the rollup up to date for these traces, in the caller's transaction.

    Each trace's stored contribution is taken out and its current one put in;
    a trace whose contribution did not change costs one read of its calls.
    """
    ids = list(dict.fromkeys(trace_ids))
    if not ids:
        return
    new = calls_of(conn, ids)
    old = _stored(conn, ids)
    fine = Contribution()  # the commit's change in 10 s entries and runs, summed over its traces first
    writes: list[tuple[bytes, str]] = []
    gone: list[tuple[bytes]] = []
    for trace_id in ids:
        before, after = old.get(trace_id), new.get(trace_id)
        text = encode(after) if after else None
        if before == text:
            continue
        if before is not None:
            _sum(fine, decode(before), -1)
        if after:
            _sum(fine, contribution(after), 1)
            writes.append((trace_id, text or ""))
        else:
            gone.append((trace_id,))
    if gone:
        conn.executemany("DELETE FROM stats_contrib WHERE trace_id = ?", gone)
    if writes:
        conn.executemany("INSERT OR REPLACE INTO stats_contrib(trace_id, contrib) VALUES (?, ?)", writes)
    delta: dict[tuple[str, int, int, str], Entry] = {}
    _spread(delta, fine.bins, 1)
    runs = {key: n for key, n in fine.runs.items() if n}
    if not delta and not runs:
        return
    cell_ids = _cell_ids(conn, {k for g, _, _, k in delta if g == CELL} | {c for *_, sig in runs for c in sig[0]})
    _apply(conn, {(g, level, b, str(cell_ids[k]) if g == CELL else k): e for (g, level, b, k), e in delta.items()})
    _apply_runs(conn, runs, cell_ids)


def queue(conn: sqlite3.Connection, trace_ids: Iterable[bytes]) -> None:
    """Leave these traces for the rollup job's :func:`drain_step` (in the caller's transaction); readers correct
    for them meanwhile. (About 2 us a trace: summing one here cost the receiver 12 us a span.)"""
    conn.executemany("INSERT OR IGNORE INTO stats_dirty(trace_id) VALUES (?)", [(t,) for t in trace_ids])


def _stored(conn: sqlite3.Connection, ids: list[bytes]) -> dict[bytes, str]:
    found: dict[bytes, str] = {}
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        found.update(
            conn.execute(
                f"SELECT trace_id, contrib FROM stats_contrib WHERE trace_id IN ({','.join('?' * len(chunk))})", chunk
            )
        )
    return found


def _sum(total: Contribution, contribution: Contribution, sign: int) -> None:
    bins = total.bins
    for key, entry in contribution.bins.items():
        target = bins.get(key)
        if target is None:
            target = bins[key] = _empty()
        _merge(target, entry, sign)
    runs = total.runs
    for at, n in contribution.runs.items():
        runs[at] = runs.get(at, 0) + sign * n


def _spread(delta: dict[tuple[str, int, int, str], Entry], bins: dict[tuple[str, int, str], Entry], sign: int) -> None:
    """Add ``sign`` times a trace's 10 s entries to the delta of every bin size."""
    for (grouping, fine, key), entry in bins.items():
        for level, ratio in enumerate(_RATIOS):
            target = delta.get((grouping, level, fine // ratio, key))
            if target is None:
                target = delta[(grouping, level, fine // ratio, key)] = _empty()
            _merge(target, entry, sign)


def _merge(target: Entry, entry: Entry, sign: int = 1) -> None:
    for i in _SUMS:
        target[i] += sign * entry[i]
    for i in (DURATIONS, TTFTS):
        counts = target[i]
        for index, count in entry[i].items():
            counts[index] = counts.get(index, 0) + sign * count


def _apply(conn: sqlite3.Connection, delta: dict[tuple[str, int, int, str], Entry]) -> None:
    upserts: list[tuple] = []
    deletes: list[tuple] = []
    stored = _stored_bins(conn, delta)
    for key, change in delta.items():
        row = stored.get(key)
        entry = _empty() if row is None else [*row[:DURATIONS], _counts(json.loads(row[DURATIONS])),
                                                _counts(json.loads(row[TTFTS]))]  # fmt: skip
        _merge(entry, change)
        if entry[CALLS] <= 0:
            deletes.append(key)
            continue
        durations = {i: c for i, c in entry[DURATIONS].items() if c}
        ttfts = {i: c for i, c in entry[TTFTS].items() if c}
        upserts.append((*key, *entry[:DURATIONS], json.dumps(_pairs(durations)), json.dumps(_pairs(ttfts))))
    if deletes:
        conn.executemany("DELETE FROM stats_bins WHERE grouping = ? AND level = ? AND bin = ? AND key = ?", deletes)
    if upserts:
        conn.executemany(_UPSERT, upserts)


def _stored_bins(conn: sqlite3.Connection, delta: dict[tuple[str, int, int, str], Entry]) -> dict[tuple, tuple]:
    """The stored rows of the bins in ``delta``: one range read per grouping and size (a commit's bins are near)."""
    ranges: dict[tuple[str, int], list[int]] = {}
    for grouping, level, b, _ in delta:
        found = ranges.get((grouping, level))
        if found is None:
            ranges[(grouping, level)] = [b, b]
        else:
            found[0], found[1] = min(found[0], b), max(found[1], b)
    out: dict[tuple, tuple] = {}
    for (grouping, level), (low, high) in ranges.items():
        for row in conn.execute(_RANGE, (grouping, level, low, high)):
            out[(grouping, level, row[0], row[1])] = row[2:]
    return out


def _cell_ids(conn: sqlite3.Connection, cells: set[str]) -> dict[str, int]:
    """The ``stats_cells`` id of each cell (JSON), added where new."""
    wanted = list(cells)
    found: dict[str, int] = {}
    for attempt in range(2):
        for i in range(0, len(wanted), _CHUNK):
            chunk = wanted[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(conn.execute(f"SELECT cell, id FROM stats_cells WHERE cell IN ({marks})", chunk))
        wanted = [cell for cell in wanted if cell not in found]
        if not wanted or attempt:
            break
        conn.executemany(_INSERT_CELL, [(cell, *json.loads(cell)) for cell in wanted])
    return found


def _apply_runs(conn: sqlite3.Connection, runs: dict[tuple[int, int, Signature], int], ids: dict[str, int]) -> None:
    """Add these runs to ``stats_runs``, their signatures written with cell ids (``"3,7|7"``)."""
    delta: dict[tuple[int, int, str], int] = {}
    for (level, b, (cells, later)), n in runs.items():
        sig = "|".join(",".join(map(str, sorted(ids[c] for c in part))) for part in (cells, later))
        delta[(level, b, sig)] = delta.get((level, b, sig), 0) + n
    stored: dict[tuple[int, int, str], int] = {}
    for level in {level for level, _, _ in delta}:
        bins = [b for lv, b, _ in delta if lv == level]
        rows = conn.execute("SELECT bin, sig, runs FROM stats_runs WHERE level = ? AND bin BETWEEN ? AND ?",
                            (level, min(bins), max(bins)))  # fmt: skip
        stored.update(((level, b, sig), n) for b, sig, n in rows)
    upserts, deletes = [], []
    for key, n in delta.items():
        total = stored.get(key, 0) + n
        if total > 0:
            upserts.append((*key, total))
        else:
            deletes.append(key)
    if deletes:
        conn.executemany("DELETE FROM stats_runs WHERE level = ? AND bin = ? AND sig = ?", deletes)
    if upserts:
        conn.executemany("INSERT OR REPLACE INTO stats_runs(level, bin, sig, runs) VALUES (?, ?, ?, ?)", upserts)


def clear(conn: sqlite3.Connection) -> None:
    """Forget everything (``tracetui purge``), in the caller's transaction: an empty store needs no backfill."""
    for table in ("stats_bins", "stats_contrib", "stats_dirty", "stats_cells", "stats_runs"):
        conn.execute(f"DELETE FROM {table}")  # table names are constants
    conn.execute("UPDATE meta SET value = 0 WHERE key IN (?, ?, ?, ?)", (*ROLLUP_FILL, *CUBE_FILL))


# --- backfill (tracetui.jobs.rollup) ------------------------------------------------------------


def progress(conn: sqlite3.Connection, fills: tuple[tuple[str, str], ...] = (ROLLUP_FILL, CUBE_FILL)) -> float | None:
    """How far the first unfinished background fill of ``fills`` has come (0..1), or None when they are
    complete (or absent)."""
    for to_key, at_key in fills:
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN (?, ?)", (to_key, at_key)))
        except sqlite3.OperationalError:
            return None
        to, at = int(meta.get(to_key) or 0), int(meta.get(at_key) or 0)
        if at >= to:
            continue
        first = conn.execute("SELECT min(id) FROM traces").fetchone()[0] or 0
        span = max(1, to - first + 1)
        return max(0.0, min(1.0, (at - first + 1) / span)) if at >= first else 0.0
    return None


def drain_step(conn: sqlite3.Connection) -> int:
    """Sum the next DRAIN_BATCH queued traces in the caller's transaction; returns how many it took."""
    queued = [row[0] for row in conn.execute("SELECT trace_id FROM stats_dirty LIMIT ?", (DRAIN_BATCH,))]
    conn.executemany("DELETE FROM stats_dirty WHERE trace_id = ?", [(t,) for t in queued])
    refresh(conn, queued)
    return len(queued)


def backfill_step(conn: sqlite3.Connection, batch: int = BACKFILL_BATCH) -> bool:
    """Fill the next ``batch`` trace rows of the first unfinished fill (:data:`ROLLUP_FILL`, then
    :data:`CUBE_FILL`) in the caller's transaction; False when nothing is left."""
    for to_key, at_key in (ROLLUP_FILL, CUBE_FILL):
        meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN (?, ?)", (to_key, at_key)))
        to, at = int(meta.get(to_key) or 0), int(meta.get(at_key) or 0)
        if at >= to:
            continue
        rows = conn.execute(
            "SELECT id, trace_id FROM traces WHERE id > ? AND id <= ? ORDER BY id LIMIT ?", (at, to, batch)
        ).fetchall()
        refresh(conn, [trace_id for _, trace_id in rows])  # a trace already summed as it is now costs a read
        conn.execute("UPDATE meta SET value = ? WHERE key = ?", (rows[-1][0] if rows else to, at_key))
        return True
    return False


# --- the reader's side ------------------------------------------------------------------------


def figures(conn: sqlite3.Connection, by: str, since_ns: int | None, flt: Filter | None = None
            ) -> list[GroupFigures] | None:  # fmt: skip
    """The groups of ``by`` over calls started at or after ``since_ns`` (None: all) and matching ``flt``,
    from the rollup.

    The window starts at the 10 s boundary at or before ``since_ns``. None when
    the rollup cannot answer: a filter with terms other than :data:`CUBE_FIELDS`,
    not filled yet (an upgraded database, being filled in the background), or too
    many traces queued.
    """
    if by not in GROUPINGS:
        raise ValueError(f"cannot group by {by!r} (one of: {', '.join(GROUPINGS)})")
    if flt is not None and flt.is_empty():
        flt = None
    if flt is not None and not answers(flt):
        return None
    if since_ns is not None:
        since_ns -= since_ns % STEP_NS
    try:
        if progress(conn, (ROLLUP_FILL,) if flt is None else (ROLLUP_FILL, CUBE_FILL)) is not None:
            return None
        queued = [r[0] for r in conn.execute("SELECT trace_id FROM stats_dirty LIMIT ?", (MAX_DIRTY + 1,))]
        if len(queued) > MAX_DIRTY:
            return None
        groups = _bins(conn, by, since_ns, queued) if flt is None else _cube(conn, by, since_ns, flt, queued)
    except sqlite3.OperationalError:  # a database from before the rollup (or its cube), opened read-only
        return None
    label = method(since_ns is not None)
    return [_group_figures(key, entry, label) for key, entry in groups.items() if entry[CALLS] > 0]


def answers(flt: Filter) -> bool:
    """The filter cube decides this filter: every term compares a field of :data:`CUBE_FIELDS`."""
    return all(term.field in CUBE_FIELDS and term.op is not None for term in flt.terms)


def _bins(conn: sqlite3.Connection, by: str, since_ns: int | None, queued: list[bytes]) -> dict[str, Entry]:
    """Unfiltered: the groups' own bins, runs included."""
    groups: dict[str, Entry] = {}
    for row in conn.execute(*_window_sql(by, since_ns)):
        _merge(groups.setdefault(row[0], _empty()), _entry(row[1:]))
    if queued:  # changed since the last commit of a writer: their old contribution out, the current one in
        first = None if since_ns is None else since_ns // STEP_NS
        for sign, found in _queued(conn, queued):
            for contribution in found.values():
                for (grouping, fine, key), entry in contribution.bins.items():
                    if grouping == by and (first is None or fine >= first):
                        _merge(groups.setdefault(key, _empty()), entry, sign)
    return groups


def _cube(conn: sqlite3.Connection, by: str, since_ns: int | None, flt: Filter, queued: list[bytes]
          ) -> dict[str, Entry]:  # fmt: skip
    """Filtered: the bins of the cells the filter matches, summed by their group; runs from their signatures."""
    at = _GROUP_AT[by]
    where, params = span_where(flt, "c")
    matched: dict[str, str] = {}  # cell id (as stats_bins keys it) -> group key
    for cell_id, cell in conn.execute(f"SELECT id, cell FROM stats_cells AS c WHERE {where}", params):
        key = json.loads(cell)[at]
        matched[str(cell_id)] = NONE_KEY if key is None else str(key)
    groups: dict[str, Entry] = {}
    if matched:
        sql, window = _window_sql(CELL, since_ns)
        for row in conn.execute(sql, window):
            key = matched.get(row[0])
            if key is not None:
                _merge(groups.setdefault(key, _empty()), _entry(row[1:]))
        runs_of: dict[str, set[str]] = {}  # a signature -> the groups it adds a run to
        for sig, n in _stored_runs(conn, _segments(since_ns)):
            found = runs_of.get(sig)
            if found is None:
                at_bin, _, after = sig.partition("|")
                found = runs_of[sig] = _groups(at_bin.split(","), matched) - _groups(after.split(","), matched)
            for key in found:
                groups.setdefault(key, _empty())[RUNS] += n
    if queued:  # as in _bins, for the cells and the run signatures of the traces queued
        changes = _queued(conn, queued)
        cells = {k for _, traces in changes for c in traces.values() for g, _, k in c.bins if g == CELL}
        keyed = _match_cells(conn, flt, cells, at)
        first = None if since_ns is None else since_ns // STEP_NS
        spans = _segments(since_ns)
        for sign, traces in changes:
            for contribution in traces.values():
                for (grouping, fine, cell), entry in contribution.bins.items():
                    key = keyed.get(cell) if grouping == CELL else None
                    if key is not None and (first is None or fine >= first):
                        _merge(groups.setdefault(key, _empty()), entry, sign)
                for (level, b, (now, later)), n in contribution.runs.items():
                    if _covers(spans, level, b):
                        for key in _groups(now, keyed) - _groups(later, keyed):
                            groups.setdefault(key, _empty())[RUNS] += sign * n
    return groups


def _entry(row: tuple) -> Entry:
    """A stats_bins row's figures (after its key) as an entry."""
    return [*row[:DURATIONS], _counts(json.loads(row[DURATIONS])), _counts(json.loads(row[TTFTS]))]


def _queued(conn: sqlite3.Connection, queued: list[bytes]) -> list[tuple[int, dict[bytes, Contribution]]]:
    """The queued traces' stored contributions (to take out) and their current ones (to put in)."""
    old = {t: decode(text) for t, text in _stored(conn, queued).items()}
    return [(-1, old), (1, contributions(conn, queued))]


def _groups(cells: Iterable[str], keyed: dict[str, str]) -> set[str]:
    """The groups of those of these cells (ids or JSON) that the filter matched."""
    return {key for key in map(keyed.get, cells) if key is not None}


def _match_cells(conn: sqlite3.Connection, flt: Filter, cells: set[str], at: int) -> dict[str, str]:
    """Cells given as JSON (of queued traces: maybe not stored yet) that ``flt`` matches -> their group key,
    decided by the same SQL as stored cells (a VALUES table with the columns of ``stats_cells``)."""
    where, params = span_where(flt, "c")
    columns = ("cell", *_CELL_COLUMNS, "llm_kind")
    out: dict[str, str] = {}
    listed = list(cells)
    for i in range(0, len(listed), _CHUNK // 10):
        chunk = listed[i : i + _CHUNK // 10]
        rows = ", ".join(f"(?{', ?' * len(_CELL_COLUMNS)}, 'llm')" for _ in chunk)
        values = [v for cell in chunk for v in (cell, *json.loads(cell))]
        sql = f"WITH c({', '.join(columns)}) AS (VALUES {rows}) SELECT cell FROM c WHERE {where}"
        for (cell,) in conn.execute(sql, [*values, *params]):
            key = json.loads(cell)[at]
            out[cell] = NONE_KEY if key is None else str(key)
    return out


def method(windowed: bool) -> str:
    """How the rollup's figures differ from a scan's: the label on screen and in ``tracetui stats --json``."""
    return f"{sketch.METHOD}; window from the 10 s boundary before its start" if windowed else sketch.METHOD


Segment = tuple[int, int | None, int | None]  # (bin size, first bin or None, end bin or None)


def _segments(since_ns: int | None) -> list[Segment]:
    """The bins that cover [since_ns, now] exactly (see the module docstring)."""
    last = len(LEVELS_S) - 1
    if since_ns is None:
        return [(last, None, None)]
    out: list[Segment] = []
    low = since_ns // STEP_NS  # in 10 s bins
    for level, ratio in enumerate(_RATIOS):
        start = -(-low // ratio)  # the first whole bin of this size
        if level == last:
            out.append((level, start, None))
        else:
            end = -(-low // _RATIOS[level + 1]) * (_RATIOS[level + 1] // ratio)  # where the next size takes over
            out.append((level, start, end))
            low = end * ratio
    return out


def _covers(segments: list[Segment], level: int, b: int) -> bool:
    return any(level == lv and (lo is None or b >= lo) and (hi is None or b < hi) for lv, lo, hi in segments)


def _segment_sql(select: str, head: list[Any], segments: list[Segment]) -> tuple[str, list[Any]]:
    """``select`` (its parameters ``head``, then one for ``level = ?``) over each segment, UNION ALL."""
    parts, params = [], []
    for level, lo, hi in segments:
        part, args = select, [*head, level]
        if lo is not None:
            part, args = part + " AND bin >= ?", [*args, lo]
        if hi is not None:
            part, args = part + " AND bin < ?", [*args, hi]
        parts.append(part)
        params += args
    return " UNION ALL ".join(parts), params


def _window_sql(by: str, since_ns: int | None) -> tuple[str, list[Any]]:
    """The rows of ``by``'s bins that cover [since_ns, now]."""
    select = f"SELECT key, {_FIELDS}, durations, ttfts FROM stats_bins WHERE grouping = ? AND level = ?"
    return _segment_sql(select, [by], _segments(since_ns))


def _stored_runs(conn: sqlite3.Connection, segments: list[Segment]) -> list[tuple[str, int]]:
    """(signature, runs) of the stored run signatures in these segments' bins."""
    return conn.execute(*_segment_sql("SELECT sig, runs FROM stats_runs WHERE level = ?", [], segments)).fetchall()


def _group_figures(key: str, entry: Entry, label: str) -> GroupFigures:
    durations, ttfts = entry[DURATIONS], entry[TTFTS]
    return GroupFigures(
        key=key,
        calls=entry[CALLS],
        runs=entry[RUNS],
        durations_ns=(sketch.percentile(durations, 50), sketch.percentile(durations, 95),
                      sketch.percentile(durations, 99)),
        ttfts_ns=(sketch.percentile(ttfts, 50), sketch.percentile(ttfts, 95), sketch.percentile(ttfts, 99)),
        tokens_per_s=entry[RATE] / entry[RATE_N] if entry[RATE_N] else None,
        errors=entry[ERRORS],
        retries=entry[RETRIES],
        fallbacks=entry[FALLBACKS],
        cost_usd=entry[COST] if entry[COST_N] else None,
        groundedness=entry[SCORE] / entry[SCORE_N] if entry[SCORE_N] else None,
        recent_ns=tuple(sketch.sample(durations, SAMPLE)),
        method=label,
    )  # fmt: skip

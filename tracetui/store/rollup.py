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

**Upgrades.** A database that held traces before this table existed is filled
by :func:`backfill_step` (``tracetui job rollup``, started by ``serve``) in small
transactions, oldest trace row first. Until it is done :func:`figures` answers
None and Stats scans as before; the header shows the progress (:func:`progress`).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable
from typing import Any

from tracetui.llm.evals import is_groundedness
from tracetui.model import sketch
from tracetui.model.reader import GROUPINGS, NONE_KEY, GroupFigures
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
    f"spans.cost_usd, {MODEL_KEY}, {PROMPT_KEY}, {ROUTE_KEY} FROM spans AS spans{RUN_JOIN} "
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
Contribution = dict[tuple[str, int, str], Entry]  # (grouping, 10 s bin, key) -> figures


def _empty() -> Entry:
    return [0, 0, 0, 0, 0, 0.0, 0, 0.0, 0, 0.0, 0, {}, {}]


# --- one trace's contribution ---------------------------------------------------------------


def calls_of(conn: sqlite3.Connection, trace_ids: Iterable[bytes]) -> dict[bytes, list[list]]:
    """The counted LLM calls of each of these traces that has any, as a contribution is computed from them:
    ``[start, duration, error, ttft, rate, retry, fallback, cost, model, prompt, route, groundedness scores]``."""
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
            out.setdefault(trace_id, []).append([*rest, scores.get((trace_id, span_id)) if scores else None])
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
    """What a trace with these calls (:func:`calls_of`) adds to the 10 s bins."""
    out: Contribution = {}
    last: dict[tuple[str, str], tuple[int, int]] = {}  # (grouping, key) -> (start, 10 s bin) of its last call
    for start, duration, error, ttft, rate, retry, fallback, cost, model, prompt, route, grounded in calls:
        fine = start // STEP_NS
        at = sketch.bucket(duration), None if ttft is None else sketch.bucket(ttft)  # once, not per grouping
        for grouping, key in (("model", model), ("prompt_version", prompt), ("route", route)):
            key = NONE_KEY if key is None else str(key)
            entry = out.get((grouping, fine, key))
            if entry is None:
                entry = out[(grouping, fine, key)] = _empty()
            _add_call(entry, at, error, rate, retry, fallback, cost, grounded)
            seen = last.get((grouping, key))
            if seen is None or start > seen[0]:
                last[(grouping, key)] = (start, fine)
    for (grouping, key), (_, fine) in last.items():
        out[(grouping, fine, key)][RUNS] += 1
    return out


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
    fine: Contribution = {}  # the commit's change in 10 s entries, summed over its traces first
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
    if fine:
        delta: dict[tuple[str, int, int, str], Entry] = {}
        _spread(delta, fine, 1)
        _apply(conn, delta)


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
    for key, entry in contribution.items():
        target = total.get(key)
        if target is None:
            target = total[key] = _empty()
        _merge(target, entry, sign)


def _spread(delta: dict[tuple[str, int, int, str], Entry], contribution: Contribution, sign: int) -> None:
    """Add ``sign`` times a trace's 10 s entries to the delta of every bin size."""
    for (grouping, fine, key), entry in contribution.items():
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


def clear(conn: sqlite3.Connection) -> None:
    """Forget everything (``tracetui purge``), in the caller's transaction: an empty store needs no backfill."""
    for table in ("stats_bins", "stats_contrib", "stats_dirty"):
        conn.execute(f"DELETE FROM {table}")  # table names are constants
    conn.execute("UPDATE meta SET value = 0 WHERE key IN ('rollup_to', 'rollup_at')")


# --- backfill (tracetui.jobs.rollup) ------------------------------------------------------------


def progress(conn: sqlite3.Connection) -> float | None:
    """How far the background fill has come (0..1), or None when the rollup is complete (or absent)."""
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('rollup_to', 'rollup_at')"))
    except sqlite3.OperationalError:
        return None
    to, at = int(meta.get("rollup_to") or 0), int(meta.get("rollup_at") or 0)
    if at >= to:
        return None
    first = conn.execute("SELECT min(id) FROM traces").fetchone()[0] or 0
    span = max(1, to - first + 1)
    return max(0.0, min(1.0, (at - first + 1) / span)) if at >= first else 0.0


def drain_step(conn: sqlite3.Connection) -> int:
    """Sum the next DRAIN_BATCH queued traces in the caller's transaction; returns how many it took."""
    queued = [row[0] for row in conn.execute("SELECT trace_id FROM stats_dirty LIMIT ?", (DRAIN_BATCH,))]
    conn.executemany("DELETE FROM stats_dirty WHERE trace_id = ?", [(t,) for t in queued])
    refresh(conn, queued)
    return len(queued)


def backfill_step(conn: sqlite3.Connection, batch: int = BACKFILL_BATCH) -> bool:
    """Fill the next ``batch`` trace rows in the caller's transaction; False when nothing is left."""
    meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('rollup_to', 'rollup_at')"))
    to, at = int(meta.get("rollup_to") or 0), int(meta.get("rollup_at") or 0)
    if at >= to:
        return False
    rows = conn.execute(
        "SELECT id, trace_id FROM traces WHERE id > ? AND id <= ? ORDER BY id LIMIT ?", (at, to, batch)
    ).fetchall()
    refresh(conn, [trace_id for _, trace_id in rows])
    conn.execute("UPDATE meta SET value = ? WHERE key = 'rollup_at'", (rows[-1][0] if rows else to,))
    return True


# --- the reader's side ------------------------------------------------------------------------


def figures(conn: sqlite3.Connection, by: str, since_ns: int | None) -> list[GroupFigures] | None:
    """The groups of ``by`` over calls started at or after ``since_ns`` (None: all), from the rollup.

    The window starts at the 10 s boundary at or before ``since_ns``. None when
    the rollup cannot answer: not filled yet (an upgraded database, being filled
    in the background) or too many traces queued.
    """
    if by not in GROUPINGS:
        raise ValueError(f"cannot group by {by!r} (one of: {', '.join(GROUPINGS)})")
    if since_ns is not None:
        since_ns -= since_ns % STEP_NS
    try:
        if progress(conn) is not None:
            return None
        queued = [r[0] for r in conn.execute("SELECT trace_id FROM stats_dirty LIMIT ?", (MAX_DIRTY + 1,))]
    except sqlite3.OperationalError:  # a database from before the rollup, opened read-only
        return None
    if len(queued) > MAX_DIRTY:
        return None
    groups: dict[str, Entry] = {}
    for row in conn.execute(*_window_sql(by, since_ns)):
        entry = groups.get(row[0])
        if entry is None:
            entry = groups[row[0]] = _empty()
        _merge(entry, [*row[1 : DURATIONS + 1], _counts(json.loads(row[-2])), _counts(json.loads(row[-1]))])
    if queued:  # changed since the last commit of a writer: their old contribution out, the current one in
        first = None if since_ns is None else since_ns // STEP_NS
        old = {t: decode(text) for t, text in _stored(conn, queued).items()}
        for sign, found in ((-1, old), (1, contributions(conn, queued))):
            for contribution in found.values():
                for (grouping, fine, key), entry in contribution.items():
                    if grouping == by and (first is None or fine >= first):
                        _merge(groups.setdefault(key, _empty()), entry, sign)
    label = method(since_ns is not None)
    return [_group_figures(key, entry, label) for key, entry in groups.items() if entry[CALLS] > 0]


def method(windowed: bool) -> str:
    """How the rollup's figures differ from a scan's: the label on screen and in ``tracetui stats --json``."""
    return f"{sketch.METHOD}; window from the 10 s boundary before its start" if windowed else sketch.METHOD


def _window_sql(by: str, since_ns: int | None) -> tuple[str, list[Any]]:
    """The rows of the bins that cover [since_ns, now] exactly (see the module docstring)."""
    columns = f"SELECT key, {_FIELDS}, durations, ttfts FROM stats_bins WHERE grouping = ? AND level = ?"
    last = len(LEVELS_S) - 1
    if since_ns is None:
        return columns, [by, last]
    parts, params = [], []
    low = since_ns // STEP_NS  # in 10 s bins
    for level, ratio in enumerate(_RATIOS):
        start = -(-low // ratio)  # the first whole bin of this size
        if level == last:
            parts.append(f"{columns} AND bin >= ?")
            params += [by, level, start]
        else:
            end = -(-low // _RATIOS[level + 1]) * (_RATIOS[level + 1] // ratio)  # where the next size takes over
            parts.append(f"{columns} AND bin >= ? AND bin < ?")
            params += [by, level, start, end]
            low = end * ratio
    return " UNION ALL ".join(parts), params


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

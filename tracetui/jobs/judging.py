"""Which calls the judge looks at, and what it remembers between passes and across a restart.

The judge beside `serve` follows new calls by a **watermark**: the highest ``spans.id``
(arrival order) it has looked at. A pass reads the LLM calls that arrived since
(a range of the table's rowid, so its cost is what arrived, not the database), and
looks up, per call, whether this judge's source already has a result
(``evaluations_by_span``). It then advances the watermark past the calls it
started, once each of them is stored or scheduled for a retry.

Two kinds of calls are kept apart from the watermark, by key:

* **waiting for context**: a call whose run holds no retrieval result or tool output
  *yet*. Spans of a run arrive in many batches, so its context may come after it;
  the call waits, and is looked at again each time its run receives spans
  (``traces.updated_ns`` changed): judged as soon as context came; once the run has
  received nothing for :data:`SETTLE_S`, "not judged: no context". Context that comes later still is not looked for
  (`tracetui judge` over the database does not either: the call has a result).
* **waiting for a retry**: a call whose judging failed (endpoint down, timeout, a
  malformed verdict), with its backoff (tracetui.jobs.judge.Retries).

All of it is kept in ``meta`` so that a restarted judge resumes: ``judge_progress``
(the watermark with the judge source, filter and sample it was made for, the
retries and the calls waiting for context) and ``judge_spent`` (the budget's use in
the last hour, the calls in flight counted as spent). A watermark made for another
source, filter or sample starts again from the first span: the calls this source
has judged are skipped by an index lookup, so that is one scan, not a re-judging.

Results are never lost from under the watermark: an evaluation is deleted only with
its trace (retention evicts whole traces: spans, logs, evaluations), and a purge
empties the spans table, after which the watermark (above the last span id) starts
again from 0.

`tracetui judge` (one pass over the stored database, ``--since`` / ``--filter``) is
the same pass from watermark 0 with nothing kept, and no settling (stored runs are
taken as complete).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tracetui.jobs.context import NO_CONTEXT, RunContext
from tracetui.jobs.judge import NAME, Calls, Judge, Key, Retries, Tally, publish_state
from tracetui.model.filter import Filter
from tracetui.store.filter_sql import span_where
from tracetui.store.lock import WriteLock
from tracetui.store.reader import SqliteReader
from tracetui.store.schema import connect_writer

#: ``meta`` keys: the watermark and the calls waiting (JSON), the budget's use in the last hour (JSON).
PROGRESS_KEY = "judge_progress"
SPENT_KEY = "judge_spent"
#: Seconds a run must have received nothing before a call of it without context is "not judged: no context".
SETTLE_S = 30.0
#: LLM calls looked at per step; the watermark is saved (and the state published) after each.
STEP_CALLS = 200
#: "N behind" counts at most this far (a count reads the calls after the watermark).
MAX_BEHIND_COUNT = 10_000
#: At most this many calls wait for context; past it the oldest is settled at once.
MAX_WAITING = 10_000

_LLM_CALL = "spans.llm_kind = 'llm' AND (spans.counted IS NULL OR spans.counted != 0)"


@dataclass
class Progress:
    """What the judge has looked at (see the module docstring); ``made_for`` names the judge, filter and sample."""

    made_for: str = ""
    cursor: int = 0
    retries: Retries = field(default_factory=Retries)
    #: call -> its run's ``traces.updated_ns`` when last looked at (oldest first)
    waiting: dict[Key, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({
            "made_for": self.made_for, "cursor": self.cursor,
            "retries": [[_hex(k), n, when] for k, (n, when) in self.retries.due.items()],
            "waiting": [[_hex(k), seen] for k, seen in self.waiting.items()],
        })  # fmt: skip

    @classmethod
    def from_json(cls, text: str | None, made_for: str) -> Progress:
        """The kept progress; a fresh one when none was kept, or it was made for another judge, filter or sample."""
        data = _json(text)
        progress = cls(made_for)
        if data.get("made_for") != made_for:
            return progress
        progress.cursor = int(data.get("cursor") or 0)
        progress.retries.due = {_key(k): (int(n), float(when)) for k, n, when in data.get("retries", ())}
        progress.waiting = {_key(k): int(seen) for k, seen in data.get("waiting", ())}
        return progress


def made_for(judge: Judge, flt: Filter | None) -> str:
    """What a watermark is valid for: the calls this judge, filter and sample look at."""
    return json.dumps([judge.source, "" if flt is None else str(flt), judge.sample])


class Follower:
    """The judge beside `serve`: ``run()`` judges what arrived since its last pass, keeping its progress in meta."""

    def __init__(self, path: Path, judge: Judge, flt: Filter | None = None, *, settle_s: float = SETTLE_S,
                 log: Callable[[str], None] | None = None) -> None:  # fmt: skip
        self.path, self.judge, self.flt, self.settle_s, self.log = path, judge, flt, settle_s, log
        self.totals = Tally()
        conn = connect_writer(path)
        try:
            self.progress = Progress.from_json(_meta(conn, PROGRESS_KEY), made_for(judge, flt))
            load_spent(conn, judge)
        finally:
            conn.close()

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> Tally:
        """One pass: the calls due for a retry, those whose run has settled, then the new ones (step by step)."""

        def published(tally: Tally) -> None:
            publish_state(self.path, self.judge, tally, self.totals)

        tally = judge_pass(self.path, self.judge, self.progress, flt=self.flt, settle_s=self.settle_s, log=self.log,
                           keep=True, on_step=published, should_stop=should_stop)  # fmt: skip
        self.totals.add(tally)
        published(tally)
        return tally


def judge_stored(
    path: Path,
    judge: Judge,
    *,
    since_ns: int | None = None,
    flt: Filter | None = None,
    progress: Callable[[str], None] | None = None,
) -> Tally:
    """`tracetui judge`: every LLM call of the database that this judge has no result for yet (one pass, nothing kept
    but the budget's use)."""
    conn = connect_writer(path)
    try:
        load_spent(conn, judge)
    finally:
        conn.close()
    return judge_pass(path, judge, Progress(), flt=flt, since_ns=since_ns, settle_s=0.0, log=progress, keep=False)


def judge_pass(
    path: Path,
    judge: Judge,
    progress: Progress,
    *,
    flt: Filter | None = None,
    since_ns: int | None = None,
    settle_s: float = SETTLE_S,
    log: Callable[[str], None] | None = None,
    keep: bool = True,
    on_step: Callable[[Tally], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Tally:
    """Look at the calls after ``progress.cursor`` (and, with ``keep``, those waiting), advancing it; ``keep``:
    failed calls are scheduled for a retry and the progress is saved in meta after each call and step."""
    tally = Tally()
    one = _Pass(path, judge, progress, tally, flt, since_ns, settle_s, log, keep)
    try:
        one.retry_due()
        one.settle_waiting()
        while not (tally.paused or tally.stopped or should_stop()):
            more = one.step()
            tally.behind = one.behind()
            if on_step is not None and more:
                on_step(tally)
            if not more:
                break
    finally:
        one.close()
    return tally


class _Pass:
    """One pass's connections and calls (see :func:`judge_pass`)."""

    def __init__(self, path: Path, judge: Judge, progress: Progress, tally: Tally, flt: Filter | None,
                 since_ns: int | None, settle_s: float, log, keep: bool) -> None:  # fmt: skip
        self.path, self.judge, self.progress, self.tally, self.settle_s, self.keep = (
            path, judge, progress, tally, settle_s, keep)  # fmt: skip
        self.reader = SqliteReader(path)
        self.writer = connect_writer(path)
        self.lock = WriteLock(path)
        self.calls = Calls(judge, self.writer, self.lock, tally, log, progress.retries if keep else None,
                           after_call=self.save if keep and judge.url is not None else None)  # fmt: skip
        self.where, self.params = [_LLM_CALL], []
        if since_ns is not None:
            self.where.append("spans.start_ns >= ?")
            self.params.append(since_ns)
        if flt is not None and not flt.is_empty():
            sql, values = span_where(flt, "spans")
            self.where.append(f"({sql})")
            self.params += values
        self.last = self._one("SELECT max(id) FROM spans") or 0
        if progress.cursor > self.last:
            progress.cursor = 0  # the spans were purged: their ids start again
        self.runs: dict[bytes, RunContext] = {}

    # --- the calls kept apart from the watermark ------------------------------------------------

    def retry_due(self) -> None:
        for key in self.progress.retries.ready() if self.keep else ():
            if self.judged(key) or not self.look(key, final=True):
                self.progress.retries.due.pop(key, None)  # judged meanwhile (`tracetui judge`), or gone
            if self.tally.paused or self.calls.down:
                break

    def settle_waiting(self) -> None:
        now = time.time_ns()
        for key, seen in list(self.progress.waiting.items()):
            updated = self._one("SELECT updated_ns FROM traces WHERE trace_id = ?", (key[0],))
            quiet = updated is None or now - updated >= self.settle_s * 1e9
            if updated == seen and not quiet:
                continue  # nothing new in its run yet
            del self.progress.waiting[key]
            if updated is not None and not self.judged(key):
                self.look(key, final=quiet)  # new spans in its run: its context may have come
                if self.tally.paused:
                    self.progress.waiting[key] = seen  # it waits on, for the budget now
                    break
            if self.calls.down:
                break

    # --- the new calls ----------------------------------------------------------------------

    def step(self) -> bool:
        """Look at up to STEP_CALLS calls after the watermark; whether there may be more."""
        rows = self.reader._all(  # noqa: SLF001  (the reader's connection has the filter's SQL functions)
            f"SELECT spans.id, spans.trace_id, spans.span_id FROM spans AS spans WHERE spans.id > ? AND spans.id <= ? "
            f"AND {' AND '.join(self.where)} ORDER BY spans.id LIMIT {STEP_CALLS}",
            [self.progress.cursor, self.last, *self.params],
        )
        self.runs.clear()
        cursor = self.progress.cursor
        for span_row_id, trace_id, span_id in rows:
            key = (trace_id, span_id)
            if self.judge.sampled(*key) and not self.judged(key):
                self.look(key, final=False)
            if self.tally.paused:
                break  # this call waits for the budget: the watermark stays before it
            cursor = span_row_id
            if self.calls.down:
                break  # the calls started are stored or wait for a retry; the endpoint is tried again later
        else:
            cursor = rows[-1][0] if len(rows) == STEP_CALLS else self.last
        self.calls.wait()
        self.progress.cursor = cursor
        self.save()
        if self.calls.down:
            self.tally.stopped = True
        return len(rows) == STEP_CALLS and not (self.tally.paused or self.tally.stopped)

    def look(self, key: Key, *, final: bool) -> bool:
        """Judge ``key`` or store why not (or, its run still arriving, let it wait for context); False: it is gone."""
        run = self.runs.get(key[0])
        if run is None:
            run = self.runs[key[0]] = RunContext(self.reader.span_details(key[0]))
        detail = run.span(key[1])
        if detail is None:
            return False
        context = run.context(detail)
        updated = self._one("SELECT updated_ns FROM traces WHERE trace_id = ?", (key[0],))
        settled = updated is None or time.time_ns() - updated >= self.settle_s * 1e9
        if context.not_judged == NO_CONTEXT and not final and self.keep and not settled:
            self.progress.waiting[key] = updated
            if len(self.progress.waiting) > MAX_WAITING:
                oldest = next(iter(self.progress.waiting))
                del self.progress.waiting[oldest]
                self.calls.not_judged(oldest, NO_CONTEXT)
            return True
        self.calls.start(key, context)
        return True

    def judged(self, key: Key) -> bool:
        return (
            self._one(
                "SELECT 1 FROM evaluations WHERE trace_id = ? AND span_id = ? AND name = ? AND instr(source, ?) > 0",
                (*key, NAME, self.judge.source),
            )
            is not None
        )

    def behind(self) -> int:
        """The calls after the watermark not looked at yet (up to MAX_BEHIND_COUNT)."""
        return self._one(
            f"SELECT count(*) FROM (SELECT 1 FROM spans AS spans WHERE spans.id > ? AND {' AND '.join(self.where)} "
            f"LIMIT {MAX_BEHIND_COUNT})",
            (self.progress.cursor, *self.params),
        )

    def save(self) -> None:
        """Keep the progress and the budget's use in meta (one small transaction), when this pass keeps them."""
        if not self.keep and self.judge.budget is None:
            return
        values = [(SPENT_KEY, spent_json(self.judge))] if self.judge.budget is not None else []
        values += [(PROGRESS_KEY, self.progress.to_json())] if self.keep else []
        with self.lock:
            self.writer.execute("BEGIN IMMEDIATE")
            self.writer.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                values,
            )
            self.writer.execute("COMMIT")

    def close(self) -> None:
        try:
            self.calls.close()
            self.save()
        finally:
            self.tally.stopped = self.tally.stopped or self.calls.down
            self.tally.retrying = len(self.progress.retries.due) if self.keep else 0
            self.tally.waiting = len(self.progress.waiting)
            self.lock.close()
            self.writer.close()
            self.reader.close()

    def _one(self, sql: str, params: tuple | list = ()):
        rows = self.reader._all(sql, list(params))  # noqa: SLF001
        return rows[0][0] if rows else None


# --- the budget's use, kept across restarts -------------------------------------------------------


def spent_json(judge: Judge) -> str:
    assert judge.budget is not None
    return json.dumps({"usd": judge.budget.usd, "spent": judge.budget.ledger()})


def load_spent(conn, judge: Judge) -> None:
    """Count what was spent in the last hour (by an earlier judge process) against this judge's budget."""
    if judge.budget is None:
        return
    data = _json(_meta(conn, SPENT_KEY))
    if data.get("usd") == judge.budget.usd:
        horizon = time.time() - 3600
        judge.budget.spent = [(float(t), float(a)) for t, a in data.get("spent", ()) if float(t) > horizon]


def _meta(conn, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def _json(text: str | None) -> dict:
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _hex(key: Key) -> str:
    return f"{key[0].hex()}:{key[1].hex()}"


def _key(text: str) -> Key:
    trace_id, span_id = text.split(":")
    return bytes.fromhex(trace_id), bytes.fromhex(span_id)

"""`tracetui judge`: groundedness of stored LLM calls, judged off the hot path.

It reads committed spans through its own read connection and writes each result
in a small transaction of its own under the receiver's write lock
(``tracetui.store.lock.WriteLock``), so a running receiver waits at most one
tiny insert. Results are ordinary ``evaluations`` rows named ``groundedness``
from the source ``tracetui judge (MODEL)`` (or ``tracetui judge (lexical
estimate)``): badges, stats, filters, compare and export read them like any
evaluation an app sent. A call that cannot be judged is stored with no score and
the reason as its label ("not judged: no context", "not judged: no answer").

Idempotent per judge: a call that already has a result from this judge's source
is skipped, so a rerun (or a restart) continues where the last one stopped.

Not done yet (issue 20): following new calls by a watermark (docs/judge.md, "Not done yet").
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from tracetui.jobs import lexical
from tracetui.jobs.context import call_context
from tracetui.jobs.verdict import VerdictError, judge_messages, read_completion, reported_usage
from tracetui.llm import pricing
from tracetui.model.filter import Filter
from tracetui.store.filter_sql import span_where
from tracetui.store.lock import WriteLock
from tracetui.store.reader import SqliteReader
from tracetui.store.schema import connect_writer
from tracetui.store.writer import INSERT_EVALUATION

NAME = "groundedness"
LEXICAL = "lexical"
LEXICAL_SOURCE = "tracetui judge (lexical estimate)"
#: Seconds a judge model may take to answer.
TIMEOUT_S = 60.0


class EndpointError(RuntimeError):
    """The judge endpoint could not be used (down, timeout, HTTP error); ``kind`` says which."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


#: The window a ``--judge-budget`` is counted over.
BUDGET_WINDOW_S = 3600.0


@dataclass
class Budget:
    """At most ``limit`` tokens (or US dollars, ``usd``) spent on the judge model in any hour.

    Counted from the usage each response reports (a response without usage counts 0), in this
    process: a restart starts a new hour. Dollars are priced with tracetui's own pricing.
    """

    limit: float
    usd: bool = False
    spent: list[tuple[float, float]] = field(default_factory=list)  # (time.monotonic(), amount)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # calls end in threads

    def used(self) -> float:
        horizon = time.monotonic() - BUDGET_WINDOW_S
        with self._lock:
            self.spent = [(t, amount) for t, amount in self.spent if t > horizon]
            return sum(amount for _, amount in self.spent)

    def exhausted(self) -> bool:
        return self.used() >= self.limit

    def add(self, model: str | None, tokens: tuple[int | None, int | None]) -> None:
        usage = {"input_tokens": tokens[0] or 0, "output_tokens": tokens[1] or 0}
        amount = float(sum(usage.values()))
        if self.usd:
            amount = pricing.pricer().price((model,), None, dict(usage), time.time_ns())[0] or 0.0
        with self._lock:
            self.spent.append((time.monotonic(), amount))

    def __str__(self) -> str:
        return f"${self.limit:g}/h" if self.usd else f"{self.limit:,.0f} tokens/h"


def priced(model: str) -> bool:
    """Whether tracetui's pricing knows ``model`` (a dollar budget needs a price)."""
    usage: dict[str, int | None] = {"input_tokens": 1000, "output_tokens": 1000}
    return pricing.pricer().price((model,), None, usage, time.time_ns())[0] is not None


@dataclass(frozen=True)
class Judge:
    """``url`` None: the lexical estimate; else an OpenAI-compatible endpoint (…/v1) and its model."""

    url: str | None = None
    model: str | None = None
    api_key: str | None = None
    #: Most calls a minute sent to the model (0: no limit); the lexical estimate is not limited.
    rate_per_min: float = 0.0
    #: The share of calls judged (1: all), chosen by span id, so a rerun samples the same calls.
    sample: float = 1.0
    #: Seconds the model may take to answer one call.
    timeout_s: float = TIMEOUT_S
    #: Calls to the model in flight at once (threads); results are still written one by one.
    concurrency: int = 2
    #: Tokens or dollars an hour the model may use (None: no budget); the lexical estimate uses none.
    budget: Budget | None = None

    def sampled(self, trace_id: bytes, span_id: bytes) -> bool:
        return self.sample >= 1 or zlib.crc32(trace_id + span_id) / 2**32 < self.sample

    @property
    def source(self) -> str:
        return LEXICAL_SOURCE if self.url is None else f"tracetui judge ({self.model})"

    def score(self, answer: str, documents: list[str], conversation: list[str]) -> tuple[float | None, str]:
        """(score, explanation); raises EndpointError or VerdictError for a model that could not answer."""
        if self.url is None:
            found = lexical.estimate(answer, documents + conversation)
            return found.score, found.explanation
        body = {"model": self.model, "temperature": 0, "messages": judge_messages(answer, documents, conversation)}
        response = self._post(body)
        if self.budget is not None:
            self.budget.add(self.model, reported_usage(response))  # spent even when the verdict is unusable
        verdict = read_completion(response)
        return verdict.score, verdict.explanation

    def over_budget(self) -> bool:
        return self.url is not None and self.budget is not None and self.budget.exhausted()

    def _post(self, body: dict) -> object:
        assert self.url is not None
        headers = {"content-type": "application/json"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(
            self.url.rstrip("/") + "/chat/completions", json.dumps(body).encode(), headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise EndpointError(f"HTTP {exc.code}", exc.read(300).decode("utf-8", "replace")) from None
        except TimeoutError:
            raise EndpointError("timeout", f"no answer within {self.timeout_s:g}s") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise EndpointError("timeout", f"no answer within {self.timeout_s:g}s") from None
            raise EndpointError("endpoint down", str(exc.reason)) from None
        except ValueError as exc:
            raise VerdictError("non-JSON verdict", f"the endpoint's body is not JSON: {exc}") from None


@dataclass
class Retries:
    """The calls whose judging failed and when each may be tried again: exponential backoff per
    call, ``first_s`` doubling up to ``most_s``. Kept by the judge beside `serve` across passes."""

    first_s: float = 2.0
    most_s: float = 300.0
    #: (trace id, span id) -> (failures so far, time.monotonic() when it may be tried again)
    due: dict[tuple[bytes, bytes], tuple[int, float]] = field(default_factory=dict)

    def failed(self, key: tuple[bytes, bytes]) -> float:
        """Schedule the next try of ``key``; the seconds until then."""
        failures = self.due.get(key, (0, 0.0))[0] + 1
        delay = min(self.most_s, self.first_s * 2 ** (failures - 1))
        self.due[key] = (failures, time.monotonic() + delay)
        return delay

    def waiting(self, key: tuple[bytes, bytes]) -> bool:
        return key in self.due and self.due[key][1] > time.monotonic()

    def keep_only(self, pending: dict[bytes, set[bytes]]) -> None:
        """Forget the calls that no longer wait (judged meanwhile, or gone)."""
        self.due = {k: v for k, v in self.due.items() if k[1] in pending.get(k[0], ())}


@dataclass
class Tally:
    judged: int = 0
    not_judged: int = 0
    failed: int = 0
    #: The pass stopped at an endpoint that is down (the calls after it were not tried).
    stopped: bool = False
    #: The pass stopped because the model used its hourly ``--judge-budget``.
    paused: bool = False
    #: Calls waiting for this judge when the pass began, and the last failure seen.
    pending: int = 0
    last_failure: str | None = None
    #: Failed calls waiting for their next try (with ``Retries``).
    retrying: int = 0


#: The ``meta`` key holding the judge's state for the header and `tracetui status` (JSON).
META_KEY = "judge"


def publish_state(path: Path, judge: Judge, tally: Tally, totals: Tally) -> None:
    """Write the judge's state into ``meta`` (one tiny transaction under the write lock)."""
    behind = max(0, tally.pending - tally.judged - tally.not_judged)
    state = (
        "endpoint down" if tally.stopped else "paused for budget" if tally.paused
        else "judging" if behind or tally.judged or tally.not_judged else "idle"
    )  # fmt: skip
    value = {"state": state, "source": judge.source, "behind": behind, "judged": totals.judged, "retrying": tally.retrying,
             "budget": None if judge.budget is None else str(judge.budget),
             "not_judged": totals.not_judged, "failed": totals.failed, "last_failure": tally.last_failure,
             "heartbeat_ns": time.time_ns()}  # fmt: skip
    conn = connect_writer(path)
    lock = WriteLock(path)
    try:
        with lock:
            conn.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (META_KEY, json.dumps(value)),
            )
    finally:
        lock.close()
        conn.close()


def judge_stored(
    path: Path,
    judge: Judge,
    *,
    since_ns: int | None = None,
    flt: Filter | None = None,
    progress: Callable[[str], None] | None = None,
    retries: Retries | None = None,
) -> Tally:
    """Judge every LLM call of the database at ``path`` that this judge has no result for yet (one pass).

    With ``retries``, a call that failed is skipped until its backoff has passed.
    """
    reader = SqliteReader(path)
    writer = connect_writer(path)
    lock = WriteLock(path)
    tally = Tally()
    calls = _Calls(judge, writer, lock, tally, progress, retries)
    try:
        pending = {
            trace_id: chosen
            for trace_id, span_ids in _pending(reader, judge.source, since_ns, flt).items()
            if (chosen := {s for s in span_ids if judge.sampled(trace_id, s)})
        }
        tally.pending = sum(len(s) for s in pending.values())
        if retries is not None:
            retries.keep_only(pending)
        for trace_id, span_ids in pending.items():
            run = reader.span_details(trace_id)
            for detail in run:
                if detail.row["span_id"] not in span_ids or (
                    retries and retries.waiting((trace_id, detail.row["span_id"]))
                ):
                    continue
                calls.start(trace_id, detail, run)
                if tally.paused:
                    return tally  # the calls wait for the budget's hour to roll on
                if calls.down:
                    tally.stopped = True  # the endpoint is down: the other calls would fail the same way
                    return tally
    finally:
        calls.close()
        tally.stopped = tally.stopped or calls.down
        tally.retrying = len(retries.due) if retries is not None else 0
        lock.close()
        writer.close()
        reader.close()
    return tally


class _Calls:
    """One pass's calls: up to ``judge.concurrency`` calls to the model in flight (threads). Every
    result is written by the pass's own thread, each in a small transaction under the write lock."""

    def __init__(self, judge: Judge, writer, lock, tally: Tally, progress, retries: Retries | None) -> None:
        self.judge, self.writer, self.lock, self.tally = judge, writer, lock, tally
        self.progress, self.retries = progress, retries
        threaded = judge.url is not None and judge.concurrency > 1
        self.pool = ThreadPoolExecutor(judge.concurrency, "judge") if threaded else None
        self.in_flight: dict[Future, tuple[bytes, bytes]] = {}
        #: A call found the endpoint down (nothing stored for it).
        self.down = False

    def start(self, trace_id: bytes, detail, run) -> None:
        """Judge one call (in a thread when concurrent), or store why it is not judged."""
        context = call_context(detail, run)
        key = (trace_id, detail.row["span_id"])
        reason = context.not_judged
        if reason is not None:
            self.tally.not_judged += 1
            self._store(
                key,
                (None, reason, "no retrieval result or tool output before this call" if "context" in reason else None),
            )
            return
        if self.pool is not None and len(self.in_flight) >= self.judge.concurrency:
            self.wait(FIRST_COMPLETED)
        if self.judge.over_budget():  # counted when a call ends: the calls in flight may pass it a little
            self.tally.paused = True
            return
        if self.judge.url is not None and self.judge.rate_per_min > 0:
            _wait_for_rate(self.judge.rate_per_min)
        args = (context.answer, context.documents, context.conversation)
        if self.pool is None:
            self._finish(key, lambda: self.judge.score(*args))
            return
        self.in_flight[self.pool.submit(self.judge.score, *args)] = key

    def wait(self, return_when: str = ALL_COMPLETED) -> None:
        done, _ = wait(self.in_flight, return_when=return_when)
        for future in done:
            self._finish(self.in_flight.pop(future), future.result)

    def close(self) -> None:
        if self.pool is not None:
            self.wait()
            self.pool.shutdown()

    def _finish(self, key: tuple[bytes, bytes], result: Callable[[], tuple[float | None, str]]) -> None:
        try:
            score, explanation = result()
        except (EndpointError, VerdictError) as exc:
            self._failed(key, exc)
            return
        if self.retries is not None:
            self.retries.due.pop(key, None)
        row = (score, "estimate" if self.judge.url is None else None, explanation) if score is not None else (
            None, "not judged: no claims", explanation)  # fmt: skip
        self.tally.judged += score is not None
        self.tally.not_judged += score is None
        self._store(key, row)

    def _failed(self, key: tuple[bytes, bytes], exc: Exception) -> None:
        """Nothing is stored (never a 0): say so, and schedule a retry when the job keeps ``retries``."""
        self.tally.failed += 1
        self.tally.last_failure = str(exc)[:200]
        down = isinstance(exc, EndpointError) and exc.kind == "endpoint down"
        self.down = self.down or down
        if self.retries is not None and not down:  # a down endpoint stops the pass: the job waits for it
            then = f"tried again in {self.retries.failed(key):g}s"
        else:
            then = "a rerun tries again"
        if self.progress:
            self.progress(f"{key[1].hex()}: {exc} (not recorded; {then})")

    def _store(self, key: tuple[bytes, bytes], row: tuple[float | None, str | None, str | None]) -> None:
        """Write one result (score, label, explanation) in a transaction of its own."""
        with self.lock:
            self.writer.execute(INSERT_EVALUATION, (*key, None, NAME, *row, self.judge.source, time.time_ns()))


_last_call = [0.0]


def _wait_for_rate(per_min: float) -> None:
    """Sleep until a call is allowed: at most ``per_min`` calls a minute, evenly spaced."""
    wait = _last_call[0] + 60.0 / per_min - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    _last_call[0] = time.monotonic()


def _pending(reader: SqliteReader, source: str, since_ns: int | None, flt: Filter | None) -> dict[bytes, set[bytes]]:
    """Trace id -> span ids of the counted LLM calls without a result from ``source`` (oldest runs first)."""
    where = ["spans.llm_kind = 'llm'", "(spans.counted IS NULL OR spans.counted != 0)"]
    params: list[object] = []
    if since_ns is not None:
        where.append("spans.start_ns >= ?")
        params.append(since_ns)
    if flt is not None and not flt.is_empty():
        sql, values = span_where(flt, "spans")
        where.append(f"({sql})")
        params += values
    where.append(
        "NOT EXISTS (SELECT 1 FROM evaluations e WHERE e.trace_id = spans.trace_id AND e.span_id = spans.span_id "
        "AND e.name = ? AND instr(e.source, ?) > 0)"
    )
    params += [NAME, source]
    rows = reader._all(  # noqa: SLF001  (the reader's connection has the filter's SQL functions)
        f"SELECT spans.trace_id, spans.span_id FROM spans AS spans WHERE {' AND '.join(where)} ORDER BY spans.id",
        params,
    )
    out: dict[bytes, set[bytes]] = {}
    for trace_id, span_id in rows:
        out.setdefault(trace_id, set()).add(span_id)
    return out

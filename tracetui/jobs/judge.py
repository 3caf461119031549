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
is skipped, so a rerun (or a restart) continues where the last one stopped. Which
calls a pass looks at is tracetui.jobs.judging's business (the watermark); this
module judges one call and stores the result.

Content policy (``--no-content`` / ``--redact``, tracetui.model.config.ContentPolicy):
what a model is sent has every redaction applied, and a model judge refuses to
start without content. The lexical estimate runs here (nothing leaves the
machine); without content its explanation gives counts and quotes nothing.
"""

from __future__ import annotations

import itertools
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
from tracetui.jobs.context import NO_CONTEXT, CallContext
from tracetui.jobs.verdict import VerdictError, judge_messages, read_completion, reported_usage
from tracetui.llm import pricing
from tracetui.llm.evals import ESTIMATE_LABEL
from tracetui.model.config import ContentPolicy
from tracetui.store.lock import WriteLock
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
#: Completion tokens reserved for a call before it is sent (a claim list rarely needs more).
COMPLETION_ALLOWANCE = 400
#: Characters per prompt token, for the reservation (the usual rule of thumb for English text).
CHARS_PER_TOKEN = 4


@dataclass
class Budget:
    """At most ``limit`` tokens (or US dollars, ``usd``) spent on the judge model in any hour.

    Before a call is sent, an estimate of what it will use is *reserved* (its prompt's characters
    / 4, plus :data:`COMPLETION_ALLOWANCE`); when it ends, the reservation is *settled* with the
    usage the response reports (the estimate when it reports none; nothing when no response came).
    A call starts only while what is spent and reserved leaves room for its estimate, or when it
    would be the only call in flight and the hour is not spent yet: with any ``--judge-concurrency``
    the budget is passed by at most one call's error, never by the calls in flight. ``spent`` uses
    wall-clock seconds so that it can be kept in ``meta`` (tracetui.jobs.judging) and survive a restart.
    """

    limit: float
    usd: bool = False
    spent: list[tuple[float, float]] = field(default_factory=list)  # (time.time(), amount)
    reserved: dict[int, float] = field(default_factory=dict)  # ticket -> amount, for the calls in flight
    _tickets: itertools.count = field(default_factory=itertools.count, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # calls end in threads

    def used(self) -> float:
        """Spent in the last hour, plus what the calls in flight have reserved."""
        with self._lock:
            return self._used()

    def exhausted(self) -> bool:
        return self.used() >= self.limit

    def amount(self, model: str | None, input_tokens: int, output_tokens: int) -> float:
        """What this usage counts against the budget: tokens, or dollars priced with tracetui's pricing."""
        usage: dict[str, int | None] = {"input_tokens": input_tokens, "output_tokens": output_tokens}
        if not self.usd:
            return float(input_tokens + output_tokens)
        return pricing.pricer().price((model,), None, usage, time.time_ns())[0] or 0.0

    def reserve(self, estimate: float, alone: bool) -> int | None:
        """A ticket holding ``estimate`` until ``settle``; None when it does not fit now (see the class)."""
        with self._lock:
            used = self._used()
            if used + estimate > self.limit and not (alone and used < self.limit):
                return None
            ticket = next(self._tickets)
            self.reserved[ticket] = estimate
            return ticket

    def settle(self, ticket: int, amount: float | None) -> None:
        """Replace the reservation by ``amount`` (None: the reserved estimate)."""
        with self._lock:
            estimate = self.reserved.pop(ticket, 0.0)
            self.spent.append((time.time(), estimate if amount is None else amount))

    def ledger(self) -> list[tuple[float, float]]:
        """What to keep across a restart: the hour's spending, the reservations in flight counted as spent."""
        with self._lock:
            self._used()
            return self.spent + [(time.time(), amount) for amount in self.reserved.values()]

    def _used(self) -> float:
        horizon = time.time() - BUDGET_WINDOW_S
        self.spent = [(t, amount) for t, amount in self.spent if t > horizon]
        return sum(amount for _, amount in self.spent) + sum(self.reserved.values())

    def __str__(self) -> str:
        return f"${self.limit:g}/h" if self.usd else f"{self.limit:,.0f} tokens/h"


def priced(model: str) -> bool:
    """Whether tracetui's pricing knows ``model`` (a dollar budget needs a price)."""
    usage: dict[str, int | None] = {"input_tokens": 1000, "output_tokens": 1000}
    return pricing.pricer().price((model,), None, usage, time.time_ns())[0] is not None


#: Why a model judge cannot run with ``--no-content``.
NO_CONTENT_REFUSAL = (
    "a judge model would read the prompts and answers, and content is kept out (--no-content): "
    "use --judge lexical (it runs here and quotes nothing), or drop --no-content"
)


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
    #: Where content may be copied (``serve --no-content`` / ``--redact``, or the policy the database records):
    #: what a model is sent is redacted, and no model judges without content.
    policy: ContentPolicy = field(default_factory=ContentPolicy)

    def __post_init__(self) -> None:
        if self.url is not None and not self.policy.keep_content:
            raise ValueError(NO_CONTENT_REFUSAL)

    def sampled(self, trace_id: bytes, span_id: bytes) -> bool:
        return self.sample >= 1 or zlib.crc32(trace_id + span_id) / 2**32 < self.sample

    @property
    def source(self) -> str:
        return LEXICAL_SOURCE if self.url is None else f"tracetui judge ({self.model})"

    def messages(self, context: CallContext) -> list[dict[str, str]]:
        """What the model is sent for ``context``, every redaction of the policy applied."""
        redacted = self.policy.redacted
        return judge_messages(
            redacted(context.answer),
            [redacted(d) for d in context.documents],
            [redacted(c) for c in context.conversation],
        )

    def estimate(self, messages: list[dict[str, str]]) -> float:
        """What a call with these messages is expected to use of the budget (reserved before it is sent)."""
        assert self.budget is not None
        chars = sum(len(m["content"]) for m in messages)
        return self.budget.amount(self.model, -(-chars // CHARS_PER_TOKEN), COMPLETION_ALLOWANCE)

    def score(self, context: CallContext, ticket: int | None = None) -> tuple[float | None, str]:
        """(score, explanation); raises EndpointError or VerdictError for a model that could not answer.

        ``ticket``: the budget's reservation for this call, settled here with what the response reports.
        """
        if self.url is None:
            return self._estimate(context)
        used: float | None = 0.0  # nothing is spent when no response comes
        try:
            response = self._post({"model": self.model, "temperature": 0, "messages": self.messages(context)})
            used = self._used(response)
        finally:
            if self.budget is not None and ticket is not None:
                self.budget.settle(ticket, used)  # spent even when the verdict is unusable
        verdict = read_completion(response)
        return verdict.score, verdict.explanation

    def _used(self, response: object) -> float | None:
        """What the response reports it used, in the budget's unit (None: it reports nothing)."""
        tokens = reported_usage(response)
        if tokens == (None, None) or self.budget is None:
            return None
        return self.budget.amount(self.model, tokens[0] or 0, tokens[1] or 0)

    def _estimate(self, context: CallContext) -> tuple[float | None, str]:
        """The lexical estimate (here, nothing leaves the machine); its explanation quotes only what policy lets out."""
        redacted = self.policy.redacted
        found = lexical.estimate(
            redacted(context.answer), [redacted(t) for t in context.documents + context.conversation]
        )
        return found.score, found.explanation if self.policy.keep_content else found.counts

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


Key = tuple[bytes, bytes]  # (trace id, span id) of a call


@dataclass
class Retries:
    """The calls whose judging failed and when each may be tried again: exponential backoff per
    call, ``first_s`` doubling up to ``most_s``. Wall-clock times, so they can be kept in ``meta``."""

    first_s: float = 2.0
    most_s: float = 300.0
    #: (trace id, span id) -> (failures so far, time.time() when it may be tried again)
    due: dict[Key, tuple[int, float]] = field(default_factory=dict)

    def failed(self, key: Key) -> float:
        """Schedule the next try of ``key``; the seconds until then."""
        failures = self.due.get(key, (0, 0.0))[0] + 1
        delay = min(self.most_s, self.first_s * 2 ** (failures - 1))
        self.due[key] = (failures, time.time() + delay)
        return delay

    def ready(self) -> list[Key]:
        """The calls whose backoff has passed, oldest first."""
        now = time.time()
        return [key for key, (_, when) in sorted(self.due.items(), key=lambda item: item[1][1]) if when <= now]


@dataclass
class Tally:
    judged: int = 0
    not_judged: int = 0
    failed: int = 0
    #: The pass stopped at an endpoint that is down (the calls after it were not tried).
    stopped: bool = False
    #: The pass stopped because the model used its hourly ``--judge-budget``.
    paused: bool = False
    #: Calls not looked at yet when the pass ended (counted up to a bound), and the last failure seen.
    behind: int = 0
    last_failure: str | None = None
    #: Failed calls waiting for their next try (with ``Retries``).
    retrying: int = 0
    #: Calls without context whose run is still receiving spans (their context may be on its way).
    waiting: int = 0

    def add(self, other: Tally) -> None:
        self.judged += other.judged
        self.not_judged += other.not_judged
        self.failed += other.failed


#: The ``meta`` key holding the judge's state for the header and `tracetui status` (JSON).
META_KEY = "judge"


def publish_state(path: Path, judge: Judge, tally: Tally, totals: Tally) -> None:
    """Write the judge's state into ``meta`` (one tiny transaction under the write lock)."""
    state = (
        "endpoint down" if tally.stopped else "paused for budget" if tally.paused
        else "judging" if tally.behind or tally.judged or tally.not_judged else "idle"
    )  # fmt: skip
    value = {"state": state, "source": judge.source, "behind": tally.behind, "judged": totals.judged,
             "retrying": tally.retrying, "waiting": tally.waiting,
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


class Calls:
    """One pass's calls: up to ``judge.concurrency`` calls to the model in flight (threads). Every
    result is written by the pass's own thread, each in a small transaction under the write lock."""

    def __init__(self, judge: Judge, writer, lock, tally: Tally, progress, retries: Retries | None,
                 after_call: Callable[[], None] | None = None) -> None:  # fmt: skip
        self.judge, self.writer, self.lock, self.tally = judge, writer, lock, tally
        self.progress, self.retries = progress, retries
        #: Called (in the pass's thread) after each call to the model ends: the judge keeps its budget and retries.
        self.after_call = after_call
        threaded = judge.url is not None and judge.concurrency > 1
        self.pool = ThreadPoolExecutor(judge.concurrency, "judge") if threaded else None
        self.in_flight: dict[Future, Key] = {}
        #: A call found the endpoint down.
        self.down = False

    def start(self, key: Key, context: CallContext) -> None:
        """Judge one call (in a thread when concurrent), or store why it is not judged."""
        reason = context.not_judged
        if reason is not None:
            self.not_judged(key, reason)
            return
        if self.pool is not None and len(self.in_flight) >= self.judge.concurrency:
            self.wait(FIRST_COMPLETED)
        ticket = self._reserve(context)
        if self.tally.paused:
            return  # the call waits for the budget's hour to roll on
        if self.judge.url is not None and self.judge.rate_per_min > 0:
            _wait_for_rate(self.judge.rate_per_min)
        if self.pool is None:
            self._finish(key, lambda: self.judge.score(context, ticket))
            return
        self.in_flight[self.pool.submit(self.judge.score, context, ticket)] = key

    def not_judged(self, key: Key, reason: str) -> None:
        self.tally.not_judged += 1
        self._store(
            key, (None, reason, "no retrieval result or tool output before this call" if reason == NO_CONTEXT else None)
        )

    def _reserve(self, context: CallContext) -> int | None:
        """The budget's ticket for this call, once there is room (waiting for calls in flight); sets
        ``tally.paused`` when the hour is spent."""
        budget = self.judge.budget
        if self.judge.url is None or budget is None:
            return None
        estimate = self.judge.estimate(self.judge.messages(context))
        while (ticket := budget.reserve(estimate, alone=not self.in_flight)) is None:
            if not self.in_flight:
                self.tally.paused = True
                return None
            self.wait(FIRST_COMPLETED)
        return ticket

    def wait(self, return_when: str = ALL_COMPLETED) -> None:
        done, _ = wait(self.in_flight, return_when=return_when)
        for future in done:
            self._finish(self.in_flight.pop(future), future.result)

    def close(self) -> None:
        if self.pool is not None:
            self.wait()
            self.pool.shutdown()

    def _finish(self, key: Key, result: Callable[[], tuple[float | None, str]]) -> None:
        try:
            self._record(key, result)
        finally:
            if self.after_call is not None:
                self.after_call()

    def _record(self, key: Key, result: Callable[[], tuple[float | None, str]]) -> None:
        try:
            score, explanation = result()
        except (EndpointError, VerdictError) as exc:
            self._failed(key, exc)
            return
        if self.retries is not None:
            self.retries.due.pop(key, None)
        row = (score, ESTIMATE_LABEL if self.judge.url is None else None, explanation) if score is not None else (
            None, "not judged: no claims", explanation)  # fmt: skip
        self.tally.judged += score is not None
        self.tally.not_judged += score is None
        self._store(key, row)

    def _failed(self, key: Key, exc: Exception) -> None:
        """Nothing is stored (never a 0): say so, and schedule a retry when the job keeps ``retries``."""
        self.tally.failed += 1
        self.tally.last_failure = str(exc)[:200]
        self.down = self.down or (isinstance(exc, EndpointError) and exc.kind == "endpoint down")
        then = f"tried again in {self.retries.failed(key):g}s" if self.retries is not None else "a rerun tries again"
        if self.progress:
            self.progress(f"{key[1].hex()}: {exc} (not recorded; {then})")

    def _store(self, key: Key, row: tuple[float | None, str | None, str | None]) -> None:
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

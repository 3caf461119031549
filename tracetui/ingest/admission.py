"""Admission: which exports may take the receiver's memory now, fairly, and what the others are told.

Both servers (gRPC and HTTP) share one :class:`Admission`. An export asks for
a :class:`Pass` *before its body is read* and gives it back once it is
answered, so what the receiver holds is bounded by the pass budget, not by the
bytes on the wire. A pass is charged the memory the export will cost, not its
size: a JSON body parses into Python objects many times its size
(:data:`JSON_COST_FACTOR`), a protobuf one is copied to an ingest worker and
decoded there (:data:`PROTOBUF_COST_FACTOR`).

When the budget is taken, exports wait in line (without their bodies: gRPC
and the HTTP server leave unread bytes in the kernel and the flow-control
window) for at most a few seconds, then are told to retry. The line is not
first come, first served: the export whose connection has had the fewest
bytes admitted lately goes first (a decaying per-connection count). An SDK
exporter sending a small batch every few seconds is therefore let in ahead of
clients that keep the receiver busy with large ones, which wait or are
refused, and nobody loses what was acknowledged.

Refusals carry a retry delay that grows with the backlog (the bytes admitted
or waiting, over the recent drain rate), instead of a fixed second: clients
that honour it (OTLP exporters do: gRPC ``RetryInfo``, HTTP ``Retry-After``)
come back when there is room, rather than all at once. The Python SDK
(opentelemetry-exporter-otlp-proto-grpc 1.45.2, ``exporter.py``; -proto-http
1.45.2 through ``exporter/otlp/common/http.py``) makes at most 6 attempts
within its export timeout (10 s by default), sleeps exactly the suggested
delay, and drops the batch at once when that delay would end past the
deadline: hence short delays (:data:`MAX_RETRY_S`) and waiting in line rather
than refusing early. With a fixed 1 s delay its 6 attempts spanned ~5 s.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from dataclasses import dataclass, field

#: Memory per byte of an OTLP/JSON body parsed whole (Python objects): logs and metrics;
#: measured on small spans, a 16 MB body peaked near 150 MB of RSS in json.loads + ParseDict.
JSON_COST_FACTOR = 10
#: The same for traces, converted a span at a time (otlp_json.parse_traces_lean): 16 MB -> 25 MB.
JSON_TRACES_COST_FACTOR = 2
#: Memory per byte of a protobuf body: the received copy, the copy sent to an ingest worker,
#: the parsed message and the decoded rows there.
PROTOBUF_COST_FACTOR = 3
#: What an export of unknown size (gRPC: the size is known only once read) reserves first.
UNKNOWN_SIZE_COST = 4 * 1024 * 1024
#: Exports of unknown size being read at once: each may turn out as large as the request limit,
#: so they are few; a connection's next export reserves what its last one cost.
MAX_UNKNOWN_READS = 1
#: Longest an export waits in line for memory before it is told to retry.
MAX_WAIT_S = 3.0
#: Half-life of the per-connection count of bytes admitted (fairness memory).
USAGE_HALF_LIFE_S = 10.0
#: Bounds of the retry delay suggested to refused exporters. The Python SDK's exporters give
#: up on a batch when the suggested delay would end past their 10 s deadline, so it stays short.
MIN_RETRY_S = 1.0
MAX_RETRY_S = 5.0


#: Estimated memory that exports in flight may hold together (beyond the receiver's own ~65 MB and its
#: workers' and jobs', under the process tree's 300 MB budget, docs/budgets.md).
DEFAULT_BUDGET = 64 * 1024 * 1024


def default_budget(max_request_bytes: int) -> int:
    """The budget for a request size limit: 64 MiB, or 4 requests' worth when requests are limited below 16 MiB."""
    return min(DEFAULT_BUDGET, 4 * max_request_bytes)


class OverBudget(Exception):
    """Exports in flight already hold as much memory as the receiver allows."""

    def __init__(self, message: str, retry_after_s: float = MIN_RETRY_S) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(eq=False)
class _Waiter:
    peer: str
    cost: int
    seq: int
    unknown_size: bool
    granted: bool = False


@dataclass(eq=False)
class Pass:
    """One export's share of the budget; :meth:`release` (idempotent) gives it back."""

    admission: Admission
    peer: str
    held: int = 0
    #: Reserved before the body's size was known (see MAX_UNKNOWN_READS), until resize().
    sizing: bool = False
    released: bool = field(default=False, repr=False)

    def grow(self, n: int) -> None:
        """Charge ``n`` more bytes (a body read in pieces, a decompressed payload); raises OverBudget."""
        self.admission._grow(self, n)

    def resize(self, cost: int) -> None:
        """Charge exactly ``cost`` from now on (once a body's real size is known); never waits or fails.

        The body is already in memory, so the charge is recorded even past the
        limit; the exports behind it then wait until it is answered.
        """
        self.admission._resize(self, cost)

    def release(self) -> None:
        self.admission._release(self)


class Admission:
    """The shared budget of memory held by exports in flight, and the fair line in front of it.

    Args:
        limit: bytes of estimated memory that passes may hold together. One
            export is always let in when nothing else holds the budget, however
            large (up to the request size limit), so a big batch is slow, never stuck.
        max_wait_s: longest an export waits in line before it is refused.
    """

    def __init__(self, limit: int, max_wait_s: float = MAX_WAIT_S) -> None:
        self.limit = limit
        self.max_wait_s = max_wait_s
        self.used = 0
        self._cond = threading.Condition()
        self._line: list[_Waiter] = []
        self._seq = itertools.count()
        #: peer -> (bytes admitted, decayed; when it was last decayed)
        self._usage: dict[str, tuple[float, float]] = {}
        #: Bytes given back, decayed like _usage: the recent drain rate (bytes/s) is this / the half-life.
        self._drained = (0.0, time.monotonic())
        #: Passes out whose body's size is not known yet.
        self.sizing = 0
        #: Passes out: exports admitted and not answered yet (what a graceful stop waits for).
        self.in_flight = 0

    # --- asking -----------------------------------------------------------------

    def enter(self, peer: str, cost: int, wait_s: float | None = None, *, unknown_size: bool = False) -> Pass:
        """Wait in line (at most ``wait_s``, default :attr:`max_wait_s`) for ``cost`` bytes; raises OverBudget.

        ``unknown_size``: ``cost`` is a guess, corrected by :meth:`Pass.resize`
        once the body is read; at most :data:`MAX_UNKNOWN_READS` such passes are out at once.
        """
        deadline = time.monotonic() + (self.max_wait_s if wait_s is None else max(0.0, wait_s))
        with self._cond:
            waiter = _Waiter(peer, cost, next(self._seq), unknown_size)
            self._line.append(waiter)
            self._grant()
            while not waiter.granted:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._line.remove(waiter)
                    self._grant()  # those behind it may fit now
                    raise OverBudget(self._busy_message(), self._retry_delay_locked())
                self._cond.wait(remaining)
            return Pass(self, peer, cost, sizing=unknown_size)

    def retry_delay(self) -> float:
        """Seconds a refused exporter should wait: the backlog over the recent drain rate, within bounds."""
        with self._cond:
            return self._retry_delay_locked()

    # --- the line -----------------------------------------------------------------

    def _grant(self) -> None:
        """Let in, lightest connection first, every waiting export that fits (called holding the lock)."""
        if not self._line:
            return
        now = time.monotonic()
        order = sorted(self._line, key=lambda w: (self._peer_usage(w.peer, now), w.seq))
        granted = False
        for waiter in order:
            if waiter.unknown_size and self.sizing >= MAX_UNKNOWN_READS:
                continue  # waits for a read of unknown size to end; others may go
            if self.used == 0 or self.used + waiter.cost <= self.limit:
                self.sizing += waiter.unknown_size
                self.used += waiter.cost
                self.in_flight += 1
                self._add_usage(waiter.peer, waiter.cost, now)
                waiter.granted = True
                self._line.remove(waiter)
                granted = True
            else:
                break  # strict order: a smaller export behind must not overtake for ever
        if granted:
            self._cond.notify_all()

    def _grow(self, p: Pass, n: int) -> None:
        with self._cond:
            if p.released:
                return
            if self.used + n > self.limit and self.used != p.held:
                raise OverBudget(self._busy_message(), self._retry_delay_locked())
            self.used += n
            p.held += n
            self._add_usage(p.peer, n, time.monotonic())

    def _resize(self, p: Pass, cost: int) -> None:
        with self._cond:
            if p.released:
                return
            self._sized(p)
            self.used += cost - p.held
            if cost > p.held:
                self._add_usage(p.peer, cost - p.held, time.monotonic())
            p.held = cost
            self._grant()

    def _release(self, p: Pass) -> None:
        with self._cond:
            if p.released:
                return
            p.released = True
            self._sized(p)
            self.used -= p.held
            self.in_flight -= 1
            now = time.monotonic()
            self._drained = (self._decayed(*self._drained, now) + p.held, now)
            p.held = 0
            self._grant()

    def _sized(self, p: Pass) -> None:
        if p.sizing:
            p.sizing = False
            self.sizing -= 1

    def _retry_delay_locked(self) -> float:
        backlog = self.used + sum(w.cost for w in self._line)
        if not backlog:
            return MIN_RETRY_S
        rate = self._decayed(*self._drained) / USAGE_HALF_LIFE_S
        return MAX_RETRY_S if rate <= 0 else min(MAX_RETRY_S, max(MIN_RETRY_S, backlog / rate))

    def _busy_message(self) -> str:
        return (
            f"tracetui is receiving too much at once ({self.used / 1e6:.0f} MB of exports in flight, "
            f"{len(self._line)} waiting); retry later"
        )

    # --- per-connection usage --------------------------------------------------------

    @staticmethod
    def _decayed(value: float, since: float, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        return value * math.pow(0.5, max(0.0, now - since) / USAGE_HALF_LIFE_S)

    def _peer_usage(self, peer: str, now: float) -> float:
        found = self._usage.get(peer)
        return self._decayed(*found, now) if found else 0.0

    def _add_usage(self, peer: str, n: int, now: float) -> None:
        self._usage[peer] = (self._peer_usage(peer, now) + n, now)
        if len(self._usage) > 4096:  # forget connections that went quiet
            for key, (value, since) in list(self._usage.items()):
                if self._decayed(value, since, now) < 1024:
                    del self._usage[key]

"""Where export requests are decoded and written: in the receiver, or in worker processes.

Decoding (protobuf -> Python objects, normalization, pricing, and the
per-trace summaries and timing analysis of tracetui.store.batch) and
inserting the rows are nearly all of the receiver's work per span, and in one
Python process they take turns on one core.

* :class:`InlineDecoder` decodes in the calling thread and hands the rows to
  the receiver's writer thread (``--decode-workers 0``, imports, tests).
* :class:`WorkerPool` sends the request's bytes to a worker process that
  decodes *and* writes it, with its own connection, under the write lock
  shared by every receiver process (tracetui.store.lock); only a few numbers
  come back. The receiver's main process is left with gRPC and HTTP. Writing
  where the rows are made saves moving them between processes (about 5 µs a
  span, packed with marshal, when the receiver wrote them), and the
  transactions of the workers are serialized by the lock while their
  decoding runs in parallel.

Both answer :meth:`store` with what the exporter is to be told, and raise
DecodeError (do not retry), Overloaded or StoreUnavailable (retry later).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal as os_signal  # `signal` names the OTLP signal (traces, logs) here
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any, Protocol, cast

from google.protobuf.message import Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tracetui.llm import pricing
from tracetui.model.fmt import fmt_counted
from tracetui.model.freed_memory import return_freed_memory_promptly
from tracetui.otlp.decode import (
    DecodeError,
    _embedded,
    _fields_except,
    length_delimited,
)
from tracetui.otlp.signals import Signal, decode_request
from tracetui.store.batch import prepare
from tracetui.store.blobs import compact_rows
from tracetui.store.checkpoint import WAL_BYTES
from tracetui.store.retention import Retention
from tracetui.store.writer import Committer, Overloaded, StoreUnavailable, Writer

log = logging.getLogger(__name__)


#: Spans decoded (and written) at a time from one trace export. Decoded rows weigh
#: ~1-2 KB a span in Python: a 63 MB request of small spans, decoded at once,
#: took an ingest worker to 1.3 GB; in slices it holds a few MB of rows at a time.
DECODE_SLICE_SPANS = 4_000


#: Each ingest worker's SQLite page cache, in KiB. The receiver's own connection keeps
#: schema.connect_writer's 32 MB; with two workers each filling 32 MB as the database grew,
#: the receiver's process tree went past its 300 MB budget (docs/budgets.md) under a
#: sustained flood. See benchmarks/README.md ("Worker page caches") for what a smaller one costs.
WORKER_CACHE_KIB = 2_000


#: Exports larger than this are cut into slices in the receiver process before they go to a worker.
SLICE_IN_RECEIVER_BYTES = 8 * 1024 * 1024


def request_slices(
    signal: Signal, payload: bytes | bytearray | memoryview | Message
) -> Iterator[bytes | bytearray | memoryview | Message]:
    """The export as sub-requests of at most :data:`DECODE_SLICE_SPANS` spans (the payload itself when small).

    Large trace requests are cut at the byte level (each slice keeps its spans'
    resource and scope), so the whole request is never parsed into objects at
    once. See :func:`store_in_slices` for what becomes of a slice that does not decode.
    """
    if signal != "traces":
        yield payload
        return
    if isinstance(payload, Message):
        request = cast(ExportTraceServiceRequest, payload)  # the parsed payload of the traces signal
        if sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans) <= DECODE_SLICE_SPANS:
            yield payload
            return
        payload = request.SerializeToString()
    data = bytes(payload)
    try:
        small = _span_count(data, stop_after=DECODE_SLICE_SPANS) <= DECODE_SLICE_SPANS
    except (ValueError, IndexError):
        small = True  # not the expected shape: decoding it whole says why, or it is fine whole
    if small:
        yield payload
        return
    yield from _slices(data)


def store_in_slices(
    signal: Signal, payload, store_one: Callable[[bytes | bytearray | memoryview | Message], Stored]
) -> Stored:
    """Store an export a slice at a time (request_slices) through ``store_one``; the sum of what each stored.

    When an export was cut, a slice that does not decode (invalid UTF-8, say)
    has its spans rejected through OTLP ``partial_success`` and the other
    slices are stored; an export that was not cut raises DecodeError as before.
    """
    total: Stored | None = None
    for part in request_slices(signal, payload):
        try:
            stored = store_one(part)
        except DecodeError as exc:
            if part is payload or not isinstance(part, bytes):  # only a cut export has slices (bytes)
                raise
            count = _span_count(part, stop_after=DECODE_SLICE_SPANS)
            stored = Stored(0, count, f"{fmt_counted(count, 'span')} of one slice of the export: {exc}")
        total = _add_stored(total, stored)
    assert total is not None
    return total


# ExportTraceServiceRequest.resource_spans = 1, ResourceSpans.scope_spans = 2, ScopeSpans.spans = 2:
# length-delimited fields, found and cut by decode._embedded and decode._fields_except (the same
# walker decode_trace_bytes uses to take a too-deep request apart span by span).


def _span_count(data: bytes, stop_after: int) -> int:
    """Spans in a serialized trace request, counted up to a bit past ``stop_after``."""
    count = 0
    for resource in _embedded(data, 0, len(data), 1):
        for scope in _embedded(data, *resource, 2):
            for _ in _embedded(data, *scope, 2):
                count += 1
                if count > stop_after:
                    return count
    return count


def _slices(data: bytes) -> Iterator[bytes]:
    """Sub-requests of at most DECODE_SLICE_SPANS spans, cut from the bytes one at a time."""
    for resource in _embedded(data, 0, len(data), 1):
        resource_head = _fields_except(data, *resource, 2)
        for scope in _embedded(data, *resource, 2):
            scope_head = _fields_except(data, *scope, 2)
            spans: list[bytes] = []
            sent = False
            for s, e in _embedded(data, *scope, 2, with_key=True):
                spans.append(data[s:e])
                if len(spans) == DECODE_SLICE_SPANS:
                    yield length_delimited(1, resource_head + length_delimited(2, scope_head + b"".join(spans)))
                    spans, sent = [], True
            if spans or not sent:
                yield length_delimited(1, resource_head + length_delimited(2, scope_head + b"".join(spans)))


def _add_stored(total: Stored | None, part: Stored) -> Stored:
    if total is None:
        return part
    return Stored(total.count + part.count, total.rejected + part.rejected,
                  total.rejection_message or part.rejection_message)  # fmt: skip


#: How long an export waits for its commit before the client is told to retry.
COMMIT_TIMEOUT_S = 20.0
#: Request bytes allowed to wait for an ingest worker before exports are told to
#: retry later: about a second of work at full speed on a small machine.
MAX_QUEUED_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Stored:
    """What became of one stored export, for its answer."""

    #: Spans (or log records) accepted from the export, now committed.
    count: int
    #: Items refused one by one (invalid ids), for OTLP ``partial_success``.
    rejected: int = 0
    rejection_message: str = ""


class Decoder(Protocol):
    """Where exports are decoded and written (:class:`InlineDecoder` or :class:`WorkerPool`)."""

    def busy(self, writer: Writer) -> str | None:
        """Why a new export should be told to retry later before anything is spent on it; None if it may come.

        A refusal for load also marks ``writer``'s status "overloaded", for the UI.
        """
        ...

    def store(self, writer: Writer, signal: Signal, payload: bytes | bytearray | memoryview | Message) -> Stored:
        """Decode and commit one export. Raises DecodeError, Overloaded or StoreUnavailable."""
        ...

    def close(self) -> None: ...


class InlineDecoder:
    """Decodes in the calling thread; the receiver's writer thread writes."""

    def busy(self, writer: Writer) -> str | None:
        return None  # the writer's own queue is the bound (Writer.busy)

    def store(self, writer: Writer, signal: Signal, payload: bytes | bytearray | memoryview | Message) -> Stored:
        return store_in_slices(signal, payload, lambda part: self._store_one(writer, signal, part))

    @staticmethod
    def _store_one(writer: Writer, signal: Signal, payload: bytes | bytearray | memoryview | Message) -> Stored:
        decoded = decode_request(signal, payload)
        if decoded.count:
            ticket = writer.submit(decoded)
            if not ticket.wait(COMMIT_TIMEOUT_S):
                # Not lost: it will still commit, and a resent copy is deduplicated.
                raise StoreUnavailable("commit is taking too long; retry later")
            if ticket.error is not None:
                raise StoreUnavailable(f"could not store {signal}: {ticket.error}")
        return Stored(decoded.count, decoded.rejected, decoded.rejection_message)

    def close(self) -> None:
        pass


# --- worker side ---------------------------------------------------------------------


def configure_pricing(prices_path: Path | None) -> None:
    """Load the price data now, not during the first export (it takes a few hundred ms).

    Raises pricing.PriceFileError for a bad user price file.
    """
    pricer = pricing.configure(prices_path)
    pricer.price(("gpt-4o",), "openai", {"input_tokens": 1, "output_tokens": 1}, time.time_ns())


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


@dataclass
class _Worker:
    """A worker process's state (set up by _worker_init)."""

    committer: Committer
    #: Decoded spans each worker holds while it waits for the write lock (a
    #: multiprocessing Array in shared memory, one slot per worker).
    waiting: Any
    slot: int
    max_pending_spans: int


_worker: _Worker | None = None


def _worker_init(
    prices_path: str | None,
    db_path: str,
    wal_bytes: int,
    waiting: Any,
    slots_taken: Any,
    max_pending: int,
    retention: Retention,
) -> None:
    global _worker
    return_freed_memory_promptly()  # exports pass through here a slice at a time: give them back
    # Ctrl-C reaches the whole process group; the receiver decides when workers stop.
    os_signal.signal(os_signal.SIGINT, os_signal.SIG_IGN)
    # A receiver killed with SIGKILL cannot shut its pool down; its workers
    # would wait on their queue forever (each holds both ends of the pipe).
    threading.Thread(target=_exit_with, args=(os.getppid(),), name="exit-with-receiver", daemon=True).start()
    configure_pricing(Path(prices_path) if prices_path else None)
    with slots_taken.get_lock():
        slot = slots_taken.value
        slots_taken.value += 1
    committer = Committer(Path(db_path), wal_bytes=wal_bytes, retention=retention, cache_kib=WORKER_CACHE_KIB)
    _worker = _Worker(committer, waiting, slot, max_pending)


def _worker_store(signal: Signal, payload: bytes) -> tuple[Stored, int]:
    """Decode and write one export (or a slice of one), a slice at a time (in a worker process).

    Also returns the spans it added.
    """
    written = 0

    def store_one(part: bytes | bytearray | memoryview | Message) -> Stored:
        nonlocal written
        stored, added = _worker_store_slice(signal, part)
        written += added
        return stored

    return store_in_slices(signal, payload, store_one), written


def _worker_store_slice(signal: Signal, payload: bytes | bytearray | memoryview | Message) -> tuple[Stored, int]:
    assert _worker is not None, "worker not initialized"
    decoded = decode_request(signal, payload)
    if decoded.spans:
        prepare(decoded)  # before the write lock: the workers prepare in parallel
        compact_rows(decoded)  # then cut the long strings out (prepare reads the original bytes)
    written = 0
    if decoded.count:
        w = _worker
        waiting = w.waiting.get_obj()
        # Look and claim in one step, or two workers finishing their decoding at the
        # same moment would each see the other's spans as not there yet. (Bounded: a
        # worker killed inside these few lines must not stop the others.)
        locked = w.waiting.get_lock().acquire(timeout=1.0)
        try:
            others = sum(waiting) - waiting[w.slot]
            if others and others + decoded.count > w.max_pending_spans:
                raise Overloaded(f"{others} spans waiting to be written")
            waiting[w.slot] = decoded.count
        finally:
            if locked:
                w.waiting.get_lock().release()
        try:
            written = w.committer.commit([decoded])
        except StoreUnavailable as exc:  # locked, disk full, I/O error (logged, said why): the exporter retries
            raise StoreUnavailable(f"could not store {signal}: {exc}") from None
        except Exception as exc:  # a bug: retried, as the writer thread's would be
            log.exception("write failed")
            raise StoreUnavailable(f"could not store {signal}: {exc}") from None
        finally:
            waiting[w.slot] = 0
    return Stored(decoded.count, decoded.rejected, decoded.rejection_message), written


def _worker_ready() -> int:
    return os.getpid()


def _start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker, told not to warn about what it cleans up.

    The pool's queues and shared counters are POSIX semaphores, registered with
    the tracker. When the receiver is killed (SIGKILL, out of memory) the
    tracker removes them, as it should, then prints "There appear to be 7
    leaked semaphore objects" with a traceback-like line on the user's
    terminal, for nothing left behind. The tracker takes its warning options
    from ``sys.warnoptions`` when it starts; this process's own are restored.
    """
    saved = list(sys.warnoptions)
    sys.warnoptions.append("ignore:resource_tracker:UserWarning")
    try:
        resource_tracker.ensure_running()
    finally:
        sys.warnoptions[:] = saved


class WorkerPool:
    """Decodes and writes exports in ``workers`` worker processes.

    A worker that dies (killed, out of memory, a crash in a C extension) takes
    only the requests it held, and its write lock and open transaction with
    it: the pool is rebuilt and the request retried once in the new pool
    (stored spans are deduplicated); if it fails again it is reported as
    undecodable, so one poisonous payload cannot wedge the receiver.
    """

    def __init__(
        self,
        workers: int,
        db_path: Path,
        prices_path: Path | None = None,
        max_pending_spans: int = 50_000,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
        wal_bytes: int = WAL_BYTES,
        retention: Retention | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self.db_path = Path(db_path)
        self.max_pending_spans = max_pending_spans
        self.max_queued_bytes = max_queued_bytes
        self.wal_bytes = wal_bytes
        #: Limits each worker's commits enforce (tracetui.store.retention).
        self.retention = retention or Retention()
        self._prices_path = str(prices_path) if prices_path else None
        self._lock = threading.Lock()
        #: Bytes of requests handed to the pool and not answered yet.
        self._queued_bytes = 0
        self._queued = 0
        #: Spans the workers have written.
        self.spans_written = 0
        self._pool, self._waiting = self._new_pool()

    def _new_pool(self) -> tuple[ProcessPoolExecutor, Any]:
        # Spawned, not forked: the receiver has gRPC's threads by then, and a
        # spawned worker's parent is the receiver itself, which it watches.
        ctx = multiprocessing.get_context("spawn")
        _start_resource_tracker()
        waiting = ctx.Array("q", self.workers)  # its lock: see _worker_store
        slots_taken = ctx.Value("i", 0)
        initargs = (
            self._prices_path, str(self.db_path), self.wal_bytes, waiting, slots_taken, self.max_pending_spans,
            self.retention,
        )  # fmt: skip
        pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_worker_init, initargs=initargs)
        return pool, waiting

    def warm(self, timeout: float = 60.0) -> None:
        """Start every worker now (imports, price data) instead of on the first export."""
        with self._lock:
            pool = self._pool
        futures = [pool.submit(_worker_ready) for _ in range(self.workers)]
        for future in futures:
            future.result(timeout)

    def backlog(self) -> int:
        """Spans waiting to be written, for the receiver's status.

        Those decoded and waiting for the write lock; or, while exports are turned
        away for the bytes already queued for the workers, the whole allowance
        (the status says "overloaded" until that clears).
        """
        if self._queue_full() is not None:
            return self.max_pending_spans
        return sum(self._waiting.get_obj())

    def busy(self, writer: Writer) -> str | None:
        reason = self._queue_full()
        if reason is not None:
            writer.overloaded()
        return reason

    def _queue_full(self) -> str | None:
        with self._lock:
            if self._queued_bytes >= self.max_queued_bytes:
                exports = fmt_counted(self._queued, "export")
                megabytes = self._queued_bytes / 1e6
                return f"tracetui is busy writing ({exports}, {megabytes:.1f} MB waiting for an ingest worker)"
        return None

    def store(self, writer: Writer, signal: Signal, payload: bytes | bytearray | memoryview | Message) -> Stored:
        """Hands a large export to the workers a slice at a time (request_slices), so it never crosses
        to a worker whole (pickled, piped and unpickled: three more copies of it). Smaller ones go
        whole, and the worker slices them: cutting costs ~1 µs a span, better spent there."""
        size = payload.ByteSize() if isinstance(payload, Message) else len(payload)
        if size <= SLICE_IN_RECEIVER_BYTES:
            return self._store_one(writer, signal, payload)
        return store_in_slices(signal, payload, lambda part: self._store_one(writer, signal, part))

    def _store_one(self, writer: Writer, signal: Signal, payload: bytes | bytearray | memoryview | Message) -> Stored:
        data = payload.SerializeToString() if isinstance(payload, Message) else bytes(payload)
        with self._lock:
            self._queued_bytes += len(data)
            self._queued += 1
        try:
            stored, written = self._submit(signal, data)
        except Overloaded:
            writer.overloaded()
            raise
        finally:
            with self._lock:
                self._queued_bytes -= len(data)
                self._queued -= 1
        with self._lock:
            self.spans_written += written
        return stored

    def _submit(self, signal: Signal, data: bytes) -> tuple[Stored, int]:
        for attempt in (1, 2):
            with self._lock:
                pool = self._pool
            try:
                return pool.submit(_worker_store, signal, data).result(COMMIT_TIMEOUT_S)
            except FutureTimeout:
                # Not lost: it will still commit, and a resent copy is deduplicated.
                raise StoreUnavailable("commit is taking too long; retry later") from None
            except BrokenProcessPool:
                log.warning("an ingest worker died; restarting the pool (attempt %d)", attempt)
                with self._lock:
                    if self._pool is pool:
                        pool.shutdown(wait=False, cancel_futures=True)
                        self._pool, self._waiting = self._new_pool()
        raise DecodeError(f"an ingest worker crashed twice on this {signal} export ({len(data)} bytes)")

    def close(self) -> None:
        with self._lock:
            self._pool.shutdown(wait=True, cancel_futures=True)

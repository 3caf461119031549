"""Where export requests are decoded: in the calling thread, or in worker processes.

Decoding (protobuf -> Python objects, normalization, pricing, and the
per-trace summaries and timing analysis of tracetui.store.batch) is most of
the receiver's Python work per span, and the writer needs the GIL too to bind its
rows. In one process the two take turns on one core; with
:class:`ProcessDecoder` the receiver's main process only moves bytes and
writes, and decoding runs in its own processes on the other cores.

Results come back packed with :mod:`marshal` (plain tuples of bytes, str,
int, float and None): about 4 µs a span there and back, against ~14 µs for
pickle. Both ends are the same interpreter, which is what marshal requires.
"""

from __future__ import annotations

import logging
import marshal
import multiprocessing
import os
import signal as os_signal  # `signal` names the OTLP signal (traces, logs) here
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Literal, Protocol

from google.protobuf.message import Message

from tracetui import pricing
from tracetui.otlp.decode import (
    Decoded,
    DecodeError,
    Source,
    decode_logs,
    decode_spans,
    parse_logs_request,
    parse_trace_request,
)
from tracetui.store.batch import prepare

log = logging.getLogger(__name__)

Signal = Literal["traces", "logs"]

def decode_request(signal: Signal, payload: bytes | bytearray | memoryview | Message) -> Decoded:
    """Parse (unless already parsed) and decode one export request. Raises DecodeError."""
    data = bytes(payload) if isinstance(payload, (bytes, bytearray, memoryview)) else None
    if signal == "logs":
        return decode_logs(parse_logs_request(data) if data is not None else payload)
    # The bytes, when there are any, also give each span's raw copy (decode.span_bytes).
    decoded = decode_spans(parse_trace_request(data) if data is not None else payload, data)
    if decoded.spans:
        prepare(decoded)
    return decoded


class Decoder(Protocol):
    def decode(self, signal: Signal, payload: bytes | bytearray | memoryview | Message) -> Decoded: ...

    def close(self) -> None: ...


class InlineDecoder:
    """Decodes in the calling thread (imports, tests, `--decode-workers 0`)."""

    def decode(self, signal: Signal, payload: bytes | bytearray | memoryview | Message) -> Decoded:
        return decode_request(signal, payload)

    def close(self) -> None:
        pass


# --- packing across the process boundary --------------------------------------------


def pack(decoded: Decoded) -> bytes:
    sources = [
        (s.id, s.digest, s.service, s.resource, s.scope_name, s.scope_version, s.scope, s.schema_url)
        for s in decoded.sources.values()
    ]
    d = decoded
    return marshal.dumps((sources, d.spans, d.logs, d.evaluations, d.traces, d.timing, d.rejected, d.reasons, d.unit))


def unpack(data: bytes) -> Decoded:
    sources, spans, logs, evaluations, traces, timing, rejected, reasons, unit = marshal.loads(data)
    return Decoded(
        sources={s[1]: Source(*s) for s in sources},
        spans=spans,
        logs=logs,
        evaluations=evaluations,
        traces=traces,
        timing=timing,
        rejected=rejected,
        reasons=reasons,
        unit=unit,
    )


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


def _worker_init(prices_path: str | None) -> None:
    # Ctrl-C reaches the whole process group; the receiver decides when workers stop.
    os_signal.signal(os_signal.SIGINT, os_signal.SIG_IGN)
    # A receiver killed with SIGKILL cannot shut its pool down; its workers
    # would wait on their queue forever (each holds both ends of the pipe).
    threading.Thread(target=_exit_with, args=(os.getppid(),), name="exit-with-receiver", daemon=True).start()
    configure_pricing(Path(prices_path) if prices_path else None)


def _worker_decode(signal: Signal, payload: bytes) -> bytes:
    return pack(decode_request(signal, payload))


def _worker_ready() -> int:
    return os.getpid()


class ProcessDecoder:
    """Decodes in ``workers`` worker processes.

    A worker that dies (killed, out of memory, a crash in a C extension) takes
    only the requests it held: the pool is rebuilt and the request retried once
    in the new pool; if it fails again it is reported as undecodable, so one
    poisonous payload cannot wedge the receiver.
    """

    def __init__(self, workers: int, prices_path: Path | None = None) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self._prices_path = str(prices_path) if prices_path else None
        self._lock = threading.Lock()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # Spawned, not forked: the receiver has gRPC's threads by then, and a
        # spawned worker's parent is the receiver itself, which it watches.
        ctx = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(
            self.workers, mp_context=ctx, initializer=_worker_init, initargs=(self._prices_path,)
        )

    def warm(self, timeout: float = 60.0) -> None:
        """Start every worker now (imports, price data) instead of on the first export."""
        with self._lock:
            pool = self._pool
        futures = [pool.submit(_worker_ready) for _ in range(self.workers)]
        for future in futures:
            future.result(timeout)

    def decode(self, signal: Signal, payload: bytes | bytearray | memoryview | Message) -> Decoded:
        data = payload.SerializeToString() if isinstance(payload, Message) else bytes(payload)
        for attempt in (1, 2):
            with self._lock:
                pool = self._pool
            try:
                return unpack(pool.submit(_worker_decode, signal, data).result())
            except BrokenProcessPool:
                log.warning("a decode worker died; restarting the pool (attempt %d)", attempt)
                with self._lock:
                    if self._pool is pool:
                        pool.shutdown(wait=False, cancel_futures=True)
                        self._pool = self._new_pool()
        raise DecodeError(f"the decoder crashed twice on this {signal} export ({len(data)} bytes)")

    def close(self) -> None:
        with self._lock:
            self._pool.shutdown(wait=True, cancel_futures=True)

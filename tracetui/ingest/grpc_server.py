"""OTLP/gRPC receiver on a real grpcio server.

``TraceService/Export``, ``LogsService/Export`` and ``MetricsService/Export``
are served on one port (metrics: the GenAI ones are stored, see
tracetui.otlp.metrics; before, an app exporting metrics over gRPC got
UNIMPLEMENTED at every interval). Requests arrive as raw bytes (no grpc-level deserializer) so that an
undecodable body gets ``INVALID_ARGUMENT`` with a readable reason instead of
grpc's generic ``INTERNAL``. Each handler has its request decoded and
written (on its own thread, or by an ingest worker process: see
tracetui.ingest.workers) and answers only once it is committed.

The unary ``Export`` is served by a *stream-unary* handler: the wire format
is the same, but grpcio (1.85, ``_server._handle_stream_unary``) then calls
the handler before receiving the message, which it does on the first
``next()`` of the request iterator; for a unary handler it receives the whole
message first, on the pool thread. So the token is checked and the export
admitted (tracetui.ingest.admission) before its body is read: an unauthenticated
or refused export costs no more than grpc's flow-control window.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from tracetui.ingest.ack import RETRY_DELAY_S, Outcome, Signal, ingest
from tracetui.ingest.admission import (
    PROTOBUF_COST_FACTOR,
    UNKNOWN_SIZE_COST,
    Admission,
    OverBudget,
    Pass,
)
from tracetui.ingest.auth import bearer_ok
from tracetui.ingest.workers import Decoder, InlineDecoder
from tracetui.model.freed_memory import TRIM_AFTER_BYTES, trim_freed_memory
from tracetui.store.writer import Writer

#: Bytes grpc core reads ahead on a stream whose handler has not asked for its message yet.
LOOKAHEAD_BYTES = 256 * 1024
#: Seconds an admitted export's message may take to arrive before the export is cancelled: the
#: default deadline of the OpenTelemetry exporters (10 s), so no export one of them would finish is cut.
BODY_TIMEOUT_S = 10.0
#: Seconds kept from an exporter's deadline for decoding and committing, when waiting in line.
COMMIT_RESERVE_S = 2.0

log = logging.getLogger(__name__)

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
METRICS_SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"
#: Every service served, with the signal its exports carry.
SERVICES: tuple[tuple[str, Signal], ...] = (
    (TRACE_SERVICE, "traces"),
    (LOGS_SERVICE, "logs"),
    (METRICS_SERVICE, "metrics"),
)


def _retryable_abort(context: grpc.ServicerContext, message: str, delay_s: float = RETRY_DELAY_S) -> None:
    """Answer UNAVAILABLE with RetryInfo, so exporters keep the batch and retry.

    RetryInfo goes in the standard ``grpc-status-details-bin`` (Go, Java) and in
    the ``google.rpc.retryinfo-bin`` trailer that the Python exporter reads.
    """
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(delay_s * 1e9))
    retry = error_details_pb2.RetryInfo(retry_delay=delay)
    detail = any_pb2.Any()
    detail.Pack(retry)
    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=message, details=[detail])
    context.set_trailing_metadata(
        (
            ("grpc-status-details-bin", status.SerializeToString()),
            ("google.rpc.retryinfo-bin", retry.SerializeToString()),
        )
    )
    context.abort(grpc.StatusCode.UNAVAILABLE, message)


class _Deadlines:
    """One daemon thread that runs each action due at its time, unless cancelled before.

    The body timeout of every gRPC export goes through it: a ``threading.Timer``
    per export started (and ended) a thread per export. Like ``Timer.cancel``,
    cancelling an action as it falls due may not stop it.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        #: [when, seq, action or None once cancelled], soonest first.
        self._heap: list[list[Any]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def after(self, delay_s: float, action: Callable[[], object]) -> list[Any]:
        """Run ``action`` in ``delay_s`` seconds; returns what :meth:`cancel` takes."""
        entry: list[Any] = [time.monotonic() + delay_s, next(self._seq), action]
        with self._cond:
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="grpc-body-timeout", daemon=True)
                self._thread.start()
            self._cond.notify()
        return entry

    @staticmethod
    def cancel(entry: list[Any]) -> None:
        entry[2] = None  # dropped from the heap when it comes up

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][2] is None:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                action = heapq.heappop(self._heap)[2]
                self._cond.release()
                try:
                    action()
                except Exception:  # one failed action must not stop the others'
                    log.exception("body timeout action failed")
                finally:
                    self._cond.acquire()


_DEADLINES = _Deadlines()


class ExportHandler:
    """The body of ``TraceService/Export``, ``LogsService/Export`` and ``MetricsService/Export``."""

    def __init__(
        self,
        writer: Writer,
        signal: Signal,
        token: str | None = None,
        decoder: Decoder | None = None,
        admission: Admission | None = None,
        body_timeout_s: float = BODY_TIMEOUT_S,
    ) -> None:
        self.writer = writer
        self.body_timeout_s = body_timeout_s
        self.signal = signal
        self.token = token or None
        self.decoder = decoder or InlineDecoder()
        self.admission = admission
        #: Connection -> size of its last export: what its next one reserves before it is read.
        self._last_size: dict[str, int] = {}

    def _authorized(self, context: grpc.ServicerContext) -> bool:
        assert self.token is not None
        metadata = context.invocation_metadata() or ()
        return any(key == "authorization" and bearer_ok(value, self.token) for key, value in metadata)

    def __call__(self, requests, context: grpc.ServicerContext) -> bytes:
        if self.token is not None and not self._authorized(context):
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token (authorization: Bearer TOKEN)"
            )
        admitted = self._admit(context)
        try:
            request_bytes = self._message(requests, context)
            if request_bytes is None:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "an export needs exactly one request message")
            if len(request_bytes) >= TRIM_AFTER_BYTES:
                trim_freed_memory()  # grpc core's buffers for the message, freed once copied into request_bytes
            if admitted is not None:
                if len(self._last_size) > 4096:  # connections come and go: forget them all now and then
                    self._last_size.clear()
                self._last_size[admitted.peer] = len(request_bytes)
                admitted.resize(len(request_bytes) * PROTOBUF_COST_FACTOR)
            result = ingest(self.writer, self.signal, request_bytes, self.decoder)
            del request_bytes
        finally:
            if admitted is not None:
                admitted.release()
        if result.outcome is Outcome.INVALID:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, result.message)
        if result.outcome is Outcome.BUSY:
            delay = self.admission.retry_delay() if self.admission is not None else result.retry_after_s
            _retryable_abort(context, result.message, max(delay, result.retry_after_s))
        assert result.response is not None
        return result.response.SerializeToString()

    def _message(self, requests, context: grpc.ServicerContext) -> bytes | None:
        """The export's message, read once it was admitted; the export is cancelled if it does not arrive in time.

        A stream that never sends its message would otherwise keep its pass,
        its thread and its place in grpc's concurrent-RPC limit until the client
        gives up: one such stream holding the pass for an export of unknown size
        (admission.MAX_UNKNOWN_READS) turned away the first export of every new
        connection, such as an SDK exporter's after it reconnects. ``cancel``
        (grpcio 1.85 ``_server._Context.cancel``: the call is cancelled in grpc
        core) wakes the waiting ``next`` with an RpcError; the client sees
        CANCELLED, which OTLP exporters retry.
        """
        timer = _DEADLINES.after(self.body_timeout_s, context.cancel)
        try:
            return next(requests, None)
        except grpc.RpcError:
            context.abort(
                grpc.StatusCode.CANCELLED, f"the export's message did not arrive in {self.body_timeout_s:g} s"
            )
            raise  # not reached: abort raises
        finally:
            _DEADLINES.cancel(timer)

    def _admit(self, context: grpc.ServicerContext) -> Pass | None:
        """A pass for this export's memory, before its body is read (aborts with a retry delay when refused)."""
        if self.admission is None:
            return None
        peer = context.peer()
        last = self._last_size.get(peer)
        cost = UNKNOWN_SIZE_COST if last is None else last * PROTOBUF_COST_FACTOR
        remaining = context.time_remaining()
        wait_s = None if remaining is None else min(self.admission.max_wait_s, remaining - COMMIT_RESERVE_S)
        try:
            return self.admission.enter(peer, cost, wait_s, unknown_size=last is None)
        except OverBudget as exc:
            _retryable_abort(context, str(exc), exc.retry_after_s)
            raise  # not reached: abort raises


def _identity(data: bytes) -> bytes:
    return data


def start_grpc_server(
    writer: Writer,
    host: str,
    port: int,
    *,
    max_request_bytes: int,
    workers: int = 32,
    token: str | None = None,
    decoder: Decoder | None = None,
    admission: Admission | None = None,
    body_timeout_s: float = BODY_TIMEOUT_S,
) -> tuple[grpc.Server, int]:
    """Start the gRPC server; returns it and the bound port.

    Raises OSError with a readable message when the address cannot be bound.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tracetui-grpc"),
        # Beyond this many exports in flight grpc answers RESOURCE_EXHAUSTED at once (retryable
        # for OTLP exporters) instead of queueing them, unbounded, behind the worker threads;
        # the writer's backlog bound (UNAVAILABLE + RetryInfo) acts before that.
        maximum_concurrent_rpcs=workers * 2,
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            # grpcio enables SO_REUSEPORT by default, which would let a second
            # receiver silently share the port with the first.
            ("grpc.so_reuseport", 0),
            # Without these, grpc core reads a stream's message into its own buffers ahead of the
            # handler, growing the window by bandwidth-delay probing: 60 exports of 63 MB waiting in
            # line held 2 GB. A stream then buffers only its lookahead until its handler reads it.
            ("grpc.http2.bdp_probe", 0),
            ("grpc.http2.lookahead_bytes", LOOKAHEAD_BYTES),
        ],
    )
    server.add_generic_rpc_handlers(
        tuple(
            grpc.method_handlers_generic_handler(
                service,
                {
                    "Export": grpc.stream_unary_rpc_method_handler(
                        ExportHandler(writer, signal, token, decoder, admission, body_timeout_s),
                        request_deserializer=_identity,
                        response_serializer=_identity,
                    )
                },
            )
            for service, signal in SERVICES
        )
    )
    address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: {exc} (is another tracetui or collector using it?)") from None
    if bound == 0:
        raise OSError(f"cannot listen on {address} (is another tracetui or collector using it?)")
    server.start()
    return server, bound

"""OTLP/HTTP receiver on aiohttp, on its own thread and event loop.

``POST /v1/traces``, ``/v1/logs`` and ``/v1/metrics`` (``/`` counts as
traces) take ``application/x-protobuf`` or ``application/json`` bodies,
optionally ``Content-Encoding: gzip`` or ``deflate``. Of metrics, the GenAI
ones are stored (tracetui.otlp.metrics), the others accepted and dropped. Answers follow the
OTLP spec: the response uses the request's content type; 400 for undecodable
bodies, 413 over the size limit (applied after decompression, which is bounded
as it runs, so a compression bomb never allocates more than the limit), 415
for other content types or encodings, 429 / 503 with ``Retry-After`` when the
receiver is overloaded, 401 without the configured bearer token.

The event loop only reads bodies and writes answers. Decompression, decoding
and the wait for the commit run in a thread pool through the same
:func:`~tracetui.ingest.ack.ingest` as gRPC, so a request is answered 200
only once its rows are committed and one slow commit never blocks the others.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import re
import socket
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from aiohttp import http_exceptions, web
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2

from tracetui.ingest.ack import Outcome, ingest
from tracetui.ingest.admission import (
    JSON_COST_FACTOR,
    JSON_TRACES_COST_FACTOR,
    PROTOBUF_COST_FACTOR,
    Admission,
    OverBudget,
    Pass,
    default_budget,
)
from tracetui.ingest.auth import bearer_ok
from tracetui.ingest.workers import Decoder, InlineDecoder
from tracetui.otlp.decode import DecodeError
from tracetui.otlp.otlp_json import message_to_json, parse_request, parse_traces_lean
from tracetui.store.health import ThrottledLog
from tracetui.store.writer import Writer

log = logging.getLogger(__name__)

#: Path -> signal. A bare ``/`` is what spec-compliant exporters POST to when
#: the endpoint was given without a path.
SIGNAL_PATHS: dict[str, str] = {"/v1/traces": "traces", "/v1/logs": "logs", "/v1/metrics": "metrics", "/": "traces"}
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
#: Content types accepted, and the one each is answered with.
CONTENT_TYPES = {PROTOBUF: PROTOBUF, "application/protobuf": PROTOBUF, JSON: JSON}
#: Bytes produced per zlib call while decompressing (the bomb guard checks between calls).
DECOMPRESS_STEP = 256 * 1024
#: Compressed bytes fed per zlib call (keeps zlib's unconsumed_tail copies small).
DECOMPRESS_INPUT_STEP = 64 * 1024
#: Longest error message sent back (OTLP responses should stay small).
MAX_MESSAGE_CHARS = 4096
#: ``http://localhost[:port]`` and ``http://127.0.0.1[:port]``: a browser app on this machine.
_LOCAL_ORIGIN = re.compile(r"http://(localhost|127\.0\.0\.1)(:\d{1,5})?")
_HEADER_LIST = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*")
_DEFAULT_ALLOWED_HEADERS = "content-type, content-encoding, authorization"
CORS_MAX_AGE_S = 600
#: Defaults of --http-header-timeout and --http-body-timeout. Exporters send a batch in one
#: go (the SDK's own timeout is 10 s), so a connection slower than this is stuck or hostile.
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0


def _release_if_granted(waiting: asyncio.Future[Pass]) -> None:
    """Give back a pass the admission line granted after its export was cancelled."""
    if not (waiting.cancelled() or waiting.exception()):
        waiting.result().release()


class _ClientTrouble(logging.Filter):
    """Drop aiohttp's tracebacks for what clients do (disconnect mid-body, send malformed HTTP).

    Those get an HTTP 400 (or nothing, the peer being gone); a traceback on the
    receiver's stderr would read like a crash. Anything else still gets logged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, (ConnectionError, http_exceptions.HttpProcessingError, asyncio.CancelledError))


#: The logger handed to aiohttp's connection handlers.
protocol_log = logging.getLogger("tracetui.http.protocol")
protocol_log.addFilter(_ClientTrouble())


class _OutOfDescriptors:
    """The event loop's exception handler: running out of descriptors is said once per interval.

    When ``accept()`` fails with EMFILE (the open-files limit, e.g. ``ulimit -n
    1024`` under a flood of connections), asyncio (CPython 3.11-3.13,
    ``selector_events._accept_connection``) logs a traceback and keeps trying
    for the rest of its accept loop: up to the listen backlog per tick, each
    with a traceback (3.5 MB/s of stderr and half a core were measured). It
    pauses accepting for a second itself; slow connections are closed by the
    header and body timeouts, which frees descriptors. Everything else goes to
    asyncio's default handler.
    """

    INTERVAL_S = 10.0

    def __init__(self) -> None:
        self._log = ThrottledLog(log, self.INTERVAL_S)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        if context.get("message") != "socket.accept() out of system resource":
            loop.default_exception_handler(context)
            return
        self._log.log(
            logging.WARNING,
            "emfile",
            "OTLP/HTTP cannot accept connections: %s; waiting for connections to close",
            context.get("exception"),
        )


def local_origin(origin: str) -> bool:
    """Whether a browser ``Origin`` is a page served from this machine over loopback."""
    return _LOCAL_ORIGIN.fullmatch(origin) is not None


# --- bounded decompression ------------------------------------------------------------------


class TooLarge(Exception):
    """The body is over the size limit (before or after decompression)."""


def _looks_like_zlib(data: bytes | bytearray) -> bool:
    return len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


def decompress_bounded(data: bytes | bytearray, encoding: str, limit: int, admitted: Pass | None = None) -> bytearray:
    """Decompress ``gzip`` or ``deflate`` (zlib-wrapped or raw) without ever holding more than ``limit`` bytes.

    Input is fed in small slices and output taken in bounded steps, so the
    check runs every few hundred KiB whatever the compression ratio. Raises
    TooLarge past the limit, DecodeError for corrupt or truncated data,
    OverBudget when the shared in-flight budget runs out.
    """
    if encoding == "gzip":
        wbits = 16 + zlib.MAX_WBITS
    else:  # deflate: RFC 9110 says zlib-wrapped; some clients send raw deflate
        wbits = zlib.MAX_WBITS if _looks_like_zlib(data) else -zlib.MAX_WBITS
    view = memoryview(data)
    pos = 0
    out = bytearray()
    pending: bytes | memoryview = b""
    decomp = zlib.decompressobj(wbits)
    try:
        while True:
            if not pending and pos < len(view):
                pending = view[pos : pos + DECOMPRESS_INPUT_STEP]
                pos += len(pending)
            chunk = decomp.decompress(pending, DECOMPRESS_STEP)
            if chunk:
                if len(out) + len(chunk) > limit:
                    raise TooLarge(f"more than {limit} bytes after decompression")
                if admitted is not None:
                    admitted.grow(len(chunk))
                out += chunk
            pending = decomp.unconsumed_tail
            if decomp.eof:
                rest = decomp.unused_data
                if encoding == "gzip" and (rest or pos < len(view)):
                    decomp = zlib.decompressobj(wbits)  # concatenated gzip members
                    pending = rest
                    continue
                return out
            if not chunk and not pending and pos >= len(view):
                raise DecodeError(f"the {encoding} body is truncated")
    except zlib.error as exc:
        raise DecodeError(f"not valid {encoding} data: {exc}") from None


# --- answers --------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    message: Message
    headers: dict[str, str] = field(default_factory=dict)


def _status(http_status: int, code: int, message: str, **headers: str) -> Reply:
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    return Reply(http_status, status_pb2.Status(code=code, message=message), dict(headers))


def _encode(reply: Reply, content_type: str) -> web.Response:
    if content_type == JSON:
        if isinstance(reply.message, status_pb2.Status):
            body = json_format.MessageToJson(reply.message, indent=None).encode()
        else:
            body = message_to_json(reply.message).encode()
    else:
        body = reply.message.SerializeToString()
    return web.Response(status=reply.status, body=body, content_type=content_type, headers=reply.headers)


def _retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


def _too_busy(exc: OverBudget) -> Reply:
    return _status(429, code_pb2.RESOURCE_EXHAUSTED, str(exc), **{"Retry-After": _retry_after(exc.retry_after_s)})


def _peer_name(request: web.Request) -> str:
    """The connection, for admission's fairness between connections."""
    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    return f"http:{peer[0]}:{peer[1]}" if peer else "http:?"


def _cost_factor(signal: str, content_type: str, encoding: str) -> int:
    """Memory per byte of body (tracetui.ingest.admission); a compressed body is charged again as it inflates."""
    if encoding:
        return 1
    return _json_cost_factor(signal) if content_type == JSON else PROTOBUF_COST_FACTOR


def _json_cost_factor(signal: str) -> int:
    return JSON_TRACES_COST_FACTOR if signal == "traces" else JSON_COST_FACTOR


# --- the server -----------------------------------------------------------------------------


class HttpReceiver:
    """The OTLP/HTTP server: an aiohttp app on a private event loop thread.

    Args:
        writer: the store's writer (shared with the gRPC server).
        host, port: where to listen; port 0 picks a free one (see :attr:`port`).
        max_request_bytes: largest body accepted, after decompression.
        token: when set, every export needs ``Authorization: Bearer TOKEN``.
        decoder: where requests are decoded and written (default: decoded in the
            handler thread, written by ``writer``'s thread).
        admission: the memory budget shared with the gRPC server (default: one of
            its own, for 4 requests' worth of bodies); a body is read first (charged to a
            reading budget of half that size as it arrives), then waits in its line, then gets 429.
        header_timeout_s: a connection must send a request's headers within this long of
            opening or of its previous answer (idle keep-alive connections close then too).
        body_timeout_s: a request's body must arrive within this long of its headers (408).
    """

    def __init__(
        self,
        writer: Writer,
        host: str,
        port: int,
        *,
        max_request_bytes: int,
        token: str | None = None,
        workers: int = 8,
        admission: Admission | None = None,
        header_timeout_s: float = HEADER_TIMEOUT_S,
        body_timeout_s: float = BODY_TIMEOUT_S,
        shutdown_grace_s: float = 10.0,
        decoder: Decoder | None = None,
    ) -> None:
        self.writer = writer
        self.decoder = decoder or InlineDecoder()
        self.host = host
        self.requested_port = port
        self.port = 0
        self.max_request_bytes = max_request_bytes
        self.token = token or None
        self.admission = admission or Admission(default_budget(max_request_bytes))
        #: Bytes of bodies being received, charged as they arrive; full: 429 at once.
        self.reading = Admission(self.admission.limit // 2, max_wait_s=0)
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self.shutdown_grace_s = shutdown_grace_s
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tracetui-http")
        #: Threads that wait in the admission line (never the ones that decode, which free the budget).
        self._line = ThreadPoolExecutor(max_workers=64, thread_name_prefix="tracetui-http-admission")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle (called from the receiver's main thread) -----------------

    def start(self) -> int:
        """Bind, start serving on a background thread and return the bound port.

        Raises OSError with a readable message when the address cannot be bound.
        """
        address = f"[{self.host}]:{self.requested_port}" if ":" in self.host else f"{self.host}:{self.requested_port}"
        try:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            sock = socket.create_server((self.host.strip("[]"), self.requested_port), family=family, backlog=128)
        except OSError as exc:
            raise OSError(
                f"cannot listen on {address} for OTLP/HTTP: {exc.strerror or exc} "
                "(is another tracetui or collector using it?)"
            ) from None
        self.port = sock.getsockname()[1]
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            loop.set_exception_handler(_OutOfDescriptors())
            self._loop = loop
            try:
                runner = web.AppRunner(
                    self._app(),
                    handle_signals=False,
                    access_log=None,
                    logger=protocol_log,
                    auto_decompress=False,  # decompressed here, under the size limit
                    # aiohttp (3.14, web_protocol) starts this timer when a connection opens and
                    # after each answer, and closes the connection if no complete request head came
                    # by then: the header timeout and the idle keep-alive timeout in one.
                    keepalive_timeout=self.header_timeout_s,
                    shutdown_timeout=self.shutdown_grace_s,
                )
                loop.run_until_complete(runner.setup())
                loop.run_until_complete(web.SockSite(runner, sock).start())
                self._runner = runner
            except BaseException as exc:  # pragma: no cover - start-up failure is reported to start()
                failure.append(exc)
                sock.close()
                started.set()
                loop.close()
                return
            loop.call_soon(started.set)  # once the loop runs, so stop() can always reach it
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="tracetui-http", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            raise OSError(f"cannot start the OTLP/HTTP server on {address}: {failure[0]}")
        return self.port

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish (they wait for their commit), then stop the thread."""
        loop, runner = self._loop, self._runner
        if loop is None or self._thread is None:
            return
        if runner is not None and loop.is_running():
            future = asyncio.run_coroutine_threadsafe(runner.cleanup(), loop)
            try:
                future.result(self.shutdown_grace_s + 5)
            except Exception as exc:  # noqa: BLE001 - never block shutdown on a bad connection
                log.warning("stopping the OTLP/HTTP server: %s", exc)
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(self.shutdown_grace_s + 5)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._line.shutdown(wait=False, cancel_futures=True)

    # --- the aiohttp application --------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._cors])
        for path in SIGNAL_PATHS:
            app.router.add_post(path, self._export)
        app.router.add_get("/", self._about)
        return app

    @web.middleware
    async def _cors(self, request: web.Request, handler) -> web.StreamResponse:
        """CORS for browser apps served from this machine; other browser origins are refused."""
        origin = request.headers.get("Origin")
        if origin is None:
            return await handler(request)
        known_path = request.path in SIGNAL_PATHS
        if not local_origin(origin):
            if request.method == "OPTIONS" or known_path:
                return _encode(
                    _status(
                        403,
                        code_pb2.PERMISSION_DENIED,
                        f"origin {origin[:100]} is not allowed (only http://localhost and http://127.0.0.1 pages)",
                    ),
                    JSON,
                )
            return await handler(request)
        if request.method == "OPTIONS" and known_path and "Access-Control-Request-Method" in request.headers:
            requested = request.headers.get("Access-Control-Request-Headers", "").strip()
            allowed = requested if requested and _HEADER_LIST.fullmatch(requested) else _DEFAULT_ALLOWED_HEADERS
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Methods": "POST, OPTIONS",
                    "Access-Control-Allow-Headers": allowed,
                    "Access-Control-Max-Age": str(CORS_MAX_AGE_S),
                    "Vary": "Origin",
                },
            )
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "Retry-After"
        response.headers["Vary"] = "Origin"
        if isinstance(response, web.HTTPException):
            raise response
        return response

    async def _about(self, request: web.Request) -> web.Response:
        return web.Response(
            text="tracetui OTLP/HTTP receiver: POST /v1/traces, /v1/logs or /v1/metrics "
            "(application/x-protobuf or application/json)\n"
        )

    async def _export(self, request: web.Request) -> web.Response:
        signal = SIGNAL_PATHS[request.path]
        answer_type = CONTENT_TYPES.get(request.content_type)
        reply_type = answer_type or JSON  # an unknown type is answered in readable JSON

        if self.token is not None and not bearer_ok(request.headers.get("Authorization"), self.token):
            return _encode(
                _status(401, code_pb2.UNAUTHENTICATED, "missing or wrong bearer token (Authorization: Bearer TOKEN)",
                        **{"WWW-Authenticate": 'Bearer realm="tracetui"'}),
                reply_type,
            )  # fmt: skip
        if answer_type is None:
            shown = request.headers.get("Content-Type", "none")[:100]
            return _encode(
                _status(415, code_pb2.INVALID_ARGUMENT,
                        f"unsupported Content-Type {shown}; send application/x-protobuf or application/json"),
                reply_type,
            )  # fmt: skip
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if encoding in ("", "identity"):
            encoding = ""
        elif encoding == "x-gzip":
            encoding = "gzip"
        elif encoding not in ("gzip", "deflate"):
            return _encode(
                _status(415, code_pb2.INVALID_ARGUMENT,
                        f"unsupported Content-Encoding {encoding[:40]}; send gzip, deflate or none"),
                reply_type,
            )  # fmt: skip
        if request.content_length is not None and request.content_length > self.max_request_bytes:
            return _encode(self._too_large(request.content_length), reply_type)

        peer = _peer_name(request)
        reading = self.reading.enter(peer, 0, 0)  # never waits: only charged below, as bytes arrive
        admitted: Pass | None = None
        try:
            try:
                async with asyncio.timeout(self.body_timeout_s):
                    body = await self._read_body(request, reading)
            except TooLarge:
                return _encode(self._too_large(), reply_type)
            except TimeoutError:
                return self._body_too_slow(reply_type)
            except (ConnectionError, http_exceptions.HttpProcessingError) as exc:
                # the client went away or sent a broken body: nobody is waiting for a real answer
                reply = _status(400, code_pb2.INVALID_ARGUMENT, f"the body could not be read: {exc}")
                return _encode(reply, reply_type)
            admitted = await self._admit(peer, len(body) * _cost_factor(signal, answer_type, encoding))
            reading.release()
            loop = asyncio.get_running_loop()
            process = functools.partial(self._process, signal, answer_type, encoding, body, admitted)
            admitted = None  # from here on _process gives the pass back, even if this coroutine is cancelled
            reply = await loop.run_in_executor(self._pool, process)
        except OverBudget as exc:
            reply = _too_busy(exc)
        finally:
            reading.release()
            if admitted is not None:
                admitted.release()
        return _encode(reply, answer_type)

    async def _read_body(self, request: web.Request, reading: Pass) -> bytearray:
        """The whole body, each piece charged to the reading budget as it arrives (raises TooLarge, OverBudget).

        A slow client holds only the bytes it has sent, never a share of the
        budget that exports being decoded need; :attr:`body_timeout_s` ends it.
        """
        body = bytearray()
        async for chunk in request.content.iter_any():
            if len(body) + len(chunk) > self.max_request_bytes:
                raise TooLarge()
            reading.grow(len(chunk))
            body += chunk
        return body

    def _body_too_slow(self, reply_type: str) -> web.Response:
        reply = _status(408, code_pb2.DEADLINE_EXCEEDED,
                        f"the body took longer than {self.body_timeout_s:g} s to arrive (--http-body-timeout)")  # fmt: skip
        response = _encode(reply, reply_type)
        response.force_close()  # what is left of the body is not read: this connection is done
        return response

    async def _admit(self, peer: str, cost: int) -> Pass:
        """Wait in the admission line (off the event loop) for the memory this export will cost."""
        waiting = asyncio.get_running_loop().run_in_executor(self._line, self.admission.enter, peer, cost)
        try:
            return await asyncio.shield(waiting)
        except asyncio.CancelledError:  # shutting down: a pass granted later must still go back
            waiting.add_done_callback(_release_if_granted)
            raise

    def _too_large(self, size: int | None = None) -> Reply:
        if size is not None:
            what = f"the body ({size} bytes) is over the limit of {self.max_request_bytes} bytes"
        else:
            what = f"the request is over the limit of {self.max_request_bytes} bytes (after decompression)"
        return _status(413, code_pb2.RESOURCE_EXHAUSTED, f"{what}; send smaller batches or raise --max-request-mb")

    # --- on a pool thread -----------------------------------------------------

    def _process(self, signal: str, content_type: str, encoding: str, body: bytearray, admitted: Pass) -> Reply:
        """Decompress, decode, store and wait for the commit; returns the answer (never raises for bad input)."""
        try:
            return self._decode_and_store(signal, content_type, encoding, body, admitted)
        except OverBudget as exc:
            return _too_busy(exc)
        except Exception as exc:  # a bug: answer 500 rather than leave the exporter hanging
            log.exception("OTLP/HTTP export failed")
            return _status(500, code_pb2.INTERNAL, f"internal error: {exc}")
        finally:
            admitted.release()

    @staticmethod
    def _parse_json(body: bytearray, signal: str, lease: Pass, inflated: bool) -> bytes | Message:
        """Traces a span at a time (otlp_json.parse_traces_lean), other signals whole; raises DecodeError.

        A body that was decompressed was charged its inflated size only; parsing costs more.
        """
        if inflated:
            lease.grow(len(body) * (_json_cost_factor(signal) - 1))
        return parse_traces_lean(body) if signal == "traces" else parse_request(body, signal)

    def _decode_and_store(self, signal: str, content_type: str, encoding: str, body: bytearray, lease: Pass) -> Reply:
        try:
            if encoding:
                body = decompress_bounded(body, encoding, self.max_request_bytes, lease)
            payload: bytes | bytearray | Message = body
            if content_type == JSON:
                payload = self._parse_json(body, signal, lease, inflated=bool(encoding))
        except TooLarge:
            return self._too_large()
        except DecodeError as exc:
            return _status(400, code_pb2.INVALID_ARGUMENT, str(exc))
        del body
        result = ingest(self.writer, signal, payload, self.decoder)  # type: ignore[arg-type]
        if result.outcome is Outcome.INVALID:
            return _status(400, code_pb2.INVALID_ARGUMENT, result.message)
        if result.outcome is Outcome.BUSY:
            retry_after = _retry_after(max(result.retry_after_s, self.admission.retry_delay()))
            return _status(503, code_pb2.UNAVAILABLE, result.message, **{"Retry-After": retry_after})
        assert result.response is not None
        return Reply(200, result.response)

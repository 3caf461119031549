"""OTLP/gRPC receiver: ``TraceService/Export`` on a real grpcio server.

Requests arrive as raw bytes (no grpc-level deserializer) so that an
undecodable body gets ``INVALID_ARGUMENT`` with a readable reason instead of
grpc's generic ``INTERNAL``. Each handler decodes its request on its own
thread, hands the rows to the writer and answers only once they are
committed.
"""

from __future__ import annotations

import logging
from concurrent import futures

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from tracetui.otlp.decode import DecodeError, decode_spans, parse_trace_request
from tracetui.store.writer import Overloaded, StoreUnavailable, Writer

log = logging.getLogger(__name__)

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
#: How long a handler waits for its commit before telling the client to retry.
COMMIT_TIMEOUT_S = 20.0
#: Delay suggested to exporters when the writer is behind.
RETRY_DELAY_S = 1.0


def _retryable_abort(context: grpc.ServicerContext, message: str, delay_s: float = RETRY_DELAY_S) -> None:
    """Answer UNAVAILABLE with RetryInfo, so exporters keep the batch and retry.

    RetryInfo goes in the standard ``grpc-status-details-bin`` (Go, Java) and in
    the ``google.rpc.retryinfo-bin`` trailer that the Python exporter reads.
    """
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=int(delay_s * 1e9) % 1_000_000_000,
                                                                          seconds=int(delay_s)))
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


class TraceExportHandler:
    """The body of ``TraceService/Export``."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer

    def __call__(self, request_bytes: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            request = parse_trace_request(request_bytes)
            decoded = decode_spans(request)
        except DecodeError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Exception as exc:  # never let a hostile payload surface as INTERNAL + traceback
            log.exception("decoding an export failed")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"could not decode spans: {exc}")
        response = ExportTraceServiceResponse()
        if decoded.rejected:
            response.partial_success.CopyFrom(
                ExportTracePartialSuccess(rejected_spans=decoded.rejected, error_message=decoded.rejection_message)
            )
        if decoded.spans:
            try:
                ticket = self.writer.submit(decoded)
            except Overloaded as exc:
                _retryable_abort(context, f"tracetui is busy writing ({exc}); retry later")
            except StoreUnavailable as exc:
                _retryable_abort(context, str(exc))
            if not ticket.wait(COMMIT_TIMEOUT_S):
                # Not lost: it will still commit; a resent copy is deduplicated.
                _retryable_abort(context, "commit is taking too long; retry later")
            if ticket.error is not None:
                _retryable_abort(context, f"could not store spans: {ticket.error}")
        return response.SerializeToString()


def _identity(data: bytes) -> bytes:
    return data


def start_grpc_server(
    writer: Writer,
    host: str,
    port: int,
    *,
    max_request_bytes: int,
    workers: int = 8,
) -> tuple[grpc.Server, int]:
    """Start the gRPC server; returns it and the bound port.

    Raises OSError with a readable message when the address cannot be bound.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tracetui-grpc"),
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            # grpcio enables SO_REUSEPORT by default, which would let a second
            # receiver silently share the port with the first.
            ("grpc.so_reuseport", 0),
        ],
    )
    handlers = {
        "Export": grpc.unary_unary_rpc_method_handler(
            TraceExportHandler(writer), request_deserializer=_identity, response_serializer=_identity
        )
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(TRACE_SERVICE, handlers),))
    address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: {exc} (is another tracetui or collector using it?)") from None
    if bound == 0:
        raise OSError(f"cannot listen on {address} (is another tracetui or collector using it?)")
    server.start()
    return server, bound

"""One export, whatever the transport: decode, write, wait for the commit, answer.

The gRPC and HTTP receivers both call :func:`ingest`; each maps the
:class:`Outcome` to its own status codes (INVALID -> INVALID_ARGUMENT / 400,
BUSY -> UNAVAILABLE / 503 with a retry delay). Keeping this in one place is
what makes "acknowledged only after commit" true for every way in.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsPartialSuccess,
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tracetui.ingest.workers import Decoder, InlineDecoder
from tracetui.otlp.decode import DecodeError
from tracetui.otlp.signals import Signal
from tracetui.store.writer import Overloaded, StoreUnavailable, Writer

log = logging.getLogger(__name__)

#: Delay suggested to exporters when the writer is behind.
RETRY_DELAY_S = 1.0


class Outcome(enum.Enum):
    OK = "ok"
    #: The payload cannot be decoded: the client must not retry.
    INVALID = "invalid"
    #: Temporary trouble (writer behind, database locked or full): retry later.
    BUSY = "busy"


@dataclass(frozen=True, slots=True)
class IngestResult:
    outcome: Outcome
    #: The Export*ServiceResponse (with partial_success when some items were rejected).
    response: Message | None = None
    message: str = ""
    retry_after_s: float = RETRY_DELAY_S


_RESPONSES: dict[str, tuple[type, type]] = {
    "traces": (ExportTraceServiceResponse, ExportTracePartialSuccess),
    "logs": (ExportLogsServiceResponse, ExportLogsPartialSuccess),
    "metrics": (ExportMetricsServiceResponse, ExportMetricsPartialSuccess),
}
#: The partial_success field that counts what was refused, per signal.
_REJECTED_FIELD = {"traces": "rejected_spans", "logs": "rejected_log_records", "metrics": "rejected_data_points"}
_INLINE = InlineDecoder()
REQUEST_TYPES: dict[str, type] = {
    "traces": ExportTraceServiceRequest,
    "logs": ExportLogsServiceRequest,
    "metrics": ExportMetricsServiceRequest,
}


def ingest(writer: Writer, signal: Signal, payload: bytes | Message, decoder: Decoder = _INLINE) -> IngestResult:
    """Store one export request and say how to answer it.

    ``payload`` is the serialized protobuf request, or an already parsed
    message (the HTTP JSON path parses JSON into the same message type).
    Never raises for bad input.
    """
    response_type, partial_type = _RESPONSES[signal]
    reason = writer.busy() or decoder.busy(writer)
    if reason is not None:
        # Overloaded: say so before decoding, which would only add to the backlog's cost.
        return IngestResult(Outcome.BUSY, message=f"{reason}; retry later")
    try:
        stored = decoder.store(writer, signal, payload)
    except DecodeError as exc:
        return IngestResult(Outcome.INVALID, message=str(exc))
    except Overloaded as exc:
        return IngestResult(Outcome.BUSY, message=f"tracetui is busy writing ({exc}); retry later")
    except StoreUnavailable as exc:
        return IngestResult(Outcome.BUSY, message=str(exc))
    except Exception as exc:  # never let a hostile payload surface as an internal error
        log.exception("storing a %s export failed", signal)
        return IngestResult(Outcome.INVALID, message=f"could not decode {signal}: {exc}")

    response = response_type()
    if stored.rejected:
        response.partial_success.CopyFrom(
            partial_type(**{_REJECTED_FIELD[signal]: stored.rejected, "error_message": stored.rejection_message})
        )
    return IngestResult(Outcome.OK, response=response)

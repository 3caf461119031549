"""One export request of any signal (traces, logs, metrics), decoded: the one entry point.

The receivers (tracetui.ingest), ``tracetui import`` and the in-memory reader
(tracetui.query.memory) all decode through :func:`decode_request`.
"""

from __future__ import annotations

from typing import Literal, cast

from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tracetui.model.rows import Decoded
from tracetui.otlp.decode import decode_logs, decode_spans, decode_trace_bytes, parse_logs_request
from tracetui.otlp.metrics import decode_metrics, parse_metrics_request

Signal = Literal["traces", "logs", "metrics"]


def decode_request(signal: Signal, payload: bytes | bytearray | memoryview | Message) -> Decoded:
    """Parse (unless already parsed) and decode one export request. Raises DecodeError.

    The rows are as decoded, not yet prepared: ``Writer.submit`` prepares what it queues, and
    an ingest worker prepares before it commits (tracetui.store.batch.prepare).
    """
    data = bytes(payload) if isinstance(payload, (bytes, bytearray, memoryview)) else None
    # A parsed payload is the request message of its signal (the casts only tell mypy which).
    if signal == "logs":
        return decode_logs(parse_logs_request(data) if data is not None else cast(ExportLogsServiceRequest, payload))
    if signal == "metrics":
        return decode_metrics(
            parse_metrics_request(data) if data is not None else cast(ExportMetricsServiceRequest, payload)
        )
    # The bytes, when there are any, also give each span's raw copy (decode.span_bytes).
    return decode_trace_bytes(data) if data is not None else decode_spans(cast(ExportTraceServiceRequest, payload))

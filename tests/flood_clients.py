"""Aggressive flood clients and a polite SDK app, for the fairness tests and benchmarks/flood.py.

* :func:`run_flood`: ``clients`` gRPC connections (in a few processes), each
  sending large exports back to back; a refused export is resent after a
  tenth of a second whatever the server suggests (aggressive). Each request's
  trace ids are unique, so every acknowledged request can be checked in the
  database afterwards (:func:`missing_acked_spans`).
* :data:`POLITE_APP`: an ordinary app, run as its own process, using the
  OpenTelemetry SDK with default settings (BatchSpanProcessor + OTLPSpanExporter,
  gRPC or HTTP) at a steady rate of spans; its spans carry a service name of
  their own, so the ones it lost are the ones missing from the database.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys
import time
from pathlib import Path

from helpers import exporter_stub, query_ro

#: 16-byte trace ids: marker(4) + client(4) + request(4) + trace-in-request(4).
FLOOD_MARKER = b"FLD!"
SPANS_PER_FLOOD_REQUEST = 2048
FLOOD_SPAN_TRACES = 256  # traces per request (8 spans each)


def _flood_request(client: int, seq: int) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    spans = []
    per_trace = SPANS_PER_FLOOD_REQUEST // FLOOD_SPAN_TRACES
    blob = "flood " * 350  # ~2 KB a span, about what an LLM span with its prompt weighs
    for i in range(SPANS_PER_FLOOD_REQUEST):
        trace = FLOOD_MARKER + client.to_bytes(4, "big") + seq.to_bytes(4, "big") + (i // per_trace).to_bytes(4, "big")
        spans.append(Span(trace_id=trace, span_id=(i + 1).to_bytes(8, "big"), name="flood",
                          start_time_unix_nano=1_700_000_000_000_000_000 + i, end_time_unix_nano=1_700_000_000_000_001_000 + i,
                          attributes=[KeyValue(key="blob", value=AnyValue(string_value=blob))]))  # fmt: skip
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="flood"))])
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=spans)])]
    )
    return request.SerializeToString()


def _flood_process(address: str, first_client: int, clients: int, until: float, out) -> None:
    import threading

    import grpc

    acked: list[tuple[int, int]] = []
    refused = [0]
    lock = threading.Lock()
    template = _flood_request(0, 0)
    marker0 = FLOOD_MARKER + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")

    def client(n: int) -> None:
        channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", -1)])
        export = exporter_stub(channel)
        seq = 0
        while time.time() < until:
            body = template.replace(marker0, FLOOD_MARKER + n.to_bytes(4, "big") + seq.to_bytes(4, "big"))
            try:
                export(body, timeout=10)
            except grpc.RpcError:
                with lock:
                    refused[0] += 1
                time.sleep(0.1)  # aggressive: the server's suggested delay is ignored
                continue
            with lock:
                acked.append((n, seq))
            seq += 1
        channel.close()

    threads = [threading.Thread(target=client, args=(first_client + i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((acked, refused[0]))


def run_flood(address: str, clients: int, seconds: float, processes: int = 4):
    """Start the flood in the background; returns a function that waits for it and gives (acked, refused)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    until = time.time() + seconds
    per = -(-clients // processes)
    procs = []
    for p in range(processes):
        n = min(per, clients - p * per)
        if n <= 0:
            break
        proc = ctx.Process(target=_flood_process, args=(address, p * per, n, until, queue), daemon=True)
        proc.start()
        procs.append(proc)

    def finish() -> tuple[list[tuple[int, int]], int]:
        acked: list[tuple[int, int]] = []
        refused = 0
        for _ in procs:
            a, r = queue.get(timeout=seconds + 120)
            acked += a
            refused += r
        for proc in procs:
            proc.join(10)
        return acked, refused

    return finish


def missing_acked_spans(db_path: Path, acked: list[tuple[int, int]]) -> int:
    """Spans of acknowledged flood requests that are not in the database."""
    stored: dict[tuple[int, int], int] = {}
    for trace_id, count in query_ro(
        db_path, "SELECT trace_id, count(*) FROM spans WHERE service = 'flood' GROUP BY trace_id"
    ):
        key = (int.from_bytes(trace_id[4:8], "big"), int.from_bytes(trace_id[8:12], "big"))
        stored[key] = stored.get(key, 0) + count
    return sum(max(0, SPANS_PER_FLOOD_REQUEST - stored.get(key, 0)) for key in acked)


# --- the polite app --------------------------------------------------------------------------------

POLITE_APP = r"""
import json, sys, time
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

protocol, endpoint, service, rate, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
if protocol == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
else:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    exporter = OTLPSpanExporter(endpoint=endpoint)
provider = TracerProvider(resource=Resource.create({"service.name": service}))
provider.add_span_processor(BatchSpanProcessor(exporter))  # the SDK's defaults
tracer = provider.get_tracer("polite")
created = 0
start = time.monotonic()
while time.monotonic() - start < seconds:
    with tracer.start_as_current_span("polite-request"):
        pass
    created += 1
    time.sleep(max(0.0, start + created / rate - time.monotonic()))
provider.shutdown()
print(json.dumps({"created": created}), flush=True)
"""


def start_polite_app(protocol: str, endpoint: str, service: str, rate: float, seconds: float) -> subprocess.Popen:
    """The polite app as its own process (its GIL is not the flood's); read its result with :func:`polite_result`."""
    return subprocess.Popen([sys.executable, "-c", POLITE_APP, protocol, endpoint, service, str(rate), str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def polite_result(proc: subprocess.Popen, db_path: Path, service: str, timeout: float) -> dict:
    """Spans the app created and how many of them are missing from the database."""
    out, err = proc.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, f"the polite app failed:\n{err[-3000:]}"
    created = json.loads(lines[-1])["created"]
    stored = query_ro(db_path, "SELECT count(*) FROM spans WHERE service = ?", (service,))[0][0]
    failures = err.count("Failed to export")
    return {"created": created, "stored": stored, "lost": created - stored, "failed_exports": failures}


def polite_flood(grpc_address: str, http_address: str, db_path: Path, clients: int, seconds: float) -> dict:
    """Two polite SDK apps (gRPC, HTTP) at 100 spans/s while ``clients`` aggressive ones flood for ``seconds``.

    Returns each app's result (:func:`polite_result`) and the flood's acked
    requests, refusals and acknowledged spans missing from the database.
    """
    finish = run_flood(grpc_address, clients, seconds)
    time.sleep(2.0)  # the flood is on before the apps start
    apps = {
        "grpc": start_polite_app("grpc", f"http://{grpc_address}", "polite-grpc", 100, seconds - 4),
        "http": start_polite_app("http", f"http://{http_address}/v1/traces", "polite-http", 100, seconds - 4),
    }
    results = {name: polite_result(app, db_path, f"polite-{name}", seconds + 120) for name, app in apps.items()}
    acked, refused = finish()
    return {"polite": results, "flood_acked_requests": len(acked), "flood_refused": refused,
            "flood_acked_missing_spans": missing_acked_spans(db_path, acked)}  # fmt: skip

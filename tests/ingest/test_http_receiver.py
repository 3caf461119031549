"""OTLP/HTTP for real: `tracetui serve --headless` as a process, real HTTP clients, the real SDK HTTP exporters."""

from __future__ import annotations

import base64
import gzip
import json
import logging
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import grpc
import pytest
import requests
from google.rpc import status_pb2
from helpers import (
    FIXTURES,
    channel_to,
    exporter_stub,
    iter_spans,
    make_request,
    make_span,
    read_records,
    receiver_env,
    requests_of,
    sid,
    start_receiver,
    stored_counts,
    stored_span_keys,
    tid,
    trace_fixture_files,
    wait_until,
)
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)

from tracetui.otlp.otlp_json import message_to_dict
from tracetui.store.blobs import Blobs
from tracetui.store.reader import SqliteReader

#: The ready line exactly as the issue specifies it.
READY = re.compile(
    r"^tracetui: listening grpc=(?P<grpc>\S+):(?P<gport>\d+) http=(?P<host>\S+):(?P<port>\d+) db=(?P<db>.+)$"
)
PB = "application/x-protobuf"
JSON = "application/json"


def http_url(rcv) -> str:
    match = next(m for m in map(READY.match, rcv.lines) if m)
    return f"http://{match['host']}:{match['port']}"


def post(
    url: str, body: bytes, content_type: str | None = PB, path: str = "/v1/traces", **headers
) -> requests.Response:
    if content_type is not None:
        headers["Content-Type"] = content_type
    return requests.post(url + path, data=body, headers=headers, timeout=30)


def status_of(response: requests.Response) -> status_pb2.Status:
    """The google.rpc.Status body of an error answer, in the answer's content type."""
    if response.headers["Content-Type"].startswith(JSON):
        data = response.json()
        return status_pb2.Status(code=data.get("code", 0), message=data.get("message", ""))
    assert response.headers["Content-Type"] == PB
    return status_pb2.Status.FromString(response.content)


def as_json(request) -> bytes:
    return json.dumps(message_to_dict(request)).encode()


def stored_raw(db_path: Path) -> dict[tuple[bytes, bytes], bytes]:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        expand = Blobs(conn).expand  # long strings are stored once (tracetui.store.blobs)
        return {(t, s): expand(raw) for t, s, raw in conn.execute("SELECT trace_id, span_id, raw FROM spans")}
    finally:
        conn.close()


def peak_rss_kb(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmHWM:\s+(\d+) kB", text, re.M)
    return int(match[1]) if match else None


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One receiver for the tests that only add their own traces (distinct trace ids)."""
    tmp = tmp_path_factory.mktemp("http")
    rcv = start_receiver(tmp / "shared.db", cwd=tmp)
    yield rcv
    assert rcv.stop() == 0, rcv.stderr
    assert "Traceback" not in rcv.stderr  # bad input is answered, never a crash report


@pytest.fixture
def url(shared) -> str:
    return http_url(shared)


# --- starting ---------------------------------------------------------------------------------


def test_ready_line_names_both_ports_and_http_really_listens(shared):
    ready = [line for line in shared.lines if line.startswith("tracetui: listening")]
    assert len(ready) == 1
    match = READY.match(ready[0])
    assert match, ready[0]
    assert match["host"] == "127.0.0.1"
    assert int(match["port"]) > 0 and match["port"] != match["gport"]
    answer = requests.get(http_url(shared) + "/", timeout=10)
    assert answer.status_code == 200 and "POST /v1/traces" in answer.text


def test_http_defaults_to_loopback_port_4318(tmp_path):
    for port in (4317, 4318):
        probe = socket.socket()
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            pytest.skip(f"port {port} is in use on this machine")
        finally:
            probe.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracetui", "serve", "--headless", "--db", str(tmp_path / "d.db")],
        env=receiver_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stderr.readline().strip()
        if "cannot listen" in line or "already in use" in line:
            pytest.skip("port 4317 or 4318 was taken meanwhile")
        match = READY.match(line)
        assert match, line
        assert (match["host"], match["port"], match["gport"]) == ("127.0.0.1", "4318", "4317")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_second_receiver_on_the_same_http_port_fails_clearly(shared, tmp_path):
    port = http_url(shared).rsplit(":", 1)[1]
    proc = subprocess.run(
        [sys.executable, "-m", "tracetui", "serve", "--headless", "--db", str(tmp_path / "b.db"),
         "--grpc-port", "0", "--http-port", port],
        env=receiver_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "tracetui: listening" not in proc.stderr
    assert f"port {port} (OTLP/HTTP) is already in use" in proc.stderr and "Traceback" not in proc.stderr
    assert "--http-port 0" in proc.stderr and " view" in proc.stderr
    assert post(http_url(shared), make_request([make_span(tid(900), sid(1))]).SerializeToString()).status_code == 200


# --- the real OpenTelemetry SDK HTTP exporters ------------------------------------------------------------


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip, Compression.Deflate],
                         ids=lambda c: c.value)  # fmt: skip
def test_sdk_http_exporter_trace_is_stored_as_sent(shared, url, compression, caplog):
    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", compression=compression, timeout=10)
    results: list[SpanExportResult] = []
    export = exporter.export
    exporter.export = lambda spans: results.append(export(spans)) or results[-1]  # type: ignore[method-assign]
    provider = TracerProvider(resource=Resource.create({"service.name": "http-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.http", "1.2")

    with caplog.at_level(logging.WARNING):
        with tracer.start_as_current_span("agent run", attributes={"turn": 3}) as root:
            with tracer.start_as_current_span(
                "chat gpt-4o", kind=SpanKind.CLIENT,
                attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                            "gen_ai.usage.input_tokens": 12, "gen_ai.response.finish_reasons": ["stop"]},
            ) as failed:  # fmt: skip
                failed.add_event("gen_ai.content.prompt", {"gen_ai.prompt": "hello"})
                failed.set_status(Status(StatusCode.ERROR, "timed out"))
            with tracer.start_as_current_span("fallback", links=[Link(failed.get_span_context(), {"k": "v"})]):
                pass
        provider.shutdown()
    assert results and all(r is SpanExportResult.SUCCESS for r in results)
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry")], caplog.text

    trace_id = root.get_span_context().trace_id.to_bytes(16, "big")
    reader = SqliteReader(shared.db_path)
    try:  # acknowledged means committed: readable at once
        row = reader.trace(trace_id)
        assert (row.name, row.service, row.span_count, row.error_count) == ("agent run", "http-agent", 3, 1)
        spans = {s.name: s for s in reader.spans(trace_id)}
        failed_id = failed.get_span_context().span_id.to_bytes(8, "big")
        assert spans["chat gpt-4o"].span_id == failed_id
        assert spans["chat gpt-4o"].parent_span_id == root.get_span_context().span_id.to_bytes(8, "big")
        assert spans["chat gpt-4o"].status_message == "timed out" and spans["chat gpt-4o"].span_kind == 3
        detail = reader.span_detail(trace_id, failed_id)
        assert detail.attributes == {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                                     "gen_ai.usage.input_tokens": 12, "gen_ai.response.finish_reasons": ["stop"]}  # fmt: skip
        assert [(e["name"], e["attributes"]) for e in detail.events] == [
            ("gen_ai.content.prompt", {"gen_ai.prompt": "hello"})
        ]
        assert (detail.scope["name"], detail.scope["version"]) == ("tests.http", "1.2")
        link = reader.span_detail(trace_id, spans["fallback"].span_id).links[0]
        assert (link["span_id"], link["attributes"]) == (failed_id.hex(), {"k": "v"})
    finally:
        reader.close()


def test_sdk_exporters_for_logs_and_metrics_succeed_without_errors(shared, url, caplog):
    """Apps that export all three signals to :4318 must see no errors; logs are stored, metrics dropped."""
    log_exporter = OTLPLogExporter(endpoint=f"{url}/v1/logs", timeout=10)
    metric_exporter = OTLPMetricExporter(endpoint=f"{url}/v1/metrics", timeout=10)
    with caplog.at_level(logging.WARNING):
        logger_provider = LoggerProvider(resource=Resource.create({"service.name": "http-logs"}))
        logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
        trace_id, span_id = int.from_bytes(tid(950), "big"), int.from_bytes(sid(1), "big")
        span_context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(1))
        logger_provider.get_logger("tests.logs").emit(
            timestamp=time.time_ns(), context=set_span_in_context(NonRecordingSpan(span_context)), body="evaluation",
            attributes={"gen_ai.evaluation.name": "groundedness"}, event_name="gen_ai.evaluation.result",
        )  # fmt: skip
        logger_provider.shutdown()

        reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=60_000)
        meter_provider = MeterProvider(metric_readers=[reader])
        meter_provider.get_meter("tests.metrics").create_counter("tokens").add(5)
        assert reader.force_flush(10_000)
        meter_provider.shutdown()
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry")], caplog.text
    conn = sqlite3.connect(f"file:{shared.db_path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT event_name, service FROM logs WHERE trace_id = ? AND span_id = ?", (tid(950), sid(1))
        ).fetchall()
    finally:
        conn.close()
    assert rows == [("gen_ai.evaluation.result", "http-logs")]


# --- JSON bodies --------------------------------------------------------------------------------------


def test_json_body_with_hex_ids_and_string_integers_is_stored(shared, url):
    trace_hex, span_hex = "4BF92F3577B34DA6A3CE929D0E0E4736", "00F067AA0BA902B7"
    body = {
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "browser-app"}}]},
            "scopeSpans": [{
                "scope": {"name": "@opentelemetry/sdk-trace-web"},
                "spans": [{
                    "traceId": trace_hex, "spanId": span_hex, "parentSpanId": "",
                    "name": "fetch /api/chat", "kind": 3,
                    "startTimeUnixNano": "1700000000123456789", "endTimeUnixNano": 1700000001123456789,
                    "attributes": [
                        {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "187"}},
                        {"key": "ratio", "value": {"doubleValue": 0.5}},
                        {"key": "ok", "value": {"boolValue": True}},
                        {"key": "raw", "value": {"bytesValue": base64.b64encode(b"\x01\x02").decode()}},
                    ],
                    "status": {"code": 1},
                    "somethingNew": {"x": 1},
                }],
            }],
        }]
    }  # fmt: skip
    answer = post(url, json.dumps(body).encode(), JSON)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith(JSON)
    assert answer.json() == {}  # full success: partial_success unset
    trace_id, span_id = bytes.fromhex(trace_hex), bytes.fromhex(span_hex)
    reader = SqliteReader(shared.db_path)
    try:
        (span,) = reader.spans(trace_id)
        assert span.span_id == span_id and span.parent_span_id is None
        assert (span.start_ns, span.end_ns) == (1700000000123456789, 1700000001123456789)
        assert (span.span_kind, span.status_code, span.service) == (3, 1, "browser-app")
        detail = reader.span_detail(trace_id, span_id)
        assert detail.attributes == {"gen_ai.usage.output_tokens": 187, "ratio": 0.5, "ok": True, "raw": "0102"}
        assert detail.scope["name"] == "@opentelemetry/sdk-trace-web"
    finally:
        reader.close()


@pytest.mark.parametrize("path", trace_fixture_files(), ids=lambda p: p.stem)
def test_fixture_sent_as_json_is_stored_exactly_like_protobuf(shared, url, path):
    for request in requests_of(path):
        answer = post(url, as_json(request), JSON)
        assert answer.status_code == 200, answer.text
        assert "partialSuccess" not in answer.json()
    stored = stored_raw(shared.db_path)
    for _service, span in iter_spans(requests_of(path)):
        assert stored[(span.trace_id, span.span_id)] == span.SerializeToString()  # same ids, times, attributes


def test_logs_fixture_over_http_in_both_encodings(start_rcv):
    rcv = start_rcv()
    url = http_url(rcv)
    path = FIXTURES / "otel_v2_openai.logs.otlp"
    records = read_records(path)
    requests_ = [ExportLogsServiceRequest.FromString(r) for r in records]
    n_records = sum(len(sl.log_records) for r in requests_ for rl in r.resource_logs for sl in rl.scope_logs)
    for record, request in zip(records, requests_, strict=True):
        assert post(url, record, PB, "/v1/logs").status_code == 200
        assert post(url, as_json(request), JSON, "/v1/logs").status_code == 200  # a resend: deduplicated
    conn = sqlite3.connect(f"file:{rcv.db_path}?mode=ro", uri=True)
    try:
        assert conn.execute("SELECT count(*) FROM logs").fetchone()[0] == n_records > 0
    finally:
        conn.close()


def test_root_path_is_traces(shared, url):
    request = make_request([make_span(tid(901), sid(1), name="sent to /")])
    assert post(url, request.SerializeToString(), PB, "/").status_code == 200
    assert (tid(901), sid(1)) in stored_span_keys(shared.db_path)


@pytest.mark.parametrize("content_type", [PB, JSON])
def test_metrics_are_accepted_and_discarded(shared, url, content_type):
    body = b"\x0a\x00" if content_type == PB else b'{"resourceMetrics": []}'
    before = stored_counts(shared.db_path)
    answer = post(url, body, content_type, "/v1/metrics")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith(content_type)
    if content_type == PB:
        ExportMetricsServiceResponse.FromString(answer.content)
    assert stored_counts(shared.db_path) == before


# --- status codes --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [PB, JSON])
def test_partial_success_when_some_spans_are_rejected(shared, url, content_type):
    request = make_request([make_span(tid(902), sid(1)), make_span(tid(902)[:15], sid(2)), make_span(tid(902), sid(3))])
    body = request.SerializeToString() if content_type == PB else as_json(request)
    answer = post(url, body, content_type)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith(content_type)
    if content_type == PB:
        partial = ExportTraceServiceResponse.FromString(answer.content).partial_success
        rejected, message = partial.rejected_spans, partial.error_message
    else:
        partial = answer.json()["partialSuccess"]
        rejected, message = int(partial["rejectedSpans"]), partial["errorMessage"]
        assert isinstance(partial["rejectedSpans"], str)  # int64 as a string in OTLP JSON
    assert rejected == 1 and "trace_id" in message
    keys = stored_span_keys(shared.db_path)
    assert {s for t, s in keys if t == tid(902)} == {sid(1), sid(3)}
    assert all(len(t) == 16 for t, _ in keys)


@pytest.mark.parametrize(
    ("content_type", "body", "encoding", "reason"),
    [
        (PB, b"\xff\xff\xff\xff", None, "not a valid ExportTraceServiceRequest"),
        (JSON, b'{"resourceSpans": [', None, "invalid JSON at line 1"),
        (JSON, b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz"}]}]}]}', None,
         "resourceSpans[0].scopeSpans[0].spans[0].traceId: not hex"),
        (PB, b"this is not gzip", "gzip", "not valid gzip data"),
        (PB, gzip.compress(make_request([make_span(tid(903), sid(1))]).SerializeToString())[:-12], "gzip", "truncated"),
    ],
    ids=["protobuf-garbage", "json-syntax", "json-bad-id", "gzip-garbage", "gzip-truncated"],
)  # fmt: skip
def test_undecodable_bodies_get_400_and_the_server_keeps_serving(shared, url, content_type, body, encoding, reason):
    headers = {"Content-Encoding": encoding} if encoding else {}
    before = stored_counts(shared.db_path)
    answer = post(url, body, content_type, **headers)
    assert answer.status_code == 400
    assert answer.headers["Content-Type"].startswith(content_type)  # the request's content type
    status = status_of(answer)
    assert reason in status.message and "Traceback" not in status.message
    assert stored_counts(shared.db_path) == before
    assert post(url, make_request([make_span(tid(904), sid(1))]).SerializeToString()).status_code == 200


@pytest.mark.parametrize(
    "raw",
    [b"GARBAGE / HTTP/1.1\r\n\r\n",
     b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 100\r\n\r\nabc",
     b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
    ids=["not-http", "cut-off-body", "bad-chunk"],
)  # fmt: skip
def test_broken_http_and_vanishing_clients_leave_the_server_serving(shared, url, raw):
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        try:
            answer = sock.recv(100)
        except OSError:
            answer = b""
    assert answer == b"" or answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0]
    assert (
        post(url, make_request([make_span(tid(908), sid(len(raw) % 200 + 1))]).SerializeToString()).status_code == 200
    )


@pytest.mark.parametrize(
    ("content_type", "encoding"),
    [("text/plain", None), (None, None), ("application/grpc", None), (PB, "br")],
    ids=["text", "missing", "grpc", "brotli"],
)
def test_other_content_types_and_encodings_get_415(shared, url, content_type, encoding):
    headers = {"Content-Encoding": encoding} if encoding else {}
    answer = post(url, make_request([make_span(tid(905), sid(1))]).SerializeToString(), content_type, **headers)
    assert answer.status_code == 415
    assert "unsupported" in status_of(answer).message
    assert (tid(905), sid(1)) not in stored_span_keys(shared.db_path)


def gzip_bomb(size: int) -> bytes:
    compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 22)
    return b"".join([compressor.compress(zeros) for _ in range(size >> 22)] + [compressor.flush()])


def test_gzip_bomb_gets_413_without_exhausting_memory(start_rcv):
    rcv = start_rcv("--max-request-mb", "2")
    url = http_url(rcv)
    bomb = gzip_bomb(256 << 20)  # 256 MiB of zeros
    assert len(bomb) < 2 << 20  # small enough on the wire: only decompression can tell
    peak_before = peak_rss_kb(rcv.proc.pid)
    answer = post(url, bomb, PB, **{"Content-Encoding": "gzip"})
    assert answer.status_code == 413
    assert "after decompression" in status_of(answer).message
    peak_after = peak_rss_kb(rcv.proc.pid)
    if peak_before is not None and peak_after is not None:
        # an unbounded decompressor needs 256 MiB; the guard stops at the 2 MiB limit
        assert peak_after - peak_before < 48 * 1024, (peak_before, peak_after)
    deflate_bomb = zlib.compress(bytes(64 << 20), 1)
    assert len(deflate_bomb) < 2 << 20
    answer = post(url, deflate_bomb, JSON, **{"Content-Encoding": "deflate"})
    assert answer.status_code == 413 and "after decompression" in status_of(answer).message
    # a plain body over the limit is refused from its Content-Length
    big = make_request([make_span(tid(1), sid(9), attributes={"x": "y" * 2_200_000})]).SerializeToString()
    assert post(url, big).status_code == 413
    # just under the limit, compressed, is fine: the server kept serving
    ok = make_request([make_span(tid(1), sid(1), attributes={"blob": "x" * 1_900_000})]).SerializeToString()
    assert post(url, gzip.compress(ok), PB, **{"Content-Encoding": "gzip"}).status_code == 200
    assert stored_span_keys(rcv.db_path) == {(tid(1), sid(1))}
    assert rcv.alive()


def test_writer_behind_gets_503_with_retry_after_and_loses_nothing(start_rcv):
    rcv = start_rcv("--max-pending-spans", "100")
    url = http_url(rcv)
    bodies = {n: make_request([make_span(tid(n), sid(i)) for i in range(1, 61)]).SerializeToString() for n in (1, 2)}
    answers: dict[int, requests.Response] = {}
    blocker = sqlite3.connect(rcv.db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock: commits wait
    try:
        threads = [threading.Thread(target=lambda n=n: answers.__setitem__(n, post(url, bodies[n]))) for n in bodies]
        for t in threads:
            t.start()
        # 120 spans would wait for a 100-span queue: one export is turned away at once
        assert wait_until(lambda: len(answers) == 1, timeout=20)
        ((busy_n, busy),) = answers.items()
        assert busy.status_code == 503
        assert int(busy.headers["Retry-After"]) >= 1
        assert "busy" in status_of(busy).message
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    for t in threads:
        t.join(30)
    waited = answers[3 - busy_n]
    assert waited.status_code == 200  # answered once its spans were committed
    assert post(url, bodies[busy_n]).status_code == 200  # the exporter's retry
    assert stored_counts(rcv.db_path) == (120, 2)


def test_too_much_in_flight_gets_429_with_retry_after(start_rcv):
    rcv = start_rcv("--max-request-mb", "1")  # at most 4 MiB of request bodies in flight
    url = http_url(rcv)
    bodies = [make_request([make_span(tid(n), sid(1), attributes={"blob": "x" * 900_000})]).SerializeToString()
              for n in range(1, 9)]  # fmt: skip
    answers: dict[int, requests.Response] = {}
    blocker = sqlite3.connect(rcv.db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # nothing can commit, so bodies stay in flight
    try:
        threads = [threading.Thread(target=lambda i=i: answers.__setitem__(i, post(url, bodies[i]))) for i in range(8)]
        for t in threads:
            t.start()
        assert wait_until(lambda: any(a.status_code == 429 for a in list(answers.values())), timeout=20)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    for t in threads:
        t.join(30)
    throttled = [i for i, a in answers.items() if a.status_code == 429]
    assert throttled and len(throttled) < 8
    for i in throttled:
        assert int(answers[i].headers["Retry-After"]) >= 1
        assert status_of(answers[i]).code == 8  # RESOURCE_EXHAUSTED
    for i, answer in answers.items():
        if i not in throttled:
            assert answer.status_code in (200, 503), answer.status_code
    for i, answer in answers.items():  # the exporters' retries
        if answer.status_code != 200:
            assert post(url, bodies[i]).status_code == 200
    assert stored_counts(rcv.db_path) == (8, 8)


# --- the token ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["option", "environment"])
def test_token_is_required_on_http_and_grpc(start_rcv, how):
    token = "s3cret-tok"
    if how == "option":
        rcv = start_rcv("--token", token)
    else:
        rcv = start_rcv(env=receiver_env({"TRACETUI_TOKEN": token}))
    assert token not in rcv.stderr
    url = http_url(rcv)
    body = make_request([make_span(tid(1), sid(1))]).SerializeToString()

    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": token},
        {"Authorization": f"Basic {token}"},
    ):
        answer = post(url, body, PB, **headers)
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert status_of(answer).code == 16  # UNAUTHENTICATED
    json_answer = post(url, as_json(make_request([make_span(tid(1), sid(1))])), JSON)
    assert json_answer.status_code == 401 and json_answer.headers["Content-Type"].startswith(JSON)
    assert stored_span_keys(rcv.db_path) == set()

    with channel_to(rcv.port) as channel:
        stub = exporter_stub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub(body, timeout=20)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as info:
            stub(body, timeout=20, metadata=(("authorization", "Bearer nope"),))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        stub(body, timeout=20, metadata=(("authorization", f"Bearer {token}"),))
    assert stored_span_keys(rcv.db_path) == {(tid(1), sid(1))}

    assert post(url, make_request([make_span(tid(2), sid(1))]).SerializeToString(), PB,
                Authorization=f"bearer {token}").status_code == 200  # fmt: skip
    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", headers={"authorization": f"Bearer {token}"}, timeout=10)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("with token") as span:
        pass
    provider.shutdown()
    assert (
        span.get_span_context().trace_id.to_bytes(16, "big"),
        span.get_span_context().span_id.to_bytes(8, "big"),
    ) in stored_span_keys(rcv.db_path)


# --- CORS ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", ["http://localhost:5173", "http://127.0.0.1:8080", "http://localhost"])
def test_cors_preflight_is_answered_for_local_pages(url, origin):
    answer = requests.options(
        url + "/v1/traces",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type, authorization"},
        timeout=10,
    )  # fmt: skip
    assert answer.status_code == 204
    assert answer.headers["Access-Control-Allow-Origin"] == origin
    assert "POST" in answer.headers["Access-Control-Allow-Methods"]
    allowed = {h.strip() for h in answer.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"content-type", "authorization"} <= allowed
    request = make_request([make_span(tid(906), sid(len(origin)))])
    export = post(url, as_json(request), JSON, Origin=origin)
    assert export.status_code == 200
    assert export.headers["Access-Control-Allow-Origin"] == origin


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "http://localhost.evil.example:3000", "https://localhost:3000", "null",
               "http://127.0.0.1.nip.io:80"],
)  # fmt: skip
def test_cors_refuses_other_origins(shared, url, origin):
    answer = requests.options(
        url + "/v1/traces", headers={"Origin": origin, "Access-Control-Request-Method": "POST"}, timeout=10
    )
    assert answer.status_code == 403
    assert "Access-Control-Allow-Origin" not in answer.headers
    export = post(url, make_request([make_span(tid(907), sid(1))]).SerializeToString(), PB, Origin=origin)
    assert export.status_code == 403
    assert "Access-Control-Allow-Origin" not in export.headers
    assert (tid(907), sid(1)) not in stored_span_keys(shared.db_path)


# --- shutting down ---------------------------------------------------------------------------------------


def test_sigterm_during_http_traffic_keeps_every_acknowledged_span(start_rcv):
    rcv = start_rcv()
    url = http_url(rcv)
    acked: set[tuple[bytes, bytes]] = set()
    lock = threading.Lock()
    stop = threading.Event()
    count = [0]

    def client(worker: int) -> None:
        session = requests.Session()
        n = 0
        while not stop.is_set():
            n += 1
            trace = ((worker << 32) | n).to_bytes(16, "big")
            spans = [make_span(trace, sid(i), sid(1) if i > 1 else None) for i in range(1, 41)]
            request = make_request(spans)
            body, ctype = (request.SerializeToString(), PB) if worker % 2 else (as_json(request), JSON)
            try:
                answer = session.post(url + "/v1/traces", data=body, headers={"Content-Type": ctype}, timeout=20)
            except requests.RequestException:
                time.sleep(0.01)
                continue
            if answer.status_code == 200:
                with lock:
                    acked.update((trace, s.span_id) for s in spans)
                    count[0] += 1

    threads = [threading.Thread(target=client, args=(w,)) for w in (1, 2, 3)]
    for t in threads:
        t.start()
    try:
        assert wait_until(lambda: count[0] >= 20, timeout=30), "no traffic got through"
        code = rcv.stop(signal.SIGTERM)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert code == 0, rcv.stderr
    assert "Traceback" not in rcv.stderr
    missing = acked - stored_span_keys(rcv.db_path)
    assert not missing, f"{len(missing)} acknowledged spans lost"


def test_serve_passes_ports_and_token_to_its_receiver_child(tmp_path):
    """`tracetui serve` (UI mode) starts the receiver through ReceiverProcess: HTTP there too, token kept off argv."""
    from tracetui.ingest.receiver import ReceiverProcess
    from tracetui.model.config import ReceiverSettings

    settings = ReceiverSettings(db_path=tmp_path / "ui.db", grpc_port=0, http_port=0, token="child-secret")
    child = ReceiverProcess(settings)
    assert "child-secret" not in " ".join(child.command())
    ready = child.start()
    try:
        url = f"http://{ready.http}"
        assert ready.http != ready.grpc and ready.db == str(settings.db_path)
        body = make_request([make_span(tid(1), sid(1))]).SerializeToString()
        assert post(url, body).status_code == 401
        assert post(url, body, Authorization="Bearer child-secret").status_code == 200
        assert stored_span_keys(settings.db_path) == {(tid(1), sid(1))}
    finally:
        assert child.stop() == 0


def test_the_receiver_child_starts_one_indexer_with_the_users_content_policy(tmp_path):
    """`tracetui serve` (UI mode): the receiver child starts the full-text indexer, with --no-content / --redact."""
    import psutil

    from tracetui.ingest.receiver import ReceiverProcess
    from tracetui.model.config import ContentPolicy, ReceiverSettings

    settings = ReceiverSettings(db_path=tmp_path / "ui.db", grpc_port=0, http_port=0,
                                content=ContentPolicy(False, ("emails",)))  # fmt: skip
    child = ReceiverProcess(settings)
    ready = child.start()
    try:
        assert child.proc is not None

        def indexers() -> list[list[str]]:
            kids = psutil.Process(child.proc.pid).children(recursive=True)  # type: ignore[union-attr]
            return [p.cmdline() for p in kids if " job indexer " in " ".join(p.cmdline()) + " "]

        assert wait_until(lambda: len(indexers()) == 1, timeout=20), indexers()
        (argv,) = indexers()
        assert "--no-content" in argv and argv[argv.index("--redact") + 1] == "emails"
        assert ready.db == str(settings.db_path)
    finally:
        assert child.stop() == 0
    off = ReceiverProcess(ReceiverSettings(db_path=tmp_path / "off.db", index=False))
    assert "--no-index" in off.command()

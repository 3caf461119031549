"""The receiver under hostile and sustained load: memory bounded by what it holds, fairness, retry hints.

Integration tests run the real receiver (``serve --headless``) over loopback
with real gRPC channels, HTTP connections and the OpenTelemetry SDK's
exporters; the unit tests at the end drive :class:`Admission` directly. The
60-second flood is marked slow (``make stress``); a 12-second one runs in
``make test``.
"""

from __future__ import annotations

import json
import threading
import time

import grpc
import psutil
import pytest
import requests
from flood_clients import polite_flood
from google.rpc import error_details_pb2
from helpers import (
    READY_RE,
    channel_to,
    exporter_stub,
    ld,
    make_request,
    make_span,
    sid,
    span_with_deep_attribute,
    stored_counts,
    stored_span_keys,
    tid,
    wait_until,
)

from tracetui.ingest import admission as admission_module
from tracetui.ingest import workers as decoder_module
from tracetui.ingest.admission import Admission, OverBudget

MB = 1024 * 1024


class TreePeak(threading.Thread):
    """Peak RSS (summed) of a process and its children, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.done = threading.Event()
        self.start()

    def sample(self) -> int:
        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.peak = max(self.peak, self.sample())

    def stop(self) -> int:
        self.done.set()
        self.join(5)
        return self.peak


def small_spans_request(n_spans: int, first: int = 0, trace: int = 1):
    return make_request([make_span(tid(trace + (first + i) // 100), sid(first + i + 1), name=f"s{i % 7}")
                         for i in range(n_spans)])  # fmt: skip


# --- memory ---------------------------------------------------------------------------------------------


def test_unauthenticated_grpc_exports_are_refused_before_their_bodies_are_read(start_rcv):
    rcv = start_rcv("--token", "s3cret")
    body = bytes(make_request([make_span(tid(1), sid(1), attributes={"blob": "x" * (40 * MB)})]).SerializeToString())
    tree = TreePeak(rcv.proc.pid)
    idle = tree.sample()
    codes: list[grpc.StatusCode] = []

    def send() -> None:
        with channel_to(rcv.port) as channel:
            try:
                exporter_stub(channel)(body, timeout=60)
            except grpc.RpcError as exc:
                codes.append(exc.code())

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    grown = tree.stop() - idle
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 8
    # 8 x 40 MB read in full would be 320 MB (the old receiver read them all); unread, a few flow-control windows
    assert grown < 64 * MB, f"the receiver grew by {grown / MB:.0f} MB for refused exports"
    with channel_to(rcv.port) as channel:  # the right token still works
        small = make_request([make_span(tid(2), sid(1))]).SerializeToString()
        exporter_stub(channel)(small, timeout=30, metadata=(("authorization", "Bearer s3cret"),))
    assert stored_counts(rcv.db_path) == (1, 1)


def test_the_receiver_gives_back_the_memory_of_a_large_grpc_export(start_rcv):
    """After a 40 MB export is stored, the receiver's own RSS returns near where it was.

    grpc core receives the message as many small buffers and frees them once copied into
    one bytes object; left in glibc's heaps they kept ~87 MB resident after a 40 MB
    export (and put the 60 x 63 MB flood at ~390 MB against its 300 MB budget).
    """
    rcv = start_rcv()
    body = make_request([make_span(tid(1 + n // 10), sid(n + 1), attributes={"blob": "z" * 2000})
                         for n in range(20_000)]).SerializeToString()  # fmt: skip
    assert len(body) > 39 * MB
    receiver = psutil.Process(rcv.proc.pid)
    before = receiver.memory_info().rss
    with channel_to(rcv.port) as channel:
        exporter_stub(channel)(body, timeout=120)
    kept = receiver.memory_info().rss - before
    assert stored_counts(rcv.db_path)[0] == 20_000
    assert kept < 24 * MB, f"the receiver kept {kept / MB:.0f} MB after the export"


def test_exports_waiting_for_memory_are_not_buffered_by_grpc(start_rcv):
    """Large exports beyond the memory budget wait unread, then are told to retry; the rest are stored."""
    rcv = start_rcv()
    blob = "y" * 2000  # 8 exports of 15,000 spans of ~2 KB: 30 MB each
    bodies = [make_request([make_span(tid(1000 * i + n // 10), sid(n + 1), attributes={"blob": blob})
                            for n in range(15_000)]).SerializeToString() for i in range(8)]  # fmt: skip
    tree = TreePeak(rcv.proc.pid)
    idle = tree.sample()
    outcomes: dict[int, object] = {}

    def send(i: int) -> None:
        with channel_to(rcv.port) as channel:
            try:
                exporter_stub(channel)(bodies[i], timeout=120)
                outcomes[i] = "ok"
            except grpc.RpcError as exc:
                outcomes[i] = exc

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    grown = tree.stop() - idle
    # 240 MB were sent at once. Read together they cost ~1.1 GB (~140 MB each in the receiver process, in
    # copies: grpc's, Python's, the slices'); the receiver reads about one at a time.
    assert grown < 320 * MB, f"the receiver grew by {grown / MB:.0f} MB"
    stored = [i for i, o in outcomes.items() if o == "ok"]
    assert stored, outcomes
    for _i, outcome in outcomes.items():
        if outcome != "ok":
            assert outcome.code() == grpc.StatusCode.UNAVAILABLE, outcome
            assert retry_delay_of(outcome) >= admission_module.MIN_RETRY_S
    assert stored_counts(rcv.db_path)[0] == 15_000 * len(stored)


def retry_delay_of(error: grpc.RpcError) -> float:
    """The RetryInfo delay the receiver suggested, as the Python exporter reads it."""
    raw = dict(error.trailing_metadata() or ()).get("google.rpc.retryinfo-bin")
    assert raw is not None, "no RetryInfo"
    delay = error_details_pb2.RetryInfo.FromString(raw).retry_delay
    return delay.seconds + delay.nanos / 1e9


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_large_export_is_stored_whole_from_slices(start_rcv, workers):
    """10,000 spans in one export are decoded a slice at a time; every span is stored, and bad ids still partially rejected."""
    rcv = start_rcv("--decode-workers", workers)
    request = small_spans_request(10_000)
    request.resource_spans[0].scope_spans[0].spans[9_500].span_id = b"\x01\x02"  # invalid: rejected alone
    with channel_to(rcv.port) as channel:
        answer = exporter_stub(channel)(request.SerializeToString(), timeout=120)
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    assert ExportTraceServiceResponse.FromString(answer).partial_success.rejected_spans == 1
    assert stored_counts(rcv.db_path) == (9_999, 100)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_slice_that_does_not_decode_is_rejected_alone(start_rcv, workers):
    """9,000 spans go in slices of 4,000: invalid UTF-8 in the third rejects its 1,000 spans, the rest are stored."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    rcv = start_rcv("--decode-workers", workers)
    request = small_spans_request(9_000)
    request.resource_spans[0].scope_spans[0].spans[8_000].name = "NAME-TO-BREAK"
    data = request.SerializeToString().replace(b"NAME-TO-BREAK", b"\xff\xfe" + b"x" * 11)  # invalid UTF-8
    with channel_to(rcv.port) as channel:
        answer = ExportTraceServiceResponse.FromString(exporter_stub(channel)(data, timeout=120))
    assert answer.partial_success.rejected_spans == 1_000
    assert "1,000 spans of one slice" in answer.partial_success.error_message
    assert stored_counts(rcv.db_path)[0] == 8_000


def export_over(rcv, transport: str, data: bytes):
    """Send serialized trace request bytes over gRPC or OTLP/HTTP protobuf; the ExportTraceServiceResponse."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    if transport == "grpc":
        with channel_to(rcv.port) as channel:
            return ExportTraceServiceResponse.FromString(exporter_stub(channel)(data, timeout=120))
    answer = requests.post(f"http://{rcv.http}/v1/traces", data=data,
                           headers={"Content-Type": "application/x-protobuf"}, timeout=120)  # fmt: skip
    assert answer.status_code == 200, answer.text
    return ExportTraceServiceResponse.FromString(answer.content)


def one_scope_request(spans: list[bytes]) -> bytes:
    """ExportTraceServiceRequest bytes holding ``spans`` (serialized Span messages) under one resource and scope."""
    resource = make_request([]).resource_spans[0].resource.SerializeToString()
    return ld(1, ld(1, resource) + ld(2, b"".join(ld(2, span) for span in spans)))


@pytest.mark.parametrize("workers", ["0", "2"])
@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_a_sliced_export_with_a_too_deep_span_and_an_undecodable_slice_counts_each_rejection_once(
    start_rcv, transport, workers
):
    """Two ways of rejecting part of an export meet: slicing (15b) and span-by-span parsing of a too-deep request (15a).

    10,000 spans of ~1 KB (over the 8 MB past which the receiver itself cuts the export) go in slices of
    4,000: one span of the first slice nests kvlists past protobuf's limit (refused alone), and invalid
    UTF-8 in the third slice refuses its 2,000 spans. Exactly 2,001 are reported rejected; 7,999 are stored.
    """
    rcv = start_rcv("--decode-workers", workers)
    pad = {"pad": "p" * 1_000}
    spans = [make_span(tid(1 + i // 100), sid(i + 1), name="s", attributes=pad).SerializeToString()
             for i in range(10_000)]  # fmt: skip
    spans[100] = span_with_deep_attribute(tid(2), sid(101), "too deep", 40)
    spans[8_000] = make_span(tid(81), sid(8_001), name="NAME-TO-BREAK", attributes=pad).SerializeToString()
    data = one_scope_request(spans).replace(b"NAME-TO-BREAK", b"\xff\xfe" + b"x" * 11)  # invalid UTF-8
    assert len(data) > decoder_module.SLICE_IN_RECEIVER_BYTES
    answer = export_over(rcv, transport, data)
    assert answer.partial_success.rejected_spans == 2_001, answer.partial_success.error_message
    assert "nested deeper" in answer.partial_success.error_message
    assert stored_counts(rcv.db_path)[0] == 7_999
    stored = stored_span_keys(rcv.db_path, [tid(2), tid(80), tid(81)])
    assert (tid(2), sid(101)) not in stored and (tid(2), sid(102)) in stored  # the deep span alone, its neighbour kept
    assert (tid(80), sid(8_000)) in stored and (tid(81), sid(8_001)) not in stored  # the slice boundary is exact


def test_a_span_nested_past_protobufs_limit_is_refused_alone_over_http(start_rcv):
    """The same partial success over OTLP/HTTP protobuf as over gRPC (tests/ingest/test_hostile_input.py)."""
    rcv = start_rcv()
    data = one_scope_request([make_span(tid(3), sid(1), name="bystander").SerializeToString(),
                              span_with_deep_attribute(tid(3), sid(2), "too deep", 40)])  # fmt: skip
    answer = export_over(rcv, "http", data)
    assert answer.partial_success.rejected_spans == 1
    assert "nested deeper" in answer.partial_success.error_message
    assert stored_span_keys(rcv.db_path, [tid(3)]) == {(tid(3), sid(1))}


def test_a_span_with_invalid_utf8_next_to_a_too_deep_one_is_refused_for_its_own_reason(start_rcv):
    """Once a request is taken apart span by span (one span too deep), each refused span says why."""
    rcv = start_rcv()
    broken = make_span(tid(4), sid(2), name="NAME-TO-BREAK").SerializeToString()
    # protobuf meets the deep span first, gives up on the request, and the receiver parses span by span
    data = one_scope_request([make_span(tid(4), sid(1), name="bystander").SerializeToString(),
                              span_with_deep_attribute(tid(4), sid(3), "too deep", 40), broken])  # fmt: skip
    answer = export_over(rcv, "grpc", data.replace(b"NAME-TO-BREAK", b"\xff\xfe" + b"x" * 11))
    message = answer.partial_success.error_message
    assert answer.partial_success.rejected_spans == 2, message
    assert "nested deeper" in message and "UTF-8" in message
    assert stored_span_keys(rcv.db_path, [tid(4)]) == {(tid(4), sid(1))}


def test_a_small_export_that_does_not_decode_is_still_refused_whole(start_rcv):
    rcv = start_rcv()
    request = small_spans_request(50)
    request.resource_spans[0].scope_spans[0].spans[10].name = "NAME-TO-BREAK"
    data = request.SerializeToString().replace(b"NAME-TO-BREAK", b"\xff\xfe" + b"x" * 11)
    with channel_to(rcv.port) as channel, pytest.raises(grpc.RpcError) as raised:
        exporter_stub(channel)(data, timeout=60)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert stored_counts(rcv.db_path) == (0, 0)


def json_spans_body(n: int, first: int) -> bytes:
    spans = [{"traceId": f"{0xC0DE0000 + (first + i) // 50:032x}", "spanId": f"{0xBEEF0000 + first + i:016x}",
              "name": "j", "kind": 1, "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000000001000",
              "attributes": [{"key": "k", "value": {"stringValue": "v" * 20}}]} for i in range(n)]  # fmt: skip
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()


def test_concurrent_json_bodies_are_admitted_by_their_parsed_size(start_rcv):
    rcv = start_rcv()
    url = f"http://{rcv.http}/v1/traces"
    bodies = [json_spans_body(12_000, i * 12_000) for i in range(6)]  # ~3 MB each, ~30 MB each once parsed
    tree = TreePeak(rcv.proc.pid)
    idle = tree.sample()
    answers: dict[int, requests.Response] = {}
    threads = [threading.Thread(target=lambda i=i: answers.__setitem__(
        i, requests.post(url, data=bodies[i], headers={"Content-Type": "application/json"}, timeout=120)))
        for i in range(6)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    grown = tree.stop() - idle
    assert grown < 150 * MB, f"the receiver grew by {grown / MB:.0f} MB"  # all six parsed at once: ~200 MB
    for i, answer in answers.items():
        assert answer.status_code in (200, 429), answer.status_code
        if answer.status_code == 429:
            assert int(answer.headers["Retry-After"]) >= 1
            assert requests.post(url, data=bodies[i], headers={"Content-Type": "application/json"}, timeout=120).ok
    assert stored_counts(rcv.db_path)[0] == 72_000


# --- fairness ---------------------------------------------------------------------------------------------


def flood_with_polite_apps(rcv, clients: int, seconds: float) -> None:
    result = polite_flood(f"127.0.0.1:{rcv.port}", rcv.http, rcv.db_path, clients, seconds)
    for name, app in result["polite"].items():
        assert app["created"] > 0
        assert app["lost"] == 0, f"the polite {name} app lost spans: {result}"
    assert result["flood_acked_requests"], "the flood got nothing through"
    assert result["flood_acked_missing_spans"] == 0


def test_polite_sdk_exporters_lose_nothing_during_a_short_flood(start_rcv):
    flood_with_polite_apps(start_rcv(), clients=16, seconds=12)


@pytest.mark.slow
def test_polite_sdk_exporters_lose_nothing_during_a_minute_of_flood(start_rcv):
    flood_with_polite_apps(start_rcv(), clients=32, seconds=60)


# --- Admission itself ------------------------------------------------------------------------------------------


def test_a_stalled_grpc_export_is_cancelled_and_a_new_sdk_exporter_gets_through(start_rcv):
    """A stream that never sends its message held its export's pass until the client gave up.

    It held the single pass for an export of unknown size, so the first export of every new
    connection (an SDK exporter's, also after it reconnects on UNAVAILABLE) waited 3 s and was
    refused, again and again until its 10 s deadline: the batch was dropped. Now the stalled
    export is cancelled after the body timeout and the SDK's export goes through.
    """
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExportResult
    from slow_clients import StalledGrpcExport

    rcv = start_rcv("--grpc-body-timeout", "2")
    stalled = StalledGrpcExport(rcv.port)
    try:
        time.sleep(0.5)  # the stalled export holds its pass
        tracer = TracerProvider(resource=Resource.create({"service.name": "polite"})).get_tracer("t")
        span = tracer.start_span("after-the-stall")
        span.end()
        exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{rcv.port}", insecure=True)  # default 10 s deadline
        try:
            assert exporter.export([span]) is SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        assert stalled.outcome() == grpc.StatusCode.CANCELLED
    finally:
        stalled.close()
    assert stored_counts(rcv.db_path)[0] == 1


def test_the_lightest_connection_goes_first():
    adm = Admission(limit=100, max_wait_s=5)
    heavy = adm.enter("heavy", 100)
    order: list[str] = []

    def wait(peer: str, cost: int) -> None:
        p = adm.enter(peer, cost)
        order.append(peer)
        p.release()

    adm.enter("heavy", 0).release()  # "heavy" has had 100 bytes lately, "quiet" none
    t1 = threading.Thread(target=wait, args=("heavy", 60))
    t1.start()
    assert wait_until(lambda: len(adm._line) == 1, timeout=5)
    t2 = threading.Thread(target=wait, args=("quiet", 60))
    t2.start()
    assert wait_until(lambda: len(adm._line) == 2, timeout=5)
    heavy.release()
    t1.join(5)
    t2.join(5)
    assert order == ["quiet", "heavy"]


def test_a_refusal_suggests_a_delay_that_grows_with_the_backlog():
    adm = Admission(limit=100, max_wait_s=0.05)
    adm.enter("a", 1_000).release()  # 1,000 bytes drained in the last half-life: ~100 bytes/s
    held = adm.enter("a", 100)
    with pytest.raises(OverBudget) as first:
        adm.enter("b", 50)
    held.resize(400)  # a bigger backlog, at the same pace
    with pytest.raises(OverBudget) as later:
        adm.enter("c", 50)
    assert admission_module.MIN_RETRY_S <= first.value.retry_after_s < later.value.retry_after_s
    assert later.value.retry_after_s == pytest.approx(4.0, rel=0.1)
    held.resize(100_000)
    with pytest.raises(OverBudget) as much_later:
        adm.enter("d", 50)
    assert much_later.value.retry_after_s == admission_module.MAX_RETRY_S  # short enough for the SDK's 10 s deadline
    held.release()
    assert adm.used == 0


def test_only_one_export_of_unknown_size_is_read_at_a_time():
    adm = Admission(limit=1000, max_wait_s=0.1)
    first = adm.enter("a", 10, unknown_size=True)
    with pytest.raises(OverBudget):
        adm.enter("b", 10, unknown_size=True)
    assert adm.enter("c", 10).held == 10  # one of known size still goes
    first.resize(30)
    second = adm.enter("b", 10, unknown_size=True)
    assert adm.used == 30 + 10 + 10
    second.release()
    first.release()
    first.release()  # idempotent
    assert adm.used == 10


# --- slow connections ---------------------------------------------------------------------------------------


def test_slow_connections_at_the_open_files_limit_are_closed_and_exporters_get_through(tmp_path):
    """1,100 slowloris connections (headers or body a byte a second) against `ulimit -n 1024`."""
    from helpers import spawn_receiver
    from slow_clients import Slowloris, limit_open_files

    args = [
        "--db",
        str(tmp_path / "x.db"),
        "--grpc-port",
        "0",
        "--http-header-timeout",
        "2",
        "--http-body-timeout",
        "4",
    ]
    proc, lines, ready, _done = spawn_receiver(args, cwd=tmp_path, preexec_fn=limit_open_files(1024))
    try:
        assert ready.wait(30), "\n".join(lines)
        host, port = next(m for m in map(READY_RE.match, lines) if m)["http"].rsplit(":", 1)
        slow = Slowloris(host, int(port), 1_100)
        try:
            assert slow.connected > 1_000
            body = make_request([make_span(tid(1), sid(1))]).SerializeToString()

            def export_ok() -> bool:
                try:
                    return requests.post(f"http://{host}:{port}/v1/traces", data=body, timeout=1,
                                         headers={"Content-Type": "application/x-protobuf"}).ok  # fmt: skip
                except requests.RequestException:
                    return False

            # the slow ones are cut after 2 s (headers) or 4 s (body), freeing descriptors for exporters
            assert wait_until(export_ok, timeout=20, interval=0.2)
            assert wait_until(lambda: slow.open() == 0, timeout=20, interval=0.5), f"{slow.open()} slow ones still open"
        finally:
            slow.close()
        out_of_descriptors = [line for line in lines if "cannot accept connections" in line]
        assert len(out_of_descriptors) <= 3, out_of_descriptors  # one line per 10 s, not a traceback per accept
        assert not [line for line in lines if line.startswith("Traceback")], "\n".join(lines[:40])
        assert sum(len(line) for line in lines) < 4096
    finally:
        proc.terminate()
        proc.wait(30)


# --- JSON traces, a span at a time ------------------------------------------------------------------------------


def test_lean_json_parse_matches_the_whole_document_parse_on_every_fixture():
    from helpers import read_records, trace_fixture_files

    from tracetui.otlp.decode import DecodeError, parse_trace_request
    from tracetui.otlp.otlp_json import message_to_json, parse_request, parse_traces_lean

    for path in trace_fixture_files():
        for record in read_records(path):
            body = message_to_json(parse_trace_request(record)).encode()
            lean = parse_traces_lean(body)
            assert parse_trace_request(lean) == parse_request(body, "traces"), path
    broken = b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz","spanId":"00000000000000aa","name":"x"}]}]}]}'
    with pytest.raises(DecodeError, match=r"resourceSpans\[0\]\.scopeSpans\[0\]\.spans\[0\]\.traceId: not hex"):
        parse_traces_lean(broken)


def test_a_body_slower_than_the_body_timeout_gets_408_and_the_connection_closes(start_rcv):
    import socket

    rcv = start_rcv("--http-body-timeout", "1")
    host, port = rcv.http.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     b"Content-Length: 1000\r\n\r\n" + b"\x00" * 10)  # fmt: skip
        answer = b""
        while chunk := sock.recv(65536):  # the server answers, then closes
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"--http-body-timeout" in answer


def test_a_connection_that_never_finishes_its_headers_is_closed(start_rcv):
    import socket

    rcv = start_rcv("--http-header-timeout", "1")
    host, port = rcv.http.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")
        assert sock.recv(65536) == b""  # closed by the server, not answered
    with socket.create_connection((host, int(port)), timeout=20) as idle:  # an idle keep-alive connection too
        assert idle.recv(65536) == b""
    assert requests.post(f"http://{host}:{port}/v1/traces", data=make_request([make_span(tid(5), sid(5))]).SerializeToString(),
                         headers={"Content-Type": "application/x-protobuf"}, timeout=10).ok  # fmt: skip

"""The receiver for real: `tracetui serve --headless` as a process, real gRPC clients, the real SDK exporter."""

from __future__ import annotations

import signal
import socket
import sqlite3
import stat
import sys
import threading
import time

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from helpers import (
    channel_to,
    expected_span_keys,
    expected_traces,
    exporter_stub,
    integrity,
    make_request,
    make_span,
    read_records,
    receiver_env,
    requests_of,
    sid,
    spawn_receiver,
    start_receiver,
    stored_counts,
    stored_span_keys,
    tid,
    trace_fixture_files,
    wait_until,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from tracetui.store.reader import SqliteReader


def export(port: int, payload: bytes, **kwargs) -> ExportTraceServiceResponse:
    with channel_to(port) as channel:
        return ExportTraceServiceResponse.FromString(exporter_stub(channel)(payload, timeout=20, **kwargs))


def export_error(port: int, payload: bytes, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        export(port, payload, **kwargs)
    return info.value


# --- starting --------------------------------------------------------------------------


def test_ready_line_names_the_chosen_port_and_the_database(receiver, tmp_path):
    assert receiver.host == "127.0.0.1"
    assert receiver.port > 0
    assert receiver.db_path == (tmp_path / "x.db").resolve()
    assert receiver.db_path.exists()  # ready means the database is open too
    ready = [line for line in receiver.lines if line.startswith("tracetui: listening")]
    assert len(ready) == 1
    assert ready[0].startswith(f"tracetui: listening grpc=127.0.0.1:{receiver.port} ")
    assert ready[0].endswith(f" db={receiver.db_path}")
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=5):
        pass  # something really listens there


def test_database_is_created_owner_only_in_wal_mode(shared_receiver):
    export(shared_receiver.port, make_request([make_span(tid(101), sid(1))]).SerializeToString())
    db = shared_receiver.db_path
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.with_name(db.name + "-wal").stat().st_mode) == 0o600
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1
    finally:
        conn.close()


def test_database_path_from_environment(tmp_path, start_rcv):
    target = tmp_path / "sub dir" / "from env.db"  # spaces survive into the ready line
    rcv = start_rcv(db=None, env=receiver_env({"TRACETUI_DB": str(target)}, drop_db_env=False))
    assert rcv.db_path == target.resolve()
    assert target.exists()


def test_db_option_beats_environment(tmp_path, start_rcv):
    rcv = start_rcv(db="flag.db", env=receiver_env({"TRACETUI_DB": str(tmp_path / "env.db")}, drop_db_env=False))
    assert rcv.db_path == (tmp_path / "flag.db").resolve()
    assert not (tmp_path / "env.db").exists()


@pytest.mark.parametrize("kind", ["parent-is-a-file", "not-a-database"])
def test_unusable_database_path_is_a_clear_error(tmp_path, kind):
    if kind == "parent-is-a-file":
        (tmp_path / "plain.txt").write_text("x")
        db = tmp_path / "plain.txt" / "x.db"
    else:
        db = tmp_path / "notes.db"
        db.write_bytes(b"these are my notes, not a database" * 100)
    proc, lines, _ready, done = spawn_receiver(["--db", str(db), "--grpc-port", "0"], cwd=tmp_path)
    code = proc.wait(30)
    done.wait(5)
    assert code != 0
    assert not any(line.startswith("tracetui: listening") for line in lines)
    assert not list(tmp_path.glob("second.db*")), "a failed start leaves no database behind"
    assert any(line.startswith("tracetui: cannot open database") and str(db) in line for line in lines), lines
    assert "Traceback" not in "\n".join(lines)
    if kind == "not-a-database":
        assert db.read_bytes().startswith(b"these are my notes")  # left alone


def test_defaults_are_loopback_port_4317(tmp_path):
    probe = socket.socket()
    try:
        probe.bind(("127.0.0.1", 4317))
    except OSError:
        pytest.skip("port 4317 is in use on this machine")
    finally:
        probe.close()
    try:
        rcv = start_receiver(tmp_path / "d.db", grpc_port=None, cwd=tmp_path)
    except RuntimeError as exc:
        if "cannot listen" in str(exc) or "already in use" in str(exc):
            pytest.skip("port 4317 was taken meanwhile")
        raise
    try:
        assert (rcv.host, rcv.port) == ("127.0.0.1", 4317)
        assert not any("warning" in line for line in rcv.lines)
    finally:
        assert rcv.stop() == 0


def test_non_loopback_host_prints_a_warning(start_rcv):
    rcv = start_rcv("--host", "0.0.0.0")
    assert rcv.host == "0.0.0.0"
    warnings = [line for line in rcv.lines if "warning" in line]
    assert len(warnings) == 1
    assert "0.0.0.0" in warnings[0]
    export(rcv.port, make_request([make_span(tid(1), sid(1))]).SerializeToString())
    assert len(stored_span_keys(rcv.db_path)) == 1


def test_second_receiver_on_the_same_port_fails_clearly(shared_receiver, tmp_path):
    receiver = shared_receiver
    proc, lines, _ready, done = spawn_receiver(
        ["--db", str(tmp_path / "second.db"), "--grpc-port", str(receiver.port)], cwd=tmp_path
    )
    try:
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    done.wait(5)
    assert code != 0
    assert not any(line.startswith("tracetui: listening") for line in lines)
    assert not list(tmp_path.glob("second.db*")), "a failed start leaves no database behind"
    ours = [line for line in lines if line.startswith("tracetui:")]
    # One message: the port, who holds it (our own receiver process, found through /proc), the two ways forward;
    # nothing from grpc's C core (its "E... add_port.cc ... Failed to add port" line).
    assert len(ours) == 1, lines
    assert f"port {receiver.port} (OTLP/gRPC) is already in use on 127.0.0.1" in ours[0], lines
    if sys.platform == "linux":
        assert f"by pid {receiver.proc.pid} (" in ours[0] and "serve --headless" in ours[0], lines
    assert any("serve --grpc-port 0 --http-port 0" in line for line in lines), lines
    assert any(line.strip().startswith("or watch the running one:") and " view" in line for line in lines), lines
    assert not any("add_port" in line or "Failed to add port" in line for line in lines), lines
    # the first one is untouched and still owns the port
    export(receiver.port, make_request([make_span(tid(102), sid(1))]).SerializeToString())
    assert stored_span_keys(receiver.db_path, [tid(102)]) == {(tid(102), sid(1))}


# --- the real OpenTelemetry SDK exporter ---------------------------------------------------------


class Recording(SpanExporter):
    """Wraps the real exporter to remember what the receiver answered."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.results: list[SpanExportResult] = []

    def export(self, spans):
        result = self.inner.export(spans)
        self.results.append(result)
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


@pytest.mark.parametrize("compression", [None, grpc.Compression.Gzip], ids=["plain", "gzip"])
def test_sdk_exporter_trace_is_stored_as_sent(shared_receiver, compression):
    receiver = shared_receiver
    exporter = Recording(
        OTLPSpanExporter(endpoint=f"127.0.0.1:{receiver.port}", insecure=True, compression=compression, timeout=10)
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "sdk-agent", "deployment.environment": "test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.sdk", "9.9")

    with tracer.start_as_current_span("agent run", attributes={"session.id": "s-1", "turn": 3}) as root:
        with tracer.start_as_current_span(
            "chat gpt-4o",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.request.temperature": 0.2,
                "gen_ai.request.stream": True,
                "gen_ai.response.finish_reasons": ["stop", "length"],
            },
        ) as failed:
            failed.add_event("gen_ai.content.prompt", {"gen_ai.prompt": "hello [bold]x[/]"})
            failed.set_status(Status(StatusCode.ERROR, "timed out"))
        with tracer.start_as_current_span(
            "chat claude-sonnet-4", links=[Link(failed.get_span_context(), {"link.kind": "fallback"})]
        ) as fallback:
            fallback.set_attribute("gen_ai.usage.output_tokens", 42)
            with tracer.start_as_current_span("tool lookup"):
                pass
    assert provider.force_flush(10_000)
    provider.shutdown()

    assert exporter.results and all(r is SpanExportResult.SUCCESS for r in exporter.results)
    # Acknowledged means committed: read at once, no waiting.
    trace_id = root.get_span_context().trace_id.to_bytes(16, "big")
    ids = {
        name: span.get_span_context().span_id.to_bytes(8, "big")
        for name, span in (("root", root), ("failed", failed), ("fallback", fallback))
    }
    reader = SqliteReader(receiver.db_path)
    try:
        row = reader.trace(trace_id)
        assert row is not None and row.has_root
        assert (row.name, row.service, row.span_count, row.error_count) == ("agent run", "sdk-agent", 4, 1)

        spans = {s.name: s for s in reader.spans(trace_id)}
        assert set(spans) == {"agent run", "chat gpt-4o", "chat claude-sonnet-4", "tool lookup"}
        assert spans["agent run"].parent_span_id is None
        assert spans["chat gpt-4o"].parent_span_id == ids["root"]
        assert spans["chat claude-sonnet-4"].parent_span_id == ids["root"]
        assert spans["tool lookup"].parent_span_id == ids["fallback"]
        assert spans["chat gpt-4o"].is_error and spans["chat gpt-4o"].status_message == "timed out"

        detail = reader.span_detail(trace_id, ids["failed"])
        assert detail.attributes == {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.request.temperature": 0.2,
            "gen_ai.request.stream": True,
            "gen_ai.response.finish_reasons": ["stop", "length"],
        }
        assert [(e["name"], e["attributes"]) for e in detail.events] == [
            ("gen_ai.content.prompt", {"gen_ai.prompt": "hello [bold]x[/]"})
        ]
        assert detail.resource["service.name"] == "sdk-agent"
        assert detail.resource["deployment.environment"] == "test"
        assert detail.resource["telemetry.sdk.language"] == "python"
        assert (detail.scope["name"], detail.scope["version"]) == ("tests.sdk", "9.9")

        link_detail = reader.span_detail(trace_id, ids["fallback"])
        assert link_detail.links == [
            {"trace_id": trace_id.hex(), "span_id": ids["failed"].hex(), "attributes": {"link.kind": "fallback"},
             "trace_state": ""}
        ]  # fmt: skip
        assert link_detail.attributes == {"gen_ai.usage.output_tokens": 42}
        assert reader.span_detail(trace_id, ids["root"]).attributes == {"session.id": "s-1", "turn": 3}
    finally:
        reader.close()


# --- every captured fixture ---------------------------------------------------------------------


@pytest.mark.parametrize("path", trace_fixture_files(), ids=lambda p: p.stem)
def test_fixture_replay_stores_every_span_and_trace(shared_receiver, path):
    receiver = shared_receiver
    requests = requests_of(path)
    expected_keys = expected_span_keys(requests)
    expected = expected_traces(requests)
    with channel_to(receiver.port) as channel:
        stub = exporter_stub(channel)
        for record in read_records(path):
            response = ExportTraceServiceResponse.FromString(stub(record, timeout=20))
            assert response.partial_success.rejected_spans == 0, response.partial_success.error_message
            # answered only after commit: this request's spans are readable right now
            assert expected_span_keys([ExportTraceServiceRequest.FromString(record)]) <= stored_span_keys(
                receiver.db_path
            )

    # (The fixtures' trace ids are their own: other tests on this receiver never use them.)
    assert stored_span_keys(receiver.db_path, expected) == expected_keys
    reader = SqliteReader(receiver.db_path)
    try:
        for trace_id, exp in expected.items():
            row = reader.trace(trace_id)
            assert row.span_count == exp.span_count
            assert row.error_count == exp.errors
            assert (row.start_ns, row.end_ns) == (exp.start_ns, exp.end_ns)
            root_service, root = exp.root
            assert row.has_root and row.name == root.name and row.service == root_service
    finally:
        reader.close()


def test_decode_workers_and_decoding_in_place_store_the_same(start_rcv):
    import psutil

    in_workers = start_rcv(db="workers.db")
    in_place = start_rcv("--decode-workers", "0", db="in-place.db")

    def decoders(rcv) -> list:
        """serve's children but its jobs (tracetui job indexer / rollup), which decode nothing it receives."""
        return [c for c in psutil.Process(rcv.proc.pid).children() if "job" not in c.cmdline()]

    assert len(decoders(in_workers)) >= 1
    assert not decoders(in_place)
    for rcv in (in_workers, in_place):
        for path in trace_fixture_files():
            for record in read_records(path):
                export(rcv.port, record)

    def dump(db):
        conn = sqlite3.connect(db)
        try:
            spans = sorted(tuple(r)[1:] for r in conn.execute("SELECT * FROM spans"))  # minus the row id
            # minus the row id and the wall-clock time of the last change
            columns = [c[1] for c in conn.execute("PRAGMA table_info(traces)") if c[1] not in ("id", "updated_ns")]
            traces = sorted(conn.execute(f"SELECT {', '.join(columns)} FROM traces"))
            return spans, traces
        finally:
            conn.close()

    workers_spans, workers_traces = dump(in_workers.db_path)
    place_spans, place_traces = dump(in_place.db_path)
    assert len(workers_spans) >= 40 and len(workers_traces) >= 5
    assert workers_spans == place_spans
    assert workers_traces == place_traces


def test_replaying_every_fixture_twice_stores_each_span_once(receiver):
    files = trace_fixture_files()
    requests = [q for path in files for q in requests_of(path)]
    expected = expected_traces(requests)
    n_spans = len(expected_span_keys(requests))
    records = [r for path in files for r in read_records(path)]
    for _ in range(2):
        for record in records:
            export(receiver.port, record)
    # and a burst of concurrent resends of one request (they may share a commit)
    threads = [threading.Thread(target=export, args=(receiver.port, records[0])) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert stored_counts(receiver.db_path) == (n_spans, len(expected))
    reader = SqliteReader(receiver.db_path)
    try:
        for trace_id, exp in expected.items():
            row = reader.trace(trace_id)
            assert (row.span_count, row.error_count) == (exp.span_count, exp.errors)
        counters = reader.counters()
        assert (counters.span_count, counters.trace_count) == (n_spans, len(expected))
    finally:
        reader.close()


# --- bad and oversized requests ------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage, n", [(b"\xff\xff\xff\xff", 103), (b'{"resourceSpans": []}', 104)], ids=["bytes", "json"]
)
def test_undecodable_request_is_invalid_argument_and_server_keeps_serving(shared_receiver, garbage, n):
    receiver = shared_receiver
    err = export_error(receiver.port, garbage)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid ExportTraceServiceRequest" in err.details()
    assert "Traceback" not in err.details()

    response = export(receiver.port, make_request([make_span(tid(n), sid(1))]).SerializeToString())
    assert response.partial_success.rejected_spans == 0
    assert stored_span_keys(receiver.db_path, [tid(n)]) == {(tid(n), sid(1))}


def test_spans_with_bad_ids_are_rejected_partially(shared_receiver):
    receiver = shared_receiver
    bad = make_span(bytes(16), sid(2), name="zero trace id")
    request = make_request([make_span(tid(105), sid(1)), bad, make_span(tid(105), sid(3), sid(1))])
    response = export(receiver.port, request.SerializeToString())
    assert response.partial_success.rejected_spans == 1
    assert "trace_id" in response.partial_success.error_message
    assert stored_span_keys(receiver.db_path, [tid(105), bytes(16)]) == {(tid(105), sid(1)), (tid(105), sid(3))}


def test_absurd_numbers_are_stored_not_refused(shared_receiver):
    receiver = shared_receiver
    hostile = make_span(
        tid(106), sid(2), sid(1), name="hostile",
        attributes={"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 2**63 - 1,
                    "gen_ai.response.time_to_first_chunk": 1e300},
    )  # fmt: skip
    twin = make_span(tid(106), sid(3), sid(1), name="twin", attributes={"gen_ai.usage.input_tokens": 2**63 - 1})
    request = make_request([make_span(tid(106), sid(1), name="root"), hostile, twin]).SerializeToString()
    for _ in range(2):  # first write and the resend path
        response = export(receiver.port, request)
        assert response.partial_success.rejected_spans == 0
    assert len(stored_span_keys(receiver.db_path, [tid(106)])) == 3
    reader = SqliteReader(receiver.db_path)
    try:
        assert reader.trace(tid(106)).span_count == 3
    finally:
        reader.close()
    assert receiver.alive()


def big_request(n_bytes: int, span: int = 1, trace: int = 1) -> bytes:
    return make_request([make_span(tid(trace), sid(span), attributes={"blob": "x" * n_bytes})]).SerializeToString()


def test_request_over_the_configured_limit_is_resource_exhausted(start_rcv):
    rcv = start_rcv("--max-request-mb", "1")
    err = export_error(rcv.port, big_request(2_000_000))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # compression does not get around the limit: it applies to the decompressed size
    err = export_error(rcv.port, big_request(2_000_000, span=2), compression=grpc.Compression.Gzip)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stored_span_keys(rcv.db_path) == set()
    # just under the limit is fine, and the server kept serving
    export(rcv.port, big_request(900_000, span=3))
    assert stored_span_keys(rcv.db_path) == {(tid(1), sid(3))}


def test_default_limit_accepts_requests_larger_than_grpcs_4mb_default(shared_receiver):
    export(shared_receiver.port, big_request(10_000_000, trace=107))
    assert stored_span_keys(shared_receiver.db_path, [tid(107)]) == {(tid(107), sid(1))}


def retry_delay(err: grpc.RpcError) -> float | None:
    """The RetryInfo delay an exporter would read from the trailers, in seconds."""
    for key, value in err.trailing_metadata() or ():
        if key == "google.rpc.retryinfo-bin":
            info = error_details_pb2.RetryInfo.FromString(value)
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


@pytest.mark.slow
def test_busy_or_locked_database_answers_retryable_and_loses_nothing(start_rcv):
    """Back-pressure end to end: a blocked disk makes exports retryable, never lost or duplicated."""
    rcv = start_rcv("--max-pending-spans", "100")
    first = make_request([make_span(tid(1), sid(i)) for i in range(1, 61)]).SerializeToString()
    second = make_request([make_span(tid(2), sid(i)) for i in range(1, 61)]).SerializeToString()
    outcomes: dict[str, object] = {}

    def send(name: str, payload: bytes) -> None:
        try:
            outcomes[name] = export(rcv.port, payload)
        except grpc.RpcError as exc:
            outcomes[name] = exc

    blocker = sqlite3.connect(rcv.db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        threads = [threading.Thread(target=send, args=(n, p)) for n, p in (("first", first), ("second", second))]
        for t in threads:
            t.start()
        # 120 spans would wait for a 100-span queue: one request is turned away at once
        assert wait_until(lambda: len(outcomes) == 1, timeout=20)
        (busy,) = outcomes.values()
        assert isinstance(busy, grpc.RpcError)
        assert busy.code() == grpc.StatusCode.UNAVAILABLE
        assert "busy" in busy.details()
        assert retry_delay(busy) and retry_delay(busy) > 0
        # the other one waits for the disk; when the lock outlives the busy timeout it is told to retry too
        for t in threads:
            t.join(30)
        locked = next(v for v in outcomes.values() if v is not busy)
        assert isinstance(locked, grpc.RpcError)
        assert locked.code() == grpc.StatusCode.UNAVAILABLE
        assert "locked" in locked.details()
        assert retry_delay(locked) and retry_delay(locked) > 0
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    assert stored_span_keys(rcv.db_path) == set()
    export(rcv.port, first)  # the exporters' retries
    export(rcv.port, second)
    assert stored_counts(rcv.db_path) == (120, 2)
    assert rcv.alive()


# --- shutting down ----------------------------------------------------------------------


def test_a_second_interrupt_stops_waiting_for_exports_in_flight(start_rcv):
    rcv = start_rcv()
    export(rcv.port, make_request([make_span(tid(1), sid(1))]).SerializeToString())  # acknowledged
    answers: list[object] = []

    def send() -> None:
        try:
            answers.append(export(rcv.port, make_request([make_span(tid(2), sid(1))]).SerializeToString()))
        except grpc.RpcError as exc:
            answers.append(exc)

    blocker = sqlite3.connect(rcv.db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the export below waits for the disk
    try:
        sender = threading.Thread(target=send)
        sender.start()
        # The export reaches the receiver and waits there for the disk (up to the 5 s busy timeout);
        # a second is time enough to get there on a loaded machine (the line below says if it did).
        time.sleep(1.0)
        assert not answers
        rcv.proc.send_signal(signal.SIGINT)  # first: finish what is in flight...
        assert wait_until(lambda: any("waiting for 1 export in flight" in line for line in rcv.lines), timeout=3), (
            rcv.lines
        )
        assert rcv.proc.poll() is None, "the first interrupt should wait for the export in flight"
        rcv.proc.send_signal(signal.SIGINT)  # ...second: do not
        code = rcv.proc.wait(30)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    sender.join(30)
    assert code == 128 + signal.SIGINT  # the forced path, not the normal stop (0)
    assert any("SIGINT again" in line for line in rcv.lines), rcv.lines
    assert isinstance(answers[0], grpc.RpcError)  # the export in flight was not acknowledged
    assert stored_span_keys(rcv.db_path) == {(tid(1), sid(1))}  # what was acknowledged is there
    assert integrity(rcv.db_path) == "ok"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_traffic_keeps_every_acknowledged_span(start_rcv, sig):
    rcv = start_rcv()
    acked: set[tuple[bytes, bytes]] = set()
    lock = threading.Lock()
    stop = threading.Event()
    requests_acked = [0]

    def client(worker: int) -> None:
        with channel_to(rcv.port) as channel:
            stub = exporter_stub(channel)
            n = 0
            while not stop.is_set():
                n += 1
                trace = ((worker << 32) | n).to_bytes(16, "big")
                spans = [make_span(trace, sid(i), sid(1) if i > 1 else None, name=f"s{i}") for i in range(1, 51)]
                try:
                    stub(make_request(spans).SerializeToString(), timeout=20)
                except grpc.RpcError:
                    time.sleep(0.01)  # refused or cut off: not acknowledged, so not counted
                    continue
                with lock:
                    acked.update((trace, s.span_id) for s in spans)
                    requests_acked[0] += 1

    threads = [threading.Thread(target=client, args=(w,)) for w in (1, 2)]
    for t in threads:
        t.start()
    try:
        assert wait_until(lambda: requests_acked[0] >= 20, timeout=30), "no traffic got through"
        code = rcv.stop(sig)
    finally:
        stop.set()
        for t in threads:
            t.join(30)

    assert code == 0, rcv.stderr
    assert any(line.startswith("tracetui: stopped") for line in rcv.lines)
    stored = stored_span_keys(rcv.db_path)
    missing = acked - stored
    assert not missing, f"{len(missing)} acknowledged spans lost"
    assert integrity(rcv.db_path) == "ok"
    assert "Traceback" not in rcv.stderr


def test_acknowledged_spans_survive_kill_9_and_a_restart_carries_on(start_rcv):
    import psutil

    rcv = start_rcv(db="same.db")
    export(rcv.port, make_request([make_span(tid(1), sid(i)) for i in range(1, 11)]).SerializeToString())
    children = psutil.Process(rcv.proc.pid).children(recursive=True)
    assert children, "decode workers expected"
    rcv.proc.kill()  # no chance to flush or checkpoint anything
    rcv.proc.wait(10)
    assert stored_span_keys(rcv.db_path) == {(tid(1), sid(i)) for i in range(1, 11)}
    assert integrity(rcv.db_path) == "ok"
    # Its decode workers notice and exit rather than linger.
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left running after the receiver was killed: {alive}"
    # multiprocessing's resource tracker removes what the pool left; it need not warn about it.
    assert rcv._done.wait(10), "stderr still open after every receiver process exited"
    assert "leaked" not in rcv.stderr, rcv.stderr

    again = start_rcv(db="same.db")
    assert again.db_path == rcv.db_path
    export(again.port, make_request([make_span(tid(2), sid(1))]).SerializeToString())
    assert again.stop() == 0
    assert stored_counts(again.db_path) == (11, 2)
    conn = sqlite3.connect(again.db_path)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('span_count', 'trace_count')"))
    finally:
        conn.close()
    assert (int(meta["span_count"]), int(meta["trace_count"])) == (11, 2)

"""Shared test helpers: fixture files, hand-built OTLP messages, a real receiver process.

Everything here is independent of the code under test where it computes an
*expected* value: fixture files are unframed and parsed with the
opentelemetry.proto types directly, and the ready line is matched against the
format the issue specifies, not against tracetui's own regex.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

FIXTURES = Path(__file__).parent / "fixtures"
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
#: The ready line of `serve --headless`; an `http=HOST:PORT` part appears once OTLP/HTTP is served too.
READY_RE = re.compile(r"^tracetui: listening grpc=(?P<host>\S+):(?P<port>\d+)(?: http=(?P<http>\S+))? db=(?P<db>.+)$")


# --- fixture files ------------------------------------------------------------


def trace_fixture_files() -> list[Path]:
    """Every ``*.otlp`` file holding trace requests (``*.logs.otlp`` are logs, ``*.metrics.otlp`` metrics)."""
    files = sorted(p for p in FIXTURES.glob("*.otlp") if not p.name.endswith((".logs.otlp", ".metrics.otlp")))
    assert files, f"no trace fixtures in {FIXTURES}"
    return files


#: The first captures: the "openai suite" of four libraries and the hand-made agent. The tests
#: whose expectations are written per call of these (filters, stats, the CLI over the shared
#: fixture database) use only them; later captures have their own tests (llm/test_families.py).
SUITE_CAPTURES = ("handmade_agent", "openinference_openai", "openllmetry_openai", "otel_v2_openai", "traceai_openai")


def suite_fixture_files() -> list[Path]:
    """The trace files of SUITE_CAPTURES."""
    return [FIXTURES / f"{name}.otlp" for name in SUITE_CAPTURES]


def read_records(path: Path) -> list[bytes]:
    """Split a fixture file: 4-byte big-endian length, then that many bytes, repeated."""
    data = Path(path).read_bytes()
    records, offset = [], 0
    while offset < len(data):
        (size,) = struct.unpack_from(">I", data, offset)
        offset += 4
        records.append(data[offset : offset + size])
        offset += size
    assert offset == len(data), f"{path}: trailing bytes"
    return records


def requests_of(path: Path) -> list[ExportTraceServiceRequest]:
    return [ExportTraceServiceRequest.FromString(r) for r in read_records(path)]


def resource_service(resource: Resource) -> str:
    for kv in resource.attributes:
        if kv.key == "service.name" and kv.value.WhichOneof("value") == "string_value" and kv.value.string_value:
            return kv.value.string_value
    return "unknown_service"


def iter_spans(requests: Iterable[ExportTraceServiceRequest]):
    """(service, span) for every span of every request."""
    for request in requests:
        for rs in request.resource_spans:
            service = resource_service(rs.resource)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    yield service, span


@dataclass
class ExpectedTrace:
    trace_id: bytes
    spans: list[tuple[str, Span]] = field(default_factory=list)

    @property
    def span_count(self) -> int:
        return len({s.span_id for _, s in self.spans})

    @property
    def root(self) -> tuple[str, Span] | None:
        roots = [(svc, s) for svc, s in self.spans if not s.parent_span_id or s.parent_span_id == bytes(8)]
        return min(roots, key=lambda r: r[1].start_time_unix_nano) if roots else None

    @property
    def start_ns(self) -> int:
        return min(s.start_time_unix_nano for _, s in self.spans)

    @property
    def end_ns(self) -> int:
        return max(s.end_time_unix_nano for _, s in self.spans)

    @property
    def errors(self) -> int:
        return sum(1 for _, s in self.spans if s.status.code == Status.STATUS_CODE_ERROR)


def expected_traces(requests: Iterable[ExportTraceServiceRequest]) -> dict[bytes, ExpectedTrace]:
    """What a correct store holds after these requests, computed from the protos."""
    out: dict[bytes, ExpectedTrace] = {}
    seen: set[tuple[bytes, bytes]] = set()
    for service, span in iter_spans(requests):
        if (span.trace_id, span.span_id) in seen:
            continue
        seen.add((span.trace_id, span.span_id))
        out.setdefault(span.trace_id, ExpectedTrace(span.trace_id)).spans.append((service, span))
    return out


def with_session_ids(
    requests: Iterable[ExportTraceServiceRequest], key: str, session_of: dict[bytes, str]
) -> list[bytes]:
    """Serialized copies of ``requests`` whose spans of each trace in ``session_of`` carry ``key`` = its session
    id, on every span, as a library that puts the conversation in context does (OpenInference's
    ``using_session``, Traceloop's association properties, the Vercel AI SDK's telemetry metadata)."""
    out = []
    for request in requests:
        copy = ExportTraceServiceRequest()
        copy.CopyFrom(request)
        for rs in copy.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    if span.trace_id in session_of:
                        span.attributes.append(
                            KeyValue(key=key, value=AnyValue(string_value=session_of[span.trace_id]))
                        )
        out.append(copy.SerializeToString())
    return out


def sessions_in_turn(traces: dict[bytes, ExpectedTrace], names: Sequence[str]) -> dict[bytes, str]:
    """Trace id -> session: the traces in start order dealt out to ``names`` in turn (a, b, a, b, ...)."""
    ordered = sorted(traces.values(), key=lambda t: (t.start_ns, t.trace_id))
    return {t.trace_id: names[i % len(names)] for i, t in enumerate(ordered)}


def expected_span_keys(requests: Iterable[ExportTraceServiceRequest]) -> set[tuple[bytes, bytes]]:
    return {(s.trace_id, s.span_id) for _, s in iter_spans(requests)}


def plain(value: AnyValue):
    """An AnyValue as plain Python (bytes as hex), written independently of tracetui."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [plain(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: plain(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def plain_attributes(attributes) -> dict:
    return {kv.key: plain(kv.value) for kv in attributes}


def comparable(values: object) -> str:
    """Plain values as sorted JSON text, to compare them when NaN may be among them (NaN != NaN).

    Real exporters send NaN: the Vercel AI SDK 4 writes its token counts as NaN on a stream without usage.
    """
    return json.dumps(values, sort_keys=True)


# --- hand-built OTLP ------------------------------------------------------------


def any_value(value) -> AnyValue:
    """A Python value as an OTLP AnyValue (AnyValues pass through)."""
    if isinstance(value, AnyValue):
        return value
    if value is None:
        return AnyValue()
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, (list, tuple)):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=kv_list(value)))
    raise TypeError(value)


def kv_list(attributes: dict) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attributes.items()]


def tid(n: int) -> bytes:
    """A valid 16-byte trace id."""
    return (0xA000_0000_0000_0000_0000_0000_0000_0000 + n).to_bytes(16, "big")


def sid(n: int) -> bytes:
    """A valid 8-byte span id."""
    return (0xB000_0000_0000_0000 + n).to_bytes(8, "big")


BASE_NS = 1_700_000_000_000_000_000


def make_span(
    trace_id: bytes,
    span_id: bytes,
    parent: bytes | None = None,
    *,
    name: str = "span",
    start: int = 0,
    duration: int = 1_000_000,
    status: int = Status.STATUS_CODE_UNSET,
    message: str = "",
    attributes: dict | None = None,
    kind: int = Span.SPAN_KIND_INTERNAL,
) -> Span:
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent or b"",
        name=name,
        kind=kind,
        start_time_unix_nano=BASE_NS + start,
        end_time_unix_nano=BASE_NS + start + duration,
        status=Status(code=status, message=message),
        attributes=kv_list(attributes or {}),
    )


def make_request(
    spans: Sequence[Span], service: str | None = "test-svc", **resource_attrs
) -> ExportTraceServiceRequest:
    attrs = dict(resource_attrs)
    if service is not None:
        attrs["service.name"] = service
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=kv_list(attrs)),
                scope_spans=[ScopeSpans(spans=list(spans))],
            )
        ]
    )


def ttft_exemplar_request(
    trace_id: bytes, span_id: bytes, seconds: float, metric: str = "gen_ai.server.time_to_first_token"
) -> bytes:
    """A metrics export: one delta histogram point (one call, ``seconds``) whose exemplar names a span."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

    request = ExportMetricsServiceRequest()
    found = request.resource_metrics.add().scope_metrics.add().metrics.add(name=metric, unit="s")
    found.histogram.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    point = found.histogram.data_points.add(start_time_unix_nano=BASE_NS, time_unix_nano=BASE_NS + 10**9)
    bounds = [0.1, 1.0]
    point.explicit_bounds.extend(bounds)
    point.bucket_counts.extend(int(i == sum(seconds > b for b in bounds)) for i in range(len(bounds) + 1))
    point.count, point.sum = 1, seconds
    point.attributes.add(key="gen_ai.request.model").value.string_value = "gpt-4o-mini"
    point.exemplars.add(trace_id=trace_id, span_id=span_id, as_double=seconds)
    return request.SerializeToString()


# --- the database, read without tracetui ------------------------------------------


def connect_ro(db_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)


def query_ro(db_path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Rows of one query over a read-only connection (what another process can read right now)."""
    conn = connect_ro(db_path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def stored_span_keys(db_path: Path, trace_ids: Iterable[bytes] | None = None) -> set[tuple[bytes, bytes]]:
    """(trace_id, span_id) of every stored span, or of the spans of ``trace_ids`` only."""
    conn = connect_ro(db_path)
    try:
        if trace_ids is None:
            return set(conn.execute("SELECT trace_id, span_id FROM spans"))
        keys: set[tuple[bytes, bytes]] = set()
        for trace_id in trace_ids:
            keys.update(conn.execute("SELECT trace_id, span_id FROM spans WHERE trace_id = ?", (trace_id,)))
        return keys
    finally:
        conn.close()


def stored_counts(db_path: Path) -> tuple[int, int]:
    """(rows in spans, rows in traces)."""
    conn = connect_ro(db_path)
    try:
        return (
            conn.execute("SELECT count(*) FROM spans").fetchone()[0],
            conn.execute("SELECT count(*) FROM traces").fetchone()[0],
        )
    finally:
        conn.close()


def integrity(db_path: Path) -> str:
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


# --- gRPC ---------------------------------------------------------------------------


def exporter_stub(channel: grpc.Channel):
    """TraceService/Export taking and returning raw bytes (so tests can send anything)."""
    return channel.unary_unary(EXPORT_METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b)


def channel_to(port: int, **options) -> grpc.Channel:
    opts = [("grpc.max_send_message_length", -1), *options.items()]
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=opts)


# --- the receiver as a real process --------------------------------------------------


def receiver_env(extra: dict[str, str] | None = None, drop_db_env: bool = True) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TRACETUI_TOKEN", None)  # a developer's own token must not change what the tests see
    if drop_db_env:
        env.pop("TRACETUI_DB", None)
    env.update(extra or {})
    return env


@dataclass
class Receiver:
    """A running ``tracetui serve --headless`` process."""

    proc: subprocess.Popen
    host: str
    port: int
    db_path: Path
    lines: list[str]
    _done: threading.Event
    #: ``HOST:PORT`` of the OTLP/HTTP listener (the ready line's ``http=``), None when not served.
    http: str | None = None

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` and wait for the exit code (SIGKILL only if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"receiver did not exit within {timeout}s after signal {sig}:\n{self.stderr}"
                ) from None
        self._done.wait(5)  # stderr fully drained
        return self.proc.returncode


def extra_port_options() -> list[str]:
    """Port options of `tracetui serve` besides --grpc-port (e.g. --http-port)."""
    from tracetui.cli.main import serve

    return [
        opt
        for param in serve.params
        for opt in getattr(param, "opts", [])
        if opt.endswith("-port") and opt != "--grpc-port"
    ]


def spawn_receiver(
    args: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None, preexec_fn=None
) -> tuple[subprocess.Popen, list[str], threading.Event, threading.Event]:
    """Start ``python -m tracetui serve --headless ARGS``; stderr is drained by a thread.

    Other listeners than gRPC (OTLP/HTTP) get port 0 unless ARGS say otherwise,
    so concurrent receivers in tests never compete for a fixed port.
    """
    args = list(args)
    for option in extra_port_options():
        if option not in args:
            args += [option, "0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracetui", "serve", "--headless", *args],
        cwd=cwd,
        env=env if env is not None else receiver_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,
    )
    lines: list[str] = []
    ready, done = threading.Event(), threading.Event()

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if READY_RE.match(line.rstrip("\n")):
                ready.set()
        done.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    return proc, lines, ready, done


def start_receiver(
    db_path: Path | None,
    *extra: str,
    grpc_port: int | None = 0,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 30.0,
) -> Receiver:
    """Start a receiver and wait for its ready line; raises RuntimeError if it never comes."""
    args = list(extra)
    if db_path is not None:
        args = ["--db", str(db_path), *args]
    if grpc_port is not None:
        args = [*args, "--grpc-port", str(grpc_port)]
    proc, lines, ready, done = spawn_receiver(args, cwd=cwd or (db_path.parent if db_path else Path.cwd()), env=env)
    ready.wait(timeout)
    match = next((m for m in map(READY_RE.match, lines) if m), None)
    if match is None:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        done.wait(5)
        raise RuntimeError(f"receiver did not become ready (exit {proc.returncode}):\n" + "\n".join(lines))
    return Receiver(proc, match["host"], int(match["port"]), Path(match["db"]), lines, done, match["http"])


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` (a synchronisation helper, never a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# --- filling a database through the real decoder and writer ----------------------------


def fill_db(db_path: Path, requests: Iterable[bytes | ExportTraceServiceRequest], logs: Iterable[bytes] = ()) -> None:
    """Store export requests (serialized or parsed) with tracetui's own decoder and writer, one commit each;
    then the serialized log export requests ``logs``."""
    from tracetui.otlp.decode import decode_logs, decode_spans, parse_logs_request, parse_trace_request
    from tracetui.store.writer import Writer

    writer = Writer(db_path)
    writer.start()
    try:
        decoded = [decode_spans(parse_trace_request(r) if isinstance(r, bytes) else r) for r in requests]
        decoded += [decode_logs(parse_logs_request(data)) for data in logs]
        for batch in decoded:
            ticket = writer.submit(batch)
            assert ticket.wait(30), "writer did not commit"
            assert ticket.error is None, ticket.error
    finally:
        writer.stop()


# A tiny protobuf encoder, written out by hand: the OTLP protobuf classes refuse to serialize
# invalid UTF-8 or values nested past protobuf's limit, so such bytes are put on the wire directly.


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): strings, bytes, sub-messages."""
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def nested_kvlist(levels: int, leaf: str = "bottom") -> bytes:
    """A serialized AnyValue {"level0": {"level1": ... leaf}}, encoded by hand without recursion
    (protobuf's own classes cannot even build values nested past its parse limit)."""
    value = ld(1, leaf.encode())
    for i in reversed(range(levels)):
        value = ld(6, ld(1, ld(1, f"level{i}".encode()) + ld(2, value)))  # kvlist_value{values: [KeyValue]}
    return value


def span_with_deep_attribute(trace: bytes, span_id: bytes, name: str, levels: int) -> bytes:
    """A serialized Span whose attribute "deep" nests ``levels`` kvlists."""
    span = make_span(trace, span_id, name=name).SerializeToString()
    return span + ld(9, ld(1, b"deep") + ld(2, nested_kvlist(levels)))  # one more attributes entry


# --- ClickHouse: the exporter's tables in chdb, served by our chdb server over HTTP ---------------------


_databases = iter(range(1, 1_000_000))
_session_locks: weakref.WeakKeyDictionary[object, threading.Lock] = weakref.WeakKeyDictionary()


def clickhouse_reader(conn, traces: Iterable[bytes] = (), logs: Iterable[bytes] = (), threshold: float = 0.5):
    """A ClickHouseReader over a new database holding these serialized requests, written as the
    Collector's exporter writes them (its DDL, its value mapping: tracetui.clickhouse.convert)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    from tracetui.clickhouse.load import insert_requests
    from tracetui.clickhouse.reader import ClickHouseReader
    from tracetui.clickhouse.schema import check_shape, ensure_schema

    shared = conn.borrowed(f"t{os.getpid()}_{next(_databases)}")  # the session's server outlives this reader
    # One HTTP session answers one query at a time: every reader of the session's client, and this set-up,
    # share one lock (an earlier test's app may still be polling from a worker thread).
    lock = _session_locks.setdefault(conn, threading.Lock())
    with lock:
        ensure_schema(shared.client, shared.spec.database)
        insert_requests(
            shared,
            [ExportTraceServiceRequest.FromString(data) for data in traces],
            [ExportLogsServiceRequest.FromString(data) for data in logs],
        )
        shape = check_shape(shared.client, shared.spec.database, "otel_traces", "otel_logs")
    return ClickHouseReader(shared, shape, threshold=threshold, lock=lock)  # type: ignore[arg-type]


def both_backends(request, db_path: Path):
    """A module fixture's body for ``params=["sqlite", "clickhouse"]``: a reader of the SQLite file, or one of
    the same stored bytes in the ClickHouse exporter's tables (the session's ``chdb``)."""
    from tracetui.store.reader import SqliteReader

    sqlite = SqliteReader(db_path)
    if request.param == "sqlite":
        yield sqlite
    else:
        other = clickhouse_reader(request.getfixturevalue("chdb"), *stored_requests(sqlite))
        yield other
        other.close()
    sqlite.close()


def stored_requests(reader) -> tuple[list[bytes], list[bytes]]:
    """Every stored trace's spans and log records as export requests, byte for byte what the receiver got
    (to load another backend with exactly what a SQLite database holds)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    traces, logs = [], []
    for row in reader.traces(0, -1):
        request = ExportTraceServiceRequest(resource_spans=[
            ResourceSpans(resource=Resource.FromString(s.resource), schema_url=s.schema_url, scope_spans=[
                ScopeSpans(scope=InstrumentationScope.FromString(s.scope), spans=[Span.FromString(s.raw)])])
            for s in reader.stored_spans(row.trace_id)
        ])  # fmt: skip
        traces.append(request.SerializeToString())
        records = reader.stored_logs(row.trace_id)
        if records:
            logs.append(ExportLogsServiceRequest(resource_logs=[
                ResourceLogs(resource=Resource.FromString(r.resource), schema_url=r.schema_url, scope_logs=[
                    ScopeLogs(scope=InstrumentationScope.FromString(r.scope), log_records=[LogRecord.FromString(r.raw)])])
                for r in records
            ]).SerializeToString())  # fmt: skip
    return traces, logs

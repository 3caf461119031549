"""The reference receivers that ``ingest.py`` measures tracetui against (issue 19's yardstick).

    python benchmarks/servers.py discard --port 0
    python benchmarks/servers.py naive --port 0 --db /tmp/bench-x/naive.db
    python benchmarks/servers.py minimal --port 0 --db /tmp/bench-x/minimal.db

``naive`` (the baseline of every ingest budget): one process, the upb parse,
one row per span holding the same information tracetui keeps: binary trace,
span and parent ids, name, kind, service, scope, start and end times, status
code and message, and attributes, events, links and resource as JSON. One
``executemany`` per request, committed before the answer, WAL with
synchronous=NORMAL, ``UNIQUE(trace_id, span_id)`` with ``INSERT OR IGNORE``
and no other index.

``naive-v1``: the naive receiver as it was before issue 19 (the same plus an
index on start time), kept so that older README figures can be compared.

``minimal``: the minimal lossless store, an upper reference: ids, times and
each span's own protobuf bytes (cut from the request, not re-serialized), the
same unique index, one transaction per request.

``discard``: parses every request, counts its spans and answers: the ceiling
a Python gRPC receiver can reach on this machine.

All use grpcio's ThreadPoolExecutor server with tracetui's options (8
workers, 64 MiB requests) and print ``bench-server: listening grpc=HOST:PORT``
on stderr when ready.
"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
EMPTY_RESPONSE = ExportTraceServiceResponse().SerializeToString()


def _identity(b: bytes) -> bytes:
    return b


class Discard:
    def __init__(self) -> None:
        self.spans = 0
        self.lock = threading.Lock()

    def __call__(self, data: bytes, context) -> bytes:
        req = _parse(data, context)
        n = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
        with self.lock:
            self.spans += n
        return EMPTY_RESPONSE


def any_value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


def attrs_dict(attributes) -> dict:
    return {kv.key: any_value(kv.value) for kv in attributes}


def flatten(attributes) -> str:
    return json.dumps(attrs_dict(attributes))


NAIVE_SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    id INTEGER PRIMARY KEY,
    trace_id BLOB NOT NULL, span_id BLOB NOT NULL, parent_span_id BLOB,
    name TEXT NOT NULL, kind INTEGER, service TEXT, scope TEXT,
    start_ns INTEGER, end_ns INTEGER, status_code INTEGER, status_message TEXT,
    attributes TEXT, events TEXT, links TEXT, resource TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS spans_by_trace ON spans(trace_id, span_id);
"""
#: What the naive receiver had before issue 19 defined the baseline: one more index.
NAIVE_V1_EXTRA = "CREATE INDEX IF NOT EXISTS spans_by_start ON spans(start_ns);"


def _open(db: str, schema: str) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(schema)
    return conn


def _commit_rows(conn: sqlite3.Connection, lock: threading.Lock, sql: str, rows: list) -> None:
    """One transaction per request, committed before the caller answers."""
    with lock:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(sql, rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _parse(data: bytes, context) -> ExportTraceServiceRequest:
    try:
        return ExportTraceServiceRequest.FromString(data)
    except Exception as exc:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        raise


class Naive:
    """The baseline: the same information as tracetui, flattened to JSON, one transaction per request."""

    def __init__(self, db: str, *, v1: bool = False) -> None:
        self.conn = _open(db, NAIVE_SCHEMA + (NAIVE_V1_EXTRA if v1 else ""))
        self.lock = threading.Lock()

    def __call__(self, data: bytes, context) -> bytes:
        req = _parse(data, context)
        rows = []
        for rs in req.resource_spans:
            resource = flatten(rs.resource.attributes)
            service = next((kv.value.string_value for kv in rs.resource.attributes if kv.key == "service.name"), "")
            for ss in rs.scope_spans:
                for s in ss.spans:
                    events = json.dumps(
                        [
                            {"name": e.name, "time_ns": e.time_unix_nano, "attributes": attrs_dict(e.attributes)}
                            for e in s.events
                        ]  # fmt: skip
                    )
                    links = json.dumps(
                        [
                            {
                                "trace_id": k.trace_id.hex(),
                                "span_id": k.span_id.hex(),
                                "attributes": attrs_dict(k.attributes),
                            }
                            for k in s.links
                        ]  # fmt: skip
                    )
                    rows.append((
                        s.trace_id, s.span_id, s.parent_span_id or None, s.name, s.kind, service, ss.scope.name,
                        s.start_time_unix_nano, s.end_time_unix_nano, s.status.code, s.status.message,
                        flatten(s.attributes), events, links, resource,
                    ))  # fmt: skip
        _commit_rows(self.conn, self.lock, NAIVE_INSERT, rows)
        return EMPTY_RESPONSE


NAIVE_INSERT = (
    "INSERT OR IGNORE INTO spans(trace_id, span_id, parent_span_id, name, kind, service, scope, "
    "start_ns, end_ns, status_code, status_message, attributes, events, links, resource) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)

MINIMAL_SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    id INTEGER PRIMARY KEY, trace_id BLOB NOT NULL, span_id BLOB NOT NULL,
    start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, raw BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS spans_by_trace ON spans(trace_id, span_id);
"""
MINIMAL_INSERT = "INSERT OR IGNORE INTO spans(trace_id, span_id, start_ns, end_ns, raw) VALUES (?,?,?,?,?)"


class Minimal:
    """The minimal lossless store: ids, times and each span's own bytes, same unique index."""

    def __init__(self, db: str) -> None:
        from tracetui.otlp.decode import span_bytes  # cuts each span's bytes out of the request

        self.span_bytes = span_bytes
        self.conn = _open(db, MINIMAL_SCHEMA)
        self.lock = threading.Lock()

    def __call__(self, data: bytes, context) -> bytes:
        req = _parse(data, context)
        raw = self.span_bytes(data)
        spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
        rows = [(s.trace_id, s.span_id, s.start_time_unix_nano, s.end_time_unix_nano, b)
                for s, b in zip(spans, raw, strict=True)]  # fmt: skip
        _commit_rows(self.conn, self.lock, MINIMAL_INSERT, rows)
        return EMPTY_RESPONSE


MODES = ("discard", "naive", "naive-v1", "minimal")


def make_handler(mode: str, db: str | None) -> Discard | Naive | Minimal:
    if mode == "discard":
        return Discard()
    if db is None:
        raise SystemExit(f"{mode} needs --db")
    if mode == "minimal":
        return Minimal(db)
    return Naive(db, v1=mode == "naive-v1")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=MODES)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--db")
    ap.add_argument("--workers", type=int, default=8)
    args = ap.parse_args()
    handler = make_handler(args.mode, args.db)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=args.workers),
        options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ],
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Export": grpc.unary_unary_rpc_method_handler(
                        handler, request_deserializer=_identity, response_serializer=_identity
                    )
                },
            ),
        )  # fmt: skip
    )
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"bench-server: listening grpc={args.host}:{port} mode={args.mode}", file=sys.stderr, flush=True)
    while not stop.wait(0.5):
        pass
    server.stop(grace=5).wait()
    if isinstance(handler, (Naive, Minimal)):
        handler.conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

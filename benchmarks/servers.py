"""The two reference receivers that ``ingest.py`` measures tracetui against.

    python benchmarks/servers.py discard --port 0
    python benchmarks/servers.py naive --port 0 --db /tmp/bench-x/naive.db

``discard``: parses every request (``ExportTraceServiceRequest.FromString``),
counts its spans and answers. The ceiling a Python gRPC receiver can reach on
this machine.

``naive``: what a straightforward receiver does: flatten every span's
attributes, events and resource to JSON, insert the request's spans with one
``executemany`` in one transaction, COMMIT, then answer. Same SQLite
durability settings as tracetui (WAL, synchronous=NORMAL) and the same
uniqueness rule (trace_id, span_id), so the comparison is about design, not
about fsync.

Both use grpcio's ThreadPoolExecutor server with tracetui's options (8
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
        try:
            req = ExportTraceServiceRequest.FromString(data)
        except Exception as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
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
CREATE INDEX IF NOT EXISTS spans_by_start ON spans(start_ns);
"""


class Naive:
    def __init__(self, db: str) -> None:
        self.conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(NAIVE_SCHEMA)
        self.lock = threading.Lock()

    def __call__(self, data: bytes, context) -> bytes:
        try:
            req = ExportTraceServiceRequest.FromString(data)
        except Exception as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
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
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.executemany(
                    "INSERT OR IGNORE INTO spans(trace_id, span_id, parent_span_id, name, kind, service, scope, "
                    "start_ns, end_ns, status_code, status_message, attributes, events, links, resource) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    rows,
                )
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        return EMPTY_RESPONSE


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("discard", "naive"))
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--db")
    ap.add_argument("--workers", type=int, default=8)
    args = ap.parse_args()
    handler = Discard() if args.mode == "discard" else Naive(args.db)
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
    if isinstance(handler, Naive):
        handler.conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

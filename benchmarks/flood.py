"""Hostile floods against the receiver: peak memory of its process tree, and a polite exporter's loss.

Each scenario starts its own ``tracetui serve --headless`` (port 0, fresh
database), samples the RSS of the receiver's process tree every 50 ms
(common.ProcSampler: the sum over the receiver, its ingest workers and its
background jobs, an upper bound; and the sum of their PSS, which divides each
shared page among the processes mapping it) and prints the peaks:

* ``json16`` / ``json64``: 16 / 64 concurrent OTLP/HTTP JSON bodies of 16 MB of small spans;
* ``proto60``: 60 concurrent 63 MB OTLP/gRPC protobuf requests (with the right token);
* ``tokenless60``: the same 60 x 63 MB requests without the token, against ``--token``.
* ``slowloris``: 1,100 connections stalling in their headers or body (a byte a second) against a
  receiver limited to 1,024 open files; prints when a well-behaved exporter first got through,
  the receiver's stderr bytes, and how many slow connections are still open after 40 s.
* ``polite``: an app using the standard SDK (BatchSpanProcessor + OTLPSpanExporter, default
  settings, gRPC and HTTP) at 100 spans/s while 32 aggressive gRPC clients flood the
  receiver for ``--duration`` s; prints the spans the app lost and the flood's acked-but-missing.

Memory and loss are what this measures, not throughput: the machine is small and
shared, and both stay meaningful under CPU contention. To measure another
version (the same-run baseline), put its source first on the path:

    git worktree add /tmp/t15b-base 6b6d871
    .venv/bin/python benchmarks/flood.py --source /tmp/t15b-base json16 polite
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the flood clients of the tests
from common import EXPORT_METHOD, ProcSampler, tracetui_serve_cmd  # noqa: E402
from flood_clients import polite_flood  # noqa: E402

READY = re.compile(r"listening grpc=(?P<grpc>\S+) http=(?P<http>\S+) db=")
TOKEN = "flood-token"
MB = 1024 * 1024


class Server:
    """``tracetui serve --headless`` from ``source`` (None: the installed tracetui)."""

    def __init__(self, db: Path, source: str | None, *args: str, preexec_fn=None) -> None:
        env = dict(os.environ)
        env.pop("TRACETUI_TOKEN", None)
        if source:
            env["PYTHONPATH"] = source
        cmd = tracetui_serve_cmd(db, *args)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, cwd="/", env=env, start_new_session=True,
                                     preexec_fn=preexec_fn)  # fmt: skip
        self.stderr_bytes = 0
        self.grpc = self.http = ""
        self.db = db
        ready = threading.Event()

        def drain() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.stderr_bytes += len(line)
                m = READY.search(line)
                if m:
                    self.grpc, self.http = m["grpc"], m["http"]
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        ready.wait(60)
        if not self.grpc:
            raise RuntimeError("receiver did not start")
        self.sampler = ProcSampler(self.proc.pid)
        self.sampler.start()

    def stop(self) -> None:
        self.sampler.stop()
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- bodies -----------------------------------------------------------------------------


def small_span_json(i: int) -> dict:
    return {
        "traceId": f"{0xF100 + i // 10:032x}",
        "spanId": f"{0xE100 + i:016x}",
        "name": f"op-{i % 50}",
        "kind": 1,
        "startTimeUnixNano": str(1_700_000_000_000_000_000 + i * 1000),
        "endTimeUnixNano": str(1_700_000_000_000_000_000 + i * 1000 + 500),
        "attributes": [{"key": "k", "value": {"stringValue": "v"}}, {"key": "n", "value": {"intValue": str(i)}}],
    }


def json_body(target_bytes: int) -> bytes:
    """An OTLP JSON request of about ``target_bytes`` of small spans."""
    one = len(json.dumps(small_span_json(0))) + 1
    spans = [small_span_json(i) for i in range(max(1, target_bytes // one))]
    doc = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "flood"}}]},
                              "scopeSpans": [{"scope": {"name": "flood"}, "spans": spans}]}]}  # fmt: skip
    return json.dumps(doc, separators=(",", ":")).encode()


def proto_body(target_bytes: int) -> bytes:
    """An OTLP protobuf request of about ``target_bytes``: small spans, a few large attribute values."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    spans = []
    size = 0
    i = 0
    while size < target_bytes:
        span = Span(trace_id=(0xF200 + i // 10).to_bytes(16, "big"), span_id=(0xE200 + i).to_bytes(8, "big"),
                    name=f"op-{i % 50}", start_time_unix_nano=1_700_000_000_000_000_000 + i,
                    end_time_unix_nano=1_700_000_000_000_000_500 + i,
                    attributes=[KeyValue(key="k", value=AnyValue(string_value="v")),
                                KeyValue(key="n", value=AnyValue(int_value=i))])  # fmt: skip
        spans.append(span)
        size += span.ByteSize() + 3
        i += 1
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])])
    return request.SerializeToString()


# --- floods -------------------------------------------------------------------------------


def at_once(n: int, one: Callable[[threading.Barrier], object]) -> dict:
    """Run ``one`` in ``n`` threads that wait for each other before sending; returns {outcome: count}."""
    outcomes: dict = {}
    lock = threading.Lock()
    go = threading.Barrier(n)

    def run() -> None:
        outcome = one(go)
        with lock:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def post_all(address: str, body: bytes, n: int, content_type: str) -> dict:
    """POST ``body`` from ``n`` connections at once; returns {HTTP status: count} (0: connection error)."""
    host, port = address.rsplit(":", 1)

    def one(go: threading.Barrier) -> int:
        try:
            conn = http.client.HTTPConnection(host, int(port), timeout=300)
            go.wait()
            conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": content_type})
            status = conn.getresponse().status
            conn.close()
            return status
        except Exception:  # noqa: BLE001 - counted as 0
            return 0

    return at_once(n, one)


def export_all(address: str, body: bytes, n: int, token: str | None) -> dict:
    """Export ``body`` over gRPC from ``n`` channels at once; returns {status code: count}."""
    metadata = (("authorization", f"Bearer {token}"),) if token else None

    def one(go: threading.Barrier) -> str:
        with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", -1)]) as channel:
            export = channel.unary_unary(
                EXPORT_METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b
            )
            go.wait()
            try:
                export(body, timeout=300, metadata=metadata)
                return "OK"
            except grpc.RpcError as exc:
                return exc.code().name

    return at_once(n, one)


def memory_flood(name: str, source: str | None, tmp: Path) -> dict:
    token_args = ("--token", TOKEN) if name in ("proto60", "tokenless60") else ()
    server = Server(tmp / f"{name}.db", source, *token_args)
    time.sleep(1.0)
    idle, idle_pss = server.sampler.peak_rss, server.sampler.peak_pss
    server.sampler.peak_rss, server.sampler.peak_pss, server.sampler.peak_by_pid = 0, 0, {}
    t0 = time.monotonic()
    if name.startswith("json"):
        n = int(name[4:])
        answers = post_all(server.http, json_body(16 * MB), n, "application/json")
    else:
        answers = export_all(server.grpc, proto_body(63 * MB), 60, TOKEN if name == "proto60" else None)
    time.sleep(1.0)
    peak, per_process = server.sampler.peak_rss, server.sampler.process_peaks_mb()
    peak_pss = server.sampler.peak_pss
    server.stop()
    return {"flood": name, "idle_mb": round(idle / 1e6, 1), "peak_mb": round(peak / 1e6, 1),
            "idle_pss_mb": round(idle_pss / 1e6, 1), "peak_pss_mb": round(peak_pss / 1e6, 1),
            "process_peaks_mb": per_process,
            "answers": answers, "seconds": round(time.monotonic() - t0, 1), "stderr_bytes": server.stderr_bytes}  # fmt: skip


def slowloris(source: str | None, tmp: Path, seconds: float = 40.0) -> dict:
    from slow_clients import Slowloris, limit_open_files

    server = Server(tmp / "slow.db", source, preexec_fn=limit_open_files(1024))
    host, port = server.http.rsplit(":", 1)
    body = bytes.fromhex("0a00")  # an empty ResourceSpans: a valid export of nothing
    t0 = time.monotonic()
    slow = Slowloris(host, int(port), 1_100)
    first_ok = None
    stderr_at_10s = None
    while time.monotonic() - t0 < seconds:
        if stderr_at_10s is None and time.monotonic() - t0 >= 10:
            stderr_at_10s = server.stderr_bytes
        if first_ok is None:
            try:
                conn = http.client.HTTPConnection(host, int(port), timeout=1)
                conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
                if conn.getresponse().status == 200:
                    first_ok = round(time.monotonic() - t0, 1)
                conn.close()
            except OSError:
                pass
        time.sleep(0.5)
    still_open = slow.open()
    slow.close()
    server.stop()
    return {"flood": "slowloris (1,100 connections, ulimit -n 1024)", "connected": slow.connected,
            "first_export_ok_s": first_ok, "stderr_bytes_first_10s": stderr_at_10s,
            "slow_connections_open_after_s": [seconds, still_open]}  # fmt: skip


def polite(source: str | None, tmp: Path, seconds: float, clients: int = 32) -> dict:
    """tests/flood_clients.polite_flood against a receiver of ``source``, with its peak memory."""
    server = Server(tmp / "polite.db", source)
    result = polite_flood(server.grpc, server.http, server.db, clients, seconds)
    peak, per_process = server.sampler.peak_rss, server.sampler.process_peaks_mb()
    server.stop()
    return {"flood": f"polite ({clients} flood clients, {seconds:.0f} s)", **result, "peak_mb": round(peak / 1e6, 1),
            "process_peaks_mb": per_process}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "floods", nargs="*", default=["json16", "json64", "proto60", "tokenless60", "slowloris", "polite"]
    )
    parser.add_argument("--source", default=None, help="directory holding the tracetui package to measure")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of the polite-exporter flood")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="t15b-flood-") as tmp:
        for name in args.floods:
            if name == "polite":
                result = polite(args.source, Path(tmp), args.duration)
            elif name == "slowloris":
                result = slowloris(args.source, Path(tmp))
            else:
                result = memory_flood(name, args.source, Path(tmp))
            result["source"] = args.source or "this checkout"
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

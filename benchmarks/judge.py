"""The judge is never on the hot path: ingest throughput and ack latency with `serve --judge` on and off.

Same run, interleaved rounds (off, on, off, on ...): each round starts `tracetui serve --headless` on a
fresh database, sends RAG-shaped runs (a retrieval span with documents, then a chat call with its
messages) from CLIENTS threads over gRPC for ROUND_S seconds, one export at a time per client, and
records spans acknowledged per second and each export's ack latency. With the judge on, `serve`
starts `job judge` (2 calls in flight, no rate limit unless `--judge-rate N`: its busiest) against a fake OpenAI-compatible judge
(a thread here answering a fixed verdict),
so no model shares the CPU: what is measured is the judge process itself (reading spans, writing
results under the write lock) beside the receiver. The load average is printed with the figures.

    PYTHONPATH=. python benchmarks/judge.py [--rounds 2] [--seconds 8]

`--pass-cost COPY.sqlite` measures instead what one pass of the judge beside `serve` costs on a big
database (give it a *copy*: it writes judge results into it). Every LLM call is first given a lexical
result (the steady state: all judged), then, same run: the full scan the judge made before the
watermark (one query for the calls without a result, `_full_scan_sql` below) against a watermark pass
(`tracetui.jobs.judging.judge_pass`) with 0, 1,000 and 10,000 spans after the watermark, first all
already judged (finding them is the whole cost), then with their results deleted (judged again).

    PYTHONPATH=. python benchmarks/judge.py --pass-cost /tmp/copy-of-1M.sqlite
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
CLIENTS = 2
RUNS_PER_EXPORT = 20  # 3 spans each
READY = re.compile(r"listening grpc=(?P<host>[^:]+):(?P<port>\d+)")
VERDICT = json.dumps({"claims": [{"claim": "refunds in 30 days", "verdict": "supported", "reason": "kb"}]})


class _FakeJudge(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["content-length"]))
        body = json.dumps({"choices": [{"message": {"content": VERDICT}, "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 100, "completion_tokens": 20}}).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def _kv(**attrs: str | int) -> list[KeyValue]:
    return [KeyValue(key=k.replace("__", "."), value=AnyValue(string_value=v) if isinstance(v, str)
                     else AnyValue(int_value=v)) for k, v in attrs.items()]  # fmt: skip


def _request(client: int, seq: int) -> bytes:
    spans = []
    now = time.time_ns()
    for run in range(RUNS_PER_EXPORT):
        trace = (client << 48 | seq << 8 | run).to_bytes(16, "big")
        docs = json.dumps([{"id": "kb-1", "content": "Refunds are possible within 30 days of purchase."}])
        question = json.dumps([{"role": "user", "parts": [{"type": "text", "content": "Can I get a refund?"}]}])
        answer = json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "Yes, within 30 days."}]}])
        spans += [
            Span(trace_id=trace, span_id=b"\x01" * 8, name="invoke_agent support", start_time_unix_nano=now,
                 end_time_unix_nano=now + 90_000_000),
            Span(trace_id=trace, span_id=b"\x02" * 8, parent_span_id=b"\x01" * 8, name="retrieval kb",
                 start_time_unix_nano=now, end_time_unix_nano=now + 5_000_000,
                 attributes=_kv(gen_ai__operation__name="retrieval", gen_ai__retrieval__documents=docs)),
            Span(trace_id=trace, span_id=b"\x03" * 8, parent_span_id=b"\x01" * 8, name="chat gpt-4o",
                 start_time_unix_nano=now + 10_000_000, end_time_unix_nano=now + 80_000_000,
                 attributes=_kv(gen_ai__operation__name="chat", gen_ai__request__model="gpt-4o",
                                gen_ai__usage__input_tokens=120, gen_ai__usage__output_tokens=12,
                                gen_ai__input__messages=question, gen_ai__output__messages=answer)),
        ]  # fmt: skip
    resource = Resource(attributes=_kv(service__name="bench"))
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(resource=resource,
                                                                      scope_spans=[ScopeSpans(spans=spans)])])  # fmt: skip
    return request.SerializeToString()


def _round(judge_url: str | None, seconds: float, workdir: Path, rate: float) -> dict:
    db = workdir / f"r{time.monotonic_ns()}.db"
    cmd = [sys.executable, "-m", "tracetui", "serve", "--headless", "--db", str(db), "--grpc-port", "0",
           "--http-port", "0"] + (["--judge", judge_url, "--judge-model", "fake", "--judge-concurrency", "2", "--judge-rate", f"{rate:g}"]
                 if judge_url else [])  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, stdout=subprocess.DEVNULL)
    assert proc.stderr is not None
    port = None
    for line in proc.stderr:
        if m := READY.search(line):
            port = int(m["port"])
            break
    assert port, "receiver did not start"
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
    latencies: list[float] = []
    spans = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(n: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            export = channel.unary_unary(EXPORT, request_serializer=lambda b: b, response_deserializer=lambda b: b)
            seq = 0
            while time.monotonic() < stop:
                data = _request(n, seq)
                t0 = time.perf_counter()
                export(data, timeout=30)
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    spans[0] += 3 * RUNS_PER_EXPORT
                seq += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    judged = 0
    if judge_url:
        time.sleep(3)  # let the judge's next pass write something, to show it ran
        import sqlite3

        judged = sqlite3.connect(db).execute("SELECT count(*) FROM evaluations").fetchone()[0]
    proc.terminate()
    proc.wait(30)
    latencies.sort()
    return {"spans_per_s": spans[0] / elapsed, "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))], "judged": judged}  # fmt: skip


#: The judge's pass before the watermark: every LLM call without a result from the judge's source (a full scan).
_full_scan_sql = (
    "SELECT spans.trace_id, spans.span_id FROM spans AS spans WHERE spans.llm_kind = 'llm' "
    "AND (spans.counted IS NULL OR spans.counted != 0) AND NOT EXISTS (SELECT 1 FROM evaluations e "
    "WHERE e.trace_id = spans.trace_id AND e.span_id = spans.span_id AND e.name = 'groundedness' "
    "AND instr(e.source, ?) > 0) ORDER BY spans.id"
)


def pass_cost(db: Path) -> None:
    import sqlite3

    from tracetui.jobs.judge import LEXICAL_SOURCE, Judge
    from tracetui.jobs.judging import Progress, judge_pass

    conn = sqlite3.connect(db, isolation_level=None)
    last, calls = conn.execute("SELECT max(id), count(*) FROM spans WHERE llm_kind = 'llm'").fetchone()
    print(f"{db}: {conn.execute('SELECT max(id) FROM spans').fetchone()[0]:,} spans, {calls:,} LLM calls")
    print(f"load average: {Path('/proc/loadavg').read_text().strip()}  (cores: {os.cpu_count()})")
    t0 = time.perf_counter()
    conn.execute(
        "INSERT OR IGNORE INTO evaluations(trace_id, span_id, name, score, label, source, time_ns) "
        "SELECT trace_id, span_id, 'groundedness', 1.0, 'estimate', ?, 0 FROM spans WHERE llm_kind = 'llm'",
        (LEXICAL_SOURCE,),
    )
    print(f"setup: every call given a result in {time.perf_counter() - t0:.1f} s")
    for _ in range(3):
        t0 = time.perf_counter()
        left = conn.execute(_full_scan_sql, (LEXICAL_SOURCE,)).fetchall()
        print(f"full scan (before the watermark): {1000 * (time.perf_counter() - t0):8.1f} ms, {len(left)} to judge")
    top = conn.execute("SELECT max(id) FROM spans").fetchone()[0]
    for new_spans in (0, 1_000, 10_000):
        for rejudge in (False, True):
            if rejudge:
                conn.execute(
                    "DELETE FROM evaluations WHERE source = ? AND (trace_id, span_id) IN "
                    "(SELECT trace_id, span_id FROM spans WHERE id > ?)",
                    (LEXICAL_SOURCE, top - new_spans),
                )
            t0 = time.perf_counter()
            tally = judge_pass(db, Judge(), Progress(cursor=top - new_spans), settle_s=0.0)
            print(f"watermark pass, {new_spans:6,} spans after it, {tally.judged + tally.not_judged:5,} calls judged: "
                  f"{1000 * (time.perf_counter() - t0):8.1f} ms")  # fmt: skip
    print(f"load average after: {Path('/proc/loadavg').read_text().strip()}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--pass-cost", type=Path, default=None, metavar="COPY.sqlite")
    parser.add_argument("--judge-rate", type=float, default=0.0,
                        help="calls/min (0: no limit, the judge at its busiest; serve's default is 30)")  # fmt: skip
    args = parser.parse_args()
    if args.pass_cost:
        pass_cost(args.pass_cost)
        return 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    results: dict[str, list[dict]] = {"off": [], "on": []}
    print(f"load average before: {Path('/proc/loadavg').read_text().strip()}  (cores: {os.cpu_count()})  "
          f"--judge-rate {args.judge_rate:g}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="tracetui-judge-bench-") as tmp:
        for _ in range(args.rounds):
            for mode in ("off", "on"):
                r = _round(url if mode == "on" else None, args.seconds, Path(tmp), args.judge_rate)
                results[mode].append(r)
                print(f"judge {mode:3}: {r['spans_per_s']:8.0f} spans/s  ack p50 {r['p50_ms']:6.1f} ms  "
                      f"p99 {r['p99_ms']:6.1f} ms  results written by the judge: {r['judged']}", flush=True)  # fmt: skip
    print(f"load average after: {Path('/proc/loadavg').read_text().strip()}")
    off = statistics.median(r["spans_per_s"] for r in results["off"])
    on = statistics.median(r["spans_per_s"] for r in results["on"])
    p99_off = statistics.median(r["p99_ms"] for r in results["off"])
    p99_on = statistics.median(r["p99_ms"] for r in results["on"])
    print(f"median throughput on/off: {on / off:.2f}x   median ack p99 on/off: {p99_on / p99_off:.2f}x")
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

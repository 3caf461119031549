"""Ingest benchmark: tracetui's receiver against two reference receivers, same run.

    .venv/bin/python benchmarks/ingest.py              # quick: ~1 minute
    .venv/bin/python benchmarks/ingest.py --duration 20 --rounds 3   # the README figures

Traffic: realistic agent traces (about 10 spans each; LLM spans with 19-23
attributes including a ~2 KB ``gen_ai.input.messages`` and a ~500 B
``gen_ai.output.messages``, first-chunk and exception events) in
pre-serialized ExportTraceServiceRequests of 512 spans, sent over real gRPC by
4 client processes (one export in flight each, like the SDK's
BatchSpanProcessor). Every request has fresh trace ids.

Servers, each in its own process, each on a fresh database:

* ``discard``  -- parse and discard (benchmarks/servers.py): the ceiling;
* ``tracetui`` -- ``python -m tracetui serve --headless``;
* ``naive``    -- JSON-flatten + one executemany transaction per request,
  commit before answering (benchmarks/servers.py).

Two phases per server: *max* (closed loop, as fast as the server answers) and
*rate* (open loop at ``--rate`` spans/s, default 10,000, for ack latency).
After each phase the server is killed with SIGKILL and the rows are counted
in its database: "durable" spans are the ones that survived, "lost" = acked -
stored (must be 0).

Every figure is printed next to a baseline measured in the same run, as a
ratio: the machine is shared and noisy, absolute numbers drift.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    BENCH_DIR,
    PYTHON,
    Figure,
    Load,
    ProcSampler,
    ServerProc,
    db_bytes,
    machine_info,
    median,
    pct,
    print_table,
    tracetui_serve_cmd,
)

SERVERS = ("discard", "tracetui", "naive")


def server_cmd(name: str, db: Path) -> list[str]:
    if name == "discard":
        return [PYTHON, str(BENCH_DIR / "servers.py"), "discard", "--port", "0"]
    if name == "naive":
        return [PYTHON, str(BENCH_DIR / "servers.py"), "naive", "--port", "0", "--db", str(db)]
    if name == "tracetui":
        return tracetui_serve_cmd(db)
    raise ValueError(name)


def count_stored(name: str, db: Path) -> tuple[int | None, int | None]:
    """(rows in spans, meta span_count) after the server was killed."""
    if name == "discard" or not db.exists():
        return None, None
    conn = sqlite3.connect(db)  # a fresh connection recovers the WAL left by kill -9
    try:
        rows = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
        meta = None
        if name == "tracetui":
            r = conn.execute("SELECT value FROM meta WHERE key = 'span_count'").fetchone()
            meta = int(r[0]) if r else 0
        return rows, meta
    finally:
        conn.close()


def run_phase(name: str, phase: str, args, workdir: Path, tag: str) -> dict:
    d = workdir / f"{tag}-{name}-{phase}"
    d.mkdir(parents=True, exist_ok=True)
    db = d / ("traces.db" if name == "tracetui" else f"{name}.db")
    server = ServerProc(server_cmd(name, db))
    try:
        addr = server.wait_ready()
        rate = args.rate if phase == "rate" else 0.0
        duration = args.rate_duration if phase == "rate" else args.duration
        load = Load(addr, clients=args.clients, spans_per_request=args.spans_per_request, rate=rate,
                    duration=duration, seed=args.seed)  # fmt: skip
        try:
            load.wait_ready()
            sampler = ProcSampler(server.pid)
            sampler.start()
            profiler = None
            if args.profile and name == "tracetui" and phase == "max":
                out = workdir / f"{tag}-tracetui-max.{args.profile_format}"
                profiler = subprocess.Popen(
                    [shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy"), "record", "--pid", str(server.pid),
                     "--output", str(out), "--format", args.profile_format, "--rate", "200", "--threads",
                     "--duration", str(int(duration) + 2), "--nonblocking", "--subprocesses"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
            sampler.reset()
            load.start()
            res = load.join(timeout=duration + 300)
            sampler.stop()
            if profiler is not None:
                profiler.wait(60)
        finally:
            load.kill()
        on_disk = db_bytes(db) if name != "discard" else None
        if name == "discard":
            server.stop()
        else:
            server.kill9()  # acknowledged spans must survive this
        stored, meta = count_stored(name, db)
    except BaseException:
        server.stop(timeout=5)
        print("\n".join(server.lines[-30:]), file=sys.stderr)
        raise
    lat = res.latencies_ms
    out = {
        "server": name,
        "phase": phase,
        "target_rate": args.rate if phase == "rate" else None,
        "acked": res.acked,
        "failed": res.failed,
        "requests": res.requests,
        "errors": res.errors,
        "window_s": res.window_s,
        "acked_per_s": res.acked_rate,
        "stored": stored,
        "meta_span_count": meta,
        "durable_per_s": (stored / res.window_s) if stored is not None and res.window_s else None,
        "lost": (max(0, res.acked - stored) if stored is not None else None),
        "p50_ms": pct(lat, 0.50),
        "p99_ms": pct(lat, 0.99),
        "max_ms": max(lat) if lat else float("nan"),
        "peak_rss_mb": sampler.peak_rss / 2**20,
        "cpu_s": sampler.cpu_seconds,
        "cpu_util": sampler.cpu_seconds / max(1e-9, sampler.t1 - sampler.t0),
        "main_cpu_util": sampler.main_cpu_seconds / max(1e-9, sampler.t1 - sampler.t0),
        "cpu_ms_per_1k": (sampler.cpu_seconds * 1000 / (res.acked / 1000)) if res.acked else float("nan"),
        "bytes_per_span": (on_disk / stored) if on_disk and stored else None,
        "db_bytes": on_disk,
    }
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)
    return out


def detail_table(results: list[dict]) -> None:
    cols = [("round", "round"), ("server", "server"), ("phase", "phase"), ("acked/s", "acked_per_s"),
            ("durable/s", "durable_per_s"), ("acked", "acked"), ("stored", "stored"), ("lost", "lost"),
            ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"), ("RSS MB", "peak_rss_mb"), ("CPU", "cpu_util"),
            ("main CPU", "main_cpu_util"), ("CPU ms/1k", "cpu_ms_per_1k"), ("B/span", "bytes_per_span"), ("errors", "errors")]  # fmt: skip

    def f(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return "nan" if v != v else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}")
        if isinstance(v, int):
            return f"{v:,}"
        if isinstance(v, dict):
            return ",".join(f"{k}:{n}" for k, n in v.items()) or "-"
        return str(v)

    rows = [[c[0] for c in cols]] + [[f(r.get(k)) for _, k in cols] for r in results]
    w = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    print("\nper run:")
    for r in rows:
        print("  ".join(c.rjust(w[i]) for i, c in enumerate(r)))


def figures(results: list[dict], args) -> list[Figure]:
    rounds = sorted({r["round"] for r in results})

    def get(server: str, phase: str, key: str) -> list:
        return [next((r[key] for r in results if r["round"] == n and r["server"] == server and r["phase"] == phase), None)
                for n in rounds]  # fmt: skip

    def fig(name, unit, server, phase, key, base_server, base_phase, base_key, budget="", check=None, label=None):
        vals, bases = get(server, phase, key), get(base_server, base_phase, base_key)
        v = median([x for x in vals if x is not None])
        b = median([x for x in bases if x is not None])
        ratios = [x / y for x, y in zip(vals, bases, strict=True) if x is not None and y]
        f = Figure(name, v, unit, b, label or f"{base_server} {base_key.replace('_', ' ')}", budget)
        if len(rounds) > 1 and ratios:
            f.note = f"(median of {len(ratios)} rounds; per-round ratios {', '.join(f'{r:.2f}' for r in ratios)})"
            ratio = median(ratios)
            f.ratio_override = ratio
        else:
            ratio = f.ratio
        if check is not None and v == v:
            f.ok = check(v, ratio)
        return f

    figs: list[Figure] = []
    have = {(r["server"], r["phase"]) for r in results}
    if {("tracetui", "max"), ("naive", "max")} <= have:
        figs.append(fig("durable ingest (tracetui)", "spans/s", "tracetui", "max", "durable_per_s", "naive", "max",
                        "durable_per_s", ">= 2x naive", lambda v, r: r is not None and r >= 2.0, "naive durable"))  # fmt: skip
    if {("tracetui", "max"), ("discard", "max")} <= have:
        figs.append(fig("durable ingest vs parse-and-discard", "spans/s", "tracetui", "max", "durable_per_s", "discard",
                        "max", "acked_per_s", ">= 0.15x discard", lambda v, r: r is not None and r >= 0.15,
                        "discard acked"))  # fmt: skip
        figs.append(fig("ack p50 at max load", "ms", "tracetui", "max", "p50_ms", "discard", "max", "p50_ms",
                        label="discard"))  # fmt: skip
        figs.append(fig("ack p99 at max load", "ms", "tracetui", "max", "p99_ms", "discard", "max", "p99_ms",
                        label="discard"))  # fmt: skip
        figs.append(fig("receiver CPU per 1k spans", "ms", "tracetui", "max", "cpu_ms_per_1k", "discard", "max",
                        "cpu_ms_per_1k", label="discard"))  # fmt: skip
        figs.append(fig("receiver peak RSS (max load)", "MB", "tracetui", "max", "peak_rss_mb", "discard", "max",
                        "peak_rss_mb", label="discard"))  # fmt: skip
    if {("tracetui", "max"), ("naive", "max")} <= have:
        figs.append(fig("bytes on disk per span", "B", "tracetui", "max", "bytes_per_span", "naive", "max",
                        "bytes_per_span", label="naive"))  # fmt: skip
        figs.append(fig("naive durable ingest", "spans/s", "naive", "max", "durable_per_s", "discard", "max",
                        "acked_per_s", label="discard acked"))  # fmt: skip
    if ("tracetui", "rate") in have:
        base = "discard" if ("discard", "rate") in have else "tracetui"
        figs.append(fig(f"ack p99 at {args.rate:,.0f} spans/s", "ms", "tracetui", "rate", "p99_ms", base, "rate",
                        "p99_ms", "<= 100 ms", lambda v, r: v <= 100.0, f"{base} at same rate"))  # fmt: skip
        figs.append(fig(f"ack p50 at {args.rate:,.0f} spans/s", "ms", "tracetui", "rate", "p50_ms", base, "rate",
                        "p50_ms", label=f"{base} at same rate"))  # fmt: skip
        figs.append(fig("achieved rate (rate phase)", "spans/s", "tracetui", "rate", "acked_per_s", base, "rate",
                        "acked_per_s", label=base))  # fmt: skip
        figs.append(fig(f"receiver CPU at {args.rate:,.0f} spans/s", "cores", "tracetui", "rate", "cpu_util", base,
                        "rate", "cpu_util", label=base))  # fmt: skip
        if ("naive", "rate") in have:
            figs.append(fig(f"naive ack p99 at {args.rate:,.0f} spans/s", "ms", "naive", "rate", "p99_ms", base, "rate",
                            "p99_ms", label=f"{base} at same rate"))  # fmt: skip
    lost = [r["lost"] for r in results if r["server"] == "tracetui" and r["lost"] is not None]
    if lost:
        naive_lost = [r["lost"] for r in results if r["server"] == "naive" and r["lost"] is not None]
        figs.append(Figure("tracetui spans lost after kill -9 (all phases)", float(sum(lost)), "spans",
                           float(sum(naive_lost)) if naive_lost else None, "naive", "0",
                           sum(lost) == 0))  # fmt: skip
    meta_bad = [r for r in results if r["server"] == "tracetui" and r["meta_span_count"] not in (None, r["stored"])]
    if meta_bad:
        print(f"WARNING: meta span_count differs from count(*) in {len(meta_bad)} run(s): "
              + ", ".join(f"{r['meta_span_count']} vs {r['stored']}" for r in meta_bad))  # fmt: skip
    return figs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=4.0, help="seconds of traffic per phase (default 4)")
    ap.add_argument(
        "--rate", type=float, default=10_000, help="spans/s of the latency phase; 0 skips it (default 10000)"
    )
    ap.add_argument(
        "--rate-duration", type=float, default=None, help="seconds of the latency phase (default: --duration)"
    )
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--spans-per-request", type=int, default=512)
    ap.add_argument("--servers", default=",".join(SERVERS), help="comma list of discard,tracetui,naive")
    ap.add_argument("--rate-servers", default=None, help="servers of the latency phase (default: --servers)")
    ap.add_argument(
        "--rounds", type=int, default=1, help="repeat everything, rotating the server order; report medians"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", default="/tmp/bench-ingest")
    ap.add_argument("--keep", action="store_true", help="keep the databases")
    ap.add_argument("--json", help="write all results to this file")
    ap.add_argument("--profile", action="store_true", help="py-spy the tracetui receiver during its max phase")
    ap.add_argument("--profile-format", default="speedscope", choices=("speedscope", "flamegraph", "raw"))
    args = ap.parse_args()
    args.rate_duration = args.rate_duration or args.duration
    servers = [s for s in args.servers.split(",") if s]
    rate_servers = [s for s in (args.rate_servers or args.servers).split(",") if s]
    for s in servers + rate_servers:
        if s not in SERVERS:
            ap.error(f"unknown server {s}")

    workdir = Path(args.workdir) / time.strftime("%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    print(f"machine: {info}")
    print(f"traffic: {args.clients} clients x {args.spans_per_request} spans/request; max phase {args.duration:g}s"
          + (f", rate phase {args.rate:,.0f} spans/s for {args.rate_duration:g}s" if args.rate else ""), flush=True)  # fmt: skip
    results = []
    for n in range(args.rounds):
        k = n % len(servers)
        order = servers[k:] + servers[:k]
        plan = [(s, "max") for s in order]
        if args.rate:
            k = n % len(rate_servers)
            plan += [(s, "rate") for s in rate_servers[k:] + rate_servers[:k]]
        for name, phase in plan:
            t = time.monotonic()
            r = run_phase(name, phase, args, workdir, f"r{n}")
            r["round"] = n
            results.append(r)
            print(f"  round {n} {name:8s} {phase:4s}: acked {r['acked_per_s']:>9,.0f}/s"
                  + (f"  durable {r['durable_per_s']:>9,.0f}/s" if r["durable_per_s"] is not None else " " * 27)
                  + f"  p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  RSS {r['peak_rss_mb']:6.1f} MB"
                  + f"  CPU {r['cpu_util']:.2f}" + (f"  lost {r['lost']}" if r["lost"] is not None else "")
                  + (f"  errors {r['errors']}" if r["errors"] else "") + f"  [{time.monotonic() - t:.0f}s]",
                  flush=True)  # fmt: skip
    detail_table(results)
    figs = figures(results, args)
    print_table("ingest figures (value vs baseline measured in the same run)", figs)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "args": vars(args), "results": results,
                                               "figures": [f.__dict__ for f in figs]}, indent=1, default=str))  # fmt: skip
    print(f"load average at the end: {tuple(round(x, 2) for x in os.getloadavg())} (start: {info.get('loadavg')})")
    failed = [f.name for f in figs if f.ok is False]
    print(f"\n{len(failed)} budget(s) failed" + (": " + "; ".join(failed) if failed else ""))
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

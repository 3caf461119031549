"""Ingest benchmark: one yardstick for every ingest figure (issue 19).

    .venv/bin/python benchmarks/ingest.py --no-wait                 # smoke: about 1 minute
    .venv/bin/python benchmarks/ingest.py --rounds 3 --duration 8   # the README figures
    .venv/bin/python benchmarks/ingest.py --tracetui-ref main --tracetui-ref HEAD   # two versions, one run
    .venv/bin/python benchmarks/ingest.py --variant no-index=--no-index      # indexing on vs off, one run

Traffic: realistic agent traces (common.TraceFactory) in pre-serialized
ExportTraceServiceRequests of 512 spans, sent over real gRPC by 4 client
processes, one export in flight each (like the SDK). Every request has fresh
trace ids.

Targets, each in its own process on a fresh database (benchmarks/servers.py):

* ``naive``    -- the baseline every budget is a ratio to: one process, upb
  parse, one row per span with the same information tracetui keeps (JSON for
  attributes, events, links and resource), one executemany per request
  committed before the ack, WAL + synchronous=NORMAL, UNIQUE(trace_id,
  span_id) with INSERT OR IGNORE and no other index;
* ``minimal``  -- the minimal lossless store (ids, times, raw span bytes, the
  same unique index): an upper reference;
* ``discard``  -- parse and discard: the ceiling;
* ``naive-v1`` -- the naive receiver before issue 19 (one more index), for
  continuity with older figures (not in the default list);
* ``tracetui`` -- ``python -m tracetui serve --headless`` with the background
  jobs it starts and no judge; ``--tracetui-source DIR`` / ``--tracetui-ref
  REF`` (repeatable) measure other versions as further targets.

Per target and round: durable spans/s (rows that survive SIGKILL / the
window from first send to last ack), CPU us per durable span of the process
tree (user + sys), split into the receiver (main process and decode workers)
and background jobs (processes whose command line contains `` job ``), cores
used (CPU s / wall s), ack p50/p99, peak RSS of the tree, and bytes on disk per
span ((db + wal) / rows).

Run discipline: the 1-minute load average is checked once before the run
(wait until it is below 0.5, at most ``--max-wait`` s) and recorded for every
round; targets run interleaved within each round, in a rotated order; a round
in which any target got a non-OK answer, or lost an acknowledged span, is
rejected and run again. Figures are medians over rounds, ratios medians of the
per-round ratios to the same round's naive.
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
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    BENCH_DIR,
    PYTHON,
    REPO,
    Load,
    ProcSampler,
    ServerProc,
    db_bytes,
    machine_info,
    median,
    pct,
    tracetui_serve_cmd,
    wait_for_quiet,
)

REFERENCES = ("naive", "minimal", "discard", "naive-v1")
DEFAULT_TARGETS = "naive,minimal,discard,tracetui"
BASELINE = "naive"
#: The budgets of DESIGN.md section 9 against the same-run baseline.
DURABLE_BUDGET = 1.5


@dataclass
class Target:
    """One receiver under test: a reference from servers.py or a tracetui version."""

    name: str
    source: str | None = None  # a directory put first on PYTHONPATH (an exported tracetui)
    extra: list[str] = field(default_factory=list)

    @property
    def is_tracetui(self) -> bool:
        return self.name.startswith("tracetui")

    def cmd(self, db: Path) -> list[str]:
        if self.is_tracetui:
            return tracetui_serve_cmd(db, *self.extra)
        cmd = [PYTHON, str(BENCH_DIR / "servers.py"), self.name, "--port", "0"]
        return cmd if self.name == "discard" else [*cmd, "--db", str(db)]

    def env(self) -> dict | None:
        if self.source is None:
            return None
        return {**os.environ, "PYTHONPATH": self.source}


def export_ref(ref: str, into: Path) -> str:
    """``git archive REF tracetui`` into a fresh directory (the servers run outside the repository)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "tracetui"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return str(into)


def targets_from_args(args, workdir: Path) -> list[Target]:
    targets: list[Target] = []
    extra = args.serve_arg or []
    for name in [t for t in args.targets.split(",") if t]:
        if name in REFERENCES:
            targets.append(Target(name))
        elif name == "tracetui" and not (args.tracetui_source or args.tracetui_ref):
            targets.append(Target("tracetui", extra=extra))
        elif name != "tracetui":
            raise SystemExit(f"unknown target {name!r} (known: {', '.join(REFERENCES)}, tracetui)")
    for ref in args.tracetui_ref or []:
        src = export_ref(ref, workdir / "src" / ref.replace("/", "_"))
        targets.append(Target(f"tracetui@{ref}", src, extra))
    for spec in args.tracetui_source or []:
        label, _, path = spec.rpartition("=")
        targets.append(Target(f"tracetui@{label or Path(path).name}", str(Path(path).resolve()), extra))
    for spec in args.variant or []:
        label, sep, serve_args = spec.partition("=")
        if not sep or not label:
            raise SystemExit(f"--variant {spec!r}: expected LABEL=ARGS, e.g. no-index=--no-index")
        targets.append(Target(f"tracetui[{label}]", extra=[*extra, *serve_args.split()]))
    if BASELINE not in [t.name for t in targets]:
        raise SystemExit("the naive baseline must be one of the targets: every figure is a ratio to it")
    return targets


def count_rows(db: Path) -> int | None:
    if not db.exists():
        return None
    conn = sqlite3.connect(db)  # a fresh connection recovers the WAL left by kill -9
    try:
        return int(conn.execute("SELECT count(*) FROM spans").fetchone()[0])
    finally:
        conn.close()


def run_target(target: Target, phase: str, args, workdir: Path, tag: str) -> dict:
    d = workdir / f"{tag}-{target.name.replace('/', '_')}-{phase}"
    d.mkdir(parents=True, exist_ok=True)
    db = d / "traces.db"
    server = ServerProc(target.cmd(db), env=target.env())
    rate = args.rate if phase == "rate" else 0.0
    try:
        addr = server.wait_ready()
        load = Load(addr, clients=args.clients, spans_per_request=args.spans_per_request, rate=rate,
                    duration=args.duration, seed=args.seed)  # fmt: skip
        try:
            load.wait_ready()
            sampler = ProcSampler(server.pid)
            sampler.start()
            profiler = maybe_profile(args, target, phase, server.pid, workdir / f"{tag}-{target.name}")
            sampler.reset()
            load.start()
            res = load.join(timeout=args.duration + 300)
            sampler.stop()
            if profiler is not None:
                profiler.wait(60)
        finally:
            load.kill()
        on_disk = db_bytes(db) if target.name != "discard" else None
        if target.name == "discard":
            server.stop()
            stored: int | None = res.acked
        else:
            server.kill9()  # acknowledged spans must survive this
            stored = count_rows(db)
    except BaseException:
        server.stop(timeout=5)
        print("\n".join(server.lines[-30:]), file=sys.stderr)
        raise
    wall = max(1e-9, sampler.t1 - sampler.t0)
    durable = stored or 0
    out = {
        "target": target.name, "phase": phase, "acked": res.acked, "failed": res.failed, "errors": res.errors,
        "stored": stored, "lost": max(0, res.acked - durable),
        "durable_per_s": durable / res.window_s if res.window_s else 0.0,
        "p50_ms": pct(res.latencies_ms, 0.50), "p99_ms": pct(res.latencies_ms, 0.99),
        "cpu_us_per_span": sampler.cpu_seconds / durable * 1e6 if durable else float("nan"),
        "receiver_us_per_span": (sampler.cpu_seconds - sampler.job_cpu_seconds) / durable * 1e6 if durable else float("nan"),
        "jobs_us_per_span": sampler.job_cpu_seconds / durable * 1e6 if durable else float("nan"),
        "cores": sampler.cpu_seconds / wall, "jobs_cores": sampler.job_cpu_seconds / wall,
        "peak_rss_mb": sampler.peak_rss / 1e6,
        "bytes_per_span": on_disk / durable if on_disk and durable else None,
    }  # fmt: skip
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)
    return out


def maybe_profile(args, target: Target, phase: str, pid: int, out: Path) -> subprocess.Popen | None:
    if not (args.profile and target.is_tracetui and phase == "max"):
        return None
    return subprocess.Popen(
        [shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy"), "record", "--pid", str(pid),
         "--output", f"{out}.{args.profile_format}", "--format", args.profile_format, "--rate", "200", "--threads",
         "--duration", str(int(args.duration) + 2), "--nonblocking", "--subprocesses"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def round_problems(results: list[dict]) -> list[str]:
    """Why a round is rejected: any non-OK answer, or an acknowledged span missing after kill -9."""
    bad = []
    for r in results:
        if r["errors"] or r["failed"]:
            bad.append(f"{r['target']} {r['phase']}: non-OK answers {r['errors']}")
        if r["lost"]:
            bad.append(f"{r['target']} {r['phase']}: {r['lost']} acknowledged spans lost")
    return bad


def run_rounds(targets: list[Target], args, workdir: Path) -> tuple[list[dict], int]:
    results: list[dict] = []
    rejected = 0
    n = 0
    while n < args.rounds:
        k = (n + rejected) % len(targets)
        order = targets[k:] + targets[:k]
        phases = [(t, "max") for t in order]
        if args.rate:
            phases += [(t, "rate") for t in order if t.is_tracetui or t.name == BASELINE]
        load_avg = round(os.getloadavg()[0], 2)
        batch = []
        for target, phase in phases:
            r = run_target(target, phase, args, workdir, f"r{n}-{rejected}")
            r.update(round=n, load=load_avg)
            batch.append(r)
            print(f"  round {n} {target.name:16s} {phase:4s} durable {r['durable_per_s']:>8,.0f}/s  "
                  f"CPU {r['cpu_us_per_span']:6.1f} us/span (jobs {r['jobs_us_per_span']:.1f})  "
                  f"cores {r['cores']:.2f}  p50 {r['p50_ms']:6.1f} p99 {r['p99_ms']:6.1f} ms  "
                  f"RSS {r['peak_rss_mb']:5.0f} MB" + (f"  errors {r['errors']}" if r["errors"] else ""),
                  flush=True)  # fmt: skip
        problems = round_problems(batch)
        if problems:
            rejected += 1
            print(f"  round {n} rejected ({'; '.join(problems)}); running it again", flush=True)
            if rejected > args.max_rejected:
                raise SystemExit(f"{rejected} rounds rejected: giving up")
            continue
        print(f"  round {n}: load average {load_avg} at its start", flush=True)
        results.extend(batch)
        n += 1
    return results, rejected


COLUMNS = (("durable/s", "durable_per_s", "{:,.0f}"), ("CPU us/span", "cpu_us_per_span", "{:.1f}"),
           ("receiver", "receiver_us_per_span", "{:.1f}"), ("jobs", "jobs_us_per_span", "{:.1f}"),
           ("cores", "cores", "{:.2f}"), ("ack p50 ms", "p50_ms", "{:.1f}"), ("ack p99 ms", "p99_ms", "{:.1f}"),
           ("peak RSS MB", "peak_rss_mb", "{:.0f}"), ("B/span", "bytes_per_span", "{:,.0f}"))  # fmt: skip


def per_round_ratio(results: list[dict], target: str, phase: str, key: str) -> float:
    """Median over rounds of target / naive, each ratio within one round."""
    ratios = []
    for n in sorted({r["round"] for r in results}):
        v = next((r[key] for r in results if (r["round"], r["target"], r["phase"]) == (n, target, phase)), None)
        b = next((r[key] for r in results if (r["round"], r["target"], r["phase"]) == (n, BASELINE, phase)), None)
        if v is not None and b:
            ratios.append(v / b)
    return median(ratios)


def summary(results: list[dict], targets: list[Target], phase: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for t in targets:
        rows = [r for r in results if r["target"] == t.name and r["phase"] == phase]
        if not rows:
            continue
        med = {key: median([r[key] for r in rows if r[key] is not None]) for _, key, _ in COLUMNS}
        med["durable_ratio"] = per_round_ratio(results, t.name, phase, "durable_per_s")
        med["cpu_ratio"] = per_round_ratio(results, t.name, phase, "cpu_us_per_span")
        out[t.name] = med
    return out


def print_summary(title: str, summ: dict[str, dict]) -> None:
    head = ["target", "durable/s", "x naive"] + [c[0] for c in COLUMNS[1:]] + ["CPU x naive"]
    rows = [head]
    for name, m in summ.items():
        cells = [name, COLUMNS[0][2].format(m["durable_per_s"]), f"{m['durable_ratio']:.2f}x"]
        cells += ["-" if m[key] != m[key] else fmt.format(m[key]) for _, key, fmt in COLUMNS[1:]]
        rows.append(cells + [f"{m['cpu_ratio']:.2f}x"])
    w = [max(len(r[i]) for r in rows) for i in range(len(head))]
    print(f"\n{title}")
    for r in rows:
        print("  ".join(c.rjust(w[i]) if i else c.ljust(w[i]) for i, c in enumerate(r)))


ACK_P99_BUDGET_MS = 100.0


def verdicts(summ: dict[str, dict], rate_summ: dict[str, dict] | None = None, rate: float = 0.0) -> list[str]:
    """The budgets of DESIGN.md section 9 that this benchmark judges, against the same-run naive."""
    lines = []
    for name, m in summ.items():
        if not name.startswith("tracetui"):
            continue
        ok = m["durable_ratio"] >= DURABLE_BUDGET
        lines.append(f"{name}: durable ingest {m['durable_ratio']:.2f}x naive (budget >= {DURABLE_BUDGET}x): "
                     + ("PASS" if ok else "FAIL"))  # fmt: skip
        ok = m["cpu_ratio"] <= 1.0
        lines.append(f"{name}: CPU per span {m['cpu_us_per_span']:.1f} us (receiver {m['receiver_us_per_span']:.1f}"
                     f" + jobs {m['jobs_us_per_span']:.1f}) = {m['cpu_ratio']:.2f}x naive's "
                     f"{summ[BASELINE]['cpu_us_per_span']:.1f} us (budget <= 1x): " + ("PASS" if ok else "FAIL"))  # fmt: skip
    for name, m in (rate_summ or {}).items():
        if name.startswith("tracetui"):
            ok = m["p99_ms"] <= ACK_P99_BUDGET_MS
            lines.append(f"{name}: ack p99 at {rate:,.0f} spans/s offered {m['p99_ms']:.1f} ms (naive "
                         f"{rate_summ[BASELINE]['p99_ms']:.1f} ms; budget <= {ACK_P99_BUDGET_MS:.0f} ms at 10k/s): "
                         + ("PASS" if ok else "FAIL"))  # fmt: skip
    lines.append("receiver RSS under the red-team flood (<= 300 MB): measured by benchmarks/flood.py, not here")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=4.0, help="seconds of traffic per target and phase (default 4)")
    ap.add_argument("--rounds", type=int, default=1, help="accepted rounds, targets interleaved (default 1)")
    ap.add_argument("--targets", default=DEFAULT_TARGETS, help=f"comma list (default {DEFAULT_TARGETS}; also naive-v1)")
    ap.add_argument("--tracetui-source", action="append", metavar="[LABEL=]DIR",
                    help="a tracetui tree to measure as target tracetui@LABEL (repeatable)")  # fmt: skip
    ap.add_argument("--tracetui-ref", action="append", metavar="REF",
                    help="git archive REF of this repository, measured as tracetui@REF (repeatable)")  # fmt: skip
    ap.add_argument("--serve-arg", action="append", help="an extra argument of every `tracetui serve` (repeatable)")
    ap.add_argument("--variant", action="append", metavar="LABEL=ARGS",
                    help="also this tree's tracetui with these serve arguments, as target tracetui[LABEL] "
                         "(repeatable; e.g. no-index=--no-index)")  # fmt: skip
    ap.add_argument("--rate", type=float, default=0.0,
                    help="also an open-loop phase at this many spans/s for tracetui and naive (ack latency)")  # fmt: skip
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--spans-per-request", type=int, default=512)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-wait", type=float, default=600.0, help="seconds to wait for a load below 0.5")
    ap.add_argument("--no-wait", action="store_true", help="start whatever the load (smoke runs)")
    ap.add_argument("--max-rejected", type=int, default=5, help="give up after this many rejected rounds")
    ap.add_argument("--workdir", default="/tmp/bench-ingest")
    ap.add_argument("--keep", action="store_true", help="keep the databases")
    ap.add_argument("--json", help="write all results to this file")
    ap.add_argument("--profile", action="store_true", help="py-spy each tracetui target during its max phase")
    ap.add_argument("--profile-format", default="speedscope", choices=("speedscope", "flamegraph", "raw"))
    args = ap.parse_args()

    start_load = wait_for_quiet(max_wait=args.max_wait, no_wait=args.no_wait)
    workdir = Path(args.workdir) / time.strftime("%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    targets = targets_from_args(args, workdir)
    info = machine_info()
    print(f"machine: {info}")
    print(f"targets: {', '.join(t.name + (f' ({t.source})' if t.source else '') for t in targets)}")
    print(f"traffic: {args.clients} clients x {args.spans_per_request} spans/request, {args.duration:g} s a target"
          + (f"; rate phase {args.rate:,.0f} spans/s" if args.rate else ""), flush=True)  # fmt: skip
    results, rejected = run_rounds(targets, args, workdir)
    summ = summary(results, targets, "max")
    loads = [r["load"] for r in results if r["target"] == BASELINE and r["phase"] == "max"]
    print_summary(f"closed loop, medians of {args.rounds} round(s); ratios to the same round's naive", summ)
    rate_summ = summary(results, targets, "rate") if args.rate else None
    if rate_summ:
        print_summary(f"open loop at {args.rate:,.0f} spans/s", rate_summ)
    print(f"\nload average: {start_load:.2f} at the start, per round {loads}, "
          f"{os.getloadavg()[0]:.2f} at the end; rounds rejected and repeated: {rejected}")  # fmt: skip
    print("\nbudgets (DESIGN.md section 9, against this run's naive):")
    for line in verdicts(summ, rate_summ, args.rate):
        print("  " + line)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "args": vars(args), "start_load": start_load,
                                               "rejected": rejected, "results": results, "summary": summ},
                                              indent=1, default=str))  # fmt: skip
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

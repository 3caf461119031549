"""The Stats rollup (tracetui.store.rollup): what it costs the writer, what it saves Stats.

    .venv/bin/python benchmarks/rollup.py ingest                 # commit CPU per span, rollup on / off
    .venv/bin/python benchmarks/rollup.py query                  # a synthetic 10M-span rollup (24 h, dense)
    .venv/bin/python benchmarks/rollup.py stats --db COPY.sqlite # backfill, then Stats scan vs rollup

* ``ingest``: the benchmark traffic (benchmarks/common.py, 512 spans a request),
  decoded and prepared beforehand, committed by the real ``Committer`` into fresh
  files; rounds alternate the writer's queueing for the rollup on and off. CPU of
  the commit loop only (this process), per span; then, apart, the CPU of summing
  the queue as the rollup job does (``tracetui job rollup``), per span.
* ``query``: a rollup as 10M spans over 24 h leave it (every 10 s bin of every key
  filled, sketches of 150 buckets), then ``rollup.figures`` over "all" and 1 h
  per grouping. The rows read depend on time and keys, not on spans stored.
* ``stats``: on a *copy* of a benchmark database (it is migrated and filled in
  place): the background fill's time, then Stats ("all", 1 h) by a scan and by the
  rollup, each in a fresh child process (time and peak RSS), interleaved.

Figures on a shared 2-core machine mean little alone: each has its same-run baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


# --- ingest ---------------------------------------------------------------------------------


def ingest(rounds: int, batches: int, scratch: Path) -> dict:
    from common import build_templates, nonce

    import tracetui.store.writer as writer_module
    from tracetui.otlp.decode import decode_spans, parse_trace_request
    from tracetui.store.batch import prepare
    from tracetui.store.writer import Committer

    templates, cur, _ = build_templates(7, 16, 512, split=False)
    queue = writer_module.rollup.queue
    out: dict[str, list[float]] = {"on": [], "off": [], "job": []}
    for r in range(rounds):
        for mode in ("off", "on") if r % 2 else ("on", "off"):
            parts = []
            for i in range(batches):
                decoded = decode_spans(
                    parse_trace_request(templates[i % len(templates)].data.replace(cur, nonce(os.urandom(4), r, i)))
                )
                prepare(decoded)
                parts.append(decoded)
            db = scratch / f"ingest-{mode}-{r}.sqlite"
            for suffix in ("", "-wal", "-shm"):
                Path(str(db) + suffix).unlink(missing_ok=True)
            committer = Committer(db)
            writer_module.rollup.queue = queue if mode == "on" else (lambda conn, ids: None)  # type: ignore[assignment]
            try:
                spans = 0
                t = time.process_time()
                for part in parts:
                    spans += committer.commit([part])
                cpu = time.process_time() - t
                t = time.process_time()
                committer._sum_queued()  # noqa: SLF001  (what `tracetui job rollup` does beside the receiver)
                job = time.process_time() - t
            finally:
                writer_module.rollup.queue = queue  # type: ignore[assignment]
                committer.close()
            out[mode].append(cpu / spans * 1e6)
            if mode == "on":
                out["job"].append(job / spans * 1e6)
            print(f"  round {r} {mode}: commit {cpu / spans * 1e6:.1f} µs/span"
                  + (f", summing the queue (the job) {job / spans * 1e6:.1f} µs/span" if mode == "on" else "")
                  + f" ({spans} spans)  load {loadavg()}", flush=True)  # fmt: skip
    on, off = sorted(out["on"])[len(out["on"]) // 2], sorted(out["off"])[len(out["off"]) // 2]
    job = sorted(out["job"])[len(out["job"]) // 2]
    return {"commit_cpu_us_per_span_queue_on": on, "commit_cpu_us_per_span_queue_off": off,
            "added_on_ack_path_us_per_span": on - off, "job_cpu_us_per_span": job}  # fmt: skip


# --- query over a synthetic rollup -------------------------------------------------------------


def query(scratch: Path, spans: int = 10_000_000) -> dict:
    from tracetui.store import rollup
    from tracetui.store.schema import connect_writer

    db = scratch / "synthetic-rollup.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    conn = connect_writer(db)
    rng = random.Random(1)
    keys = {"model": [f"model-{i}" for i in range(6)], "prompt_version": [f"p{i}@v{j}" for i in range(3) for j in range(9)],
            "route": [f"svc / run-{i}" for i in range(10)]}  # fmt: skip
    now = time.time_ns()
    first = (now - 86_400 * 10**9) // rollup.STEP_NS
    fine_bins = range(first, now // rollup.STEP_NS + 1)
    calls_per_fine = spans * 0.4 / len(fine_bins)  # about 40 % of the benchmark's spans are LLM calls

    def sketch_text() -> str:
        start = rng.randrange(1200, 1300)
        return json.dumps([v for b in range(start, start + 150) for v in (b, rng.randrange(1, 50))])

    conn.execute("BEGIN")
    rows = []
    for grouping, names in keys.items():
        for level, ratio in enumerate(rollup._RATIOS):
            for b in range(first // ratio, fine_bins[-1] // ratio + 1):
                calls = max(1, int(calls_per_fine * ratio / len(names)))
                for key in names:
                    rows.append((grouping, level, b, key, calls, calls // 5, calls // 20, calls // 30, calls // 50,
                                 calls * 0.002, calls, calls * 80.0, calls, 0.0, 0, sketch_text(), sketch_text()))  # fmt: skip
            conn.executemany(rollup._UPSERT, rows)
            rows.clear()
    conn.execute("UPDATE meta SET value = 0 WHERE key IN ('rollup_to', 'rollup_at')")
    conn.execute("COMMIT")
    n_rows = conn.execute("SELECT count(*) FROM stats_bins").fetchone()[0]
    conn.close()
    reader = __import__("sqlite3").connect(f"file:{db}?mode=ro", uri=True)
    out: dict = {"stats_bins_rows": n_rows, "db_mb": db.stat().st_size / 1e6}
    for window, since in (("all", None), ("1h", now - 3600 * 10**9)):
        for grouping in keys:
            times = []
            for _ in range(5):
                t = time.perf_counter()
                rollup.figures(reader, grouping, since)
                times.append((time.perf_counter() - t) * 1000)
            out[f"{window}_{grouping}_ms"] = sorted(times)[2]
    out["load"] = loadavg()
    return out


# --- Stats on a real database copy ----------------------------------------------------------------


def stats(db: Path) -> dict:
    from tracetui.jobs import rollup as job
    from tracetui.store.reader import SqliteReader

    out: dict = {"load_before": loadavg()}
    t = time.perf_counter()
    SqliteReader(db).close()  # migrates: the UI would be up now
    out["open_and_migrate_s"] = time.perf_counter() - t
    t = time.perf_counter()
    cpu = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    job.fill(db)
    out["backfill_s"] = time.perf_counter() - t
    out["backfill_cpu_s"] = resource.getrusage(resource.RUSAGE_SELF).ru_utime - cpu
    for r in range(2):
        for mode in ("scan", "rollup") if r == 0 else ("rollup", "scan"):
            for window in ("all", "1h"):
                found = subprocess.run([sys.executable, __file__, "--db", str(db), "child", mode, window],
                                       capture_output=True, text=True, check=True)  # fmt: skip
                result = json.loads(found.stdout)
                out.setdefault(f"{mode}_{window}", []).append(result)
                print(f"  {mode} {window}: {result}  load {loadavg()}", flush=True)
    out["load_after"] = loadavg()
    return out


def child(db: Path, mode: str, window: str) -> None:
    from tracetui.query.stats import WINDOWS, compute
    from tracetui.store.reader import SqliteReader

    reader = SqliteReader(db)
    reader.exact_below_spans = 1 << 62 if mode == "scan" else 0
    t = time.perf_counter()
    groups = compute(reader, "model", window_s=WINDOWS[window])
    ms = (time.perf_counter() - t) * 1000
    print(json.dumps({"ms": round(ms, 1), "groups": len(groups), "calls": sum(g.count for g in groups),
                      "sketched": bool(groups and groups[0].percentiles),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=("ingest", "query", "stats", "child"))
    parser.add_argument("rest", nargs="*")
    parser.add_argument("--db", type=Path)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/bench-rollup"))
    args = parser.parse_args()
    args.scratch.mkdir(parents=True, exist_ok=True)
    if args.what == "child":
        child(args.db, *args.rest)
        return
    print(f"load {loadavg()}", flush=True)
    if args.what == "ingest":
        result = ingest(args.rounds, args.batches, args.scratch)
    elif args.what == "query":
        result = query(args.scratch)
    else:
        result = stats(args.db)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

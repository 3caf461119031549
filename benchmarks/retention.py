"""Retention under a flood: does ``--max-spans N`` hold at the receiver's full ingest rate, and what does it cost?

    .venv/bin/python benchmarks/retention.py                      # quick: ~1 minute
    .venv/bin/python benchmarks/retention.py --duration 20        # the README figures

For 10-span traces (agent runs, benchmarks/common.py) and for 1-span traces,
the same flood (4 client processes, one 512-span export in flight each, real
gRPC, closed loop) goes to two fresh receivers in turn: one without retention
(the baseline: its throughput) and one with ``--max-spans N``. An observer
reads the database every 10 ms during the flood: the peak span count (the
rows themselves) and the peak size of the database file and its WAL. The
cost of eviction is the throughput and CPU per span against the baseline of
the same traffic in the same run.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Load, ProcSampler, ServerProc, machine_info, tracetui_serve_cmd

WORKDIR = Path("/tmp/bench-retention")


class Observer(threading.Thread):
    """Peak span count and file sizes, read from the database while it is written."""

    def __init__(self, db: Path, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.interval = interval
        self.peak_spans = 0
        self.peak_db = 0
        self.peak_wal = 0
        self.peak_total = 0
        self.samples = 0
        self.stop_ev = threading.Event()

    def run(self) -> None:
        while not self.db.exists() and not self.stop_ev.is_set():
            time.sleep(0.01)
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=5000")
        wal = Path(f"{self.db}-wal")
        try:
            while not self.stop_ev.wait(self.interval):
                spans = conn.execute("SELECT value FROM meta WHERE key = 'span_count'").fetchone()
                db_size = self.db.stat().st_size
                wal_size = wal.stat().st_size if wal.exists() else 0
                self.peak_spans = max(self.peak_spans, int(spans[0]) if spans else 0)
                self.peak_db, self.peak_wal = max(self.peak_db, db_size), max(self.peak_wal, wal_size)
                self.peak_total = max(self.peak_total, db_size + wal_size)
                self.samples += 1
        finally:
            conn.close()


def run_one(label: str, spans_per_trace: int, max_spans: int | None, args) -> dict:
    d = WORKDIR / label.replace(" ", "-")
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    db = d / "traces.db"
    server = ServerProc(tracetui_serve_cmd(db, *(["--max-spans", str(max_spans)] if max_spans else [])))
    try:
        addr = server.wait_ready()
        load = Load(addr, clients=args.clients, spans_per_request=args.spans_per_request, duration=args.duration,
                    spans_per_trace=spans_per_trace)  # fmt: skip
        try:
            load.wait_ready()
            sampler, observer = ProcSampler(server.pid), Observer(db)
            sampler.start()
            observer.start()
            sampler.reset()
            load.start()
            res = load.join(timeout=args.duration + 300)
            sampler.stop()
            observer.stop_ev.set()
            observer.join(10)
        finally:
            load.kill()
        server.stop()
        conn = sqlite3.connect(db)
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        stored = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
        conn.close()
    except BaseException:
        server.stop(timeout=5)
        print("\n".join(server.lines[-30:]), file=sys.stderr)
        raise
    finally:
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)
    return {
        "label": label,
        "max_spans": max_spans,
        "acked_per_s": res.acked_rate,
        "acked": res.acked,
        "refused": res.failed,
        "stored": stored,
        "evicted": int(meta.get("evicted_spans") or 0),
        "peak_spans": observer.peak_spans,
        "peak_db_mb": observer.peak_db / 2**20,
        "peak_wal_mb": observer.peak_wal / 2**20,
        "peak_total_mb": observer.peak_total / 2**20,
        "samples": observer.samples,
        "cpu_us_per_span": sampler.cpu_seconds * 1e6 / res.acked if res.acked else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=8.0, help="seconds of flood per receiver")
    ap.add_argument("--max-spans", type=int, default=5_000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--spans-per-request", type=int, default=512)
    ap.add_argument("--keep", action="store_true", help="keep the databases in /tmp/bench-retention")
    args = ap.parse_args()
    print(f"machine: {machine_info()}")
    rows = []
    for spans_per_trace in (10, 1):
        for max_spans in (None, args.max_spans):
            label = f"{spans_per_trace}-span traces, " + (f"--max-spans {max_spans}" if max_spans else "no retention")
            row = run_one(label, spans_per_trace, max_spans, args)
            rows.append(row)
            print(
                f"{label:40} {row['acked_per_s']:>9,.0f} spans/s acked  peak {row['peak_spans']:>9,} spans "
                f"(stored at end {row['stored']:,}, evicted {row['evicted']:,})  peak db {row['peak_db_mb']:.1f} MB "
                f"+ WAL {row['peak_wal_mb']:.1f} MB (together {row['peak_total_mb']:.1f} MB)  "
                f"{row['cpu_us_per_span']:.0f} us CPU/span  [{row['samples']} observations, {row['refused']:,} refused]",
                flush=True,
            )
    print()
    for base, limited in zip(rows[::2], rows[1::2], strict=True):
        ratio = limited["acked_per_s"] / base["acked_per_s"] if base["acked_per_s"] else float("nan")
        cpu = limited["cpu_us_per_span"] / base["cpu_us_per_span"] if base["cpu_us_per_span"] else float("nan")
        print(
            f"{limited['label']}: peak {limited['peak_spans']:,} spans = {limited['peak_spans'] / args.max_spans:.2f}x "
            f"the limit; throughput {ratio:.2f}x and CPU per span {cpu:.2f}x the no-retention baseline "
            f"({base['peak_spans']:,} spans, {base['peak_total_mb']:.0f} MB db + WAL there)"
        )


if __name__ == "__main__":
    main()

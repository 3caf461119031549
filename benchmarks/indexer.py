"""How far the full-text indexer lags behind a steady stream of content-bearing spans (issue 21).

    .venv/bin/python benchmarks/indexer.py --content-rate 2000 --duration 60

Starts ``tracetui serve --headless`` on a fresh database (the receiver starts the indexer
job, as a user's serve does) and sends the benchmark's agent traffic (common.TraceFactory)
open loop over real gRPC. ``--content-rate`` is the rate of spans that carry conversation
text (LLM calls' messages, tool arguments and results, exception messages); the total span
rate is derived from the traffic's share of such spans, which is measured on the database
afterwards and printed.

Every ``--interval`` seconds it reads, with a read-only connection, the newest ``spans.id``
and the indexer's cursor (meta ``index_cursor``). The lag at a sample is how long ago the
span at the cursor was the newest stored span: the age of the oldest span not yet
searchable. Prints the lag's p50 / p95 / max over the run and after the last ack, how long
the indexer took to catch up, the CPU of the receiver and of the jobs, and the load average.
"""

from __future__ import annotations

import argparse
import bisect
import os
import shutil
import sqlite3
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Load, ProcSampler, ServerProc, pct, tracetui_serve_cmd, wait_for_quiet  # noqa: E402

from tracetui.store import text_index  # noqa: E402

#: The share of the benchmark traffic's spans with text to index (LLM calls' messages, tool
#: arguments and results, exceptions): 0.63 in a first run; measured and printed after each run.
CONTENT_SHARE = 0.63


class Watch:
    """Samples (time, newest spans.id, index cursor) from the database until stopped."""

    def __init__(self, db: Path, interval: float) -> None:
        self.db, self.interval = db, interval
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while not self._stop.wait(self.interval):
            try:
                if conn is None:
                    conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
                top = conn.execute("SELECT ifnull(max(id), 0) FROM spans").fetchone()[0]
                cursor = int(text_index.meta_value(conn, text_index.CURSOR_KEY) or 0)
            except sqlite3.Error:
                continue  # the schema is being created: sample again
            self.samples.append((time.monotonic(), top, cursor))
        if conn is not None:
            conn.close()

    def lags(self) -> list[tuple[float, float]]:
        """(time, lag s) per sample: how long ago the newest stored span was the one at the cursor."""
        times = [t for t, _, _ in self.samples]
        tops = [top for _, top, _ in self.samples]
        out = []
        for t, top, cursor in self.samples:
            if cursor >= top:
                out.append((t, 0.0))
                continue
            # the first sample at which the span after the cursor was already stored
            i = bisect.bisect_right(tops, cursor)
            out.append((t, t - times[i] if i < len(times) else 0.0))
        return out


def content_share(db: Path) -> tuple[int, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        spans = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
        texts = conn.execute("SELECT count(*) FROM span_text WHERE content != ''").fetchone()[0]
        return spans, texts
    finally:
        conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--content-rate", type=float, default=2000.0, help="content-bearing spans/s (default 2000)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of traffic (default 60)")
    ap.add_argument("--interval", type=float, default=0.25, help="sampling interval, s")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--spans-per-request", type=int, default=128)
    ap.add_argument("--no-wait", action="store_true", help="start whatever the load")
    ap.add_argument("--workdir", default="/tmp/bench-indexer")
    args = ap.parse_args()

    start_load = wait_for_quiet(no_wait=args.no_wait)
    workdir = Path(args.workdir) / time.strftime("%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "traces.db"
    rate = args.content_rate / CONTENT_SHARE
    server = ServerProc(tracetui_serve_cmd(db))
    try:
        addr = server.wait_ready()
        sampler = ProcSampler(server.pid)
        sampler.start()
        load = Load(addr, clients=args.clients, spans_per_request=args.spans_per_request, rate=rate,
                    duration=args.duration)  # fmt: skip
        load.wait_ready()
        watch = Watch(db, args.interval)
        watch.start()
        t0 = load.start()
        result = load.join()
        last_ack = time.monotonic()
        while watch.samples and watch.samples[-1][2] < watch.samples[-1][1] and time.monotonic() - last_ack < 120:
            time.sleep(args.interval)
        caught_up = time.monotonic() - last_ack
        time.sleep(2 * args.interval)
        watch.stop()
        sampler.stop()
    finally:
        server.stop()
    spans, texts = content_share(db)
    lags = [lag for t, lag in watch.lags() if t >= t0]
    print(f"traffic: {rate:,.0f} spans/s for {args.duration:g} s ({args.content_rate:,.0f} content-bearing/s "
          f"at the assumed share {CONTENT_SHARE:.3f}); acked {result.acked:,} ({result.acked_rate:,.0f}/s), "
          f"failed {result.failed:,}")  # fmt: skip
    print(f"stored: {spans:,} spans, {texts:,} with text ({texts / max(spans, 1):.3f}; "
          f"{texts / max(result.window_s, 1e-9):,.0f} content-bearing spans/s acked)")  # fmt: skip
    if lags:
        print(f"indexer lag: p50 {pct(lags, 0.5):.2f} s, p95 {pct(lags, 0.95):.2f} s, max {max(lags):.2f} s "
              f"over {len(lags)} samples; caught up {caught_up:.1f} s after the last ack")  # fmt: skip
    print(f"CPU: receiver {sampler.main_cpu_seconds:.1f} s, jobs (indexer) {sampler.job_cpu_seconds:.1f} s "
          f"over {result.window_s:.1f} s of traffic")  # fmt: skip
    print(f"load average: {start_load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""UI benchmark: the real Textual app (headless ``run_test``) over a large database.

    .venv/bin/python benchmarks/ui.py --spans 100000      # quick: < 1 minute once the DB is cached
    .venv/bin/python benchmarks/ui.py                     # 1,000,000 spans (first build takes a few minutes)
    .venv/bin/python benchmarks/ui.py --spans 1000000,10000000   # side by side (10M: ~13 min, 21 GB to build)

Steps:

1. Build (once, cached under /tmp/bench-ui/ keyed by size and schema version)
   a database of N realistic agent spans (the same traffic as ingest.py,
   spread over the last 24 hours) plus one trace of 100,000 spans, the
   newest but one. The real ``decode_spans`` and the real ``Writer`` write it (the
   decoding runs in worker processes so the build uses both cores).
2. Baseline children, each a fresh process, same run: the app over an empty
   database (memory) and over a small database (first paint, key presses,
   opening a trace) with no traffic.
3. Main child: the app over a copy of the big database while
   ``tracetui serve --headless`` writes ingest.py-style traffic into it at
   ``--rate`` spans/s (default 5,000):
   * first paint: from creating the Reader until the first screen update
     that shows loaded trace rows;
   * opening a trace: Enter on a ~10-span trace (baseline) and on the
     100,000-span trace, until the first screen update showing its first rows,
     and until all its rows are drawn;
   * the list filter (FILTER: its first rows and its count), the Stats screen
     over "all" and "1h", and ``tracetui spans --json`` on the big trace;
   * key press -> repaint: ``j`` pressed ``--presses`` times (traffic
     arriving), each timed from posting the key event to the first screen
     update with the cursor on the new row (and, separately, until that
     row's content, not a "loading" placeholder, is drawn);
   * memory: RSS of the UI process after all this (and its peak).

Screen updates are observed by wrapping ``App._display``, which Textual calls
with each compositor update (in headless mode the update is computed in full,
just not written to a terminal). Keys are posted straight to the driver,
not through ``Pilot.press`` (which sleeps at least 2 x 20 ms to wait for idle).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    PYTHON,
    Figure,
    Load,
    ServerProc,
    TraceFactory,
    build_request,
    build_templates,
    machine_info,
    nonce,
    pct,
    print_table,
    proc_status,
    tracetui_serve_cmd,
)

BUILDER_VERSION = 2
CACHE = Path("/tmp/bench-ui")
BIG_TRACE_SPANS = 100_000
SMALL_SPANS = 10_000
DAY_NS = 24 * 3600 * 1_000_000_000

# --- building databases ------------------------------------------------------------------

_W: dict = {}


def _worker_init(seed: int, spans_per_request: int) -> None:
    templates, cur, _prev = build_templates(seed, 16, spans_per_request, split=False)
    starts = []
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    for t in templates:
        req = ExportTraceServiceRequest.FromString(t.data)
        starts.append(
            min(s.start_time_unix_nano for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans)
        )
    _W.update(templates=templates, cur=cur, starts=starts, salt=os.urandom(4))


def _make_batch(i: int, t_start: int, t_step: int):
    from tracetui.otlp.decode import decode_spans, parse_trace_request

    templates, cur = _W["templates"], _W["cur"]
    k = i % len(templates)
    data = templates[k].data.replace(cur, nonce(_W["salt"], 0, i))
    req = parse_trace_request(data)
    shift = t_start + i * t_step - _W["starts"][k]
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for s in ss.spans:
                s.start_time_unix_nano += shift
                s.end_time_unix_nano += shift
                for e in s.events:
                    e.time_unix_nano += shift
    return decode_spans(req)


def db_path(n_spans: int) -> Path:
    from tracetui.store.schema import SCHEMA_VERSION

    return CACHE / f"db-{n_spans}-s{SCHEMA_VERSION}-b{BUILDER_VERSION}.sqlite"


def build_db(path: Path, n_spans: int, *, big_trace: bool, seed: int = 7, workers: int = 2) -> dict:
    """Write ~n_spans spans (whole 512-span requests) + optionally one 10,000-span trace."""
    from tracetui.otlp.decode import decode_spans
    from tracetui.store.writer import Writer

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".building")
    for suffix in ("", "-wal", "-shm"):
        Path(str(tmp) + suffix).unlink(missing_ok=True)
    spr = 512
    n_batches = max(1, n_spans // spr)
    now = time.time_ns()
    t_end = now - 120 * 1_000_000_000
    t_start = t_end - DAY_NS
    t_step = DAY_NS // n_batches
    writer = Writer(tmp, max_pending_spans=1_000_000)
    writer.start()
    t0 = time.monotonic()
    tickets = []
    window = 8
    with ProcessPoolExecutor(workers, initializer=_worker_init, initargs=(seed, spr)) as pool:
        futures = [pool.submit(_make_batch, i, t_start, t_step) for i in range(min(window, n_batches))]
        submitted = len(futures)
        done = 0
        while futures:
            decoded = futures.pop(0).result()
            tickets.append(writer.submit(decoded))
            if submitted < n_batches:
                futures.append(pool.submit(_make_batch, submitted, t_start, t_step))
                submitted += 1
            while len(tickets) > 4:
                tickets.pop(0).wait()
            done += 1
            if done % 200 == 0:
                el = time.monotonic() - t0
                print(f"  built {done * spr:,} spans in {el:.0f}s ({done * spr / el:,.0f} spans/s)", flush=True)
    for t in tickets:
        t.wait()
    big_id = None
    if big_trace:
        factory = TraceFactory(seed + 99)
        big_id = os.urandom(16)
        specs = factory.plan_big_trace(t_end + 30 * 1_000_000_000, BIG_TRACE_SPANS)
        spans = [(s.scope, factory.to_span(s, big_id)) for s in specs]
        for i in range(0, len(spans), spr):
            writer.submit(decode_spans(build_request(spans[i : i + spr]))).wait()
    # One ~10-span trace newer than everything: row 0 is a normal trace, row 1 the big one.
    factory = TraceFactory(seed + 123)
    small_id = os.urandom(16)
    specs = factory.plan_trace(t_end + 3600 * 1_000_000_000, 10)
    writer.submit(decode_spans(build_request([(s.scope, factory.to_span(s, small_id)) for s in specs]))).wait()
    writer.stop()
    # The Stats rollup of what was written, as `serve`'s job would have kept it (the writer only queues).
    t_rollup = time.monotonic()
    subprocess.run([sys.executable, "-m", "tracetui", "job", "rollup", "--db", str(tmp)], check=True)
    print(f"  summed the Stats rollup in {time.monotonic() - t_rollup:.0f}s", flush=True)
    for suffix in ("-wal", "-shm", "-health", "-lock"):
        Path(str(tmp) + suffix).unlink(missing_ok=True)
    os.replace(tmp, path)
    meta = {"spans": n_batches * spr + (BIG_TRACE_SPANS if big_trace else 0) + len(specs),
            "big_trace_id": big_id.hex() if big_id else None, "small_trace_id": small_id.hex(),
            "build_s": time.monotonic() - t0}  # fmt: skip
    Path(str(path) + ".json").write_text(json.dumps(meta))
    print(f"  built {path} ({meta['spans']:,} spans, {path.stat().st_size / 2**20:,.0f} MB) in {meta['build_s']:.0f}s",
          flush=True)  # fmt: skip
    return meta


def ensure_db(n_spans: int, *, big_trace: bool) -> tuple[Path, dict]:
    path = db_path(n_spans)
    meta_file = Path(str(path) + ".json")
    if path.exists() and meta_file.exists():
        return path, json.loads(meta_file.read_text())
    older = sorted(
        (p for p in CACHE.glob(f"db-{n_spans}-s*-b{BUILDER_VERSION}.sqlite") if Path(f"{p}.json").exists()),
        key=lambda p: int(p.name.split("-s")[1].split("-")[0]),
    )  # by schema version
    if older:  # written by an older schema: opened, it is upgraded as a user's database would be
        print(f"using {older[-1]} (an older schema's build, upgraded when opened)", flush=True)
        return older[-1], json.loads(Path(f"{older[-1]}.json").read_text())
    print(f"building a database of {n_spans:,} spans at {path} (cached for later runs)...", flush=True)
    return path, build_db(path, n_spans, big_trace=big_trace)


def empty_db(workdir: Path) -> Path:
    from tracetui.store.writer import Writer

    path = workdir / "empty.db"
    w = Writer(path)
    w.start()
    w.stop()
    return path


# --- the measuring child ------------------------------------------------------------------


class Watch:
    """Wraps App._display: calls a predicate after each screen update, records when it first holds."""

    def __init__(self, app) -> None:
        self.app = app
        self.displays = 0
        self._pred = None
        self._event: asyncio.Event | None = None
        self.hit_at: float | None = None
        original = app._display

        def display(screen, renderable):
            original(screen, renderable)
            if renderable is None:
                return
            self.displays += 1
            if self._pred is not None:
                try:
                    ok = self._pred()
                except Exception:
                    ok = False
                if ok:
                    self.hit_at = time.perf_counter()
                    self._pred = None
                    assert self._event is not None
                    self._event.set()

        app._display = display

    def arm(self, pred) -> asyncio.Event:
        self.hit_at = None
        self._event = asyncio.Event()
        self._pred = pred
        return self._event

    async def wait(self, event: asyncio.Event, timeout: float) -> float | None:
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            self._pred = None
            return None
        return self.hit_at


def _key(app, key: str, char: str | None) -> None:
    from textual import events

    ev = events.Key(key, char)
    ev.set_sender(app)
    app._driver.send_message(ev)


def _traces_table(app):
    found = app.screen.query("#traces")
    return found.first() if found else None


def _waterfall(app):
    found = app.screen.query("#waterfall")
    return found.first() if found else None


class RenderStats:
    """Optional breakdown (``--breakdown``): time the main thread spends in layout and compositor updates."""

    def __init__(self) -> None:
        from textual.screen import Screen

        self.calls: dict[str, list[float]] = {"layout": [], "update": []}
        self.spans: list[tuple[str, float, float]] = []  # (what, start, end) on the main thread
        self.active = False

        def wrap(cls, name, key):
            original = getattr(cls, name)

            def timed(*a, **kw):
                if not self.active:
                    return original(*a, **kw)
                t = time.perf_counter()
                try:
                    return original(*a, **kw)
                finally:
                    t1 = time.perf_counter()
                    self.calls[key].append((t1 - t) * 1000)
                    self.spans.append((key, t, t1))

            setattr(cls, name, timed)

        from textual.widget import Widget

        self.layout_requests: dict[str, int] = {}
        refresh = Widget.refresh

        def counting_refresh(widget, *regions, layout: bool = False, **kw):
            if layout and self.active:
                key = f"{type(widget).__name__}#{widget.id}" if widget.id else type(widget).__name__
                self.layout_requests[key] = self.layout_requests.get(key, 0) + 1
            return refresh(widget, *regions, layout=layout, **kw)

        Widget.refresh = counting_refresh
        wrap(Screen, "_refresh_layout", "layout")
        wrap(Screen, "_compositor_refresh", "update")
        self.calls["gc"] = []
        self._gc_t = 0.0

        def on_gc(phase: str, info: dict) -> None:
            if phase == "start":
                self._gc_t = time.perf_counter()
            elif self.active and info.get("generation", 0) >= 1:
                t1 = time.perf_counter()
                self.calls["gc"].append((t1 - self._gc_t) * 1000)
                self.spans.append(("gc", self._gc_t, t1))

        import gc

        gc.callbacks.append(on_gc)

    def explain_slow(self, presses: list[tuple[float, float]], limit_ms: float = 50.0) -> dict:
        """For each key press slower than ``limit_ms``: what overlapped it on the main thread."""
        out: dict[str, int] = {}
        for t0, t1 in presses:
            if (t1 - t0) * 1000 <= limit_ms:
                continue
            kinds = sorted({k for k, a, b in self.spans if a < t1 and b > t0 and (k != "update" or (b - a) > 0.03)})
            key = "+".join(kinds) or "nothing timed (waiting for CPU / other threads)"
            out[key] = out.get(key, 0) + 1
        return out

    def summary(self) -> dict:
        out = {k: {"n": len(v), "total_ms": sum(v), "p50_ms": pct(v, 0.5), "max_ms": max(v) if v else None}
               for k, v in self.calls.items()}  # fmt: skip
        out["layout requested by"] = dict(sorted(self.layout_requests.items(), key=lambda kv: -kv[1]))
        return out


def _span_count(db: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT value FROM meta WHERE key = 'span_count'").fetchone()[0])
    finally:
        conn.close()


def _data_end(db: Path) -> int:
    """The start of the newest trace in ``db`` (ns; now when it is empty)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        newest = conn.execute("SELECT max(start_ns) FROM traces").fetchone()[0]
    finally:
        conn.close()
    return int(newest) if newest else time.time_ns()


async def child_measure(args) -> dict:
    from tracetui.store.reader import SqliteReader
    from tracetui.ui.app import TraceTuiApp

    stats = RenderStats() if args.breakdown else None
    out: dict = {"rss_start_mb": proc_status()[0]}
    t0 = time.perf_counter()
    reader = SqliteReader(Path(args.db))
    # The cached database's spans cover the 24 h before it was built, maybe days ago: the app's clock
    # resumes where they end, so that the "1h" window holds their last hour (a 24th of the database)
    # whenever the cache was built. Traffic arriving now is then "in the future", and in every window.
    offset = max(0, time.time_ns() - _data_end(Path(args.db)))
    app = TraceTuiApp(reader, open_reader=lambda: SqliteReader(Path(args.db)), poll_interval=0.2,
                      clock=lambda: time.time_ns() - offset)  # fmt: skip
    watch = Watch(app)

    def list_loaded() -> bool:
        table = _traces_table(app)
        return table is not None and table.row_count > 0 and table.row_at(0) is not None

    def empty_shown() -> bool:
        found = app.screen.query("#empty")
        return bool(found) and found.first().display

    first = watch.arm(empty_shown if args.mode == "empty" else list_loaded)
    async with app.run_test(size=(120, 40)) as pilot:
        hit = await watch.wait(first, 30)
        out["first_paint_ms"] = (hit - t0) * 1000 if hit else None
        if hit:  # the same, counted from the process start (interpreter start-up and imports included)
            import psutil

            wall_hit = time.time() - (time.perf_counter() - hit)
            out["first_paint_from_exec_ms"] = (wall_hit - psutil.Process().create_time()) * 1000
        if args.mode == "empty":
            await pilot.pause(0.5)
            out["rss_mb"], out["peak_rss_mb"] = proc_status()
            return out
        import gc

        out["gc_objects_after_paint"] = len(gc.get_objects())
        table = _traces_table(app)
        out["trace_rows"] = table.row_count
        out["focused"] = type(app.focused).__name__ if app.focused else None
        await pilot.pause(0.3)

        async def open_row(row: int, trace_id_hex: str | None, expected: int | None) -> float | None:
            table = _traces_table(app)
            table.cursor_row = row
            await pilot.pause(0.2)
            target = table.row_at(row)
            by_id = bool(trace_id_hex) and (target is None or target.trace_id.hex() != trace_id_hex)
            if by_id:  # newer traffic sits above it (a database the traffic was written into): open it by id
                out.setdefault("warnings", []).append(f"row {row} is not trace {trace_id_hex}: opened by its id")
            n = expected or (target.span_count if target else 1)

            def first_screen() -> bool:
                w = _waterfall(app)
                return w is not None and w.row_count > 0

            def opened() -> bool:
                w = _waterfall(app)
                return w is not None and w.row_count >= n and getattr(app.screen, "partial", None) is None

            ev = watch.arm(first_screen)
            t = time.perf_counter()
            if by_id and trace_id_hex:
                from tracetui.ui.screens.trace_view import TraceScreen

                app.push_screen(TraceScreen(bytes.fromhex(trace_id_hex)))
            else:
                _key(app, "enter", "\r")
            hit = await watch.wait(ev, 30)
            first_ms = (hit - t) * 1000 if hit else None
            first_rows = _waterfall(app).row_count if hit else None
            ev = watch.arm(opened)
            hit = await watch.wait(ev, 60)
            ms = (hit - t) * 1000 if hit else None
            await pilot.pause(0.3)
            w = _waterfall(app)
            out.setdefault("opened", []).append({"row": row, "spans": n, "rows_drawn": w.row_count if w else None,
                                                  "first_screen_ms": first_ms, "first_rows": first_rows,
                                                  "ms": ms})  # fmt: skip
            ev = watch.arm(lambda: _traces_table(app) is not None)
            _key(app, "escape", "\x1b")
            await watch.wait(ev, 10)
            await pilot.pause(0.3)
            _traces_table(app).cursor_row = 0
            await pilot.pause(0.3)
            return first_ms

        out["open_small_ms"] = await open_row(0, args.small_trace, None)
        if args.big_trace:
            out["open_big_first_ms"] = await open_row(1, args.big_trace, BIG_TRACE_SPANS)
            out["open_big_ms"] = out["opened"][-1]["ms"]
        out["rss_after_open_mb"] = proc_status()[0]
        out["filter"] = filter_times(Path(args.db))
        out["stats"] = await stats_times(app, pilot, watch)
        out["rss_after_stats_mb"] = proc_status()[0]
        app.filter_text = STATS_FILTER  # as `/` + Enter leaves it: Stats opens over the list's filter
        await pilot.pause(1.0)
        out["stats_filtered"] = await stats_times(app, pilot, watch)
        app.filter_text = ""
        await pilot.pause(1.0)
        gc.collect()
        out["gc_objects_after_open"] = len(gc.get_objects())

        if args.traffic:
            print("READY", flush=True)
            line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            if line.strip() != "GO":
                raise SystemExit(f"unexpected {line!r}")
            await asyncio.sleep(args.settle)
        table = _traces_table(app)
        table.focus()
        await pilot.pause(0.2)
        version0 = app.data_version
        rows0 = table.row_count
        repaint, content, placeholders = [], [], 0
        press_spans: list[tuple[float, float]] = []
        if stats:
            stats.active = True
        cpu0 = time.process_time()
        t_keys = time.perf_counter()
        for _i in range(args.presses):
            expected = min(table.row_count - 1, table.cursor_row + 1)
            ev = watch.arm(lambda expected=expected: table.cursor_row == expected)
            t = time.perf_counter()
            _key(app, "j", "j")
            hit = await watch.wait(ev, 5)
            if hit is None:
                repaint.append(5000.0)
                continue
            repaint.append((hit - t) * 1000)
            press_spans.append((t, hit))
            if table.row_at(expected) is None:
                placeholders += 1
                ev = watch.arm(lambda expected=expected: table.row_at(expected) is not None)
                hit = await watch.wait(ev, 5)
                content.append(((hit or t + 5) - t) * 1000)
            else:
                content.append(repaint[-1])
            await asyncio.sleep(args.key_gap)
        out["keys_s"] = time.perf_counter() - t_keys
        out["keys_cpu_s"] = time.process_time() - cpu0
        if stats:
            stats.active = False
            out["breakdown"] = stats.summary()
            out["breakdown"]["presses > 50 ms overlapped"] = stats.explain_slow(press_spans)
        out["repaint_ms"] = repaint
        out["content_ms"] = content
        out["placeholders"] = placeholders
        out["data_changes"] = app.data_version - version0
        out["trace_rows_growth"] = table.row_count - rows0
        out["cursor_row"] = table.cursor_row
        out["displays"] = watch.displays
        out["rss_mb"], out["peak_rss_mb"] = proc_status()
        out["gc_objects_end"] = len(gc.get_objects())
    return out


#: The list filter of the budget: one model's streamed calls with a slow first token.
FILTER = "model=gpt-4o ttft>500ms"
#: A query of the filter step that takes longer than this is interrupted (and reported as "> this").
FILTER_CAP_S = 10.0


def filter_times(db: Path, runs: int = 10) -> dict:
    """What the trace list runs when FILTER is applied, on a fresh reader: the count of matching traces (up
    to the list's cap, FILTER_COUNT_CAP) and the first window of rows (``TraceListScreen`` asks both), ``runs`` times; p50 / p95 of each and of both."""
    import threading

    from tracetui.model.filter import parse
    from tracetui.store.reader import SqliteReader
    from tracetui.ui.screens.trace_list import FILTER_COUNT_CAP

    reader = SqliteReader(db)
    flt = parse(FILTER)
    horizon = reader.max_seq()
    out: dict = {"filter": FILTER, "page_ms": [], "count_ms": [], "matches": None, "count_cap": FILTER_COUNT_CAP}
    try:
        for _ in range(runs):
            t = time.perf_counter()
            reader.traces(0, 100, horizon, flt)
            t1 = time.perf_counter()
            timer = threading.Timer(FILTER_CAP_S, reader._conn.interrupt)
            timer.start()
            try:
                out["matches"] = reader.count_traces(horizon, flt, FILTER_COUNT_CAP)  # as the list counts
            except Exception:  # interrupted: the count is slower than the cap
                out["count_ms"].append(None)
                out["page_ms"].append((t1 - t) * 1000)
                break
            finally:
                timer.cancel()
            out["page_ms"].append((t1 - t) * 1000)
            out["count_ms"].append((time.perf_counter() - t1) * 1000)
    finally:
        reader.close()
    counted = [c for c in out["count_ms"] if c is not None]
    out["page_p95_ms"] = pct(out["page_ms"], 0.95)
    out["count_p95_ms"] = pct(counted, 0.95) if len(counted) == len(out["count_ms"]) else None
    out["both_p95_ms"] = (pct([a + b for a, b in zip(out["page_ms"], counted, strict=False)], 0.95)
                          if out["count_p95_ms"] is not None else None)  # fmt: skip
    return out


#: The filtered Stats step's filter: on a grouping dimension (Stats groups by model, then prompt version).
STATS_FILTER = "model=gpt-4o"
#: The Stats step gives up waiting after this long (the screen goes on computing: the later windows wait for it).
STATS_TIMEOUT_S = 60.0


async def stats_times(app, pilot, watch, timeout: float = STATS_TIMEOUT_S) -> dict:
    """The Stats screen (``S``): from the key to its table filled over "all", then ``w`` to "1h"."""

    def computed(window: str):
        def done() -> bool:
            screen = app.screen
            return (getattr(screen, "window", None) == window and not getattr(screen, "_computing", True)
                    and bool(getattr(screen, "groups", None)))  # fmt: skip

        return done

    out: dict = {}
    ev = watch.arm(computed("all"))
    t = time.perf_counter()
    _key(app, "S", "S")
    hit = await watch.wait(ev, timeout)
    out["all_ms"] = (hit - t) * 1000 if hit else None
    for window in ("5m", "1h"):
        await pilot.pause(0.2)
        ev = watch.arm(computed(window))
        t = time.perf_counter()
        _key(app, "w", "w")
        hit = await watch.wait(ev, timeout)
        out[f"{window}_ms"] = (hit - t) * 1000 if hit else None
        # the "users:" line (thumbs down, abandonment) follows the figures: it reads every call again
        ev = watch.arm(lambda: getattr(app.screen, "feelings_shown_for", 0) == getattr(app.screen, "_feelings_for", 1))
        hit = await watch.wait(ev, timeout)
        out[f"{window}_users_ms"] = (hit - t) * 1000 if hit else None
    ev = watch.arm(lambda: _traces_table(app) is not None)
    _key(app, "escape", "\x1b")
    await watch.wait(ev, 10)
    await pilot.pause(0.3)
    return out


def spans_json_times(db: Path, trace_hex: str) -> dict:
    """``tracetui spans --json`` on one trace: time to its first bytes, to the end, the bytes and the peak RSS."""
    t = time.perf_counter()
    proc = subprocess.Popen([PYTHON, "-m", "tracetui", "spans", "--db", str(db), "--trace", trace_hex, "--json"],
                            stdout=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None
    first = None
    size = 0
    peak_mb = 0.0
    while chunk := proc.stdout.read1(1 << 16):
        if first is None:
            first = time.perf_counter()
        size += len(chunk)
        # VmHWM of the command itself, read while it streams: the ru_maxrss that wait4 reports also counts
        # this process's RSS when it forked the command (Linux carries it across exec): 827 MB after a build.
        hwm = proc_status(proc.pid)[1]
        if hwm == hwm:  # not NaN: the command is still there
            peak_mb = max(peak_mb, hwm)
    code = proc.wait()
    end = time.perf_counter()
    return {"first_bytes_ms": (first - t) * 1000 if first else None, "total_s": end - t, "bytes": size,
            "peak_rss_mb": peak_mb, "ok": code == 0}  # fmt: skip


def run_child(mode: str, db: Path, meta: dict | None, args, *, traffic: bool, on_ready=None) -> dict:
    cmd = [PYTHON, __file__, "--child", mode, "--db", str(db), "--presses", str(args.presses),
           "--key-gap", str(args.key_gap), "--settle", str(args.settle)]  # fmt: skip
    if meta:
        cmd += ["--small-trace", meta["small_trace_id"]]
        if meta.get("big_trace_id"):
            cmd += ["--big-trace", meta["big_trace_id"]]
    if traffic:
        cmd.append("--traffic")
    if args.breakdown:
        cmd.append("--breakdown")
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    result = None
    spy = None
    try:
        for line in proc.stdout:
            if line.strip() == "READY":
                if on_ready is not None:
                    on_ready()
                if args.profile and traffic:
                    out = Path(args.profile)
                    spy = subprocess.Popen(
                        [str(Path(PYTHON).parent / "py-spy"), "record", "--pid", str(proc.pid), "--output", str(out),
                         "--format", "raw" if out.suffix == ".txt" else "speedscope", "--rate", "250", "--threads",
                         "--nonblocking"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )  # fmt: skip
                proc.stdin.write("GO\n")
                proc.stdin.flush()
            elif line.startswith("RESULT "):
                result = json.loads(line[7:])
        proc.wait(120)
        if spy is not None:
            spy.wait(60)  # py-spy writes its file once the child has exited
    finally:
        if proc.poll() is None:
            proc.kill()
    if result is None:
        raise RuntimeError(f"child {mode} failed (exit {proc.returncode})")
    return result


# --- full-text search (issue 21) -------------------------------------------------------------

#: The search step's query mix (FTS5 syntax, as typed in ``text:"…"`` or ``tracetui search``); RARE is
#: replaced by a tool call's order id read from the database (a number in one or two spans).
SEARCH_QUERIES = (("rare word", "RARE"), ("common word", "refund"), ("phrase", '"refund policy"'),
                  ("prefix", "pass*"), ("two words AND", "refund AND timeout"), ("absent word", "zyzzyva"))  # fmt: skip
SEARCH_RUNS = 20


def ensure_text_indexed(db: Path) -> tuple[Path, float | None]:
    """A copy of the cached database with its full-text index built by the real indexer (cached too)."""
    from tracetui.jobs.indexer import reindex

    path = db.with_name(db.stem + "-fts.sqlite")
    if path.exists():
        return path, None
    building = path.with_name(path.name + ".building")
    shutil.copyfile(db, building)
    print(f"  indexing a copy of {db.name} with the real indexer (cached as {path.name})...", flush=True)
    t = time.monotonic()
    reindex(building)
    took = time.monotonic() - t
    for suffix in ("-wal", "-shm", "-health", "-lock"):
        Path(str(building) + suffix).unlink(missing_ok=True)
    os.replace(building, path)
    print(f"  indexed in {took:.0f}s", flush=True)
    return path, took


def search_times(db: Path, runs: int = SEARCH_RUNS) -> dict:
    """Per query of SEARCH_QUERIES: ``tracetui search``'s query (the newest 50 matches with run and
    snippet) and the list's ``text:"…"`` filter (its first 100 rows), p50 / p95 over ``runs``."""
    import re
    import sqlite3

    from tracetui.model.filter import parse
    from tracetui.store import text_index
    from tracetui.store.reader import SqliteReader

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    text = conn.execute("SELECT content FROM span_text WHERE content LIKE '%\"order_id\": %' "
                        "AND id >= (SELECT max(id) / 2 FROM span_text) LIMIT 1").fetchone()  # fmt: skip
    rare = re.search(r'"order_id": (\d+)', text[0] if text else "")
    reader = SqliteReader(db)
    horizon = reader.max_seq()
    out: dict = {"spans": conn.execute("SELECT count(*) FROM span_text").fetchone()[0], "queries": {}}
    try:
        for kind, query in SEARCH_QUERIES:
            if query == "RARE":
                query = rare[1] if rare else "zyzzyva"
            flt = parse(f'text:"{query}"' if '"' not in query else f"text:'{query}'")
            search_ms, filter_ms, hits = [], [], 0
            for _ in range(runs):
                t = time.perf_counter()
                hits = len(text_index.search(conn, query, 50))
                t1 = time.perf_counter()
                reader.traces(0, 100, horizon, flt)
                search_ms.append((t1 - t) * 1000)
                filter_ms.append((time.perf_counter() - t1) * 1000)
            out["queries"][kind] = {"query": query, "hits": hits, "search_p50_ms": pct(search_ms, 0.5),
                                    "search_p95_ms": pct(search_ms, 0.95), "filter_p50_ms": pct(filter_ms, 0.5),
                                    "filter_p95_ms": pct(filter_ms, 0.95)}  # fmt: skip
    finally:
        reader.close()
        conn.close()
    return out


def search_report(sizes: list[int]) -> list[dict]:
    """The search step on the small database (the baseline) and on each size, side by side."""
    small, _ = ensure_db(SMALL_SPANS, big_trace=False)
    dbs = [small] + [ensure_db(n, big_trace=True)[0] for n in sizes]
    results = []
    for db in dbs:
        indexed, took = ensure_text_indexed(db)
        res = search_times(indexed)
        res["db"], res["index_build_s"] = str(indexed), took
        res["index_bytes"] = _index_bytes(indexed)
        results.append(res)
    names = [f"{r['spans']:,} spans" + (" (baseline)" if i == 0 else "") for i, r in enumerate(results)]
    header = f"{'query':36s} " + " ".join(f"{n:>30s}" for n in names)
    print("\nfull-text search: the newest 50 matches (tracetui search) / the list's text:\"…\" filter, p95 of "
          f"{SEARCH_RUNS}; budget <= 200 ms at 1,000,000 spans\n{header}\n" + "-" * len(header))  # fmt: skip
    for kind, _ in SEARCH_QUERIES:
        cells = []
        for r in results:
            q = r["queries"][kind]
            cells.append(f"{q['search_p95_ms']:,.1f} / {q['filter_p95_ms']:,.1f} ms ({q['hits']} hits)")
        label = f"{kind}: {results[-1]['queries'][kind]['query']}"
        print(f"{label[:36]:36s} " + " ".join(f"{c:>30s}" for c in cells))
    print(f"{'index bytes per span':36s} " + " ".join(
        f"{r['index_bytes'] / max(r['spans'], 1):>28,.0f} B" for r in results))  # fmt: skip
    return results


def _index_bytes(db: Path) -> int:
    """Bytes of span_text and its FTS5 tables (dbstat)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'span_text%'").fetchone()[0] or 0
    finally:
        conn.close()


# --- orchestration --------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", default="1000000",
                    help="spans in the big database; several, comma-separated, are measured side by side "
                         "(default 1000000; issue 19: 1000000,10000000)")  # fmt: skip
    ap.add_argument("--rate", type=float, default=5000, help="spans/s arriving during the key presses (0: none)")
    ap.add_argument("--presses", type=int, default=200)
    ap.add_argument("--key-gap", type=float, default=0.03, help="seconds between a repaint and the next key")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds of traffic before the first key press")
    ap.add_argument("--no-copy", action="store_true", help="let the traffic write into the cached database itself")
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--breakdown", action="store_true", help="time layouts / screen updates during the key presses")
    ap.add_argument(
        "--profile",
        metavar="FILE",
        help="py-spy the UI process during the key presses under traffic "
        "(FILE.txt: collapsed stacks, else speedscope JSON)",
    )
    ap.add_argument("--json", help="write all results to this file")
    ap.add_argument("--search", action="store_true",
                    help="only the full-text search step (issue 21): the query mix over each size, indexed by the "
                         "real indexer (the index is built once and cached), with the small database as baseline")  # fmt: skip
    # child mode
    ap.add_argument("--child", choices=("empty", "measure"), help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    ap.add_argument("--small-trace", help=argparse.SUPPRESS)
    ap.add_argument("--big-trace", help=argparse.SUPPRESS)
    ap.add_argument("--traffic", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        args.mode = args.child
        result = asyncio.run(child_measure(args))
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    info = machine_info()
    print(f"machine: {info}", flush=True)
    sizes = [int(n.replace("_", "")) for n in args.spans.split(",")]
    if args.rebuild:
        for n in (*sizes, SMALL_SPANS):
            for p in CACHE.glob(f"db-{n}-*"):
                p.unlink()
    if args.search:
        results = search_report(sizes)
        if args.json:
            Path(args.json).write_text(json.dumps({"machine": info, "search": results}, indent=1, default=str))
        print(f"load average at the end: {tuple(round(x, 2) for x in os.getloadavg())} (start: {info.get('loadavg')})")
        return 0
    small, small_meta = ensure_db(SMALL_SPANS, big_trace=False)
    workdir = CACHE / f"run-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    runs: list[dict] = []
    try:
        print("baseline: app over an empty database", flush=True)
        empty = run_child("empty", empty_db(workdir), None, args, traffic=False)
        print("baseline: app over a small database, no traffic", flush=True)
        base = run_child("measure", small, small_meta, args, traffic=False)
        base_json = spans_json_times(small, small_meta["small_trace_id"])
        for n in sizes:
            big, big_meta = ensure_db(n, big_trace=True)
            runs.append(measure_size(args, workdir, big, big_meta))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    figs: list[Figure] = []
    for run in runs:
        figs += report(args, info, empty, base, run["res"], run["meta"], small_meta, run["arrived"])
    side_by_side(runs, base, base_json)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "args": vars(args), "empty": empty, "small": base,
                                               "small_spans_json": base_json, "runs": runs,
                                               "figures": [f.__dict__ for f in figs]}, indent=1, default=str))  # fmt: skip
    print(f"load average at the end: {tuple(round(x, 2) for x in os.getloadavg())} (start: {info.get('loadavg')})")
    failed = [f.name for f in figs if f.ok is False]
    print(f"\n{len(failed)} budget(s) failed" + (": " + "; ".join(failed) if failed else ""))
    return 0


#: From this size on, the traffic writes into the cached database (a copy of 20 GB costs minutes and disk).
NO_COPY_FROM = 5_000_000


def measure_size(args, workdir: Path, big: Path, big_meta: dict) -> dict:
    """The main child over one big database while traffic arrives, then ``spans --json`` on its big trace."""
    if args.no_copy or big_meta["spans"] >= NO_COPY_FROM:
        work = big
        print(f"the traffic is written into {big} itself (no copy)", flush=True)
    else:
        work = workdir / "big.sqlite"
        t = time.monotonic()
        shutil.copyfile(big, work)
        print(f"copied the big database in {time.monotonic() - t:.1f}s", flush=True)
    db_bytes = big.stat().st_size
    receiver = load = None
    started = {}

    # without a copy, the cached database also holds the traffic of earlier runs
    spans_before = _span_count(work)

    def start_traffic() -> None:
        nonlocal receiver, load
        receiver = ServerProc(tracetui_serve_cmd(work))
        addr = receiver.wait_ready()
        load = Load(addr, clients=4, spans_per_request=512, rate=args.rate, duration=600, seed=3)
        load.wait_ready()
        started["t"] = load.start()
        started["mono"] = time.monotonic()

    print(f"main: app over {big_meta['spans']:,} spans"
          + (f", {args.rate:,.0f} spans/s arriving during the key presses" if args.rate else ""), flush=True)  # fmt: skip
    try:
        res = run_child("measure", work, big_meta, args, traffic=bool(args.rate),
                        on_ready=start_traffic if args.rate else None)  # fmt: skip
    finally:
        if load is not None:
            load.kill()
        traffic_s = time.monotonic() - started.get("mono", time.monotonic())
        if receiver is not None:
            receiver.stop(timeout=30)
    arrived = None
    if args.rate and receiver is not None:
        import sqlite3

        conn = sqlite3.connect(work)
        arrived = conn.execute("SELECT value FROM meta WHERE key = 'span_count'").fetchone()[0] - spans_before
        conn.close()
        arrived = arrived / max(traffic_s, 1e-9)  # spans/s over the whole time the traffic ran
    print("tracetui spans --json on the big trace", flush=True)
    # a database too small for the 100,000-span trace (--spans 10000) has only its small one
    spans_json = spans_json_times(work, big_meta.get("big_trace_id") or big_meta["small_trace_id"])
    return {"res": res, "meta": big_meta, "arrived": arrived, "db_bytes": db_bytes, "spans_json": spans_json}


def side_by_side(runs: list[dict], base: dict, base_json: dict) -> None:
    """The figures of every size in one table (issue 19: 1M and 10M side by side), with the small-db baseline."""

    def ms(v) -> str:
        return "—" if v is None else f"{v:,.0f} ms"

    def stats_ms(v) -> str:
        return f"> {STATS_TIMEOUT_S:.0f} s (timed out)" if v is None else ms(v)

    def first(res: dict, key: str):
        return (res.get("opened") or [{}])[-1].get(key)

    rows: list[tuple[str, str, object]] = [
        ("trace list first paint", "<= 1 s", lambda r, x: ms(r["first_paint_ms"])),
        ("key -> repaint p99 (traffic)", "<= 50 ms",
         lambda r, x: f"{pct(r['repaint_ms'], 0.99):,.1f} ms" if r.get("repaint_ms") else "—"),
        (f"filter {FILTER}: first 100 rows p95", "", lambda r, x: ms(r["filter"]["page_p95_ms"])),
        ("  the count of matching traces p95", "",
         lambda r, x: ms(r["filter"]["count_p95_ms"]) if r["filter"]["count_p95_ms"] is not None
         else f"> {FILTER_CAP_S:.0f} s (interrupted)"),
        ("  both (what the list waits for) p95", "<= 300 ms",
         lambda r, x: ms(r["filter"]["both_p95_ms"]) if r["filter"]["both_p95_ms"] is not None
         else f"> {FILTER_CAP_S:.0f} s"),
        ("Stats screen, all", "<= 1 s", lambda r, x: stats_ms(r["stats"].get("all_ms"))),
        ("Stats screen, 1h (after all)", "<= 300 ms", lambda r, x: stats_ms(r["stats"].get("1h_ms"))),
        ("  ... its users: line (reads every call)", "", lambda r, x: stats_ms(r["stats"].get("1h_users_ms"))),
        (f"Stats filtered {STATS_FILTER}, all", "<= 1 s",
         lambda r, x: stats_ms(r.get("stats_filtered", {}).get("all_ms"))),
        (f"Stats filtered {STATS_FILTER}, 1h", "<= 300 ms",
         lambda r, x: stats_ms(r.get("stats_filtered", {}).get("1h_ms"))),
        (f"open the {BIG_TRACE_SPANS:,}-span trace: first screen", "<= 500 ms",
         lambda r, x: f"{ms(first(r, 'first_screen_ms'))} ({first(r, 'first_rows') or 0:,} rows)"),
        ("  ... all its spans drawn", "", lambda r, x: ms(first(r, "ms"))),
        ("spans --json on it: first bytes", "", lambda r, x: ms(x["spans_json"]["first_bytes_ms"])),
        ("  ... whole / peak RSS", "",
         lambda r, x: f"{x['spans_json']['total_s']:.1f} s / {x['spans_json']['peak_rss_mb']:.0f} MB"),
        ("UI RSS after all steps / peak", "<= 150 MB", lambda r, x: f"{r['rss_mb']:.0f} / {r['peak_rss_mb']:.0f} MB"),
        ("database bytes per span", "", lambda r, x: f"{x['db_bytes'] / x['meta']['spans']:,.0f} B"),
    ]  # fmt: skip
    sizes = [f"{run['meta']['spans']:,} spans" for run in runs]
    base_run = {"meta": {"spans": 1}, "db_bytes": None, "spans_json": base_json}
    header = f"{'figure':44s} {'budget':10s} " + " ".join(f"{s:>24s}" for s in sizes) + f" {'small db (baseline)':>24s}"
    print("\n" + header + "\n" + "-" * len(header))
    for name, budget, get in rows:
        cells = []
        for run in [*runs, None]:
            res, extra = (run["res"], run) if run else (base, base_run)
            try:
                cells.append(str(get(res, extra)))  # type: ignore[operator]
            except (KeyError, TypeError, IndexError, ValueError):
                cells.append("—")
        print(f"{name:44s} {budget:10s} " + " ".join(f"{c:>24s}" for c in cells))


def report(args, info, empty, base, big, big_meta, small_meta, arrived) -> list[Figure]:
    n = big_meta["spans"]
    keys_s = big.get("keys_s") or 0
    traffic = f", {arrived:,.0f} spans/s arrived while the traffic ran" if arrived is not None else ""
    print(f"\nbig run: {big['trace_rows']:,} traces listed, {len(big['repaint_ms'])} key presses in {keys_s:.1f}s, "
          f"{big['data_changes']} data changes seen{traffic}; {big['placeholders']} presses drew a loading row first; "
          f"cursor ended on row {big['cursor_row']}")  # fmt: skip
    figs = [
        Figure(
            f"first paint, {n:,} spans",
            big["first_paint_ms"] or math.nan,
            "ms",
            base["first_paint_ms"],
            f"{small_meta['spans']:,} spans",
            "<= 1000 ms",
            (big["first_paint_ms"] or 1e9) <= 1000,
        ),  # fmt: skip
        Figure(
            "first paint incl. process start + imports",
            big.get("first_paint_from_exec_ms") or math.nan,
            "ms",
            base.get("first_paint_from_exec_ms"),
            f"{small_meta['spans']:,} spans",
        ),  # fmt: skip
        Figure(
            "key -> repaint p50" + (" (traffic)" if args.rate else ""),
            pct(big["repaint_ms"], 0.5),
            "ms",
            pct(base["repaint_ms"], 0.5),
            "small db, no traffic",
        ),  # fmt: skip
        Figure(
            "key -> repaint p99" + (" (traffic)" if args.rate else ""),
            pct(big["repaint_ms"], 0.99),
            "ms",
            pct(base["repaint_ms"], 0.99),
            "small db, no traffic",
            "<= 50 ms",
            pct(big["repaint_ms"], 0.99) <= 50,
        ),  # fmt: skip
        Figure(
            "key -> row content drawn p99",
            pct(big["content_ms"], 0.99),
            "ms",
            pct(base["content_ms"], 0.99),
            "small db, no traffic",
        ),  # fmt: skip
        Figure("key -> repaint max", max(big["repaint_ms"]), "ms", max(base["repaint_ms"]), "small db, no traffic"),
        Figure(
            f"open a {BIG_TRACE_SPANS:,}-span trace: first screen",
            big.get("open_big_first_ms") or math.nan,
            "ms",
            big.get("open_small_ms"),
            "10-span trace, same db",
            "<= 500 ms",
            (big.get("open_big_first_ms") or 1e9) <= 500,
        ),  # fmt: skip
        Figure(
            f"open a {BIG_TRACE_SPANS:,}-span trace: all spans drawn",
            big.get("open_big_ms") or math.nan,
            "ms",
            big.get("open_small_ms"),
            "10-span trace, same db",
        ),  # fmt: skip
        Figure(
            "UI RSS after all steps",
            big["rss_mb"],
            "MB",
            empty["rss_mb"],
            "empty db",
            "<= 150 MB",
            big["rss_mb"] <= 150,
        ),  # fmt: skip
        Figure(
            "UI peak RSS",
            big["peak_rss_mb"],
            "MB",
            base["peak_rss_mb"],
            "small db",
            "<= 150 MB",
            big["peak_rss_mb"] <= 150,
        ),  # fmt: skip
        Figure("UI RSS, small db", base["rss_mb"], "MB", empty["rss_mb"], "empty db"),
    ]
    for name, res in (("small db", base), ("big db", big)):
        print(
            f"{name}: Python objects tracked by gc: {res['gc_objects_after_paint']:,} after first paint, "
            f"{res['gc_objects_after_open']:,} after opening and closing trace(s), {res['gc_objects_end']:,} at the end"
        )
        print(
            f"{name}: key phase {res['keys_s']:.1f}s wall, {res['keys_cpu_s']:.1f}s CPU in the UI process"
            + (f" ({res['keys_cpu_s'] / res['keys_s']:.0%} of one core)" if res["keys_s"] else "")
        )
        for k, v in (res.get("breakdown") or {}).items():
            if "n" not in v:
                print(f"    {k}: {v}")
                continue
            print(f"    {k:14s} n={v['n']:5d}  total {v['total_ms']:8.0f} ms  p50 {v['p50_ms']:6.1f} ms  max "
                  f"{(v['max_ms'] or 0):6.1f} ms")  # fmt: skip
    print_table(f"UI figures ({n:,}-span database vs baselines measured in the same run)", figs)
    return figs


if __name__ == "__main__":
    sys.exit(main())

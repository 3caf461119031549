"""ClickHouse backend benchmark: the real Textual app over the exporter's tables in chdb, at 10 million spans.

    .venv/bin/python benchmarks/clickhouse.py            # 10M and 1M spans, chdb and SQLite: ~5 min once built
                                                         # (first builds ~9 min and ~22 GB in /tmp/bench-ch)
    .venv/bin/python benchmarks/clickhouse.py --spans 1000000 --baseline-spans 0      # quick: ~2 min once built

Steps:

1. Traffic: the agent runs of ui.py (``common.TraceFactory``: 16 pre-built requests
   of 512 spans, runs of 8-12 spans, ~4 chat calls each with ~2.7 KB of messages,
   60 % streaming with a first-chunk event, half of those with
   ``gen_ai.response.time_to_first_chunk``, 6 % rate-limit errors, tool calls),
   plus a ``gen_ai.evaluation.result`` event (groundedness) on 10 % of the chat
   calls. Batch ``i`` is template ``i % 16`` with its trace ids' first 8 bytes
   replaced by a nonce of ``i`` and its times shifted to ``t_start + i * step``:
   N spans spread evenly over 24 hours. Plus one 10,000-span trace
   (``plan_big_trace``, list row 1) and one 10-span trace (the newest, row 0).
   The plan (times, salt) is stored per size, so every store of one size holds
   the very same traces.
2. ClickHouse (cached under /tmp/bench-ch/, keyed by size): a chdb directory with
   the exporter's DDL verbatim (``schema.create_statements``). The 16 templates go
   through the real converter (``convert.trace_rows``) into a scratch table; the N
   spans are ``INSERT INTO otel_traces SELECT`` from it crossed with ``numbers()``,
   rewriting only ``TraceId`` and the times, so the materialized view fills
   ``otel_traces_trace_id_ts`` as the exporter's inserts do. The two extra traces
   go through ``load.insert_requests``. Checked after the build: sample batches
   read back equal ``trace_rows`` of the same requests built in Python, and the
   ``ClickHouseReader`` sees the LLM calls, tokens, TTFT and evaluations.
3. SQLite, the same-run baseline: the same traces through the real ``decode_spans``
   and ``Writer`` (decoding in 2 worker processes, as ui.py builds its database), at
   ``--spans`` (first build ~6 minutes and ~20 GB at 10M; ``--no-sqlite-big`` skips
   it) and at ``--baseline-spans`` (default 1M), where chdb is measured too. Checked:
   on the same traces both readers give the same first page of the list (every
   figure of 200 runs) and the same Stats groups.
4. Each store in a fresh UI process (headless ``run_test``, as ui.py, with the
   watcher thread polling every 0.2 s as ``tracetui view`` does; for ClickHouse the
   readers come from ``cli.common.clickhouse_readers``, which starts the chdb server
   subprocess; the app's clock is set to the data's "now"). No traffic arrives (no
   Collector writes), so the watcher computes the header's counters once. In order:
   * first paint: creating the reader -> the first screen update with trace rows
     (for chdb also counted from before the server starts); and, in a separate
     process without the watcher thread, the list's first paint alone;
   * the header's counters shown (the watcher's first ``counters()``); then the
     steps below, each after the previous one's screen is drawn;
   * key -> repaint: ``j`` x ``--presses``, from posting the key to the first screen
     update with the cursor moved (and until that row's content is drawn);
   * open the 10,000-span trace: Enter -> every row in the waterfall;
   * Stats (``S``): the screen until its table shows the groups, window "all" = the
     24 hours of data;
   * memory: the UI process's RSS and peak (VmHWM), and apart from it the chdb
     server's (its own VmHWM);
   * then, in the same process, the reader calls alone (wall and the UI process's
     CPU; the chdb server's CPU beside it): ``traces(0, 200)``, ``count_traces``,
     ``counters``, ``spans`` of the big trace, ``query.stats.compute(by="model",
     window_s=86400)``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PYTHON, TraceFactory, build_request, build_templates, machine_info, pct, proc_status  # noqa: E402

BUILDER_VERSION = 1
CACHE = Path("/tmp/bench-ch")
SEED = 7
TEMPLATES = 16
SPANS_PER_REQUEST = 512
BIG_TRACE_SPANS = 10_000
DAY_NS = 24 * 3600 * 1_000_000_000
#: Share of chat calls that get a groundedness evaluation event.
EVALUATED = 0.10
#: Replicas (of all 16 templates: 8,192 spans) per INSERT ... SELECT.
REPLICAS_PER_INSERT = 64


# --- the traffic: one plan per size, the same for every store -------------------------------


def plan_for(n_spans: int) -> dict:
    """Times and ids of an N-span data set, made once and kept (so later builds of other stores match)."""
    path = CACHE / f"plan-{n_spans}-b{BUILDER_VERSION}.json"
    if path.exists():
        return json.loads(path.read_text())
    rng = random.Random(n_spans)
    n_batches = max(TEMPLATES, n_spans // SPANS_PER_REQUEST // TEMPLATES * TEMPLATES)
    t_end = time.time_ns() - 120 * 1_000_000_000
    plan = {
        "spans": n_batches * SPANS_PER_REQUEST,
        "batches": n_batches,
        "t_end": t_end,
        "t_start": t_end - DAY_NS,
        "t_step": DAY_NS // n_batches,
        "salt": rng.randbytes(3).hex(),
        "big_trace_id": rng.randbytes(16).hex(),
        "small_trace_id": rng.randbytes(16).hex(),
    }
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan))
    return plan


def make_templates() -> tuple[list[bytes], bytes, list[int]]:
    """The 16 template requests (serialized), the trace-id marker they carry, each one's earliest start."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    raw, cur, _prev = build_templates(SEED, TEMPLATES, SPANS_PER_REQUEST, split=False)
    rng = random.Random(SEED ^ 0xE7A1)
    out, starts = [], []
    for t in raw:
        req = ExportTraceServiceRequest.FromString(t.data)
        spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
        for s in spans:
            if s.name.startswith("chat ") and rng.random() < EVALUATED:
                score = round(rng.betavariate(5, 1.5), 3)
                e = s.events.add(time_unix_nano=s.end_time_unix_nano + 1_000_000, name="gen_ai.evaluation.result")
                for k, v in (("gen_ai.evaluation.name", "groundedness"), ("gen_ai.evaluation.score.label",
                             "pass" if score >= 0.5 else "fail")):  # fmt: skip
                    kv = e.attributes.add(key=k)
                    kv.value.string_value = v
                kv = e.attributes.add(key="gen_ai.evaluation.score.value")
                kv.value.double_value = score
        data = req.SerializeToString()
        if data.count(cur) != len(spans):
            raise RuntimeError("the trace-id marker occurs outside the trace ids")
        out.append(data)
        starts.append(min(s.start_time_unix_nano for s in spans))
    return out, cur, starts


def nonce_hex(plan: dict, i: int) -> str:
    """The first 8 bytes of batch ``i``'s trace ids (common.nonce's layout: salt, client 0, sequence)."""
    return plan["salt"] + "00" + f"{i & 0xFFFFFFFF:08x}"


def batch_request(templates: list[bytes], cur: bytes, starts: list[int], plan: dict, i: int):
    """Batch ``i`` as an ExportTraceServiceRequest, built in Python (the SQLite builder, and the check)."""
    from tracetui.otlp.decode import parse_trace_request

    k = i % TEMPLATES
    req = parse_trace_request(templates[k].replace(cur, bytes.fromhex(nonce_hex(plan, i))))
    shift = plan["t_start"] + i * plan["t_step"] - starts[k]
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for s in ss.spans:
                s.start_time_unix_nano += shift
                s.end_time_unix_nano += shift
                for e in s.events:
                    e.time_unix_nano += shift
    return req


def extra_requests(plan: dict) -> list:
    """The 10,000-span trace (in 512-span requests) and the newest 10-span trace."""
    factory = TraceFactory(SEED + 99)
    big_id = bytes.fromhex(plan["big_trace_id"])
    specs = factory.plan_big_trace(plan["t_end"] + 30 * 1_000_000_000, BIG_TRACE_SPANS)
    spans = [(s.scope, factory.to_span(s, big_id)) for s in specs]
    out = [build_request(spans[i : i + SPANS_PER_REQUEST]) for i in range(0, len(spans), SPANS_PER_REQUEST)]
    factory = TraceFactory(SEED + 123)
    small_id = bytes.fromhex(plan["small_trace_id"])
    specs = factory.plan_trace(plan["t_end"] + 60 * 1_000_000_000, 10)
    out.append(build_request([(s.scope, factory.to_span(s, small_id)) for s in specs]))
    return out


# --- ClickHouse ------------------------------------------------------------------------------


def ch_path(n_spans: int) -> Path:
    return CACHE / f"chdb-{n_spans}-b{BUILDER_VERSION}"


def _replicate_sql(plan: dict, cur_hex: str, r0: int, r1: int) -> str:
    """Replicas r0..r1-1 of the templates as otel_traces rows: batch i = r * 16 + k."""
    i = f"(n.number * {TEMPLATES} + t.k)"
    shift = f"(toInt64({plan['t_start']}) + {i} * {plan['t_step']} - t.start_k)"
    trace_id = (f"concat('{plan['salt']}00', leftPad(lower(hex(toUInt32({i}))), 8, '0'), "
                f"substring(t.TraceId, {len(cur_hex) + 1}))")  # fmt: skip
    cols = {
        "Timestamp": f"fromUnixTimestamp64Nano(toUnixTimestamp64Nano(t.Timestamp) + {shift})",
        "TraceId": trace_id,
        "Events.Timestamp": f"arrayMap(x -> fromUnixTimestamp64Nano(toUnixTimestamp64Nano(x) + {shift}), "
        "t.`Events.Timestamp`)",
    }
    from tracetui.clickhouse.convert import TRACE_COLUMNS

    select = ", ".join(cols.get(c, f"t.`{c}`") for c in TRACE_COLUMNS)
    names = ", ".join(f"`{c}`" for c in TRACE_COLUMNS)
    return (f"INSERT INTO otel_traces ({names}) SELECT {select} FROM bench_templates AS t "
            f"CROSS JOIN numbers({r0}, {r1 - r0}) AS n")  # fmt: skip


def build_ch(n_spans: int) -> dict:
    """Build the chdb directory for ``n_spans`` (see the module docstring); its metadata."""
    from tracetui.clickhouse.connect import connect, parse_source
    from tracetui.clickhouse.convert import TRACE_COLUMNS, trace_rows
    from tracetui.clickhouse.load import insert_requests
    from tracetui.clickhouse.schema import create_statements
    from tracetui.otlp.decode import parse_trace_request

    plan = plan_for(n_spans)
    path = ch_path(n_spans)
    tmp = path.with_name(path.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.monotonic()
    templates, cur, starts = make_templates()
    conn = connect(parse_source(f"chdb:{tmp}"), create_database=True)
    try:
        client = conn.client
        for statement in create_statements("default"):
            client.command(statement)
        names = ", ".join(f"`{c}`" for c in TRACE_COLUMNS)
        client.command(f"CREATE TABLE bench_templates ENGINE = MergeTree ORDER BY tuple() AS SELECT {names}, "
                       "toUInt32(0) AS k, toInt64(0) AS start_k FROM otel_traces WHERE 0")  # fmt: skip
        rows = []
        for k, data in enumerate(templates):
            rows += [(*r, k, starts[k]) for r in trace_rows(parse_trace_request(data))]
        client.insert("bench_templates", rows, column_names=[*TRACE_COLUMNS, "k", "start_k"])
        replicas = plan["batches"] // TEMPLATES
        settings = {"max_threads": 2, "max_insert_threads": 2, "max_block_size": 8192,
                    "min_insert_block_size_rows": 262_144, "max_insert_block_size": 262_144}  # fmt: skip
        for r0 in range(0, replicas, REPLICAS_PER_INSERT):
            r1 = min(replicas, r0 + REPLICAS_PER_INSERT)
            client.command(_replicate_sql(plan, cur.hex(), r0, r1), settings=settings)
            el = time.monotonic() - t0
            done = r1 * TEMPLATES * SPANS_PER_REQUEST
            print(f"  chdb: {done:,} spans in {el:.0f}s ({done / el:,.0f} spans/s)", flush=True)
        client.command("DROP TABLE bench_templates")
        insert_requests(conn, extra_requests(plan), [])
        t_merge = time.monotonic()
        client.command("OPTIMIZE TABLE otel_traces FINAL")
        client.command("OPTIMIZE TABLE otel_traces_trace_id_ts FINAL")
        merge_s = time.monotonic() - t_merge
        parts = client.query(
            "SELECT table, count(), sum(rows), sum(bytes_on_disk), sum(data_uncompressed_bytes) FROM system.parts "
            "WHERE active AND database = 'default' GROUP BY table"
        ).result_rows
    finally:
        conn.close()
    os.replace(tmp, path)
    meta = {"plan": plan, "spans": plan["spans"] + BIG_TRACE_SPANS + 10, "build_s": time.monotonic() - t0,
            "optimize_s": merge_s,
            "parts": {t: {"parts": p, "rows": r, "bytes": b, "uncompressed": u} for t, p, r, b, u in parts}}  # fmt: skip
    (path.with_name(path.name + ".json")).write_text(json.dumps(meta))
    tr = meta["parts"]["otel_traces"]
    print(f"  built {path}: {tr['rows']:,} rows, {tr['bytes'] / 2**20:,.0f} MB on disk "
          f"({tr['uncompressed'] / 2**20:,.0f} MB uncompressed), {meta['build_s']:.0f}s", flush=True)  # fmt: skip
    return meta


def ensure_ch(n_spans: int, rebuild: bool = False) -> tuple[Path, dict]:
    path = ch_path(n_spans)
    meta = path.with_name(path.name + ".json")
    if rebuild:
        shutil.rmtree(path, ignore_errors=True)
        meta.unlink(missing_ok=True)
    if path.exists() and meta.exists():
        return path, json.loads(meta.read_text())
    print(f"building a chdb directory of {n_spans:,} spans at {path} (cached for later runs)...", flush=True)
    return path, build_ch(n_spans)


# --- SQLite ----------------------------------------------------------------------------------

_W: dict = {}


def _worker_init(plan: dict) -> None:
    templates, cur, starts = make_templates()
    _W.update(templates=templates, cur=cur, starts=starts, plan=plan)


def _decode_batch(i: int):
    from tracetui.otlp.decode import decode_spans

    return decode_spans(batch_request(_W["templates"], _W["cur"], _W["starts"], _W["plan"], i))


def sqlite_path(n_spans: int) -> Path:
    from tracetui.store.schema import SCHEMA_VERSION

    return CACHE / f"sqlite-{n_spans}-s{SCHEMA_VERSION}-b{BUILDER_VERSION}.sqlite"


def build_sqlite(n_spans: int) -> dict:
    """The same traces through the real decoder and writer (decoding in 2 worker processes, as ui.py)."""
    from tracetui.otlp.decode import decode_spans
    from tracetui.store.writer import Writer

    plan = plan_for(n_spans)
    path = sqlite_path(n_spans)
    tmp = path.with_name(path.name + ".building")
    for suffix in ("", "-wal", "-shm", "-health", "-lock"):
        Path(str(tmp) + suffix).unlink(missing_ok=True)
    t0 = time.monotonic()
    writer = Writer(tmp, max_pending_spans=1_000_000)
    writer.start()
    tickets = []
    n = plan["batches"]
    with ProcessPoolExecutor(2, initializer=_worker_init, initargs=(plan,)) as pool:
        futures = [pool.submit(_decode_batch, i) for i in range(min(8, n))]
        submitted = len(futures)
        done = 0
        while futures:
            tickets.append(writer.submit(futures.pop(0).result()))
            if submitted < n:
                futures.append(pool.submit(_decode_batch, submitted))
                submitted += 1
            while len(tickets) > 4:
                tickets.pop(0).wait()
            done += 1
            if done % 400 == 0:
                el = time.monotonic() - t0
                print(f"  sqlite: {done * SPANS_PER_REQUEST:,} spans in {el:.0f}s", flush=True)
    for t in tickets:
        t.wait()
    for req in extra_requests(plan):
        writer.submit(decode_spans(req)).wait()
    writer.stop()
    for suffix in ("-wal", "-shm", "-health", "-lock"):
        Path(str(tmp) + suffix).unlink(missing_ok=True)
    os.replace(tmp, path)
    meta = {"plan": plan, "spans": plan["spans"] + BIG_TRACE_SPANS + 10, "build_s": time.monotonic() - t0,
            "bytes": path.stat().st_size}  # fmt: skip
    Path(str(path) + ".json").write_text(json.dumps(meta))
    print(f"  built {path} ({meta['bytes'] / 2**20:,.0f} MB) in {meta['build_s']:.0f}s", flush=True)
    return meta


def ensure_sqlite(n_spans: int, rebuild: bool = False) -> tuple[Path, dict]:
    path = sqlite_path(n_spans)
    meta = Path(str(path) + ".json")
    if rebuild:
        path.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
    if path.exists() and meta.exists():
        return path, json.loads(meta.read_text())
    print(f"building a SQLite database of {n_spans:,} spans at {path} (cached for later runs)...", flush=True)
    return path, build_sqlite(n_spans)


# --- checks: the rows are the exporter's, and the reader sees the LLM data --------------------


def _canon(value):
    if isinstance(value, dict):
        return tuple(sorted((k, _canon(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_canon(v) for v in value)
    return value


def check_rows(client, plan: dict, batches: list[int]) -> int:
    """Batches read back from otel_traces equal ``trace_rows`` of the same requests built in Python."""
    from tracetui.clickhouse.convert import trace_rows
    from tracetui.clickhouse.reader import SPAN_SELECT

    templates, cur, starts = make_templates()
    checked = 0
    for i in batches:
        want = sorted(_canon(r) for r in trace_rows(batch_request(templates, cur, starts, plan, i)))
        got = sorted(
            _canon(r)
            for r in client.query(
                f"SELECT {SPAN_SELECT} FROM otel_traces WHERE startsWith(TraceId, {{p:String}})",
                parameters={"p": nonce_hex(plan, i)},
            ).result_rows
        )
        if got != want:
            diff = next((a, b) for a, b in zip(got, want, strict=False) if a != b) if got and want else None
            raise RuntimeError(f"batch {i}: {len(got)} rows read back, {len(want)} expected; first difference {diff}")
        checked += len(got)
    return checked


def check_readers(ch_dir: Path, sqlite_db: Path | None, plan: dict) -> dict:
    """The ClickHouseReader sees the LLM data (and, given the SQLite database of the same traces, the same)."""
    from tracetui.cli.common import SourceChoice, clickhouse_readers
    from tracetui.query import stats
    from tracetui.store.reader import SqliteReader

    now = plan["t_end"] + 120 * 1_000_000_000
    open_one, conn = clickhouse_readers(SourceChoice(f"chdb:{ch_dir}"))
    try:
        rows_checked = check_rows(conn.client, plan, [0, 1, plan["batches"] // 2, plan["batches"] - 1])
        readers = {"clickhouse": open_one()}
        if sqlite_db is not None:
            readers["sqlite"] = SqliteReader(sqlite_db)
        seen: dict[str, dict] = {}
        for name, reader in readers.items():
            page = reader.traces(0, 200)
            groups = stats.compute(reader, "model", window_s=86400, now_ns=now)
            seen[name] = {
                "rows": [(r.trace_id.hex(), r.span_count, r.error_count, r.llm_calls, r.input_tokens, r.output_tokens,
                          round(r.cost_usd or 0, 9), r.split_ttft_ns, r.evals_total,
                          None if r.groundedness is None else round(r.groundedness, 9)) for r in page],
                "groups": [(g.key, g.count, g.runs, g.p50_ms, g.p99_ms, g.ttft_p50_ms, round(g.error_rate, 9),
                            None if g.groundedness is None else round(g.groundedness, 9),
                            None if g.cost_per_run is None else round(g.cost_per_run, 9)) for g in groups],
            }  # fmt: skip
        ch = seen["clickhouse"]
        summary = {
            "rows_equal_to_converter": rows_checked,
            "page_rows": len(ch["rows"]),
            "page_llm_calls": sum(r[3] for r in ch["rows"]),
            "page_tokens": sum(r[4] + r[5] for r in ch["rows"]),
            "page_rows_with_ttft": sum(1 for r in ch["rows"] if r[7] > 0),
            "page_rows_with_evaluations": sum(1 for r in ch["rows"] if r[8] > 0),
            "stats_groups": {g[0]: {"calls": g[1], "ttft_p50_ms": g[5], "groundedness": g[7]} for g in ch["groups"]},
        }
        if not (summary["page_llm_calls"] and summary["page_rows_with_ttft"] and summary["page_rows_with_evaluations"]
                and all(g[1] and g[5] and g[7] for g in ch["groups"])):  # fmt: skip
            raise RuntimeError(f"the ClickHouse reader does not see the LLM data: {summary}")
        if "sqlite" in seen:
            summary["same_as_sqlite"] = {k: seen["sqlite"][k] == ch[k] for k in ("rows", "groups")}
            if not all(summary["same_as_sqlite"].values()):
                raise RuntimeError(f"ClickHouse and SQLite readers differ on the same traces: {summary}")
        for reader in readers.values():
            reader.close()
    finally:
        conn.close()
    return summary


# --- the measuring child ----------------------------------------------------------------------


class Cpu:
    """CPU seconds (user + system) of this process and of the chdb server, since the last mark."""

    def __init__(self, server_pid: int | None) -> None:
        import psutil

        self._server = psutil.Process(server_pid) if server_pid else None
        self._mark = self._now()

    def _now(self) -> tuple[float, float]:
        server = sum(self._server.cpu_times()[:2]) if self._server is not None else 0.0
        return time.process_time(), server

    def lap(self) -> dict:
        now = self._now()
        out = {"ui_cpu_s": now[0] - self._mark[0]}
        if self._server is not None:
            out["server_cpu_s"] = now[1] - self._mark[1]
        self._mark = now
        return out


async def child_measure(args) -> dict:
    from ui import Watch, _key, _traces_table, _waterfall

    from tracetui.ui.app import TraceTuiApp

    out: dict = {"backend": args.backend, "rss_start_mb": proc_status()[0]}
    plan_now = args.now_ns
    wall0 = time.time_ns()

    def clock() -> int:  # "now" as when the data was made, so that its 24 hours stay the last 24 hours
        return plan_now + (time.time_ns() - wall0)

    t_start = time.perf_counter()
    conn = None
    if args.backend == "clickhouse":
        from tracetui.cli.common import SourceChoice, clickhouse_readers

        open_one, conn = clickhouse_readers(SourceChoice(f"chdb:{args.path}"))
        out["server_start_ms"] = (time.perf_counter() - t_start) * 1000
    else:
        from tracetui.store.reader import SqliteReader

        def open_one(owner: bool = False):
            return SqliteReader(Path(args.path))

    cpu = Cpu(conn.server_pid if conn is not None else None)
    peaks: dict[str, float] = {}
    out["peak_rss_by_step_mb"] = peaks
    t0 = time.perf_counter()
    reader = open_one()
    # The watcher thread polls every 0.2 s, as in `tracetui view`; --no-watcher: none (the list alone).
    app = TraceTuiApp(reader, open_reader=open_one, pins=None, clock=clock,
                      poll_interval=None if args.no_watcher else 0.2)  # fmt: skip
    watch = Watch(app)

    def list_loaded() -> bool:
        table = _traces_table(app)
        return table is not None and table.row_count > 0 and table.row_at(0) is not None

    first = watch.arm(list_loaded)
    async with app.run_test(size=(120, 40)) as pilot:
        hit = await watch.wait(first, 300)
        out["first_paint_ms"] = (hit - t0) * 1000 if hit else None
        out["first_paint_incl_server_ms"] = (hit - t_start) * 1000 if hit else None
        out["first_paint_cpu"] = cpu.lap()
        table = _traces_table(app)
        out["trace_rows"] = table.row_count
        peaks["first paint"] = proc_status()[1]
        if args.no_watcher:
            await pilot.pause(0.5)
            out["rss_mb"], out["peak_rss_mb"] = proc_status()
            reader.close()
            if conn is not None:
                conn.close()
            return out
        # The watcher's first counters (the header's totals) share the connection's lock with the list.
        t = time.perf_counter()
        while app.counters is None and time.perf_counter() - t < 300:
            await pilot.pause(0.05)
        out["counters_ready_ms"] = (time.perf_counter() - t0) * 1000
        out["counters_cpu"] = cpu.lap()
        await pilot.pause(0.5)

        async def open_row(row: int, trace_id_hex: str, expected: int) -> dict:
            table = _traces_table(app)
            table.cursor_row = row
            await pilot.pause(0.3)
            target = table.row_at(row)
            if target is None or target.trace_id.hex() != trace_id_hex:
                out.setdefault("warnings", []).append(f"row {row} is not trace {trace_id_hex}")
            cpu.lap()
            ev = watch.arm(lambda: (w := _waterfall(app)) is not None and w.row_count >= expected)
            t = time.perf_counter()
            _key(app, "enter", "\r")
            hit = await watch.wait(ev, 120)
            res = {"spans": expected, "ms": (hit - t) * 1000 if hit else None, **cpu.lap()}
            await pilot.pause(0.3)
            ev = watch.arm(lambda: _traces_table(app) is not None)
            _key(app, "escape", "\x1b")
            await watch.wait(ev, 10)
            await pilot.pause(0.3)
            _traces_table(app).cursor_row = 0
            await pilot.pause(0.5)
            return res

        out["open_small"] = await open_row(0, args.small_trace, 10)
        out["open_big"] = await open_row(1, args.big_trace, BIG_TRACE_SPANS)
        peaks["open traces"] = proc_status()[1]

        table = _traces_table(app)
        table.focus()
        await pilot.pause(0.3)
        repaint, content, placeholders = [], [], 0
        cpu.lap()
        t_keys = time.perf_counter()
        for _ in range(args.presses):
            expected = min(table.row_count - 1, table.cursor_row + 1)
            ev = watch.arm(lambda expected=expected: table.cursor_row == expected)
            t = time.perf_counter()
            _key(app, "j", "j")
            hit = await watch.wait(ev, 60)
            if hit is None:
                repaint.append(60_000.0)
                continue
            repaint.append((hit - t) * 1000)
            if table.row_at(expected) is None:
                placeholders += 1
                ev = watch.arm(lambda expected=expected: table.row_at(expected) is not None)
                hit = await watch.wait(ev, 60)
                content.append(((hit or t + 60) - t) * 1000)
            else:
                content.append(repaint[-1])
            await asyncio.sleep(args.key_gap)
        out["keys"] = {"s": time.perf_counter() - t_keys, **cpu.lap(), "placeholders": placeholders,
                       "cursor_row": table.cursor_row}  # fmt: skip
        out["repaint_ms"], out["content_ms"] = repaint, content
        peaks["key presses"] = proc_status()[1]
        _key(app, "g", "g")  # back to the top (follows the newest again)
        await pilot.pause(1.0)

        # The Stats screen: window "all" = the 24 hours of data, by model.
        cpu.lap()

        def stats_shown() -> bool:
            found = app.screen.query("#stats-table")
            return bool(found) and found.first().row_count > 0

        ev = watch.arm(stats_shown)
        t = time.perf_counter()
        _key(app, "S", "S")
        hit = await watch.wait(ev, 600)
        out["stats"] = {"ms": (hit - t) * 1000 if hit else None, **cpu.lap()}
        found = app.screen.query("#stats-table")
        out["stats"]["groups"] = found.first().row_count if found else 0
        peaks["stats"] = proc_status()[1]
        _key(app, "escape", "\x1b")
        await pilot.pause(0.5)
        out["rss_mb"], out["peak_rss_mb"] = proc_status()
        if conn is not None:
            out["server_rss_mb"], out["server_peak_rss_mb"] = proc_status(conn.server_pid)
    reader.close()

    # The reader's calls alone, on a fresh reader (its caches empty; the server's and the OS's warm).
    from tracetui.query import stats

    calls = {}
    fresh = open_one()
    big = bytes.fromhex(args.big_trace)
    for name, call in (
        ("max_seq()", fresh.max_seq),
        ("count_traces()", fresh.count_traces),
        ("traces(0, 200), first", lambda: fresh.traces(0, 200)),
        ("traces(0, 200), again", lambda: fresh.traces(0, 200)),
        ("traces(1000, 200)", lambda: fresh.traces(1000, 200)),
        ("counters()", fresh.counters),
        ("spans(10,000-span trace)", lambda: fresh.spans(big)),
        ("stats.compute(model, 24 h)", lambda: stats.compute(fresh, "model", window_s=86400, now_ns=clock())),
    ):
        cpu.lap()
        t = time.perf_counter()
        call()
        calls[name] = {"ms": (time.perf_counter() - t) * 1000, **cpu.lap()}
        print(f"  {args.backend}: {name}: {calls[name]}", file=sys.stderr, flush=True)
    out["reader_calls"] = calls
    fresh.close()
    out["rss_end_mb"], out["peak_rss_end_mb"] = proc_status()
    if conn is not None:
        out["server_rss_end_mb"], out["server_peak_rss_end_mb"] = proc_status(conn.server_pid)
        conn.close()
    return out


def run_child(backend: str, path: Path, meta: dict, args, *, no_watcher: bool = False) -> dict:
    plan = meta["plan"]
    cmd = [PYTHON, __file__, "--child", backend, "--path", str(path), "--presses", str(args.presses),
           "--key-gap", str(args.key_gap), "--now-ns", str(plan["t_end"] + 120 * 1_000_000_000),
           "--big-trace", plan["big_trace_id"], "--small-trace", plan["small_trace_id"]]  # fmt: skip
    if no_watcher:
        cmd.append("--no-watcher")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=1800)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"child {backend} {path} failed (exit {proc.returncode})")


# --- orchestration ----------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=10_000_000, help="spans in chdb (default 10,000,000)")
    ap.add_argument("--baseline-spans", type=int, default=1_000_000,
                    help="size of the same-run baseline pair, SQLite and chdb on the same traces (0: none)")  # fmt: skip
    ap.add_argument("--no-sqlite-big", action="store_true",
                    help="no SQLite database at --spans (its first build takes ~10 minutes and ~20 GB at 10M)")  # fmt: skip
    ap.add_argument("--presses", type=int, default=200)
    ap.add_argument("--key-gap", type=float, default=0.03, help="seconds between a repaint and the next key")
    ap.add_argument("--rebuild", action="store_true", help="build the stores again (else cached in /tmp/bench-ch)")
    ap.add_argument("--json", help="write all results to this file")
    ap.add_argument("--child", choices=("clickhouse", "sqlite"), help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--now-ns", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--big-trace", help=argparse.SUPPRESS)
    ap.add_argument("--small-trace", help=argparse.SUPPRESS)
    ap.add_argument("--no-watcher", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        args.backend = args.child
        result = asyncio.run(child_measure(args))
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    info = machine_info()
    print(f"machine: {info}", flush=True)
    t_run = time.monotonic()
    # (key, backend, size): SQLite and chdb on the same traces at the baseline size and at --spans.
    wanted = []
    if args.baseline_spans:
        wanted += [("sqlite_base", "sqlite", args.baseline_spans), ("chdb_base", "clickhouse", args.baseline_spans)]
    if not args.no_sqlite_big:
        wanted.append(("sqlite_big", "sqlite", args.spans))
    wanted.append(("chdb_big", "clickhouse", args.spans))
    stores = []
    for key, backend, n in wanted:
        path, meta = (ensure_sqlite if backend == "sqlite" else ensure_ch)(n, args.rebuild)
        stores.append((key, backend, path, meta))
    found = {key: (path, meta) for key, _, path, meta in stores}
    print("checking the stores...", flush=True)
    checks = {}
    for size in ("base", "big"):
        if f"chdb_{size}" in found:
            ch_dir, ch_meta = found[f"chdb_{size}"]
            db = found.get(f"sqlite_{size}", (None, None))[0]
            checks[size] = check_readers(ch_dir, db, ch_meta["plan"])
            print(f"  {size}: {json.dumps(checks[size])}", flush=True)
    results, paints = {}, {}
    for key, backend, path, meta in stores:
        print(f"{backend}, {meta['spans']:,} spans: the app without its watcher thread (first paint only)", flush=True)
        paints[key] = run_child(backend, path, meta, args, no_watcher=True)
        print(f"{backend}, {meta['spans']:,} spans: the app", flush=True)
        results[key] = run_child(backend, path, meta, args)
        results[key]["first_paint_no_watcher_ms"] = paints[key]["first_paint_ms"]
        results[key]["peak_rss_no_watcher_mb"] = paints[key]["peak_rss_mb"]
    metas = {key: meta for key, _, _, meta in stores}
    info["loadavg_end"] = tuple(round(x, 2) for x in os.getloadavg())
    info["run_s"] = round(time.monotonic() - t_run)
    report(results, metas)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "args": vars(args), "metas": metas, "checks": checks,
                                               "results": results}, indent=1, default=str))  # fmt: skip
    print(f"load average at the end: {info['loadavg_end']} (start: {info.get('loadavg')}); run {info['run_s']}s")
    return 0


def _f(res: dict | None, *keys: str) -> float | None:
    for k in keys:
        if res is None:
            return None
        res = res.get(k)
    return res


#: (figure, unit, where in a child's result (a key path, or a function of the result), budget of docs/budgets.md)
FIGURES = [
    ("first paint: reader created -> rows drawn", "ms", ("first_paint_ms",), "<= 1 s (1M)"),
    ("  the same without the watcher thread", "ms", ("first_paint_no_watcher_ms",), ""),
    ("  incl. starting the chdb server", "ms", ("first_paint_incl_server_ms",), ""),
    ("header counters shown (watcher's first counters())", "ms", ("counters_ready_ms",), ""),
    ("key -> repaint p50 (j pressed --presses times)", "ms", lambda r: pct(r["repaint_ms"], 0.5), ""),
    ("key -> repaint p99", "ms", lambda r: pct(r["repaint_ms"], 0.99), "<= 50 ms"),
    ("key -> repaint max", "ms", lambda r: max(r["repaint_ms"]), ""),
    ("key -> row content drawn p99", "ms", lambda r: pct(r["content_ms"], 0.99), ""),
    ("open the 10,000-span trace", "ms", ("open_big", "ms"), "<= 0.5 s"),
    ("open a 10-span trace", "ms", ("open_small", "ms"), ""),
    ("Stats screen, all = 24 h, by model", "ms", ("stats", "ms"), "<= 1 s (10M)"),
    ("UI RSS after these steps", "MB", ("rss_mb",), "<= 150 MB"),
    ("UI peak RSS (VmHWM)", "MB", ("peak_rss_mb",), "<= 150 MB"),
    ("  peak after first paint", "MB", ("peak_rss_by_step_mb", "first paint"), ""),
    ("  peak after opening the traces", "MB", ("peak_rss_by_step_mb", "open traces"), ""),
    ("  peak after the Stats screen", "MB", ("peak_rss_by_step_mb", "stats"), ""),
    ("chdb server RSS after these steps", "MB", ("server_rss_mb",), ""),
    ("chdb server peak RSS", "MB", ("server_peak_rss_mb",), ""),
    ("CPU s, first paint: UI / server", "cpu", ("first_paint_cpu",), ""),
    ("CPU s, open 10,000 spans: UI / server", "cpu", ("open_big",), ""),
    ("CPU s, 200 key presses: UI / server", "cpu", ("keys",), ""),
    ("CPU s, Stats screen: UI / server", "cpu", ("stats",), ""),
]


def _cell(value, unit: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if unit == "cpu":
        server = value.get("server_cpu_s")
        return f"{value['ui_cpu_s']:.2f}" + (f" / {server:.2f}" if server is not None else "")
    if unit == "MB":
        return f"{value:,.1f}"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def report(results: dict, metas: dict) -> None:
    names = {"sqlite_base": "SQLite", "chdb_base": "chdb", "sqlite_big": "SQLite", "chdb_big": "chdb"}
    keys = [k for k in names if k in results]
    head = ["figure"] + [f"{names[k]}, {metas[k]['spans'] / 1e6:.2f}M spans" for k in keys] + ["budget"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, unit, where, budget in FIGURES:
        cells = []
        for k in keys:
            value = where(results[k]) if callable(where) else _f(results[k], *where)
            cells.append(_cell(value, unit))
        shown = name + ("" if unit == "cpu" else f" ({unit})")
        lines.append("| " + " | ".join([shown, *cells, budget or "-"]) + " |")
    calls = list(results[keys[0]]["reader_calls"])
    lines += ["", "| reader call (fresh reader), ms (UI CPU s / server CPU s) | " + " | ".join(head[1:-1]) + " |",
              "|" + "---|" * len(keys) + "---|"]  # fmt: skip
    for call in calls:
        cells = []
        for k in keys:
            v = results[k]["reader_calls"][call]
            cells.append(f"{_cell(v['ms'], 'ms')} ({_cell(v, 'cpu')})")
        lines.append(f"| `{call}` | " + " | ".join(cells) + " |")
    print("\n" + "\n".join(lines), flush=True)
    for k in keys:
        print(f"{k}: placeholders during the key presses {results[k]['keys']['placeholders']}, cursor ended on row "
              f"{results[k]['keys']['cursor_row']}, {results[k]['trace_rows']:,} traces listed; "
              f"warnings: {results[k].get('warnings')}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

"""Where a span's CPU goes: tracetui's ingest stages against a naive and a minimal receiver, same run.

    .venv/bin/python benchmarks/stages.py                 # about a minute
    .venv/bin/python benchmarks/stages.py --rounds 7 --requests 48

ingest.py measures the end-to-end rates the budgets are about. This one says
why they come out as they do: it runs, in this one process and without gRPC,
on the same traffic (benchmarks/common.py), and reports CPU time per span of

* tracetui's stages: ``parse`` (protobuf), ``decode_spans`` (rows,
  normalization, pricing, evaluations), ``prepare`` (trace summaries, timing
  analysis), ``commit`` (the ingest workers' ``Committer``: spans, trace rows,
  counters, one transaction per request) and ``checkpoint`` (copying the WAL
  into the database, which the receiver's checkpoint thread does);
* ``naive``: the baseline of every ingest figure (issue 19), whole: one row
  per span with binary ids, parent, name, kind, service, scope, times, status
  code and message, and attributes, events, links and resource as JSON; one
  ``executemany`` per request, committed, WAL with synchronous=NORMAL,
  ``UNIQUE(trace_id, span_id)`` with ``INSERT OR IGNORE`` and no other index,
  SQLite's own checkpoints. It stores the same information durably, with no
  LLM awareness;
* ``minimal store``: the least any durable SQLite receiver does, with no LLM
  awareness at all: parse, then ids, name, times and the span's bytes into a
  7-column table with the same unique (trace_id, span_id) index, one
  transaction per request, SQLite's own checkpoints.

Every stage has its own database and sees the same requests, with fresh trace
ids each round. Stages are interleaved within a round, so a slow moment of
this shared machine hits all of them; a stage's figure is its best round.

To compare two versions of tracetui, run this file once with each on
``PYTHONPATH`` (e.g. an exported older commit) and compare their ratios to the
naive store of the same run: the absolute figures move with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Figure, build_templates, machine_info, materialize, print_table  # noqa: E402

from tracetui.ingest.workers import configure_pricing  # noqa: E402
from tracetui.model.anyvalue import attributes_to_dict  # noqa: E402
from tracetui.otlp.decode import decode_spans, parse_trace_request, span_bytes  # noqa: E402
from tracetui.store.batch import prepare  # noqa: E402
from tracetui.store.writer import Committer  # noqa: E402

#: ``timed(label, fn)``: runs ``fn``, notes its CPU time per span under ``label``, returns its result.
Timed = Callable[[str, Callable[[], object]], object]

_MINIMAL_SCHEMA = """
CREATE TABLE spans (
    id INTEGER PRIMARY KEY, trace_id BLOB NOT NULL, span_id BLOB NOT NULL, parent_span_id BLOB,
    name TEXT NOT NULL, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, raw BLOB NOT NULL
);
CREATE UNIQUE INDEX spans_by_trace ON spans(trace_id, span_id);
"""
_MINIMAL_INSERT = (
    "INSERT OR IGNORE INTO spans(trace_id, span_id, parent_span_id, name, start_ns, end_ns, raw) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


_NAIVE_SCHEMA = """
CREATE TABLE spans (
    id INTEGER PRIMARY KEY, trace_id BLOB NOT NULL, span_id BLOB NOT NULL, parent_span_id BLOB,
    name TEXT NOT NULL, kind INTEGER NOT NULL, service TEXT NOT NULL, scope TEXT NOT NULL,
    start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, status_code INTEGER NOT NULL, status_message TEXT NOT NULL,
    attributes TEXT NOT NULL, events TEXT NOT NULL, links TEXT NOT NULL, resource TEXT NOT NULL
);
CREATE UNIQUE INDEX spans_by_trace ON spans(trace_id, span_id);
"""
_NAIVE_INSERT = (
    "INSERT OR IGNORE INTO spans(trace_id, span_id, parent_span_id, name, kind, service, scope, start_ns, end_ns, "
    "status_code, status_message, attributes, events, links, resource) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


class NaiveStore:
    """The baseline: every span's information as one JSON-flattened row, committed per request."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_NAIVE_SCHEMA)

    def store(self, data: bytes) -> None:
        request = parse_trace_request(data)
        rows = []
        for resource_spans in request.resource_spans:
            resource = json.dumps(attributes_to_dict(resource_spans.resource.attributes))
            service = next((kv.value.string_value for kv in resource_spans.resource.attributes
                            if kv.key == "service.name"), "")  # fmt: skip
            for scope_spans in resource_spans.scope_spans:
                scope = scope_spans.scope.name
                for s in scope_spans.spans:
                    events = [{"name": e.name, "time_ns": e.time_unix_nano, "attributes": attributes_to_dict(e.attributes)}
                              for e in s.events]  # fmt: skip
                    links = [{"trace_id": k.trace_id.hex(), "span_id": k.span_id.hex(),
                              "attributes": attributes_to_dict(k.attributes)} for k in s.links]  # fmt: skip
                    rows.append((s.trace_id, s.span_id, s.parent_span_id or None, s.name, s.kind, service, scope,
                                 s.start_time_unix_nano, s.end_time_unix_nano, s.status.code, s.status.message,
                                 json.dumps(attributes_to_dict(s.attributes)), json.dumps(events), json.dumps(links),
                                 resource))  # fmt: skip
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany(_NAIVE_INSERT, rows)
        self.conn.execute("COMMIT")


class MinimalStore:
    """Parse, then ids, name, times and the span's own bytes, committed per request."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_MINIMAL_SCHEMA)

    def store(self, data: bytes) -> None:
        request = parse_trace_request(data)
        raw = span_bytes(data)
        rows = []
        n = 0
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    rows.append((s.trace_id, s.span_id, s.parent_span_id or None, s.name,
                                 s.start_time_unix_nano, s.end_time_unix_nano, raw[n]))  # fmt: skip
                    n += 1
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany(_MINIMAL_INSERT, rows)
        self.conn.execute("COMMIT")


class Tracetui:
    """tracetui's ingest path, one stage at a time, as an ingest worker runs it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # No WAL bound: the checkpoint is a stage of its own here, run once a round.
        self.committer = Committer(path, wal_bytes=1 << 40)
        self.checkpointer = sqlite3.connect(path, isolation_level=None)

    def stages(self, datas: list[bytes], timed: Timed) -> None:
        requests = timed("parse", lambda: [parse_trace_request(d) for d in datas])
        decoded = timed("decode_spans", lambda: [decode_spans(r, d) for r, d in zip(requests, datas, strict=False)])
        timed("prepare", lambda: [prepare(x) for x in decoded if x.spans])
        timed("commit", lambda: [self.committer.commit([x]) for x in decoded])
        # What the receiver's checkpoint thread does for these spans (the WAL starts over after it).
        timed("checkpoint", lambda: self.checkpointer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone())


TRACETUI_STAGES = ("parse", "decode_spans", "prepare", "commit", "checkpoint")


def _timer(best: dict[str, float], spans: int) -> Timed:
    """``timed(label, fn)``: runs ``fn`` and keeps in ``best[label]`` its lowest CPU time per span."""

    def timed(label: str, fn: Callable[[], object]) -> object:
        t0 = time.process_time()
        result = fn()
        per_span = (time.process_time() - t0) / spans * 1e6
        best[label] = min(best.get(label, per_span), per_span)
        return result

    return timed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=32, help="requests of 512 spans per round (default 32)")
    ap.add_argument("--rounds", type=int, default=5, help="measured rounds; each figure is the best (default 5)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    print("machine:", machine_info(), flush=True)
    configure_pricing(None)  # as the ingest workers do before their first export
    templates, cur, prev = build_templates(args.seed, 8, 512)
    workdir = Path(tempfile.mkdtemp(prefix="tracetui-stages-"))
    tracetui = Tracetui(workdir / "tracetui.db")
    naive = NaiveStore(workdir / "naive.db")
    minimal = MinimalStore(workdir / "minimal.db")

    best: dict[str, float] = {}
    for round_no in range(args.rounds + 1):  # round 0 warms caches up and is not counted
        measuring = round_no > 0
        first = round_no * args.requests
        datas = [materialize(templates[i % len(templates)], cur, prev, b"stages", 0, first + i)
                 for i in range(args.requests)]  # fmt: skip
        spans_per_round = sum(templates[i % len(templates)].spans for i in range(args.requests))
        timed = _timer(best if measuring else {}, spans_per_round)
        tracetui.stages(datas, timed)
        timed("naive", lambda datas=datas: [naive.store(d) for d in datas])
        timed("minimal store", lambda datas=datas: [minimal.store(d) for d in datas])
        timed("parse and discard", lambda datas=datas: [parse_trace_request(d) for d in datas])
        print(f"  round {round_no}{'' if measuring else ' (warm-up)'}: {spans_per_round:,} spans a stage", flush=True)

    total = sum(best[s] for s in TRACETUI_STAGES)
    figures = [Figure(f"tracetui: {s}", best[s], "us/span", best["naive"], "naive, whole") for s in TRACETUI_STAGES]
    figures += [
        Figure("tracetui, all stages", total, "us/span", best["naive"], "naive, whole"),
        Figure("minimal store, whole", best["minimal store"], "us/span", best["naive"], "naive, whole"),
        Figure("parse and discard", best["parse and discard"], "us/span", best["naive"], "naive, whole"),
        Figure("tracetui, all stages", total, "us/span", best["minimal store"], "minimal store"),
        Figure(
            "tracetui beyond the minimal store", total - best["minimal store"], "us/span", best["naive"], "naive, whole"
        ),  # fmt: skip
    ]
    print_table("CPU per span, in one process, no gRPC (best of each stage's rounds)", figures)
    print("load average at the end:", Path("/proc/loadavg").read_text().split()[:3], flush=True)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Disk benchmark: database bytes per span, with and without values stored once (tracetui.store.blobs).

    .venv/bin/python benchmarks/disk.py                       # 100,000 spans of each traffic, 1 round
    .venv/bin/python benchmarks/disk.py --spans 20000 --rounds 2

Two kinds of traffic, each written twice in the same run, in fresh child
processes, rounds interleaved:

* ``bench``: ingest.py's traffic (benchmarks/common.py TraceFactory, 512-span
  requests): agent runs of ~10 spans, 4-5 LLM calls each with ~2 KB of input
  messages (a system prompt from 4, a user text from 32, a tool call and a tool
  response) and an answer from 32. Like ingest.py, it sends 8 pre-built
  requests again and again with new ids, so every value repeats every 4,096
  spans: stored once, the repeats cost nothing.
* ``fresh``: the same kind of runs, every request built anew: only the system
  prompts, user texts and answers (drawn from their pools) repeat.
* ``agent``: multi-turn agent conversations (:class:`Conversations`): each call
  sends the same system prompt and tool definitions again, and every message
  of the conversation so far, the way chat agents do; tool calls in between.

Modes: ``whole`` is the store before tracetui.store.blobs (each span's raw
bytes and provenance as they arrived: ``compact_rows`` switched off in the
child, 4 KB pages), ``cut`` the store of schema 12 (repeated parts cut out,
provenance interned, 8 KB pages), ``blobs`` the store now (cut, then each raw
compressed with the preset dictionary). Each child writes the traffic through the real path (
``decode_trace_bytes``, ``Writer.submit``: prepare and the cutting in the
caller's thread, the writer thread inserting, the checkpointer thread), and
reports:

* bytes per span: the main file after the writer closed (its last checkpoint
  moved every page in), the WAL's size just before (what a user sees during
  ingest, bounded by the checkpointer), and dbstat's split by table and index;
* CPU per span: the process's CPU (every thread) from the first request to the
  writer's close, less the main thread's time spent making the traffic; and
  the cutting alone.

A round-trip check at the end reads every span back through the Reader and
compares it with the bytes that were sent (``--verify``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    LLM_SCOPE,
    PYTHON,
    SpanSpec,
    TraceFactory,
    _text,
    build_request,
    build_templates,
    machine_info,
    materialize,
)

WORK = Path("/tmp/bench-disk")
#: whole: each span's raw bytes stored as they arrived (before); cut: long strings stored once (schema 12);
#: blobs: the store now (cut, then compressed with the dictionary: schema 14).
MODES = ("whole", "cut", "blobs")
TRAFFIC = ("bench", "fresh", "agent")
SPANS_PER_REQUEST = 512

# --- multi-turn agent traffic ----------------------------------------------------------------------

_TOOL_NAMES = ("search_orders", "get_order", "refund_payment", "send_email", "search_kb", "create_ticket",
               "update_address", "check_inventory")  # fmt: skip


class Conversations:
    """Multi-turn agent conversations as OTLP spans: the conversation grows, and every call re-sends it.

    One trace per conversation (6-20 model calls): a root ``invoke_agent`` span, and per
    turn a chat span whose ``gen_ai.input.messages`` holds the system prompt and every
    message so far (user turns, assistant answers and tool calls, tool results), with the
    same ``gen_ai.tool.definitions`` each time, then an ``execute_tool`` span when the model
    asked for a tool. Sizes follow what real agents send: a 3-6 KB system prompt (one of
    a few agents), 8 tools with JSON schemas, answers of 200-1,500 characters, tool
    results of 300-3,000.
    """

    def __init__(self, seed: int) -> None:
        rng = self.rng = random.Random(seed)
        self.systems = [_text(rng, rng.randint(3000, 6000)) for _ in range(3)]
        self.tools = json.dumps(
            [
                {"type": "function", "name": name, "description": _text(rng, rng.randint(150, 500)),
                 "parameters": {"type": "object", "properties": {
                     f"arg{i}": {"type": "string", "description": _text(rng, rng.randint(40, 160))} for i in range(3)},
                     "required": ["arg0"]}}
                for name in _TOOL_NAMES
            ]
        )  # fmt: skip

    def conversation(self, trace_start: int) -> list[SpanSpec]:
        rng = self.rng
        system = rng.choice(self.systems)
        messages: list[dict] = [{"role": "system", "parts": [{"type": "text", "content": system}]}]
        ids = iter(range(2, 1 << 30))
        root_id = (1).to_bytes(8, "big")
        specs: list[SpanSpec] = []
        t = trace_start + 1_000_000
        for _turn in range(rng.randint(6, 20)):
            if messages[-1]["role"] in ("system", "assistant"):
                messages.append(
                    {"role": "user", "parts": [{"type": "text", "content": _text(rng, rng.randint(80, 700))}]}
                )
            tool_call = rng.random() < 0.6
            if tool_call:
                call_id = f"call_{rng.getrandbits(64):016x}"
                name = rng.choice(_TOOL_NAMES)
                answer = {"role": "assistant", "parts": [{"type": "tool_call", "id": call_id, "name": name,
                                                          "arguments": {"arg0": _text(rng, 30)}}],
                          "finish_reason": "tool_calls"}  # fmt: skip
            else:
                answer = {"role": "assistant", "parts": [{"type": "text", "content": _text(rng, rng.randint(200, 1500))}],
                          "finish_reason": "stop"}  # fmt: skip
            dur = rng.randint(500, 8000) * 1_000_000
            attrs = {
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4.1",
                "gen_ai.response.model": "gpt-4.1-2025-04-14", "gen_ai.response.id": f"chatcmpl-{rng.getrandbits(96):024x}",
                "gen_ai.usage.input_tokens": sum(len(json.dumps(m)) for m in messages) // 4,
                "gen_ai.usage.output_tokens": rng.randint(20, 400), "gen_ai.response.finish_reasons": [answer["finish_reason"]],
                "gen_ai.tool.definitions": self.tools,
                "gen_ai.input.messages": json.dumps(messages),
                "gen_ai.output.messages": json.dumps([answer]),
            }  # fmt: skip
            specs.append(
                SpanSpec(next(ids).to_bytes(8, "big"), root_id, "chat gpt-4.1", 3, t, t + dur, attrs, LLM_SCOPE)
            )
            t += dur + 1_000_000
            messages.append({k: v for k, v in answer.items() if k != "finish_reason"})
            if tool_call:
                result = json.dumps({"status": "ok", "detail": _text(rng, rng.randint(300, 3000))})
                tdur = rng.randint(5, 900) * 1_000_000
                specs.append(SpanSpec(next(ids).to_bytes(8, "big"), root_id, f"execute_tool {name}", 1, t, t + tdur,
                                      {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name,
                                       "gen_ai.tool.call.id": call_id, "gen_ai.tool.call.result": result}))  # fmt: skip
                t += tdur + 1_000_000
                messages.append(
                    {"role": "tool", "parts": [{"type": "tool_call_response", "id": call_id, "response": result}]}
                )
        specs.append(SpanSpec(root_id, None, "invoke_agent support", 1, trace_start, t + 1_000_000,
                              {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support"}))  # fmt: skip
        specs.sort(key=lambda s: s.end)
        return specs

    def requests(self, n_spans: int) -> list[bytes]:
        """Serialized requests of whole conversations, about SPANS_PER_REQUEST spans each, ~n_spans in all."""
        out: list[bytes] = []
        pending: list = []
        total = 0
        t = time.time_ns() - 3600 * 10**9
        while total < n_spans:
            trace_id = self.rng.randbytes(16)
            specs = self.conversation(t)
            t += 10**9
            pending += [(s.scope, TraceFactory.to_span(s, trace_id)) for s in specs]
            total += len(specs)
            if len(pending) >= SPANS_PER_REQUEST or total >= n_spans:
                out.append(build_request(pending).SerializeToString())
                pending = []
        return out


def traffic(kind: str, n_spans: int, seed: int = 7):
    """An iterator of serialized requests of ``kind`` traffic, ~n_spans in all (made lazily, as it is written)."""
    if kind == "agent":
        yield from Conversations(seed).requests(n_spans)
        return
    requests = max(1, n_spans // SPANS_PER_REQUEST)
    # bench: ingest.py's 8 requests, sent again and again (new ids each time); fresh: every request its own
    templates, cur, prev = build_templates(1, 8 if kind == "bench" else requests, SPANS_PER_REQUEST)
    salt = os.urandom(4)
    for i in range(requests):
        yield materialize(templates[i % len(templates)], cur, prev, salt, 0, i)


# --- the measuring child --------------------------------------------------------------------------


def child(mode: str, kind: str, n_spans: int, db: Path, verify: bool) -> dict:
    from tracetui.otlp.decode import decode_trace_bytes
    from tracetui.store import blobs
    from tracetui.store.writer import Writer

    cut_s = 0.0
    compact_rows = blobs.compact_rows

    def timed_compact(decoded) -> None:
        nonlocal cut_s
        t0 = time.thread_time()
        compact_rows(decoded)
        cut_s += time.thread_time() - t0

    blobs.compact_rows = timed_compact if mode != "whole" else (lambda decoded: None)  # type: ignore[assignment]
    if mode == "cut":
        blobs.compressed = lambda raw: raw  # type: ignore[assignment]
    if mode == "whole":
        from tracetui.store import schema

        schema.PAGE_SIZE = 4096  # the page size before
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    requests = traffic(kind, n_spans)
    writer = Writer(db, max_pending_spans=10**7)
    writer.start()
    sent: list[bytes] = []
    making = 0.0
    spans = 0
    tickets = []
    cpu0 = time.process_time()
    while True:
        t0 = time.thread_time()
        data = next(requests, None)
        making += time.thread_time() - t0
        if data is None:
            break
        if verify:
            sent.append(data)
        decoded = decode_trace_bytes(data)
        spans += len(decoded.spans)
        tickets.append(writer.submit(decoded))
        while len(tickets) > 4:
            tickets.pop(0).wait()
    for ticket in tickets:
        ticket.wait()
    wal = Path(str(db) + "-wal")
    wal_bytes = wal.stat().st_size if wal.exists() else 0
    writer.stop()
    cpu = time.process_time() - cpu0 - making
    import sqlite3

    conn = sqlite3.connect(db)
    split = dict(conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())
    blob_rows = conn.execute("SELECT count(*), coalesce(sum(length(bytes)), 0) FROM blobs").fetchone()
    raw_bytes = conn.execute("SELECT sum(length(raw)) FROM spans").fetchone()[0]
    conn.close()
    out = {
        "mode": mode, "traffic": kind, "spans": spans, "file_bytes": db.stat().st_size, "wal_bytes": wal_bytes,
        "cpu_us": cpu / spans * 1e6, "cut_us": cut_s / spans * 1e6, "split": split, "blobs": blob_rows[0],
        "blob_bytes": blob_rows[1], "raw_bytes": raw_bytes, "loadavg": os.getloadavg()[0],
    }  # fmt: skip
    if verify:
        out["verified"] = _verify(db, sent)
    return out


def _verify(db: Path, sent: list[bytes]) -> int:
    """Every span read back through the Reader is byte for byte what was sent; returns how many were compared."""
    from tracetui.otlp.decode import parse_trace_request, span_bytes
    from tracetui.store.reader import SqliteReader

    expected: dict[tuple[bytes, bytes], bytes] = {}
    for data in sent:
        request = parse_trace_request(data)
        spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
        for span, raw in zip(spans, span_bytes(data) or [], strict=True):
            expected[(span.trace_id, span.span_id)] = raw
    reader = SqliteReader(db)
    try:
        seen = 0
        for trace_id in {key[0] for key in expected}:
            for stored in reader.stored_spans(trace_id):
                if expected[(trace_id, stored.span_id)] != stored.raw:
                    raise SystemExit(f"span {stored.span_id.hex()} of {trace_id.hex()} does not read back as sent")
                seen += 1
    finally:
        reader.close()
    if seen != len(expected):
        raise SystemExit(f"{len(expected) - seen} spans missing")
    return seen


# --- the parent -------------------------------------------------------------------------------------


def run_child(mode: str, kind: str, n_spans: int, verify: bool) -> dict:
    WORK.mkdir(parents=True, exist_ok=True)
    db = WORK / f"{kind}-{mode}.db"
    cmd = [PYTHON, __file__, "--child", mode, "--traffic", kind, "--spans", str(n_spans), "--db", str(db)]
    if verify:
        cmd.append("--verify")
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"child {mode}/{kind} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    return result


def report(results: list[dict]) -> None:
    for kind in dict.fromkeys(r["traffic"] for r in results):
        by_mode = {m: [r for r in results if r["traffic"] == kind and r["mode"] == m] for m in MODES}
        print(f"\n{kind} traffic ({by_mode['whole'][0]['spans']:,} spans per database; ratio: blobs / whole)")
        print(f"  {'':34}" + "".join(f"{m:>12}" for m in MODES) + f"{'ratio':>9}")

        def line(label: str, values: dict[str, float], unit: str) -> None:
            ratio = values["blobs"] / values["whole"] if values["whole"] else float("nan")
            cells = "".join(f"{values[m]:>10,.0f} {unit:1}" for m in MODES)
            print(f"  {label:34}{cells}{ratio:>8.2f}x")

        def per_span(fn, by_mode=by_mode) -> dict[str, float]:
            return {m: min(fn(r) / r["spans"] for r in rs) for m, rs in by_mode.items()}

        def best(key: str, by_mode=by_mode) -> dict[str, float]:
            return {m: min(r[key] for r in rs) for m, rs in by_mode.items()}

        line("file bytes / span", per_span(lambda r: r["file_bytes"]), "B")
        line("file + WAL bytes / span", per_span(lambda r: r["file_bytes"] + r["wal_bytes"]), "B")
        names = sorted({n for rs in by_mode.values() for r in rs for n in r["split"]},
                       key=lambda n: -by_mode["whole"][0]["split"].get(n, 0))  # fmt: skip
        for name in names:
            if (
                max(r["split"].get(name, 0) for rs in by_mode.values() for r in rs)
                < 0.01 * by_mode["whole"][0]["file_bytes"]
            ):
                continue  # under 1 % of the file
            line(f"  {name}", per_span(lambda r, name=name: r["split"].get(name, 0)), "B")
        line("  raw column (sum of lengths)", per_span(lambda r: r["raw_bytes"]), "B")
        blob = by_mode["blobs"][0]
        print(f"  blobs: {blob['blobs']:,} ({blob['blob_bytes'] / 2**20:,.1f} MB)")
        cpu = best("cpu_us")
        cells = "".join(f"{cpu[m]:>10.1f}us" for m in MODES)
        print(f"  {'CPU / span (all threads)':34}{cells}{cpu['blobs'] / cpu['whole']:>8.2f}x")
        cut = best("cut_us")
        print(f"  {'  of which cutting (and deflating)':34}{'':>12}{cut['cut']:>10.1f}us{cut['blobs']:>10.1f}us")
        if "verified" in blob:
            print(f"  read back byte for byte: {blob['verified']:,} spans")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--agent-spans", type=int, default=None, help="spans of agent traffic (default: --spans / 3)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--traffic", choices=(*TRAFFIC, "all"), default="all")
    parser.add_argument("--verify", action="store_true", help="read every span back and compare (slower)")
    parser.add_argument("--child", choices=MODES)
    parser.add_argument("--db", type=Path)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.traffic, args.spans, args.db, args.verify)))
        return 0
    info = machine_info()
    print(f"machine: {info.get('cpu')} x{info.get('nproc')}, load {info.get('loadavg')}, {info.get('tracetui')}")
    kinds = TRAFFIC if args.traffic == "all" else (args.traffic,)
    results = []
    for r in range(args.rounds):
        for kind in kinds:
            n = (args.agent_spans or args.spans // 3) if kind == "agent" else args.spans
            for mode in MODES if r % 2 == 0 else MODES[::-1]:
                results.append(run_child(mode, kind, n, args.verify))
                print(f"  round {r + 1} {kind}/{mode}: {results[-1]['file_bytes'] / results[-1]['spans']:,.0f} B/span, "
                      f"{results[-1]['cpu_us']:.1f} us/span, load {results[-1]['loadavg']:.2f}", flush=True)  # fmt: skip
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

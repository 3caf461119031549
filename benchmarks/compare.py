"""Compare benchmark: two 100k-call cohorts side by side on SQLite, beside the Stats figures of the same calls.

    .venv/bin/python benchmarks/compare.py                   # builds /tmp/bench-compare once (~2 min), then ~30 s
    .venv/bin/python benchmarks/compare.py --calls 20000     # a smaller store

Steps:

1. Build (once, cached by size) a SQLite database through the real decode and the real
   ``Writer``: ``--calls`` runs per cohort, each a root agent span and one streamed chat call
   (model-a and model-b, alternating, with TTFT, tokens, max_tokens, 6 % errors), a
   ``gen_ai.evaluation.result`` groundedness event on 10 % of the calls and a
   ``user_feedback`` event on 2 %.
2. ``tracetui.query.compare.compare`` of model=model-a against model=model-b (as
   ``tracetui compare --a ... --b ...`` runs it), median of ``--rounds``, with the process CPU per
   call, split into reading the calls (``Reader.cohort_calls``, both sides), reading their
   evaluations, and the statistics (sorts, intervals, verdict); and of the same two models as
   two marked Stats rows (the compare screen's path: one read of the calls, split by group).
3. Baseline, same run and same calls: ``tracetui.query.stats.compute`` by model (the Stats
   screen's figures over every call of both cohorts).

Budget (issue 18): the method "stays fast on 100k-call cohorts on 2 cores". No fixed number
is set; the figure belonging to the code is CPU µs per call next to the Stats baseline.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Figure, kvs, machine_info, print_table  # noqa: E402

WORK = Path("/tmp/bench-compare")
BASE_NS = 1_760_000_000_000_000_000
RUNS_PER_REQUEST = 500


def build(db: Path, calls: int) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

    from tracetui.otlp.decode import decode_spans
    from tracetui.store.writer import Writer

    writer = Writer(db)
    writer.start()
    try:
        total = 2 * calls
        for first in range(0, total, RUNS_PER_REQUEST):
            spans = []
            for n in range(first, min(total, first + RUNS_PER_REQUEST)):
                b_side = n % 2
                trace_id = (0xC0DE << 112 | n).to_bytes(16, "big")
                root_id, call_id = (2 * n + 1).to_bytes(8, "big"), (2 * n + 2).to_bytes(8, "big")
                start = BASE_NS + n * 50_000_000
                duration = int((900 + (n * 7919) % 2000) * (0.7 if b_side else 1.0) * 1e6)
                call = Span(
                    trace_id=trace_id, span_id=call_id, parent_span_id=root_id, name="chat",
                    kind=Span.SPAN_KIND_CLIENT, start_time_unix_nano=start + 1_000_000,
                    end_time_unix_nano=start + 1_000_000 + duration,
                    status=Status(code=Status.STATUS_CODE_ERROR if n % 17 == 0 else Status.STATUS_CODE_UNSET),
                    attributes=kvs({
                        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                        "gen_ai.request.model": "model-b" if b_side else "model-a",
                        "gen_ai.request.max_tokens": 1024, "gen_ai.usage.input_tokens": 400 + n % 300,
                        "gen_ai.usage.output_tokens": 50 + (n * 31) % 400, "gen_ai.request.stream": True,
                        "gen_ai.response.time_to_first_chunk": 0.2 + ((n * 13) % 900) / 1000,
                    }),
                )  # fmt: skip
                if (n // 2) % 10 == 0:
                    call.events.add(
                        time_unix_nano=start + duration, name="gen_ai.evaluation.result",
                        attributes=kvs({"gen_ai.evaluation.name": "groundedness",
                                        "gen_ai.evaluation.score.value": (0.9 - 0.1 * b_side) - (n % 7) / 20}),
                    )  # fmt: skip
                if (n // 2) % 50 == 3:
                    call.events.add(
                        time_unix_nano=start + duration, name="gen_ai.evaluation.result",
                        attributes=kvs({"gen_ai.evaluation.name": "user_feedback",
                                        "gen_ai.evaluation.score.label": "thumbs_down" if n % 3 else "thumbs_up"}),
                    )  # fmt: skip
                root = Span(
                    trace_id=trace_id, span_id=root_id, name="support agent", start_time_unix_nano=start,
                    end_time_unix_nano=start + duration + 3_000_000, attributes=kvs({"gen_ai.operation.name": "invoke_agent"}),
                )  # fmt: skip
                spans += [root, call]
            request = ExportTraceServiceRequest(
                resource_spans=[ResourceSpans(
                    resource=Resource(attributes=kvs({"service.name": "bench"})),
                    scope_spans=[ScopeSpans(scope=InstrumentationScope(name="bench"), spans=spans)],
                )]
            )  # fmt: skip
            ticket = writer.submit(decode_spans(request))
            assert ticket.wait(120) and ticket.error is None, ticket.error
    finally:
        writer.stop()


def cpu() -> float:
    return time.process_time()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=100_000, help="calls per cohort")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from tracetui.query import compare as cmp
    from tracetui.query.stats import compute
    from tracetui.store.reader import SqliteReader

    WORK.mkdir(parents=True, exist_ok=True)
    db = WORK / f"compare-{args.calls}.db"
    if not db.exists():
        started = time.monotonic()
        build(db.with_suffix(".tmp"), args.calls)
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(db.with_suffix(".tmp")) + suffix)
            if src.exists():
                src.rename(Path(str(db) + suffix))
        print(f"built {db} in {time.monotonic() - started:.0f} s", file=sys.stderr)

    reader = SqliteReader(db)
    a, b = cmp.Cohort("A", "model=model-a"), cmp.Cohort("B", "model=model-b")
    rows = cmp.Cohort("A", group=("model", "model-a")), cmp.Cohort("B", group=("model", "model-b"))
    walls, cpus, reads, evals, baseline_walls, baseline_cpus, row_walls = [], [], [], [], [], [], []
    comparison = None
    try:
        for _ in range(args.rounds):
            w, c = time.perf_counter(), cpu()
            groups = compute(reader, "model")
            baseline_walls.append(time.perf_counter() - w)
            baseline_cpus.append(cpu() - c)

            w = time.perf_counter()
            calls = [reader.cohort_calls(flt=side.filter) or [] for side in (a, b)]
            reads.append(time.perf_counter() - w)
            w = time.perf_counter()
            for side in calls:
                reader.evaluation_results({call.trace_id for call in side})
            evals.append(time.perf_counter() - w)

            w, c = time.perf_counter(), cpu()
            comparison = cmp.compare(reader, a, b)
            walls.append(time.perf_counter() - w)
            cpus.append(cpu() - c)

            w = time.perf_counter()
            by_rows = cmp.compare(reader, *rows)
            row_walls.append(time.perf_counter() - w)
            assert by_rows.verdict.line == comparison.verdict.line
    finally:
        reader.close()
    assert comparison is not None
    n_calls = comparison.get("calls").a + comparison.get("calls").b
    stats_calls = sum(g.count for g in groups)
    median = statistics.median
    figures = [
        Figure("compare: both cohorts, every figure", median(walls), "s", median(baseline_walls), "stats by model"),
        Figure("  reading the calls (SQL, both sides)", median(reads), "s"),
        Figure("  reading their evaluations", median(evals), "s"),
        Figure("  statistics (sorts, intervals, verdict)", max(0.0, median(walls) - median(reads) - median(evals)), "s"),
        Figure("compare: two Stats rows (one read, split by model)", median(row_walls), "s", median(baseline_walls),
               "stats by model"),
        Figure("CPU per call", median(cpus) / n_calls * 1e6, "us", median(baseline_cpus) / stats_calls * 1e6,
               "stats by model"),
    ]  # fmt: skip
    print(f"machine: {machine_info()}")
    print(f"calls: A {comparison.get('calls').a:,}, B {comparison.get('calls').b:,}; stats over {stats_calls:,}")
    print(f"verdict: {comparison.verdict.line}")
    print_table("Compare two 100k-call cohorts (SQLite)", figures)


if __name__ == "__main__":
    main()

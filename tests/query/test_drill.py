"""Slowest spans and critical paths on hand-made trees (tracetui.query.drill)."""

from __future__ import annotations

from tracetui.model.views import SpanRow
from tracetui.query.drill import critical_path, path_summary, run_of, run_roots, self_time, slowest_spans
from tracetui.query.tree import build_tree

S = 10**9


def span(n: int, parent: int | None, start: float, end: float, kind: str | None = None, name: str = "") -> SpanRow:
    return SpanRow(bytes([n]) * 8, bytes([parent]) * 8 if parent else None, name or f"s{n}", 1, "svc",
                   int(start * S), int(end * S), 1, "", llm_kind=kind)  # fmt: skip


def test_critical_path_walks_back_through_the_last_finishing_child() -> None:
    spans = [
        span(1, None, 0, 10, "agent"),
        span(2, 1, 0, 2, "llm"),  # plan
        span(3, 1, 2, 3, "tool"),  # fast tool, in parallel with the slow one
        span(4, 1, 2, 8, "tool"),  # slow tool
        span(5, 1, 8, 9.5, "llm"),  # answer
    ]
    (root,) = build_tree(spans)
    steps = critical_path(root)
    on_path = {s.span.name for s in steps}
    assert on_path == {"s1", "s2", "s4", "s5"}  # the fast parallel tool is not what the end waited for
    total, top, top_ns = path_summary(steps)
    assert total == 10 * S
    assert top.name == "s4" and top_ns == 6 * S


def test_critical_path_descends_into_children() -> None:
    spans = [span(1, None, 0, 10), span(2, 1, 1, 9), span(3, 2, 2, 5), span(4, 2, 5, 8)]
    (root,) = build_tree(spans)
    per_span: dict[str, int] = {}
    for step in critical_path(root):
        per_span[step.span.name] = per_span.get(step.span.name, 0) + step.duration_ns
    assert per_span == {"s1": 2 * S, "s2": 2 * S, "s3": 3 * S, "s4": 3 * S}


def test_slowest_prefers_duration_then_self_time() -> None:
    spans = [
        span(1, None, 0, 10, "agent"),
        span(2, 1, 0, 4, "llm"),  # 4 s, all self time
        span(3, 1, 4, 8, "tool"),  # 4 s, but 3 s of it is a child's
        span(4, 3, 4.5, 7.5, "llm"),
        span(5, 1, 8, 9, "chain"),  # not a call
    ]
    (root,) = build_tree(spans)
    ranked = [s.name for s in slowest_spans(root)]
    assert ranked == ["s2", "s3", "s4"]
    assert self_time(spans[2]) == 1 * S


def test_runs_are_agent_spans_when_a_trace_holds_several() -> None:
    spans = [
        span(1, None, 0, 20, "chain", name="batch"),
        span(2, 1, 0, 9, "agent", name="run A"),
        span(3, 2, 1, 8, "llm"),
        span(4, 1, 10, 19, "agent", name="run B"),
        span(5, 4, 11, 12, "llm"),
    ]
    roots = build_tree(spans)
    assert [r.name for r in run_roots(roots)] == ["run A", "run B"]
    assert run_of(bytes([5]) * 8, roots).name == "run B"
    assert [s.name for s in slowest_spans(run_of(bytes([5]) * 8, roots))] == ["s5"]


def test_overlapping_and_clock_skewed_children_never_loop() -> None:
    spans = [span(1, None, 0, 5), span(2, 1, -1, 7), span(3, 1, 4, 3), span(4, 2, 6, 6)]
    (root,) = build_tree(spans)
    steps = critical_path(root)
    assert sum(s.duration_ns for s in steps) <= 5 * S

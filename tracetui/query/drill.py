"""Questions asked of one agent run: what was slowest, what was the critical path.

Pure functions over a built span tree (tracetui.query.tree.build_tree), shared by the
trace view and the text summaries.

* An *agent run* is the trace, or an agent span inside it when one trace holds
  several runs (OTel ``invoke_agent``, OpenInference/traceAI ``AGENT``,
  OpenLLMetry ``agent``: all normalized to ``llm_kind == "agent"``).
* The *slowest span* of a run is its LLM or tool call with the longest
  duration, ties broken by self time (time not covered by its children).
* The *critical path* walks back from the run's end through the
  last-finishing child at each level: the chain of work the end waited for.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from tracetui.model.views import SpanRow

#: Kinds that count as "calls" for the slowest-span drill-down.
CALL_KINDS = frozenset({"llm", "embedding", "tool", "retriever"})


def walk(root: SpanRow) -> Iterator[SpanRow]:
    """Every span under ``root`` (inclusive), depth first, without recursion."""
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.children))


def run_roots(roots: list[SpanRow]) -> list[SpanRow]:
    """The runs of a trace: its agent spans, or the tree roots when it has none."""
    agents = [s for r in roots for s in walk(r) if s.llm_kind == "agent"]
    # An agent nested inside another agent's run is a run of its own too.
    return agents or roots


def run_of(span_id: bytes, roots: list[SpanRow]) -> SpanRow | None:
    """The run (nearest agent ancestor, else the tree root) that contains ``span_id``."""
    for root in roots:
        path = _path_to(root, span_id)
        if path:
            agents = [s for s in path if s.llm_kind == "agent"]
            return agents[-1] if agents else path[0]
    return None


def _path_to(root: SpanRow, span_id: bytes) -> list[SpanRow]:
    # Parent links instead of a path per stack entry: linear even on a 100,000-deep chain.
    parent_of: dict[bytes, SpanRow] = {}
    stack = [root]
    while stack:
        node = stack.pop()
        if node.span_id == span_id:
            path = [node]
            while node is not root:
                node = parent_of[node.span_id]
                path.append(node)
            path.reverse()
            return path
        for child in node.children:
            parent_of[child.span_id] = node
            stack.append(child)
    return []


def self_time(span: SpanRow) -> int:
    """Duration not covered by any child (overlapping children counted once)."""
    start, end = span.start_ns, max(span.start_ns, span.end_ns)
    covered = 0
    cursor = start
    for child in sorted(span.children, key=lambda c: c.start_ns):
        s, e = max(child.start_ns, cursor), min(max(child.start_ns, child.end_ns), end)
        if e > s:
            covered += e - s
            cursor = e
    return max(0, (end - start) - covered)


def slowest_spans(run: SpanRow) -> list[SpanRow]:
    """The run's LLM and tool calls, slowest first (ties: more self time first)."""
    calls = [s for s in walk(run) if s.llm_kind in CALL_KINDS]
    return sorted(calls, key=lambda s: (-s.duration_ns, -self_time(s), s.start_ns))


@dataclass(frozen=True, slots=True)
class PathStep:
    """A span on the critical path and the part of its time that was on it."""

    span: SpanRow
    start_ns: int
    end_ns: int

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


def critical_path(run: SpanRow) -> list[PathStep]:
    """Steps from the run's start to its end; their durations add up to the time on the path.

    From the end of a span, the child that finished last (before that point)
    is what the span waited for; the walk continues inside that child, then
    from the child's start among the remaining children. Time no child covers
    is the span's own.
    """
    steps: list[PathStep] = []
    # (span, window start, window end): examine span's work inside the window, right to left.
    stack: list[tuple[SpanRow, int, int]] = [(run, run.start_ns, max(run.start_ns, run.end_ns))]
    guard = 0
    while stack and guard < 1_000_000:
        guard += 1
        span, lo, hi = stack.pop()
        cursor = hi
        pending: list[tuple[SpanRow, int, int]] = []
        children = sorted(span.children, key=lambda c: max(c.start_ns, c.end_ns), reverse=True)
        for child in children:
            c_end = min(max(child.start_ns, child.end_ns), cursor)
            c_start = max(child.start_ns, lo)
            if c_end <= c_start or child.start_ns >= cursor:
                continue
            if c_end < cursor:
                steps.append(PathStep(span, c_end, cursor))  # the span's own time after this child
            pending.append((child, c_start, c_end))
            cursor = c_start
            if cursor <= lo:
                break
        if cursor > lo:
            steps.append(PathStep(span, lo, cursor))
        # later children were pushed first; process them so steps stay grouped per span
        stack.extend(pending)
    steps.sort(key=lambda s: (s.start_ns, s.end_ns))
    return steps


def path_summary(steps: list[PathStep]) -> tuple[int, SpanRow | None, int]:
    """(time on the path, the span with the most path time, its path time)."""
    per_span: dict[bytes, int] = {}
    spans: dict[bytes, SpanRow] = {}
    for step in steps:
        per_span[step.span.span_id] = per_span.get(step.span.span_id, 0) + step.duration_ns
        spans[step.span.span_id] = step.span
    if not per_span:
        return 0, None, 0
    top = max(per_span, key=lambda k: per_span[k])
    return sum(per_span.values()), spans[top], per_span[top]

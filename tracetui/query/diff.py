"""Two runs side by side: their span trees aligned by structure, and what changed per aligned span.

Pure functions over the spans a reader returns (no Textual, no I/O), used by the run diff screen.
Run A is the one the user marked, run B the one open; every delta is **B − A**.

How the trees are aligned (``diff_runs``):

1. **The runs.** When each side has exactly one root, the two roots are paired whatever their
   names (they are the two runs being compared). Otherwise the roots are aligned like children.
2. **Children, per aligned parent, in start order**: a longest common subsequence on the key
   ``(llm_kind, name)`` (``llm_kind`` None for plain spans). Spans that share a key, in the same
   relative order on both sides, are paired; with repeated keys the earliest spans pair first.
   So agent steps, tools and LLM calls pair in order, and a tool call inserted or dropped in
   the middle does not shift everything after it.
3. **Model swaps.** Between two consecutive pairs of step 2, model calls (``llm_kind`` "llm" or
   "embedding") left over on both sides are paired in order, kind by kind: "chat gpt-4o" → "chat
   gpt-4o-mini" at the same place is one changed call (its model differs), not a removed and an
   added one. Other leftovers are not paired: a different tool is a different tool.
4. What is left is **removed** (only in A) or **added** (only in B), with its whole subtree.
5. Aligned pairs are aligned again one level down, without recursion (deep chains are fine).

Common prefixes and suffixes are paired before the subsequence is computed, so two runs of the
same agent cost little; a pathological level (more than ``MAX_LCS_CELLS`` key comparisons left)
falls back to difflib's matching blocks, which are a common subsequence too, not always the longest.

What is compared per aligned pair (``changes``): for a model call the duration, time to first
token, decode time and speed, input and output tokens, cost, request and response model,
status, retry, fallback and time lost to retries; for any other span its duration and status.
A status of "unset" counts as ok: only an error is a failure.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from tracetui.model.views import SpanRow, TraceRow
from tracetui.query.drill import CALL_KINDS
from tracetui.query.tree import build_tree

#: Kinds compared as model calls (timing, tokens, cost, model, retries, fallbacks).
MODEL_KINDS = frozenset({"llm", "embedding"})
#: Above this many key comparisons left at one level, difflib's matching blocks replace the exact LCS.
MAX_LCS_CELLS = 1_000_000

Status = Literal["aligned", "added", "removed"]
#: Which side is better when a figure grows: "lower" (time, cost), "higher" (speed), None (neither).
Better = Literal["lower", "higher"] | None


@dataclass(frozen=True, slots=True)
class Change:
    """One figure of an aligned pair: its value in A and in B, and B − A where both are numbers."""

    key: str
    label: str
    a: object
    b: object
    #: B − A when both values are numbers, else None.
    delta: float | None
    #: "lower" / "higher": which direction is better for this figure; None: neither (tokens, models).
    better: Better = None

    @property
    def changed(self) -> bool:
        return self.a != self.b

    @property
    def verdict(self) -> int:
        """+1 when B is better than A, -1 when worse, 0 when equal or neither is better."""
        if self.key == "status":
            return 0 if self.a == self.b else (1 if self.b == "ok" else -1)
        if self.key in ("is_retry", "is_fallback"):
            return 0 if self.a == self.b else (1 if not self.b else -1)
        if self.delta is None or self.delta == 0 or self.better is None:
            return 0
        return (1 if self.delta < 0 else -1) * (1 if self.better == "lower" else -1)


@dataclass(slots=True)
class DiffRow:
    """One line of the diff in tree order: an aligned pair, or a span only in A (removed) or only in B (added)."""

    status: Status
    a: SpanRow | None
    b: SpanRow | None
    depth: int
    changes: tuple[Change, ...] = ()
    #: How an aligned pair was paired: "root" (the two runs), "key" (kind and name), "model" (a model swap).
    paired_by: str = ""

    @property
    def span(self) -> SpanRow:
        """The span that names the row (A's for a pair)."""
        span = self.a if self.a is not None else self.b
        assert span is not None
        return span

    @property
    def is_model_call(self) -> bool:
        return self.span.llm_kind in MODEL_KINDS

    def change(self, key: str) -> Change | None:
        return next((c for c in self.changes if c.key == key), None)


@dataclass(frozen=True, slots=True)
class RunTotals:
    """A run's totals as the trace list counts them (leaf model calls once)."""

    duration_ns: int
    cost_usd: float | None
    tokens: int
    llm_calls: int
    errors: int

    @classmethod
    def of(cls, trace: TraceRow) -> RunTotals:
        return cls(
            trace.duration_ns,
            trace.cost_usd,
            trace.input_tokens + trace.output_tokens,
            trace.llm_calls,
            trace.error_count,
        )


@dataclass(slots=True)
class RunDiff:
    """The aligned rows of two runs (A: marked, B: open), in tree order."""

    rows: list[DiffRow] = field(default_factory=list)

    @property
    def pairs(self) -> list[DiffRow]:
        return [r for r in self.rows if r.status == "aligned"]

    @property
    def removed(self) -> list[DiffRow]:
        return [r for r in self.rows if r.status == "removed"]

    @property
    def added(self) -> list[DiffRow]:
        return [r for r in self.rows if r.status == "added"]

    def calls(self, status: Status, kinds: frozenset[str] = CALL_KINDS) -> int:
        """How many LLM, embedding, tool and retrieval calls (or ``kinds``) have this status."""
        return sum(1 for r in self.rows if r.status == status and r.span.llm_kind in kinds)


def status_word(span: SpanRow) -> str:
    return "error" if span.is_error else "ok"


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _change(key: str, label: str, a: object, b: object, better: Better = None) -> Change:
    delta = float(b) - float(a) if _number(a) and _number(b) else None  # type: ignore[arg-type]
    return Change(key, label, a, b, delta, better)


#: (SpanRow attribute, label, which way is better) of the figures compared on model calls, after the duration.
MODEL_FIELDS: tuple[tuple[str, str, Better], ...] = (
    ("ttft_ns", "first token", "lower"),
    ("decode_ns", "decode", "lower"),
    ("tokens_per_s", "tokens/s", "higher"),
    ("input_tokens", "input tokens", None),
    ("output_tokens", "output tokens", None),
    ("cost_usd", "cost", "lower"),
    ("request_model", "request model", None),
    ("response_model", "response model", None),
    ("is_retry", "retried", None),
    ("is_fallback", "fallback", None),
    ("retry_ns", "lost to retries", "lower"),
)


def compare(a: SpanRow, b: SpanRow) -> tuple[Change, ...]:
    """The figures of an aligned pair, A then B and B − A (see the module docstring for which)."""
    changes = [_change("duration", "duration", a.duration_ns, b.duration_ns, "lower")]
    if a.llm_kind in MODEL_KINDS or b.llm_kind in MODEL_KINDS:
        changes += [
            _change(key, label, getattr(a, key), getattr(b, key), better) for key, label, better in MODEL_FIELDS
        ]
    changes.append(_change("status", "status", status_word(a), status_word(b)))
    return tuple(changes)


def _key(span: SpanRow) -> tuple[str | None, str]:
    return (span.llm_kind, span.name)


def _lcs_pairs(a: list[SpanRow], b: list[SpanRow]) -> list[tuple[int, int]]:
    """Index pairs of a longest common subsequence of the keys of ``a`` and ``b`` (earliest spans first)."""
    ka, kb = [_key(s) for s in a], [_key(s) for s in b]
    head = 0
    while head < len(ka) and head < len(kb) and ka[head] == kb[head]:
        head += 1
    tail = 0
    while tail < len(ka) - head and tail < len(kb) - head and ka[-1 - tail] == kb[-1 - tail]:
        tail += 1
    pairs = [(i, i) for i in range(head)]
    mid_a, mid_b = ka[head : len(ka) - tail], kb[head : len(kb) - tail]
    n, m = len(mid_a), len(mid_b)
    if n and m:
        if n * m > MAX_LCS_CELLS:
            matcher = difflib.SequenceMatcher(None, mid_a, mid_b, autojunk=False)
            for block in matcher.get_matching_blocks():
                pairs += [(head + block.a + k, head + block.b + k) for k in range(block.size)]
        else:
            # suffix table: row i holds the LCS lengths of mid_a[i:] against every mid_b[j:]
            table = [[0] * (m + 1) for _ in range(n + 1)]
            for i in range(n - 1, -1, -1):
                row, below, key = table[i], table[i + 1], mid_a[i]
                for j in range(m - 1, -1, -1):
                    row[j] = below[j + 1] + 1 if key == mid_b[j] else max(below[j], row[j + 1])
            i = j = 0
            while i < n and j < m:
                if mid_a[i] == mid_b[j] and table[i][j] == table[i + 1][j + 1] + 1:
                    pairs.append((head + i, head + j))
                    i, j = i + 1, j + 1
                elif table[i + 1][j] >= table[i][j + 1]:
                    i += 1
                else:
                    j += 1
    pairs += [(len(ka) - tail + k, len(kb) - tail + k) for k in range(tail)]
    return pairs


Op = tuple[Status, SpanRow | None, SpanRow | None, str]


def _gap(a: list[SpanRow], b: list[SpanRow]) -> list[Op]:
    """The spans between two pairs: model calls paired in order per kind (a model swap), the rest unpaired."""
    partner: dict[int, SpanRow] = {}
    for kind in MODEL_KINDS:
        for x, y in zip([s for s in a if s.llm_kind == kind], [s for s in b if s.llm_kind == kind], strict=False):
            partner[id(x)] = y
    # The pairs per kind may cross each other (an LLM call before an embedding in A, after it in B):
    # keep only pairs in order on both sides, so the rows stay in each run's order.
    position = {id(s): j for j, s in enumerate(b)}
    last = -1
    for x in a:
        found = partner.get(id(x))
        if found is not None:
            if position[id(found)] <= last:
                del partner[id(x)]
            else:
                last = position[id(found)]
    ops: list[Op] = []
    j = 0
    for x in a:
        other = partner.get(id(x))
        if other is None:
            ops.append(("removed", x, None, ""))
            continue
        while b[j] is not other:
            ops.append(("added", None, b[j], ""))
            j += 1
        ops.append(("aligned", x, other, "model"))
        j += 1
    ops += [("added", None, s, "") for s in b[j:]]
    return ops


def align(a: list[SpanRow], b: list[SpanRow]) -> list[Op]:
    """One level: (status, A span, B span, paired by) in order (see the module docstring, steps 2-4)."""
    ops: list[Op] = []
    i = j = 0
    for pi, pj in [*_lcs_pairs(a, b), (len(a), len(b))]:
        if i < pi or j < pj:
            ops += _gap(a[i:pi], b[j:pj])
        if pi < len(a) and pj < len(b):
            ops.append(("aligned", a[pi], b[pj], "key"))
        i, j = pi + 1, pj + 1
    return ops


def _subtree(status: Status, span: SpanRow, depth: int) -> Iterator[DiffRow]:
    """A removed or added span and everything under it."""
    stack = [(span, depth)]
    while stack:
        node, d = stack.pop()
        yield DiffRow(status, node if status == "removed" else None, node if status == "added" else None, d)
        stack.extend((child, d + 1) for child in reversed(node.children))


def diff_trees(roots_a: list[SpanRow], roots_b: list[SpanRow]) -> RunDiff:
    """Align two built span trees (``tracetui.query.tree.build_tree``)."""
    if len(roots_a) == 1 and len(roots_b) == 1:
        top: list[Op] = [("aligned", roots_a[0], roots_b[0], "root")]
    else:
        top = align(roots_a, roots_b)
    rows: list[DiffRow] = []
    # (ops of one level, depth) frames; a pair's children are aligned when the pair is reached.
    stack: list[tuple[Iterator[Op], int]] = [(iter(top), 0)]
    while stack:
        ops, depth = stack[-1]
        op = next(ops, None)
        if op is None:
            stack.pop()
            continue
        status, x, y, paired_by = op
        if status == "aligned":
            assert x is not None and y is not None
            rows.append(DiffRow("aligned", x, y, depth, compare(x, y), paired_by))
            if x.children or y.children:
                stack.append((iter(align(x.children, y.children)), depth + 1))
        else:
            span = x if x is not None else y
            assert span is not None
            rows.extend(_subtree(status, span, depth))
    return RunDiff(rows)


def diff_runs(spans_a: list[SpanRow], spans_b: list[SpanRow]) -> RunDiff:
    """Align two runs' spans (as ``Reader.spans`` returns them; their trees are built here)."""
    return diff_trees(build_tree(spans_a), build_tree(spans_b))

"""Span trees that survive real-world input: missing parents, cycles, deep chains.

Pure functions (no Textual), shared by the UI and the text exports.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tracetui.model.views import SpanRow

#: Tree guides beyond this depth are elided so a 100,000-deep chain still fits a line.
MAX_GUIDE_DEPTH = 16


def build_tree(spans: list[SpanRow]) -> list[SpanRow]:
    """Link spans to their children; return the roots in start order.

    A span whose parent never arrived becomes a root marked ``orphan``; spans
    caught in a parent cycle are cut loose at one point and marked ``orphan``
    too, so every span appears exactly once. Runs iteratively (no recursion).
    """
    by_id = {s.span_id: s for s in spans}
    for s in spans:
        s.children = []
        s.orphan = False
    roots: list[SpanRow] = []
    for s in spans:
        parent = by_id.get(s.parent_span_id) if s.parent_span_id is not None else None
        if parent is None or parent is s:
            if s.parent_span_id is not None:
                s.orphan = True
            roots.append(s)
        else:
            parent.children.append(s)
    for s in spans:
        if len(s.children) > 1:
            s.children.sort(key=lambda c: (c.start_ns, c.name))

    seen: set[bytes] = set()
    _assign_depths(roots, seen)
    if len(seen) < len(by_id):
        # What is left hangs off a cycle: break each cycle at its earliest span.
        for s in sorted(spans, key=lambda x: x.start_ns):
            if s.span_id not in seen:
                parent = by_id.get(s.parent_span_id) if s.parent_span_id else None
                if parent is not None and s in parent.children:
                    parent.children.remove(s)
                s.orphan = True
                roots.append(s)
                _assign_depths([s], seen)
    roots.sort(key=lambda r: (r.orphan, r.start_ns))
    return roots


def _assign_depths(roots: Iterable[SpanRow], seen: set[bytes]) -> None:
    stack = [(r, 0) for r in roots]
    while stack:
        node, depth = stack.pop()
        if node.span_id in seen:
            continue
        seen.add(node.span_id)
        node.depth = depth
        node.children = [c for c in node.children if c.span_id not in seen]
        stack.extend((c, depth + 1) for c in reversed(node.children))


@dataclass(slots=True)
class TreeLine:
    """One visible line of a tree: the span and the guides drawn before its name."""

    span: SpanRow
    guides: str
    collapsed: bool


def flatten(roots: list[SpanRow], collapsed: set[bytes] | frozenset[bytes] = frozenset()) -> list[TreeLine]:
    """Depth-first visible lines, honouring collapsed subtrees."""
    lines: list[TreeLine] = []
    # (node, depth, ancestors-are-last flags): only the last MAX_GUIDE_DEPTH flags are
    # drawn, so only those are kept (a 100,000-deep chain stays linear, not quadratic).
    stack: list[tuple[SpanRow, int, tuple[bool, ...]]] = [(r, 0, ()) for r in reversed(roots)]
    while stack:
        node, depth, lasts = stack.pop()
        is_collapsed = node.span_id in collapsed and bool(node.children)
        lines.append(TreeLine(node, _guides(lasts, depth), is_collapsed))
        if node.children and not is_collapsed:
            count = len(node.children)
            kept = lasts[1:] if len(lasts) >= MAX_GUIDE_DEPTH else lasts
            for i in range(count - 1, -1, -1):
                stack.append((node.children[i], depth + 1, (*kept, i == count - 1)))
    return lines


def _guides(lasts: tuple[bool, ...], depth: int) -> str:
    if not lasts:
        return ""
    shown = lasts[-MAX_GUIDE_DEPTH:]
    head = "…" if depth > MAX_GUIDE_DEPTH else ""
    body = "".join("  " if last else "│ " for last in shown[:-1])
    return head + body + ("└ " if shown[-1] else "├ ")

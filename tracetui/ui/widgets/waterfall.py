"""A trace as an indented tree with one waterfall bar per span (line API).

Each line: tree guides, kind icon, name | duration | bar scaled to the trace.
LLM calls with a known time to first token get two segments: waiting for the
first token, then decoding.
"""

from __future__ import annotations

import math

from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from tracetui.fmt import fmt_duration, safe_text
from tracetui.store.reader import SpanRow
from tracetui.tree import TreeLine
from tracetui.ui.widgets.cursor_list import CursorList, pad

KIND_ICONS = {
    "llm": "◆",
    "embedding": "◇",
    "tool": "▣",
    "retriever": "⌕",
    "agent": "●",
    "chain": "○",
    "evaluator": "✓",
}
_EIGHTHS = " ▏▎▍▌▋▊▉█"
DURATION_WIDTH = 8


def bar_segments(span: SpanRow) -> list[tuple[int, int, str]]:
    """(start_ns, end_ns, component) pieces of one span's bar."""
    start, end = span.start_ns, max(span.start_ns, span.end_ns)
    if span.is_error:
        return [(start, end, "waterfall--error")]
    if span.llm_kind == "llm" and span.ttft_ns is not None and 0 <= span.ttft_ns <= end - start:
        first = start + span.ttft_ns
        return [(start, first, "waterfall--ttft"), (first, end, "waterfall--decode")]
    if span.llm_kind == "llm":
        return [(start, end, "waterfall--response")]
    return [(start, end, "waterfall--bar")]


SEGMENT_CHARS = {"waterfall--ttft": "▒", "waterfall--error": "░"}


def draw_bar(
    pieces: list[tuple[int, int, str]], t0: int, t1: int, width: int
) -> list[tuple[int, str, str]]:
    """Cells (column, character, component) for a bar in ``width`` cells spanning [t0, t1]."""
    if width <= 0 or not pieces:
        return []
    total = max(1, t1 - t0)
    scale = width / total
    start, end = pieces[0][0], pieces[-1][1]
    x0 = (start - t0) * scale
    x1 = (end - t0) * scale
    first = min(width - 1, max(0, int(x0)))
    last = min(width - 1, max(first, math.ceil(x1) - 1))
    cells: list[tuple[int, str, str]] = []
    for col in range(first, last + 1):
        mid = t0 + (col + 0.5) / scale
        component = pieces[-1][2]
        for p_start, p_end, p_component in pieces:
            if mid < p_end:
                component = p_component
                break
        char = SEGMENT_CHARS.get(component, "█")
        if char == "█":
            if first == last:
                fill = max(1, min(8, round((x1 - x0) * 8)))
                char = _EIGHTHS[fill]
            elif col == last and x1 < last + 1:
                char = _EIGHTHS[max(1, min(8, round((x1 - last) * 8)))]
            elif col == first and x0 - first > 0.5:
                char = "▐"
        cells.append((col, char, component))
    return cells


class Waterfall(CursorList):
    """The span tree and its bars. Rows are TreeLines set by the trace screen."""

    COMPONENT_CLASSES = {
        "waterfall--cursor",
        "waterfall--bar",
        "waterfall--error",
        "waterfall--ttft",
        "waterfall--decode",
        "waterfall--response",
        "waterfall--dim",
        "waterfall--error-text",
        "waterfall--guide",
    }
    DEFAULT_CSS = """
    Waterfall > .waterfall--cursor { background: $block-cursor-blurred-background; }
    Waterfall:focus > .waterfall--cursor { background: $block-cursor-background; color: $block-cursor-foreground; }
    Waterfall > .waterfall--bar { color: $foreground 45%; }
    Waterfall > .waterfall--error { color: $error; }
    Waterfall > .waterfall--ttft { color: $warning; }
    Waterfall > .waterfall--decode { color: $success; }
    Waterfall > .waterfall--response { color: $secondary; }
    Waterfall > .waterfall--dim { color: $text-muted; }
    Waterfall > .waterfall--error-text { color: $error; text-style: bold; }
    Waterfall > .waterfall--guide { color: $text-disabled; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.lines: list[TreeLine] = []
        self.t0 = 0
        self.t1 = 1
        self._generation = 0

    def set_lines(self, lines: list[TreeLine], t0: int, t1: int) -> None:
        self.lines = lines
        self.t0, self.t1 = t0, max(t1, t0 + 1)
        self._generation += 1
        self.set_row_count(len(lines))

    def row_key(self, index: int) -> object:
        return (self._generation, index)

    def line_at(self, index: int) -> TreeLine | None:
        return self.lines[index] if 0 <= index < len(self.lines) else None

    def name_width(self, width: int) -> int:
        return max(16, min(56, int(width * 0.42)))

    def render_row(self, index: int, width: int, cursor: bool) -> Strip:
        line = self.lines[index]
        span = line.span
        base = self.rich_style
        if cursor:
            base = base + self.get_component_rich_style("waterfall--cursor")
        partial = lambda name: self.get_component_rich_style(name, partial=True)  # noqa: E731

        name_w = self.name_width(width)
        segments: list[Segment] = [Segment(" ", base)]
        used = 1
        guides = line.guides
        if guides:
            segments.append(Segment(guides, base + partial("waterfall--guide")))
            used += len(guides)
        marker = ("▶ " if line.collapsed else "▼ ") if span.children else ""
        icon = KIND_ICONS.get(span.llm_kind or "", "")
        label = f"{marker}{icon + ' ' if icon else ''}"
        name = safe_text(span.name, 200)
        model = span.request_model or span.response_model
        if span.llm_kind in ("llm", "embedding") and model and model not in span.name:
            name += f" · {safe_text(model, 40)}"
        if span.orphan:
            name += " (parent missing)"
        text_style = base + (partial("waterfall--error-text") if span.is_error else Style())
        segments.append(pad(label + name + (" ✗" if span.is_error else ""), max(1, name_w - used), text_style))
        used = max(used, name_w)
        segments.append(pad(fmt_duration(span.duration_ns), DURATION_WIDTH, base + partial("waterfall--dim"), right=True))
        segments.append(Segment("  ", base))
        used += DURATION_WIDTH + 2
        bar_w = max(0, width - used - 1)
        cells = draw_bar(bar_segments(span), self.t0, self.t1, bar_w)
        col = 0
        for c, char, component in cells:
            if c > col:
                segments.append(Segment(" " * (c - col), base))
            segments.append(Segment(char, base + partial(component)))
            col = c + 1
        if col < bar_w:
            segments.append(Segment(" " * (bar_w - col), base))
        return Strip(segments)

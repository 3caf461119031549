"""A trace as an indented tree with one waterfall bar per span (line API).

Each line: tree guides, kind icon, name | duration | bar scaled to the trace.
LLM calls with a known time to first token get two segments: waiting for the
first token, then decoding (plus a retry segment when earlier attempts failed
inside the span). Retried calls are marked ↻, fallbacks ⤷, errors ✗; tokens,
cost and decode speed sit in a column on the right.
"""

from __future__ import annotations

import math

from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from tracetui.llm.timing import first_token_at
from tracetui.model.fmt import fmt_cost, fmt_count, fmt_duration, safe_text, short_name
from tracetui.model.views import SpanRow
from tracetui.query.tree import TreeLine
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
INFO_WIDTH = 30
#: Below this width the tokens column is dropped to leave room for the bar.
INFO_MIN_WIDTH = 90


def bar_segments(span: SpanRow) -> list[tuple[int, int, str]]:
    """(start_ns, end_ns, component) pieces of one span's bar.

    A streamed LLM call: [retry inside the span] then waiting for the first
    token, then decode. A call without a known first token is one "response"
    piece: no invented split. The retry runs from the call's start to the
    start of the attempt that succeeded (HTTP attempt children, exception
    events: ``retry_offset_ns`` from tracetui.llm.timing).
    """
    start, end = span.start_ns, max(span.start_ns, span.end_ns)
    if span.is_error:
        return [(start, end, "waterfall--error")]
    if span.llm_kind not in ("llm", "embedding"):
        return [(start, end, "waterfall--bar")]
    pieces: list[tuple[int, int, str]] = []
    attempt = start
    offset = span.retry_offset_ns or span.attempt_offset_ns  # the latter: databases analyzed before schema 7
    if offset and 0 < offset <= end - start:
        attempt = start + offset
        pieces.append((start, attempt, "waterfall--retry"))
    first = first_token_at(start, attempt, end, span.ttft_ns, span.attempt_offset_ns, span.provenance)
    if first is not None:
        pieces += [(attempt, first, "waterfall--ttft"), (first, end, "waterfall--decode")]
    else:
        pieces.append((attempt, end, "waterfall--response"))
    return pieces


def span_marks(span: SpanRow) -> str:
    """Retry / fallback / error marks after a span's name."""
    marks = ""
    if span.is_retry:
        marks += " ↻"
    if span.is_fallback:
        marks += " ⤷"
    if span.is_error:
        marks += " ✗"
    return marks


def span_info(span: SpanRow, width: int) -> str:
    """Tokens in→out, cost and decode speed of a model call, as much as fits in ``width``."""
    if span.llm_kind not in ("llm", "embedding"):
        return ""
    parts = []
    if span.input_tokens is not None or span.output_tokens is not None:
        # "~": the library counted them itself (provenance tokens_estimated), the provider sent none
        est = "~" if span.provenance and '"tokens_estimated"' in span.provenance else ""
        tokens = est + fmt_count(span.input_tokens) if span.input_tokens is not None else "?"
        if span.output_tokens is not None:
            tokens += f"→{est}{fmt_count(span.output_tokens)}"
        parts.append(tokens)
        parts.append(fmt_cost(span.cost_usd))
    if span.tokens_per_s:
        parts.append(f"{span.tokens_per_s:.0f}t/s")
    while parts and len(" ".join(parts)) > width:
        parts.pop()
    return " ".join(parts)


#: Each kind of piece has its own glyph, so bars (and the legend, built from this) read on monochrome
#: terminals too; colour only repeats the distinction. Decode and spans other than model calls are solid
#: blocks (partial cells at their ends keep sub-cell precision); "other" is a slightly lower block.
SEGMENT_CHARS = {
    "waterfall--retry": "╳",
    "waterfall--ttft": "▒",
    "waterfall--decode": "█",
    "waterfall--response": "▓",
    "waterfall--error": "░",
    "waterfall--bar": "▆",
}
#: Glyphs drawn with eighth-cell precision at the ends of a bar.
_SOLID = frozenset({"█", "▆"})


def draw_bar(pieces: list[tuple[int, int, str]], t0: int, t1: int, width: int) -> list[tuple[int, str, str]]:
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
        for _p_start, p_end, p_component in pieces:
            if mid < p_end:
                component = p_component
                break
        char = SEGMENT_CHARS.get(component, "█")
        if char in _SOLID:
            if first == last:
                fill = max(1, min(8, round((x1 - x0) * 8)))
                char = _EIGHTHS[fill]
            elif col == last and x1 < last + 1:
                char = _EIGHTHS[max(1, min(8, round((x1 - last) * 8)))]
            elif col == first and x0 - first > 0.5:
                char = "▐"
        cells.append((col, char, component))
    return cells


def highlighted(text: str, needle: str, style: Style, match_style: Style) -> list[Segment]:
    """``text`` as segments, each occurrence of ``needle`` (lower case; case-insensitive) in ``match_style``.

    The text is drawn as the characters it holds (segments are never parsed as markup).
    When lower-casing changes the text's length (rare letters), positions would not line up:
    the text is then drawn without highlights.
    """
    lowered = text.lower()
    if not needle or len(lowered) != len(text):
        return [Segment(text, style)]
    out: list[Segment] = []
    start = 0
    while (found := lowered.find(needle, start)) >= 0:
        if found > start:
            out.append(Segment(text[start:found], style))
        out.append(Segment(text[found : found + len(needle)], match_style))
        start = found + len(needle)
    if start < len(text):
        out.append(Segment(text[start:], style))
    return out


class Waterfall(CursorList):
    """The span tree and its bars. Rows are TreeLines set by the trace screen."""

    COMPONENT_CLASSES = {
        "waterfall--cursor",
        "waterfall--bar",
        "waterfall--error",
        "waterfall--retry",
        "waterfall--ttft",
        "waterfall--decode",
        "waterfall--response",
        "waterfall--dim",
        "waterfall--error-text",
        "waterfall--guide",
        "waterfall--good",
        "waterfall--critical",
        "waterfall--match",
        "waterfall--hit",
    }
    DEFAULT_CSS = """
    Waterfall > .waterfall--cursor { background: $block-cursor-blurred-background; }
    Waterfall:focus > .waterfall--cursor { background: $block-cursor-background; color: $block-cursor-foreground; }
    Waterfall > .waterfall--bar { color: $foreground 45%; }
    Waterfall > .waterfall--error { color: $error; }
    Waterfall > .waterfall--retry { color: $error; }
    Waterfall > .waterfall--ttft { color: $warning; }
    Waterfall > .waterfall--decode { color: $success; }
    Waterfall > .waterfall--response { color: $secondary; }
    Waterfall > .waterfall--dim { color: $text-muted; }
    Waterfall > .waterfall--error-text { color: $error; text-style: bold; }
    Waterfall > .waterfall--guide { color: $text-disabled; }
    Waterfall > .waterfall--good { color: $success; text-style: bold; }
    Waterfall > .waterfall--critical { color: $accent; text-style: bold; }
    Waterfall > .waterfall--match { background: $warning 70%; color: $text; text-style: bold; }
    Waterfall > .waterfall--hit { color: $warning; text-style: bold; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.lines: list[TreeLine] = []
        self.t0 = 0
        self.t1 = 1
        self._generation = 0
        #: Span ids on the highlighted critical path (empty: not shown).
        self.critical: frozenset[bytes] = frozenset()
        #: The `/` search: its text (lower case) and the spans that hold it (marked, their names highlighted).
        self.search = ""
        self.hits: frozenset[bytes] = frozenset()

    def set_search(self, text: str, hits: frozenset[bytes]) -> None:
        self.search, self.hits = text.lower(), hits
        self._generation += 1
        self.clear_cache()

    def set_critical(self, span_ids: frozenset[bytes]) -> None:
        self.critical = span_ids
        self._generation += 1
        self.clear_cache()

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
        base = self.base_style
        if cursor:
            base = base + self.component_style("waterfall--cursor")
        partial = lambda name: self.component_style(name, partial=True)  # noqa: E731

        name_w = self.name_width(width)
        hit = span.span_id in self.hits
        segments: list[Segment] = [Segment("»", base + partial("waterfall--hit")) if hit else Segment(" ", base)]
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
        on_path = span.span_id in self.critical
        if on_path:
            text_style = text_style + partial("waterfall--critical")
            label = "┃" + label
        marks = span_marks(span)
        room = max(1, name_w - used)
        if icon:  # the icon already says what the operation prefix says ("● invoke_agent x" -> "● x")
            name = short_name(name, room - len(label) - len(marks))
        cell = pad(label + name + marks, room, text_style)
        if hit and self.search:
            segments += highlighted(cell.text, self.search, text_style, text_style + partial("waterfall--match"))
        else:
            segments.append(cell)
        used = max(used, name_w)
        segments.append(
            pad(fmt_duration(span.duration_ns), DURATION_WIDTH, base + partial("waterfall--dim"), right=True)
        )
        segments.append(Segment("  ", base))
        used += DURATION_WIDTH + 2
        info_w = INFO_WIDTH if width >= INFO_MIN_WIDTH else 0
        bar_w = max(0, width - used - 1 - (info_w + 1 if info_w else 0))
        cells = draw_bar(bar_segments(span), self.t0, self.t1, bar_w)
        col = 0
        for c, char, component in cells:
            if c > col:
                segments.append(Segment(" " * (c - col), base))
            segments.append(Segment(char, base + partial(component)))
            col = c + 1
        if col < bar_w:
            segments.append(Segment(" " * (bar_w - col), base))
        if info_w:
            segments.append(Segment(" ", base))
            badge = ""
            if span.groundedness is not None:
                ok = span.groundedness >= getattr(self.app, "threshold", 0.5)
                badge = f" {'●' if ok else '✗'}{'≈' if span.groundedness_estimated else ''}{span.groundedness:.2f}"
            info = span_info(span, info_w - len(badge))
            segments.append(pad(info, info_w - len(badge), base + partial("waterfall--dim"), right=True))
            if badge:
                segments.append(Segment(badge, base + partial("waterfall--good" if ok else "waterfall--error-text")))
        return Strip(segments)

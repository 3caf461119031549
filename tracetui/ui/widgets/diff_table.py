"""The rows of a run diff (line API): aligned spans with A, B and B − A; spans only in A or only in B.

Each aligned span is one line with its duration; under an aligned model call, one line per other
figure that differs (first token, decode, tokens, cost, model, status, retries, fallback). A delta
is told by its sign and a word ("-27.6s faster", "+$0.002 costlier"), and coloured too: never by
colour alone. Span names and models are data: they go through ``safe_text`` into plain segments,
never into markup.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.strip import Strip

from tracetui.model.fmt import fmt_cost, fmt_duration, safe_text
from tracetui.query.diff import Change, DiffRow, RunDiff
from tracetui.ui.widgets.cursor_list import CursorList, pad
from tracetui.ui.widgets.waterfall import KIND_ICONS, span_marks

#: Tree indentation stops growing here, so deep runs keep room for their names.
MAX_INDENT = 12
DELTA_WIDTH = 20
MARK_WIDTH = 2
#: The words of a delta: (B better, B worse), by figure.
_WORDS = {
    "duration": ("faster", "slower"),
    "ttft_ns": ("faster", "slower"),
    "decode_ns": ("faster", "slower"),
    "retry_ns": ("less", "more"),
    "tokens_per_s": ("faster", "slower"),
    "cost_usd": ("cheaper", "costlier"),
}
_NS_KEYS = frozenset({"duration", "ttft_ns", "decode_ns", "retry_ns"})


def value_text(key: str, value: object) -> str:
    """One side's value of a figure, in the words the rest of the UI uses ("—" when it has none)."""
    if value is None:
        return "—"
    if key in _NS_KEYS:
        return fmt_duration(int(value))  # type: ignore[call-overload]
    if key == "tokens_per_s":
        return f"{value:.1f}/s"
    if key == "cost_usd":
        return fmt_cost(float(value))  # type: ignore[arg-type]
    if key in ("input_tokens", "output_tokens"):
        return f"{value:,}"
    if key in ("is_retry", "is_fallback"):
        return "yes" if value else "no"
    return safe_text(value, 80)


def _signed(key: str, delta: float) -> str:
    sign = "+" if delta > 0 else "-"
    if key in _NS_KEYS:
        return sign + fmt_duration(int(abs(delta)))
    if key == "cost_usd":
        return sign + fmt_cost(abs(delta))
    if key == "tokens_per_s":
        return f"{sign}{abs(delta):.1f}/s"
    return f"{sign}{abs(delta):,.0f}"


def delta_text(change: Change) -> str:
    """B − A with its sign and a word: "-27.6s faster", "+918 more", "= same", "fixed", "B only"."""
    if not change.changed:
        return "= same"
    key = change.key
    if key == "status":
        return "fixed" if change.verdict > 0 else "now fails"
    if key in ("is_retry", "is_fallback"):
        return "gone in B" if change.verdict > 0 else "new in B"
    if change.delta is None:
        if change.a is None:
            return "B only"
        if change.b is None:
            return "A only"
        return "changed"
    if change.delta == 0:  # e.g. 1 and 1.0
        return "= same"
    words = _WORDS.get(key)
    if words is None:
        word = "more" if change.delta > 0 else "fewer"
    else:
        word = words[0] if change.verdict > 0 else words[1] if change.verdict < 0 else ""
    return f"{_signed(key, change.delta)} {word}".rstrip()


@dataclass(frozen=True, slots=True)
class DiffLine:
    """One drawn line: a span row of the diff, or one figure (``change``) of the aligned row above it."""

    row: int
    change: Change | None = None


def diff_lines(diff: RunDiff) -> list[DiffLine]:
    """The lines of a diff: each row, and under an aligned model call the figures that differ."""
    lines: list[DiffLine] = []
    for i, row in enumerate(diff.rows):
        lines.append(DiffLine(i))
        if row.status == "aligned":
            lines += [DiffLine(i, c) for c in row.changes if c.key != "duration" and c.changed]
    return lines


def layout(width: int) -> tuple[int, int, int]:
    """(name, value, delta) column widths for a line ``width`` cells wide (a mark cell and gaps besides)."""
    rest = max(0, width - MARK_WIDTH - DELTA_WIDTH - 4)
    value = max(8, min(24, rest // 5))
    return max(10, rest - 2 * value), value, DELTA_WIDTH


def row_name(row: DiffRow, width: int) -> str:
    """Indented icon and name; both names when a model swap paired two differently named calls."""
    span = row.span
    indent = "  " * min(row.depth, MAX_INDENT)
    icon = KIND_ICONS.get(span.llm_kind or "", "·")
    name = safe_text(span.name, 200)
    if row.a is not None and row.b is not None:
        if row.b.name != row.a.name:
            name += " → " + safe_text(row.b.name, 200)
        marks = span_marks(row.a)
        if marks == span_marks(row.b):  # a change of marks is told on its own line (status, retried, fallback)
            name += marks
    else:
        name += span_marks(span)
    return f"{indent}{icon} {name}"


class DiffTable(CursorList):
    """The aligned rows of a RunDiff (see the module docstring)."""

    HEADER_LINES = 1
    #: Enter opens the text diff (the screen's `t`), so the footer does not offer a misleading "Open".
    BINDINGS = [Binding("enter", "select", "Text diff", show=False, tooltip="text diff of the LLM call")]
    COMPONENT_CLASSES = {
        "diff-table--header",
        "diff-table--cursor",
        "diff-table--better",
        "diff-table--worse",
        "diff-table--added",
        "diff-table--removed",
        "diff-table--dim",
    }
    DEFAULT_CSS = """
    DiffTable > .diff-table--header { text-style: bold; color: $text-muted; background: $boost; }
    DiffTable > .diff-table--cursor { background: $block-cursor-blurred-background; }
    DiffTable:focus > .diff-table--cursor { background: $block-cursor-background; color: $block-cursor-foreground; }
    DiffTable > .diff-table--better { color: $success; }
    DiffTable > .diff-table--worse { color: $error; }
    DiffTable > .diff-table--added { color: $success; }
    DiffTable > .diff-table--removed { color: $error; }
    DiffTable > .diff-table--dim { color: $text-muted; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.diff = RunDiff()
        self.lines: list[DiffLine] = []

    def set_diff(self, diff: RunDiff) -> None:
        self.diff = diff
        self.lines = diff_lines(diff)
        self.cursor_row = 0
        self.set_row_count(len(self.lines))

    def row_at(self, index: int) -> DiffRow | None:
        """The diff row of line ``index`` (a figure line belongs to the span row above it)."""
        if 0 <= index < len(self.lines):
            return self.diff.rows[self.lines[index].row]
        return None

    def render_header(self, line: int, width: int) -> Strip:
        style = self.component_style("diff-table--header")
        name_w, value_w, delta_w = layout(width)
        segments = [
            Segment(" " * MARK_WIDTH, style),
            pad("SPAN", name_w, style),
            Segment(" ", style),
            pad("A (marked)", value_w, style, right=True),
            Segment(" ", style),
            pad("B (open)", value_w, style, right=True),
            Segment("  ", style),
            pad("Δ = B − A", delta_w, style),
        ]
        return Strip(segments).crop_extend(0, width, style)

    def render_row(self, index: int, width: int, cursor: bool) -> Strip:
        base = self.base_style
        if cursor:
            base = base + self.component_style("diff-table--cursor")
        line = self.lines[index]
        row = self.diff.rows[line.row]
        name_w, value_w, delta_w = layout(width)
        dim = base + self.component_style("diff-table--dim", partial=True)
        if line.change is not None:  # one figure of the aligned model call above
            change = line.change
            indent = "  " * min(row.depth, MAX_INDENT)
            cells = (f"{indent}    {change.label}", value_text(change.key, change.a),
                     value_text(change.key, change.b), delta_text(change))  # fmt: skip
            name_style = dim
            delta_style = self._verdict_style(base, change.verdict)
            mark = "  "
        elif row.status == "aligned":
            duration = row.changes[0]
            cells = (row_name(row, name_w), value_text("duration", duration.a), value_text("duration", duration.b),
                     delta_text(duration))  # fmt: skip
            name_style = base + Style(bold=row.is_model_call)
            delta_style = self._verdict_style(base, duration.verdict)
            mark = "  "
        else:
            removed = row.status == "removed"
            style = base + self.component_style("diff-table--removed" if removed else "diff-table--added", partial=True)
            shown = value_text("duration", row.span.duration_ns)
            cells = (row_name(row, name_w), shown if removed else "", "" if removed else shown,
                     "− removed (A only)" if removed else "+ added (B only)")  # fmt: skip
            name_style = delta_style = style
            mark = "− " if removed else "+ "
        name, a, b, delta = cells
        segments = [
            Segment(mark, name_style),
            pad(name, name_w, name_style),
            Segment(" ", base),
            pad(a, value_w, base, right=True),
            Segment(" ", base),
            pad(b, value_w, base, right=True),
            Segment("  ", base),
            pad(delta, delta_w, delta_style),
        ]
        return Strip(segments)

    def _verdict_style(self, base: Style, verdict: int) -> Style:
        if verdict > 0:
            return base + self.component_style("diff-table--better", partial=True)
        if verdict < 0:
            return base + self.component_style("diff-table--worse", partial=True)
        return base

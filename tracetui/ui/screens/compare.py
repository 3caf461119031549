"""`C`: two cohorts side by side, every delta (B − A) with what its sample can tell, and the verdict.

The cohorts come from the Stats screen (two marked rows) or from the compare line (two filter
expressions, optionally split at the moment of a change). The figures are
tracetui.query.compare's, computed in a thread worker and again when new data arrives.
`x` exports B's failing calls (groundedness below the threshold) as a regression set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Input, Static

from tracetui.model.filter import FilterError, parse
from tracetui.query import compare as cmp
from tracetui.query.cohort import default_path, write_cohort
from tracetui.query.scrub import policy_note
from tracetui.ui.context import tui
from tracetui.ui.lifecycle import forget_worker_when_done, unwatch_app
from tracetui.ui.widgets.key_footer import KeyFooter
from tracetui.ui.widgets.status_header import StatusHeader

_WORD_STYLE = {"better": "green", "worse": "red", "≈ noise": "dim"}
_DECISION_STYLE = {"accept": "bold green", "reject": "bold red"}


@dataclass
class CompareComputed(Message):
    comparison: cmp.Comparison | None
    error: str | None = None


@dataclass
class CohortWritten(Message):
    path: str | None
    count: int
    error: str | None = None
    #: What the content policy left out (tracetui.query.scrub.policy_note), "" when nothing.
    note: str = ""


def figures_table(c: cmp.Comparison) -> Table:
    """Figure, A, B, Δ (B − A) and what it means; data shown literally (Text, never markup)."""
    table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold", expand=False)
    table.add_column("FIGURE", no_wrap=True, overflow="ellipsis", min_width=12, ratio=None)
    table.add_column("A", justify="right", no_wrap=True)
    table.add_column("B", justify="right", no_wrap=True)
    table.add_column("Δ B − A", justify="right", no_wrap=True)
    table.add_column("MEANS", no_wrap=True, overflow="ellipsis")
    rows = list(c.deltas) + [d for _, d in c.thumbs_by_ttft]
    for d in rows:
        word = cmp.format_verdict_word(d)
        style = _WORD_STYLE.get(word.split(" (")[0], "dim" if "n too small" in word or "no data" in word else "")
        table.add_row(
            Text(d.title),
            cmp.format_value(d, d.a),
            cmp.format_value(d, d.b),
            cmp.format_change(d),
            Text(word, style=style),
        )
    return table


def verdict_text(c: cmp.Comparison) -> Group:
    """The verdict and its warnings: on top, always in view."""
    lines = [Text.assemble(("verdict: ", "bold"), (c.verdict.line, _DECISION_STYLE.get(c.verdict.decision, "bold")))]
    lines += [Text(f"⚠ {w}", style="yellow") for w in c.verdict.warnings]
    return Group(*lines)


def notes_text(c: cmp.Comparison) -> Group:
    """Under the figures: the caps each side used, notes, the rule and the method."""
    lines = [Text(f"max_tokens caps  A: {cmp.caps_text(c.caps_a)}   B: {cmp.caps_text(c.caps_b)}", style="dim")]
    lines += [Text(f"note: {n}", style="dim") for n in c.notes]
    rule = c.rule
    lines.append(
        Text(
            f"rule: reject when groundedness drops > {rule.max_quality_drop:g}, errors rise > "
            f"{rule.max_error_rise:.0%}, thumbs down rise > {rule.max_thumbs_down_rise:.0%}; accept when p99 "
            f"improves ≥ {rule.min_gain:.0%} (tracetui compare --min-gain ... to change)",
            style="dim",
        )
    )
    lines.append(Text(c.method, style="dim"))
    return Group(*lines)


class CompareScreen(Screen):
    BINDINGS = [
        Binding("escape", "back", "Back", show=True),
        Binding(
            "x",
            "export_failing",
            "Export B's failing",
            show=True,
            tooltip="write B's calls with groundedness below the threshold as a regression set (JSON lines)",
        ),  # fmt: skip
        Binding("s", "swap", "Swap A/B", show=True, tooltip="swap the two cohorts"),
    ]

    def __init__(self, a: cmp.Cohort, b: cmp.Cohort, rule: cmp.Rule | None = None) -> None:
        super().__init__()
        self.a, self.b = a, b
        self.rule = rule or cmp.Rule(threshold=0.5)
        self.comparison: cmp.Comparison | None = None
        self._computing = False
        self._again = False

    def compose(self) -> ComposeResult:
        yield StatusHeader(tui(self).listen, id="status")
        yield Static("", id="compare-title")
        yield Static(Text("Comparing…", style="dim"), id="compare-verdict")
        with VerticalScroll(id="compare-body"):
            yield Static("", id="compare-table")
            yield Static("", id="compare-notes")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.rule = cmp.Rule(threshold=tui(self).threshold)
        self._show_title()
        self.query_one("#compare-body").focus()
        self.watch(self.app, "data_version", lambda _v: self.recompute(), init=False)
        self.recompute()

    def on_unmount(self) -> None:
        unwatch_app(self)

    def _show_title(self) -> None:
        title = Text.assemble(
            (" A ", "bold reverse"), " ", self.a.describe_window(80), "\n", (" B ", "bold reverse"), " ", self.b.describe_window(80),
            ("   deltas are B − A", "dim"),
        )  # fmt: skip
        self.query_one("#compare-title", Static).update(title)

    def recompute(self) -> None:
        if self._computing:
            self._again = True
            return
        self._computing = True
        self._compute(self.a, self.b, self.rule)

    @work(thread=True, group="compare", exit_on_error=False, description="compare cohorts")
    @forget_worker_when_done
    def _compute(self, a: cmp.Cohort, b: cmp.Cohort, rule: cmp.Rule) -> None:
        try:
            self.post_message(CompareComputed(cmp.compare(tui(self).reader, a, b, rule)))
        except Exception as exc:
            self.post_message(CompareComputed(None, str(exc) or type(exc).__name__))

    @on(CompareComputed)
    def _computed(self, message: CompareComputed) -> None:
        self._computing = False
        if message.error or message.comparison is None:
            self.query_one("#compare-verdict", Static).update(Text(f"Could not compare: {message.error}", style="red"))
        else:
            self.comparison = message.comparison
            self.query_one("#compare-verdict", Static).update(verdict_text(message.comparison))
            self.query_one("#compare-table", Static).update(figures_table(message.comparison))
            self.query_one("#compare-notes", Static).update(notes_text(message.comparison))
        if self._again:
            self._again = False
            self.recompute()

    # --- keys ----------------------------------------------------------------

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_swap(self) -> None:
        self.a, self.b = (
            cmp.Cohort("A", self.b.expression, self.b.since_ns, self.b.until_ns, self.b.group),
            cmp.Cohort("B", self.a.expression, self.a.since_ns, self.a.until_ns, self.a.group),
        )
        self._show_title()
        self.recompute()

    def action_export_failing(self) -> None:
        grounded = self.comparison.get("groundedness") if self.comparison else None
        if grounded is not None and not grounded.n_b:
            self.notify("B has no groundedness scores: no failing calls to export.", markup=False, timeout=4)
            return
        self._export(self.b, self.rule.threshold, default_path())

    @work(thread=True, group="compare-export", exit_on_error=False, description="export a cohort")
    @forget_worker_when_done
    def _export(self, cohort: cmp.Cohort, threshold: float, path: str) -> None:
        try:
            failing = f"{cohort.expression} groundedness<{threshold:g}".strip()
            count = write_cohort(
                tui(self).reader, path, parse(failing), since_ns=cohort.since_ns, until_ns=cohort.until_ns,
                keep=cohort.takes,
            )  # fmt: skip
            note = policy_note(tui(self).reader.content_policy())
        except Exception as exc:
            self.post_message(CohortWritten(None, 0, str(exc) or type(exc).__name__))
            return
        self.post_message(CohortWritten(path, count, note=note))

    @on(CohortWritten)
    def _written(self, message: CohortWritten) -> None:
        if message.error:
            self.notify(f"Could not export: {message.error}", severity="error", markup=False)
        else:
            self.notify(
                f"Wrote {message.count} failing call{'s' if message.count != 1 else ''} of B to {message.path} "
                f"(readable by you only). {message.note}".rstrip(),
                markup=False,
                timeout=8,
            )


class CompareDialog(ModalScreen[tuple[cmp.Cohort, cmp.Cohort] | None]):
    """Two filter expressions, and optionally the moment of a change (A before it, B from it)."""

    BINDINGS = [Binding("escape", "dismiss_none", "Cancel", show=True)]
    DEFAULT_CSS = """
    CompareDialog { align: center middle; }
    CompareDialog > #compare-box {
        width: 90; max-width: 100%; height: auto; border: round $primary; background: $surface; padding: 0 1;
    }
    CompareDialog Input { margin: 0 0 0 0; }
    CompareDialog #compare-problem { color: $error; height: auto; }
    """

    def __init__(self, a_text: str = "", b_text: str = "", base_filter: str = "", since_ns: int | None = None) -> None:
        super().__init__()
        self.a_text, self.b_text, self.base_filter, self.since_ns = a_text, b_text, base_filter, since_ns

    def compose(self) -> ComposeResult:
        with Vertical(id="compare-box"):
            yield Static(Text("Compare two cohorts of LLM calls", style="bold"))
            yield Static(Text("A: filter expression (empty: every call)", style="dim"))
            yield Input(self.a_text, placeholder="e.g. prompt.version=6", id="compare-a")
            yield Static(Text("B: filter expression", style="dim"))
            yield Input(self.b_text, placeholder="e.g. prompt.version=7", id="compare-b")
            yield Static(
                Text("change at (optional): A ends, B starts. 2h = two hours ago, or 2026-12-05T10:00", style="dim")
            )
            yield Input("", placeholder="e.g. 2h", id="compare-change")
            yield Static("", id="compare-problem")
            yield Static(Text("Enter compares · Tab next field · Esc cancels", style="dim"))

    def on_mount(self) -> None:
        self.query_one("#compare-a", Input).focus()

    def action_dismiss_none(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    def _submitted(self, _event: Input.Submitted) -> None:
        a_text = self.query_one("#compare-a", Input).value
        b_text = self.query_one("#compare-b", Input).value
        change = self.query_one("#compare-change", Input).value.strip()
        problem = self.query_one("#compare-problem", Static)
        texts = []
        for name, text in (("A", a_text), ("B", b_text)):
            combined = f"{self.base_filter} {text}".strip()
            try:
                if combined:
                    parse(combined)
            except FilterError as exc:
                problem.update(Text(f"{name}: {exc}"))
                return
            texts.append(combined)
        a_range: tuple[int | None, int | None] = (self.since_ns, None)
        b_range: tuple[int | None, int | None] = (self.since_ns, None)
        if change:
            try:
                moment = cmp.parse_time(change, time.time_ns())
            except ValueError as exc:
                problem.update(Text(f"change at: {exc}"))
                return
            a_range, b_range = (self.since_ns, moment), (moment, None)
        if texts[0] == texts[1] and a_range == b_range:
            problem.update(Text("A and B are the same calls: give them different filters, or a change time."))
            return
        self.dismiss((cmp.Cohort("A", texts[0], *a_range), cmp.Cohort("B", texts[1], *b_range)))

"""`S`: latency percentiles, speed, error/retry/fallback rates, cost and groundedness by model, route or prompt version.

Computed by tracetui.query.stats in a thread worker over the current filter and a
time window; refreshed when new data arrives (one computation in flight, the
latest request wins), so keys never wait on SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Sparkline, Static

from tracetui.model.filter import parse
from tracetui.model.fmt import fit, fmt_cost, fmt_duration, join_to_fit, safe_text
from tracetui.query import metric_stats
from tracetui.query.stats import GROUPINGS, WINDOWS, GroupStats, compute
from tracetui.ui.context import tui
from tracetui.ui.lifecycle import forget_worker_when_done, unwatch_app
from tracetui.ui.widgets.key_footer import KeyFooter
from tracetui.ui.widgets.status_header import StatusHeader

#: (column title, GroupStats attribute, formatter)
COLUMNS: tuple[tuple[str, str], ...] = (
    ("KEY", "key"),
    ("CALLS", "count"),
    ("RUNS", "runs"),
    ("P50", "p50_ms"),
    ("P95", "p95_ms"),
    ("P99", "p99_ms"),
    ("TTFT P50", "ttft_p50_ms"),
    ("TTFT P95", "ttft_p95_ms"),
    ("TTFT P99", "ttft_p99_ms"),
    ("TOK/S", "tokens_per_s"),
    ("ERR", "error_rate"),
    ("RETRY", "retry_rate"),
    ("FALLBK", "fallback_rate"),
    ("$/RUN", "cost_per_run"),
    ("GROUND", "groundedness"),
)
HISTOGRAM_BUCKETS = 40
#: The "users:" line (thumbs down by TTFT, abandonment) reads the calls again; above this many it is not
#: computed (about 1 s of SQLite at 200,000 calls: benchmarks/compare.py).
FEELINGS_MAX_CALLS = 200_000
#: The "from metrics" table: (column title, ModelMetrics figure, percentile attribute).
METRIC_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("P50", "duration", "p50_ms"),
    ("P95", "duration", "p95_ms"),
    ("P99", "duration", "p99_ms"),
    ("TTFT P50", "ttft", "p50_ms"),
    ("TTFT P95", "ttft", "p95_ms"),
    ("TTFT P99", "ttft", "p99_ms"),
    ("TPOT P50", "time_per_output_token", "p50_ms"),
    ("TPOT P95", "time_per_output_token", "p95_ms"),
)
METRICS_LABEL = f"from metrics, per model ({metric_stats.METHOD})"
#: The label where the whole one does not fit on a line (80 columns); the ERROR ≤ column gives the bound.
METRICS_LABEL_SHORT = "from metrics, per model (read from histogram buckets; ERROR ≤: their bound)"
#: Which "from metrics" columns go first on a narrow terminal (higher first). At 80 columns the table keeps
#: p50/p95 of duration and of TTFT and the TPOT p50 beside the model, the calls and the error bound.
METRIC_PRIORITY = {"P50": 1, "P95": 1, "TTFT P50": 1, "TTFT P95": 2, "TPOT P50": 2, "P99": 3, "TTFT P99": 4,
                   "TPOT P95": 4}  # fmt: skip
FILTERED_OUT = "not shown while filtering (metrics carry no span attributes)"


def cell(attribute: str, value) -> str:
    if value is None:
        return "—"
    if attribute == "key":
        return safe_text(value, 48)
    if attribute.endswith("_ms"):
        return fmt_duration(int(value * 1e6))
    if attribute.endswith("_rate"):
        return f"{value:.0%}"
    if attribute == "tokens_per_s":
        return f"{value:.0f}"
    if attribute == "cost_per_run":
        return fmt_cost(value)
    if attribute == "groundedness":
        return f"{value:.2f}"
    return str(value)


#: Which columns go first on a narrow terminal (higher first); KEY never goes. At 80 columns the table keeps
#: calls, p50/p95, TTFT p50, error rate, cost per run and groundedness; from about 150 it shows everything.
COLUMN_PRIORITY = {
    "key": 0, "count": 1, "p50_ms": 1, "p95_ms": 1, "ttft_p50_ms": 2, "error_rate": 2, "cost_per_run": 2,
    "groundedness": 2, "tokens_per_s": 3, "runs": 4, "p99_ms": 4, "retry_rate": 4, "fallback_rate": 5,
    "ttft_p95_ms": 5, "ttft_p99_ms": 6,
}  # fmt: skip
#: Cells the KEY column needs at least; its values are cut to 48.
MIN_KEY_WIDTH = 16


def _column_width(title: str, attribute: str) -> int:
    """Cells a column takes in the DataTable: its widest text plus one cell of padding on each side."""
    widest = {"key": MIN_KEY_WIDTH, "cost_per_run": 10}.get(attribute, 5)  # "16.2s", "100%", "0.92"
    return max(len(title), widest) + 2


def visible_columns(width: int) -> tuple[int, ...]:
    """Indices into COLUMNS that fit ``width`` cells, dropping the least useful first (never horizontal scrolling)."""
    shown = list(range(len(COLUMNS)))
    while len(shown) > 2 and sum(_column_width(*COLUMNS[i]) for i in shown) > width:
        shown.remove(max(shown[1:], key=lambda i: (COLUMN_PRIORITY.get(COLUMNS[i][1], 5), i)))
    return tuple(shown)


def histogram(durations_ms: tuple[float, ...], buckets: int = HISTOGRAM_BUCKETS) -> list[float]:
    """Counts of durations in equal-width buckets from the fastest to the slowest call."""
    if not durations_ms:
        return []
    low, high = min(durations_ms), max(durations_ms)
    if high <= low:
        return [float(len(durations_ms))]
    counts = [0.0] * buckets
    width = (high - low) / buckets
    for value in durations_ms:
        counts[min(buckets - 1, int((value - low) / width))] += 1
    return counts


def visible_metric_columns(width: int, model_width: int) -> tuple[int, ...]:
    """Indices into METRIC_COLUMNS that fit ``width`` cells beside MODEL, CALLS and ERROR ≤ (never scrolled)."""
    fixed = model_width + 2 + _column_width("CALLS", "count") + _column_width("ERROR ≤", "max_error_ms")
    shown = list(range(len(METRIC_COLUMNS)))
    while shown and fixed + sum(_column_width(METRIC_COLUMNS[i][0], "p50_ms") for i in shown) > width:
        shown.remove(max(shown, key=lambda i: (METRIC_PRIORITY.get(METRIC_COLUMNS[i][0], 5), i)))
    return tuple(shown)


def metric_row(found: metric_stats.ModelMetrics, shown: tuple[int, ...] | None = None) -> list[str]:
    """One model's cells in the "from metrics" table: calls, the percentiles (``shown``: all), then the error bound."""
    figures = [found.duration, found.ttft, found.time_per_output_token]
    calls = next((f.count for f in figures if f is not None), 0)
    cells = [safe_text(found.model, 48), str(calls)]
    for i, (_, figure, attribute) in enumerate(METRIC_COLUMNS):
        if shown is not None and i not in shown:
            continue
        value = getattr(getattr(found, figure), attribute, None)
        cells.append(cell(attribute, value))
    error = max((f.max_error_ms for f in figures if f is not None), default=None)
    cells.append("exact" if error == 0 else "±" + cell("max_error_ms", error))
    return cells


@dataclass
class StatsComputed(Message):
    groups: list[GroupStats]
    error: str | None = None
    #: Metric-derived figures per model.
    metrics: dict[str, metric_stats.ModelMetrics] | None = None
    #: Calls counted (the "users:" line is computed after the figures, when there are not too many).
    calls: int = 0
    #: (window, filter, now) the figures are for: the "users:" line is computed for the same.
    request: tuple[str, str, int] | None = None


@dataclass
class FeelingsComputed(Message):
    """The "users:" line for one request of StatsComputed; None: nothing to say."""

    text: str | None
    request: tuple[str, str, int]


class StatsScreen(Screen):
    BINDINGS = [
        Binding("escape", "back", "Back", show=True),
        Binding("b", "cycle_grouping", "Group by", show=True, tooltip="group by model, route or prompt version"),
        Binding("w", "cycle_window", "Window", show=True, tooltip="time window: last 5 min, last hour, all"),
        Binding("o", "sort_next", "Sort", show=True, tooltip="sort by the next column"),
        Binding("O", "sort_previous", "Sort back", show=False, tooltip="sort by the previous column"),
        Binding("r", "sort_reverse", "Reverse", show=False, tooltip="reverse the sort order"),
        Binding("space", "mark", "Mark", show=True, tooltip="mark this row as cohort A, then another as B"),
        Binding(
            "C",
            "compare",
            "Compare",
            show=True,
            tooltip="compare the two marked rows side by side (without two marks: type two filters)",
        ),  # fmt: skip
    ]

    def __init__(self, filter_text: str = "") -> None:
        super().__init__()
        self.by = GROUPINGS[0]
        self.window = "all"
        self.filter_text = filter_text
        self.sort_column = 1  # calls
        #: Indices into COLUMNS shown at the current width (visible_columns).
        self.shown: tuple[int, ...] = ()
        self._key_width = 48
        self.descending = True
        self.groups: list[GroupStats] = []
        self.metrics: dict[str, metric_stats.ModelMetrics] = {}
        #: Indices into METRIC_COLUMNS shown at the current width (visible_metric_columns).
        self._metric_shown: tuple[int, ...] = ()
        self._computing = False
        self._again = False
        #: The request whose "users:" line is wanted (the figures on screen), and the last one shown.
        self._feelings_for: tuple[str, str, int] | None = None
        self.feelings_shown_for: tuple[str, str, int] | None = None
        #: Keys of the rows marked for a compare, A first (at most two).
        self.marked: list[str] = []

    def compose(self) -> ComposeResult:
        yield StatusHeader(tui(self).listen, id="status")
        yield Static("", id="stats-title")
        table: DataTable[Any] = DataTable(id="stats-table", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("", id="stats-feelings")
        yield Static("", id="stats-histogram-title")
        yield Sparkline([], id="stats-histogram")
        yield Static("", id="stats-metrics-title")
        yield DataTable(id="stats-metrics", cursor_type="none", zebra_stripes=True, show_cursor=False)
        yield KeyFooter()

    def on_mount(self) -> None:
        table = self.query_one("#stats-table", DataTable)
        self._set_columns(self.size.width or self.app.size.width)
        table.focus()
        metrics_table = self.query_one("#stats-metrics", DataTable)
        metrics_table.display = False
        self.query_one("#stats-metrics-title", Static).display = False
        self.query_one("#stats-feelings", Static).display = False
        self.watch(self.app, "data_version", lambda _v: self.recompute(), init=False)
        self.recompute()

    def on_unmount(self) -> None:
        unwatch_app(self)  # else the app's watcher lists keep this screen alive until the next change

    def _set_columns(self, width: int) -> bool:
        """Show the columns that fit; True when they changed (the rows must then be refilled)."""
        shown = visible_columns(width - 2)  # the table's scroll bar
        if shown == self.shown:
            return False
        self.shown = shown
        others = sum(_column_width(*COLUMNS[i]) for i in shown[1:])
        self._key_width = min(48, max(MIN_KEY_WIDTH, width - 2 - others - 2))  # keys are cut, never scrolled
        if self.sort_column not in shown:
            self.sort_column = 1
        table = self.query_one("#stats-table", DataTable)
        table.clear(columns=True)
        for i in shown:
            table.add_column(COLUMNS[i][0], key=COLUMNS[i][0])
        return True

    def on_resize(self) -> None:
        if self._set_columns(self.size.width) or self.groups:
            self._fill()
        if self.metrics:
            self._fill_metrics()

    # --- computing -----------------------------------------------------------

    def recompute(self) -> None:
        if self._computing:
            self._again = True
            return
        self._computing = True
        self._compute(self.by, self.window, self.filter_text)

    @work(thread=True, group="stats", exit_on_error=False, description="compute stats")
    @forget_worker_when_done
    def _compute(self, by: str, window: str, filter_text: str) -> None:
        try:
            flt = parse(filter_text) if filter_text.strip() else None
            app = tui(self)
            reader, now = app.reader, app.clock()
            groups = compute(
                reader, by, window_s=WINDOWS[window], now_ns=now, flt=flt, route_attribute=app.route_attribute
            )
            metrics = metric_stats.compute(reader, window_s=WINDOWS[window], now_ns=now)
        except Exception as exc:
            self.post_message(StatsComputed([], str(exc)))
            return
        calls = sum(g.count for g in groups)
        self.post_message(StatsComputed(groups, metrics=metrics, calls=calls, request=(window, filter_text, now)))

    # The "users:" line reads the window's calls again, a row per run (Reader.first_calls: ~0.5 s for the
    # 1 h of a 10M-span database), so it follows the figures instead of holding them back, on a reader of
    # its own; a line computed for an earlier window or filter is dropped.
    @work(thread=True, group="stats-feelings", exit_on_error=False, description="count thumbs and abandoned runs")
    @forget_worker_when_done
    def _compute_feelings(self, request: tuple[str, str, int]) -> None:
        from tracetui.query.compare import Cohort, CohortError, feelings

        window, filter_text, now = request
        span = WINDOWS[window]
        try:
            found = feelings(
                tui(self).slow_reader(), Cohort("all", filter_text, None if span is None else now - int(span * 1e9))
            )
        except CohortError:  # a backend that cannot list calls, or a filter term it cannot decide (ClickHouse: retry)
            text = None
        else:
            text = found.text()
        self.post_message(FeelingsComputed(text, request))

    def _show_feelings(self, text: str | None) -> None:
        line = self.query_one("#stats-feelings", Static)
        line.update(Text(f" users: {text}", style="dim") if text else "")
        line.display = bool(text)

    @on(FeelingsComputed)
    def _feelings_computed(self, message: FeelingsComputed) -> None:
        if message.request == self._feelings_for:
            self._show_feelings(message.text)
            self.feelings_shown_for = message.request

    @on(StatsComputed)
    def _computed(self, message: StatsComputed) -> None:
        self._computing = False
        if message.error:
            self.notify(f"Could not compute stats: {message.error}", severity="error", markup=False)
        else:
            self.groups = message.groups
            self.metrics = message.metrics or {}
            self._fill()
            self._fill_metrics()
            self._feelings_for = message.request
            if message.calls > FEELINGS_MAX_CALLS:  # it reads every call again: bounded, and said so
                self._show_feelings(
                    f"thumbs down by TTFT not counted over {message.calls:,} calls (more than "
                    f"{FEELINGS_MAX_CALLS:,}): narrow the window or the filter, or compare two cohorts (C)"
                )
                self.feelings_shown_for = message.request
            elif message.request is not None:
                if self.query_one("#stats-feelings", Static).display:
                    self._show_feelings("counting thumbs down and abandoned runs…")
                self._compute_feelings(message.request)
        if self._again:
            self._again = False
            self.recompute()

    # --- drawing -------------------------------------------------------------

    def _sorted(self) -> list[GroupStats]:
        attribute = COLUMNS[self.sort_column][1]

        def key(g: GroupStats):
            value = getattr(g, attribute)
            # missing figures always last, whatever the direction
            return (value is None, value if value is not None else 0)

        present = [g for g in self.groups if getattr(g, attribute) is not None]
        missing = [g for g in self.groups if getattr(g, attribute) is None]
        return sorted(present, key=key, reverse=self.descending) + missing

    def _fill(self) -> None:
        table = self.query_one("#stats-table", DataTable)
        selected = None
        if table.row_count and 0 <= table.cursor_row < table.row_count:
            selected = table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key.value
        table.clear()
        for group in self._sorted():
            columns = [COLUMNS[i][1] for i in self.shown]
            cells: list[str | Text] = [cell(attr, getattr(group, attr)) for attr in columns]
            if group.key in self.marked:
                label = "AB"[self.marked.index(group.key)]
                cells[0] = Text.assemble((f"{label}▸", "bold reverse"), fit(str(cells[0]), self._key_width - 2))
            else:
                cells[0] = fit(str(cells[0]), self._key_width)
            table.add_row(*cells, key=group.key)
        if selected is not None:
            try:
                table.move_cursor(row=table.get_row_index(selected))
            except Exception:
                pass
        self.query_one("#stats-title", Static).update(self._title(self.size.width - 2))
        self._show_histogram()

    def _fill_metrics(self) -> None:
        """The "from metrics" table under the histogram; hidden when no GenAI metric was received.

        A span filter cannot apply to metrics (they carry no span attributes):
        while one is on, a line says so instead of showing unfiltered figures.
        """
        table = self.query_one("#stats-metrics", DataTable)
        title = self.query_one("#stats-metrics-title", Static)
        filtering = bool(self.filter_text.strip())
        width = (self.size.width or self.app.size.width) - 2  # the table's scroll bar
        model_width = max([len(safe_text(m, 48)) for m in self.metrics] + [len("MODEL")])
        shown = visible_metric_columns(width, model_width)
        if shown != self._metric_shown or not table.columns:
            self._metric_shown = shown
            table.clear(columns=True)
            for column in ("MODEL", "CALLS", *(METRIC_COLUMNS[i][0] for i in shown), "ERROR ≤"):
                table.add_column(column, key=column)
        table.clear()
        if not filtering:
            for model in sorted(self.metrics):
                table.add_row(*metric_row(self.metrics[model], shown), key=model)
        table.display = bool(self.metrics) and not filtering
        title.display = bool(self.metrics)
        if filtering:
            title.update(Text(f" from metrics: {FILTERED_OUT}", style="dim"))
        else:
            label = Text(f" {METRICS_LABEL if len(METRICS_LABEL) < width else METRICS_LABEL_SHORT}", style="bold")
            dropped = sum(m.dropped_attributes for m in self.metrics.values())
            if dropped:
                label.append(f"\n {dropped} per-call attributes dropped from metric points to bound the series",
                             style="dim")  # fmt: skip
            title.update(label)

    def _show_histogram(self) -> None:
        table = self.query_one("#stats-table", DataTable)
        group = None
        if table.row_count and 0 <= table.cursor_row < table.row_count:
            key = table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key.value
            group = next((g for g in self.groups if g.key == key), None)
        sparkline = self.query_one(Sparkline)
        title = self.query_one("#stats-histogram-title", Static)
        if group is None or not group.durations_ms:
            sparkline.data = []
            title.update("")
            return
        sparkline.data = histogram(group.durations_ms)
        low, high = min(group.durations_ms), max(group.durations_ms)
        span = f"from {fmt_duration(int(low * 1e6))} to {fmt_duration(int(high * 1e6))}"
        if group.percentiles:  # the figures come from the rollup's sketches: said, with their error
            line = f" latency of {safe_text(group.key, 40)}: {group.count:,} calls {span}; percentiles: {group.percentiles}"
        else:
            line = f" latency of {safe_text(group.key, 40)}: {len(group.durations_ms)} calls {span}"
        title.update(Text(line, style="dim"))

    def _title(self, width: int) -> Text:
        """What the table shows: grouping, then the filter in force (cut, never dropped), window and sort if room."""
        sort_title, _ = COLUMNS[self.sort_column]
        head = f"LLM calls by {self.by.replace('_', ' ')}"
        empty = "(no LLM calls match)" if not self.groups else ""
        flt = ""
        if self.filter_text.strip():
            room = width - len(head) - len(empty) - 6
            flt = "filter: " + fit(safe_text(self.filter_text, 200), max(12, room - len("filter: ")))
        line = join_to_fit(
            [(0, head), (0, flt), (1, f"window: {self.window}"),
             (2, f"sorted by {sort_title} {'↓' if self.descending else '↑'}"), (0, empty)],
            width,
        )  # fmt: skip
        return Text(" " + line, style="bold")

    @on(DataTable.RowHighlighted)
    def _row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._show_histogram()

    # --- keys ----------------------------------------------------------------

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_cycle_grouping(self) -> None:
        self.by = GROUPINGS[(GROUPINGS.index(self.by) + 1) % len(GROUPINGS)]
        self.marked = []  # the marks named rows of the other grouping
        self.recompute()

    def _cursor_key(self) -> str | None:
        table = self.query_one("#stats-table", DataTable)
        if not table.row_count or not 0 <= table.cursor_row < table.row_count:
            return None
        return table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key.value

    def action_mark(self) -> None:
        """Mark the row under the cursor (A, then B; a third mark replaces A); again on a marked row unmarks it."""
        key = self._cursor_key()
        if key is None:
            return
        if key in self.marked:
            self.marked.remove(key)
        else:
            self.marked = [*self.marked[-1:], key] if len(self.marked) == 2 else [*self.marked, key]
        self._fill()
        if len(self.marked) == 2:
            self.notify("Two rows marked: press C to compare them.", markup=False, timeout=3)

    def _since(self) -> int | None:
        window = WINDOWS[self.window]
        return None if window is None else tui(self).clock() - int(window * 1e9)

    def action_compare(self) -> None:
        from tracetui.query.compare import Cohort
        from tracetui.ui.screens.compare import CompareDialog, CompareScreen

        if len(self.marked) == 2:
            if self.by == "route" and tui(self).route_attribute:
                self.notify("Compare by route uses service / run name, not --route-attribute: compare by filters "
                            "instead (C without marks).", markup=False, severity="warning", timeout=6)  # fmt: skip
                return
            since = self._since()
            a, b = (
                Cohort(label, self.filter_text, since, None, (self.by, key))
                for label, key in zip("AB", self.marked, strict=True)
            )
            self.app.push_screen(CompareScreen(a, b))
            return
        start = f"model={self.marked[0]}" if self.marked and self.by == "model" else ""

        def chosen(cohorts) -> None:
            if cohorts is not None:
                self.app.push_screen(CompareScreen(*cohorts))

        self.app.push_screen(CompareDialog(start, "", self.filter_text, self._since()), chosen)

    def action_cycle_window(self) -> None:
        names = list(WINDOWS)
        self.window = names[(names.index(self.window) + 1) % len(names)]
        self.recompute()

    def _sort_step(self, step: int) -> None:
        """Sort by the next (or previous) column on screen."""
        shown = self.shown or tuple(range(len(COLUMNS)))
        position = shown.index(self.sort_column) if self.sort_column in shown else 0
        self.sort_column = shown[(position + step) % len(shown)]
        self._fill()

    def action_sort_next(self) -> None:
        self._sort_step(+1)

    def action_sort_previous(self) -> None:
        self._sort_step(-1)

    def action_sort_reverse(self) -> None:
        self.descending = not self.descending
        self._fill()

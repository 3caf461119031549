"""`S`: latency percentiles, speed, error/retry/fallback rates, cost and groundedness by model, route or prompt version.

Computed by tracetui.stats in a thread worker over the current filter and a
time window; refreshed when new data arrives (one computation in flight, the
latest request wins), so keys never wait on SQL.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Sparkline, Static

from tracetui import metric_stats
from tracetui.fmt import fmt_cost, fmt_duration, safe_text
from tracetui.stats import GROUPINGS, WINDOWS, GroupStats, compute
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


def metric_row(found: metric_stats.ModelMetrics) -> list[str]:
    """One model's cells in the "from metrics" table: calls, the percentiles, then the error bound."""
    figures = [found.duration, found.ttft, found.time_per_output_token]
    calls = next((f.count for f in figures if f is not None), 0)
    cells = [safe_text(found.model, 48), str(calls)]
    for _, figure, attribute in METRIC_COLUMNS:
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


class StatsScreen(Screen):
    BINDINGS = [
        Binding("escape", "back", "Back", show=True),
        Binding("b", "cycle_grouping", "By model/route/prompt", show=True, tooltip="group by model, route or prompt version"),
        Binding("w", "cycle_window", "Window", show=True, tooltip="time window: last 5 min, last hour, all"),
        Binding("o", "sort_next", "Sort", show=True, tooltip="sort by the next column"),
        Binding("O", "sort_previous", "Sort back", show=False, tooltip="sort by the previous column"),
        Binding("r", "sort_reverse", "Reverse", show=True, tooltip="reverse the sort order"),
    ]

    def __init__(self, filter_text: str = "") -> None:
        super().__init__()
        self.by = GROUPINGS[0]
        self.window = "all"
        self.filter_text = filter_text
        self.sort_column = 1  # calls
        self.descending = True
        self.groups: list[GroupStats] = []
        self.metrics: dict[str, metric_stats.ModelMetrics] = {}
        self._computing = False
        self._again = False

    def compose(self) -> ComposeResult:
        yield StatusHeader(self.app.listen, id="status")  # type: ignore[attr-defined]
        yield Static("", id="stats-title")
        table = DataTable(id="stats-table", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("", id="stats-histogram-title")
        yield Sparkline([], id="stats-histogram")
        yield Static("", id="stats-metrics-title")
        yield DataTable(id="stats-metrics", cursor_type="none", zebra_stripes=True, show_cursor=False)
        yield KeyFooter()

    def on_mount(self) -> None:
        table = self.query_one("#stats-table", DataTable)
        for title, _ in COLUMNS:
            table.add_column(title, key=title)
        table.focus()
        metrics_table = self.query_one("#stats-metrics", DataTable)
        for title in ("MODEL", "CALLS", *(c[0] for c in METRIC_COLUMNS), "ERROR ≤"):
            metrics_table.add_column(title, key=title)
        metrics_table.display = False
        self.query_one("#stats-metrics-title", Static).display = False
        self.watch(self.app, "data_version", lambda _v: self.recompute(), init=False)
        self.recompute()

    def on_unmount(self) -> None:
        unwatch_app(self)  # else the app's watcher lists keep this screen alive until the next change

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
            from tracetui import filters

            where = filters.parse(filter_text).span_where("spans") if filter_text.strip() else ("1", [])
            reader = self.app.reader  # type: ignore[attr-defined]
            groups = reader.run(
                lambda conn: compute(
                    conn,
                    by,
                    window_s=WINDOWS[window],
                    now_ns=self.app.clock(),  # type: ignore[attr-defined]
                    span_where=where,
                    route_attribute=getattr(self.app, "route_attribute", None),
                )
            )
            now = self.app.clock()  # type: ignore[attr-defined]
            metrics = reader.run(lambda conn: metric_stats.compute(conn, window_s=WINDOWS[window], now_ns=now))
        except Exception as exc:
            self.post_message(StatsComputed([], str(exc)))
            return
        self.post_message(StatsComputed(groups, metrics=metrics))

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
            selected = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        table.clear()
        for group in self._sorted():
            table.add_row(*(cell(attr, getattr(group, attr)) for _, attr in COLUMNS), key=group.key)
        if selected is not None:
            try:
                table.move_cursor(row=table.get_row_index(selected))
            except Exception:
                pass
        sort_title, _ = COLUMNS[self.sort_column]
        title = Text(f" LLM calls by {self.by.replace('_', ' ')}", style="bold")
        title.append(f"   window: {self.window}   sorted by {sort_title} {'↓' if self.descending else '↑'}")
        if self.filter_text.strip():
            title.append(f"   filter: {safe_text(self.filter_text, 60)}", style="bold")
        if not self.groups:
            title.append("   (no LLM calls match)", style="dim")
        self.query_one("#stats-title", Static).update(title)
        self._show_histogram()

    def _fill_metrics(self) -> None:
        """The "from metrics" table under the histogram; hidden when no GenAI metric was received.

        A span filter cannot apply to metrics (they carry no span attributes):
        while one is on, a line says so instead of showing unfiltered figures.
        """
        table = self.query_one("#stats-metrics", DataTable)
        title = self.query_one("#stats-metrics-title", Static)
        filtering = bool(self.filter_text.strip())
        table.clear()
        if not filtering:
            for model in sorted(self.metrics):
                table.add_row(*metric_row(self.metrics[model]), key=model)
        table.display = bool(self.metrics) and not filtering
        title.display = bool(self.metrics)
        if filtering:
            title.update(Text(f" from metrics: {FILTERED_OUT}", style="dim"))
        else:
            label = Text(f" {METRICS_LABEL}", style="bold")
            dropped = sum(m.dropped_attributes for m in self.metrics.values())
            if dropped:
                label.append(f"\n {dropped} per-call attributes dropped from metric points to bound the series",
                             style="dim")  # fmt: skip
            title.update(label)

    def _show_histogram(self) -> None:
        table = self.query_one("#stats-table", DataTable)
        group = None
        if table.row_count and 0 <= table.cursor_row < table.row_count:
            key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
            group = next((g for g in self.groups if g.key == key), None)
        sparkline = self.query_one(Sparkline)
        title = self.query_one("#stats-histogram-title", Static)
        if group is None or not group.durations_ms:
            sparkline.data = []
            title.update("")
            return
        sparkline.data = histogram(group.durations_ms)
        low, high = min(group.durations_ms), max(group.durations_ms)
        title.update(
            Text(
                f" latency of {safe_text(group.key, 40)}: {len(group.durations_ms)} calls from "
                f"{fmt_duration(int(low * 1e6))} to {fmt_duration(int(high * 1e6))}",
                style="dim",
            )
        )

    @on(DataTable.RowHighlighted)
    def _row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._show_histogram()

    # --- keys ----------------------------------------------------------------

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_cycle_grouping(self) -> None:
        self.by = GROUPINGS[(GROUPINGS.index(self.by) + 1) % len(GROUPINGS)]
        self.recompute()

    def action_cycle_window(self) -> None:
        names = list(WINDOWS)
        self.window = names[(names.index(self.window) + 1) % len(names)]
        self.recompute()

    def action_sort_next(self) -> None:
        self.sort_column = (self.sort_column + 1) % len(COLUMNS)
        self._fill()

    def action_sort_previous(self) -> None:
        self.sort_column = (self.sort_column - 1) % len(COLUMNS)
        self._fill()

    def action_sort_reverse(self) -> None:
        self.descending = not self.descending
        self._fill()

"""``tracetui stats``: the Stats screen's figures for scripts and CI gates.

Registered on the main group by :mod:`tracetui.cli.main`. Nothing from
tracetui.cli.main is imported at module level (it imports this module at its end),
so either module can be imported first.
"""

from __future__ import annotations

from pathlib import Path

import click

from tracetui.cli.common import SourceChoice, db_option, job_command, source_options
from tracetui.model.fmt import json_text
from tracetui.query import metric_stats
from tracetui.query.stats import GROUPINGS, WINDOWS, GroupStats


@click.command("stats")
@db_option
@source_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, one object per group.")
@click.option("--by", type=click.Choice(GROUPINGS), default="model", show_default=True,
              help="Group the LLM calls by model, route or prompt version.")  # fmt: skip
@click.option("--filter", "filter_text", metavar="EXPR", default=None,
              help="Only the calls matching this filter expression (the UI's filter language).")  # fmt: skip
@click.option("--window", type=click.Choice(tuple(WINDOWS)), default="all", show_default=True,
              help="Only calls started in the last 5 minutes / hour.")  # fmt: skip
@click.option("--route-attribute", metavar="KEY", default=None,
              help="With --by route: group by this span attribute (else the root span's) "
              "instead of service / run name.")  # fmt: skip
def stats_command(
    db: Path | None,
    source: SourceChoice | None,
    as_json: bool,
    by: str,
    filter_text: str | None,
    window: str,
    route_attribute: str | None,
) -> None:
    """Latency percentiles, time to first token, error/retry/fallback rates, cost and groundedness.

    One row per model (request model, else response model), route or prompt
    version, over the LLM calls counted in the totals; busiest first. By
    model, the GenAI metrics' percentiles follow, labelled "from metrics"
    (``from_metrics`` in --json; none while --filter is on).
    """
    from tracetui.cli.common import open_reader
    from tracetui.query.stats import compute

    flt = None
    if filter_text is not None and filter_text.strip():
        from tracetui.model import filter as filters

        try:
            flt = filters.parse(filter_text)
        except filters.FilterError as exc:
            raise click.BadParameter(_filter_problem(filter_text, exc), param_hint="'--filter'") from None

    reader = open_reader(db, source=source)
    try:
        groups = compute(reader, by, window_s=WINDOWS[window], flt=flt, route_attribute=route_attribute)
        # Metrics carry no span attributes: no figures from them while a filter is on.
        metrics = metric_stats.compute(reader, window_s=WINDOWS[window]) if by == "model" and flt is None else {}
    finally:
        reader.close()

    if as_json:
        click.echo(json_text(_json_groups(groups, metrics) if by == "model" else [g.to_json() for g in groups]))
        return
    _print_table(groups, by)
    _print_metrics_table(metrics)


def _json_groups(groups: list[GroupStats], metrics: dict[str, metric_stats.ModelMetrics]) -> list[dict]:
    """Per model: the span figures plus ``from_metrics``; models known only from metrics come last, with 0 calls."""
    out = []
    for g in groups:
        found = metrics.get(g.key)
        out.append({**g.to_json(), "from_metrics": found.to_json() if found else None})
    seen = {g.key for g in groups}
    empty = {name: None for name in GroupStats.__dataclass_fields__ if name not in ("durations_ms", "percentiles")}
    for model in sorted(set(metrics) - seen):
        out.append({**empty, "key": model, "count": 0, "runs": 0, "from_metrics": metrics[model].to_json()})
    return out


def _filter_problem(text: str, exc: Exception) -> str:
    """The parser's message, with the expression and a caret under the problem when it says where."""
    message = str(exc) or type(exc).__name__
    found = (getattr(exc, name, None) for name in ("position", "pos", "offset", "column"))
    position = next((value for value in found if isinstance(value, int) and not isinstance(value, bool)), None)
    if position is None or not 0 <= position <= len(text) or "\n" in text:
        return message
    if "position" not in message and "column" not in message:
        message = f"{message} (at position {position})"
    return f"{message}\n  {text}\n  {' ' * position}^"


# --- the readable table -------------------------------------------------------------


def _ms(value: float | None) -> str:
    from tracetui.model.fmt import fmt_duration

    return "—" if value is None else fmt_duration(round(value * 1e6))


def _pct(value: float | None) -> str:
    if value is None:
        return "—"
    return "0%" if value == 0 else f"{value * 100:.1f}%"


def _num(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


_HEADERS = ("CALLS", "RUNS", "P50", "P95", "P99", "TTFT50", "TTFT95", "TTFT99", "TOK/S", "ERR", "RETRY", "FALLBK",
            "COST/RUN", "GROUND")  # fmt: skip


def _cells(g: GroupStats) -> tuple[str, ...]:
    from tracetui.model.fmt import fmt_cost

    return (
        str(g.count),
        str(g.runs),
        _ms(g.p50_ms),
        _ms(g.p95_ms),
        _ms(g.p99_ms),
        _ms(g.ttft_p50_ms),
        _ms(g.ttft_p95_ms),
        _ms(g.ttft_p99_ms),
        _num(g.tokens_per_s, 1),
        _pct(g.error_rate),
        _pct(g.retry_rate),
        _pct(g.fallback_rate),
        "—" if g.cost_per_run is None else fmt_cost(g.cost_per_run),
        _num(g.groundedness, 2),
    )


def _print_table(groups: list[GroupStats], by: str) -> None:
    from tracetui.model.fmt import safe_text

    if not groups:
        click.echo("no LLM calls match", err=True)
        return
    _echo_table(
        by.upper().replace("_", " "), _HEADERS, [safe_text(g.key, 48) for g in groups], [_cells(g) for g in groups]
    )
    method = next((g.percentiles for g in groups if g.percentiles), None)
    if method:  # from the rollup (tracetui.store.rollup): said, never passed off as exact
        click.echo(f"percentiles: {method}")


def _echo_table(title: str, headers: tuple[str, ...], keys: list[str], rows: list[tuple[str, ...]]) -> None:
    """A header line and one line per key: keys left-aligned under ``title``, cells right-aligned under ``headers``."""
    key_width = max(len(title), *(len(k) for k in keys))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for key, cells in [(title, headers), *zip(keys, rows, strict=True)]:
        click.echo(f"{key:<{key_width}}  " + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))


_METRIC_HEADERS = ("CALLS", "P50", "P95", "P99", "TTFT50", "TTFT95", "TTFT99", "TPOT50", "TPOT95", "±MAX")


def _metric_cells(m: metric_stats.ModelMetrics) -> tuple[str, ...]:
    figures = (m.duration, m.ttft, m.time_per_output_token)
    calls = next((f.count for f in figures if f is not None), 0)
    cells = [str(calls)]
    for figure, how_many in zip(figures, (3, 3, 2), strict=True):
        values = (None, None, None) if figure is None else (figure.p50_ms, figure.p95_ms, figure.p99_ms)
        cells += [_ms(v) for v in values[:how_many]]
    error = max((f.max_error_ms for f in figures if f is not None), default=None)
    cells.append("exact" if error == 0 else _ms(error))
    return tuple(cells)


def _print_metrics_table(metrics: dict[str, metric_stats.ModelMetrics]) -> None:
    """The "from metrics" figures per model, under the span table, with how they were computed."""
    from tracetui.model.fmt import safe_text

    if not metrics:
        return
    keys = sorted(metrics)
    click.echo("")
    click.echo(f"from metrics ({metric_stats.METHOD}, ±MAX)")
    _echo_table("MODEL", _METRIC_HEADERS, [safe_text(k, 48) for k in keys], [_metric_cells(metrics[k]) for k in keys])


rollup_job = job_command(
    "rollup", "tracetui.jobs.rollup", "The Stats rollup's job (`tracetui job rollup`; `serve` starts it with --follow)."
)


def start_rollup(db_path: Path):
    """``serve``'s Stats rollup job: it sums what the writer queues, and fills an upgraded database (a process
    that exits with this one)."""
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "tracetui", "job", "rollup", "--follow", "--db", str(db_path)],
                            stdin=subprocess.DEVNULL)  # fmt: skip

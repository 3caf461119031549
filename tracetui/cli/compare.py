"""``tracetui compare``: two cohorts side by side, a verdict, and a CI gate (``--fail-on``).

Registered on the main group by :mod:`tracetui.cli.main` (imported at its end).
The figures and the rule are :mod:`tracetui.query.compare`'s, the same as the
compare screen's.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from tracetui.cli.common import SourceChoice, db_option, source_options
from tracetui.model.fmt import json_text, safe_text
from tracetui.query.compare import parse_range, parse_time


def _percent_or_number(text: str, name: str) -> float:
    value = text.strip()
    try:
        return float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a number or a percentage", param_hint=name) from None


@click.command("compare")
@db_option
@source_options
@click.option("--a", "a_expr", metavar="EXPR", default="", help="Cohort A: a filter expression (empty: every call).")
@click.option("--b", "b_expr", metavar="EXPR", default="", help="Cohort B: a filter expression (empty: every call).")
@click.option("--window", metavar="DURATION", default=None,
              help="Both cohorts: only calls started in the last DURATION (30m, 24h, 7d).")  # fmt: skip
@click.option("--a-window", metavar="START..END", default=None,
              help="Cohort A's time range: ISO 8601 times or durations ago (e.g. 7d..1d); either end may be empty.")  # fmt: skip
@click.option("--b-window", metavar="START..END", default=None, help="Cohort B's time range, as --a-window.")
@click.option("--change", metavar="TIME", default=None,
              help="Before and after a change: A = calls before TIME, B = at or after it (ISO 8601 or 2h).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print every figure, the verdict and the rule as JSON.")
@click.option("--fail-on", metavar="RULES", default=None,
              help="Exit 1 when a rule holds, e.g. 'groundedness<-0.05,p99_ttft>+10%'. Deltas are B - A; "
              "a bare number is absolute, a % is relative to A.")  # fmt: skip
@click.option("--min-gain", default="10%", show_default=True,
              help="Verdict: p99 must improve by this much to accept (and worsen by as much to reject).")  # fmt: skip
@click.option("--max-quality-drop", default="0.05", show_default=True,
              help="Verdict: reject when mean groundedness drops by more than this.")  # fmt: skip
@click.option("--max-error-rise", default="2%", show_default=True,
              help="Verdict: reject when the error rate rises by more than this many points.")  # fmt: skip
def compare_command(
    db: Path | None,
    source: SourceChoice | None,
    a_expr: str,
    b_expr: str,
    window: str | None,
    a_window: str | None,
    b_window: str | None,
    change: str | None,
    as_json: bool,
    fail_on: str | None,
    min_gain: str,
    max_quality_drop: str,
    max_error_rise: str,
) -> None:
    """Compare two cohorts of LLM calls (prompt versions, models, routes, before/after a change).

    Prints, for A and B, the p50/p95/p99 of call duration, run duration, TTFT and
    decode speed, output tokens with the max_tokens caps, error/retry/fallback
    rates, cost per run, groundedness and every other evaluation, user feedback,
    each delta (B - A) with whether its sample can tell it from noise, and a
    verdict. With --fail-on it exits 1 when a rule holds (for CI).
    """
    from tracetui.cli.common import open_reader
    from tracetui.query import compare as cmp

    now = time.time_ns()
    try:
        rule = cmp.Rule(
            min_gain=_percent_or_number(min_gain, "'--min-gain'"),
            max_quality_drop=_percent_or_number(max_quality_drop, "'--max-quality-drop'"),
            max_error_rise=_percent_or_number(max_error_rise, "'--max-error-rise'"),
        )
        rules = cmp.parse_fail_on(fail_on) if fail_on is not None else []
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--fail-on'") from None
    a, b = _cohorts(a_expr, b_expr, window, a_window, b_window, change, now)
    reader = open_reader(db, source=source)
    try:
        comparison = cmp.compare(reader, a, b, rule)
    except cmp.CohortError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        reader.close()
    results = [r.check(comparison) for r in rules]
    if as_json:
        out = comparison.to_json()
        out["fail_on"] = [
            {"rule": r.text, "failed": failed, "message": m} for r, (failed, m) in zip(rules, results, strict=True)
        ]
        click.echo(json_text(out))
    else:
        _print(comparison)
        for failed, message in results:
            click.echo(("FAIL " if failed else "ok   ") + message)
    if any(failed for failed, _ in results):
        raise SystemExit(1)


def _cohorts(
    a_expr: str, b_expr: str, window: str | None, a_window: str | None, b_window: str | None, change: str | None,
    now: int,
) -> tuple:  # fmt: skip
    from tracetui.model import filter as filters
    from tracetui.query.compare import Cohort

    for name, text in (("--a", a_expr), ("--b", b_expr)):
        if text.strip():
            try:
                filters.parse(text)
            except filters.FilterError as exc:
                raise click.BadParameter(str(exc), param_hint=f"'{name}'") from None
    try:
        since = parse_time(window, now) if window else None
        a_range: tuple[int | None, int | None] = (since, None)
        b_range: tuple[int | None, int | None] = (since, None)
        if change is not None:
            if a_window or b_window:
                raise ValueError("--change sets both windows: leave out --a-window and --b-window")
            moment = parse_time(change, now)
            a_range, b_range = (since, moment), (moment, None)
        if a_window:
            a_range = parse_range(a_window, now)
        if b_window:
            b_range = parse_range(b_window, now)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if not a_expr.strip() and not b_expr.strip() and a_range == b_range:
        raise click.UsageError("A and B are the same calls: give --a / --b filters, windows or --change")
    return Cohort("A", a_expr, *a_range), Cohort("B", b_expr, *b_range)


def _print(c) -> None:
    from tracetui.query.compare import caps_text, format_change, format_value, format_verdict_word

    click.echo(f"A: {c.a.describe_window()}")
    click.echo(f"B: {c.b.describe_window()}")
    rows = [("", "A", "B", "Δ B − A", "")]
    rows += [
        (d.title, format_value(d, d.a), format_value(d, d.b), format_change(d), format_verdict_word(d))
        for d in c.deltas
    ]
    rows += [
        (d.title, format_value(d, d.a), format_value(d, d.b), format_change(d), format_verdict_word(d))
        for _, d in c.thumbs_by_ttft
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        click.echo(
            f"{safe_text(r[0], 48):<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}  {r[4]}"
        )
    click.echo(f"max_tokens caps  A: {caps_text(c.caps_a)}   B: {caps_text(c.caps_b)}")
    click.echo("")
    click.echo(f"verdict: {c.verdict.line}")
    for warning in c.verdict.warnings:
        click.echo(f"warning: {warning}")
    for note in c.notes:
        click.echo(f"note: {note}")
    click.echo(f"method: {c.method}")


@click.command("cohort")
@db_option
@source_options
@click.option("--filter", "filter_text", metavar="EXPR", required=True,
              help="The calls to export, e.g. 'groundedness<0.5' or 'model=gpt-4o prompt.version=7'.")  # fmt: skip
@click.option("-o", "--output", metavar="FILE", required=True,
              help="Where to write the JSON lines ('-' for standard output). Created readable by you only.")  # fmt: skip
@click.option("--format", "shape", type=click.Choice(("tracetui", "openai-evals")), default="tracetui",
              show_default=True, help="tracetui: our records (docs/cohort.md); openai-evals: the OpenAI Evals "
              "API's JSONL data source, {\"item\": ..., \"sample\": ...} per line.")  # fmt: skip
@click.option("--window", metavar="DURATION", default=None, help="Only calls started in the last DURATION (24h, 7d).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many calls (the newest).")
def cohort_command(
    db: Path | None,
    source: SourceChoice | None,
    filter_text: str,
    output: str,
    shape: str,
    window: str | None,
    limit: int | None,
) -> None:
    """Export the LLM calls matching a filter as a regression evaluation set, one JSON object per line.

    Each line holds the input messages, system prompt and output, the run's
    retrieval context, model and parameters, evaluations and user feedback,
    and the trace and span ids.
    """
    import sys

    from tracetui.cli.common import open_reader
    from tracetui.model import filter as filters
    from tracetui.query.cohort import cohort_lines, cohort_records, write_cohort

    try:
        flt = filters.parse(filter_text) if filter_text.strip() else None
    except filters.FilterError as exc:
        raise click.BadParameter(str(exc), param_hint="'--filter'") from None
    try:
        since = parse_time(window, time.time_ns()) if window else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--window'") from None
    from tracetui.query.scrub import policy_note

    reader = open_reader(db, source=source)
    written = 0
    note = ""
    try:
        note = policy_note(reader.content_policy())
        if output == "-":
            for line in cohort_lines(cohort_records(reader, flt, since_ns=since, limit=limit), shape):
                sys.stdout.write(line + "\n")
                written += 1
        else:
            written = write_cohort(reader, output, flt, shape=shape, since_ns=since, limit=limit)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None
    finally:
        reader.close()
    where = "standard output" if output == "-" else output
    click.echo(f"wrote {written:,} call{'s' if written != 1 else ''} ({shape}) to {where}", err=True)
    if note:
        click.echo(f"tracetui: {note}", err=True)

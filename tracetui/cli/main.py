"""Command line: ``tracetui serve | view | demo | traces | sessions | spans``.

The UI is imported lazily inside the commands that show it, so the receiver
and the scripting commands never load Textual.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import click

from tracetui import __version__
from tracetui.cli.common import (
    SourceChoice,
    command_name,
    db_option,
    open_reader,
    open_writer,
    resolve_db,
    run_source_ui,
    run_ui,
    source_options,
)
from tracetui.cli.judge import judge_job_args, serve_judge_options, start_judge, stop_judge
from tracetui.model.config import (
    DEFAULT_GRPC_PORT,
    DEFAULT_HOST,
    DEFAULT_HTTP_PORT,
    DEFAULT_MAX_PENDING_SPANS,
    TOKEN_ENV,
    ReceiverSettings,
    default_decode_workers,
)
from tracetui.model.fmt import fmt_clock, fmt_cost, fmt_counted, fmt_duration, json_text, safe_text


def _check_age(_ctx, _param, value: str | None) -> str | None:
    if value is not None:
        from tracetui.store.retention import parse_age

        try:
            parse_age(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tracetui")
def main() -> None:
    """A live terminal monitor for LLM and agent traces.

    Point your app's OpenTelemetry exporter at tracetui
    (OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317, or :4318 for OTLP/HTTP)
    and run `tracetui serve`.
    """


prices_option = click.option(
    "--prices", "prices", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
    help="Price file (TOML) for local or custom models; overrides bundled prices. "
         "Default: prices.toml in the user config directory, if present.",
)  # fmt: skip


@main.command()
@db_option
@click.option(
    "--host", default=DEFAULT_HOST, show_default=True, help="Address to listen on (loopback unless you say otherwise)."
)
@click.option("--grpc-port", type=click.IntRange(0, 65535), default=DEFAULT_GRPC_PORT, show_default=True,
              help="OTLP/gRPC port; 0 picks a free one.")  # fmt: skip
@click.option("--http-port", type=click.IntRange(0, 65535), default=DEFAULT_HTTP_PORT, show_default=True,
              help="OTLP/HTTP port (protobuf and JSON); 0 picks a free one.")  # fmt: skip
@click.option("--token", envvar=TOKEN_ENV, default=None, show_envvar=True,
              help="Require `authorization: Bearer TOKEN` on every export (gRPC and HTTP).")  # fmt: skip
@click.option("--headless", is_flag=True, help="Run the receiver only, no UI; status lines on stderr.")
@click.option("--max-request-mb", type=click.IntRange(1, 1024), default=64, show_default=True,
              help="Largest export request accepted (after decompression).")  # fmt: skip
@click.option("--max-pending-spans", type=click.IntRange(100), default=DEFAULT_MAX_PENDING_SPANS, show_default=True,
              help="Spans waiting for the disk before exporters are asked to retry.")  # fmt: skip
@click.option("--decode-workers", type=click.IntRange(0, 64), default=None,
              help="Processes that decode and write exports; 0 does both in the receiver process. [default: one per core, up to 2]")  # fmt: skip
@click.option("--max-spans", type=click.IntRange(1), default=None,
              help="Keep at most this many spans: the oldest whole traces go first.")  # fmt: skip
@click.option("--max-db-mb", type=click.IntRange(1), default=None, help="Keep the data under this size (MB).")
@click.option("--max-age", callback=_check_age, default=None, help="Drop traces older than this (e.g. 30m, 12h, 7d).")
@prices_option
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Evaluation score at or above which a result passes (groundedness badges).")  # fmt: skip
@click.option("--route-attribute", default=None, metavar="KEY",
              help="Span attribute naming the route on the stats screen (default: service / run name).")  # fmt: skip
@click.option("--http-header-timeout", type=click.FloatRange(0.1), default=10.0, show_default=True, metavar="SECONDS",
              help="OTLP/HTTP: close connections that take longer to send a request's headers, or stay idle longer.")  # fmt: skip
@click.option("--http-body-timeout", type=click.FloatRange(0.1), default=30.0, show_default=True, metavar="SECONDS",
              help="OTLP/HTTP: answer 408 and close when a request's body takes longer to arrive.")  # fmt: skip
@click.option("--grpc-body-timeout", type=click.FloatRange(0.1), default=10.0, show_default=True, metavar="SECONDS",
              help="OTLP/gRPC: cancel an export whose message takes longer to arrive once it was let in.")  # fmt: skip
@click.option("--no-content/--content", "no_content", default=None,
              help="--no-content: keep message content out of the search index, the JSON attributes, exports and "
                   "the judge. The database records it (and --redact): a later serve without either keeps it; "
                   "--content copies content again.")  # fmt: skip
@click.option("--redact", multiple=True, metavar="PATTERN",
              help="Replace matches with [redacted] wherever content is copied: 'keys', 'emails' or a regex. Repeatable.")  # fmt: skip
@click.option("--no-index", is_flag=True, help="Do not build the full-text index (no text: searches).")
@click.option("--exit-with-parent", is_flag=True, hidden=True)
@serve_judge_options
def serve(
    db: Path | None,
    host: str,
    grpc_port: int,
    http_port: int,
    token: str | None,
    headless: bool,
    max_request_mb: int,
    max_pending_spans: int,
    decode_workers: int | None,
    max_spans: int | None,
    max_db_mb: int | None,
    max_age: str | None,
    prices: Path | None,
    threshold: float,
    route_attribute: str | None,
    http_header_timeout: float,
    http_body_timeout: float,
    grpc_body_timeout: float,
    no_content: bool | None,
    redact: tuple[str, ...],
    no_index: bool,
    exit_with_parent: bool,
    judge_endpoint: str | None,
    judge_model: str | None,
    judge_allow_remote: bool,
    judge_filter: str | None,
    judge_rate: float,
    judge_sample: float,
    judge_timeout: float,
    judge_budget: str | None,
    judge_concurrency: int,
) -> None:
    """Receive OTLP traces and show them live (the receiver runs in its own process)."""
    judge = (
        judge_endpoint,
        judge_model,
        judge_allow_remote,
        judge_filter,
        judge_rate,
        judge_sample,
        judge_timeout,
        judge_budget,
        judge_concurrency,
    )
    from tracetui.cli.search import serve_policy, start_indexer, stop_indexer

    settings = ReceiverSettings(
        index=not no_index,
        content=serve_policy(resolve_db(db), no_content, redact, quiet=exit_with_parent),
        db_path=resolve_db(db),
        host=host,
        grpc_port=grpc_port,
        http_port=http_port,
        token=token or None,
        max_request_bytes=max_request_mb * 1024 * 1024,
        max_pending_spans=max_pending_spans,
        decode_workers=default_decode_workers() if decode_workers is None else decode_workers,
        max_spans=max_spans,
        max_db_mb=max_db_mb,
        max_age=max_age,
        prices_path=prices.resolve() if prices else None,
        http_header_timeout_s=http_header_timeout,
        http_body_timeout_s=http_body_timeout,
        grpc_body_timeout_s=grpc_body_timeout,
        exit_with_parent=exit_with_parent,
    )
    judge_job = judge_job_args(settings.db_path, settings.content, *judge)  # said before anything starts
    if headless:  # the receiver process (alone, or the UI's child): it starts the indexer beside itself
        from tracetui.cli.stats import start_rollup
        from tracetui.ingest.receiver import run_receiver

        indexer = start_indexer(settings.db_path, settings.content) if settings.index else None
        filling = start_rollup(settings.db_path)  # the Stats rollup, summed beside the receiver

        judging = start_judge(judge_job, quiet=False)
        try:
            exit_code = run_receiver(settings)
        finally:
            stop_judge(judging)
            stop_indexer(indexer)
            stop_indexer(filling)  # (stops any job process)
        sys.exit(exit_code)

    from tracetui.ingest.receiver import ReceiverProcess

    receiver = ReceiverProcess(settings)
    try:
        ready = receiver.start()
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    judging = start_judge(judge_job, quiet=True)
    try:
        run_ui(settings.db_path, receiver=receiver, listen=ready.grpc, http=ready.http, threshold=threshold,
               route_attribute=route_attribute, command=command_name())  # fmt: skip
    finally:
        stop_judge(judging)
        code = receiver.stop()
        lines = [line for line in receiver.lines if not line.startswith("tracetui: listening")]
        for line in lines[-3:]:
            click.echo(line, err=True)
        if code not in (0, None):
            click.echo(f"tracetui: the receiver exited with status {code}", err=True)


@main.command()
@db_option
@source_options
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Evaluation score at or above which a result passes.")  # fmt: skip
@click.option("--route-attribute", default=None, metavar="KEY",
              help="Span attribute naming the route on the stats screen (default: service / run name).")  # fmt: skip
def view(db: Path | None, source: SourceChoice | None, threshold: float, route_attribute: str | None) -> None:
    """Open the UI over an existing database; follows it live while a receiver writes.

    With --source, over a team's traces in ClickHouse (new runs appear as the Collector flushes them).
    """
    if source is not None:
        run_source_ui(source, threshold=threshold, route_attribute=route_attribute, command=command_name())
        return
    path = resolve_db(db)
    open_reader(path).close()  # a missing or unreadable file is said so here (no_database), not with a traceback
    run_ui(path, threshold=threshold, route_attribute=route_attribute, command=command_name())


@main.command()
@click.option("--endpoint", default=f"http://127.0.0.1:{DEFAULT_GRPC_PORT}", show_default=True,
              help="OTLP/gRPC endpoint of the receiver.")  # fmt: skip
@click.option("--count", type=click.IntRange(1), default=None, help="Number of agent runs (default: until Ctrl-C).")
@click.option("--interval", type=click.FloatRange(0), default=1.0, show_default=True, help="Seconds between runs.")
@click.option("--seed", type=int, default=None, help="Random seed for reproducible runs.")
@click.option("--token", envvar=TOKEN_ENV, default=None, help="Bearer token, when the receiver requires one.")
def demo(endpoint: str, count: int | None, interval: float, seed: int | None, token: str | None) -> None:
    """Send realistic agent runs through the real OpenTelemetry SDK exporter."""
    from tracetui.cli.demo import NothingAcknowledged, run_demo

    try:
        sent = run_demo(endpoint=endpoint, count=count, interval=interval, seed=seed, token=token)
    except KeyboardInterrupt:
        return
    except NothingAcknowledged as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"demo: sent {fmt_counted(sent, 'run')} to {endpoint}", err=True)


@main.command()
@db_option
@source_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Newest N traces only.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Evaluation score at or above which a result passes.")  # fmt: skip
def traces(db: Path | None, source: SourceChoice | None, as_json: bool, limit: int | None, threshold: float) -> None:
    """List traces, newest first."""
    reader = open_reader(db, threshold, source)
    rows = reader.traces(0, limit if limit is not None else -1)
    if as_json:
        click.echo(json_text([row.to_json() for row in rows]))
        return
    click.echo(f"{'TIME':<9} {'TRACE':<10} {'RUN':<32} {'SERVICE':<18} {'DURATION':>9} {'SPANS':>6} {'ERR':>4}")
    for row in rows:
        name = row.name if row.has_root else f"({row.name}; no root yet)"
        click.echo(
            f"{fmt_clock(row.start_ns):<9} {row.trace_id.hex()[:8]:<10} {safe_text(name, 32):<32} "
            f"{safe_text(row.service, 18):<18} {fmt_duration(row.duration_ns):>9} {row.span_count:>6} "
            f"{row.error_count or '':>4}"
        )


@main.command()
@db_option
@source_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.option("--session", "session_id", default=None, metavar="ID",
              help="The runs of this session instead, in the order they started.")  # fmt: skip
@click.option("--limit", type=click.IntRange(1), default=None, help="The N most recently active sessions only.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Evaluation score at or above which a result passes.")  # fmt: skip
def sessions(
    db: Path | None, source: SourceChoice | None, as_json: bool, session_id: str | None, limit: int | None,
    threshold: float,
) -> None:  # fmt: skip
    """List conversations (runs sharing a session / conversation id), most recently active first."""
    reader = open_reader(db, threshold, source)
    if session_id is not None:
        runs = reader.session_runs(session_id)
        if not runs:
            raise click.ClickException(f"no runs with session id {safe_text(session_id, 80)}")
        click.echo(json_text([row.to_json() for row in runs]) if as_json else "\n".join(_run_lines(runs)))
        return
    rows = reader.sessions(limit)
    if as_json:
        click.echo(json_text([row.to_json() for row in rows]))
        return
    click.echo(f"{'LAST':<11} {'SESSION':<24} {'RUNS':>5} {'DURATION':>9} {'TOKENS':>8} {'COST':>10} "
               f"{'GROUNDED':>8} {'ERR':>4}  FIRST RUN")  # fmt: skip
    for row in rows:
        grounded = f"{row.groundedness:.2f}" if row.groundedness is not None else ""
        click.echo(
            f"{fmt_clock(row.last_start_ns):<11} {safe_text(row.session_id, 24):<24} {row.runs:>5} "
            f"{fmt_duration(row.duration_ns):>9} {row.tokens or '':>8} {fmt_cost(row.cost_usd) if row.cost_usd is not None else '':>10} "
            f"{grounded:>8} {row.errors or '':>4}  {safe_text(row.first_name, 40)}"
        )


def _run_lines(runs: list) -> list[str]:
    """`tracetui sessions --session ID`: one line per run, in the order they started."""
    lines = [f"{'TIME':<11} {'TRACE':<10} {'RUN':<32} {'DURATION':>9} {'COST':>10} {'ERR':>4}"]
    for row in runs:
        cost = fmt_cost(row.cost_usd) if row.cost_usd is not None else ""
        lines.append(f"{fmt_clock(row.start_ns):<11} {row.trace_id.hex()[:8]:<10} {safe_text(row.name, 32):<32} "
                     f"{fmt_duration(row.duration_ns):>9} {cost:>10} {row.error_count or '':>4}")  # fmt: skip
    return lines


@main.command()
@db_option
@source_options
@click.option("--trace", "trace_id", required=True, help="Trace id (hex, or a unique prefix).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def spans(db: Path | None, source: SourceChoice | None, trace_id: str, as_json: bool) -> None:
    """List the spans of one trace."""
    from tracetui.query.export import ExportError, iter_span_json, resolve_trace_id

    reader = open_reader(db, source=source)
    try:
        full = resolve_trace_id(reader, trace_id)
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    rows = iter_span_json(reader, full)
    if as_json:
        from tracetui.query.scrub import policy_note

        if note := policy_note(reader.content_policy()):
            click.echo(f"tracetui: {note}", err=True)
        _echo_json_array(rows)
        return
    for span in rows:
        click.echo(
            f"{span['span_id']}  {span['parent_span_id'] or '—':<16}  {fmt_duration(int(span['duration_ms'] * 1e6)):>8}"
            f"  {span['status']:<5}  {safe_text(span['name'], 60)}"
        )


def _echo_json_array(items: Iterator[object]) -> None:
    """The text ``json_text(list(items))`` prints, written an item at a time (constant memory, first bytes fast)."""
    first = True
    for item in items:
        body = json_text(item).replace("\n", "\n  ")
        click.echo(("[\n  " if first else ",\n  ") + body, nl=False)
        first = False
    click.echo("[]" if first else "\n]")


@main.command()
@db_option
@source_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def status(db: Path | None, source: SourceChoice | None, as_json: bool) -> None:
    """What is stored, what retention evicted, the database size and what the receiver reported last."""
    reader = open_reader(db, source=source)
    try:
        counters = reader.counters()
    finally:
        reader.close()
    if as_json:
        click.echo(json_text(counters.to_json()))
        return
    receiver = counters.receiver or {}
    click.echo(f"spans    {counters.span_count:,} in {counters.trace_count:,} traces")
    if source is not None:  # ClickHouse: the Collector writes, the table's TTL evicts; no receiver of ours
        click.echo(f"tables   {counters.db_bytes:,} bytes on disk (compressed, as ClickHouse reports its parts)")
        return
    click.echo(f"evicted  {counters.evicted_spans:,} spans in {counters.evicted_traces:,} traces (retention limits)")
    click.echo(f"database {counters.db_bytes:,} bytes (with its WAL)")
    click.echo(f"receiver {safe_text(str(receiver.get('state', 'never started')))}")
    if counters.store_problem:
        click.echo(f"problem  {safe_text(str(counters.store_problem.get('message', '')))}")


@main.command()
@db_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge(db: Path | None, yes: bool) -> None:
    """Delete every stored trace, span, log record and evaluation."""
    from tracetui.store.retention import purge as purge_all

    path = resolve_db(db)
    conn = open_writer(path)
    if not yes:
        click.confirm(f"Delete everything in {path}?", abort=True)
    try:
        spans_deleted = purge_all(conn)
    finally:
        conn.close()
    click.echo(f"purged {spans_deleted:,} spans from {path}", err=True)


@main.command()
@db_option
@prices_option
def reindex(db: Path | None, prices: Path | None) -> None:
    """Recompute what is derived from the stored spans (after upgrading tracetui).

    LLM fields, prices, evaluations, trace rows and the timing analysis, in
    batches of whole traces: an interrupted reindex leaves a consistent
    database, and running it again finishes it.
    """
    from tracetui.jobs.reindex import reindex as run_reindex
    from tracetui.llm.pricing import PriceFileError

    path = resolve_db(db)
    open_writer(path).close()  # a missing or newer file is said so here, not with a traceback
    try:
        spans_done, traces_done = run_reindex(
            path, progress=lambda line: click.echo(f"reindex: {line}", err=True), prices_path=prices
        )
    except PriceFileError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"reindexed {spans_done:,} spans in {traces_done:,} traces", err=True)
    from tracetui.jobs.indexer import reindex as rebuild_text_index

    rebuild_text_index(path)
    click.echo("rebuilt the full-text index", err=True)


from tracetui.cli.transfer import export_command, import_command  # noqa: E402  (registered after the group exists)

main.add_command(import_command)
main.add_command(export_command)
from tracetui.cli.stats import rollup_job, stats_command  # noqa: E402

main.add_command(stats_command)
from tracetui.cli.compare import cohort_command, compare_command  # noqa: E402

main.add_command(compare_command)
from tracetui.cli.search import indexer_job, search_command  # noqa: E402

main.add_command(search_command)
main.add_command(cohort_command)
from tracetui.cli.judge import job_group, judge_command  # noqa: E402

main.add_command(judge_command)
job_group.add_command(indexer_job)  # `tracetui job indexer` beside `tracetui job judge`
job_group.add_command(rollup_job)  # `tracetui job rollup`: the Stats rollup, beside the receiver
main.add_command(job_group)

if __name__ == "__main__":  # pragma: no cover
    main()

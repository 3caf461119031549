"""``tracetui import`` and ``tracetui export``: OTLP files in, one trace out.

Registered on the main group by :mod:`tracetui.cli.main`; shared options come
from :mod:`tracetui.cli.common` (importing tracetui.cli.main here would be a cycle).
"""

from __future__ import annotations

from pathlib import Path

import click

from tracetui.cli.common import SourceChoice, db_option, open_reader, resolve_db, source_options
from tracetui.model.fmt import fmt_counted
from tracetui.query.export import write_private


@click.command("import")
@db_option
@click.option("--into", "into", metavar="SOURCE", default=None,
              help="Import into the OpenTelemetry Collector ClickHouse exporter's tables instead of the SQLite "
                   "database: clickhouse://USER@HOST:PORT/DATABASE, clickhouses://... (TLS) or chdb:PATH "
                   "(password: $CLICKHOUSE_PASSWORD or the URL). The tables are created if missing.")  # fmt: skip
@click.option("--traces-table", default=None, metavar="NAME", help="With --into: the traces table (otel_traces).")
@click.option("--logs-table", default=None, metavar="NAME", help="With --into: the logs table (otel_logs).")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
def import_command(
    db: Path | None, into: str | None, traces_table: str | None, logs_table: str | None, files: tuple[Path, ...]
) -> None:
    """Load OTLP files into the database: all of them, or nothing.

    FILES are OTLP JSON (one request per file, or JSON Lines as the
    OpenTelemetry Collector's file exporter writes them) or length-delimited
    protobuf (*.otlp; *.logs.otlp hold logs). Works beside a running receiver.

    With --into, every file is read before the first insert, but ClickHouse has no
    transaction across batches, and it keeps duplicates: a file imported twice is
    stored twice.
    """
    from tracetui.ingest.importer import ImportFailed, import_files

    if into is not None:
        # (TRACETUI_DB in the environment is no conflict: --into wins over it.)
        if click.get_current_context().get_parameter_source("db") == click.core.ParameterSource.COMMANDLINE:
            raise click.UsageError("--into and --db are alternatives: give one")
        _import_into(into, traces_table, logs_table, files)
        return
    if traces_table is not None or logs_table is not None:
        raise click.UsageError("--traces-table and --logs-table go with --into")
    path = resolve_db(db)
    try:
        report = import_files(files, path)
    except ImportFailed as exc:
        raise click.ClickException(f"nothing imported:\n{exc}") from None
    for warning in report.warnings[:20]:
        click.echo(f"tracetui: warning: {warning}", err=True)
    if len(report.warnings) > 20:
        click.echo(f"tracetui: warning: ... and {len(report.warnings) - 20} more", err=True)
    if not report.spans and not report.logs:
        if report.rejected:
            raise click.ClickException(f"nothing imported: all {fmt_counted(report.rejected, 'item')} were invalid")
        files_read = fmt_counted(report.files, "file")
        click.echo(f"tracetui: nothing to import: {files_read} held no spans or log records", err=True)
        return
    click.echo(f"tracetui: {report.summary(path)}", err=True)


def _import_into(into: str, traces_table: str | None, logs_table: str | None, files: tuple[Path, ...]) -> None:
    """``tracetui import --into SOURCE FILE...``: the files into the ClickHouse exporter's tables."""
    from tracetui.clickhouse.connect import SourceError, parse_source
    from tracetui.clickhouse.load import LoadError, import_files_into, summary_into
    from tracetui.clickhouse.schema import SchemaMismatch
    from tracetui.ingest.importer import ImportFailed

    try:
        spec = parse_source(into, traces_table=traces_table, logs_table=logs_table)
    except SourceError as exc:
        raise click.BadParameter(str(exc).replace("--source takes", "takes"), param_hint="--into") from None
    try:
        report = import_files_into(spec, files)
    except ImportFailed as exc:
        raise click.ClickException(f"nothing imported:\n{exc}") from None
    except (SourceError, SchemaMismatch, LoadError) as exc:
        raise click.ClickException(str(exc)) from None
    if not report.spans and not report.logs:
        files_read = fmt_counted(report.files, "file")
        click.echo(f"tracetui: nothing to import: {files_read} held no spans or log records", err=True)
        return
    click.echo(f"tracetui: {summary_into(report, spec)}", err=True)


@click.command("export")
@db_option
@source_options
@click.argument("trace_id")
@click.option("--format", "fmt", type=click.Choice(["otlp-json", "summary"]), default="summary", show_default=True,
              help="otlp-json: OTLP JSON that `tracetui import` reads back (JSON Lines, spans then log "
                   "records, when the trace has log records); "
                   "summary: text for an LLM or an issue.")  # fmt: skip
@click.option("--max-chars", type=click.IntRange(0), default=None,
              help="Summary: cut each prompt, answer and error message to N characters (default 500).")  # fmt: skip
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file instead of standard output.")  # fmt: skip
def export_command(
    db: Path | None, source: SourceChoice | None, trace_id: str, fmt: str, max_chars: int | None, output: Path | None
) -> None:
    """Write one trace (full hex id or a unique prefix) as OTLP JSON or as a text summary."""
    from tracetui.query.export import DEFAULT_MAX_CHARS, ExportError, resolve_trace_id, trace_otlp_json, trace_summary
    from tracetui.query.scrub import policy_note

    reader = open_reader(db, source=source)
    try:
        note = policy_note(reader.content_policy())
        full = resolve_trace_id(reader, trace_id)
        if fmt == "otlp-json":
            text = trace_otlp_json(reader, full) + "\n"
        else:
            text = trace_summary(reader, full, max_chars=DEFAULT_MAX_CHARS if max_chars is None else max_chars)
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        reader.close()
    if note:
        click.echo(f"tracetui: {note}", err=True)
    if output is None:
        click.echo(text, nl=False)
    else:
        try:
            write_private(output, text)
        except OSError as exc:
            raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None
        click.echo(f"tracetui: wrote {output}", err=True)

"""Options and helpers shared by every command module (no Textual here)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tracetui.ingest.hints import command_name, hint
from tracetui.model.config import DB_ENV, default_db_path

if TYPE_CHECKING:  # the commands import what they use when they run: `tracetui --help` stays fast
    from tracetui.model.reader import Reader

__all__ = ["command_name", "db_option", "hint", "no_database", "open_reader", "resolve_db", "source_options"]

#: Where the traces are read from when not a SQLite file: a ClickHouse URL or ``chdb:PATH`` (docs/team.md).
SOURCE_ENV = "TRACETUI_SOURCE"


@dataclass(frozen=True)
class SourceChoice:
    """``--source`` and the options that go with it (tracetui.clickhouse.connect.parse_source reads them)."""

    url: str
    traces_table: str | None = None
    logs_table: str | None = None
    secure: bool | None = None
    password_file: Path | None = None


def source_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--source`` (env TRACETUI_SOURCE), ``--traces-table``, ``--logs-table``, ``--secure``, ``--password-file``,
    handed to the command as one ``source`` argument (None: the SQLite file of ``--db``)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        url = kwargs.pop("source_url")
        options = {name: kwargs.pop(name) for name in ("traces_table", "logs_table", "secure", "password_file")}
        if url is None and any(value not in (None, False) for value in options.values()):
            raise click.UsageError("--traces-table, --logs-table, --secure and --password-file go with --source")
        kwargs["source"] = (
            None if url is None else SourceChoice(url, **{**options, "secure": options["secure"] or None})
        )
        return command(*args, **kwargs)

    for option in reversed((
        click.option("--source", "source_url", envvar=SOURCE_ENV, default=None, metavar="URL",
                     help=f"Read a team's traces from ClickHouse, as the OpenTelemetry Collector's exporter writes "
                          f"them: clickhouse://USER@HOST:8123/DATABASE (clickhouses:// for TLS), or chdb:PATH for an "
                          f"embedded one [env {SOURCE_ENV}]. The password: CLICKHOUSE_PASSWORD or --password-file."),
        click.option("--traces-table", default=None, metavar="NAME", help="With --source: the traces table "
                     "(default otel_traces)."),
        click.option("--logs-table", default=None, metavar="NAME", help="With --source: the logs table "
                     "(default otel_logs)."),
        click.option("--secure", is_flag=True, default=False, help="With --source: TLS (as clickhouses://)."),
        click.option("--password-file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
                     help="With --source: read the ClickHouse password from this file's first line."),
    )):  # fmt: skip
        wrapper = option(wrapper)
    return wrapper


db_option = click.option(
    "--db",
    "db",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=DB_ENV,
    default=None,
    help=f"SQLite database file [env {DB_ENV}; default: in the user data directory].",
)


def no_database(path: Path) -> click.ClickException:
    """The error for a database that does not exist yet, with the command that creates it."""
    return click.ClickException(f"no database at {path} (start `{hint('serve')}` first, or pass --db)")


def resolve_db(db: Path | None) -> Path:
    return (db or default_db_path()).expanduser().resolve()


def open_reader(db: Path | None, threshold: float = 0.5, source: SourceChoice | None = None) -> Reader:
    """A read-only Reader of the SQLite file (or of ``source``), or a click error a user can act on."""
    if source is not None:
        open_one, _ = clickhouse_readers(source, threshold)
        return open_one(owner=True)
    from tracetui.store.reader import SqliteReader

    path = resolve_db(db)
    try:
        return SqliteReader(path, threshold=threshold)
    except FileNotFoundError:
        raise no_database(path) from None
    except Exception as exc:
        raise click.ClickException(f"cannot open {path}: {exc}") from None


def run_ui(path: Path, *, threshold: float = 0.5, **options: Any) -> None:
    """The UI over the SQLite file at ``path``: its readers, and its pins for the trace on screen."""
    from tracetui.store.pins import SqlitePins
    from tracetui.store.reader import SqliteReader
    from tracetui.ui.app import run_app

    run_app(lambda: SqliteReader(path, threshold=threshold), pins=SqlitePins(path), threshold=threshold, **options)


def clickhouse_readers(source: SourceChoice, threshold: float = 0.5):
    """(a factory of readers over one connection, the connection): ``factory(owner=True)`` makes a reader
    that closes the connection when it is closed. The readers share one lock: one HTTP session, one query
    at a time (and for ``chdb:`` one server process). Errors are click errors naming what to do."""
    from tracetui.clickhouse.connect import SourceError, connect, parse_source
    from tracetui.clickhouse.reader import ClickHouseReader
    from tracetui.clickhouse.schema import SchemaMismatch, check_shape

    try:
        spec = parse_source(source.url, password_file=source.password_file, secure=source.secure,
                            traces_table=source.traces_table, logs_table=source.logs_table)  # fmt: skip
        conn = connect(spec)
    except SourceError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        shape = check_shape(conn.client, spec.database, spec.traces_table, spec.logs_table)
    except SchemaMismatch as exc:
        conn.close()
        raise click.ClickException(f"{spec.display()}: {exc}") from None
    except Exception as exc:
        conn.close()
        raise click.ClickException(f"cannot read {spec.display()}: {exc}") from None
    lock = threading.Lock()

    def open_one(owner: bool = False) -> Reader:
        return ClickHouseReader(conn if owner else conn.borrowed(), shape, threshold=threshold, lock=lock)

    return open_one, conn


def run_source_ui(source: SourceChoice, *, threshold: float = 0.5, **options: Any) -> None:
    """The UI over a ClickHouse source: the same screens, nothing pinned (retention there is the table's TTL)."""
    from tracetui.ui.app import run_app

    open_one, conn = clickhouse_readers(source, threshold)
    try:
        run_app(open_one, pins=None, threshold=threshold, **options)
    finally:
        conn.close()


def open_writer(path: Path):
    """A read-write connection to an existing database, or a click error a user can act on."""
    import sqlite3

    from tracetui.store.schema import SchemaTooNew, connect_writer

    if not path.exists():
        raise click.ClickException(f"no database at {path}")
    try:
        return connect_writer(path)
    except (sqlite3.Error, OSError, SchemaTooNew) as exc:
        raise click.ClickException(f"cannot open {path}: {exc}") from None


def lower_priority() -> None:
    """For background work (`tracetui job indexer`, `job rollup`, `job judge`): on a saturated machine the
    receiver's processes go first (without it, indexing cost 55 % of ingest throughput at load 2-4: 7,676
    vs 17,116 spans/s, same run)."""
    import os

    if hasattr(os, "nice"):
        os.nice(10)


def job_command(name: str, module: str, doc: str) -> click.Command:
    """The hidden `tracetui job NAME ARGS...`: ``module``'s ``main(argv)`` at lowered priority, its exit status."""

    @click.command(name=name, help=doc, context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        import importlib
        import sys

        job = importlib.import_module(module)  # first: the job notes its parent sooner at full priority
        lower_priority()
        sys.exit(job.main(list(args)))

    return command

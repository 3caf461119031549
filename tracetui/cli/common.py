"""Options and helpers shared by every command module (no Textual here)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tracetui.ingest.hints import command_name, hint
from tracetui.model.config import DB_ENV, default_db_path

if TYPE_CHECKING:  # the commands import what they use when they run: `tracetui --help` stays fast
    from tracetui.model.reader import Reader

__all__ = ["command_name", "db_option", "hint", "no_database", "open_reader", "resolve_db"]

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


def open_reader(db: Path | None, threshold: float = 0.5) -> Reader:
    """A read-only Reader of the SQLite file, or a click error a user can act on."""
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


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, a new file readable by its owner only (0600, whatever the umask): it holds prompts.

    An existing file keeps its permissions (the user chose them); a device such as
    /dev/stdout works as usual.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600)
    with open(fd, "w", encoding="utf-8") as f:
        f.write(text)

"""Options and helpers shared by every command module (no Textual here)."""

from __future__ import annotations

from pathlib import Path

import click

from tracetui.config import DB_ENV, default_db_path
from tracetui.hints import command_name, hint

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


def open_reader(db: Path | None, threshold: float = 0.5):
    """A read-only Reader, or a click error a user can act on."""
    from tracetui.store.reader import Reader

    path = resolve_db(db)
    try:
        return Reader(path, threshold=threshold)
    except FileNotFoundError:
        raise no_database(path) from None
    except Exception as exc:
        raise click.ClickException(f"cannot open {path}: {exc}") from None

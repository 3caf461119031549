"""Options and helpers shared by every command module (no Textual here)."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

import click

from tracetui.config import DB_ENV, default_db_path

db_option = click.option(
    "--db",
    "db",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=DB_ENV,
    default=None,
    help=f"SQLite database file [env {DB_ENV}; default: in the user data directory].",
)


def command_name(argv0: str | None = None, which=shutil.which) -> str:
    """How the user can run tracetui from any directory, for the hints we print: "tracetui" when
    that is on their PATH and is this installation, else the absolute path of the console script
    (after `make run` it is .venv/bin/tracetui, not on the PATH), else ``python -m tracetui``.
    """
    argv0 = sys.argv[0] if argv0 is None else argv0
    on_path = which("tracetui")
    script = Path(argv0).resolve() if argv0 and Path(argv0).name == "tracetui" and Path(argv0).exists() else None
    if script is not None:
        if on_path and Path(on_path).resolve() == script:
            return "tracetui"
        return shlex.quote(str(Path(os.path.abspath(argv0))))
    if on_path and Path(on_path).resolve().parent == Path(sys.executable).resolve().parent:
        return "tracetui"  # `python -m tracetui` from the environment whose tracetui is on the PATH
    return f"{shlex.quote(sys.executable)} -m tracetui"


def hint(command: str) -> str:
    """``tracetui serve`` spelled so that it runs as printed (see command_name)."""
    return f"{command_name()} {command}"


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

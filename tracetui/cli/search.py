"""``tracetui search``, the hidden ``tracetui job NAME`` and the indexer ``serve`` starts beside its receiver."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click

from tracetui.cli.common import db_option, job_command, open_writer, resolve_db
from tracetui.model.config import ContentPolicy, RedactionError
from tracetui.model.fmt import fmt_clock, json_text, safe_text

indexer_job = job_command(
    "indexer", "tracetui.jobs.indexer", "The full-text indexer (`tracetui job indexer`, started by `tracetui serve`)."
)


def content_policy(no_content: bool, redact: tuple[str, ...]) -> ContentPolicy:
    try:
        return ContentPolicy(not no_content, redact)
    except RedactionError as exc:
        raise click.BadParameter(str(exc), param_hint="--redact") from None


def serve_policy(db_path: Path, no_content: bool | None, redact: tuple[str, ...], *, quiet: bool) -> ContentPolicy:
    """The policy ``serve`` runs under: exactly what ``--no-content`` / ``--content`` / ``--redact`` say when
    any is given, else the one the database records (a later ``serve`` without them keeps it; it does not
    quietly start copying content again). The inherited policy is said unless ``quiet``."""
    from tracetui.store.text_index import policy_of

    if no_content is not None or redact:
        return content_policy(bool(no_content), redact)
    recorded = policy_of(db_path)
    if recorded is None:
        return ContentPolicy()
    if recorded != ContentPolicy() and not quiet:
        click.echo(f"tracetui: {describe_policy(recorded)}, as {db_path} records (--content to copy content)", err=True)
    return recorded


def describe_policy(policy: ContentPolicy) -> str:
    """The policy in a few words, for status lines and notes."""
    if not policy.keep_content:
        what = "message content is not copied"
    else:
        what = "message content is copied"
    if policy.redact:
        what += f", with {', '.join(policy.redact)} redacted"
    return what


def start_indexer(db_path: Path, policy: ContentPolicy) -> subprocess.Popen:
    """The indexer process of ``serve`` (it exits when this process does)."""
    argv = [sys.executable, "-m", "tracetui", "job", "indexer", "--db", str(db_path)]
    if not policy.keep_content:
        argv.append("--no-content")
    for pattern in policy.redact:
        argv += ["--redact", pattern]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL)


def stop_indexer(process: subprocess.Popen | None) -> None:
    if process is None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _highlighted(snippet: str) -> str:
    """The snippet on one safe line, its matches in bold."""
    from tracetui.store.text_index import MARK_CLOSE, MARK_OPEN

    out, bold = [], False
    for piece in re.split(f"({MARK_OPEN}|{MARK_CLOSE})", snippet):
        if piece in (MARK_OPEN, MARK_CLOSE):
            bold = piece == MARK_OPEN
        elif piece:
            text = safe_text(piece.replace("\n", " "))
            out.append(click.style(text, bold=True) if bold else text)
    return "".join(out)


@click.command(name="search")
@db_option
@click.argument("query")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per match (ids in hex).")
def search_command(db: Path | None, query: str, limit: int, as_json: bool) -> None:
    """Find LLM calls by what was said: prompts, completions, tool calls, documents, errors.

    QUERY uses SQLite FTS5 syntax: words (all must appear), "a phrase", prefix*,
    OR, NOT, parentheses. Newest matches first.
    """
    from tracetui.model.filter import FilterError
    from tracetui.store.text_index import MARK_CLOSE, MARK_OPEN, search

    conn = open_writer(resolve_db(db))
    try:
        rows = search(conn, query, limit)
    except FilterError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        conn.close()
    if as_json:
        click.echo(json_text([{
            "trace_id": row["trace_id"].hex(),
            "span_id": row["span_id"].hex(),
            "run": row["run"],
            "name": row["name"],
            "service": row["service"],
            "model": row["request_model"],
            "start_ns": row["start_ns"],
            "snippet": row["snippet"].replace(MARK_OPEN, "[").replace(MARK_CLOSE, "]"),
        } for row in rows], ensure_ascii=False))  # fmt: skip
        return
    for row in rows:
        click.echo(
            f"{fmt_clock(row['start_ns'])}  {safe_text(row['run'] or '', 40)}  ›  {safe_text(row['name'], 40)}  "
            f"trace {row['trace_id'].hex()} span {row['span_id'].hex()}"
        )
        click.echo(f"    {_highlighted(row['snippet'])}")
    if not rows:
        click.echo("no match", err=True)

"""`tracetui judge`: groundedness of the stored LLM calls (tracetui.jobs.judge), by a model or the lexical estimate."""

from __future__ import annotations

import ipaddress
import os
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

import click

from tracetui.cli.common import db_option, lower_priority, open_writer, resolve_db
from tracetui.cli.search import content_policy
from tracetui.model.config import ContentPolicy

#: The judge endpoint's API key, when it needs one (hosted APIs).
KEY_ENV = "TRACETUI_JUDGE_API_KEY"


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: The limits, shared by `judge`, `serve` and `job judge` (serve passes them on to its job).
RATE_OPTION = click.option("--judge-rate", type=click.FloatRange(0), default=30.0, show_default=True,
                           metavar="CALLS_PER_MIN", help="Most calls a minute sent to the judge model (0: no limit).")  # fmt: skip
SAMPLE_OPTION = click.option("--judge-sample", type=click.FloatRange(0, 1), default=1.0, show_default=True,
                             metavar="FRACTION",
                             help="Judge this share of the calls (chosen by span id: the same ones on every run).")  # fmt: skip
TIMEOUT_OPTION = click.option("--judge-timeout", type=click.FloatRange(0.1), default=60.0, show_default=True,
                              metavar="SECONDS", help="Seconds the judge model may take to answer one call.")  # fmt: skip

CONCURRENCY_OPTION = click.option("--judge-concurrency", type=click.IntRange(1, 64), default=2, show_default=True,
                                  metavar="N", help="Calls to the judge model in flight at once.")  # fmt: skip
BUDGET_OPTION = click.option("--judge-budget", default=None, metavar="TOKENS|$USD",
                             help="Most the judge model may use an hour: tokens (200000) or dollars ($0.50, priced "
                                  "with tracetui's pricing); then the judge pauses.")  # fmt: skip


def _budget(text: str | None, model: str | None):
    """The ``--judge-budget`` value: tokens an hour, or ``$N`` (needs a price for the judge model)."""
    from tracetui.jobs.judge import Budget, priced

    if text is None:
        return None
    usd = text.strip().startswith("$")
    try:
        limit = float(text.strip().lstrip("$").replace(",", "").replace("_", ""))
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: tokens an hour (200000) or dollars ($0.50)", param_hint="--judge-budget"
        ) from None
    if not limit > 0:
        raise click.BadParameter(f"{text!r}: a budget above 0", param_hint="--judge-budget")
    if usd and model and not priced(model):
        raise click.BadParameter(f"tracetui has no price for {model!r}: give the budget in tokens (e.g. 200000)",
                                 param_hint="--judge-budget")  # fmt: skip
    return Budget(limit, usd)


NO_CONTENT_OPTION = click.option("--no-content", is_flag=True,
                                 help="Content is kept out: no model judge; the estimate's explanations quote nothing.")  # fmt: skip
REDACT_OPTION = click.option("--redact", multiple=True, metavar="PATTERN",
                             help="Replace matches with [redacted] in what the judge model is sent: 'keys', 'emails' "
                                  "or a regex. Repeatable.")  # fmt: skip


@click.command("judge")
@db_option
@click.option("--judge", "endpoint", default="lexical", show_default=True, metavar="URL|lexical",
              help="An OpenAI-compatible endpoint (e.g. http://localhost:11434/v1 for Ollama), or `lexical` for the "
                   "model-free estimate.")  # fmt: skip
@click.option("--judge-model", default=None, metavar="NAME", help="The judge model (required with a URL).")
@click.option(
    "--judge-allow-remote", is_flag=True, help="Allow a URL that is not loopback (prompts leave the machine)."
)
@RATE_OPTION
@SAMPLE_OPTION
@TIMEOUT_OPTION
@BUDGET_OPTION
@CONCURRENCY_OPTION
@click.option("--since", default=None, metavar="AGE", help="Only calls that started within this age (e.g. 1h, 7d).")
@click.option("--filter", "expr", default=None, metavar="EXPR", help="Only the calls matching this filter.")
@NO_CONTENT_OPTION
@REDACT_OPTION
def judge_command(
    db: Path | None, endpoint: str, judge_model: str | None, judge_allow_remote: bool, judge_rate: float,
    judge_sample: float, judge_timeout: float, judge_budget: str | None, judge_concurrency: int, since: str | None,
    expr: str | None, no_content: bool, redact: tuple[str, ...],
) -> None:  # fmt: skip
    """Judge the groundedness of stored LLM calls that this judge has not judged yet."""
    from tracetui.jobs.judging import judge_stored
    from tracetui.model.filter import FilterError, parse
    from tracetui.store.retention import parse_age

    given = content_policy(no_content, redact)
    judge = replace(_judge(endpoint, judge_model, judge_allow_remote, given), rate_per_min=judge_rate,
                    sample=judge_sample, timeout_s=judge_timeout, budget=_budget(judge_budget, judge_model),
                    concurrency=judge_concurrency)  # fmt: skip
    try:
        flt = parse(expr) if expr else None
        since_ns = time.time_ns() - int(parse_age(since) * 1e9) if since else None
    except (FilterError, ValueError) as exc:
        raise click.BadParameter(str(exc)) from None
    from tracetui.store.text_index import policy_of

    path = resolve_db(db)
    open_writer(path).close()
    try:  # the database's own policy (its receiver's --no-content / --redact) holds too
        judge = replace(judge, policy=_strictest(given, policy_of(path) or ContentPolicy()))
    except ValueError as exc:
        raise click.UsageError(f"--judge {endpoint}: {exc} (the database records --no-content)") from None
    tally = judge_stored(
        path, judge, since_ns=since_ns, flt=flt, progress=lambda line: click.echo(f"judge: {line}", err=True)
    )
    if tally.stopped:
        click.echo(f"judge: stopped: the endpoint {endpoint} is down; run again once it answers", err=True)
    if tally.paused:
        click.echo(f"judge: paused for budget ({judge.budget}); the other calls wait for a later run", err=True)
    click.echo(
        f"judge: {tally.judged:,} calls judged, {tally.not_judged:,} not judged (no context, no answer or no claims), "
        f"{tally.failed:,} failed (a rerun tries them again) — source {judge.source!r}",
        err=True,
    )


def _judge(endpoint: str, model: str | None, allow_remote: bool, policy: ContentPolicy):
    from tracetui.jobs.judge import NO_CONTENT_REFUSAL, Judge

    if endpoint == "lexical":
        return Judge(policy=policy)
    if not policy.keep_content:
        raise click.UsageError(f"--judge {endpoint}: {NO_CONTENT_REFUSAL}")
    if urlparse(endpoint).scheme not in ("http", "https"):
        raise click.BadParameter(f"{endpoint!r}: an http(s) URL or `lexical`", param_hint="--judge")
    if not model:
        raise click.UsageError("--judge URL needs --judge-model NAME")
    if not is_loopback(endpoint):
        if not allow_remote:
            raise click.UsageError(
                f"{endpoint} is not on this machine: pass --judge-allow-remote to send prompts there"
            )
        click.echo(f"tracetui: warning: the judge sends your prompts and answers to {endpoint}", err=True)
    return Judge(endpoint, model, os.environ.get(KEY_ENV), policy=policy)


def _strictest(given: ContentPolicy, recorded: ContentPolicy) -> ContentPolicy:
    """Both policies at once: no content if either keeps it out, every redaction of both."""
    return ContentPolicy(
        given.keep_content and recorded.keep_content, tuple(dict.fromkeys(given.redact + recorded.redact))
    )


def _policy_args(policy: ContentPolicy) -> list[str]:
    return (["--no-content"] if not policy.keep_content else []) + [a for p in policy.redact for a in ("--redact", p)]


# --- beside `serve`: the judge as its own process -------------------------------------------

#: Seconds between two passes of the judge running beside `serve`.
FOLLOW_INTERVAL_S = 2.0


def serve_judge_options(command):
    """`--judge`, `--judge-model`, `--judge-allow-remote`, `--judge-filter` and the limits for `serve` (none: no judge)."""
    for option in reversed((
        click.option("--judge", "judge_endpoint", default=None, metavar="URL|lexical",
                     help="Judge the groundedness of new LLM calls in a process of its own (docs/judge.md)."),
        click.option("--judge-model", default=None, metavar="NAME", help="With --judge URL: the judge model."),
        click.option("--judge-allow-remote", is_flag=True, help="Allow a --judge URL that is not loopback."),
        click.option("--judge-filter", default=None, metavar="EXPR", help="Judge only the calls matching this filter."),
        RATE_OPTION, SAMPLE_OPTION, TIMEOUT_OPTION, BUDGET_OPTION, CONCURRENCY_OPTION,
    )):  # fmt: skip
        command = option(command)
    return command


def judge_job_args(db_path: Path, policy: ContentPolicy, endpoint: str | None, model: str | None, allow_remote: bool,
                   flt: str | None, rate: float, sample: float, timeout: float, budget: str | None,
                   concurrency: int) -> list[str] | None:  # fmt: skip
    """The command line of ``serve``'s judge (None without --judge); a bad URL, a missing model or budget, or a
    model judge with ``--no-content`` is said here, before anything starts."""
    import sys

    if endpoint is None:
        return None
    _judge(endpoint, model, allow_remote, policy)
    _budget(budget, model)
    args = [sys.executable, "-m", "tracetui", "job", "judge", "--db", str(db_path), "--judge", endpoint]
    args += ["--judge-model", model] if model else []
    args += ["--judge-allow-remote"] if allow_remote else []
    args += ["--filter", flt] if flt else []
    args += ["--judge-rate", f"{rate:g}", "--judge-sample", f"{sample:g}", "--judge-timeout", f"{timeout:g}"]
    args += ["--judge-budget", budget] if budget else []
    args += ["--judge-concurrency", str(concurrency), *_policy_args(policy)]
    return args


def start_judge(args: list[str] | None, *, quiet: bool):
    """Start `python -m tracetui job judge` for ``serve`` (None without --judge); it exits with its parent."""
    import subprocess

    if args is None:
        return None
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL if quiet else None)  # fmt: skip


def stop_judge(proc) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except Exception:
            proc.kill()


@click.group("job", hidden=True)
def job_group() -> None:
    """Background jobs `serve` starts as processes of their own (told apart by " job " in their command line)."""


@job_group.command("judge")
@db_option
@click.option("--judge", "endpoint", default="lexical")
@click.option("--judge-model", default=None)
@click.option("--judge-allow-remote", is_flag=True)
@click.option("--filter", "expr", default=None)
@RATE_OPTION
@SAMPLE_OPTION
@TIMEOUT_OPTION
@BUDGET_OPTION
@CONCURRENCY_OPTION
@NO_CONTENT_OPTION
@REDACT_OPTION
def job_judge(
    db: Path | None, endpoint: str, judge_model: str | None, judge_allow_remote: bool, expr: str | None,
    judge_rate: float, judge_sample: float, judge_timeout: float, judge_budget: str | None,
    judge_concurrency: int, no_content: bool, redact: tuple[str, ...],
) -> None:  # fmt: skip
    """Judge new LLM calls every few seconds until the parent (`serve`) is gone or SIGTERM."""
    import signal

    from tracetui.jobs.judging import Follower
    from tracetui.model.filter import parse

    judge = replace(_judge(endpoint, judge_model, judge_allow_remote, content_policy(no_content, redact)),
                    rate_per_min=judge_rate, sample=judge_sample, timeout_s=judge_timeout,
                    budget=_budget(judge_budget, judge_model), concurrency=judge_concurrency)  # fmt: skip
    flt = parse(expr) if expr else None
    path = resolve_db(db)
    lower_priority()
    parent = os.getppid()
    signal.signal(signal.SIGTERM, lambda *_: sys_exit())
    while not path.exists():
        time.sleep(FOLLOW_INTERVAL_S)
    follower = Follower(path, judge, flt, log=lambda line: click.echo(f"judge: {line}", err=True))
    orphaned = lambda: os.getppid() != parent  # noqa: E731
    while not orphaned():
        if follower.run(should_stop=orphaned).stopped:
            time.sleep(10 * FOLLOW_INTERVAL_S)  # the endpoint is down: try again later
        time.sleep(FOLLOW_INTERVAL_S)


def sys_exit() -> None:
    raise SystemExit(0)

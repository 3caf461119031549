"""The commands over a ClickHouse source, run as a user runs them: `import --into chdb:`, then `--source`.

Each command is a real `tracetui` process that starts its own chdb server (one at a time: chdb lets
one process open a directory) and reads over HTTP; the answers are compared with the same
captures imported into SQLite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import FIXTURES

CAPTURES = sorted(str(p) for p in FIXTURES.glob("*.otlp"))


def tracetui(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "tracetui.cli.main", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
    )  # fmt: skip
    if check:
        assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> tuple[str, Path]:
    tmp = tmp_path_factory.mktemp("ch-cli")
    source = f"chdb:{tmp / 'team'}"
    imported = tracetui("import", "--into", source, *CAPTURES)
    assert "into chdb:" in imported.stderr
    db = tmp / "local.db"
    tracetui("import", "--db", str(db), *CAPTURES)
    return source, db


def test_traces_and_stats_read_the_same_as_sqlite(stores) -> None:
    source, db = stores
    theirs = json.loads(tracetui("traces", "--json", "--db", str(db)).stdout)
    mine = json.loads(tracetui("traces", "--json", "--source", source).stdout)
    assert len(mine) == len(theirs) > 20
    keys = ("trace_id", "name", "service", "span_count", "errors", "llm_calls", "input_tokens", "output_tokens")
    assert [{k: t[k] for k in keys} for t in mine] == [{k: t[k] for k in keys} for t in theirs]
    stats_sqlite = {g["key"]: g for g in json.loads(tracetui("stats", "--json", "--db", str(db)).stdout)}
    stats_ch = {g["key"]: g for g in json.loads(tracetui("stats", "--json", "--source", source).stdout)}
    assert stats_ch.keys() == stats_sqlite.keys()
    for key, group in stats_sqlite.items():
        assert (stats_ch[key]["count"], stats_ch[key]["p99_ms"]) == (group["count"], group["p99_ms"]), key
        assert stats_ch[key]["retry_rate"] is None  # ClickHouse does not compare calls: unknown, not 0


def test_spans_and_export_of_one_run(stores) -> None:
    source, db = stores
    first = json.loads(tracetui("traces", "--json", "--limit", "1", "--source", source).stdout)[0]
    prefix = first["trace_id"][:10]
    spans = json.loads(tracetui("spans", "--json", "--trace", prefix, "--source", source).stdout)
    assert len(spans) == first["span_count"]
    assert any(s["kind"] == "llm" and s["input_tokens"] for s in spans)
    summary = tracetui("export", prefix, "--source", source).stdout
    assert summary == tracetui("export", prefix, "--db", str(db)).stdout  # the text summary, word for word
    status = tracetui("status", "--source", source).stdout
    assert f"in {len(json.loads(tracetui('traces', '--json', '--source', source).stdout))} traces" in status


def test_the_source_from_the_environment_and_stats_of_a_filter(stores) -> None:
    source, db = stores
    listed = json.loads(tracetui("traces", "--json", env={"TRACETUI_SOURCE": source}).stdout)
    assert len(listed) > 20
    flt = ("--filter", "model~mini status=ok")
    filtered = json.loads(tracetui("stats", "--json", *flt, "--source", source).stdout)
    expected = json.loads(tracetui("stats", "--json", *flt, "--db", str(db)).stdout)
    assert [(g["key"], g["count"]) for g in filtered] == [(g["key"], g["count"]) for g in expected]
    assert filtered and all(g["error_rate"] == 0 for g in filtered)


def test_clear_errors(tmp_path: Path) -> None:
    wrong = tracetui("traces", "--source", f"chdb:{tmp_path / 'empty'}", check=False)
    assert wrong.returncode == 1 and "no table default.otel_traces" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    renamed = tracetui("traces", "--source", f"chdb:{tmp_path / 'empty'}", "--traces-table", "spans", check=False)
    assert "no table default.spans" in renamed.stderr
    sqlite_path = tracetui("traces", "--source", str(tmp_path / "x.db"), check=False)
    assert sqlite_path.returncode != 0 and "--db" in sqlite_path.stderr
    lonely = tracetui("traces", "--traces-table", "spans", check=False)
    assert lonely.returncode == 2 and "go with --source" in lonely.stderr


def test_the_password_never_shows(tmp_path: Path) -> None:
    """A server that is not there: the error names it, never the password (from the URL or the environment)."""
    done = tracetui("traces", "--source", "clickhouse://alice:s3cret-pw@127.0.0.1:1/otel", check=False,
                    env={"CLICKHOUSE_PASSWORD": "env-s3cret"})  # fmt: skip
    assert done.returncode == 1 and "127.0.0.1:1" in done.stderr
    assert "s3cret" not in done.stderr + done.stdout


def test_compare_and_cohort_over_clickhouse(stores, tmp_path: Path) -> None:
    """`compare --json` gives SQLite's figures (retry and fallback rates unknown: ClickHouse compares no calls), and
    `cohort` exports the same calls."""
    source, db = stores
    cohorts = ("--a", "model=gpt-4o-mini", "--b", "model=gpt-4.1-mini", "--json")
    mine = json.loads(tracetui("compare", *cohorts, "--source", source).stdout)
    theirs = json.loads(tracetui("compare", *cohorts, "--db", str(db)).stdout)
    figures = {f["metric"]: f for f in theirs["figures"]}
    assert figures["calls"]["a"] > 40 and figures["calls"]["b"] > 10
    for got in mine["figures"]:
        if got["metric"] in ("retry_rate", "fallback_rate"):
            assert (got["a"], got["b"], got["direction"]) == (None, None, "")
        else:
            assert got == pytest.approx(figures[got["metric"]]), got["metric"]
    assert (mine["verdict"], mine["a"]["max_tokens"], mine["b"]["max_tokens"]) == (
        theirs["verdict"], theirs["a"]["max_tokens"], theirs["b"]["max_tokens"],
    )  # fmt: skip
    assert any("retry rate and fallback rate: not known" in note for note in mine["notes"])
    shown = tracetui("compare", *cohorts[:-1], "--source", source).stdout
    assert "verdict: " in shown and "note: retry rate and fallback rate: not known" in shown
    lines = {}
    for where in (("--source", source), ("--db", str(db))):
        out = tmp_path / f"{where[0][2:]}.jsonl"
        done = tracetui("cohort", "--filter", "groundedness<0.5", "-o", str(out), *where)
        assert "wrote 2 calls" in done.stderr
        lines[where[0]] = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    keys = ("trace_id", "span_id", "run", "model", "system", "input", "output", "context", "evaluations", "figures")
    for record in (r for found in lines.values() for r in found):  # the routes of a result in arrival order,
        for e in record["evaluations"]:  # which ClickHouse does not keep (SQLite got the log records first)
            e["source"] = " + ".join(sorted(e["source"].split(" + ")))
    assert [{k: r[k] for k in keys} for r in lines["--source"]] == [{k: r[k] for k in keys} for r in lines["--db"]]
    refused = tracetui("cohort", "--filter", "retry=true", "-o", "-", "--source", source, check=False)
    assert refused.returncode == 1 and "cannot tell retries" in refused.stderr

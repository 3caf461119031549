"""Scripting commands: `tracetui traces` and `tracetui spans`, on a database filled from the fixtures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import (
    FIXTURES,
    comparable,
    expected_traces,
    fill_db,
    make_request,
    make_span,
    plain_attributes,
    read_records,
    receiver_env,
    requests_of,
    sid,
    suite_fixture_files,
    tid,
    trace_fixture_files,
)

from tracetui.cli.main import main

STATUS = {0: "unset", 1: "ok", 2: "error"}


def run(*args: str, env: dict[str, str] | None = None):
    result = CliRunner().invoke(main, list(args), env={"TRACETUI_DB": None, **(env or {})}, catch_exceptions=False)
    return result


def run_json(*args: str, env: dict[str, str] | None = None):
    result = run(*args, "--json", env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def all_expected():
    return expected_traces([r for path in suite_fixture_files() for r in requests_of(path)])


def test_serve_help_states_the_defaults():
    result = run("serve", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "[default: 127.0.0.1]" in text
    assert "default: 4317" in text
    assert "default: 64" in text and "--max-request-mb" in text
    assert "TRACETUI_DB" in text


# --- traces --------------------------------------------------------------------------------


def test_traces_json_lists_every_fixture_trace_newest_first(all_fixtures_db, all_expected):
    rows = run_json("traces", "--db", str(all_fixtures_db))
    assert isinstance(rows, list) and len(rows) == len(all_expected)
    assert [r["start_ns"] for r in rows] == sorted((r["start_ns"] for r in rows), reverse=True)
    for row in rows:
        trace_id = bytes.fromhex(row["trace_id"])
        assert len(row["trace_id"]) == 32 and row["trace_id"] == row["trace_id"].lower()
        exp = all_expected[trace_id]
        root_service, root = exp.root
        assert row["name"] == root.name
        assert row["service"] == root_service
        assert row["start_ns"] == exp.start_ns
        assert row["duration_ms"] == pytest.approx((exp.end_ns - exp.start_ns) / 1e6)
        assert row["span_count"] == exp.span_count
        assert row["errors"] == exp.errors


def test_traces_json_field_types(all_fixtures_db):
    rows = run_json("traces", "--db", str(all_fixtures_db))
    types = {"trace_id": str, "name": str, "service": str, "start_ns": int, "duration_ms": (int, float),
             "span_count": int, "errors": int}  # fmt: skip
    for row in rows:
        for key, kind in types.items():
            assert isinstance(row[key], kind) and not isinstance(row[key], bool), (key, row[key])


def test_fixture_errors_are_counted(all_fixtures_db, all_expected):
    # The captures contain failed calls (HTTP 500, timeouts): they must show up as errors.
    rows = run_json("traces", "--db", str(all_fixtures_db))
    assert sum(r["errors"] for r in rows) == sum(e.errors for e in all_expected.values()) > 0


def test_traces_limit(all_fixtures_db):
    everything = run_json("traces", "--db", str(all_fixtures_db))
    newest = run_json("traces", "--db", str(all_fixtures_db), "--limit", "3")
    assert newest == everything[:3]


def test_traces_text_table_lists_each_trace(all_fixtures_db, all_expected):
    result = run("traces", "--db", str(all_fixtures_db))
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert "RUN" in lines[0] and "SPANS" in lines[0]
    assert len(lines) == 1 + len(all_expected)
    for exp in all_expected.values():
        assert any(exp.trace_id.hex()[:8] in line for line in lines[1:])


def test_environment_variable_selects_the_database(all_fixtures_db):
    by_flag = run_json("traces", "--db", str(all_fixtures_db))
    by_env = run_json("traces", env={"TRACETUI_DB": str(all_fixtures_db)})
    assert by_env == by_flag and by_env


def test_environment_variable_with_the_real_console_script(all_fixtures_db):
    script = Path(sys.executable).with_name("tracetui")
    proc = subprocess.run(
        [str(script), "traces", "--json"],
        env=receiver_env({"TRACETUI_DB": str(all_fixtures_db)}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == len(run_json("traces", "--db", str(all_fixtures_db)))


@pytest.mark.parametrize("command", [["traces"], ["spans", "--trace", "abcd"]], ids=["traces", "spans"])
def test_missing_database_is_a_clear_error(tmp_path, command):
    missing = tmp_path / "nowhere" / "traces.db"
    result = run(*command, "--db", str(missing), "--json")
    assert result.exit_code != 0
    assert "no database" in result.stderr and str(missing) in result.stderr
    assert result.stdout == ""
    assert not missing.exists() and not missing.parent.exists()


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path):
    notes = tmp_path / "notes.db"
    notes.write_bytes(b"not sqlite at all\n" * 200)
    result = run("traces", "--db", str(notes), "--json")
    assert result.exit_code != 0
    assert "cannot open" in result.stderr and str(notes) in result.stderr
    assert notes.read_bytes() == b"not sqlite at all\n" * 200


def test_rootless_trace_is_marked_in_the_table_until_the_root_arrives(tmp_path):
    db = tmp_path / "rootless.db"
    t = tid(1)
    fill_db(db, [make_request([make_span(t, sid(2), sid(1), name="tool call", start=10)]).SerializeToString()])
    (row,) = run_json("traces", "--db", str(db))
    assert row["name"] == "tool call" and row["has_root"] is False
    assert "no root yet" in run("traces", "--db", str(db)).stdout

    fill_db(db, [make_request([make_span(t, sid(1), name="agent run", duration=10**9)]).SerializeToString()])
    (row,) = run_json("traces", "--db", str(db))
    assert row["name"] == "agent run" and row["has_root"] is True
    assert "no root yet" not in run("traces", "--db", str(db)).stdout


# --- spans -----------------------------------------------------------------------------------


def test_spans_json_matches_the_sent_spans(all_fixtures_db, all_expected):
    for trace_id, exp in all_expected.items():
        spans = run_json("spans", "--db", str(all_fixtures_db), "--trace", trace_id.hex())
        assert len(spans) == exp.span_count
        sent = {s.span_id.hex(): (service, s) for service, s in exp.spans}
        assert [s["start_ns"] for s in spans] == sorted(s["start_ns"] for s in spans)
        for span in spans:
            service, original = sent[span["span_id"]]
            assert span["trace_id"] == trace_id.hex()
            assert span["parent_span_id"] == (original.parent_span_id.hex() or None)
            assert span["name"] == original.name
            assert span["service"] == service
            assert span["start_ns"] == original.start_time_unix_nano
            assert span["duration_ms"] == pytest.approx(
                (original.end_time_unix_nano - original.start_time_unix_nano) / 1e6
            )
            assert span["status"] == STATUS[original.status.code]
            assert comparable(span["attributes"]) == comparable(plain_attributes(original.attributes))
            assert isinstance(span["kind"], str) and span["kind"]


def test_spans_json_kind_follows_the_genai_operation(all_fixtures_db):
    # The official OTel instrumentation names the operation; chat calls are LLM spans.
    path = next(p for p in trace_fixture_files() if p.stem == "otel_v2_openai")
    by_operation: dict[str, set[str]] = {}
    for trace_id, _exp in expected_traces(requests_of(path)).items():
        for span in run_json("spans", "--db", str(all_fixtures_db), "--trace", trace_id.hex()):
            operation = span["attributes"].get("gen_ai.operation.name")
            if operation:
                by_operation.setdefault(operation, set()).add(span["kind"])
    assert by_operation["chat"] == {"llm"}
    assert by_operation["embeddings"] == {"embedding"}


def test_spans_by_unique_prefix_equals_full_id(all_fixtures_db, all_expected):
    ids = sorted(t.hex() for t in all_expected)
    for full in ids:
        # the shortest prefix that no other trace shares
        n = next(n for n in range(1, 33) if sum(1 for other in ids if other.startswith(full[:n])) == 1)
        prefix = full[: max(n, 6)]
        assert run_json("spans", "--db", str(all_fixtures_db), "--trace", prefix) == run_json(
            "spans", "--db", str(all_fixtures_db), "--trace", full
        )


def test_spans_of_an_unknown_trace_is_an_error(all_fixtures_db):
    result = run("spans", "--db", str(all_fixtures_db), "--trace", "0" * 32, "--json")
    assert result.exit_code != 0
    assert "no trace matches" in result.stderr
    assert result.stdout == ""


def test_spans_text_output_shows_one_line_per_span(all_fixtures_db, all_expected):
    trace_id, exp = next(iter(all_expected.items()))
    result = run("spans", "--db", str(all_fixtures_db), "--trace", trace_id.hex())
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == exp.span_count
    for _, span in exp.spans:
        assert any(line.startswith(span.span_id.hex()) for line in lines)


def test_hostile_span_names_cannot_reach_the_terminal(tmp_path):
    db = tmp_path / "hostile.db"
    name = "evil\x1b[2J\x1b]0;pwned\x07\u202eexe.txt\nnext"
    fill_db(db, [make_request([make_span(tid(1), sid(1), name=name)]).SerializeToString()])
    for args in (["traces"], ["spans", "--trace", tid(1).hex()]):
        out = run(*args, "--db", str(db)).stdout
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
        assert "evil" in out
    # JSON keeps the exact value (json.dumps escapes control characters itself)
    (span,) = run_json("spans", "--db", str(db), "--trace", tid(1).hex())
    assert span["name"] == name


def test_an_ambiguous_prefix_says_so_and_names_the_candidates(all_fixtures_db, all_expected):
    ids = sorted(t.hex() for t in all_expected)
    # the longest prefix two traces share
    shared = max((a[: next(i for i in range(32) if a[i] != b[i])] for a, b in zip(ids, ids[1:], strict=False)), key=len)
    assert shared, "the fixtures have no two trace ids with a common first digit"
    for command in (["spans", "--trace", shared], ["export", shared]):
        result = run(*command, "--db", str(all_fixtures_db))
        assert result.exit_code != 0
        assert f"{shared!r} matches several traces" in result.stderr and "give more of the id" in result.stderr
        candidates = [i for i in ids if i.startswith(shared)]
        assert candidates[0] in result.stderr


def _strict_json(text: str):
    """Parse as RFC 8259 JSON: NaN and Infinity are not JSON, and jq or JSON.parse reject them."""

    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_spans_json_is_valid_json_when_a_library_sent_nan(tmp_path):
    # ai@4 sends NaN token counts as doubles on a stream without usage (vercel_ai_v4_node):
    # JSON has no NaN, so the attribute reads null, and the normalized tokens are null too.
    db = tmp_path / "nan.db"
    fill_db(db, read_records(FIXTURES / "vercel_ai_v4_node.otlp"))
    (trace,) = run_json("traces", "--db", str(db))
    result = run("spans", "--db", str(db), "--trace", trace["trace_id"], "--json")
    assert result.exit_code == 0, result.output
    spans = _strict_json(result.stdout)
    nan_sent = [s for s in spans if "ai.usage.promptTokens" in s["attributes"]
                and s["attributes"]["ai.usage.promptTokens"] is None]  # fmt: skip
    assert nan_sent, "the capture's NaN token counts should read null"
    assert all(s["input_tokens"] is None for s in nan_sent)
    # the other values of the same spans are untouched
    assert all(isinstance(s["attributes"]["ai.model.id"], str) for s in nan_sent)


def test_span_attributes_copied_with_Y_are_valid_json(tmp_path):
    from tracetui.query.export import span_attributes_json
    from tracetui.store.reader import SqliteReader

    db = tmp_path / "nan.db"
    attributes = {"x": float("nan"), "y": float("inf"), "z": 1.5}
    fill_db(db, [make_request([make_span(tid(1), sid(1), attributes=attributes)])])
    reader = SqliteReader(db)
    try:
        copied = _strict_json(span_attributes_json(reader, tid(1), sid(1)))
    finally:
        reader.close()
    assert copied == {"x": None, "y": None, "z": 1.5}

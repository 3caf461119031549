"""A regression cohort: the failing calls exported as JSON lines, read back and checked.

Data: the handmade agent capture (tests/fixtures/README.md): two ``ticket-resolution agent``
runs, groundedness 0.92 on one and 0.18 on the other (sent both as span events and as log
records), each with a retrieval span before its answer.
"""

from __future__ import annotations

import json
import os
import stat

import pytest
from click.testing import CliRunner
from helpers import FIXTURES, fill_db, read_records

from tracetui.cli.main import main
from tracetui.query.cohort import OPENAI_ITEM_SCHEMA

# --- the OpenAI Evals API's JSONL data source, written from its documentation --------------------
# platform.openai.com/docs/api-reference/evals: a "jsonl" run data source whose file_content is a
# list of {"item": object, "sample": object (optional)}; a file holds one such object per line.
# "item" must match the eval's data_source_config.item_schema (a JSON Schema).

_TYPES = {"object": dict, "array": list, "string": str, "number": (int, float), "null": type(None), "boolean": bool}


def _validate(value, schema: dict, path: str = "$") -> None:
    """The subset of JSON Schema OPENAI_ITEM_SCHEMA uses: type, properties, required, items, additionalProperties."""
    kinds = schema.get("type")
    if kinds is not None:
        allowed = tuple(_TYPES[k] for k in ([kinds] if isinstance(kinds, str) else kinds))
        assert isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed), (
            f"{path}: {value!r} is not {kinds}"
        )
    if isinstance(value, dict):
        for key in schema.get("required", []):
            assert key in value, f"{path}: {key} is required"
        for key, item in value.items():
            if key in schema.get("properties", {}):
                _validate(item, schema["properties"][key], f"{path}.{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                _validate(item, schema["additionalProperties"], f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _validate(item, schema["items"], f"{path}[{i}]")


def validate_openai_line(line: dict) -> None:
    assert set(line) <= {"item", "sample"} and "item" in line, f"a line holds item and sample only: {sorted(line)}"
    assert isinstance(line["item"], dict)
    if "sample" in line:
        assert isinstance(line["sample"], dict)
    _validate(line["item"], OPENAI_ITEM_SCHEMA)


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("cohort") / "agent.db"
    fill_db(
        path,
        read_records(FIXTURES / "handmade_agent.otlp"),
        read_records(FIXTURES / "handmade_agent.logs.otlp"),
    )
    return path


def _export(db, tmp_path, *args) -> tuple[list[dict], str]:
    out = tmp_path / "cohort.jsonl"
    result = CliRunner().invoke(
        main, ["cohort", "--db", str(db), "-o", str(out), *args], env={"TRACETUI_DB": None}, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()], result.output


def test_the_failing_call_round_trips_with_everything_a_regression_set_needs(db, tmp_path):
    records, said = _export(db, tmp_path, "--filter", "groundedness<0.5")
    assert "wrote 1 call (tracetui)" in said
    [r] = records
    assert r["run"] == "ticket-resolution agent" and r["model"] == "gpt-4o"
    grounded = [e for e in r["evaluations"] if e["name"] == "groundedness"]
    assert [e["score"] for e in grounded] == [0.18]
    assert r["system"].startswith("You are ACME's billing support agent")
    assert r["input"][0]["role"] == "user" and "enterprise plan includes SSO" in r["input"][0]["content"]
    assert r["output"].startswith("Yes, SSO is included")
    assert r["context"] == ["KB-422", "KB-318", "KB-101"]  # the run's retrieval, before the call
    assert r["parameters"]["max_tokens"] == 512
    assert len(r["trace_id"]) == 32 and len(r["span_id"]) == 16
    # the ids name the call: the same span read through the CLI's own spans command
    spans = CliRunner().invoke(
        main, ["spans", "--db", str(db), "--trace", r["trace_id"], "--json"], env={"TRACETUI_DB": None}
    )
    named = [s for s in json.loads(spans.output) if s["span_id"] == r["span_id"]]
    assert named and named[0]["name"] == r["name"]


def test_the_other_run_is_not_in_the_cohort_and_a_wider_filter_takes_both(db, tmp_path):
    records, _ = _export(db, tmp_path, "--filter", "groundedness>0.5")
    assert [[e["score"] for e in r["evaluations"] if e["name"] == "groundedness"] for r in records] == [[0.92]]
    both, _ = _export(db, tmp_path, "--filter", "model=gpt-4o")
    assert len(both) == 2 and {r["trace_id"] for r in both} != {records[0]["trace_id"]}


def test_openai_evals_shape_validates_against_the_documented_format(db, tmp_path):
    lines, said = _export(db, tmp_path, "--filter", "model=gpt-4o", "--format", "openai-evals")
    assert "wrote 2 calls (openai-evals)" in said
    for line in lines:
        validate_openai_line(line)
    failing = next(line for line in lines if line["item"]["evaluations"].get("groundedness") == 0.18)
    assert failing["item"]["input"][0]["role"] == "system"
    assert failing["sample"]["output_text"].startswith("Yes, SSO is included")
    with pytest.raises(AssertionError):
        validate_openai_line({"item": {"input": "not a list", "trace_id": "x", "span_id": "y"}})
    with pytest.raises(AssertionError):
        validate_openai_line({"input": []})


def test_the_file_is_owner_only_even_when_it_existed(db, tmp_path):
    out = tmp_path / "cohort.jsonl"
    out.write_text("old\n")
    os.chmod(out, 0o644)
    _export(db, tmp_path, "--filter", "model=gpt-4o")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "old" not in out.read_text()


def test_a_bad_filter_is_named_and_nothing_is_written(db, tmp_path):
    out = tmp_path / "never.jsonl"
    result = CliRunner().invoke(
        main, ["cohort", "--db", str(db), "--filter", "ttft>3", "-o", str(out)], env={"TRACETUI_DB": None}
    )
    assert result.exit_code == 2 and "'--filter'" in result.output
    assert not out.exists()

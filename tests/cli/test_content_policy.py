"""A database received under ``--no-content`` / ``--redact`` lets no message text out, however it is exported.

Each database is made by the real receiver (``serve --headless``, which starts the
indexer) from every captured fixture, traces and their log records. The texts that must
not leave it are read from the stored raw spans themselves (the app's own data, kept
as sent): three-word phrases of every prompt and completion, or a word of a prompt
given to ``--redact``. Then every copy is taken the way a user takes it: ``tracetui
export`` (OTLP JSON and summary), ``spans --json``, ``cohort -o``, ``search --json``,
the functions behind the UI's clipboard and its ``X`` / compare ``x`` exports, and the
``spans_json`` view and index sqlite-utils users read.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import channel_to, read_records, start_receiver, trace_fixture_files

from tracetui.cli.main import main
from tracetui.llm.chat import extract_messages
from tracetui.model.config import CONTENT_OMITTED, REDACTED
from tracetui.query.cohort import write_cohort
from tracetui.query.export import span_attributes_json, trace_summary
from tracetui.store.reader import SqliteReader

WORD = re.compile(r"[A-Za-z0-9]+")


def _receive_fixtures(tmp: Path, *options: str) -> Path:
    db = tmp / "t.db"
    receiver = start_receiver(db, *options, cwd=tmp)
    try:
        channel = channel_to(receiver.port)
        calls = {
            kind: channel.unary_unary(f"/opentelemetry.proto.collector.{kind}.v1.{service}/Export",
                                      request_serializer=None, response_deserializer=None)
            for kind, service in (("trace", "TraceService"), ("logs", "LogsService"))
        }  # fmt: skip
        for path in trace_fixture_files():
            for record in read_records(path):
                calls["trace"](record, timeout=10)
            logs = path.with_name(path.name.replace(".otlp", ".logs.otlp"))
            if logs.exists():
                for record in read_records(logs):
                    calls["logs"](record, timeout=10)
        channel.close()
        _wait_indexed(db)
    finally:
        assert receiver.stop(signal.SIGTERM) == 0
    return db


def _wait_indexed(db: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = sqlite3.connect(db)
        try:
            done = conn.execute(
                "SELECT (SELECT value FROM meta WHERE key = 'index_cursor') >= (SELECT max(id) FROM spans) "
                "AND (SELECT value FROM meta WHERE key = 'index_log_cursor') >= (SELECT max(id) FROM logs)"
            ).fetchone()[0]
        finally:
            conn.close()
        if done:
            return
        time.sleep(0.1)
    raise AssertionError("the indexer did not catch up")


def _messages(db: Path) -> list[str]:
    """Every message text the app sent, read from the raw spans and log records the database keeps."""
    reader = SqliteReader(db)
    texts: list[str] = []
    try:
        for (trace_id,) in reader._all("SELECT trace_id FROM traces ORDER BY id"):
            for detail in reader.span_details(trace_id):
                for message in extract_messages(detail.attributes, detail.logs):
                    texts.append(message.content)
                    texts += [call.arguments or "" for call in message.tool_calls]
    finally:
        reader.close()
    return [text for text in texts if len(WORD.findall(text)) >= 3]


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    return []


def _run(*args: str) -> str:
    """A tracetui command, in this process (the real command line; a process each would take minutes here)."""
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def _every_copy(db: Path, tmp: Path) -> dict[str, str]:
    """Each way a user copies the data out, by name: its text (JSON decoded into its strings)."""
    reader = SqliteReader(db)
    try:
        trace_ids = [row[0] for row in reader._all("SELECT trace_id FROM traces ORDER BY id")]
        spans = reader._all("SELECT trace_id, span_id FROM spans ORDER BY id")
        copies: dict[str, str] = {}
        for trace_id in trace_ids:
            otlp = _run("export", "--db", str(db), trace_id.hex(), "--format", "otlp-json")
            lines = (
                [json.loads(line) for line in otlp.splitlines() if line.strip()]
                if "\n{" in otlp
                else [json.loads(otlp)]
            )
            copies[f"export otlp-json {trace_id.hex()}"] = "\n".join(_strings(lines))
            copies[f"export summary {trace_id.hex()}"] = _run(
                "export", "--db", str(db), trace_id.hex(), "--max-chars", "100000"
            )
            copies[f"spans --json {trace_id.hex()}"] = "\n".join(
                _strings(json.loads(_run("spans", "--db", str(db), "--trace", trace_id.hex(), "--json")))
            )
            copies[f"clipboard summary {trace_id.hex()}"] = trace_summary(
                reader, trace_id, max_chars=100000
            )  # y in the UI
        copies["clipboard attributes"] = "\n".join(
            "\n".join(_strings(json.loads(span_attributes_json(reader, trace_id, span_id))))
            for trace_id, span_id in spans
        )
        for shape in ("tracetui", "openai-evals"):
            out = tmp / f"cohort-{shape}.jsonl"
            _run("cohort", "--db", str(db), "--filter", "kind=llm", "-o", str(out), "--format", shape)
            copies[f"cohort -o {shape}"] = "\n".join(_strings([json.loads(x) for x in out.read_text().splitlines()]))
        ui = tmp / "ui-cohort.jsonl"
        from tracetui.model.filter import parse

        assert write_cohort(reader, str(ui), parse("kind=llm")) > 0  # the list's X, compare's x
        copies["UI cohort"] = "\n".join(_strings([json.loads(x) for x in ui.read_text().splitlines()]))
        copies["search --json"] = "\n".join(
            _strings(json.loads(_run("search", "--db", str(db), "a* OR e* OR i* OR o*", "--json", "--limit", "10000")))
        )
        conn = sqlite3.connect(db)
        copies["span_text / spans_json"] = "\n".join(
            f"{content}\n{attributes}"
            for content, attributes in conn.execute("SELECT content, attributes FROM span_text")
        )
        conn.close()
    finally:
        reader.close()
    return copies  # fmt: skip


def _words(text: str) -> str:
    return " " + " ".join(WORD.findall(text)).lower() + " "


@pytest.fixture(scope="module")
def no_content(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("nocontent")
    return _receive_fixtures(tmp, "--no-content"), tmp


def test_no_content_keeps_every_message_out_of_every_copy(no_content: tuple[Path, Path]) -> None:
    db, tmp = no_content
    messages = _messages(db)
    assert len(messages) >= 20  # the raw spans keep what the app sent
    phrases = {" " + " ".join(WORD.findall(text)[i : i + 4]).lower() + " "
               for text in messages for i in range(0, max(1, len(WORD.findall(text)) - 3), 3)}  # fmt: skip
    phrases = {p for p in phrases if len(p.split()) == 4}
    copies = _every_copy(db, tmp)
    assert len(copies) > 10
    leaks = {name: [p.strip() for p in phrases if p in _words(text)][:3] for name, text in copies.items()}
    assert not {name: found for name, found in leaks.items() if found}
    # what stays: ids, names, models and figures; the summary says why its messages are missing
    assert any(CONTENT_OMITTED in text for name, text in copies.items() if name.startswith("export summary"))
    assert any("gpt-4o" in text for name, text in copies.items() if name.startswith("spans --json"))


def test_a_later_serve_without_flags_keeps_the_recorded_policy(no_content: tuple[Path, Path]) -> None:
    db, tmp = no_content
    receiver = start_receiver(db, cwd=tmp)
    try:
        assert any("message content is not copied" in line for line in receiver.lines), receiver.lines
    finally:
        assert receiver.stop(signal.SIGTERM) == 0
    conn = sqlite3.connect(db)
    try:
        policy = json.loads(conn.execute("SELECT value FROM meta WHERE key = 'content_policy'").fetchone()[0])
    finally:
        conn.close()
    assert policy["keep_content"] is False


def test_redaction_reaches_every_copy(tmp_path_factory) -> None:
    tmp = tmp_path_factory.mktemp("redact")
    (tmp / "probe").mkdir()
    (tmp / "redacted").mkdir()
    probe = _receive_fixtures(tmp / "probe")
    # a word of the prompts that is no attribute key, event or scope name (those are not redacted)
    reader = SqliteReader(probe)
    structure: set[str] = set()
    try:
        for (trace_id,) in reader._all("SELECT trace_id FROM traces"):
            for detail in reader.span_details(trace_id):
                for keys in (detail.attributes, detail.resource, *(e["attributes"] for e in detail.events),
                             *(log["attributes"] for log in detail.logs)):  # fmt: skip
                    structure.update(w.lower() for key in keys for w in WORD.findall(key))
                structure.update(
                    w.lower()
                    for w in WORD.findall(json.dumps([detail.scope, [log.get("event_name") for log in detail.logs]]))
                )
    finally:
        reader.close()
    counts: dict[str, int] = {}
    for text in _messages(probe):
        for word in WORD.findall(text):
            if len(word) >= 6 and word.lower() not in structure and not word.isdigit():
                counts[word.lower()] = counts.get(word.lower(), 0) + 1
    word = max(counts, key=lambda w: (counts[w], w))
    db = _receive_fixtures(tmp / "redacted", "--redact", rf"(?i)\b{word}\b")
    copies = _every_copy(db, tmp)
    for name, text in copies.items():
        assert f" {word} " not in _words(text), name
    assert any(REDACTED in text for text in copies.values())
    # the stored spans keep what the app sent
    assert any(word in text.lower() for text in _messages(db))

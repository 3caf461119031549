"""Log records that arrive after their span was indexed are indexed too, live and after a restart.

The official OTel OpenAI instrumentation and OpenLIT send message content as log
records (``gen_ai.client.inference.operation.details``), exported on their own schedule:
often after the span. The captures were made with content on the span *and* in the
event; here the spans are sent without their content attributes, as the official
instrumentation sends them with ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=
EVENT_ONLY``. They go through the real receiver first, the indexer indexes them, and
only then their log records arrive. The phrases searched for are read from the
fixtures' log records.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import time
from pathlib import Path

from click.testing import CliRunner
from helpers import channel_to, read_records, start_receiver
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tracetui.cli.main import main
from tracetui.llm.chat import extract_messages
from tracetui.llm.content import is_content_key
from tracetui.model.anyvalue import any_value_to_python, attributes_to_dict

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
WORD = re.compile(r"[A-Za-z0-9]+")


def _event_only(record: bytes) -> bytes:
    """A captured trace export without the message content on its spans (content in log events only)."""
    request = ExportTraceServiceRequest.FromString(record)
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                kept = [kv for kv in span.attributes if not is_content_key(kv.key)]
                del span.attributes[:]
                span.attributes.extend(kept)
    return request.SerializeToString()


def _send(port: int, kind: str, path: Path) -> None:
    service = "TraceService" if kind == "trace" else "LogsService"
    channel = channel_to(port)
    export = channel.unary_unary(f"/opentelemetry.proto.collector.{kind}.v1.{service}/Export",
                                 request_serializer=None, response_deserializer=None)  # fmt: skip
    for record in read_records(path):
        export(_event_only(record) if kind == "trace" else record, timeout=10)
    channel.close()


def _caught_up(db: Path, timeout: float = 60.0) -> None:
    """Wait until the indexer looked at every span and every log record stored."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = sqlite3.connect(db)
        try:
            done = conn.execute(
                "SELECT ifnull((SELECT value FROM meta WHERE key = 'index_cursor') >= (SELECT max(id) FROM spans), 0) "
                "AND ifnull((SELECT value FROM meta WHERE key = 'index_log_cursor') >= "
                "(SELECT ifnull(max(id), 0) FROM logs), 0)"
            ).fetchone()[0]
        finally:
            conn.close()
        if done:
            return
        time.sleep(0.1)
    raise AssertionError("the indexer did not catch up")


def _log_phrases(name: str) -> dict[str, list[str]]:
    """span id (hex) -> a four-word phrase of each message in its log records."""
    out: dict[str, list[str]] = {}
    for record in read_records(FIXTURES / f"{name}.logs.otlp"):
        for resource_logs in ExportLogsServiceRequest.FromString(record).resource_logs:
            for scope_logs in resource_logs.scope_logs:
                for log in scope_logs.log_records:
                    entry = {"event_name": log.event_name or None, "attributes": attributes_to_dict(log.attributes),
                             "body": any_value_to_python(log.body)}  # fmt: skip
                    for message in extract_messages({}, [entry]):
                        words = WORD.findall(message.content)
                        if len(words) >= 4:
                            out.setdefault(log.span_id.hex(), []).append(" ".join(words[-4:]))
    return out


def _found(db: Path, phrase: str) -> set[str]:
    result = CliRunner().invoke(main, ["search", "--db", str(db), f'"{phrase}"', "--json", "--limit", "10000"])
    assert result.exit_code == 0, result.output
    return {row["span_id"] for row in json.loads(result.stdout)}


def _not_on_spans(db: Path, phrases: dict[str, list[str]]) -> dict[str, str]:
    """span id -> a phrase a search does not find on it yet (text the span itself also carries is left out)."""
    out: dict[str, str] = {}
    for span, candidates in phrases.items():
        missing = [phrase for phrase in candidates if span not in _found(db, phrase)]
        if missing:
            out[span] = missing[0]
    return out


def test_late_log_records_are_indexed_live_and_after_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    receiver = start_receiver(db, cwd=tmp_path)
    try:
        for name in ("otel_v2_current", "openlit_openai"):
            _send(receiver.port, "trace", FIXTURES / f"{name}.otlp")
        _caught_up(db)
        live = _not_on_spans(db, _log_phrases("otel_v2_current"))
        later = _not_on_spans(db, _log_phrases("openlit_openai"))
        assert len(live) >= 3 and len(later) >= 2  # content sent only as log records: not found yet
        _send(receiver.port, "logs", FIXTURES / "otel_v2_current.logs.otlp")  # while the indexer runs
        _caught_up(db)
        for span, phrase in live.items():
            assert span in _found(db, phrase), phrase
    finally:
        assert receiver.stop(signal.SIGTERM) == 0

    receiver = start_receiver(db, "--no-index", cwd=tmp_path)  # the logs arrive while no indexer runs
    try:
        _send(receiver.port, "logs", FIXTURES / "openlit_openai.logs.otlp")
    finally:
        assert receiver.stop(signal.SIGTERM) == 0
    assert all(span not in _found(db, phrase) for span, phrase in later.items())

    receiver = start_receiver(db, cwd=tmp_path)  # the indexer resumes from its log cursor
    try:
        _caught_up(db)
        for span, phrase in later.items():
            assert span in _found(db, phrase), phrase
    finally:
        assert receiver.stop(signal.SIGTERM) == 0

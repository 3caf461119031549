"""`tracetui import` and `tracetui export`: files in, one trace out, and back again exactly."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from google.protobuf import json_format
from helpers import (
    FIXTURES,
    channel_to,
    comparable,
    expected_span_keys,
    expected_traces,
    exporter_stub,
    fill_db,
    integrity,
    iter_spans,
    make_request,
    make_span,
    plain_attributes,
    read_records,
    requests_of,
    sid,
    stored_counts,
    stored_span_keys,
    tid,
    trace_fixture_files,
)
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tracetui.cli.main import main
from tracetui.model.fmt import fmt_duration
from tracetui.otlp.otlp_json import message_to_dict
from tracetui.query.export import ExportError, span_attributes_json, trace_summary
from tracetui.store.blobs import Blobs
from tracetui.store.reader import SqliteReader

AGENT = FIXTURES / "handmade_agent.otlp"


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], env={"TRACETUI_DB": None}, catch_exceptions=False)


def ok(*args: str):
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def all_fixture_files() -> list[Path]:
    return sorted(p for p in FIXTURES.glob("*.otlp") if not p.name.endswith(".metrics.otlp"))


def stored(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def log_record_count(paths) -> int:
    total = 0
    for path in paths:
        for record in read_records(path):
            request = ExportLogsServiceRequest.FromString(record)
            total += sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
    return total


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    """Every fixture (traces and logs) imported with `tracetui import`."""
    db = tmp_path_factory.mktemp("imported") / "a.db"
    ok("import", "--db", db, *all_fixture_files())
    return db


# --- import -------------------------------------------------------------------------------------


def test_import_of_every_fixture_stores_every_span_and_log_record(tmp_path):
    db = tmp_path / "i.db"
    result = ok("import", "--db", db, *all_fixture_files())
    requests = [r for p in trace_fixture_files() for r in requests_of(p)]
    keys = expected_span_keys(requests)
    assert stored_span_keys(db) == keys
    assert stored_counts(db) == (len(keys), len(expected_traces(requests)))
    raw = {(t, s): r for t, s, r in stored(db, "SELECT trace_id, span_id, raw FROM spans")}
    conn = sqlite3.connect(db)
    expand = Blobs(conn).expand  # long strings are stored once (tracetui.store.blobs)
    for _service, span in iter_spans(requests):
        assert expand(raw[(span.trace_id, span.span_id)]) == span.SerializeToString()
    conn.close()
    n_logs = log_record_count(FIXTURES.glob("*.logs.otlp"))
    assert stored(db, "SELECT count(*) FROM logs") == [(n_logs,)]
    assert (
        f"imported {len(keys):,} new spans in {len(expected_traces(requests))} traces and {n_logs} log records"
        in result.stderr
    )
    assert integrity(db) == "ok"


def test_importing_twice_duplicates_nothing(tmp_path):
    db = tmp_path / "twice.db"
    ok("import", "--db", db, AGENT)
    first = stored_counts(db)
    again = ok("import", "--db", db, AGENT)
    assert stored_counts(db) == first
    assert f"nothing new: the {first[0]} spans in 2 traces from 1 file were all already in {db}" in again.stderr
    # with its log records: whether those were new is not counted, so the line does not say "nothing new"
    logs = ok("import", "--db", db, AGENT, FIXTURES / "handmade_agent.logs.otlp")
    n_logs = log_record_count([FIXTURES / "handmade_agent.logs.otlp"])
    assert (f"no new spans: the {first[0]} spans in 2 traces from 2 files were all already in {db}; "
            f"{n_logs} log records read (one already stored is not stored twice)") in logs.stderr  # fmt: skip


def test_a_partly_new_import_does_not_put_old_traces_beside_the_new_spans(tmp_path):
    """Importing every capture into a database holding one of them said "imported 40 new spans in 44
    traces": the traces of every span read, beside the count of the new ones only."""
    db = tmp_path / "partly.db"
    ok("import", "--db", db, AGENT)
    before = stored_counts(db)
    result = ok("import", "--db", db, *trace_fixture_files())
    after = stored_counts(db)
    new, old = after[0] - before[0], before[0]
    read_traces = after[1]
    assert f"imported {new:,} new spans from" in result.stderr
    assert f"({old:,} of the {after[0]:,} spans read, in {read_traces} traces, were already there)" in result.stderr


def test_json_lines_as_the_collector_file_exporter_writes_them(tmp_path):
    lines = [json.dumps(message_to_dict(r)) for r in requests_of(AGENT)]
    logs = [json.dumps(message_to_dict(ExportLogsServiceRequest.FromString(r)))
            for r in read_records(FIXTURES / "handmade_agent.logs.otlp")]  # fmt: skip
    metrics = json.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "tokens", "sum": {}}]}]}]})
    path = tmp_path / "collector.jsonl"
    path.write_text("\n".join([lines[0], "", metrics, *logs, *lines[1:]]) + "\n")
    db = tmp_path / "c.db"
    result = ok("import", "--db", db, path)
    assert stored_span_keys(db) == expected_span_keys(requests_of(AGENT))
    assert stored(db, "SELECT count(*) FROM logs") == [(log_record_count([FIXTURES / "handmade_agent.logs.otlp"]),)]
    assert "skipped 1 metrics request" in result.stderr


def test_a_single_pretty_printed_json_request(tmp_path):
    request = make_request([make_span(tid(1), sid(1), name="one"), make_span(tid(1), sid(2), sid(1), name="two")])
    path = tmp_path / "one.json"
    path.write_text(json.dumps(message_to_dict(request), indent=2))
    db = tmp_path / "p.db"
    ok("import", "--db", db, path)
    assert stored_span_keys(db) == {(tid(1), sid(1)), (tid(1), sid(2))}


def test_handwritten_json_with_invalid_span_ids_warns_and_keeps_the_rest(tmp_path):
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": tid(5).hex().upper(), "spanId": sid(1).hex(), "name": "good",
         "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000500000000"},
        {"traceId": "00" * 16, "spanId": sid(2).hex(), "name": "zero trace id"},
    ]}]}]}  # fmt: skip
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(body))
    db = tmp_path / "w.db"
    result = ok("import", "--db", db, path)
    assert stored_span_keys(db) == {(tid(5), sid(1))}
    assert stored(db, "SELECT start_ns, end_ns FROM spans") == [(1700000000000000000, 1700000000500000000)]
    assert "warning" in result.stderr and str(path) in result.stderr and "trace_id" in result.stderr
    assert "rejected 1 invalid item" in result.stderr


def write_bad_files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(message_to_dict(make_request([make_span(tid(7), sid(1))]))))
    span = {"traceId": tid(8).hex(), "spanId": sid(1).hex(), "name": "x"}
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text(
        "\n".join(
            json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [s]}]}]})
            for s in (span, dict(span, spanId=sid(2).hex()), dict(span, traceId="nothex"))
        )
        + "\n"
    )
    truncated = tmp_path / "cut.otlp"
    truncated.write_bytes(AGENT.read_bytes()[:-100])
    pretty = tmp_path / "broken.json"
    pretty.write_text('{\n  "resourceSpans": [\n    {"scopeSpans": [}\n  ]\n}\n')
    garbage = tmp_path / "garbage.otlp"
    garbage.write_bytes(b"\x00\x00\x00\x04\xff\xff\xff\xff")
    return {"good": good, "jsonl": jsonl, "truncated": truncated, "pretty": pretty, "garbage": garbage}


def test_bad_files_are_named_with_their_line_and_nothing_is_written(tmp_path):
    db = tmp_path / "bad.db"
    fill_db(db, [make_request([make_span(tid(99), sid(1))]).SerializeToString()])
    before = stored_counts(db)
    files = write_bad_files(tmp_path)
    result = run("import", "--db", db, *files.values())
    assert result.exit_code == 1
    err = result.stderr
    assert "nothing imported" in err
    assert f"{files['jsonl']}:3: resourceSpans[0].scopeSpans[0].spans[0].traceId: not hex" in err
    assert f"{files['pretty']}: invalid JSON at line 3 column" in err
    assert str(files["truncated"]) in err and "record at byte" in err
    assert f"{files['garbage']}: record 1: not a valid ExportTraceServiceRequest" in err
    assert str(files["good"]) not in err
    assert "Traceback" not in err
    assert stored_counts(db) == before  # not even the good file, nor the good lines before line 3
    assert stored_span_keys(db) == {(tid(99), sid(1))}


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"", "the file is empty"), (b"[1, 2]", "expected an OTLP JSON object"),
     (b'{"hello": "world"}', "not an OTLP request")],
    ids=["empty", "array", "not-otlp"],
)  # fmt: skip
def test_other_unusable_files(tmp_path, content, expected):
    path = tmp_path / "f.json"
    path.write_bytes(content)
    result = run("import", "--db", tmp_path / "u.db", path)
    assert result.exit_code == 1
    assert f"{path}" in result.stderr and expected in result.stderr
    assert not (tmp_path / "u.db").exists()


def test_missing_file_is_a_usage_error(tmp_path):
    result = run("import", "--db", tmp_path / "m.db", tmp_path / "nope.json")
    assert result.exit_code != 0
    assert "nope.json" in result.stderr


def test_import_beside_a_running_receiver(start_rcv):
    rcv = start_rcv()
    with channel_to(rcv.port) as channel:
        exporter_stub(channel)(make_request([make_span(tid(1), sid(1))]).SerializeToString(), timeout=20)
        ok("import", "--db", rcv.db_path, AGENT)
        exporter_stub(channel)(make_request([make_span(tid(2), sid(1))]).SerializeToString(), timeout=20)
    assert rcv.alive()
    expected = expected_span_keys(requests_of(AGENT)) | {(tid(1), sid(1)), (tid(2), sid(1))}
    assert stored_span_keys(rcv.db_path) == expected
    assert stored_counts(rcv.db_path)[1] == len(expected_traces(requests_of(AGENT))) + 2
    reader = SqliteReader(rcv.db_path)
    try:
        counters = reader.counters()
        assert (counters.span_count, counters.trace_count) == stored_counts(rcv.db_path)
    finally:
        reader.close()


# --- export: OTLP JSON, and back ---------------------------------------------------------------------


def test_export_then_import_round_trips_every_fixture_exactly(imported, tmp_path):
    trace_ids = [row[0] for row in stored(imported, "SELECT trace_id FROM traces ORDER BY id")]
    assert len(trace_ids) > 10
    files = []
    for n, trace_id in enumerate(trace_ids):
        out = tmp_path / f"t{n}.json"
        ok("export", "--db", imported, trace_id.hex(), "--format", "otlp-json", "-o", out)
        files.append(out)
    again = tmp_path / "again.db"
    ok("import", "--db", again, *files)

    spans_sql = ("SELECT s.trace_id, s.span_id, s.raw, src.resource, src.scope, src.service FROM spans s "
                 "JOIN sources src ON src.id = s.source_id ORDER BY s.trace_id, s.span_id")  # fmt: skip
    assert stored(again, spans_sql) == stored(imported, spans_sql)
    traces_sql = ("SELECT trace_id, root_name, service, start_ns, end_ns, span_count, error_count, llm_calls, "
                  "input_tokens, output_tokens FROM traces ORDER BY trace_id")  # fmt: skip
    assert stored(again, traces_sql) == stored(imported, traces_sql)
    # the log records of each trace (evaluation results, message content) come along, byte for byte
    logs_sql = ("SELECT l.trace_id, l.span_id, l.raw, src.resource, l.event_name FROM logs l "
                "JOIN sources src ON src.id = l.source_id WHERE l.trace_id IS NOT NULL ORDER BY l.digest")  # fmt: skip
    assert len(stored(imported, logs_sql)) > 5
    assert stored(again, logs_sql) == stored(imported, logs_sql)
    evaluations_sql = "SELECT trace_id, span_id, name, score, label FROM evaluations ORDER BY 1, 2, 3, 4"
    assert stored(again, evaluations_sql) == stored(imported, evaluations_sql)

    # and against the captures themselves: same ids, times, attributes, events, status
    reader = SqliteReader(again)
    try:
        for _service, span in iter_spans(r for p in trace_fixture_files() for r in requests_of(p)):
            detail = reader.span_detail(span.trace_id, span.span_id)
            assert detail is not None
            assert (detail.row["start_ns"], detail.row["end_ns"]) == (
                span.start_time_unix_nano,
                span.end_time_unix_nano,
            )
            assert comparable(detail.attributes) == comparable(plain_attributes(span.attributes))
            assert comparable([e["attributes"] for e in detail.events]) == comparable(
                [plain_attributes(e.attributes) for e in span.events]
            )
            assert detail.row["status_message"] == span.status.message
    finally:
        reader.close()


def test_exported_json_is_plain_otlp_json(imported, tmp_path):
    request = requests_of(AGENT)[0]
    _service, first = next(iter_spans([request]))
    result = ok("export", "--db", imported, first.trace_id.hex()[:12], "--format", "otlp-json")
    # this run has log records (evaluation results): JSON Lines, the spans request then the logs request
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 2
    data, logs = json.loads(lines[0]), json.loads(lines[1])
    assert set(data) == {"resourceSpans"} and set(logs) == {"resourceLogs"}
    records = [r for rl in logs["resourceLogs"] for sl in rl["scopeLogs"] for r in sl["logRecords"]]
    assert records and all(r["traceId"] == first.trace_id.hex() for r in records)
    spans = [s for rs in data["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    expected = {s.span_id.hex(): s for _, s in iter_spans(requests_of(AGENT)) if s.trace_id == first.trace_id}
    assert {s["spanId"] for s in spans} == set(expected)
    for span in spans:
        original = expected[span["spanId"]]
        assert span["traceId"] == first.trace_id.hex()
        assert span["startTimeUnixNano"] == str(original.start_time_unix_nano)
        assert span.get("kind", 0) == original.kind
        assert span.get("parentSpanId", "") == original.parent_span_id.hex()
    service = [a for a in data["resourceSpans"][0]["resource"]["attributes"] if a["key"] == "service.name"]
    assert service and service[0]["value"]["stringValue"] == "harness-handmade-agent"
    # a stock OTLP JSON consumer reads it: the protobuf JSON parser, ids rewritten from hex to base64
    for rs in data["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in s:
                        s[key] = base64.b64encode(bytes.fromhex(s[key])).decode()
                for link in s.get("links", []):
                    for key in ("traceId", "spanId"):
                        link[key] = base64.b64encode(bytes.fromhex(link[key])).decode()
    parsed = json_format.ParseDict(data, ExportTraceServiceRequest())
    assert {s.span_id for rs in parsed.resource_spans for ss in rs.scope_spans for s in ss.spans} == {
        bytes.fromhex(h) for h in expected
    }


def test_a_trace_without_log_records_exports_as_one_pretty_printed_request(imported):
    with_logs = {row[0] for row in stored(imported, "SELECT DISTINCT trace_id FROM logs WHERE trace_id IS NOT NULL")}
    trace_id = next(t for (t,) in stored(imported, "SELECT trace_id FROM traces") if t not in with_logs)
    result = ok("export", "--db", imported, trace_id.hex(), "--format", "otlp-json")
    data = json.loads(result.stdout)
    assert set(data) == {"resourceSpans"} and "\n  " in result.stdout


def test_export_of_an_unknown_trace_is_a_clear_error(imported, tmp_path):
    result = run("export", "--db", imported, "ffff", "--format", "otlp-json")
    assert result.exit_code == 1
    assert "no trace matches 'ffff'" in result.stderr
    result = run("export", "--db", tmp_path / "none.db", "abcd")
    assert result.exit_code == 1 and "no database" in result.stderr


# --- export: the summary ----------------------------------------------------------------------------------


def agent_trace() -> tuple[bytes, list]:
    """The agent run whose gpt-4o call times out, with its spans, from the capture."""
    traces = expected_traces(requests_of(AGENT))
    trace = next(t for t in traces.values() if t.errors)
    return trace.trace_id, [s for _, s in trace.spans]


def test_summary_of_the_agent_run(imported):
    trace_id, spans = agent_trace()
    by_name = {s.name: s for s in spans}
    result = ok("export", "--db", imported, trace_id.hex(), "--format", "summary")
    text = result.stdout
    lines = text.splitlines()
    assert lines[0] == f"Trace {trace_id.hex()}: ticket-resolution agent"
    root = by_name["ticket-resolution agent"]
    run_ns = max(s.end_time_unix_nano for s in spans) - min(s.start_time_unix_nano for s in spans)
    assert (
        f"duration {fmt_duration(run_ns)}" in lines[1] and f"{len(spans)} spans" in lines[1] and "1 error" in lines[1]
    )
    assert "cost $0.0071" in lines[2]  # fmt_cost, as on screen (never "$0.0000")
    assert "$0.0071" in next(line for line in lines if "chat claude-sonnet-4" in line)
    assert "tokens 1,432 in / 187 out" in text  # the leaf LLM calls, not the agent span repeating them
    assert "groundedness 0.92" in text

    tree = [line for line in lines if line.startswith("  ") and "@" in line]
    assert (
        tree[0].startswith("  ticket-resolution agent")
        and fmt_duration(root.end_time_unix_nano - root.start_time_unix_nano) in tree[0]
    )
    children = sorted((s for s in spans if s.parent_span_id == root.span_id), key=lambda s: s.start_time_unix_nano)
    assert [line.split("  ")[1] for line in tree[1:]] == [
        *(f"├ {s.name}" for s in children[:-1]),
        f"└ {children[-1].name}",
    ]
    failed = by_name["chat gpt-4o"]
    failed_line = next(line for line in tree if "chat gpt-4o" in line)
    assert "[llm gpt-4o]" in failed_line and "ERROR" in failed_line
    assert fmt_duration(failed.end_time_unix_nano - failed.start_time_unix_nano) in failed_line
    fallback_line = next(line for line in tree if "chat claude-sonnet-4" in line)
    assert "ttft 820ms" in fallback_line and "tokens 1,432 in / 187 out" in fallback_line

    share = round(100 * (failed.end_time_unix_nano - failed.start_time_unix_nano) / run_ns)
    assert f"Slowest span: chat gpt-4o 30.0s ({share}% of the trace)" in text
    assert any(line.startswith("Time split: ") for line in lines)  # from the trace row's split
    assert f"- chat gpt-4o: {failed.status.message} [openai.APITimeoutError]" in text
    assert "- chat claude-sonnet-4: groundedness 0.92 (grounded): Both claims are supported" in text
    assert "prompt (user): Customer 88213 says they were charged twice" in text
    answer = json.loads(plain_attributes(by_name["chat claude-sonnet-4"].attributes)["gen_ai.output.messages"])
    answer_text = answer[0]["parts"][0]["content"]
    assert f"answer (assistant): {answer_text}" in text  # shorter than the default 500 characters


def test_summary_cuts_prompts_and_answers_to_max_chars(imported):
    trace_id, spans = agent_trace()
    by_name = {s.name: s for s in spans}
    answer = json.loads(plain_attributes(by_name["chat claude-sonnet-4"].attributes)["gen_ai.output.messages"])
    answer_text = answer[0]["parts"][0]["content"]
    text = ok("export", "--db", imported, trace_id.hex(), "--max-chars", "30").stdout
    assert answer_text not in text
    assert f"answer (assistant): {answer_text[:30]}… [+{len(answer_text) - 30:,} chars]" in text
    assert "Messages (each cut to 30 characters):" in text
    for line in text.splitlines():
        if line.startswith(("prompt", "answer")):
            head, _, body = line.partition(": ")
            assert len(body.split("… [+")[0]) <= 30, line


def test_summary_is_safe_to_print_and_shows_cost_when_the_spans_have_it(tmp_path):
    db = tmp_path / "cost.db"
    spans = [
        make_span(tid(1), sid(1), name="run \x1b[31mred\x1b[0m", duration=2_000_000_000),
        make_span(tid(1), sid(2), sid(1), name="chat gpt-4o", start=100_000_000, duration=1_500_000_000,
                  attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                              "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 20,
                              "gen_ai.usage.cost": 0.0123, "input.value": "say \x07hi\nplease"}),
    ]  # fmt: skip
    fill_db(db, [make_request(spans).SerializeToString()])
    reader = SqliteReader(db)
    try:
        text = trace_summary(reader, tid(1))
    finally:
        reader.close()
    assert "\x1b" not in text and "\x07" not in text
    assert "run \\e[31mred\\e[0m" in text
    assert "cost $0.0123" in text
    assert "Slowest span: chat gpt-4o 1.50s (75% of the trace)" in text
    assert "prompt (user): say \\x07hi\n    please" in text  # newlines kept, indented; control characters visible


def test_functions_for_the_ui(imported):
    trace_id, spans = agent_trace()
    reader = SqliteReader(imported)
    try:
        text = trace_summary(reader, trace_id, max_chars=10)
        assert text.startswith(f"Trace {trace_id.hex()}")
        for span in spans:
            assert json.loads(span_attributes_json(reader, trace_id, span.span_id)) == plain_attributes(span.attributes)
        with pytest.raises(ExportError):
            trace_summary(reader, tid(12345))
        with pytest.raises(ExportError):
            span_attributes_json(reader, trace_id, sid(12345))
    finally:
        reader.close()


def test_an_evaluation_from_a_span_event_and_a_log_record_names_both_in_either_order(tmp_path):
    spans, logs = FIXTURES / "handmade_agent.otlp", FIXTURES / "handmade_agent.logs.otlp"
    for n, order in enumerate(([spans, logs], [logs, spans])):
        db = tmp_path / f"order{n}.db"
        for path in order:  # separate imports: the second finds the first already stored
            ok("import", "--db", db, path)
        rows = stored(db, "SELECT name, score, source FROM evaluations ORDER BY name, score")
        assert [(name, score) for name, score, _ in rows] == [("groundedness", 0.18), ("groundedness", 0.92),
                                                             ("relevance", 0.74)]  # fmt: skip
        assert all(set(source.split(" + ")) == {"span event", "log record"} for _, _, source in rows), rows

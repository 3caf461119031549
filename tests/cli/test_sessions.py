"""`tracetui sessions`: runs grouped by conversation, over what the real receiver stored.

Each family's name for the conversation id is put on a real capture of that family (what its
context API adds to every span) and sent to a real receiver over gRPC; the sessions listed
must be the ones dealt out, with totals computed here from the protos.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from helpers import (
    FIXTURES,
    channel_to,
    expected_traces,
    exporter_stub,
    requests_of,
    sessions_in_turn,
    with_session_ids,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tracetui.cli.main import main

#: (capture, the attribute its family or a tool built on it uses for the conversation)
FAMILIES = [
    ("openinference_openai", "session.id"),  # OpenInference using_session
    ("traceai_openai", "gen_ai.conversation.id"),  # traceAI sets it beside session.id
    ("openllmetry_openai", "traceloop.association.properties.session_id"),  # Traceloop associations
    ("openllmetry_openai", "langfuse.session.id"),  # Langfuse's attribute, on any OTel instrumentation
    ("vercel_ai_v5_node", "ai.telemetry.metadata.sessionId"),  # experimental_telemetry.metadata.sessionId
    ("otel_v2_current", "gen_ai.conversation.id"),  # OTel GenAI conventions
]


def run_json(*args: str):
    result = CliRunner().invoke(main, [*args, "--json"], env={"TRACETUI_DB": None}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize(("capture", "key"), FAMILIES, ids=[f"{c}-{k}" for c, k in FAMILIES])
def test_each_familys_session_id_groups_the_runs_it_was_put_on(receiver, capture: str, key: str) -> None:
    requests = requests_of(FIXTURES / f"{capture}.otlp")
    traces = expected_traces(requests)
    names = ["conv-a", "conv-b"] if len(traces) > 1 else ["conv-a"]
    session_of = sessions_in_turn(traces, names)
    with channel_to(receiver.port) as channel:
        stub = exporter_stub(channel)
        for record in with_session_ids(requests, key, session_of):
            response = ExportTraceServiceResponse.FromString(stub(record, timeout=20))
            assert response.partial_success.rejected_spans == 0, response.partial_success.error_message

    sessions = run_json("sessions", "--db", str(receiver.db_path))
    assert sorted(s["session_id"] for s in sessions) == sorted(names)
    for session in sessions:
        mine = [traces[t] for t, name in session_of.items() if name == session["session_id"]]
        assert session["runs"] == len(mine)
        assert session["errors"] == sum(t.errors for t in mine)
        assert session["error_runs"] == sum(1 for t in mine if t.errors)
        assert session["duration_ms"] == pytest.approx(sum(t.end_ns - t.start_ns for t in mine) / 1e6)
        assert session["first_start_ns"] == min(t.start_ns for t in mine)
        assert session["last_start_ns"] == max(t.start_ns for t in mine)
    # most recently active first
    assert [s["last_start_ns"] for s in sessions] == sorted((s["last_start_ns"] for s in sessions), reverse=True)

    # one session's runs, oldest first: the traces dealt to it, with the list's own figures
    runs = run_json("sessions", "--db", str(receiver.db_path), "--session", "conv-a")
    mine = sorted((traces[t] for t, name in session_of.items() if name == "conv-a"), key=lambda t: t.start_ns)
    assert [r["trace_id"] for r in runs] == [t.trace_id.hex() for t in mine]
    listed = {r["trace_id"]: r for r in run_json("traces", "--db", str(receiver.db_path))}
    conv_a = next(s for s in sessions if s["session_id"] == "conv-a")
    assert conv_a["tokens"] == sum(listed[r["trace_id"]]["input_tokens"] + listed[r["trace_id"]]["output_tokens"]
                                   for r in runs)  # fmt: skip
    costs = [listed[r["trace_id"]]["cost_usd"] for r in runs if listed[r["trace_id"]]["cost_usd"] is not None]
    assert conv_a["cost_usd"] == (pytest.approx(sum(costs)) if costs else None)


def test_sessions_of_an_unknown_id_is_a_clear_error(all_fixtures_db) -> None:
    result = CliRunner().invoke(
        main, ["sessions", "--db", str(all_fixtures_db), "--session", "no-such-conversation"], env={"TRACETUI_DB": None}
    )
    assert result.exit_code == 1
    assert "no runs with session id no-such-conversation" in result.output


def test_sessions_table_shows_the_fixture_conversations(all_fixtures_db) -> None:
    result = CliRunner().invoke(main, ["sessions", "--db", str(all_fixtures_db)], env={"TRACETUI_DB": None})
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split()[:3] == ["LAST", "SESSION", "RUNS"]
    # the hand-made agent's two tickets, each its own conversation (gen_ai.conversation.id)
    assert len(rows) == 2
    assert sorted(next(word for word in row.split() if word.startswith("ticket-")) for row in rows) == [
        "ticket-4821",
        "ticket-4822",
    ]

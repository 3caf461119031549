"""Reader.sessions / session_runs: the same conversations and totals from SQLite (sums in SQL), ClickHouse
(the exporter's tables, rows built by our analysis) and the in-memory reader (tracetui.query.sessions)."""

from __future__ import annotations

import pytest
from helpers import (
    FIXTURES,
    expected_traces,
    fill_db,
    read_records,
    requests_of,
    sessions_in_turn,
    with_session_ids,
)

from tracetui.query.memory import MemoryReader

CONVERSATIONS = ["chat-1", "chat-2", "chat-3"]


def _requests() -> tuple[list[bytes], list[bytes], dict]:
    """The OpenInference capture's runs dealt to three conversations (session.id on every span), and the hand-made
    agent's two tickets (gen_ai.conversation.id, groundedness 0.92 and 0.18 per the fixtures' README)."""
    oi = requests_of(FIXTURES / "openinference_openai.otlp")
    traces = expected_traces(oi)
    session_of = sessions_in_turn(traces, CONVERSATIONS)
    records = [*with_session_ids(oi, "session.id", session_of), *read_records(FIXTURES / "handmade_agent.otlp")]
    logs = read_records(FIXTURES / "handmade_agent.logs.otlp")
    return records, logs, {"traces": traces, "session_of": session_of}


@pytest.fixture(scope="module")
def data():
    return _requests()


@pytest.fixture(scope="module", params=["sqlite", "clickhouse", "memory"])
def reader(request, data, tmp_path_factory):
    from helpers import both_backends

    records, logs, _ = data
    if request.param == "memory":
        yield MemoryReader.of(records, logs)
        return
    db = tmp_path_factory.mktemp("sessions") / "sessions.db"
    fill_db(db, records, logs)
    yield from both_backends(request, db)


def test_sessions_group_the_runs_dealt_to_each_conversation(reader, data) -> None:
    _, _, truth = data
    traces, session_of = truth["traces"], truth["session_of"]
    sessions = {s.session_id: s for s in reader.sessions()}
    assert set(sessions) == {*CONVERSATIONS, "ticket-4821", "ticket-4822"}
    for name in CONVERSATIONS:
        mine = [traces[t] for t, s in session_of.items() if s == name]
        row = sessions[name]
        assert row.runs == len(mine)
        assert row.errors == sum(t.errors for t in mine)
        assert row.duration_ns == sum(t.end_ns - t.start_ns for t in mine)
        assert (row.first_start_ns, row.last_start_ns) == (min(t.start_ns for t in mine), max(t.start_ns for t in mine))
        runs = reader.session_runs(name)
        assert [r.trace_id for r in runs] == [t.trace_id for t in sorted(mine, key=lambda t: t.start_ns)]
        assert row.tokens == sum(r.input_tokens + r.output_tokens for r in runs)
        assert row.llm_calls == sum(r.llm_calls for r in runs)
        assert row.first_name == runs[0].name
    assert sessions["ticket-4821"].groundedness == pytest.approx(0.92)
    assert sessions["ticket-4822"].groundedness == pytest.approx(0.18)
    assert sessions["chat-1"].groundedness is None
    ordered = reader.sessions()
    assert [s.last_start_ns for s in ordered] == sorted((s.last_start_ns for s in ordered), reverse=True)
    assert [s.session_id for s in reader.sessions(2)] == [s.session_id for s in ordered[:2]]


def test_every_backend_gives_the_same_sessions(reader, data) -> None:
    records, logs, _ = data
    memory = MemoryReader.of(records, logs)
    expected = [s.to_json() for s in memory.sessions()]
    got = [s.to_json() for s in reader.sessions()]
    assert [g["session_id"] for g in got] == [e["session_id"] for e in expected]
    for g, e in zip(got, expected, strict=True):
        assert g == {k: pytest.approx(v) if isinstance(v, float) else v for k, v in e.items()}


def test_an_unknown_session_has_no_runs(reader) -> None:
    assert reader.session_runs("nobody-said-this") == []

"""The in-memory Reader answers exactly as the SQLite one, over every capture: the seam is real.

Both are filled from the same fixture bytes (traces and log records), the SQLite
one through the real writer, the in-memory one through the same decode and
analysis. Whatever the UI or a command could ask is compared.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import FIXTURES, fill_db, read_records, trace_fixture_files
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tracetui.model.filter import parse
from tracetui.model.reader import GROUPINGS, PinBoard, Reader
from tracetui.query import stats
from tracetui.query.export import span_json, trace_summary
from tracetui.query.memory import MemoryReader
from tracetui.store.pins import SqlitePins
from tracetui.store.reader import SqliteReader

TRACES = [record for path in trace_fixture_files() for record in read_records(path)]
LOGS = [record for path in sorted(FIXTURES.glob("*.logs.otlp")) for record in read_records(path)]


@pytest.fixture(scope="module")
def readers(tmp_path_factory: pytest.TempPathFactory):
    db = tmp_path_factory.mktemp("memory") / "same.db"
    fill_db(db, TRACES, LOGS)
    sqlite = SqliteReader(db)
    memory = MemoryReader.of(TRACES, LOGS)
    yield sqlite, memory
    sqlite.close()


def test_both_implement_every_method_of_the_protocols(readers) -> None:
    """(mypy checks the signatures where the CLI hands a SqliteReader to the UI; this checks MemoryReader too.)"""
    for implementation, protocol in [*((reader, Reader) for reader in readers), (SqlitePins(Path("x.db")), PinBoard)]:
        names = [name for name, value in vars(protocol).items() if not name.startswith("_") and callable(value)]
        assert names
        assert [name for name in names if not callable(getattr(implementation, name, None))] == []


def test_the_trace_list_is_the_same(readers) -> None:
    sqlite, memory = readers
    listed = sqlite.traces(0, -1)
    assert len(listed) > 20  # every capture is in
    assert memory.traces(0, -1) == listed
    assert (memory.count_traces(), memory.max_seq()) == (sqlite.count_traces(), sqlite.max_seq())
    horizon = sqlite.max_seq() // 2
    assert memory.traces(3, 7, horizon) == sqlite.traces(3, 7, horizon)
    assert memory.count_newer(horizon) == sqlite.count_newer(horizon)
    counters, expected = memory.counters(), sqlite.counters()
    assert (counters.span_count, counters.trace_count, counters.llm_calls, counters.tokens) == (
        expected.span_count, expected.trace_count, expected.llm_calls, expected.tokens)  # fmt: skip
    assert counters.cost_usd == pytest.approx(expected.cost_usd)


def test_each_trace_reads_the_same(readers) -> None:
    sqlite, memory = readers
    for row in sqlite.traces(0, -1):
        trace_id = row.trace_id
        assert memory.trace(trace_id) == row
        assert memory.spans(trace_id) == sqlite.spans(trace_id), row.name
        assert _text(span_json(memory, trace_id)) == _text(span_json(sqlite, trace_id)), row.name
        # the same messages (fill_db hands the writer parsed requests, so its bytes are re-serialized)
        assert _parsed(memory.stored_spans(trace_id), Span) == _parsed(sqlite.stored_spans(trace_id), Span)
        assert _parsed(memory.stored_logs(trace_id), LogRecord) == _parsed(sqlite.stored_logs(trace_id), LogRecord)
        assert trace_summary(memory, trace_id) == trace_summary(sqlite, trace_id)
        for newer in (True, False):
            assert memory.neighbor_trace(trace_id, newer=newer) == sqlite.neighbor_trace(trace_id, newer=newer)
        prefix = trace_id.hex()[:6]
        assert memory.trace_ids_starting(prefix) == sqlite.trace_ids_starting(prefix)
        if row.session_id:
            assert memory.session_totals(row.session_id) == sqlite.session_totals(row.session_id)


def _text(*values) -> str:
    """Values compared as JSON text: a NaN attribute (the Vercel AI SDK sends some) equals itself there."""
    return json.dumps(values, sort_keys=True, default=repr)


def _parsed(stored, message) -> list:
    return [(item._replace(raw=b""), message.FromString(item.raw)) for item in stored]


def test_span_details_hold_the_same_facts(readers) -> None:
    sqlite, memory = readers
    checked = 0
    for row in sqlite.traces(0, -1):
        for span in sqlite.spans(row.trace_id):
            mine, theirs = (
                memory.span_detail(row.trace_id, span.span_id),
                sqlite.span_detail(row.trace_id, span.span_id),
            )
            assert mine is not None and theirs is not None
            assert _text(mine.attributes, mine.events, mine.links, mine.resource, mine.scope, mine.logs,
                         mine.evaluations) == _text(theirs.attributes, theirs.events, theirs.links, theirs.resource,
                                                    theirs.scope, theirs.logs, theirs.evaluations)  # fmt: skip
            # every column the SQLite row has, except its storage ids
            same = {k: v for k, v in theirs.row.items() if k not in ("id", "source_id")}
            assert {k: mine.row[k] for k in same} == same
            checked += 1
    assert checked > 100


@pytest.mark.parametrize("by", GROUPINGS)
def test_statistics_are_the_same(readers, by: str) -> None:
    sqlite, memory = readers
    assert stats.compute(memory, by) == stats.compute(sqlite, by)
    flt = parse("status=ok duration<2s")
    assert stats.compute(memory, by, flt=flt) == stats.compute(sqlite, by, flt=flt)
    assert memory.groundedness_scores() == sqlite.groundedness_scores()


def test_route_attribute_grouping_is_the_same(readers) -> None:
    sqlite, memory = readers
    for attribute in ("gen_ai.system", "llm.model_name"):
        expected = stats.compute(sqlite, "route", route_attribute=attribute)
        assert stats.compute(memory, "route", route_attribute=attribute) == expected


def test_span_filters_match_the_same_spans(readers) -> None:
    sqlite, memory = readers
    for text in ("kind=llm", "status=error", "model~gpt", "groundedness<0.7", "tokens>100"):
        flt = parse(text)
        for row in sqlite.traces(0, -1):
            assert memory.matching_span_ids(row.trace_id, flt) == sqlite.matching_span_ids(row.trace_id, flt), text


def test_the_memory_reader_says_what_it_cannot_do() -> None:
    memory = MemoryReader.of(TRACES[:3])
    with pytest.raises(NotImplementedError, match="does not filter the trace list"):
        memory.traces(0, 10, None, parse("kind=llm"))
    assert memory.histogram_points(["gen_ai.client.operation.duration"]) == []
    version = memory.data_version()
    memory.add(TRACES[3:4])
    assert memory.data_version() != version  # what the UI's watcher polls

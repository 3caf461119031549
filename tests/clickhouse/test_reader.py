"""The ClickHouse reader answers as the SQLite one, over every capture, from the exporter's tables.

The captures are written into chdb the way the OpenTelemetry Collector's ClickHouse
exporter writes them (its DDL verbatim, every attribute value flattened to a string),
and read back over HTTP by clickhouse-connect from our chdb server process. The SQLite
database is filled from the same bytes by the real writer. Whatever the UI or a command
asks is compared: the list, each trace, every span, the filters (both readings), the
statistics. The ground-truth suites (tests/llm/test_llm_fixtures.py,
tests/llm/test_timing_captures.py) also run on both backends.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from helpers import FIXTURES, clickhouse_reader, fill_db, read_records, trace_fixture_files

from tracetui.clickhouse import filter_sql
from tracetui.clickhouse.convert import format_double
from tracetui.clickhouse.reader import RESIDUAL_SCAN
from tracetui.model.filter import parse
from tracetui.model.reader import GROUPINGS, Reader
from tracetui.query import stats
from tracetui.query.export import span_json
from tracetui.store.reader import SqliteReader

TRACES = [record for path in trace_fixture_files() for record in read_records(path)]
LOGS = [record for path in sorted(FIXTURES.glob("*.logs.otlp")) for record in read_records(path)]


@pytest.fixture(scope="module")
def readers(tmp_path_factory: pytest.TempPathFactory, chdb):
    db = tmp_path_factory.mktemp("clickhouse-parity") / "same.db"
    fill_db(db, TRACES, LOGS)
    sqlite = SqliteReader(db)
    clickhouse = clickhouse_reader(chdb, TRACES, LOGS)
    yield sqlite, clickhouse
    sqlite.close()
    clickhouse.close()


def test_implements_every_method_of_the_protocol(readers) -> None:
    _, clickhouse = readers
    names = [name for name, value in vars(Reader).items() if not name.startswith("_") and callable(value)]
    assert [name for name in names if not callable(getattr(clickhouse, name, None))] == []


def _unseq(row):
    return dataclasses.replace(row, seq=0)


def test_the_trace_list_is_the_same(readers) -> None:
    """Every field of every row (tokens, cost, the time split, retries, fallbacks, slowest span, badges), in order."""
    sqlite, clickhouse = readers
    listed = sqlite.traces(0, -1)
    assert len(listed) > 20
    assert [_unseq(r) for r in clickhouse.traces(0, -1)] == [_unseq(r) for r in listed]
    assert clickhouse.count_traces() == sqlite.count_traces()
    window = clickhouse.traces(3, 7)
    assert [r.trace_id for r in window] == [r.trace_id for r in listed[3:10]]
    # The horizon is the newest root start: everything at or before it, nothing newer.
    horizon = clickhouse.max_seq()
    assert clickhouse.count_traces(horizon) == len(listed) and clickhouse.count_newer(horizon) == 0
    middle = listed[len(listed) // 2]
    older = clickhouse.traces(0, -1, middle.start_ns)
    assert older and all(r.start_ns <= middle.start_ns for r in older)
    assert clickhouse.count_newer(middle.start_ns) == len(listed) - len(older)
    counters, expected = clickhouse.counters(), sqlite.counters()
    assert (counters.span_count, counters.trace_count) == (expected.span_count, expected.trace_count)
    assert counters.db_bytes > 0


def test_neighbours_prefixes_and_sessions(readers) -> None:
    sqlite, clickhouse = readers
    listed = sqlite.traces(0, -1)
    for i in (1, len(listed) // 2):
        trace_id = listed[i].trace_id
        assert clickhouse.neighbor_trace(trace_id, newer=True) == listed[i - 1].trace_id
        assert clickhouse.neighbor_trace(trace_id, newer=False) == listed[i + 1].trace_id
    assert clickhouse.neighbor_trace(listed[0].trace_id, newer=True) is None
    prefix = listed[5].trace_id.hex()[:6]
    assert clickhouse.trace_ids_starting(prefix) == sqlite.trace_ids_starting(prefix)
    assert clickhouse.trace_ids_starting("not hex") == []
    sessions = {r.session_id for r in listed if r.session_id}
    assert sessions
    for session in sessions:
        assert clickhouse.session_totals(session) == pytest.approx(sqlite.session_totals(session))


def _as_exporter_wrote(value: Any) -> str:
    """What the exporter makes of a typed attribute value (``AsString``), to compare the two backends' JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format_double(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return str(value)


def _flattened(span: dict[str, Any]) -> dict[str, Any]:
    out = dict(span)
    for key in ("attributes", "resource"):
        if out.get(key) is not None:
            out[key] = {k: _as_exporter_wrote(v) for k, v in out[key].items()}
    out["events"] = [{**e, "attributes": {k: _as_exporter_wrote(v) for k, v in (e.get("attributes") or {}).items()}}
                     for e in out.get("events") or ()]  # fmt: skip
    return out


def _floats_close(a: Any, b: Any) -> bool:
    """JSON numbers inside attribute values: the exporter writes the shortest form, json.dumps its repr."""
    if a == b:
        return True
    try:
        return json.loads(a) == json.loads(b)
    except (TypeError, ValueError):
        return a == b


def test_each_trace_reads_the_same(readers) -> None:
    """The trace view and `spans --json`: every span's LLM fields, provenance, events, logs and evaluations."""
    sqlite, clickhouse = readers
    for row in sqlite.traces(0, -1):
        trace_id = row.trace_id
        assert _unseq(clickhouse.trace(trace_id)) == _unseq(row)
        assert sorted(clickhouse.spans(trace_id), key=lambda s: s.span_id) == sorted(
            sqlite.spans(trace_id), key=lambda s: s.span_id
        ), row.name
        # The trace view's pages and the streamed details: the same spans as the whole-trace reads.
        paged = [span for page in clickhouse.span_pages(trace_id, 2, 3) for span in page]
        assert paged == clickhouse.spans(trace_id)
        assert [d.row["span_id"] for d in clickhouse.iter_span_details(trace_id)] == [
            d.row["span_id"] for d in clickhouse.span_details(trace_id)
        ]
        got = sorted(span_json(clickhouse, trace_id), key=lambda s: s["span_id"])
        want = sorted(span_json(sqlite, trace_id), key=lambda s: s["span_id"])
        assert len(got) == len(want)
        for mine, theirs in zip(got, want, strict=True):
            mine, theirs = _flattened(mine), _flattened(theirs)
            for key in theirs:
                if key in ("attributes", "resource"):
                    assert mine[key].keys() == theirs[key].keys()
                    for k in theirs[key]:
                        assert _floats_close(mine[key][k], theirs[key][k]), (row.name, key, k, mine[key][k][:200])
                else:
                    assert mine[key] == theirs[key], (row.name, theirs["name"], key)
        assert len(clickhouse.stored_spans(trace_id)) == row.span_count
        assert len(clickhouse.stored_logs(trace_id)) == len(sqlite.stored_logs(trace_id))


def test_attribute_values_are_strings_as_the_exporter_wrote_them(readers) -> None:
    """No guessing types back: "512" stays the string the table holds, and is read as 512 tokens."""
    _, clickhouse = readers
    row = next(r for r in clickhouse.traces(0, -1) if r.input_tokens)
    call = next(s for s in span_json(clickhouse, row.trace_id) if s["input_tokens"])
    assert all(isinstance(v, str) for v in call["attributes"].values())
    assert isinstance(call["input_tokens"], int)


#: The filters tests/model/test_filter.py checks SQL and Python agree on, plus Python-only ones.
def _agreement_filters() -> list[str]:
    from model.test_filter import AGREEMENT_FILTERS  # tests/ is on sys.path (pytest rootdir conftest)

    return list(AGREEMENT_FILTERS)


def test_every_filter_lists_the_same_runs_and_marks_the_same_spans(readers) -> None:
    sqlite, clickhouse = readers
    everything = sqlite.traces(0, -1)
    checked = 0
    for text in _agreement_filters():
        flt = parse(text)
        want = [r.trace_id for r in sqlite.traces(0, -1, None, flt)]
        assert [r.trace_id for r in clickhouse.traces(0, -1, None, flt)] == want, text
        assert clickhouse.count_traces(None, flt) == len(want), text
        checked += bool(want)
    assert checked > 100
    for row in everything[:: max(1, len(everything) // 8)]:  # trace by trace: the open trace is held decoded
        for text in _agreement_filters():
            flt = parse(text)
            assert clickhouse.matching_span_ids(row.trace_id, flt) == sqlite.matching_span_ids(row.trace_id, flt), text


def test_the_span_level_sql_agrees_with_sqlite_on_every_span(readers) -> None:
    """The statistics' reading of a filter (each span on its own) compiled to ClickHouse SQL."""
    sqlite, clickhouse = readers
    traces = [r.trace_id for r in sqlite.traces(0, -1)]
    tables = clickhouse._query_tables()
    for text in _agreement_filters():
        flt = parse(text)
        if filter_sql.residual(flt, trace_level=False) is not None:
            continue
        compiled = filter_sql.span_condition(flt, tables)
        found = {(bytes.fromhex(t), bytes.fromhex(s)) for t, s in clickhouse._rows(
            f"SELECT TraceId, SpanId FROM {tables.traces} WHERE {compiled.sql or '1'}", compiled.params)}  # fmt: skip
        assert found == {(t, s) for t in traces for s in sqlite.matching_span_ids(t, flt)}, text


def test_user_text_reaches_clickhouse_as_parameters_only(readers) -> None:
    _, clickhouse = readers
    for text in ('name="\'; DROP TABLE otel_traces; --"', "attr.a\\b}{x:String}=1", "model~%_", '"\') OR 1=1 --"'):
        flt = parse(text)
        compiled = filter_sql.trace_condition(flt, clickhouse._query_tables())
        assert "DROP" not in compiled.sql and "OR 1=1" not in compiled.sql
        assert clickhouse.traces(0, -1, None, flt) == []
    assert clickhouse.count_traces() > 20  # the table is still there


def test_python_only_terms_are_decided_on_the_newest_runs_and_said_so(readers) -> None:
    sqlite, clickhouse = readers
    for text in ("cost>0.0001", "fallback=true", "retry=true kind=llm", "tokens>1000", "cost!=0 model~mini"):
        flt = parse(text)
        assert [r.trace_id for r in clickhouse.traces(0, -1, None, flt)] == [
            r.trace_id for r in sqlite.traces(0, -1, None, flt)
        ], text
        note = clickhouse.filter_note(flt)
        assert note is not None and f"{RESIDUAL_SCAN:,}" in note
    assert clickhouse.filter_note(parse("model=gpt-4o ttft>100ms groundedness<0.5")) is None
    assert sqlite.filter_note(parse("cost>0.0001")) is None


@pytest.mark.parametrize("by", GROUPINGS)
@pytest.mark.parametrize("text", ["", "status=ok", "model~mini", "groundedness<0.9"])
def test_statistics_are_the_same_computed_by_clickhouse(readers, by: str, text: str) -> None:
    """Counts, runs, exact p50/p95/p99 of duration and TTFT, decode rate, error rate, cost per run and
    groundedness: ClickHouse's ``quantilesExactInclusive`` interpolates as tracetui.query.stats does."""
    sqlite, clickhouse = readers
    flt = parse(text) if text else None
    want = {g.key: g.to_json(durations=True) for g in stats.compute(sqlite, by, flt=flt)}
    got = {g.key: g.to_json(durations=True) for g in stats.compute(clickhouse, by, flt=flt)}
    assert got.keys() == want.keys()
    for key, figures in want.items():
        mine = got[key]
        assert mine["retry_rate"] is None and mine["fallback_rate"] is None  # only Python compares calls
        for name, value in figures.items():
            if name in ("retry_rate", "fallback_rate"):
                continue
            if name == "durations_ms":
                assert sorted(mine[name]) == pytest.approx(sorted(value)), (key, name)
            elif isinstance(value, float):
                assert mine[name] == pytest.approx(value, rel=1e-9), (key, name)
            else:
                assert mine[name] == value, (key, name)


def test_the_llm_calls_of_the_protocol_match_in_keys_and_counts(readers) -> None:
    sqlite, clickhouse = readers
    for by in GROUPINGS:
        want = {k: sorted(c[1] for c in v) for k, v in sqlite.llm_calls(by).items()}
        got = {k: sorted(c[1] for c in v) for k, v in clickhouse.llm_calls(by).items()}
        assert got == want, by


def _shifted(data: bytes, delta_ns: int):
    """A trace request with every time moved by ``delta_ns``."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest.FromString(data)
    for resource in request.resource_spans:
        for scope in resource.scope_spans:
            for span in scope.spans:
                span.start_time_unix_nano += delta_ns
                span.end_time_unix_nano += delta_ns
                for event in span.events:
                    event.time_unix_nano += delta_ns
    return request


def test_the_header_counts_calls_and_tokens_from_shortly_before_its_first_look(readers, chdb) -> None:
    """Spans and runs: the whole table. LLM calls and tokens: the spans that started since TOTALS_LAG_NS before
    the reader's first counters() (the captures are older: none), then each one that arrives."""
    import time

    from tracetui.clickhouse.load import insert_requests
    from tracetui.clickhouse.reader import TOTALS_LAG_NS, VERSION_TTL

    sqlite, _ = readers
    reader = clickhouse_reader(chdb, TRACES)
    first = reader.counters()
    assert first.totals_since_ns is not None and (first.llm_calls, first.tokens) == (0, 0)
    assert (first.span_count, first.trace_count) == (sqlite.counters().span_count, sqlite.counters().trace_count)
    assert first.to_json()["llm_calls_and_tokens_since_ns"] == first.totals_since_ns
    oldest = min(s.start_time_unix_nano for data in TRACES for r in _shifted(data, 0).resource_spans
                 for sc in r.scope_spans for s in sc.spans)  # fmt: skip
    delta = first.totals_since_ns + TOTALS_LAG_NS // 2 - oldest  # all of them after the mark, none in the future
    insert_requests(reader._conn, [_shifted(data, delta) for data in TRACES], [])  # type: ignore[arg-type]
    time.sleep(VERSION_TTL)  # the data version is asked again after this long
    later, expected = reader.counters(), sqlite.counters()
    assert later.totals_since_ns == first.totals_since_ns
    assert later.llm_calls == expected.llm_calls
    # tokens summed over spans in SQL (SQLite's count each request once across families: a trace total only
    # Python knows): half of the table's sum, which holds the captures twice
    whole = reader._value(f"SELECT sum(ifNull({filter_sql.tokens_sql()}, 0)) FROM {reader._traces}")
    assert later.tokens > 0 and 2 * later.tokens == whole
    assert later.span_count == 2 * first.span_count and later.trace_count == 2 * first.trace_count
    reader.close()


def test_the_list_page_leaves_out_message_content_only() -> None:
    """CONTENT_KEYS (read by ClickHouse's RE2; the same in Python's re for this pattern): what it drops from the
    list's page holds prompts and completions, nothing a list figure reads (the parity tests above check those)."""
    import re

    from tracetui.clickhouse.reader import CONTENT_KEYS

    dropped = ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions", "gen_ai.prompt",
               "gen_ai.prompt.0.content", "gen_ai.completion.1.content", "llm.input_messages.0.message.content",
               "input.value", "output.value", "traceloop.entity.input", "ai.prompt.messages", "gen_ai.tool.call.result")  # fmt: skip
    kept = ("gen_ai.prompt.name", "gen_ai.prompt.version", "gen_ai.completion.0.finish_reason", "gen_ai.request.model",
            "llm.input_messages.0.message.role", "gen_ai.usage.input_tokens", "input.mime_type", "gen_ai.tool.name")  # fmt: skip
    assert [k for k in dropped if not re.match(CONTENT_KEYS, k)] == []
    assert [k for k in kept if re.match(CONTENT_KEYS, k)] == []


# --- compare, regression cohorts, what users felt ---------------------------------------------------------


def _calls_match(got, want, label: str) -> None:
    """Every field of every call, in order; retries and fallbacks are unknown over ClickHouse (None)."""
    assert [(c.trace_id, c.span_id) for c in got] == [(c.trace_id, c.span_id) for c in want], label
    for mine, theirs in zip(got, want, strict=True):
        assert mine.retry is None and mine.fallback is None, label
        for name in theirs._fields:
            if name in ("retry", "fallback"):
                continue
            value = getattr(theirs, name)
            if isinstance(value, float):
                assert getattr(mine, name) == pytest.approx(value, rel=1e-9), (label, name)
            else:
                assert getattr(mine, name) == value, (label, name)


@pytest.mark.parametrize("text", ["", "model~mini", "status=ok", "cost>0.0001", "groundedness<0.9", "ttft>100ms"])
def test_cohort_calls_are_the_calls_sqlite_lists(readers, text: str) -> None:
    """The calls of a compare or a regression set: ids, times, error, TTFT, decode rate, output tokens, max_tokens
    cap, cost (reported, else priced from the call's tokens), the run's wall clock and the three Stats keys."""
    sqlite, clickhouse = readers
    flt = parse(text) if text else None
    want = sqlite.cohort_calls(flt=flt)
    assert want or text == "cost>0.0001"
    _calls_match(clickhouse.cohort_calls(flt=flt), want, text)
    starts = sorted(c.start_ns for c in sqlite.cohort_calls())
    since, until = starts[len(starts) // 4], starts[3 * len(starts) // 4]
    _calls_match(
        clickhouse.cohort_calls(since_ns=since, until_ns=until, flt=flt),
        sqlite.cohort_calls(since_ns=since, until_ns=until, flt=flt),
        f"{text} in a window",
    )


def test_cohort_calls_read_the_caps_and_keys_the_fixtures_hold(readers) -> None:
    _, clickhouse = readers
    calls = clickhouse.cohort_calls()
    assert {c.max_tokens for c in calls} >= {None, 120, 200, 512}
    assert {c.model for c in calls} >= {"gpt-4o-mini", "gpt-4.1-mini"}
    assert all(c.route and " / " in c.route for c in calls)
    assert any(c.cost_usd for c in calls)


def test_a_retry_or_fallback_term_is_refused_not_ignored(readers) -> None:
    from tracetui.query import compare as cmp

    _, clickhouse = readers
    with pytest.raises(ValueError, match="retry"):
        clickhouse.cohort_calls(flt=parse("retry=true"))
    with pytest.raises(cmp.CohortError, match="cohort B: fallback"):
        cmp.compare(clickhouse, cmp.Cohort("A", "model~mini"), cmp.Cohort("B", "fallback=true"))


def test_evaluation_results_are_the_same(readers) -> None:
    sqlite, clickhouse = readers
    runs = {r.trace_id for r in sqlite.traces(0, -1)}
    want = sorted(sqlite.evaluation_results(runs))
    assert len(want) >= 4 and any("log record" in e.source for e in want)
    assert sorted(clickhouse.evaluation_results(runs)) == want
    one = want[0].trace_id
    assert sorted(clickhouse.evaluation_results({one})) == sorted(sqlite.evaluation_results({one}))
    assert clickhouse.evaluation_results(set()) == []


def _figures(comparison) -> dict[str, Any]:
    out = comparison.to_json()
    out["figures"] = {f.pop("metric"): f for f in out["figures"]}
    return out


def _same_comparison(got, want) -> None:
    """The same figures, intervals, verdict and caps; retry and fallback rates unknown over ClickHouse."""
    mine, theirs = _figures(got), _figures(want)
    assert mine["figures"].keys() == theirs["figures"].keys()
    for metric, figure in theirs["figures"].items():
        if metric in ("retry_rate", "fallback_rate"):
            assert (mine["figures"][metric]["a"], mine["figures"][metric]["b"]) == (None, None)
            assert figure["a"] is not None  # SQLite knows them
            continue
        assert mine["figures"][metric] == pytest.approx(figure), metric
    assert mine["thumbs_down_by_ttft"] == theirs["thumbs_down_by_ttft"]
    assert (mine["verdict"], mine["a"], mine["b"]) == (theirs["verdict"], theirs["a"], theirs["b"])
    assert mine["notes"] == [*theirs["notes"], "retry rate and fallback rate: not known over this source (it does "
                             "not compare calls)"]  # fmt: skip


def test_compare_gives_the_same_figures_on_both_backends(readers) -> None:
    from tracetui.query import compare as cmp

    sqlite, clickhouse = readers
    a, b = cmp.Cohort("A", "model=gpt-4o-mini"), cmp.Cohort("B", "model=gpt-4.1-mini")
    want = cmp.compare(sqlite, a, b)
    assert want.get("calls").a > 40 and want.get("calls").b > 10 and want.caps_b
    _same_comparison(cmp.compare(clickhouse, a, b), want)
    # two rows of the Stats table (one read of the calls, split by group)
    rows = cmp.Cohort("A", group=("model", "gpt-4o-mini")), cmp.Cohort("B", group=("model", "gpt-4.1-nano"))
    _same_comparison(cmp.compare(clickhouse, *rows), cmp.compare(sqlite, *rows))
    route = next(iter({c.route for c in sqlite.cohort_calls()}))
    rows = cmp.Cohort("A", group=("route", route)), cmp.Cohort("B", group=("prompt_version", "(none)"))
    _same_comparison(cmp.compare(clickhouse, *rows), cmp.compare(sqlite, *rows))


def _record(record: dict[str, Any]) -> dict[str, Any]:
    """A regression-set record with its request parameters as the exporter flattens them (strings)."""
    return {**record, "parameters": {k: _as_exporter_wrote(v) for k, v in record["parameters"].items()}}


def test_cohort_records_and_feelings_are_the_same(readers) -> None:
    """Each record whole (messages, context, evaluations, feedback, figures), the request parameters read back as
    the strings the exporter wrote."""
    from tracetui.query import compare as cmp
    from tracetui.query.cohort import cohort_records

    sqlite, clickhouse = readers
    for text in ("groundedness<0.5", "model~mini"):
        flt = parse(text)
        want = list(cohort_records(sqlite, flt))
        assert want, text
        got = list(cohort_records(clickhouse, flt))
        assert [_record(r) for r in got] == [_record(r) for r in want], text
    everything = cmp.Cohort("all")
    assert cmp.feelings(clickhouse, everything) == cmp.feelings(sqlite, everything)

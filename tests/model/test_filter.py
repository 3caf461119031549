"""The filter language (tracetui.model.filter): parser tables, hostile input, and the compiled SQL
run against real databases written by tracetui's own decoder and writer.

Expected matches over the fixture database are written from what the fixtures hold (see
tests/fixtures/README.md: each OpenAI library file has the same eight calls in the same
order; the handmade agent has two runs, one with a timeout and a fallback to Claude and
groundedness 0.92, one plain gpt-4o run with groundedness 0.18), and some are computed
straight from the protobuf messages.
"""

from __future__ import annotations

import math
import re
import sqlite3
from pathlib import Path

import pytest
from helpers import (
    fill_db,
    iter_spans,
    make_request,
    make_span,
    plain_attributes,
    requests_of,
    sid,
    suite_fixture_files,
    tid,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from tracetui.model import filter as filters
from tracetui.model.filter import FIELDS, Filter, FilterError, Term, parse
from tracetui.query.export import span_json
from tracetui.query.filter_match import matches_span
from tracetui.store.filter_sql import register_sql_functions, span_where, trace_where
from tracetui.store.reader import SqliteReader

S = 1_000_000_000
MS = 1_000_000

# --- the fixture database, with a label per trace -------------------------------------------

CALLS = ("chat", "chat_stream", "chat_stream_nousage", "tools", "embedding", "retry_429", "error_500", "timeout")
LIBS = {"traceai_openai": "traceai", "openinference_openai": "oi", "openllmetry_openai": "ollm",
        "otel_v2_openai": "otel"}  # fmt: skip


def every(*calls: str) -> set[str]:
    """The labels of these calls in each of the four OpenAI library fixtures."""
    return {f"{lib}:{call}" for lib in LIBS.values() for call in calls}


def labels_of_fixtures() -> dict[bytes, str]:
    labels: dict[bytes, str] = {}
    for path in suite_fixture_files():
        order: list[bytes] = []
        fallback_trace = None
        for _, span in iter_spans(requests_of(path)):
            if span.trace_id not in order:
                order.append(span.trace_id)
            if "app.fallback.from_model" in plain_attributes(span.attributes):
                fallback_trace = span.trace_id
        if path.stem == "handmade_agent":
            assert len(order) == 2 and fallback_trace is not None
            for trace_id in order:
                labels[trace_id] = "agent_fallback" if trace_id == fallback_trace else "agent_plain"
        else:
            assert len(order) == len(CALLS), path
            labels.update({trace_id: f"{LIBS[path.stem]}:{call}" for trace_id, call in zip(order, CALLS, strict=True)})
    return labels


LABELS = labels_of_fixtures()
ALL = set(LABELS.values())
AGENTS = {"agent_fallback", "agent_plain"}


def connect(db: Path, writable: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(db) if writable else sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    register_sql_functions(conn)
    return conn


@pytest.fixture(scope="module")
def fx(all_fixtures_db: Path):
    conn = connect(all_fixtures_db)
    yield conn
    conn.close()


def matching_traces(conn: sqlite3.Connection, text: str) -> set[str]:
    where, params = trace_where(parse(text))
    return {LABELS[r[0]] for r in conn.execute(f"SELECT trace_id FROM traces WHERE {where}", params)}


def matching_spans(conn: sqlite3.Connection, flt: Filter, alias: str = "spans") -> set[tuple[str, str]]:
    where, params = span_where(flt, alias)
    rows = conn.execute(f"SELECT {alias}.trace_id, {alias}.span_id FROM spans AS {alias} WHERE {where}", params)
    return {(t.hex(), s.hex()) for t, s in rows}


# --- the parser ---------------------------------------------------------------------------

ISSUE_EXAMPLE = (
    "model=gpt-4o duration>2s ttft>500ms status=error cost>0.01 groundedness<0.5 service=support "
    "prompt.version=17 attr.gen_ai.request.temperature>=0.5"
)

PARSE_TABLE = [
    ("", ()),
    ("   \t ", ()),
    (
        ISSUE_EXAMPLE,
        (
            Term("model", "=", "gpt-4o"),
            Term("duration", ">", 2 * S),
            Term("ttft", ">", 500 * MS),
            Term("status", "=", "error"),
            Term("cost", ">", 0.01),
            Term("groundedness", "<", 0.5),
            Term("service", "=", "support"),
            Term("prompt.version", "=", "17"),
            Term("attr.gen_ai.request.temperature", ">=", "0.5"),
        ),
    ),
    ("duration<=1.5m", (Term("duration", "<=", 90 * S),)),
    ("duration>300us ttft<300µs", (Term("duration", ">", 300_000), Term("ttft", "<", 300_000))),
    ("duration>2S", (Term("duration", ">", 2 * S),)),
    ("duration>=0", (Term("duration", ">=", 0),)),
    ("duration>250ns latency>1h", (Term("duration", ">", 250), Term("duration", ">", 3600 * S))),
    ("cost>$0.01 cost<0.5$ cost=0", (Term("cost", ">", 0.01), Term("cost", "<", 0.5), Term("cost", "=", 0.0))),
    ("tokens>1.5k input_tokens>=100 output_tokens<2M",
     (Term("tokens", ">", 1500), Term("input_tokens", ">=", 100), Term("output_tokens", "<", 2_000_000))),
    ("MODEL=GPT-4o Status=ERROR KIND=LLM", (Term("model", "=", "GPT-4o"), Term("status", "=", "error"),
                                           Term("kind", "=", "llm"))),
    ("model==gpt-4o model!=x model~mini", (Term("model", "=", "gpt-4o"), Term("model", "!=", "x"),
                                           Term("model", "~", "mini"))),
    ('name~"chat gpt" attr.x="a b"', (Term("name", "~", "chat gpt"), Term("attr.x", "=", "a b"))),
    (r"name='it\'s' \"q\"", (Term("name", "=", "it's"), Term(None, None, r'\"q\"'))),  # outside quotes a backslash is literal
    (r'"a \"quoted\" \\ word"', (Term(None, None, 'a "quoted" \\ word'),)),
    ('"free text" hello', (Term(None, None, "free text"), Term(None, None, "hello"))),
    ("don't name~don't", (Term(None, None, "don't"), Term("name", "~", "don't"))),
    ('"" name~x', (Term("name", "~", "x"),)),  # an empty quoted word is nothing
    ("retry=true fallback=yes", (Term("retry", "=", True), Term("fallback", "=", True))),
    ("retry=false fallback!=false", (Term("retry", "!=", True), Term("fallback", "=", True))),
    ("error=timeout error_type~Timeout", (Term("error_type", "=", "timeout"), Term("error_type", "~", "Timeout"))),
    ("session_id=s1 user_id=u prompt_name=p prompt_version>3 trace_id=AB",
     (Term("session", "=", "s1"), Term("user", "=", "u"), Term("prompt", "=", "p"),
      Term("prompt.version", ">", "3"), Term("trace", "=", "ab"))),
    ("ATTR.App.Key=1", (Term("attr.App.Key", "=", "1"),)),  # the prefix is case-insensitive, the key is not
    ("attr.a=b=c", (Term("attr.a", "=", "b=c"),)),
    ("attr.x;DROP=1", (Term("attr.x;DROP", "=", "1"),)),
    ("name~日本語 Straße", (Term("name", "~", "日本語"), Term(None, None, "Straße"))),
    ("a AND b", (Term(None, None, "a"), Term(None, None, "b"))),
    ("and or", (Term(None, None, "and"), Term(None, None, "or"))),  # only capital OR/NOT are refused
    ("SELECT * FROM spans", (Term(None, None, "SELECT"), Term(None, None, "*"), Term(None, None, "FROM"),
                             Term(None, None, "spans"))),
    ("name~%_ name=--", (Term("name", "~", "%_"), Term("name", "=", "--"))),
]  # fmt: skip


@pytest.mark.parametrize(("text", "terms"), PARSE_TABLE, ids=[t or "<empty>" for t, _ in PARSE_TABLE])
def test_parse_table(text, terms):
    flt = parse(text)
    assert flt.text == text
    assert flt.terms == terms
    assert flt.is_empty() == (not terms)


ERROR_TABLE = [
    ('"unterminated', 0, "unterminated"),
    ("name='abc", 5, "unterminated"),
    ("'; DROP TABLE spans; --", 0, "unterminated"),
    ("model=x' OR '1'='1", 9, "OR is not supported"),
    ("model=a NOT model=b", 8, "NOT is not supported"),
    ("'1'='1'", 3, "space after the closing quote"),
    ('name="a"b', 8, "space after the closing quote"),
    ("duration>", 9, "missing value"),
    ("duration> 2s", 9, "missing value"),
    ("model=", 6, "missing value"),
    (">5", 0, "field name"),
    ("x >= 5", 2, "field name"),
    ("!=x", 0, "field name"),
    ("duration>fast", 9, "ms"),
    ("duration>5", 9, "unit"),
    ("ttft>500", 5, "unit"),
    ("duration>5parsecs", 9, "unit"),
    ("duration>-1s", 9, "unit"),
    ("duration>1e999s", 9, "too large"),
    ("duration>99999999999h", 9, "too large"),
    ("cost>$", 5, "USD"),
    ("cost>cheap", 5, "USD"),
    ("cost>-1", 5, "USD"),
    ("cost>nan", 5, "USD"),
    ("groundedness<high", 13, "number"),
    ("groundedness<inf", 13, "number"),
    ("tokens>lots", 7, "whole number"),
    ("tokens>99999999999999999999", 7, "too large"),
    ("modle=gpt-4o", 0, "did you mean 'model'"),
    ("foo=bar", 0, "unknown field 'foo'"),
    ("a b durration>1s", 4, "did you mean 'duration'"),
    ("model>gpt", 5, "cannot use >"),
    ("status~err", 6, "cannot use ~"),
    ("status=broken", 7, "ok, error or unset"),
    ("kind=robot", 5, "llm"),
    ("retry=maybe", 6, "true or false"),
    ("trace=xyz", 6, "hexadecimal"),
    ("trace=" + "a" * 33, 6, "hexadecimal"),
    ("attr.=1", 0, "attribute key"),
    ('attr.a"b=1', 6, "quotes"),
    ("na'me=x", 2, "quotes"),
    ("model!gpt", 5, "operator"),
    ("a\x00b", 1, "control character"),
    ("name=\x1b[31m", 5, "control character"),
    ("x \ud800", 2, "control character"),
    ("a " * 70, 128, "too many terms"),
    ("x" * 10_000, filters.MAX_LENGTH, "too long"),
]


@pytest.mark.parametrize(("text", "position", "fragment"), ERROR_TABLE, ids=[repr(t[:30]) for t, _, _ in ERROR_TABLE])
def test_parse_errors(text, position, fragment):
    with pytest.raises(FilterError) as caught:
        parse(text)
    assert caught.value.position == position, str(caught.value)
    assert fragment in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert 0 <= caught.value.position <= len(text)


def test_unknown_field_error_names_the_known_fields():
    with pytest.raises(FilterError) as caught:
        parse("colour=red")
    message = str(caught.value)
    for name in ("model", "duration", "ttft", "cost", "groundedness", "prompt.version", "attr.<key>"):
        assert name in message


def test_duration_error_says_which_units_are_accepted():
    with pytest.raises(FilterError) as caught:
        parse("duration>2")
    assert all(unit in str(caught.value) for unit in ("ms", "s", "m", "us"))


def test_every_documented_field_parses():
    examples = {
        "duration": "1s", "ttft": "1s", "latency": "1s", "cost": "0.1", "groundedness": "0.5", "tokens": "5",
        "input_tokens": "5", "output_tokens": "5", "status": "ok", "kind": "llm", "retry": "true",
        "fallback": "true", "trace": "ab", "trace_id": "ab",
    }  # fmt: skip
    for name in FIELDS:
        field = "attr.some.key" if name == "attr.<key>" else name
        flt = parse(f"{field}={examples.get(name, 'x')}")
        assert len(flt.terms) == 1 and flt.terms[0].field is not None
        assert FIELDS[name].strip()


def test_filter_error_is_a_value_error_with_a_position():
    err = FilterError("bad", 3)
    assert isinstance(err, ValueError) and err.position == 3 and str(err) == "bad"


def test_empty_filter_compiles_to_true():
    for text in ("", "   "):
        flt = parse(text)
        assert trace_where(flt) == ("1", [])
        assert span_where(flt) == ("1", [])
        assert matches_span(flt, {})


def test_span_where_refuses_an_alias_that_is_not_an_identifier():
    with pytest.raises(ValueError):
        span_where(parse("model=x"), "spans; DROP TABLE spans")


# --- traces of the fixture database ---------------------------------------------------------

TRACE_TABLE = [
    ("", ALL),
    ("model=gpt-4.1-nano", every("error_500")),
    ("model=gpt-4.1", every("timeout")),  # not gpt-4.1-mini(-2025-04-14), not gpt-4.1-nano
    ("model=GPT-4O-MINI", every("chat", "chat_stream", "chat_stream_nousage", "tools")),
    ("model=gpt-4o-mini-2024-07-18", every("chat", "chat_stream", "chat_stream_nousage", "tools") - {"traceai:chat_stream", "traceai:chat_stream_nousage"}),
    ("model=gpt-4o", AGENTS),  # request model gpt-4o / response gpt-4o-2024-08-06; never gpt-4o-mini
    ("model=claude-sonnet-4", {"agent_fallback"}),  # dated response model claude-sonnet-4-20250514
    ("model~mini", every("chat", "chat_stream", "chat_stream_nousage", "tools", "retry_429")),
    ("model!=gpt-4o-mini", ALL - every("chat", "chat_stream", "chat_stream_nousage", "tools")),
    ("model~embedding", every("embedding") | AGENTS),  # the agents' retrieval spans
    ("provider=anthropic", {"agent_fallback"}),
    ("provider!=openai", set()),  # every trace has an openai span
    ("status=error", every("error_500", "timeout") | {"agent_fallback"}),
    ("status!=error", ALL - every("error_500", "timeout") - {"agent_fallback"}),
    ("status=ok", ALL - every("error_500", "timeout") - {"agent_fallback"}),
    ("duration>1s", every("timeout") | AGENTS),
    ("duration>2s", AGENTS),
    ("duration<100ms", every("error_500")),
    ("duration>=34139ms", {"agent_fallback"}),  # exactly 34.139 s
    ("duration>34139ms", set()),
    ("duration=2712ms", {"agent_plain"}),
    ("ttft>100ms", {f"{lib}:{call}" for lib in ("traceai", "oi", "ollm") for call in ("chat_stream", "chat_stream_nousage")} | {"agent_fallback"}),
    ("ttft>500ms", {"agent_fallback"}),
    ("ttft=820ms", {"agent_fallback"}),
    ("cost>0", every("chat", "chat_stream", "tools", "embedding", "retry_429") | AGENTS),
    ("cost>$0.001", AGENTS),
    ("cost>=0.005", {"agent_fallback"}),
    ("cost!=0.007101", ALL - {"agent_fallback"}),  # unpriced traces (NULL) match !=
    ("groundedness<0.5", {"agent_plain"}),
    ("groundedness>0.9", {"agent_fallback"}),
    ("groundedness<=1", AGENTS),
    ("groundedness!=0.18", ALL - {"agent_plain"}),
    ("service=harness-otel-v2-openai", {f"otel:{c}" for c in CALLS}),
    ("service~OPENLLMETRY", {f"ollm:{c}" for c in CALLS}),
    ("service=unknown_service", {f"traceai:{c}" for c in CALLS}),
    ("kind=embedding", every("embedding")),
    ("kind=tool", {"agent_fallback"}),
    ("kind=retriever", AGENTS),
    ("kind!=llm", every("embedding")),  # no LLM span at all
    ("kind!=tool", ALL - {"agent_fallback"}),
    ("name=ChatCompletion", {f"{lib}:{c}" for lib in ("traceai", "oi") for c in CALLS if c != "embedding"}),
    ('name~"chat gpt"', {f"otel:{c}" for c in CALLS if c != "embedding"} | AGENTS),
    ('name="execute_tool lookup_invoice"', {"agent_fallback"}),
    ("tokens>1000", {"agent_fallback"}),  # 1432 + 187; the plain run has 918 + 64
    ("input_tokens>=100", every("tools") | AGENTS),
    ("output_tokens>50", every("retry_429") | AGENTS),
    ("session=ticket-4821", {"agent_fallback"}),
    ("session~ticket", AGENTS),
    ("user=harness-user-1", {"ollm:chat"}),
    ("error=openai.APITimeoutError", every("timeout") - {"ollm:timeout"} | {"agent_fallback"}),
    ("error~timeout", every("timeout") | {"agent_fallback"}),
    ("error~internalserver", every("error_500")),
    ("fallback=true", {"agent_fallback"}),
    ("fallback=false", ALL - {"agent_fallback"}),  # no fallback call in the trace
    ("retry=true", set()),
    ("trace=f88fdd", {"agent_fallback"}),
    ("trace=F88F", {"agent_fallback"}),
    ("trace!=f88fdd", ALL - {"agent_fallback"}),
    ("trace=" + "f88fdd410c9dcef397a25597902be7d7", {"agent_fallback"}),
    ("attr.gen_ai.request.temperature>=0.5", {f"{lib}:{c}" for lib in ("ollm", "otel") for c in ("chat_stream", "chat_stream_nousage")}),
    ("attr.gen_ai.request.temperature=0.2", {"ollm:chat", "otel:chat"} | AGENTS),
    ("attr.gen_ai.request.stream=true", {"agent_fallback"}),
    ("attr.gen_ai.request.stream=false", {"agent_plain"}),
    ("attr.server.port=443", AGENTS),
    ("attr.server.port>=443.0", AGENTS),
    ("attr.gen_ai.response.finish_reasons~end_turn", {"agent_fallback"}),
    ("attr.app.fallback.reason=TIMEOUT", {"agent_fallback"}),
    ("attr.gen_ai.request.model=gpt-4.1-nano", {"ollm:error_500", "otel:error_500"}),
    ("attr.no.such.key=1", set()),
    ("attr.no.such.key!=1", ALL),
    ("kb-billing", AGENTS),
    ('"ticket-resolution agent"', AGENTS),
    ("ticket-4821", {"agent_fallback"}),  # an attribute value
    ("harness-otel-v2", {f"otel:{c}" for c in CALLS}),  # the service
    ("CHATCOMPLETION", {f"{lib}:{c}" for lib in ("traceai", "oi") for c in CALLS if c != "embedding"}),
    ("timeout", every("timeout") | {"agent_fallback"}),  # error types, status messages, app.fallback.reason
    ("qdrant 88213", {"agent_fallback"}),  # words may be found in different spans of the trace
    ("%", set()),  # not a LIKE pattern
    # combinations
    ("model=gpt-4o duration>2s", AGENTS),
    ("status=error model=gpt-4.1", every("timeout")),
    ("kind=llm provider=anthropic ttft>500ms", {"agent_fallback"}),
    ('model=claude-sonnet-4 name="chat gpt-4o"', set()),  # both must hold for the same span
    ("service=harness-handmade-agent groundedness<0.5 cost>0.001", {"agent_plain"}),
    ("status=error groundedness>0.5 fallback=true", {"agent_fallback"}),
    ("duration>500ms duration<1s model~mini", every("chat_stream", "chat_stream_nousage", "retry_429")),
    (ISSUE_EXAMPLE, set()),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), TRACE_TABLE, ids=[t or "<empty>" for t, _ in TRACE_TABLE])
def test_trace_filters_on_the_fixture_database(fx, text, expected):
    assert matching_traces(fx, text) == expected


def test_the_fixture_labels_hold(fx):
    assert len(LABELS) == 34 == fx.execute("SELECT count(*) FROM traces").fetchone()[0]
    assert {r[0] for r in fx.execute("SELECT trace_id FROM traces")} == set(LABELS)


def test_the_durations_the_table_assumes(fx):
    # chat ~475 ms, chat_stream ~525 ms, chat_stream_nousage ~745 ms, retry_429 ~960 ms, timeout ~1005 ms
    durations = {LABELS[t]: ns for t, ns in fx.execute("SELECT trace_id, end_ns - start_ns FROM traces")}
    for lib in LIBS.values():
        assert durations[f"{lib}:chat"] < 500 * MS < durations[f"{lib}:chat_stream"] < S
        assert 500 * MS < durations[f"{lib}:retry_429"] < S < durations[f"{lib}:timeout"]


def expected_from_protos(predicate) -> set[str]:
    """Labels of the traces having a span for which ``predicate(service, span, attributes)`` holds."""
    found = set()
    for path in suite_fixture_files():
        for service, span in iter_spans(requests_of(path)):
            if predicate(service, span, plain_attributes(span.attributes)):
                found.add(LABELS[span.trace_id])
    return found


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


PROTO_TABLE = [
    ("status=error", lambda svc, s, a: s.status.code == Status.STATUS_CODE_ERROR),
    ("attr.gen_ai.request.temperature>0.5",
     lambda svc, s, a: is_number(a.get("gen_ai.request.temperature")) and a["gen_ai.request.temperature"] > 0.5),
    ("attr.gen_ai.request.max_tokens<=200",
     lambda svc, s, a: is_number(a.get("gen_ai.request.max_tokens")) and a["gen_ai.request.max_tokens"] <= 200),
    ("attr.llm.model_name=gpt-4o-mini-2024-07-18", lambda svc, s, a: a.get("llm.model_name") == "gpt-4o-mini-2024-07-18"),
    ("attr.gen_ai.tool.definitions~get_order", lambda svc, s, a: "get_order" in str(a.get("gen_ai.tool.definitions", ""))),
    ("name~embedding", lambda svc, s, a: "embedding" in s.name.lower()),
    ("request", lambda svc, s, a: "request" in (s.name + svc + s.status.message).lower()
     or any("request" in str(v).lower() for v in a.values() if isinstance(v, str))),
]  # fmt: skip


@pytest.mark.parametrize(("text", "predicate"), PROTO_TABLE, ids=[t for t, _ in PROTO_TABLE])
def test_trace_filters_agree_with_the_protobuf_messages(fx, text, predicate):
    expected = expected_from_protos(predicate)
    assert expected, "the case should match something"
    assert matching_traces(fx, text) == expected


def test_trace_durations_agree_with_the_protobuf_messages(fx):
    bounds: dict[str, list[int]] = {}
    for path in suite_fixture_files():
        for _, span in iter_spans(requests_of(path)):
            lo_hi = bounds.setdefault(LABELS[span.trace_id], [span.start_time_unix_nano, span.end_time_unix_nano])
            lo_hi[0] = min(lo_hi[0], span.start_time_unix_nano)
            lo_hi[1] = max(lo_hi[1], span.end_time_unix_nano)
    for threshold in ("100ms", "500ms", "900ms", "1s", "3s"):
        limit = parse(f"duration>{threshold}").terms[0].value
        assert matching_traces(fx, f"duration>{threshold}") == {k for k, (lo, hi) in bounds.items() if hi - lo > limit}


# --- the handmade database: fields the fixtures lack, odd values, Unicode -------------------

HAND_SPANS = [
    # trace 1: an agent in conversation conv-1, a prompt-versioned LLM call with odd attribute types
    (make_span(tid(1), sid(1), name="agent run", duration=3 * S,
               attributes={"gen_ai.conversation.id": "conv-1", "user.id": "alice", "gen_ai.operation.name": "invoke_agent"}),
     "hand-svc"),
    (make_span(tid(1), sid(2), sid(1), name="chat", start=10 * MS, duration=2 * S,
               attributes={"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                           "gen_ai.request.model": "gpt-4o-mini", "gen_ai.prompt.name": "support-reply",
                           "gen_ai.prompt.version": "17", "gen_ai.request.temperature": 0.7,
                           "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 30,
                           "app.flag": True, "app.tags": ["alpha", "beta"], "app.bytes": b"\x01\xff",
                           "app.nan": float("nan"), "app.count": 42, "app.str_num": "0042", "app.neg": -3}),
     "hand-svc"),
    # trace 2: Unicode everywhere, an int prompt version, hostile-looking attribute text
    (make_span(tid(2), sid(3), name="Straße 日本語 run", duration=100 * MS,
               attributes={"app.note": "semi;colon 'quoted' \"double\" -- DROP TABLE spans", "app.emoji": "🙂 ok"}),
     "ünïcode-svc"),
    (make_span(tid(2), sid(4), sid(3), name="chat", start=MS, duration=50 * MS,
               attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "claude-3-5-sonnet-20241022",
                           "gen_ai.prompt.version": 9, "gen_ai.prompt.name": "Größe"}),
     "ünïcode-svc"),
    # trace 3: a failed call with a hostile status message, a non-numeric prompt version
    (make_span(tid(3), sid(5), name="boom", duration=5 * MS, status=Status.STATUS_CODE_ERROR,
               message="Robert'); DROP TABLE traces;--",
               attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4", "error.type": "ValueError",
                           "gen_ai.prompt.version": "v2", "app.nul": "a\x00b"}),
     "hand-svc"),
]  # fmt: skip


@pytest.fixture(scope="module")
def hand_db(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("filters-hand") / "hand.db"
    fill_db(db, [make_request([span], service=service).SerializeToString() for span, service in HAND_SPANS])
    return db


@pytest.fixture(scope="module")
def hand(hand_db):
    conn = connect(hand_db)
    yield conn
    conn.close()


def hand_traces(conn, text: str) -> set[int]:
    where, params = trace_where(parse(text))
    index = {tid(n): n for n in (1, 2, 3)}
    return {index[r[0]] for r in conn.execute(f"SELECT trace_id FROM traces WHERE {where}", params)}


def hand_spans(conn, text: str) -> set[int]:
    index = {sid(n).hex(): n for n in range(1, 6)}
    return {index[s] for _, s in matching_spans(conn, parse(text))}


HAND_TABLE = [
    ("prompt.version=17", {2}, {1}),
    ("prompt.version=17.0", {2}, {1}),  # numeric on both sides
    ("prompt.version>10", {2}, {1}),  # 9 < 10; "v2" is not a number
    ("prompt.version<10", {4}, {2}),
    ("prompt.version=V2", {5}, {3}),
    ("prompt.version>=a", {5}, {3}),  # text ordering when the value is not a number: "v2" >= "a"
    ("prompt.version!=17", {1, 3, 4, 5}, {2, 3}),  # spans without a version match !=
    ("prompt=support-reply", {2}, {1}),
    ("prompt=GRÖSSE", {4}, {2}),  # casefold: ß == ss
    ("user=alice", {1}, {1}),
    ("session=conv-1", {1, 2}, {1}),  # the chat span inherits its trace's session
    ("session!=conv-1", {3, 4, 5}, {2, 3}),
    ("name~straße", {3}, {2}),
    ("name~STRASSE", {3}, {2}),
    ("name=\"straße 日本語 run\"", {3}, {2}),
    ("service=ÜNÏCODE-SVC", {3, 4}, {2}),
    ("日本語", {3}, {2}),
    ("🙂", {3}, {2}),
    ("DROP", {3, 5}, {2, 3}),  # free text over attribute values and status messages
    ("\"'quoted'\"", {3}, {2}),
    ("robert');", {5}, {3}),
    ("model=claude-3-5-sonnet", {4}, {2}),  # 8-digit release date
    ("model=gpt-4", {5}, {3}),  # not gpt-4o-mini
    ("model~GPT", {2, 5}, {1, 3}),
    ("tokens=1230", {2}, {1}),
    ("tokens>1k", {2}, {1}),
    ("input_tokens=1200 output_tokens=30", {2}, {1}),
    ("tokens!=1230", {1, 3, 4, 5}, {2, 3}),
    ("error=valueerror", {5}, {3}),
    ("status=error", {5}, {3}),
    ("status=unset", {1, 2, 3, 4}, {1, 2}),  # traces: unset counts as "no error"
    ("status!=unset", {5}, {3}),
    ("duration>1s", {1, 2}, {1}),
    ("duration=3s", {1}, {1}),
    ("attr.app.flag=true", {2}, {1}),
    ("attr.app.flag=1", set(), set()),  # a bool is not the number 1
    ("attr.app.tags~beta", {2}, {1}),
    ("attr.app.tags=[\"alpha\",\"beta\"]", set(), set()),  # lists compare as JSON text, with its spaces
    ("attr.app.tags='[\"alpha\", \"beta\"]'", {2}, {1}),
    ("attr.app.bytes=01ff", {2}, {1}),  # bytes as hex
    ("attr.app.nan~nan", set(), set()),  # NaN is no value
    ("attr.app.nan!=1", {1, 2, 3, 4, 5}, {1, 2, 3}),
    ("attr.app.count>41.5", {2}, {1}),
    ("attr.app.count=42", {2}, {1}),
    ("attr.app.str_num=42", {2}, {1}),  # "0042" is the number 42
    ("attr.app.str_num~004", {2}, {1}),
    ("attr.app.neg<-2", {2}, {1}),
    ("attr.app.nul~a", {5}, {3}),
    ("attr.gen_ai.request.temperature>0.5 kind=llm", {2}, {1}),
    ("kind=agent", {1}, {1}),
    ("kind=other", {3}, {2}),
    ("trace=a0000000000000000000000000000002", {3, 4}, {2}),
    ("trace~0003", {5}, {3}),
]  # fmt: skip


@pytest.mark.parametrize(("text", "spans", "traces"), HAND_TABLE, ids=[t for t, _, _ in HAND_TABLE])
def test_filters_on_handmade_spans(hand, text, spans, traces):
    assert hand_spans(hand, text) == spans
    assert hand_traces(hand, text) == traces


# --- Python and SQL agree ---------------------------------------------------------------------

AGREEMENT_FILTERS = (
    [text for text, _ in TRACE_TABLE]
    + [text for text, _, _ in HAND_TABLE]
    + [
        "duration<1s", "duration=288ms", "ttft<=153248961ns", "ttft!=820ms", "cost=0.0000016", "cost<=0.0001064",
        "cost!=0", "tokens<100", "groundedness>=0.92", "groundedness<0.92", "groundedness!=0.92",
        "status=ok", "status=unset", "kind=chain", "model!=gpt-4o", "model~4.1", "model=TEXT-EMBEDDING-3-SMALL",
        "name!=ChatCompletion", "service!=unknown_service", "provider~open", "error!=APITimeoutError",
        "attr.gen_ai.request.top_k<5", "attr.llm.token_count.total>=100", "attr.gen_ai.usage.input_tokens>20",
        "attr.server.address~example", "attr.db.system.name!=qdrant", "attr.gen_ai.response.finish_reasons=[\"stop\"]",
        "attr.llm.invocation_parameters~stream", "attr.gen_ai.request.temperature<=0.2", "attr.gen_ai.request.model>m",
        "openai", "stop", "null", "true", "0.2", "chunk", "ACME", '"Request timed out."', "x",
        "retry!=true", "fallback!=true", "trace~e7", "trace!=0", "session=ticket-4822", "session!=ticket-4821",
    ]
)  # fmt: skip


def span_dicts(db: Path) -> list[dict]:
    """Every span as `tracetui spans --json` shows it, plus its trace's session (see matches_span)."""
    reader = SqliteReader(db)
    try:
        sessions = dict(reader._all("SELECT trace_id, session_id FROM traces"))
        out = []
        for (trace_id,) in reader._all("SELECT trace_id FROM traces"):
            for span in span_json(reader, trace_id):
                span["trace_session_id"] = sessions[trace_id]
                out.append(span)
        return out
    finally:
        reader.close()


@pytest.mark.parametrize("which", ["fixtures", "handmade"])
def test_matches_span_agrees_with_span_where(which, all_fixtures_db, hand_db):
    db = all_fixtures_db if which == "fixtures" else hand_db
    spans = span_dicts(db)
    assert len(spans) >= 5
    conn = connect(db)
    try:
        checked = 0
        for text in AGREEMENT_FILTERS:
            flt = parse(text)
            in_sql = matching_spans(conn, flt, alias="s")
            in_python = {(s["trace_id"], s["span_id"]) for s in spans if matches_span(flt, s)}
            assert in_python == in_sql, text
            checked += bool(in_sql)
        assert checked > 50  # most filters match something, the agreement is not vacuous
    finally:
        conn.close()


def test_matches_span_reads_only_the_documented_keys():
    span = {
        "name": "chat", "kind": "llm", "service": "svc", "status": "error", "duration_ms": 2500.0, "ttft_ms": 600.0,
        "request_model": "gpt-4o", "response_model": "gpt-4o-2024-08-06", "provider": "openai", "cost_usd": 0.02,
        "prompt_version": "17", "prompt_name": "p", "session_id": "s", "user_id": "u", "error_type": "Timeout",
        "attributes": {"gen_ai.request.temperature": 0.5}, "evaluations": [{"name": "Groundedness", "score": 0.3, "label": None}],
    }  # fmt: skip
    assert matches_span(parse(ISSUE_EXAMPLE.replace("service=support", "service=svc")), span)
    assert matches_span(parse("model=gpt-4o-2024-08-06 model=GPT-4O model!=gpt-4o-mini"), span)
    assert not matches_span(parse("groundedness>=0.5"), span)
    assert not matches_span(parse("groundedness<0.5"), {**span, "evaluations": [{"name": "relevance", "score": 0.1}]})
    assert matches_span(parse("groundedness!=0.5"), {**span, "evaluations": []})
    assert matches_span(parse("tokens!=0 cost>$0.01 user=U prompt=P session=S chat svc"), span)
    assert not matches_span(parse("ttft>1s"), {**span, "ttft_ms": None})


def test_negation_is_the_complement_of_equality_on_every_span(fx):
    """NULL matches != and never =: for each field, = and != split the spans in two."""
    everything = matching_spans(fx, parse(""))
    for text in ("model=gpt-4o", "ttft=820ms", "cost=0.0000267", "groundedness=0.18", "session=ticket-4821",
                 "user=harness-user-1", "error=InternalServerError", "prompt.version=1", "attr.server.port=443",
                 "kind=llm", "status=error", "name=openai.chat", "trace=f8", "fallback=true", "tokens=124"):  # fmt: skip
        equal = matching_spans(fx, parse(text))
        unequal = matching_spans(fx, parse(text.replace("=", "!=", 1)))
        assert equal.isdisjoint(unequal) and equal | unequal == everything, text


# --- hostile input ------------------------------------------------------------------------------

HOSTILE = [
    "'; DROP TABLE spans; --",
    '"; DROP TABLE spans; --"',
    'name~"\'; DROP TABLE spans; --"',
    "model=x' OR '1'='1",
    "model=\"x' OR '1'='1\"",
    "model=x'--",
    'name="a\\" OR 1=1 --"',
    "service='); DELETE FROM traces; --'",
    '"Robert\'); DROP TABLE traces;--"',
    'attr.a"b=1',
    "attr.x;DROP=1",
    "attr.x');DROP TABLE spans;--=1",
    "attr.x=1);DROP",
    "prompt.version='1 UNION SELECT * FROM sqlite_master'",
    "SELECT * FROM spans; DELETE FROM spans",
    "UNION ALL SELECT",
    "1=1",
    "OR 1=1",
    "name~%",
    "name~_ name~\\",
    "trace='00 OR 1=1'",
    "kind=llm'",
    "status=ok;",
    "cost>0;DROP",
    "duration>1s;",
    "tokens>1;",
    "日本語 Straße 🙂 ﷽",
    "name~\u202eevil",
    "a\x00b",
    "\x00",
    "x \ud800",
    "x" * 10_000,
    "name~" + "a" * 4000,
    "a " * 64,
    " ".join(f"attr.k{i}>={i}" for i in range(64)),
    '"unbalanced',
    "'unbalanced",
    'name="unbalanced',
    "\\",
    '"\\',
    "",
    "     ",
    "duration>",
    ">5",
    "duration>fast",
    "cost>$",
    "=",
    "!",
    "~~~",
    "attr.=",
    "..",
    "attr....=1",
]


def table_counts(conn: sqlite3.Connection) -> dict[str, int]:
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}


@pytest.fixture(scope="module")
def scratch_db(all_fixtures_db, tmp_path_factory) -> Path:
    """A writable copy of the fixture database: hostile filters run on a connection that could write."""
    copy = tmp_path_factory.mktemp("filters-hostile") / "copy.db"
    src, dst = sqlite3.connect(f"file:{all_fixtures_db}?mode=ro", uri=True), sqlite3.connect(copy)
    src.backup(dst)
    src.close()
    dst.close()
    return copy


_FIXED_LITERALS = re.compile(r"'other'")


def assert_no_user_text(sql: str) -> None:
    """The compiled SQL holds no quote, statement separator or comment: values are all parameters."""
    bare = _FIXED_LITERALS.sub("", sql)
    assert not any(token in bare for token in ("'", '"', ";", "--", "/*")), sql


@pytest.mark.parametrize("text", HOSTILE, ids=[repr(t[:40]) for t in HOSTILE])
def test_hostile_input_is_refused_or_harmless(scratch_db, text):
    try:
        flt = parse(text)
    except FilterError as exc:
        assert 0 <= exc.position <= len(text)
        assert str(exc)
        return
    conn = connect(scratch_db, writable=True)
    try:
        before = table_counts(conn)
        for where, params in (trace_where(flt), span_where(flt), span_where(flt, "s")):
            assert_no_user_text(where)
            assert all(isinstance(p, (str, int, float, bytes)) for p in params)
            assert where.count("?") == len(params)
        where, params = trace_where(flt)
        traces = conn.execute(f"SELECT count(*) FROM traces WHERE {where}", params).fetchone()[0]
        assert 0 <= traces <= before["traces"]
        where, params = span_where(flt, "s")
        spans = conn.execute(f"SELECT count(*) FROM spans AS s WHERE {where}", params).fetchone()[0]
        assert 0 <= spans <= before["spans"]
        assert table_counts(conn) == before
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert not conn.in_transaction
    finally:
        conn.close()


def test_hostile_values_become_parameters():
    flt = parse("model=\"x' OR '1'='1\" attr.x);DROP=1 \"'; DROP TABLE spans; --\"")
    where, params = trace_where(flt)
    assert_no_user_text(where)
    assert "x' or '1'='1" in params and "x);DROP" in params and "'; drop table spans; --" in params


@pytest.fixture(scope="module")
def scratch(scratch_db):
    conn = connect(scratch_db)
    yield conn
    conn.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.one_of(
            st.text(max_size=12),
            st.sampled_from(["model", "duration", "attr.a.b", "cost", "ttft", "status", "name", "trace", "'", '"',
                             "\\", "=", "!=", ">=", "~", " ", "5ms", "$0.1", "true", "OR", ";", "--", "日本"]),
        ),
        max_size=8,
    ).map("".join)
)  # fmt: skip
def test_any_text_parses_or_fails_cleanly(scratch, text):
    try:
        flt = parse(text)
    except FilterError as exc:
        assert 0 <= exc.position <= len(text)
        return
    where, params = trace_where(flt)
    assert_no_user_text(where)
    scratch.execute(f"SELECT count(*) FROM traces WHERE {where}", params).fetchone()
    where, params = span_where(flt)
    assert_no_user_text(where)
    scratch.execute(f"SELECT count(*) FROM spans WHERE {where}", params).fetchone()


# --- the SQL functions ----------------------------------------------------------------------------


def test_sql_functions_never_raise_on_garbage():
    conn = sqlite3.connect(":memory:")
    register_sql_functions(conn)
    garbage = (None, 0, -1, 1.5, "", "text", b"", b"\x00\xff\xfe garbage \x0a\x0b", b"\x0a\xff\xff\xff\xff\xff")
    for a in garbage:
        for b in garbage:
            row = conn.execute(
                "SELECT tt_attr(?, ?), tt_text(?), tt_text(?, ?, ?), tt_eq(?, ?), tt_has(?, ?), tt_model_is(?, ?), "
                "tt_cmp(?, '=', ?), tt_cmp(?, ?, ?), tt_is_groundedness(?)",
                (a, b, a, a, b, None, a, b, a, b, a, b, a, b, a, b, b, a),
            ).fetchone()
            assert len(row) == 9
    assert conn.execute("SELECT tt_attr(x'0a', 'k'), tt_cmp('a', 'bogus', 'b'), tt_eq('a', 1)").fetchone() == (
        None, None, None,
    )  # fmt: skip
    conn.close()


def test_sql_functions_are_deterministic():
    """SQLite only allows deterministic functions in an index expression."""
    conn = sqlite3.connect(":memory:")
    register_sql_functions(conn)
    conn.execute("CREATE TABLE t (raw BLOB, name TEXT)")
    for name, expression in [
        ("a", "tt_attr(raw, 'k')"), ("b", "tt_text(raw, name)"), ("c", "tt_eq(name, 'x')"), ("d", "tt_has(name, 'x')"),
        ("e", "tt_model_is(name, 'x')"), ("f", "tt_cmp(name, '=', 'x')"), ("g", "tt_is_groundedness(name)"),
    ]:  # fmt: skip
        conn.execute(f"CREATE INDEX t_{name} ON t({expression})")
    conn.close()


def test_tt_attr_and_tt_text_read_the_raw_span(hand):
    raw = hand.execute("SELECT raw FROM spans WHERE span_id = ?", (sid(2),)).fetchone()[0]
    values = hand.execute(
        "SELECT tt_attr(?, 'gen_ai.request.temperature'), tt_attr(?, 'app.flag'), tt_attr(?, 'app.tags'), "
        "tt_attr(?, 'app.nan'), tt_attr(?, 'app.count'), tt_attr(?, 'missing'), tt_text(?, 'Name')",
        (raw,) * 7,
    ).fetchone()
    assert values[:6] == (0.7, "true", '["alpha", "beta"]', None, 42, None)
    assert "name" in values[6] and "support-reply" in values[6] and "gpt-4o-mini" in values[6]
    assert math.isclose(values[0], 0.7)


def test_filters_run_on_a_reader_connection(all_fixtures_db):
    """How the UI uses it: register the functions on the Reader's connection, add the WHERE to its query."""
    reader = SqliteReader(all_fixtures_db)
    try:
        register_sql_functions(reader._conn)
        where, params = trace_where(parse("model=claude-sonnet-4 ttft>500ms"))
        rows = reader._all(f"SELECT root_name FROM traces WHERE {where} ORDER BY start_ns DESC LIMIT ?", [*params, 10])
        assert rows == [("ticket-resolution agent",)]
    finally:
        reader.close()

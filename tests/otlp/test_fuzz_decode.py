"""Fuzzing the ingest path: bytes -> parse -> decode/normalize -> Writer -> Reader.

The receiver's contract (``tracetui.ingest.ack``): bytes that are not an OTLP
message are refused with ``DecodeError``; anything protobuf accepts is decoded
without an exception, written without failing its commit, and readable again
(``Reader.traces``/``span_json``/``span_detail``, the span tree), with every
span the decoder accepted actually stored.

Inputs: random bytes; mutations (bit flips, truncations, splices, deletions,
byte pokes) of the real fixture records, traces and logs; and structured random
export requests whose attribute keys come from the normalizer's own key set and
the evaluation shapes, with hostile typed values and first-token / evaluation /
exception events.

Hypothesis settings: ``derandomize=True`` (examples derived from each test's
source, not a random seed) with ``database=None``, so every run, locally and in
CI, checks the same inputs: a failure is reproducible and can never appear or
vanish between two runs of the same code. The examples are the regression net;
to explore further, set ``TRACETUI_FUZZ_EXAMPLES=5000`` which switches to random
seeds with that many examples per test. ``deadline=None``: a single example
that commits to SQLite may take tens of ms on a loaded machine, which is not a
failure. Together the tests stay well under 20 s.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import FIXTURES, read_records
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tracetui.llm import evals, semconv
from tracetui.model.rows import COL, Decoded
from tracetui.otlp.decode import DecodeError, decode_logs, decode_spans, parse_logs_request, parse_trace_request
from tracetui.otlp.metrics import decode_metrics, parse_metrics_request
from tracetui.otlp.signals import decode_request as decode_export
from tracetui.query import metric_stats
from tracetui.query.export import span_json
from tracetui.query.tree import build_tree, flatten
from tracetui.store.reader import SqliteReader
from tracetui.store.writer import Writer

_EXPLORE = int(os.environ.get("TRACETUI_FUZZ_EXAMPLES", "0"))


def fuzz_settings(examples: int):
    return settings(
        max_examples=_EXPLORE or examples,
        deadline=None,
        derandomize=not _EXPLORE,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# --- the path under test ------------------------------------------------------------------------

SIGNALS = {
    "traces": (parse_trace_request, decode_spans),
    "logs": (parse_logs_request, decode_logs),
    "metrics": (parse_metrics_request, decode_metrics),
}


def decode(signal: str, data: bytes) -> Decoded | None:
    """What ingest does first: None when the bytes are refused (DecodeError, the only allowed exception)."""
    try:
        decoded = decode_export(signal, data)
    except DecodeError:
        return None
    for row in decoded.spans:  # each raw copy (cut from the request bytes) is the span of its row
        span = Span.FromString(row[COL["raw"]])
        assert (span.trace_id, span.span_id, span.name) == (row[COL["trace_id"]], row[COL["span_id"]], row[COL["name"]])
    return decoded


class Store:
    """One Writer and one Reader over a database shared by every example of the module.

    Sharing is deliberate: later examples land on trace ids earlier ones wrote,
    which drives the writer's merge and recompute paths too.
    """

    def __init__(self, path: Path) -> None:
        self.writer = Writer(path)
        self.writer.start()
        self.reader = SqliteReader(path)

    def write_and_read(self, decoded: Decoded) -> None:
        ticket = self.writer.submit(decoded)
        assert ticket.wait(60), "the writer did not answer"
        assert ticket.error is None, f"the commit failed: {ticket.error!r}"
        reader = self.reader
        accepted: dict[bytes, set[bytes]] = {}
        for row in decoded.spans:
            accepted.setdefault(row[COL["trace_id"]], set()).add(row[COL["span_id"]])
        for trace_id, span_ids in accepted.items():
            assert reader.trace(trace_id) is not None
            rows = span_json(reader, trace_id)
            json.dumps(rows, default=str)  # what `tracetui spans --json` prints
            assert span_ids <= {bytes.fromhex(r["span_id"]) for r in rows}, "an accepted span was not stored"
            spans = reader.spans(trace_id)
            lines = flatten(build_tree(spans))
            assert sorted(line.span.span_id for line in lines) == sorted(s.span_id for s in spans)
            for span_id in list(span_ids)[:3]:
                assert reader.span_detail(trace_id, span_id) is not None
        for log in decoded.logs[:3]:
            trace_id, span_id = log[1], log[2]
            if trace_id and span_id:
                reader.span_logs(trace_id, span_id)
        for row in reader.traces(0, 50):
            json.dumps(row.to_json())
        reader.counters()
        if decoded.metrics is not None:
            metric_stats.compute(self.reader)  # what the Stats screen shows of them

    def close(self) -> None:
        self.reader.close()
        self.writer.stop()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = Store(tmp_path_factory.mktemp("fuzz") / "fuzz.db")
    yield s
    s.close()


# --- random and mutated bytes ----------------------------------------------------------------------

RECORDS: list[tuple[str, bytes]] = [
    (path.name.split(".")[-2] if path.name.endswith((".logs.otlp", ".metrics.otlp")) else "traces", record)
    for path in sorted(FIXTURES.glob("*.otlp"))
    if not path.name.endswith(".metrics.otlp")
    for record in read_records(path)
]
#: Bytes that mean something to a protobuf parser: varint continuation, wire types, lengths.
INTERESTING = (0x00, 0x01, 0x02, 0x07, 0x08, 0x0A, 0x12, 0x7F, 0x80, 0xFF)


@st.composite
def mutated_record(draw) -> tuple[str, bytes]:
    signal, original = draw(st.sampled_from(RECORDS))
    data = bytearray(original)
    for _ in range(draw(st.sampled_from((1, 1, 2, 3)))):
        op = draw(st.sampled_from(("flip", "poke", "truncate", "splice", "delete", "duplicate")))
        size = len(data)
        at = draw(st.integers(0, max(0, size - 1)))
        if op == "flip" and size:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "poke" and size:
            data[at] = draw(st.sampled_from(INTERESTING))
        elif op == "truncate":
            data = data[: draw(st.integers(0, size))]
        elif op == "splice":  # a piece of another record (or of itself) pasted over / into this one
            _, other = draw(st.sampled_from(RECORDS))
            start = draw(st.integers(0, len(other)))
            piece = other[start : start + draw(st.integers(0, 64))]
            data[at : at + draw(st.integers(0, len(piece)))] = piece
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 32))]
    return signal, bytes(data)


@fuzz_settings(400)
@given(signal=st.sampled_from(sorted(SIGNALS)), data=st.binary(max_size=512))
def test_random_bytes_are_decoded_or_refused(signal, data):
    decode(signal, data)


@fuzz_settings(250)
@given(case=mutated_record())
def test_mutated_fixture_records_are_decoded_or_refused_and_what_decodes_is_stored(store, case):
    signal, data = case
    decoded = decode(signal, data)
    event("refused" if decoded is None else "stored" if decoded.count else "decoded, nothing to store")
    if decoded is not None and decoded.count:
        store.write_and_read(decoded)


def test_unmutated_fixture_records_all_decode(store):
    """The mutation test starts from valid inputs (else it would only test the parser's refusals)."""
    for signal, data in RECORDS:
        decoded = decode(signal, data)
        assert decoded is not None and decoded.count and not decoded.rejected
        store.write_and_read(decoded)


# --- structured requests -----------------------------------------------------------------------------

EVAL_KEYS = [
    "gen_ai.evaluation.name", "gen_ai.evaluation.score.value", "gen_ai.evaluation.score.label",
    "gen_ai.evaluation.explanation", "gen_ai.evaluation.target_span_id", "gen_ai.response.id",
    "eval.name", "eval.score", "eval.label", "eval.explanation", "eval.relevance", "eval.relevance.score",
    "eval.relevance.label", "eval.relevance.reason", "evaluations.0.evaluation.name",
    "evaluations.0.evaluation.score", "evaluations.0.evaluation.label", "evaluations.1.evaluation.explanation",
    "annotations.0.annotation.name", "annotations.0.annotation.score", "annotations.x.annotation.label",
    "event.name", "exception.type", "exception.message",
]  # fmt: skip
KEYS = st.one_of(
    st.sampled_from(sorted(semconv._WANTED) + EVAL_KEYS),  # the normalizer's key set
    st.text(max_size=12),
)
TEXTS = st.one_of(
    st.text(max_size=24),
    st.sampled_from([
        "chat", "embeddings", "LLM", "AGENT", "EVALUATOR", "TOOL", "openai", "anthropic", "gpt-4o", "claude-sonnet-4",
        "pass", "fail", "0.5", "-1", "1e309", "nan", "inf", "9" * 80, "[\"stop\"]", "{\"model\": \"gpt-4o\", \"stream\": true}",
        "{\"cache_read\": 99999999999999999999}", "{", "b7ad6b7169203331", "00000000000000000000000000000000",
        "\x1b[31m[bold]x[/]", "",
    ]),
)  # fmt: skip


def _array(values: list[AnyValue]) -> AnyValue:
    return AnyValue(array_value=ArrayValue(values=values))


def _kvlist(pairs: list[tuple[str, AnyValue]]) -> AnyValue:
    return AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in pairs]))


SCALARS = st.one_of(
    TEXTS.map(lambda v: AnyValue(string_value=v)),
    st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63)])).map(
        lambda v: AnyValue(int_value=v)
    ),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda v: AnyValue(double_value=v)),
    st.booleans().map(lambda v: AnyValue(bool_value=v)),
    st.binary(max_size=20).map(lambda v: AnyValue(bytes_value=v)),
    st.just(AnyValue()),  # a value with nothing set
)
#: Typed AnyValues, nested arrays and kvlists (duplicate keys included: the wire allows them).
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3).map(_array) | st.lists(st.tuples(KEYS, inner), max_size=3).map(_kvlist),
    max_leaves=4,
)


def attributes(max_size: int):
    return st.lists(st.tuples(KEYS, VALUES), max_size=max_size)


def fill(target, pairs) -> None:
    target.extend(KeyValue(key=k, value=v) for k, v in pairs)


def text_value(text: str) -> AnyValue:
    return AnyValue(string_value=text)


#: Attributes that make the normalizer see a model call, an agent, a tool, an evaluator...
KIND_PAIRS = st.sampled_from([
    ("gen_ai.operation.name", "chat"), ("gen_ai.operation.name", "embeddings"), ("gen_ai.operation.name", "invoke_agent"),
    ("gen_ai.operation.name", "execute_tool"), ("openinference.span.kind", "LLM"), ("openinference.span.kind", "AGENT"),
    ("openinference.span.kind", "EVALUATOR"), ("fi.span.kind", "EVALUATOR"), ("traceloop.span.kind", "workflow"),
    ("llm.request.type", "chat"), ("gen_ai.span.kind", "RETRIEVER"),
]).map(lambda pair: [(pair[0], text_value(pair[1]))])  # fmt: skip
#: The OTel GenAI shape: the only one an evaluation event or log record uses.
GEN_AI_EVALUATION = ("gen_ai.evaluation.name", "gen_ai.evaluation.score.value", "gen_ai.evaluation.score.label",
                     "gen_ai.evaluation.explanation")  # fmt: skip
#: The evaluation shapes evals.py reads: (name key, score key, label key, explanation key).
EVAL_SHAPES = st.sampled_from([
    GEN_AI_EVALUATION,
    ("eval.name", "eval.score", "eval.label", "eval.explanation"),
    (None, "eval.faithfulness.score", "eval.faithfulness.label", "eval.faithfulness.reason"),
    (None, "eval.groundedness", "eval.x.label", "eval.groundedness.reason"),
    ("evaluations.0.evaluation.name", "evaluations.0.evaluation.score", "evaluations.0.evaluation.label",
     "evaluations.0.evaluation.explanation"),
    ("annotations.1.annotation.name", "annotations.1.annotation.score", "annotations.1.annotation.label",
     "annotations.1.annotation.explanation"),
])  # fmt: skip
RESPONSE_ID = st.sampled_from(["resp-1", "resp-2", ""]).map(lambda r: [("gen_ai.response.id", text_value(r))])
GA_SHAPE = st.just(GEN_AI_EVALUATION)


@st.composite
def evaluation(draw, shapes=EVAL_SHAPES) -> list[tuple[str, AnyValue]]:
    """One evaluation result in one of the known shapes, with hostile typed fields."""
    name_key, score_key, label_key, explanation_key = draw(shapes)
    pairs = [(score_key, draw(SCALARS))]
    if name_key:
        pairs.append((name_key, draw(st.one_of(TEXTS.map(text_value), SCALARS))))
    if draw(st.booleans()):
        pairs.append((label_key, draw(st.one_of(TEXTS.map(text_value), SCALARS))))
    if draw(st.booleans()):
        pairs.append((explanation_key, draw(VALUES)))
    if draw(st.booleans()):
        pairs += draw(RESPONSE_ID)
    return pairs


def span_attributes(max_random: int):
    """Maybe a kind, maybe an evaluation, maybe a response id, then random keys and values."""
    maybe = lambda strategy: st.one_of(st.just([]), strategy)  # noqa: E731
    return st.tuples(maybe(KIND_PAIRS), maybe(evaluation()), maybe(RESPONSE_ID), attributes(max_random)).map(
        lambda parts: [pair for part in parts for pair in part]
    )


def mostly(valid: list[bytes], invalid: list[bytes], max_size: int):
    """A valid id nine times in ten (else almost every span would be rejected before the interesting code)."""
    broken = st.one_of(st.sampled_from(invalid), st.binary(max_size=max_size))
    return st.integers(0, 9).flatmap(lambda roll: st.sampled_from(valid) if roll else broken)


TRACE_IDS = mostly([b"\x7a" * 16, b"\x7b" * 16], [bytes(16), b"", b"\x7a" * 15, b"\x7a" * 17], 17)
SPAN_IDS = mostly([bytes([0x5E, n]) * 4 for n in range(1, 5)], [bytes(8), b"", b"\x5e" * 7, b"\x5e" * 9], 9)
BASE = 1_795_483_700_000_000_000
TIMES = st.one_of(
    st.integers(BASE, BASE + 10**10),
    st.sampled_from([0, 1, 2**63 - 1, 2**63, 2**64 - 1]),
    st.integers(0, 2**64 - 1),
)
EVENT_NAMES = st.one_of(
    st.just(evals.EVENT_NAME),
    st.sampled_from(
        sorted(semconv._FIRST_TOKEN_EVENTS)
        + [evals.EVENT_NAME, "exception", "gen_ai.choice", "gen_ai.content.completion", "gen_ai.user.message"]
    ),  # fmt: skip
    st.text(max_size=12),
)
INT32 = st.integers(-(2**31), 2**31 - 1)
UINT32 = st.integers(0, 2**32 - 1)


@st.composite
def span_fields(draw, span) -> None:
    span.trace_id = draw(TRACE_IDS)
    span.span_id = draw(SPAN_IDS)
    span.parent_span_id = draw(st.one_of(st.just(b""), SPAN_IDS))
    span.name = draw(TEXTS)
    span.kind = draw(st.one_of(st.integers(0, 5), INT32))  # open enum: unknown values survive parsing
    span.start_time_unix_nano = draw(TIMES)
    span.end_time_unix_nano = draw(st.one_of(TIMES, st.just(span.start_time_unix_nano)))
    span.status.code = draw(st.one_of(st.integers(0, 2), INT32))
    span.status.message = draw(TEXTS)
    span.trace_state = draw(st.text(max_size=8))
    span.flags = draw(UINT32)
    span.dropped_attributes_count, span.dropped_events_count, span.dropped_links_count = draw(
        st.tuples(UINT32, UINT32, UINT32)
    )
    fill(span.attributes, draw(span_attributes(4)))
    for _ in range(draw(st.integers(0, 2))):
        event = span.events.add(name=draw(EVENT_NAMES), time_unix_nano=draw(TIMES))
        if event.name == evals.EVENT_NAME:
            fill(event.attributes, draw(evaluation(GA_SHAPE)))
        fill(event.attributes, draw(attributes(2)))
    for _ in range(draw(st.integers(0, 1))):
        link = span.links.add(trace_id=draw(TRACE_IDS), span_id=draw(SPAN_IDS), trace_state=draw(st.text(max_size=4)))
        fill(link.attributes, draw(attributes(2)))


@st.composite
def trace_requests(draw) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.sampled_from((1, 1, 2)))):
        rs = request.resource_spans.add(schema_url=draw(st.text(max_size=6)))
        fill(rs.resource.attributes, draw(st.lists(st.tuples(st.sampled_from(["service.name", "host.name"]) | KEYS,
                                                             VALUES), max_size=2)))  # fmt: skip
        for _ in range(draw(st.sampled_from((1, 1, 2)))):
            ss = rs.scope_spans.add()
            ss.scope.name, ss.scope.version = draw(TEXTS), draw(TEXTS)
            fill(ss.scope.attributes, draw(attributes(1)))
            for _ in range(draw(st.integers(1, 3))):
                draw(span_fields(ss.spans.add()))
    return request


@st.composite
def log_requests(draw) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    fill(rl.resource.attributes, draw(attributes(2)))
    sl = rl.scope_logs.add()
    for _ in range(draw(st.integers(1, 4))):
        record = sl.log_records.add(
            time_unix_nano=draw(TIMES), observed_time_unix_nano=draw(TIMES), severity_number=draw(INT32),
            severity_text=draw(TEXTS), event_name=draw(st.one_of(st.just(evals.EVENT_NAME), EVENT_NAMES)),
            trace_id=draw(TRACE_IDS),
            span_id=draw(st.one_of(st.just(b""), SPAN_IDS)), flags=draw(UINT32),
        )  # fmt: skip
        record.body.CopyFrom(draw(VALUES))
        if record.event_name == evals.EVENT_NAME or draw(st.booleans()):
            fill(record.attributes, draw(evaluation(GA_SHAPE)))
        fill(record.attributes, draw(attributes(3)))
    return request


@fuzz_settings(100)
@given(request=trace_requests())
def test_random_trace_requests_decode_store_and_read_back(store, request):
    data = request.SerializeToString()
    decoded = decode("traces", data)
    assert decoded is not None  # protobuf wrote it, protobuf reads it
    sent = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    assert decoded.count + decoded.rejected == sent  # every span accepted or rejected with a reason
    if decoded.rejected:
        assert decoded.rejection_message.startswith("rejected ")
    kinds = {row[COL["llm_kind"]] for row in decoded.spans} - {None}
    event(f"normalized kinds: {', '.join(sorted(kinds)) or 'none'}")
    event("with evaluations" if decoded.evaluations else "without evaluations")
    if decoded.count:
        store.write_and_read(decoded)


@fuzz_settings(100)
@given(request=log_requests())
def test_random_log_requests_decode_store_and_read_back(store, request):
    decoded = decode("logs", request.SerializeToString())
    assert decoded is not None
    event("with evaluations" if decoded.evaluations else "without evaluations")
    if decoded.count:
        store.write_and_read(decoded)

"""tracetui.llm.evals: evaluation results from spans and log records, every shape, hostile values, real fixtures."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from helpers import any_value, kv_list
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tracetui.llm import evals
from tracetui.llm.evals import Evaluation, from_log_record, from_span, is_groundedness, passed
from tracetui.otlp.files import read_length_delimited

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

TID = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
SID = bytes.fromhex("b7ad6b7169203331")
OTHER_TID = bytes.fromhex("80f198ee56343ba864fe8b2a57d3eff7")
OTHER_SID = bytes.fromhex("e457b5a2e4d86bd1")
START_NS = 1_700_000_000_000_000_000
END_NS = START_NS + 2_000_000_000
EVENT_NS = START_NS + 1_500_000_000


# --- builders ------------------------------------------------------------------------


def kvs(attrs: dict | None) -> list[KeyValue]:
    return kv_list(attrs or {})


def event(attrs: dict, name: str = "gen_ai.evaluation.result", time_ns: int = EVENT_NS) -> Span.Event:
    return Span.Event(name=name, time_unix_nano=time_ns, attributes=kvs(attrs))


def link(trace_id: bytes = OTHER_TID, span_id: bytes = OTHER_SID) -> Span.Link:
    return Span.Link(trace_id=trace_id, span_id=span_id)


def span(attrs: dict | None = None, events=(), links=(), trace_id: bytes = TID, span_id: bytes = SID) -> Span:
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        name="chat gpt-4o",
        start_time_unix_nano=START_NS,
        end_time_unix_nano=END_NS,
        attributes=kvs(attrs),
        events=list(events),
        links=list(links),
    )


def log_record(
    attrs: dict | None = None,
    event_name: str = "gen_ai.evaluation.result",
    trace_id: bytes = TID,
    span_id: bytes = SID,
    time_ns: int = EVENT_NS,
    observed_ns: int = 0,
    body=None,
) -> LogRecord:
    record = LogRecord(
        event_name=event_name,
        trace_id=trace_id,
        span_id=span_id,
        time_unix_nano=time_ns,
        observed_time_unix_nano=observed_ns,
        attributes=kvs(attrs),
    )
    if body is not None:
        record.body.CopyFrom(any_value(body))
    return record


def ga(name="groundedness", score=0.92, label="grounded", explanation="supported by KB-101", **extra) -> dict:
    """gen_ai.evaluation.* attributes (None = leave the key out)."""
    out = {
        "gen_ai.evaluation.name": name,
        "gen_ai.evaluation.score.value": score,
        "gen_ai.evaluation.score.label": label,
        "gen_ai.evaluation.explanation": explanation,
    }
    out.update(extra)
    return {k: v for k, v in out.items() if v is not None}


def ev(
    name="groundedness",
    score=0.92,
    label="grounded",
    explanation="supported by KB-101",
    source="span event",
    trace_id=TID,
    span_id=SID,
    response_id=None,
    time_ns=EVENT_NS,
) -> Evaluation:
    return Evaluation(
        TID if trace_id is None else trace_id, span_id, response_id, name, score, label, explanation, source, time_ns
    )


def summary(evaluations: list[Evaluation]) -> list[tuple]:
    return [(e.name, e.score, e.label, e.explanation, e.span_id, e.source) for e in evaluations]


# --- the cheap path -------------------------------------------------------------------


@pytest.mark.parametrize(
    "s",
    [
        span(),
        span(
            {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "llm.token_count.prompt": 3},
            events=[Span.Event(name="First Token Stream Event"), Span.Event(name="exception")],
        ),
        # An EVALUATOR span (with its link) but nothing evaluated on it.
        span({"openinference.span.kind": "EVALUATOR", "input.value": "x"}, links=[link()]),
        # Lookalike keys that are not evaluation shapes.
        span({"evaluation.name": "x", "trace.evaluations.0.evaluation.name": "coherence", "geval.score": 1.0}),
    ],
    ids=["empty", "llm-span", "evaluator-without-results", "lookalikes"],
)
def test_spans_without_evaluations_give_nothing(s):
    assert from_span(s) == []


# --- 1. span events -------------------------------------------------------------------

SPAN_EVENT_CASES = [
    ("full", ga(**{"gen_ai.response.id": "chatcmpl-1"}), ev(response_id="chatcmpl-1")),
    ("int score", ga(score=1, label=None, explanation=None), ev(score=1.0, label=None, explanation=None)),
    ("numeric string score", ga(score=" 0.25 "), ev(score=0.25)),
    ("bool score", ga(score=True, label=None), ev(score=1.0, label=None)),
    ("label only", ga(score=None, explanation=None), ev(score=None, explanation=None)),
    ("explanation only", ga(score=None, label=None), ev(score=None, label=None)),
    ("non-numeric score kept by label", ga(score="high"), ev(score=None)),
    ("name is stripped", ga(name="  relevance "), ev(name="relevance")),
    ("no name", ga(name=None), None),
    ("empty name", ga(name="   "), None),
    ("name only (evaluator failed)", ga(score=None, label=None, explanation=None, **{"error.type": "timeout"}), None),
]


@pytest.mark.parametrize("attrs,expected", [c[1:] for c in SPAN_EVENT_CASES], ids=[c[0] for c in SPAN_EVENT_CASES])
def test_span_event(attrs, expected):
    got = from_span(span(events=[event(attrs)]))
    assert got == ([expected] if expected else [])


def test_span_events_other_names_are_ignored_and_event_time_falls_back_to_span_end():
    s = span(
        events=[
            event(ga(name="ignored"), name="gen_ai.evaluation"),
            event(ga(name="relevance", score=0.5, label=None, explanation=None), time_ns=0),
        ]
    )
    assert from_span(s) == [ev(name="relevance", score=0.5, label=None, explanation=None, time_ns=END_NS)]


def test_several_events_on_one_span_are_all_read_in_order():
    s = span(
        events=[
            event(ga(name="groundedness", score=0.18, label="ungrounded")),
            event(ga(name="relevance", score=0.74, label="relevant"), time_ns=EVENT_NS + 5),
        ]
    )
    assert [(e.name, e.score, e.label, e.time_ns) for e in from_span(s)] == [
        ("groundedness", 0.18, "ungrounded", EVENT_NS),
        ("relevance", 0.74, "relevant", EVENT_NS + 5),
    ]


def test_two_identical_events_are_two_runs_and_both_kept():
    s = span(events=[event(ga()), event(ga())])
    assert len(from_span(s)) == 2


# --- 2. traceAI gen_ai.evaluation.* span attributes ---------------------------------------

TRACEAI_TARGET_CASES = [
    ("no target: this span", None, SID),
    ("hex target", OTHER_SID.hex(), OTHER_SID),
    ("upper-case hex with 0x", "0x" + OTHER_SID.hex().upper(), OTHER_SID),
    ("bytes target", OTHER_SID, OTHER_SID),
    ("non-hex target", "zz" * 8, SID),
    ("too short", OTHER_SID.hex()[:-2], SID),
    ("trace-id length", OTHER_TID.hex(), SID),
    ("all zero", "0" * 16, SID),
    ("int target", 12345, SID),
    ("huge string target", "a" * 1_000_000, SID),
]


@pytest.mark.parametrize(
    "target,expected_span", [c[1:] for c in TRACEAI_TARGET_CASES], ids=[c[0] for c in TRACEAI_TARGET_CASES]
)
def test_traceai_attributes(target, expected_span):
    attrs = ga(**({"gen_ai.evaluation.target_span_id": target} if target is not None else {}))
    attrs["gen_ai.span.kind"] = "LLM"
    attrs["gen_ai.response.id"] = "chatcmpl-on-the-span"  # the span's own response, not the evaluation's
    assert from_span(span(attrs)) == [ev(source="traceAI attributes", span_id=expected_span, time_ns=END_NS)]


def test_traceai_target_only_without_a_result_is_nothing():
    assert from_span(span({"gen_ai.evaluation.target_span_id": OTHER_SID.hex()})) == []


# --- 3. eval.* per-metric attributes ---------------------------------------------------------

EVAL_ATTR_CASES = [
    (
        "score/label/explanation",
        {"eval.faithfulness.score": 0.8, "eval.faithfulness.label": "faithful", "eval.faithfulness.explanation": "ok"},
        [("faithfulness", 0.8, "faithful", "ok")],
    ),
    ("numeric string score", {"eval.relevance.score": "0.5"}, [("relevance", 0.5, None, None)]),
    (
        "legacy fi.evals: bare score + reason + latency",
        {"eval.groundedness": 0.3, "eval.groundedness.reason": "made up", "eval.groundedness.latency_ms": 812.0},
        [("groundedness", 0.3, None, "made up")],
    ),
    (
        "legacy bare int / bool",
        {"eval.toxicity": 0, "eval.is_json": True},
        [("toxicity", 0.0, None, None), ("is_json", 1.0, None, None)],
    ),
    ("bare string is not a score", {"eval.tone": "friendly"}, []),
    (
        "metadata keys are not metrics",
        {
            "eval.input": "0.5",
            "eval.output.answer": "x",
            "eval.evaluated_at": 1_700_000_000.5,
            "eval.sample_rate": 0.1,
            "eval.model": "gpt-4o-mini",
            "eval.metric": "relevance",
            "eval.relevance.latency_ms": 3.0,
            "eval.score.relevance": 0.9,
            "eval.input.score": 1.0,
        },
        [],
    ),
    (
        "single result: eval.name + eval.score/label/explanation",
        {"eval.name": "correctness", "eval.score": 1.0, "eval.label": "correct", "eval.explanation": "matches"},
        [("correctness", 1.0, "correct", "matches")],
    ),
    ("eval.score without eval.name", {"eval.score": 0.5}, []),
    ("label only", {"eval.pii.label": "clean"}, [("pii", None, "clean", None)]),
    ("latency only", {"eval.pii.latency_ms": 3.0}, []),
    ("dotted metric name", {"eval.answer.relevance.score": 0.7}, [("answer.relevance", 0.7, None, None)]),
]


@pytest.mark.parametrize("attrs,expected", [c[1:] for c in EVAL_ATTR_CASES], ids=[c[0] for c in EVAL_ATTR_CASES])
def test_eval_attributes(attrs, expected):
    got = from_span(span(attrs))
    assert [(e.name, e.score, e.label, e.explanation) for e in got] == expected
    assert all(e.source == "eval attributes" and e.span_id == SID and e.time_ns == END_NS for e in got)


# --- 4. OpenInference evaluations / annotations ---------------------------------------------------


def test_openinference_evaluations_reassembled_by_index():
    attrs = {
        "openinference.span.kind": "LLM",
        # out of order on purpose, and with the fields we do not keep
        "evaluations.1.evaluation.score": 0.2,
        "evaluations.0.evaluation.name": "relevance",
        "evaluations.1.evaluation.name": "groundedness",
        "evaluations.0.evaluation.label": "relevant",
        "evaluations.1.evaluation.explanation": "no source",
        "evaluations.0.evaluation.annotator_kind": "LLM",
        "evaluations.0.evaluation.identifier": "judge-v2",
        "evaluations.0.evaluation.metadata": '{"rubric": "2"}',
        "evaluations.10.evaluation.name": "tenth",
        "evaluations.10.evaluation.score": 10,
    }
    assert summary(from_span(span(attrs))) == [
        ("relevance", None, "relevant", None, SID, "OpenInference evaluations"),
        ("groundedness", 0.2, None, "no source", SID, "OpenInference evaluations"),
        ("tenth", 10.0, None, None, SID, "OpenInference evaluations"),
    ]


def test_openinference_annotations():
    attrs = {
        "annotations.0.annotation.name": "hallucination",
        "annotations.0.annotation.score": 1,
        "annotations.0.annotation.label": "hallucinated",
        "annotations.0.annotation.explanation": "not supported",
        "annotations.0.annotation.annotator_kind": "HUMAN",
    }
    assert from_span(span(attrs)) == [
        ev("hallucination", 1.0, "hallucinated", "not supported", "OpenInference annotations", time_ns=END_NS)
    ]


OI_SKIP_CASES = [
    ("no name", {"evaluations.0.evaluation.score": 0.5, "evaluations.0.evaluation.label": "x"}),
    ("name only", {"evaluations.0.evaluation.name": "x", "evaluations.0.evaluation.annotator_kind": "LLM"}),
    ("non-numeric index", {"evaluations.a.evaluation.name": "x", "evaluations.a.evaluation.score": 1}),
    ("unicode digit index", {"evaluations.².evaluation.name": "x", "evaluations.².evaluation.score": 1}),
    (
        "huge index",
        {
            "evaluations.99999999999999999999.evaluation.name": "x",
            "evaluations.99999999999999999999.evaluation.score": 1,
        },
    ),
    ("wrong infix", {"evaluations.0.annotation.name": "x", "evaluations.0.annotation.score": 1}),
    ("no index", {"evaluations.evaluation.name": "x", "evaluations.evaluation.score": 1}),
    ("trace scope", {"trace.evaluations.0.evaluation.name": "x", "trace.evaluations.0.evaluation.score": 1}),
    (
        "session scope",
        {
            "session.id": "s",
            "session.annotations.0.annotation.name": "x",
            "session.annotations.0.annotation.label": "ok",
        },
    ),
]


@pytest.mark.parametrize("attrs", [c[1] for c in OI_SKIP_CASES], ids=[c[0] for c in OI_SKIP_CASES])
def test_openinference_objects_that_are_skipped(attrs):
    assert from_span(span(attrs)) == []


# --- 5. EVALUATOR carrier spans -----------------------------------------------------------------

OI_RESULT = {"evaluations.0.evaluation.name": "hallucination", "evaluations.0.evaluation.label": "hallucinated"}


@pytest.mark.parametrize(
    "attrs,links,expected_target",
    [
        (
            {"openinference.span.kind": "EVALUATOR", **OI_RESULT},
            [link()],
            (OTHER_TID, OTHER_SID, "evaluator span link"),
        ),
        ({"gen_ai.span.kind": "EVALUATOR", **ga()}, [link()], (OTHER_TID, OTHER_SID, "evaluator span link")),
        ({"fi.span.kind": "evaluator", **OI_RESULT}, [link()], (OTHER_TID, OTHER_SID, "evaluator span link")),
        # link within the same trace, or with a broken trace id: the carrier's trace
        (
            {"openinference.span.kind": "EVALUATOR", **OI_RESULT},
            [link(trace_id=b"")],
            (TID, OTHER_SID, "evaluator span link"),
        ),
        # no link (fi.evals' child EVALUATOR spans): the carrier stays the target
        ({"openinference.span.kind": "EVALUATOR", **OI_RESULT}, [], (TID, SID, "OpenInference evaluations")),
        # two links: ambiguous, the carrier stays the target
        (
            {"openinference.span.kind": "EVALUATOR", **OI_RESULT},
            [link(), link(span_id=b"\x01" * 8)],
            (TID, SID, "OpenInference evaluations"),
        ),
        # a link with a bad span id
        (
            {"openinference.span.kind": "EVALUATOR", **OI_RESULT},
            [link(span_id=b"\x00" * 8)],
            (TID, SID, "OpenInference evaluations"),
        ),
        # not an EVALUATOR: a fallback span that links to the failed call keeps its own results
        ({"openinference.span.kind": "LLM", **OI_RESULT}, [link()], (TID, SID, "OpenInference evaluations")),
    ],
    ids=[
        "oi-kind",
        "gen_ai-kind",
        "fi-kind-lowercase",
        "same-trace-link",
        "no-link",
        "two-links",
        "zero-link",
        "not-evaluator",
    ],
)
def test_evaluator_carrier_targets_its_single_link(attrs, links, expected_target):
    got = from_span(span(attrs, links=links))
    assert [(e.trace_id, e.span_id, e.source) for e in got] == [expected_target]


def test_evaluator_carrier_moves_span_events_too():
    s = span({"openinference.span.kind": "EVALUATOR"}, events=[event(ga())], links=[link()])
    assert from_span(s) == [ev(trace_id=OTHER_TID, span_id=OTHER_SID, source="evaluator span link")]


def test_evaluator_explicit_target_span_id_wins_over_the_link():
    third = bytes.fromhex("1111222233334444")
    s = span(
        {"gen_ai.span.kind": "EVALUATOR", **ga(**{"gen_ai.evaluation.target_span_id": third.hex()})}, links=[link()]
    )
    assert [(e.trace_id, e.span_id, e.source) for e in from_span(s)] == [(TID, third, "traceAI attributes")]
    # ... and when it names the linked span, it takes the link's trace.
    s = span(
        {"gen_ai.span.kind": "EVALUATOR", **ga(**{"gen_ai.evaluation.target_span_id": OTHER_SID.hex()})}, links=[link()]
    )
    assert [(e.trace_id, e.span_id) for e in from_span(s)] == [(OTHER_TID, OTHER_SID)]


# --- dedupe within one span -------------------------------------------------------------------


def test_same_result_in_several_shapes_is_kept_once_from_the_most_specific_source():
    attrs = {
        # fi.evals dual-write: gen_ai.evaluation.* + legacy eval.<metric>
        **ga(label=None, explanation=None),
        "eval.groundedness": 0.92,
        "eval.groundedness.reason": "supported by KB-101",
        # and the same result in both OpenInference forms
        "evaluations.0.evaluation.name": "groundedness",
        "evaluations.0.evaluation.score": 0.92,
        "annotations.0.annotation.name": "groundedness",
        "annotations.0.annotation.score": 0.92,
        "annotations.0.annotation.label": "grounded",
    }
    s = span(attrs, events=[event(ga(label=None, explanation=None, **{"gen_ai.response.id": "r-1"}))])
    got = from_span(s)
    # one result, from the span event, completed with the label and explanation the others had
    assert got == [ev(response_id="r-1")]


@pytest.mark.parametrize(
    "attrs,count",
    [
        ({**ga(score=0.9), "eval.groundedness": 0.1}, 2),  # different scores
        ({**ga(label="grounded"), "eval.groundedness.score": 0.92, "eval.groundedness.label": "ungrounded"}, 2),
        ({**ga(), "eval.relevance": 0.92}, 2),  # different names
        (
            {**ga(**{"gen_ai.evaluation.target_span_id": OTHER_SID.hex()}), "eval.groundedness": 0.92},
            2,
        ),  # different targets
        ({**ga(label="Grounded"), "eval.groundedness.score": 0.92, "eval.groundedness.label": "grounded"}, 1),
    ],
    ids=["scores", "labels", "names", "targets", "label-case"],
)
def test_dedupe_only_merges_the_same_result(attrs, count):
    assert len(from_span(span(attrs))) == count


def test_results_come_out_most_specific_source_first():
    attrs = {
        "eval.toxicity": 0.0,
        **ga(name="relevance"),
        "annotations.0.annotation.name": "correctness",
        "annotations.0.annotation.label": "correct",
    }
    got = from_span(span(attrs, events=[event(ga(name="groundedness"))]))
    assert [(e.name, e.source) for e in got] == [
        ("groundedness", "span event"),
        ("correctness", "OpenInference annotations"),
        ("relevance", "traceAI attributes"),
        ("toxicity", "eval attributes"),
    ]


# --- robustness ------------------------------------------------------------------------------------

SCORE_CASES = [
    ("nan double", math.nan, None),
    ("inf double", math.inf, None),
    ("-inf double", -math.inf, None),
    ("nan string", "nan", None),
    ("inf string", "Infinity", None),
    ("overflowing string", "1e999", None),
    ("empty string", "", None),
    ("long numeric string", "0." + "1" * 100, None),
    ("array", [0.5], None),
    ("kvlist", {"value": 0.5}, None),
    ("bytes", b"\x01", None),
    ("empty AnyValue", AnyValue(), None),
    ("int64 max", 2**63 - 1, float(2**63 - 1)),
    ("negative", -3, -3.0),
]


@pytest.mark.parametrize("score,expected", [c[1:] for c in SCORE_CASES], ids=[c[0] for c in SCORE_CASES])
def test_malformed_scores_become_none_and_the_result_survives_on_its_label(score, expected):
    for s in (
        span(events=[event(ga(score=score))]),
        span(ga(score=score)),
        span(
            {
                "evaluations.0.evaluation.name": "groundedness",
                "evaluations.0.evaluation.score": any_value(score),
                "evaluations.0.evaluation.label": "grounded",
            }
        ),
        span({"eval.groundedness.score": any_value(score), "eval.groundedness.label": "grounded"}),
    ):
        (got,) = from_span(s)
        assert got.score == expected and got.label == "grounded"
    (got,) = from_log_record(log_record(ga(score=score)))
    assert got.score == expected


def test_ten_megabyte_explanation_is_cut_quickly():
    huge = "x" * 10_000_000
    start = time.perf_counter()
    (got,) = from_span(span(events=[event(ga(explanation=huge))]))
    (logged,) = from_log_record(log_record(ga(explanation=huge)))
    assert time.perf_counter() - start < 1.0
    for e in (got, logged):
        assert len(e.explanation) == evals.MAX_EXPLANATION == 4000
        assert e.explanation.endswith("…") and e.explanation.startswith("xxx")


def test_long_names_and_labels_are_cut():
    (got,) = from_span(span(ga(name="n" * 10_000, label="l" * 10_000)))
    assert len(got.name) == len(got.label) == evals.MAX_SHORT_TEXT
    assert got.name.endswith("…")


def test_non_string_fields():
    (got,) = from_span(span(ga(name=42, label=True, explanation=1.5)))
    assert (got.name, got.label, got.explanation) == ("42", "true", "1.5")
    # structured values are not names
    assert from_span(span(ga(name=["groundedness"]))) == []
    assert from_span(span(ga(name={"n": "groundedness"}))) == []


@pytest.mark.parametrize(
    "trace_id", [b"", b"\x01" * 8, b"\x01" * 17, bytes(16)], ids=["empty", "short", "long", "zero"]
)
def test_invalid_trace_id_gives_nothing(trace_id):
    assert from_span(span(ga(), events=[event(ga())], trace_id=trace_id)) == []


@pytest.mark.parametrize("span_id", [b"", b"\x01" * 4, b"\x01" * 9, bytes(8)], ids=["empty", "short", "long", "zero"])
def test_invalid_span_id_leaves_the_target_unknown(span_id):
    (got,) = from_span(span(events=[event(ga(**{"gen_ai.response.id": "r-9"}))], span_id=span_id))
    assert got.span_id is None and got.response_id == "r-9"


def test_attribute_floods_are_capped():
    attrs = {}
    for i in range(600):
        attrs[f"evaluations.{i}.evaluation.name"] = f"m{i}"
        attrs[f"evaluations.{i}.evaluation.score"] = i
    s = span(attrs, events=[event(ga())] * 100)
    start = time.perf_counter()
    got = from_span(s)
    assert time.perf_counter() - start < 1.0
    assert len(got) == evals.MAX_PER_SPAN


def test_times_beyond_int64_are_clamped():
    s = span(events=[event(ga(), time_ns=2**64 - 1)])
    assert from_span(s)[0].time_ns == 2**63 - 1


def test_hostile_mixtures_never_raise():
    # Through the private workers: the public functions' last-resort ``except`` must not
    # be what keeps this test green.
    weird_values = [None, "", "nan", "1e999", math.nan, -(2**63), b"\x00", [1, [2]], {"a": {"b": 1}}, True, "x" * 5000]
    keys = [
        "gen_ai.evaluation.name",
        "gen_ai.evaluation.score.value",
        "gen_ai.evaluation.score.label",
        "gen_ai.evaluation.explanation",
        "gen_ai.evaluation.target_span_id",
        "eval.x",
        "eval.x.score",
        "eval.name",
        "eval.",
        "eval..score",
        "evaluations.0.evaluation.name",
        "evaluations.0.evaluation.score",
        "annotations.0.annotation.",
        "openinference.span.kind",
    ]
    count = 0
    for i, _value in enumerate(weird_values):
        attrs = {key: weird_values[(i + j) % len(weird_values)] for j, key in enumerate(keys)}
        for links in ([], [link()], [link(b"", b"")]):
            result = evals._from_span(span(attrs, events=[event(attrs)], links=links))
            assert all(isinstance(e, Evaluation) and e.name for e in result)
            for trace_id, fallback in ((b"\x01" * 3, b"zz"), (TID, None), (b"", "not bytes")):
                record = log_record(attrs, trace_id=trace_id, span_id=b"\x02" * 7, body=attrs)
                assert all(e.name for e in evals._from_log_record(record, fallback))
            count += 1
    assert count == len(weird_values) * 3


# --- log records -------------------------------------------------------------------------------------


def test_log_record_event():
    record = log_record(ga(**{"gen_ai.response.id": "chatcmpl-1"}))
    assert from_log_record(record) == [ev(source="log record", response_id="chatcmpl-1")]


def test_log_record_with_the_older_event_name_attribute():
    record = log_record({"event.name": "gen_ai.evaluation.result", **ga()}, event_name="")
    assert from_log_record(record) == [ev(source="log record")]


@pytest.mark.parametrize(
    "record",
    [
        log_record(ga(), event_name="gen_ai.client.inference.operation.details"),
        log_record({"event.name": "gen_ai.choice", **ga()}, event_name=""),
        log_record(ga(), event_name=""),  # no event name at all
        log_record(ga(name=None)),
        log_record(ga(score=None, label=None, explanation=None, **{"error.type": "TimeoutError"})),
    ],
    ids=["other-event", "other-event-attribute", "no-event-name", "no-name", "evaluator-error"],
)
def test_log_records_that_are_not_results(record):
    assert from_log_record(record) == []


def test_log_record_without_span_id_is_found_later_by_response_id():
    record = log_record(ga(**{"gen_ai.response.id": "chatcmpl-7"}), span_id=b"")
    (got,) = from_log_record(record)
    assert got.span_id is None and got.response_id == "chatcmpl-7" and got.trace_id == TID
    (got,) = from_log_record(log_record(ga(), span_id=bytes(8)))
    assert got.span_id is None


def test_log_record_trace_id_fallback():
    assert from_log_record(log_record(ga(), trace_id=b""), trace_id_fallback=OTHER_TID)[0].trace_id == OTHER_TID
    assert from_log_record(log_record(ga(), trace_id=bytes(16)), trace_id_fallback=OTHER_TID)[0].trace_id == OTHER_TID
    # the record's own trace id wins
    assert from_log_record(log_record(ga()), trace_id_fallback=OTHER_TID)[0].trace_id == TID
    # nothing usable: no result
    assert from_log_record(log_record(ga(), trace_id=b"")) == []
    assert from_log_record(log_record(ga(), trace_id=b""), trace_id_fallback=b"\x01" * 8) == []
    assert from_log_record(log_record(ga(), trace_id=b""), trace_id_fallback="0af7651916cd43dd8448eb211c80319c") == []


def test_log_record_time_falls_back_to_observed_time():
    assert from_log_record(log_record(ga(), time_ns=0, observed_ns=END_NS))[0].time_ns == END_NS


def test_log_record_body_kvlist_fills_missing_fields():
    record = log_record(
        {"gen_ai.evaluation.name": "groundedness"},
        body={"gen_ai.evaluation.score.value": 0.5, "gen_ai.evaluation.name": "ignored"},
    )
    (got,) = from_log_record(record)
    assert (got.name, got.score) == ("groundedness", 0.5)


# --- passed / is_groundedness --------------------------------------------------------------------------

PASSED_CASES = [
    (0.92, None, 0.5, True),
    (0.5, None, 0.5, True),
    (0.18, "grounded", 0.5, False),  # the score decides
    (0.7, None, 0.8, False),
    (None, "grounded", 0.5, True),
    (None, "Ungrounded", 0.5, False),
    (None, " PASS ", 0.5, True),
    (None, "passed", 0.5, True),
    (None, "yes", 0.5, True),
    (None, "true", 0.5, True),
    (None, "correct", 0.5, True),
    (None, "relevant", 0.5, True),
    (None, "faithful", 0.5, True),
    (None, "OK", 0.5, True),
    (None, "fail", 0.5, False),
    (None, "failed", 0.5, False),
    (None, "false", 0.5, False),
    (None, "no", 0.5, False),
    (None, "incorrect", 0.5, False),
    (None, "irrelevant", 0.5, False),
    (None, "hallucinated", 0.5, False),
    (None, "neutral", 0.5, None),
    (None, None, 0.5, None),
    (math.nan, "grounded", 0.5, True),  # a NaN score is no score
    (math.inf, None, 0.5, None),
]


@pytest.mark.parametrize("score,label,threshold,expected", PASSED_CASES)
def test_passed(score, label, threshold, expected):
    assert passed(score, label, threshold) is expected


def test_passed_default_threshold_is_half():
    assert passed(0.5, None) is True and passed(0.49, None) is False


GROUNDEDNESS_CASES = [
    ("groundedness", True),
    ("Groundedness", True),
    ("context_groundedness", True),
    ("ContextGroundedness", True),
    ("grounded", True),
    ("is-grounded", True),
    ("faithfulness", True),
    ("Answer Faithfulness", True),
    ("faithful", True),
    ("hallucination", False),
    ("ungroundedness", False),
    ("unfaithfulness", False),
    ("ground_truth_match", False),
    ("relevance", False),
    ("", False),
]


@pytest.mark.parametrize("name,expected", GROUNDEDNESS_CASES)
def test_is_groundedness(name, expected):
    assert is_groundedness(name) is expected


# --- real fixtures -------------------------------------------------------------------------------------


def _fixture_spans(name: str) -> list[Span]:
    out = []
    for record in read_length_delimited(FIXTURES / f"{name}.otlp"):
        for resource_spans in ExportTraceServiceRequest.FromString(record).resource_spans:
            for scope_spans in resource_spans.scope_spans:
                out.extend(scope_spans.spans)
    return out


def _fixture_log_records(name: str) -> list[LogRecord]:
    out = []
    for record in read_length_delimited(FIXTURES / f"{name}.logs.otlp"):
        for resource_logs in ExportLogsServiceRequest.FromString(record).resource_logs:
            for scope_logs in resource_logs.scope_logs:
                out.extend(scope_logs.log_records)
    return out


def _attr(s: Span, key: str):
    for kv in s.attributes:
        if kv.key == key:
            return kv.value.string_value
    return None


@pytest.fixture(scope="module")
def handmade_spans() -> list[Span]:
    return _fixture_spans("handmade_agent")


def test_handmade_agent_spans(handmade_spans):
    found = {(e.name, e.score, e.label, e.trace_id, e.span_id) for s in handmade_spans for e in from_span(s)}

    chats = [s for s in handmade_spans if _attr(s, "gen_ai.operation.name") == "chat"]
    (claude,) = [s for s in chats if _attr(s, "gen_ai.request.model") == "claude-sonnet-4"]
    # the gpt-4o call of the *other* run (the first run's gpt-4o call timed out)
    (gpt4o,) = [s for s in chats if _attr(s, "gen_ai.request.model") == "gpt-4o" and s.trace_id != claude.trace_id]
    # the targets are exactly the spans whose events hold results
    holders = {s.span_id for s in handmade_spans if any(e.name == "gen_ai.evaluation.result" for e in s.events)}
    assert holders == {claude.span_id, gpt4o.span_id}

    assert found == {
        ("groundedness", 0.92, "grounded", claude.trace_id, claude.span_id),
        ("groundedness", 0.18, "ungrounded", gpt4o.trace_id, gpt4o.span_id),
        ("relevance", 0.74, "relevant", gpt4o.trace_id, gpt4o.span_id),
    }
    results = [e for s in handmade_spans for e in from_span(s)]
    assert {e.source for e in results} == {"span event"}
    # the claude span links to the failed gpt-4o call but is no EVALUATOR: its result stays on it
    assert len(claude.links) == 1
    grounded = {e.score: e for e in results if is_groundedness(e.name)}
    assert passed(grounded[0.92].score, grounded[0.92].label) is True
    assert passed(grounded[0.18].score, grounded[0.18].label) is False
    assert grounded[0.92].response_id == _attr(claude, "gen_ai.response.id")
    assert grounded[0.18].response_id == _attr(gpt4o, "gen_ai.response.id")
    assert all(e.explanation for e in results)


def test_handmade_agent_log_records_match_the_spans(handmade_spans):
    records = _fixture_log_records("handmade_agent")
    from_logs = [e for r in records for e in from_log_record(r)]
    from_spans = [e for s in handmade_spans for e in from_span(s)]
    assert len(from_logs) == 3
    assert {e.source for e in from_logs} == {"log record"}

    def key(e: Evaluation):
        return (e.name, e.score, e.label, e.trace_id, e.span_id)

    assert {key(e) for e in from_logs} == {key(e) for e in from_spans}
    # the response id alone would find the same span
    by_response = {_attr(s, "gen_ai.response.id"): s.span_id for s in handmade_spans if _attr(s, "gen_ai.response.id")}
    assert all(by_response[e.response_id] == e.span_id for e in from_logs)
    # and the same times and explanations as the span events
    assert sorted((e.time_ns, e.explanation) for e in from_logs) == sorted(
        (e.time_ns, e.explanation) for e in from_spans
    )


@pytest.mark.parametrize("name", ["openinference_openai", "traceai_openai", "openllmetry_openai", "otel_v2_openai"])
def test_library_fixtures_carry_no_evaluations(name):
    assert [e for s in _fixture_spans(name) for e in from_span(s)] == []


def test_otel_v2_log_records_are_not_evaluations():
    records = _fixture_log_records("otel_v2_openai")
    assert records
    assert [e for r in records for e in from_log_record(r)] == []

"""`tracetui demo` generator, tested without a server: the real SDK with in-memory exporters."""

from __future__ import annotations

import io
import json
import random
import time
from collections import defaultdict

import pytest
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tracetui.cli import demo

SEED = 20240611
RUNS = 30


def generate(count: int = RUNS, seed: int = SEED):
    spans = InMemorySpanExporter()
    logs = InMemoryLogRecordExporter()
    providers = demo.make_providers(lambda: spans, lambda: logs, batch=False)
    summaries = list(demo.emit_runs(providers, count, random.Random(seed)))
    return summaries, spans.get_finished_spans(), logs.get_finished_logs()


@pytest.fixture(scope="module")
def generated():
    started = time.time_ns()
    summaries, spans, logs = generate()
    return {"summaries": summaries, "spans": spans, "logs": logs, "started": started, "finished": time.time_ns()}


@pytest.fixture(scope="module")
def spans(generated):
    return generated["spans"]


@pytest.fixture(scope="module")
def by_trace(spans):
    traces = defaultdict(list)
    for span in spans:
        traces[span.context.trace_id].append(span)
    return traces


def llm_spans(spans):
    return [s for s in spans if s.attributes.get("gen_ai.operation.name") == "chat"]


def is_error(span):
    return span.status.status_code is StatusCode.ERROR


def siblings(spans, span):
    return [
        s for s in spans if s.parent is not None and span.parent is not None and s.parent.span_id == span.parent.span_id
    ]


def test_one_trace_per_run_each_with_exactly_one_root(generated, by_trace):
    assert len(by_trace) == RUNS == len(generated["summaries"])
    for trace_spans in by_trace.values():
        roots = [s for s in trace_spans if s.parent is None]
        assert len(roots) == 1
        assert roots[0].attributes["gen_ai.operation.name"] == "invoke_agent"
        assert roots[0].kind is SpanKind.INTERNAL


def test_children_lie_within_their_parent_time_window(spans):
    by_id = {s.context.span_id: s for s in spans}
    children = [s for s in spans if s.parent is not None]
    assert children
    for child in children:
        parent = by_id[child.parent.span_id]
        assert parent.context.trace_id == child.context.trace_id
        assert parent.start_time <= child.start_time <= child.end_time <= parent.end_time, child.name


def test_runs_are_simulated_instantly_and_end_around_now(generated, by_trace):
    # 30 runs of several seconds each are generated without sleeping...
    assert generated["finished"] - generated["started"] < 10e9
    durations = []
    for trace_spans in by_trace.values():
        root = next(s for s in trace_spans if s.parent is None)
        durations.append(root.end_time - root.start_time)
        # ...and each run ends at the moment it was emitted.
        assert generated["started"] <= root.end_time <= generated["finished"]
    assert sum(durations) > 60e9


def test_llm_spans_carry_models_tokens_and_messages(spans):
    calls = llm_spans(spans)
    assert len(calls) >= 2 * RUNS
    known = set(demo.MODELS)
    for span in calls:
        assert span.kind is SpanKind.CLIENT
        assert span.name == f"chat {span.attributes['gen_ai.request.model']}"
        assert span.attributes["gen_ai.request.model"] in known
        assert span.attributes["gen_ai.provider.name"] in ("openai", "anthropic")
        messages = json.loads(span.attributes["gen_ai.input.messages"])
        assert messages[0]["parts"][0]["type"] == "text"
        if is_error(span):
            continue
        assert span.attributes["gen_ai.usage.input_tokens"] > span.attributes["gen_ai.usage.output_tokens"] > 0
        assert isinstance(span.attributes["gen_ai.response.finish_reasons"], tuple)
        output = json.loads(span.attributes["gen_ai.output.messages"])
        assert output[0]["role"] == "assistant" and output[0]["finish_reason"]
    response_models = {s.attributes.get("gen_ai.response.model") for s in calls}
    assert "gpt-4o-2024-08-06" in response_models or "gpt-4o-mini-2024-07-18" in response_models
    assert any(s.attributes.get("gen_ai.usage.cache_read.input_tokens") is not None for s in calls)
    assert any(
        part["type"] == "tool_call"
        for s in calls
        if "gen_ai.output.messages" in s.attributes
        for part in json.loads(s.attributes["gen_ai.output.messages"])[0]["parts"]
    )


def test_every_run_has_retrieval_and_tool_spans(by_trace):
    for trace_spans in by_trace.values():
        ops = {s.attributes.get("gen_ai.operation.name") for s in trace_spans}
        assert {"invoke_agent", "chat", "retrieval", "execute_tool"} <= ops
        retrieval = next(s for s in trace_spans if s.attributes.get("gen_ai.operation.name") == "retrieval")
        documents = json.loads(retrieval.attributes["gen_ai.retrieval.documents"])
        assert documents and {"id", "score"} <= set(documents[0])
        assert retrieval.attributes["gen_ai.data_source.id"] and retrieval.attributes["gen_ai.retrieval.query.text"]


def test_failing_tool_has_error_status_and_exception_event(spans):
    failed_tools = [s for s in spans if s.attributes.get("gen_ai.operation.name") == "execute_tool" and is_error(s)]
    assert failed_tools
    for span in failed_tools:
        assert span.attributes["error.type"]
        event = next(e for e in span.events if e.name == "exception")
        assert {"exception.type", "exception.message", "exception.stacktrace"} <= set(event.attributes)


def test_retry_is_a_rate_limited_call_followed_by_same_model_success(spans):
    retries = 0
    for failed in llm_spans(spans):
        if failed.attributes.get("error.type") != "openai.RateLimitError":
            continue
        assert any("429" in e.attributes.get("exception.message", "") for e in failed.events)
        later = [s for s in siblings(spans, failed) if s.start_time >= failed.end_time and not is_error(s)]
        same_model = [
            s for s in later if s.attributes.get("gen_ai.request.model") == failed.attributes["gen_ai.request.model"]
        ]
        assert same_model, "a rate-limited call must be retried on the same model"
        retries += 1
    assert retries >= 1


def test_fallback_calls_another_model_and_links_to_the_failed_call(spans):
    fallbacks = 0
    by_id = {s.context.span_id: s for s in spans}
    for span in llm_spans(spans):
        for link in span.links:
            if link.attributes.get("app.link.type") != "fallback_from":
                continue
            failed = by_id[link.context.span_id]
            assert is_error(failed)
            assert failed.parent.span_id == span.parent.span_id
            assert failed.attributes["gen_ai.request.model"] != span.attributes["gen_ai.request.model"]
            assert failed.end_time <= span.start_time
            assert not is_error(span)
            fallbacks += 1
    assert fallbacks >= 1


def test_streaming_time_to_first_chunk_is_shorter_than_the_call(spans):
    streamed = [s for s in llm_spans(spans) if s.attributes.get("gen_ai.request.stream") and not is_error(s)]
    assert len(streamed) >= RUNS
    for span in streamed:
        ttfc = span.attributes["gen_ai.response.time_to_first_chunk"]
        assert 0 < ttfc * 1e9 < span.end_time - span.start_time
    chunk_events = [e for s in streamed for e in s.events if e.name == "gen_ai.content.completion.chunk"]
    assert chunk_events


def test_groundedness_results_as_span_events_and_log_records(generated, spans):
    events = [
        (span, event)
        for span in spans
        for event in span.events
        if event.name == "gen_ai.evaluation.result" and event.attributes["gen_ai.evaluation.name"] == "groundedness"
    ]
    assert len(events) >= RUNS // 2
    scores = [event.attributes["gen_ai.evaluation.score.value"] for _, event in events]
    assert any(score < 0.5 for score in scores) and any(score >= 0.5 for score in scores)
    for span, event in events:
        label = event.attributes["gen_ai.evaluation.score.label"]
        assert label == ("grounded" if event.attributes["gen_ai.evaluation.score.value"] >= 0.5 else "ungrounded")
        assert event.attributes["gen_ai.response.id"] == span.attributes["gen_ai.response.id"]

    logs = [r.log_record for r in generated["logs"]]
    by_span = {(s.context.trace_id, s.context.span_id): s for s in spans}
    grounded_logs = [r for r in logs if r.attributes["gen_ai.evaluation.name"] == "groundedness"]
    assert len(grounded_logs) == len(events)
    for record in logs:
        assert record.event_name == "gen_ai.evaluation.result"
        assert record.attributes["event.name"] == "gen_ai.evaluation.result"
        evaluated = by_span[(record.trace_id, record.span_id)]
        assert record.trace_flags == evaluated.context.trace_flags
        matching = [
            e
            for e in evaluated.events
            if e.name == "gen_ai.evaluation.result"
            and e.attributes["gen_ai.evaluation.name"] == record.attributes["gen_ai.evaluation.name"]
        ]
        assert (
            matching
            and matching[0].attributes["gen_ai.evaluation.score.value"]
            == record.attributes["gen_ai.evaluation.score.value"]
        )


def test_sessions_span_several_runs_and_services_differ(by_trace):
    conversations = defaultdict(int)
    services = set()
    for trace_spans in by_trace.values():
        root = next(s for s in trace_spans if s.parent is None)
        conversations[root.attributes["gen_ai.conversation.id"]] += 1
        services.add(root.resource.attributes["service.name"])
    assert max(conversations.values()) >= 2
    assert services == set(demo.SERVICES)


def test_some_names_contain_markup_like_characters(spans):
    assert any(name in s.name for s in spans for name in demo.ODD_TOOL_NAMES)


def test_same_seed_gives_same_structure():
    def shape(spans):
        return sorted((s.name, s.status.status_code.name, s.end_time - s.start_time) for s in spans)

    first_summaries, first_spans, _ = generate(count=8, seed=7)
    second_summaries, second_spans, _ = generate(count=8, seed=7)
    assert [s.line() for s in first_summaries] == [s.line() for s in second_summaries]
    assert shape(first_spans) == shape(second_spans)


def test_summary_lines_describe_each_run(generated):
    lines = [summary.line() for summary in generated["summaries"]]
    assert lines[0].startswith("demo: run 1 ")
    assert all(" LLM call" in line and line.endswith("s") for line in lines)
    assert any("fallback " in line and "→" in line for line in lines)
    assert any("retry " in line for line in lines)
    assert any("tool error " in line for line in lines)


def test_run_demo_with_no_runs_returns_zero_and_prints_nothing():
    out = io.StringIO()
    assert demo.run_demo("http://127.0.0.1:9", count=0, interval=0, seed=1, out=out) == 0
    assert out.getvalue() == ""

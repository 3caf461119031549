"""Cost and evaluations end to end: real decoder, real writer, real receiver for the fixtures."""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest
from genai_prices import Usage, calc_price
from helpers import (
    BASE_NS,
    FIXTURES,
    channel_to,
    fill_db,
    make_request,
    make_span,
    read_records,
    sid,
    start_receiver,
    tid,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tracetui.llm import pricing
from tracetui.query.export import span_json
from tracetui.store.reader import SqliteReader


def store(db: Path, *requests) -> SqliteReader:
    fill_db(db, requests)
    return SqliteReader(db)


def chat(n: int, model: str, *, parent: int | None = 1, start: int = 0, duration: int = 10**9, **attributes) -> Span:
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": model, **attributes}
    return make_span(tid(1), sid(n), sid(parent) if parent else None, name=f"chat {model}", start=start,
                     duration=duration, attributes=attrs, kind=Span.SPAN_KIND_CLIENT)  # fmt: skip


def expected_price(model: str, when_ns: int, **usage) -> float:
    """What genai-prices itself says (the reference, not a copied number)."""
    when = datetime.fromtimestamp(when_ns / 1e9, tz=UTC)
    return float(calc_price(Usage(**usage), model, genai_request_timestamp=when).total_price)


@pytest.fixture(autouse=True)
def no_user_prices():
    """Tests here price with the bundled data unless they configure a price file themselves."""
    pricing._pricer = pricing.Pricer()
    yield
    pricing._pricer = None


@pytest.mark.parametrize(
    ("model", "usage"),
    [
        ("gpt-4o", {"input_tokens": 1200, "output_tokens": 300}),
        ("gpt-4o-mini", {"input_tokens": 50_000, "output_tokens": 1, "cache_read_tokens": 40_000}),
        (
            "claude-sonnet-4-20250514",
            {"input_tokens": 9000, "output_tokens": 700, "cache_read_tokens": 6000, "cache_write_tokens": 2000},
        ),  # fmt: skip
        ("o3-mini", {"input_tokens": 3000, "output_tokens": 2000, "output_reasoning_tokens": 1500}),
    ],
)
def test_cost_equals_what_genai_prices_computes(tmp_path: Path, model: str, usage: dict) -> None:
    attrs = {"gen_ai.usage.input_tokens": usage["input_tokens"], "gen_ai.usage.output_tokens": usage["output_tokens"]}
    if "cache_read_tokens" in usage:
        attrs["gen_ai.usage.cache_read.input_tokens"] = usage["cache_read_tokens"]
    if "cache_write_tokens" in usage:
        attrs["gen_ai.usage.cache_creation.input_tokens"] = usage["cache_write_tokens"]
    if "output_reasoning_tokens" in usage:
        attrs["gen_ai.usage.reasoning.output_tokens"] = usage["output_reasoning_tokens"]
    reader = store(tmp_path / "c.db", make_request([chat(2, model, parent=None, **attrs)]))
    (span,) = span_json(reader, tid(1))
    assert span["cost_source"] == "priced"
    assert span["cost_usd"] == pytest.approx(expected_price(model, BASE_NS, **usage), rel=1e-12)
    assert reader.trace(tid(1)).cost_usd == pytest.approx(span["cost_usd"])


def test_provider_prefixed_model_names_are_priced(tmp_path: Path) -> None:
    reader = store(tmp_path / "p.db", make_request([chat(2, "openai/gpt-4o", parent=None,
                   **{"gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100})]))  # fmt: skip
    (span,) = span_json(reader, tid(1))
    assert span["cost_usd"] == pytest.approx(expected_price("gpt-4o", BASE_NS, input_tokens=1000, output_tokens=100))


def test_reported_cost_wins(tmp_path: Path) -> None:
    reader = store(tmp_path / "r.db", make_request([chat(2, "gpt-4o", parent=None, **{
        "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100, "llm.cost.total": 0.5})]))  # fmt: skip
    (span,) = span_json(reader, tid(1))
    assert (span["cost_usd"], span["cost_source"]) == (0.5, "reported")
    assert span["provenance"]["cost"] == "llm.cost.total"


def test_unknown_model_is_unpriced_never_zero(tmp_path: Path) -> None:
    reader = store(tmp_path / "u.db", make_request([chat(2, "my-local-llama-3", parent=None, **{
        "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100})]))  # fmt: skip
    (span,) = span_json(reader, tid(1))
    assert span["cost_usd"] is None and span["cost_source"] is None
    trace = reader.trace(tid(1))
    assert trace.cost_usd is None and trace.unpriced_calls == 1


def test_user_price_file_covers_local_models_and_overrides_bundled_prices(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[models."my-local-llama-*"]\ninput = 0.1\noutput = 0.2\n\n'
        '[models."gpt-4o"]\ninput = 1.0\noutput = 2.0\ncache_read = 0.5\n'
    )
    pricing.configure(prices)
    reader = store(
        tmp_path / "up.db",
        make_request([
            chat(2, "my-local-llama-3", parent=None, **{"gen_ai.usage.input_tokens": 1_000_000,
                                                       "gen_ai.usage.output_tokens": 1_000_000}),
            chat(3, "gpt-4o", parent=None, **{"gen_ai.usage.input_tokens": 1_000_000, "gen_ai.usage.output_tokens": 0,
                                              "gen_ai.usage.cache_read.input_tokens": 400_000}),
        ]),
    )  # fmt: skip
    spans = {s["request_model"]: s for s in span_json(reader, tid(1))}
    assert spans["my-local-llama-3"]["cost_usd"] == pytest.approx(0.3)
    assert spans["gpt-4o"]["cost_usd"] == pytest.approx(0.6 * 1.0 + 0.4 * 0.5)
    assert {s["cost_source"] for s in spans.values()} == {"user price"}


def test_bad_price_file_is_a_clear_error(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text('[models."x"]\ninput = "cheap"\n')
    with pytest.raises(pricing.PriceFileError, match="x"):
        pricing.load_user_prices(prices)


def test_totals_count_leaf_calls_once(tmp_path: Path) -> None:
    usage = {"gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100}
    agent = make_span(tid(1), sid(1), name="agent", duration=10 * 10**9,
                      attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.usage.input_tokens": 2000,
                                  "gen_ai.usage.output_tokens": 200})  # fmt: skip
    # A framework's span (LangChain ChatOpenAI) and the provider SDK's span for the SAME request,
    # overlapping in time with the same tokens and neither inside the other: one request.
    framework = chat(2, "gpt-4o", start=10**8, duration=2 * 10**9, **usage)
    sdk = chat(3, "gpt-4o", start=2 * 10**8, duration=17 * 10**8, **usage)
    # A wrapper LLM span around an inner call: only the inner (leaf) call counts.
    wrapper = chat(4, "gpt-4o-mini", start=3 * 10**9, duration=2 * 10**9, **usage)
    inner = chat(5, "gpt-4o-mini", parent=4, start=int(3.1 * 10**9), duration=10**9, **usage)
    reader = store(tmp_path / "t.db", make_request([agent, framework, sdk, wrapper, inner]))
    trace = reader.trace(tid(1))
    assert (trace.llm_calls, trace.input_tokens, trace.output_tokens) == (2, 2000, 200)
    spans = {s["span_id"]: s for s in span_json(reader, tid(1))}
    assert sum(1 for s in spans.values() if s["counted"]) == 2
    assert spans[sid(5).hex()]["counted"] and not spans[sid(4).hex()]["counted"]
    counted = [s for s in spans.values() if s["counted"]]
    assert trace.cost_usd == pytest.approx(sum(s["cost_usd"] for s in counted))
    counters = reader.counters()
    assert (counters.llm_calls, counters.tokens) == (2, 2200)


def test_session_totals_add_up_runs_of_one_conversation(tmp_path: Path) -> None:
    def run(n: int, session: str) -> list[Span]:
        root = make_span(
            tid(n),
            sid(1),
            name="agent",
            duration=10**9,
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.conversation.id": session},
        )
        call = make_span(
            tid(n),
            sid(2),
            sid(1),
            name="chat",
            duration=10**8,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 100 * n,
                "gen_ai.usage.output_tokens": 10,
            },
        )
        return [root, call]  # fmt: skip

    reader = store(tmp_path / "s.db", make_request(run(1, "conv-a")), make_request(run(2, "conv-a")),
                   make_request(run(3, "conv-b")))  # fmt: skip
    totals = reader.session_totals("conv-a")
    assert (totals["runs"], totals["llm_calls"], totals["tokens"]) == (2, 2, 100 + 10 + 200 + 10)
    runs = [reader.trace(tid(1)), reader.trace(tid(2))]
    assert totals["cost_usd"] == pytest.approx(sum(t.cost_usd for t in runs))


@pytest.fixture(scope="module")
def agent_db(tmp_path_factory) -> Path:
    """handmade_agent traces and logs, and the otel_v2 ones, through one real receiver."""
    tmp = tmp_path_factory.mktemp("evals")
    receiver = start_receiver(tmp / "e.db", cwd=tmp)
    try:
        channel = channel_to(receiver.port)
        calls = {
            kind: channel.unary_unary(f"/opentelemetry.proto.collector.{kind}.v1.{service}/Export",
                                      request_serializer=lambda b: b, response_deserializer=lambda b: b)
            for kind, service in (("trace", "TraceService"), ("logs", "LogsService"))
        }  # fmt: skip
        for name in ("handmade_agent", "otel_v2_openai"):
            for record in read_records(FIXTURES / f"{name}.otlp"):
                calls["trace"](record, timeout=10)
            for record in read_records(FIXTURES / f"{name}.logs.otlp"):
                calls["logs"](record, timeout=10)
        channel.close()
    finally:
        assert receiver.stop(signal.SIGTERM) == 0
    return tmp / "e.db"


def test_groundedness_lands_on_the_right_span_once(agent_db: Path) -> None:
    reader = SqliteReader(agent_db)
    runs = [t for t in reader.traces(0, -1) if t.service == "harness-handmade-agent"]
    by_grounding = {t.groundedness: t for t in runs}
    assert set(by_grounding) == {0.92, 0.18}
    fallback_run, bad_run = by_grounding[0.92], by_grounding[0.18]
    spans = {s["name"]: s for s in span_json(reader, fallback_run.trace_id)}
    (ev,) = spans["chat claude-sonnet-4"]["evaluations"]  # span event + log record -> one
    assert (ev["name"], ev["score"], ev["label"]) == ("groundedness", 0.92, "grounded")
    assert set(ev["source"].split(" + ")) == {"span event", "log record"}  # both routes named
    assert all(not s["evaluations"] for name, s in spans.items() if name != "chat claude-sonnet-4")
    assert (fallback_run.evals_passed, fallback_run.evals_total) == (1, 1)
    bad = {s["name"]: s for s in span_json(reader, bad_run.trace_id)}
    names = sorted((e["name"], e["score"]) for e in bad["chat gpt-4o"]["evaluations"])
    assert names == [("groundedness", 0.18), ("relevance", 0.74)]
    assert (bad_run.evals_passed, bad_run.evals_total) == (1, 2)
    strict = SqliteReader(agent_db, threshold=0.95)
    assert strict.trace(fallback_run.trace_id).evals_passed == 0


def test_message_content_log_records_appear_with_their_spans(agent_db: Path) -> None:
    from tracetui.llm.chat import extract_messages

    reader = SqliteReader(agent_db)
    runs = [t for t in reader.traces(0, -1) if t.service == "harness-otel-v2-openai"]
    shown = 0
    for run in runs:
        for span in reader.spans(run.trace_id):
            detail = reader.span_detail(run.trace_id, span.span_id)
            content_logs = [r for r in detail.logs if r["event_name"] == "gen_ai.client.inference.operation.details"]
            if content_logs:
                messages = extract_messages({}, content_logs)  # from the log records alone
                assert messages and {m.direction for m in messages} >= {"input"}
                shown += 1
    assert shown == 7  # every content record of the fixture found its span

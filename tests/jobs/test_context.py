"""The context a judge gives one call: retrieval results and tool outputs before it, and its conversation."""

from __future__ import annotations

import json

from tracetui.jobs.context import NO_ANSWER, NO_CONTEXT, call_context
from tracetui.model.views import SpanDetail


def detail(name: str, kind: str | None, start: int, end: int, **attributes) -> SpanDetail:
    row = {"name": name, "llm_kind": kind, "start_ns": start, "end_ns": end}
    return SpanDetail(row, attributes, [], [], {}, {}, "", 0)


def chat(start: int, answer: str = "Refunds are possible within 30 days.") -> SpanDetail:
    return detail(
        "chat gpt-4o", "llm", start, start + 10,
        **{"gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "Refund?"}]}]),
           "gen_ai.output.messages": json.dumps(
               [{"role": "assistant", "parts": [{"type": "text", "content": answer}]}])},
    )  # fmt: skip


def test_documents_and_tool_outputs_that_ended_before_the_call_are_its_context():
    retrieval = detail(
        "retrieve kb",
        "retriever",
        0,
        5,
        **{"gen_ai.retrieval.documents": json.dumps([{"id": "d1", "content": "Refunds are possible within 30 days."}])},
    )
    tool = detail("execute_tool lookup", "tool", 5, 8, **{"gen_ai.tool.call.result": '{"status": "shipped"}'})
    later = detail("retrieve late", "retriever", 50, 60, **{
        "gen_ai.retrieval.documents": json.dumps([{"id": "d9", "content": "Written after the call."}])})  # fmt: skip
    call = chat(10)
    context = call_context(call, [retrieval, tool, call, later])
    assert context.documents == ["Refunds are possible within 30 days.", '{"status": "shipped"}']
    assert context.conversation == ["user: Refund?"]
    assert context.answer == "Refunds are possible within 30 days."
    assert context.not_judged is None


def test_a_call_without_retrieval_or_tools_has_no_context():
    call = chat(10)
    assert call_context(call, [call]).not_judged == NO_CONTEXT


def test_a_call_without_answer_text_is_not_judged():
    retrieval = detail("retrieve", "retriever", 0, 5, **{"gen_ai.retrieval.documents": '[{"content": "x y z"}]'})
    call = detail("chat", "llm", 10, 20)
    assert call_context(call, [retrieval, call]).not_judged == NO_ANSWER


def test_in_a_long_run_each_call_gets_the_latest_texts_that_ended_before_it_oldest_first():
    """A run of 300 tool spans (every seventh output blank): two calls of the same run, read
    through one RunContext, get the latest MAX_TEXTS non-blank outputs before their start."""
    from tracetui.jobs.context import MAX_TEXTS, RunContext

    def output(i: int) -> str:
        return "   " if i % 7 == 0 else f"order {i} shipped"

    tools = [detail(f"tool {i}", "tool", 10 * i, 10 * i + 5, **{"gen_ai.tool.call.result": output(i)})
             for i in range(300)]  # fmt: skip
    early, late = chat(10 * 40 + 5), chat(10 * 250 + 7)  # the first starts just as tool 40 ends
    run = RunContext([*reversed(tools), early, late])
    for call, last in ((early, 40), (late, 250)):
        expected = [output(i) for i in range(last + 1) if output(i).strip()][-MAX_TEXTS:]
        assert run.context(call).documents == expected
        assert call_context(call, tools + [early, late]).documents == expected
    assert run.span(b"nope") is None

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

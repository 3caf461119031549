"""What a judge reads about one LLM call: its answer, and the context the answer should rest on.

The context of a call is what its run had found out before the call started:

* the documents of the run's retrieval spans that ended before it (OTel
  ``gen_ai.retrieval.documents``, OpenInference ``retrieval.documents``), read by
  ``tracetui.llm.chat.retrieval_documents``;
* the outputs of the run's tool spans that ended before it (``gen_ai.tool.call.result``,
  Vercel ``ai.toolCall.result``, or the span's output messages), and tool results
  among the call's own input messages;
* the conversation: the call's input messages (system, user, earlier turns), in
  whichever shape the library recorded them (``tracetui.llm.chat.extract_messages``).

A call whose run holds no retrieval result and no tool output has **no context**:
it is "not judged: no context", never "ungrounded" (a chat answer from the model's
own knowledge is not a grounding failure). A call whose output has no text (tool
calls only, or content capture off) is "not judged: no answer".
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from tracetui.llm.chat import extract_messages, retrieval_documents
from tracetui.model.views import SpanDetail

NO_CONTEXT = "not judged: no context"
NO_ANSWER = "not judged: no answer"
#: Context texts longer than this are cut (a judge prompt is not a database dump).
MAX_TEXT_CHARS = 8_000
#: At most this many context texts per call (the latest ones are kept).
MAX_TEXTS = 50


@dataclass(frozen=True, slots=True)
class CallContext:
    answer: str
    documents: list[str]  # retrieval results and tool outputs, oldest first
    conversation: list[str]  # "role: text" lines of the call's input

    @property
    def not_judged(self) -> str | None:
        """Why the call cannot be judged (NO_ANSWER, NO_CONTEXT), or None."""
        if not self.answer.strip():
            return NO_ANSWER
        if not self.documents:
            return NO_CONTEXT
        return None


def call_context(call: SpanDetail, run: list[SpanDetail]) -> CallContext:
    """The answer of ``call`` and the context it had, from the spans of its run."""
    return RunContext(run).context(call)


class RunContext:
    """One run's spans, ready to give many of its calls their context: sorted by end once, each
    retrieval or tool span's texts read once, and a call reads back from its start only until it
    has MAX_TEXTS texts. (Before, every call sorted and read the whole run: 1.6 s a call in a
    100,000-span run.)"""

    def __init__(self, run: list[SpanDetail]) -> None:
        self._by_id = {d.row.get("span_id"): d for d in run}
        self._ended = sorted(run, key=lambda d: int(d.row["end_ns"]))  # stable: ties keep the run's order
        self._ends = [int(d.row["end_ns"]) for d in self._ended]
        self._texts: dict[int, list[str]] = {}

    def span(self, span_id: bytes) -> SpanDetail | None:
        return self._by_id.get(span_id)

    def context(self, call: SpanDetail) -> CallContext:
        """The answer of ``call`` and the context it had (the same as reading the whole run)."""
        documents: list[str] = []
        kept = 0
        for i in range(bisect_right(self._ends, int(call.row["start_ns"])) - 1, -1, -1):
            if kept >= MAX_TEXTS:
                break  # older texts would be dropped below anyway
            if self._ended[i] is call:
                continue
            texts = self._span_texts(i)
            documents += reversed(texts)
            kept += sum(1 for t in texts if t.strip())
        documents.reverse()
        messages = extract_messages(call.attributes, call.logs)
        conversation = []
        for m in messages:
            if m.direction != "input" or not m.content:
                continue
            if m.role in ("tool", "tool-result", "function"):
                documents.append(m.content)
            conversation.append(f"{m.role}: {_cut(m.content)}")
        answer = "\n".join(m.content for m in messages if m.direction == "output" and m.content)
        return CallContext(answer, [_cut(d) for d in documents if d.strip()][-MAX_TEXTS:], conversation[-MAX_TEXTS:])

    def _span_texts(self, i: int) -> list[str]:
        texts = self._texts.get(i)
        if texts is None:
            span = self._ended[i]
            kind = span.row.get("llm_kind")
            if kind == "retriever":
                texts = retrieval_documents(span.attributes)
            elif kind == "tool":
                texts = _tool_outputs(span)
            else:
                texts = []
            self._texts[i] = texts
        return texts


def _tool_outputs(span: SpanDetail) -> list[str]:
    found = [m.content for m in extract_messages(span.attributes, span.logs) if m.direction == "output" and m.content]
    if not found:
        for key in ("output.value", "traceloop.entity.output"):
            value = span.attributes.get(key)
            if isinstance(value, str) and value:
                found.append(value)
                break
    return found


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT_CHARS else text[: MAX_TEXT_CHARS - 1] + "…"

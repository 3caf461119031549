"""Retries, fallbacks and the time split (tracetui.llm.timing), on small hand-made runs."""

from __future__ import annotations

from tracetui.llm.timing import Call, analyze
from tracetui.model.rows import SPLIT_KEYS

MS = 1_000_000
AGENT = b"A" * 8


def call(n: int, start_ms: int, end_ms: int, *, model: str | None = "gpt-4o", failed: bool = False, kind: str = "llm",
         ttft_ms: int | None = None, parent: bytes | None = AGENT, link: bytes | None = None,
         attempt_offset_ms: int | None = None, resend: int | None = None, input: object = None,
         http_status: int | None = None, tokens: tuple[int, int] | None = (10, 5)) -> Call:  # fmt: skip
    return Call(
        span_id=bytes([n]) * 8,
        parent_span_id=parent,
        kind=kind,
        request_model=model,
        response_model=None,
        status_code=2 if failed else 1,
        start_ns=start_ms * MS,
        end_ns=end_ms * MS,
        ttft_ns=None if ttft_ms is None else ttft_ms * MS,
        attempt_offset_ns=None if attempt_offset_ms is None else attempt_offset_ms * MS,
        resend_count=resend,
        link_span_id=link,
        input_tokens=tokens[0] if tokens else None,
        output_tokens=tokens[1] if tokens else None,
        http_status=http_status,
        input_key=input,
    )


def attempt(n: int, parent: int, start_ms: int, end_ms: int, status: int, *, resend: int | None = None) -> Call:
    """An HTTP client span under model call ``parent`` (what opentelemetry-instrumentation-httpx records)."""
    return call(n, start_ms, end_ms, model=None, kind=None, parent=bytes([parent]) * 8, http_status=status,
                failed=status >= 400, resend=resend, tokens=None)  # fmt: skip


def test_failed_sibling_same_model_makes_a_retry() -> None:
    calls = [call(1, 0, 300, failed=True), call(2, 800, 2000, ttft_ms=200)]
    result = analyze(calls, 0 * MS, 2000 * MS)
    timing = result.calls[bytes([2]) * 8]
    assert timing.is_retry and not timing.is_fallback
    assert timing.retry_ns == 800 * MS  # the failed attempt plus the backoff
    assert not result.calls[bytes([1]) * 8].is_retry
    assert (result.retries, result.fallbacks) == (1, 0)
    assert result.split["retry"] == 800 * MS
    assert result.split["ttft"] == 200 * MS and result.split["decode"] == 1000 * MS


def test_different_model_with_the_same_input_after_a_failure_is_a_fallback() -> None:
    calls = [
        call(1, 0, 30_000, failed=True, input="q"),
        call(2, 30_010, 33_580, model="claude-sonnet-4", ttft_ms=820, input="q"),
    ]
    result = analyze(calls, 0 * MS, 34_000 * MS)
    timing = result.calls[bytes([2]) * 8]
    assert timing.is_fallback and not timing.is_retry
    assert timing.retry_ns == 30_010 * MS
    assert result.split["fallback"] == 30_010 * MS
    assert sum(result.split.values()) == 34_000 * MS


def test_a_link_to_the_failed_call_marks_a_fallback_under_another_parent() -> None:
    calls = [call(1, 0, 100, failed=True), call(2, 200, 400, model="claude", parent=b"B" * 8, link=bytes([1]) * 8)]
    timing = analyze(calls, 0 * MS, 400 * MS).calls[bytes([2]) * 8]
    assert timing.is_fallback and timing.retry_ns == 200 * MS


def test_siblings_under_other_parents_or_successes_are_not_retries() -> None:
    calls = [
        call(1, 0, 100, failed=True, parent=b"B" * 8),
        call(2, 200, 300),  # another parent: unrelated
        call(3, 400, 500),  # after a success: just the next call
        call(4, 600, 700),
    ]
    result = analyze(calls, 0 * MS, 700 * MS)
    assert not any(t.is_retry or t.is_fallback for t in result.calls.values())


def test_overlapping_calls_are_not_retries_of_each_other() -> None:
    calls = [call(1, 0, 500, failed=True), call(2, 100, 600)]  # parallel, not after
    assert not analyze(calls, 0 * MS, 600 * MS).calls[bytes([2]) * 8].is_retry


def test_retry_inside_one_span() -> None:
    calls = [call(1, 0, 1000, attempt_offset_ms=400, ttft_ms=100)]
    result = analyze(calls, 0 * MS, 1000 * MS)
    timing = result.calls[bytes([1]) * 8]
    assert timing.is_retry and timing.retry_ns == 400 * MS
    assert result.split["retry"] == 400 * MS
    assert result.split["ttft"] == 100 * MS
    assert result.split["decode"] == 500 * MS


def test_resend_count_marks_a_retry_without_inventing_its_cost() -> None:
    timing = analyze([call(1, 0, 100, resend=1)], 0 * MS, 100 * MS).calls[bytes([1]) * 8]
    assert timing.is_retry and timing.retry_ns is None


def test_split_adds_up_to_the_trace_even_with_overlaps() -> None:
    calls = [
        call(1, 100, 600, ttft_ms=100),  # 100-200 ttft, 200-600 decode
        call(2, 300, 900),  # unsplit response, overlaps the decode
        call(10, 950, 1200, kind="tool", model=None),
        call(11, 1100, 1300, kind="retriever", model=None),
    ]
    split = analyze(calls, 0 * MS, 1500 * MS).split
    assert split == {
        "retry": 0,
        "fallback": 0,
        "ttft": 100 * MS,
        "decode": 400 * MS,
        "response": 300 * MS,  # 600-900: only the second call is running
        "tool": 350 * MS,  # 950-1300
        "other": 350 * MS,  # 0-100, 900-950, 1300-1500
    }
    assert sum(split.values()) == 1500 * MS


def test_calls_outside_the_trace_bounds_are_clipped() -> None:
    split = analyze([call(1, -500, 500)], 0 * MS, 1000 * MS).split
    assert split["response"] == 500 * MS and sum(split.values()) == 1000 * MS


def test_empty_and_zero_length_traces() -> None:
    assert analyze([], 0 * MS, 1000 * MS).split == dict.fromkeys(SPLIT_KEYS, 0) | {"other": 1000 * MS}
    assert sum(analyze([call(1, 5, 5)], 5 * MS, 5 * MS).split.values()) == 0


def test_unknown_models_never_make_a_fallback() -> None:
    calls = [call(1, 0, 100, failed=True, model=None), call(2, 200, 300, model=None)]
    timing = analyze(calls, 0 * MS, 300 * MS).calls[bytes([2]) * 8]
    assert not timing.is_retry and not timing.is_fallback


def test_a_call_to_another_model_is_not_a_fallback_without_evidence_it_replaces_the_failed_one() -> None:
    """Unknown or different inputs, no link: the next step of an agent, not a replacement."""
    unknown = [call(1, 0, 100, failed=True), call(2, 200, 300, model="claude")]
    different = [call(1, 0, 100, failed=True, input="verify"), call(2, 200, 300, model="claude", input="answer")]
    for calls in (unknown, different):
        result = analyze(calls, 0, 300 * MS)
        assert (result.retries, result.fallbacks) == (0, 0)
        assert result.split["fallback"] == 0


def test_same_model_with_a_different_input_is_not_a_retry() -> None:
    calls = [call(1, 0, 100, failed=True, input="verify"), call(2, 200, 300, input="answer")]
    assert analyze(calls, 0, 300 * MS).retries == 0


def test_newcomer_run_500_then_timeout_then_streamed_answer_has_one_fallback() -> None:
    """Issue 13's scenario: a call retried after a 500, a timeout that a fallback replaced, then the
    streamed final answer of the next step. Only the replacement is a fallback."""
    calls = [
        call(1, 0, 20, failed=True, model="gpt-4o-mini", input="plan"),  # 500
        call(2, 220, 800, model="gpt-4o-mini", input="plan"),  # the app retried it
        call(3, 900, 1900, failed=True, model="gpt-4.1", input="draft"),  # timed out
        call(4, 1950, 2600, model="claude-sonnet-4", input="draft"),  # replaces it: the one fallback
        call(5, 2700, 3400, model="gpt-4o-mini", input="final answer", ttft_ms=150),  # streamed, next step
    ]
    result = analyze(calls, 0, 3400 * MS)
    flags = {c.span_id[0]: (t.is_retry, t.is_fallback) for c, t in zip(calls, result.calls.values(), strict=False)}
    assert flags == {1: (False, False), 2: (True, False), 3: (False, False), 4: (False, True), 5: (False, False)}
    assert result.calls[bytes([4]) * 8].retry_ns == 1050 * MS
    assert result.calls[bytes([4]) * 8].retry_source == "replaces a failed call with the same input"


def test_input_of_is_asked_only_after_a_failure() -> None:
    asked: list[int] = []

    def input_of(c: Call) -> object:
        asked.append(c.span_id[0])
        return "same"

    calls = [call(1, 0, 100), call(2, 200, 300, failed=True), call(3, 400, 500, model="claude"), call(4, 600, 700)]
    result = analyze(calls, 0, 700 * MS, input_of=input_of)
    assert result.fallbacks == 1 and sorted(set(asked)) == [2, 3]


def test_http_attempt_children_make_a_retry_inside_the_call() -> None:
    """Two POST children (the 429 one failed): the retry runs from the call's start to the second attempt."""
    calls = [
        call(1, 0, 650),
        attempt(2, 1, 2, 24, 429),
        attempt(3, 1, 225, 228, 200),
    ]
    result = analyze(calls, 0, 650 * MS)
    timing = result.calls[bytes([1]) * 8]
    assert timing.is_retry and not timing.is_fallback
    assert timing.retry_ns == timing.retry_offset_ns == 225 * MS
    assert timing.retry_source == "2 HTTP attempts, first 429"
    assert result.split["retry"] == 225 * MS and result.split["response"] == 425 * MS
    assert result.retries == 1


def test_resend_count_on_the_attempt_says_where_it_came_from() -> None:
    calls = [call(1, 0, 650), attempt(2, 1, 0, 24, 429), attempt(3, 1, 225, 228, 200, resend=1)]
    assert analyze(calls, 0, 650 * MS).calls[bytes([1]) * 8].retry_source == "2 HTTP attempts, first 429"
    only_the_last = [call(1, 0, 650), attempt(3, 1, 225, 228, 200, resend=1)]
    timing = analyze(only_the_last, 0, 650 * MS).calls[bytes([1]) * 8]
    assert timing.is_retry and timing.retry_offset_ns == 225 * MS
    assert "resend_count = 1" in timing.retry_source


def test_one_http_attempt_is_no_retry_and_says_so() -> None:
    result = analyze([call(1, 0, 600), attempt(2, 1, 1, 590, 200)], 0, 600 * MS)
    timing = result.calls[bytes([1]) * 8]
    assert not timing.is_retry and timing.retry_source == "1 HTTP attempt"
    assert result.split["retry"] == 0


def test_http_attempts_are_not_model_calls() -> None:
    """They never count as calls, in the totals or as the slowest call."""
    calls = [call(1, 0, 100), attempt(2, 1, 0, 3000, 200)]
    result = analyze(calls, 0, 3000 * MS)
    assert result.totals.llm_calls == 1 and result.slowest.span_id == bytes([1]) * 8
    assert set(result.calls) == {bytes([1]) * 8}


def test_calls_without_token_counts_are_counted() -> None:
    calls = [call(1, 0, 100), call(2, 200, 300, tokens=None), call(3, 400, 500, tokens=None, failed=True)]
    totals = analyze(calls, 0, 500 * MS).totals
    assert totals.tokenless_calls == 1  # the failed call had nothing to count


def test_first_token_event_is_an_instant_when_http_attempts_move_the_final_attempt() -> None:
    """An event-based TTFT (measured from the span's start: 375 ms) and an attribute one (per attempt:
    150 ms) put the first token at the same instant once the 429 attempt is known."""
    from tracetui.llm.timing import first_token_at, ttft_includes_retry

    event = '{"kind":"gen_ai.operation.name","ttft":"event:First Token Stream Event"}'
    for ttft_ms, provenance in ((375, event), (150, '{"ttft":"gen_ai.response.time_to_first_chunk"}')):
        chat = call(1, 0, 700, ttft_ms=ttft_ms)
        chat.provenance = provenance
        split = analyze([chat, attempt(2, 1, 1, 20, 429), attempt(3, 1, 225, 700, 200)], 0, 700 * MS).split
        assert (split["retry"], split["ttft"], split["decode"]) == (225 * MS, 150 * MS, 325 * MS), provenance
        assert first_token_at(0, 225 * MS, 700 * MS, ttft_ms * MS, None, provenance) == 375 * MS
    assert ttft_includes_retry(225 * MS, None, event)
    assert not ttft_includes_retry(225 * MS, None, '{"ttft":"gen_ai.response.time_to_first_chunk"}')
    assert not ttft_includes_retry(None, None, event)


def test_several_successful_requests_under_one_call_are_no_retry() -> None:
    calls = [call(1, 0, 650), attempt(2, 1, 2, 100, 200), attempt(3, 1, 120, 600, 200)]
    timing = analyze(calls, 0, 650 * MS).calls[bytes([1]) * 8]
    assert not timing.is_retry and timing.retry_source == "2 HTTP requests, none failed"


def test_not_reported_names_the_library_a_user_installed_not_its_tracer():
    """ "first token not reported by OpenLIT", from the scope names the captures carry; a scope
    tracetui does not know is shown as it is, and a generic tracer name is not taken for a library."""
    from tracetui.llm.timing import first_token_note, library_name, retry_note

    assert first_token_note(None, None, "opentelemetry.util.genai.handler") == (
        "first token not reported by the OpenTelemetry GenAI instrumentation"
    )
    assert retry_note(None, "openlit.instrumentation.openai") == "retry not reported by OpenLIT"
    assert library_name("opentelemetry.instrumentation.openai.v1") == "OpenLLMetry"
    assert library_name("opentelemetry.instrumentation.openai_v2") == "opentelemetry-instrumentation-openai-v2"
    assert library_name("openinference.instrumentation.openai") == "OpenInference"
    assert library_name("traceai_openai") == "traceAI"
    assert library_name("litellm") == "LiteLLM"
    assert library_name("gen_ai") == "tracer 'gen_ai' (the Vercel AI SDK's default)"
    assert library_name("my.company.llm") == "my.company.llm"
    assert library_name("aiohttp") == "aiohttp"  # "ai" is matched whole, never as a prefix
    assert library_name("") == "the instrumentation (no scope name)"

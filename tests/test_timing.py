"""Retries, fallbacks and the time split (tracetui.timing), on small hand-made runs."""

from __future__ import annotations

from tracetui.timing import SPLIT_KEYS, Call, analyze

MS = 1_000_000
AGENT = b"A" * 8


def call(n: int, start_ms: int, end_ms: int, *, model: str | None = "gpt-4o", failed: bool = False, kind: str = "llm",
         ttft_ms: int | None = None, parent: bytes | None = AGENT, link: bytes | None = None,
         attempt_offset_ms: int | None = None, resend: int | None = None) -> Call:  # fmt: skip
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
    )


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


def test_different_model_after_a_failure_is_a_fallback() -> None:
    calls = [call(1, 0, 30_000, failed=True), call(2, 30_010, 33_580, model="claude-sonnet-4", ttft_ms=820)]
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

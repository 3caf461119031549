"""Reading the judge model's answer: claim-level scores, and every unusable answer named, never a score."""

from __future__ import annotations

import json

import pytest

from tracetui.jobs.verdict import MALFORMED, NON_JSON, REFUSED, VerdictError, judge_messages, read_completion


def completion(content: str | None, **message) -> dict:
    return {
        "choices": [{"message": {"role": "assistant", "content": content, **message}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 30},
    }


CLAIMS = {
    "claims": [
        {"claim": "Refunds within 30 days", "verdict": "supported", "reason": "doc 1"},
        {"claim": "Shipping is free", "verdict": "unsupported", "reason": "doc 2 says $4.99"},
        {"claim": "Support is open on Sunday", "verdict": "contradicted", "reason": "closed on Sunday"},
        {"claim": "Orders ship in 3 days", "verdict": "Supported", "reason": ""},
    ]
}


def test_score_is_supported_claims_over_claims_with_the_unsupported_explained():
    verdict = read_completion(completion(json.dumps(CLAIMS)))
    assert verdict.score == pytest.approx(0.5)
    assert verdict.input_tokens == 120 and verdict.output_tokens == 30
    assert "2 of 4 claims supported" in verdict.explanation
    assert "Shipping is free (doc 2 says $4.99)" in verdict.explanation
    assert "Refunds within 30 days" not in verdict.explanation


def test_code_fences_and_a_sentence_before_the_json_are_tolerated():
    text = "Here is my verdict:\n```json\n" + json.dumps(CLAIMS) + "\n```"
    assert read_completion(completion(text)).score == pytest.approx(0.5)


def test_no_claims_is_no_score():
    verdict = read_completion(completion('{"claims": []}'))
    assert verdict.score is None
    assert verdict.explanation == "the answer makes no factual claim"


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (completion("The answer looks grounded to me."), NON_JSON),
        (completion("I'm sorry, but I can't help with that."), REFUSED),
        (completion(None, refusal="I cannot evaluate this content."), REFUSED),
        ({"choices": [{"message": {"content": ""}, "finish_reason": "content_filter"}]}, REFUSED),
        (completion('{"verdict": "grounded"}'), MALFORMED),
        (completion('{"claims": [{"claim": "x", "verdict": "maybe"}]}'), MALFORMED),
        (completion('{"claims": ["just text"]}'), MALFORMED),
        (completion(""), MALFORMED),
        ({"error": {"message": "model not found"}}, MALFORMED),
        ([], MALFORMED),
    ],
)
def test_unusable_answers_are_errors_of_a_named_kind(body, kind):
    with pytest.raises(VerdictError) as caught:
        read_completion(body)
    assert caught.value.kind == kind


def test_the_prompt_holds_the_context_the_conversation_and_the_answer():
    system, user = judge_messages("Refunds take 30 days.", ["Refunds are possible within 30 days."], ["user: refund?"])
    assert system["role"] == "system" and "JSON" in system["content"]
    assert "[1] Refunds are possible within 30 days." in user["content"]
    assert "user: refund?" in user["content"]
    assert user["content"].endswith("ANSWER:\nRefunds take 30 days.")

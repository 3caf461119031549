"""The offline groundedness estimate (`--judge lexical`) against hand-made answers and contexts."""

from __future__ import annotations

import pytest

from tracetui.jobs.lexical import SUPPORTED_AT, estimate, split_claims

POLICY = [
    "Refunds are possible within 30 days of purchase.",
    "Shipping costs $4.99 and takes 3 business days. Orders over 1,200 dollars ship free.",
]


def test_an_answer_restating_the_context_is_fully_supported():
    result = estimate("Refunds are possible within 30 days of purchase. Shipping takes 3 business days.", POLICY)
    assert result.score == 1.0
    assert all(check.supported for check in result.claims)


def test_inflections_and_thousands_separators_still_match():
    result = estimate("A refund is possible within 30 days. Orders over 1200 dollars are shipped free.", POLICY)
    assert result.score == 1.0


def test_a_number_the_context_does_not_hold_is_never_supported():
    result = estimate("Refunds are possible within 45 days of purchase.", POLICY)
    (check,) = result.claims
    assert not check.supported
    assert "45" in check.missing
    assert result.score is not None and result.score < SUPPORTED_AT
    assert "45" in result.explanation


def test_a_negated_claim_against_an_affirmative_context_scores_zero():
    result = estimate("Refunds are not possible within 30 days of purchase.", POLICY)
    (check,) = result.claims
    assert check.negation_mismatch and check.coverage == 0.0
    assert "negation differs" in result.explanation


def test_negation_in_both_is_agreement():
    result = estimate("Refunds are not possible after 30 days.", ["Refunds are not possible after 30 days."])
    assert result.score == 1.0


def test_unrelated_claims_score_zero_and_are_named():
    result = estimate("The moon is made of cheese.", POLICY)
    assert result.score == 0.0
    assert "moon" in result.explanation


def test_score_is_the_mean_claim_coverage():
    result = estimate("Refunds are possible within 30 days. The moon is made of cheese.", POLICY)
    assert len(result.claims) == 2
    assert result.score == pytest.approx(0.5)
    assert "1 of 2 claims" in result.explanation


def test_an_answer_without_content_words_has_no_score():
    result = estimate("Yes. OK!", POLICY)
    assert result.score is None
    assert result.explanation == "no claim with content words in the answer"


def test_claims_are_sentences_clauses_and_list_items():
    assert split_claims("First point. Second point; third point\n- fourth item") == [
        "First point.",
        "Second point",
        "third point",
        "fourth item",
    ]

"""What one feedback result means: thumbs up, thumbs down, or nothing said (tracetui.llm.feedback)."""

from __future__ import annotations

import pytest

from tracetui.llm.feedback import abandoned, is_feedback, thumb


@pytest.mark.parametrize(
    ("name", "score", "label", "expected"),
    [
        ("user_feedback", None, "thumbs_up", 1),
        ("user_feedback", None, "thumbs_down", -1),
        ("User Feedback", None, "👎", -1),
        ("feedback", 1.0, None, 1),
        ("feedback", 0.0, None, -1),
        ("feedback", -1.0, None, -1),
        ("thumbs", None, "positive", 1),
        ("thumbs_down", 1.0, None, -1),  # a true thumbs_down is down
        ("thumbs_down", None, "true", -1),
        ("thumbs_down", None, "false", 1),
        ("thumbs-up", None, "yes", 1),
        ("user_rating", 5.0, None, 1),  # a 1..5 rating
        ("user_rating", 2.0, None, -1),
        ("user_rating", 3.0, None, None),  # the middle says neither
        ("user_feedback", None, "meh", None),  # a label that says neither, no score
        ("groundedness", 0.1, None, None),  # not feedback at all
        ("feedback", float("nan"), None, None),
    ],
)
def test_thumb(name, score, label, expected):
    assert thumb(name, score, label) == expected


def test_feedback_names_and_abandonment():
    assert is_feedback("Thumbs") and is_feedback("user-feedback") and not is_feedback("relevance")
    assert abandoned("abandoned", 1.0, None) and abandoned("user_abandoned", None, "true")
    assert not abandoned("abandoned", 0.0, None) and not abandoned("feedback", 1.0, "abandoned")

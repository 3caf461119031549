"""What users felt: thumbs up / down and abandoned runs, read from stored evaluation results.

Apps send user feedback as evaluation results (``tracetui.llm.evals`` reads them from span
events, log records and attributes, and the TUI records the user's own with source
``"you"``). This module only decides what one result *means*:

* **thumbs** (:func:`thumb`): a result whose name is a feedback name (``user_feedback``,
  ``feedback``, ``thumbs``, ``thumbs_up``, ``thumbs_down``, ``user_rating``, ``rating``,
  ``user_sentiment``; case, spaces and dashes ignored) is +1 (up) or -1 (down):

  - its label, when the label says so: ``up``, ``thumbs_up``, ``positive``, ``good``,
    ``like``, ``helpful``, ``correct``, ``yes``, ``true``, ``1``, ``👍`` are up; ``down``,
    ``thumbs_down``, ``negative``, ``bad``, ``dislike``, ``unhelpful``, ``incorrect``,
    ``no``, ``false``, ``0``, ``-1``, ``👎`` are down;
  - else its score: on a ``*_down`` name a true score (> 0.5) is down; otherwise a score
    >= 0.5 is up and a score <= 0 is down (1/0 and 1/-1 scales alike). Scores in between
    (0 < score < 0.5) are down as well: a rating below the middle of a 0..1 scale.
  - Ratings on a 1..5 scale are not guessed at: a score above 1 on ``rating`` /
    ``user_rating`` is up from 4, down up to 2, neither at 3.

* **abandoned** (:func:`abandoned`): a result named ``abandoned``, ``user_abandoned`` or
  ``abandonment`` whose label is true-ish or whose score is > 0.5. No OpenTelemetry or
  vendor convention for abandonment exists today; this is tracetui's, documented in
  docs/semconv.md ("User feedback").
"""

from __future__ import annotations

import math

#: Source of the feedback the user records in the TUI.
SOURCE_YOU = "you"
#: The name the TUI stores its feedback under.
FEEDBACK_NAME = "user_feedback"

_FEEDBACK_NAMES = frozenset(
    ("user_feedback", "feedback", "thumbs", "thumb", "thumbs_up", "thumbs_down", "user_rating", "rating",
     "user_sentiment", "human_feedback", "user_score")
)  # fmt: skip
_RATINGS = frozenset(("rating", "user_rating", "user_score"))
_UP = frozenset(
    ("up", "thumbs_up", "thumbsup", "thumb_up", "positive", "good", "like", "liked", "helpful", "correct", "yes",
     "true", "1", "+1", "👍")
)  # fmt: skip
_DOWN = frozenset(
    ("down", "thumbs_down", "thumbsdown", "thumb_down", "negative", "bad", "dislike", "disliked", "unhelpful",
     "incorrect", "no", "false", "0", "-1", "👎")
)  # fmt: skip
_ABANDONED = frozenset(("abandoned", "user_abandoned", "abandonment", "abandon"))
_TRUE = frozenset(("true", "yes", "1", "abandoned"))


def name_key(text: object) -> str:
    """A name or label as compared here: case, spaces and dashes ignored ("User-Feedback" -> "user_feedback")."""
    return text.strip().casefold().replace("-", "_").replace(" ", "_") if isinstance(text, str) else ""


def is_feedback(name: str) -> bool:
    """A thumbs / rating style name (see the module docstring)."""
    return isinstance(name, str) and name_key(name) in _FEEDBACK_NAMES


def thumb(name: str, score: float | None, label: str | None) -> int | None:
    """+1 (thumbs up), -1 (thumbs down) or None (not feedback, or it does not say)."""
    if not is_feedback(name):
        return None
    key = name_key(name)
    if label:
        said = name_key(label)
        if said in _UP:
            return -1 if key == "thumbs_down" else 1
        if said in _DOWN:
            return 1 if key == "thumbs_down" and said in ("false", "0", "no") else -1
    if score is None or not math.isfinite(score):
        return None
    if key == "thumbs_down":
        return -1 if score > 0.5 else 1
    if key in _RATINGS and score > 1:
        return 1 if score >= 4 else -1 if score <= 2 else None
    return 1 if score >= 0.5 else -1


def abandoned(name: str, score: float | None, label: str | None) -> bool:
    """The result says the user abandoned the run (see the module docstring)."""
    if not isinstance(name, str) or name_key(name) not in _ABANDONED:
        return False
    if label and name_key(label) in _TRUE:
        return True
    return score is not None and math.isfinite(score) and score > 0.5

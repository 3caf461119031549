"""`--judge lexical`: a model-free groundedness *estimate*, for offline use and for the tests.

No model reads anything: the answer is split into claims (sentences, and clauses
joined by ";"), and each claim is compared word by word with the context (the
retrieval results, tool outputs and conversation the judge gathered):

* **content words**: lower-cased words of three letters or more that are not
  stop words, cut to a crude stem ("refunds", "refunded" -> "refund"). A word
  is covered when its stem occurs anywhere in the context.
* **numbers** ("45", "3.5", "1,200", "20%") must occur in the context as numbers;
  a number the context does not hold counts as an uncovered word, and the claim
  is not supported whatever else it shares ("within 45 days" against "within 30
  days" is a different claim).
* **negation**: a claim whose negation ("not", "no", "never", "n't", "without")
  disagrees with the context sentence that shares most of its words is counted
  as not covered at all: "refunds are not possible" against "refunds are
  possible" shares every word and says the opposite.

A claim's coverage is its covered words over its words; it is *supported* at
:data:`SUPPORTED_AT` or more. The score is the mean coverage of the claims, so
it moves with partial support instead of jumping. It is an estimate: paraphrases
and synonyms count as unsupported, and words taken out of context count as
support. It is stored and shown as "tracetui judge (lexical estimate)".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

#: A claim whose coverage is at least this is counted as supported in the explanation.
SUPPORTED_AT = 0.7
#: A claim with a number the context does not hold scores at most this (never "supported").
NUMBER_MISMATCH_CAP = 0.5
#: Claims longer than this many characters are cut (a claim is a sentence, not a document).
_MAX_CLAIM_CHARS = 2_000
#: At most this many claims of an answer are scored.
MAX_CLAIMS = 200

_STOP = frozenset(
    """
    a about above after again against all also am an and any are aren as at be because been before being below
    between both but by can cannot could did didn do does doesn doing don down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is isn it its itself just let me more
    most my myself nor of off on once only or other ought our ours ourselves out over own same she should so some
    such than that the their theirs them themselves then there these they this those through to too under until up
    very was wasn we were what when where which while who whom why will with would you your yours yourself
    yourselves may might must shall yes ok okay sure here's there's it's that's i'm you're we're they're
    please thanks thank also well one via per
    """.split()
)
_NEGATIONS = frozenset(("not", "no", "never", "none", "nothing", "nobody", "neither", "nor", "without", "cannot"))
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?|\d+(?:[.,]\d+)*%?", re.UNICODE)
_NUMBER = re.compile(r"^\d+(?:[.,]\d+)*%?$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+|;\s+|\s+[-*•]\s+")


@dataclass(frozen=True, slots=True)
class ClaimCheck:
    claim: str
    coverage: float  # covered words / words, 0 when its negation disagrees with the context
    missing: tuple[str, ...]  # stems of the words, and the numbers, the context does not hold
    negation_mismatch: bool

    @property
    def supported(self) -> bool:
        return self.coverage >= SUPPORTED_AT


@dataclass(frozen=True, slots=True)
class Estimate:
    score: float | None  # None: the answer makes no claim with content words
    claims: tuple[ClaimCheck, ...]

    @property
    def explanation(self) -> str:
        if not self.claims:
            return "no claim with content words in the answer"
        supported = sum(c.supported for c in self.claims)
        lines = [
            f"lexical estimate: {supported} of {len(self.claims)} claims mostly covered by the context "
            f"(>= {SUPPORTED_AT:.0%} of their content words); score = mean coverage"
        ]
        for check in self.claims:
            if check.supported:
                continue
            why = "negation differs from the context" if check.negation_mismatch else (
                "not in the context (stems): " + ", ".join(check.missing[:8]))  # fmt: skip
            lines.append(f"- {_short(check.claim)} ({check.coverage:.0%}; {why})")
        return "\n".join(lines)

    @property
    def counts(self) -> str:
        """The explanation without a word of the answer or context (content kept out: ``--no-content``)."""
        if not self.claims:
            return "no claim with content words in the answer"
        supported = sum(c.supported for c in self.claims)
        negated = sum(c.negation_mismatch for c in self.claims)
        return (
            f"lexical estimate: {supported} of {len(self.claims)} claims mostly covered by the context, "
            f"{negated} with a negation that differs; claims not quoted (content kept out: --no-content)"
        )


def split_claims(answer: str) -> list[str]:
    """The answer's sentences (and ";"-joined clauses, list items), each a claim; empty ones dropped."""
    parts = (p.strip(" \t-*•") for p in _SENTENCE_END.split(answer))
    return [p[:_MAX_CLAIM_CHARS] for p in parts if p and _WORD.search(p)][:MAX_CLAIMS]


def estimate(answer: str, context: Iterable[str]) -> Estimate:
    """The groundedness estimate of ``answer`` against the ``context`` texts (see the module docstring)."""
    sentences = [s for text in context for s in split_claims(text)]
    vocabulary: set[str] = set()
    numbers: set[str] = set()
    context_sentences = []
    for sentence in sentences:
        words, nums, negated = _analyse(sentence)
        vocabulary.update(words)
        numbers.update(nums)
        context_sentences.append((set(words), negated))
    checks = [c for c in (_check(claim, vocabulary, numbers, context_sentences) for claim in split_claims(answer)) if c]
    if not checks:
        return Estimate(None, ())
    return Estimate(sum(c.coverage for c in checks) / len(checks), tuple(checks))


def _check(claim: str, vocabulary: set[str], numbers: set[str], context: list) -> ClaimCheck | None:
    words, nums, negated = _analyse(claim)
    if not words and not nums:
        return None
    missing = [w for w in dict.fromkeys(words) if w not in vocabulary]
    wrong_numbers = [n for n in nums if n not in numbers]
    total = len(set(words)) + len(nums)
    coverage = (total - len(missing) - len(wrong_numbers)) / total
    if wrong_numbers:
        coverage = min(coverage, NUMBER_MISMATCH_CAP)
    missing += wrong_numbers
    mismatch = False
    if words:
        mine = set(words)
        best = max(context, key=lambda c: len(mine & c[0]), default=None)
        if best is not None and mine & best[0] and best[1] != negated:
            mismatch, coverage = True, 0.0
    return ClaimCheck(claim, coverage, tuple(missing), mismatch)


def _analyse(text: str) -> tuple[list[str], list[str], bool]:
    """(content-word stems, normalized numbers, whether the text is negated)."""
    words, nums, negated = [], [], False
    for token in _WORD.findall(text.casefold()):
        if _NUMBER.match(token):
            nums.append(_number(token))
            continue
        if token in _NEGATIONS or token.endswith("n't"):
            negated = True
            continue
        if len(token) < 3 or token in _STOP:
            continue
        words.append(_stem(token))
    return words, nums, negated


def _number(token: str) -> str:
    """'1,200' -> '1200', '3.50' -> '3.5', '20%' -> '20%' (a thousands comma is not a decimal point)."""
    percent = token.endswith("%")
    digits = token.rstrip("%")
    if re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?", digits):
        digits = digits.replace(",", "")
    digits = digits.replace(",", ".")
    if "." in digits:
        digits = digits.rstrip("0").rstrip(".") or "0"
    digits = digits.lstrip("0") or "0"
    return digits + ("%" if percent else "")


def _stem(word: str) -> str:
    """A crude stem, the same for the usual inflections: "refunds", "refunded", "refunding" -> "refund"."""
    word = word.replace("'s", "")
    if word.endswith("sses"):
        word = word[:-2]
    elif word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
        word = word[:-1]
    for suffix in ("ingly", "edly", "ing", "ed", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
                word = word[:-1]  # "shipped" -> "ship"
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]  # "close", "closed", "closing" -> "clos"
    return word


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"

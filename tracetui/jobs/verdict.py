"""The model judge's prompt and the reading of its answer (an OpenAI-compatible chat completion).

Claim-level, as the established groundedness evaluators do: the judge model is asked
to split the answer into claims and give each a verdict against the context; the
score is supported claims / claims, and the explanation lists the claims that are
not supported with the model's reason.

Every way an answer can be unusable is a :class:`VerdictError` with a kind the
judge shows and retries on (``non-JSON verdict``, ``malformed verdict``,
``refused``); none of them ever becomes a score. An answer with no claim at all
(a greeting) has no score either.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

SYSTEM_PROMPT = (
    "You check whether an AI assistant's answer is grounded in the context it was given. "
    "Split the ANSWER into short, self-contained factual claims. For each claim decide, using only the CONTEXT "
    "(retrieval results, tool outputs and the conversation), whether it is supported. "
    'Reply with JSON only: {"claims": [{"claim": "...", "verdict": "supported" | "unsupported" | "contradicted", '
    '"reason": "..."}]}. An answer without factual claims gives {"claims": []}.'
)

#: Verdict words read as supported / not supported (anything else is a malformed verdict).
_SUPPORTED = frozenset(("supported", "yes", "true", "grounded", "entailed", "1"))
_NOT_SUPPORTED = frozenset(
    ("unsupported", "not supported", "no", "false", "contradicted", "ungrounded", "not_supported", "0")
)
_REFUSAL = re.compile(r"^\s*(i'?m sorry|i cannot|i can'?t|i am unable|i'?m unable|as an ai)", re.IGNORECASE)
_FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$", re.IGNORECASE)
#: Longest reason kept per claim, and longest claim text.
_MAX_TEXT = 300

NON_JSON = "non-JSON verdict"
MALFORMED = "malformed verdict"
REFUSED = "refused"


class VerdictError(ValueError):
    """The judge's answer cannot be used; ``kind`` is one of NON_JSON, MALFORMED, REFUSED."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ClaimVerdict:
    claim: str
    supported: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Verdict:
    claims: tuple[ClaimVerdict, ...]
    input_tokens: int | None = None
    output_tokens: int | None = None

    @property
    def score(self) -> float | None:
        """Supported claims / claims; None when the answer makes no claim."""
        return sum(c.supported for c in self.claims) / len(self.claims) if self.claims else None

    @property
    def explanation(self) -> str:
        if not self.claims:
            return "the answer makes no factual claim"
        supported = sum(c.supported for c in self.claims)
        lines = [f"{supported} of {len(self.claims)} claims supported by the context"]
        lines += [f"- {c.claim} ({c.reason})" if c.reason else f"- {c.claim}" for c in self.claims if not c.supported]
        return "\n".join(lines)


def judge_messages(answer: str, context: list[str], conversation: list[str]) -> list[dict[str, str]]:
    """The chat messages sent to the judge model."""
    parts = ["CONTEXT:"]
    parts += [f"[{i}] {text}" for i, text in enumerate(context, 1)] or ["(none)"]
    parts += ["", "CONVERSATION:", *(conversation or ["(none)"]), "", "ANSWER:", answer]
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(parts)}]


def read_completion(body: Any) -> Verdict:
    """The verdict in an OpenAI-compatible ``/chat/completions`` response body (parsed JSON)."""
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list) or not body["choices"]:
        raise VerdictError(MALFORMED, "the response has no choices")
    choice = _dict(body["choices"][0])
    message = _dict(choice.get("message"))
    if message.get("refusal") or choice.get("finish_reason") == "content_filter":
        raise VerdictError(REFUSED, str(message.get("refusal") or "content filter")[:_MAX_TEXT])
    content = message.get("content")
    if not isinstance(content, str) or not content.strip():
        raise VerdictError(MALFORMED, "the response has no text")
    claims = read_claims(content)
    return Verdict(claims, *reported_usage(body))


def reported_usage(body: Any) -> tuple[int | None, int | None]:
    """(prompt tokens, completion tokens) the response reports (None: not reported)."""
    usage = _dict(body.get("usage")) if isinstance(body, dict) else {}
    return _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))


def read_claims(content: str) -> tuple[ClaimVerdict, ...]:
    """The claims of the judge's JSON answer (code fences and text around the object tolerated)."""
    text = _FENCE.sub("", content).strip()
    parsed = _first_json_object(text)
    if parsed is None:
        if _REFUSAL.match(text):
            raise VerdictError(REFUSED, text[:_MAX_TEXT])
        raise VerdictError(NON_JSON, text[:_MAX_TEXT])
    claims = parsed.get("claims")
    if not isinstance(claims, list):
        raise VerdictError(MALFORMED, 'no "claims" list')
    out = []
    for item in claims:
        if not isinstance(item, dict) or not isinstance(item.get("claim"), str):
            raise VerdictError(MALFORMED, f"a claim is not an object with a text: {str(item)[:80]}")
        word = str(item.get("verdict", "")).strip().casefold()
        if word not in _SUPPORTED and word not in _NOT_SUPPORTED:
            raise VerdictError(MALFORMED, f"unknown verdict {word[:40]!r}")
        reason = item.get("reason")
        out.append(
            ClaimVerdict(
                item["claim"][:_MAX_TEXT], word in _SUPPORTED, reason[:_MAX_TEXT] if isinstance(reason, str) else ""
            )
        )
    return tuple(out)


def _first_json_object(text: str) -> dict | None:
    """The first JSON object in ``text`` (models sometimes write a sentence before it), or None."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return None


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

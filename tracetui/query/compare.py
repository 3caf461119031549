"""Two cohorts of LLM calls side by side, the delta of every figure, and a verdict.

A cohort is the counted LLM calls (as in the Stats screen) that match a filter
expression and start within a time window: two prompt versions, two models, two
routes, or the same route before and after a change. :func:`compare` returns every
figure for A and B with its delta **B − A**, whether the delta is larger than its
sample can tell apart from noise, and a :class:`Verdict` from a stated rule.

How much a delta means (all 95 % two-sided, each stated on screen and in ``--json``):

* percentiles: distribution-free order-statistic intervals. For n sorted values and
  quantile q, the interval runs from the value at rank ``floor(nq − 1.96·√(nq(1−q)))`` to
  the one at ``ceil(nq + 1.96·√(nq(1−q))) + 1`` (1-based, normal approximation to the
  binomial); it does not exist when a rank falls outside 1..n (p99 needs a few hundred
  values). The delta's interval is the widest difference of the two intervals
  ``[lo_B − hi_A, hi_B − lo_A]``: conservative, and O(1) once the values are sorted, so
  100k-call cohorts cost one sort each on 2 cores.
* means (output tokens, evaluation scores, cost per run): Welch's normal interval
  ``Δ ± 1.96·√(s²_A/n_A + s²_B/n_B)``.
* rates (errors, retries, fallbacks, thumbs down, abandoned, share below threshold):
  Newcombe's hybrid score interval from the two Wilson intervals (sound at 0 % and 100 %).

A delta is **too small to mean anything** (``significant`` False, "≈ noise" on screen)
when its interval contains 0, and **unknown** ("n too small") when either side has fewer
than :data:`MIN_SAMPLES` values or the interval does not exist.

The verdict (:func:`verdict`, thresholds in :class:`Rule`, options of the CLI and the
screen): reject when quality dropped (mean groundedness down by more than
``max_quality_drop``, significant), errors rose (error rate up by more than
``max_error_rise`` points, significant) or users were unhappier (thumbs-down rate up by
more than ``max_thumbs_down_rise``, significant); otherwise accept when p99 of the call
duration improved by at least ``min_gain`` (relative, significant); reject when it got
worse by as much; else "no clear change". A cohort without groundedness scores is not
judged on quality, and the line says so. Different ``max_tokens`` caps on the two sides
add a warning: a faster model that writes twice the tokens can still lose.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tracetui.llm.evals import is_groundedness, preferred_scores
from tracetui.llm.feedback import abandoned, is_feedback, thumb
from tracetui.model.filter import Filter, parse
from tracetui.model.fmt import fmt_clock, fmt_cost, fmt_duration, safe_text
from tracetui.model.reader import NONE_KEY, CohortCall, EvaluationResult, Reader
from tracetui.query.stats import percentile

__all__ = [
    "MIN_SAMPLES",
    "TTFT_BANDS",
    "Cohort",
    "Comparison",
    "Delta",
    "Feelings",
    "FailRule",
    "Rule",
    "compare",
    "feelings",
    "parse_fail_on",
]

#: Fewer values than this on either side and a delta is "n too small".
MIN_SAMPLES = 20
_Z = 1.959964
#: TTFT cohorts for the thumbs-down rate (upper bounds in ns; the last has none).
TTFT_BANDS: tuple[tuple[str, int | None], ...] = (
    ("TTFT < 1 s", 1_000_000_000),
    ("1–3 s", 3_000_000_000),
    ("> 3 s", None),
)

METHOD = (
    "95 % intervals: order statistics (percentiles), Welch (means), Newcombe–Wilson (rates); "
    f"'≈' = within noise, 'n<{MIN_SAMPLES}' = too few values"
)


class CohortError(ValueError):
    """A cohort that cannot be read (bad filter, backend without compare)."""


@dataclass(frozen=True)
class Cohort:
    """The calls matching ``expression`` that started in [since_ns, until_ns)."""

    label: str
    expression: str = ""
    since_ns: int | None = None
    until_ns: int | None = None
    #: A row of the Stats screen: (grouping, key), e.g. ("model", "gpt-4o"); NONE_KEY for calls without one.
    group: tuple[str, str] | None = None

    @property
    def filter(self) -> Filter | None:
        return parse(self.expression) if self.expression.strip() else None

    def describe(self) -> str:
        parts = []
        if self.group is not None:
            parts.append(f"{self.group[0].replace('_', ' ')} {self.group[1]}")
        if self.expression.strip() or not parts:
            parts.append(self.expression.strip() or "all calls")
        return " · ".join(parts)

    def describe_window(self, width: int = 60) -> str:
        """The description (made safe, cut to ``width``) and, when set, the time range: ``[start → end)``."""
        text = safe_text(self.describe(), width)
        if self.since_ns is not None or self.until_ns is not None:
            start = "…" if self.since_ns is None else fmt_clock(self.since_ns)
            end = "now" if self.until_ns is None else fmt_clock(self.until_ns)
            text += f"  [{start} → {end})"
        return text

    def takes(self, call: CohortCall) -> bool:
        """The call is in this cohort's Stats group (always, without a group)."""
        if self.group is None:
            return True
        by, key = self.group
        value = {"model": call.model, "prompt_version": call.prompt_version, "route": call.route}[by]
        return (value or NONE_KEY) == key


@dataclass(frozen=True)
class Delta:
    """One figure of A and B, and what their difference means."""

    metric: str  # the name --fail-on uses
    title: str
    unit: str  # "ms", "tok/s", "tokens", "%", "$", "" (score), "n"
    better: int  # +1 higher is better, -1 lower is better, 0 neither
    a: float | None
    b: float | None
    n_a: int
    n_b: int
    low: float | None = None  # the delta's 95 % interval
    high: float | None = None

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def relative(self) -> float | None:
        """(B − A) / |A|, None when A is 0 or missing."""
        d = self.delta
        return None if d is None or not self.a else d / abs(self.a)

    @property
    def known(self) -> bool:
        """Enough values on both sides for the interval to mean something."""
        return (
            self.delta is not None
            and min(self.n_a, self.n_b) >= MIN_SAMPLES
            and self.low is not None
            and self.high is not None
        )

    @property
    def significant(self) -> bool:
        return self.known and not (self.low is not None and self.high is not None and self.low <= 0 <= self.high)

    @property
    def direction(self) -> str:
        """ "better", "worse", "higher", "lower", "same" or "" (no data)."""
        d = self.delta
        if d is None:
            return ""
        if d == 0:
            return "same"
        if self.better == 0:
            return "higher" if d > 0 else "lower"
        return "better" if (d > 0) == (self.better > 0) else "worse"

    @property
    def confidence(self) -> str:
        """ "significant", "noise", "n too small", or "count" (calls and runs: no interval)."""
        if self.unit == "n":
            return "count"
        if not self.known:
            return "n too small"
        return "significant" if self.significant else "noise"

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "title": self.title,
            "unit": self.unit,
            "a": self.a,
            "b": self.b,
            "n_a": self.n_a,
            "n_b": self.n_b,
            "delta": self.delta,
            "relative": self.relative,
            "interval": None if self.low is None or self.high is None else [self.low, self.high],
            "direction": self.direction,
            "confidence": self.confidence,
        }


@dataclass(frozen=True)
class Rule:
    """The verdict's thresholds (defaults: the CLI's and the screen's)."""

    min_gain: float = 0.10  # p99 must improve by this share of A to accept
    max_quality_drop: float = 0.05  # mean groundedness may drop by at most this much (absolute)
    max_error_rise: float = 0.02  # error rate may rise by at most this many points (0.02 = 2 %)
    max_thumbs_down_rise: float = 0.05
    threshold: float = 0.5  # a groundedness score below this fails


@dataclass(frozen=True)
class Verdict:
    decision: str  # "accept", "reject" or "no clear change"
    reason: str
    line: str  # e.g. "p99 −31 %, groundedness −0.11 → reject: quality dropped"
    warnings: tuple[str, ...] = ()


@dataclass
class Comparison:
    a: Cohort
    b: Cohort
    rule: Rule
    deltas: list[Delta]
    caps_a: dict[str, int]  # max_tokens cap -> calls ("none" when the call set none)
    caps_b: dict[str, int]
    thumbs_by_ttft: list[tuple[str, Delta]]
    verdict: Verdict
    method: str = METHOD
    notes: list[str] = field(default_factory=list)

    def get(self, metric: str) -> Delta | None:
        return next((d for d in self.deltas if d.metric == metric), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "a": {"label": self.a.label, "filter": self.a.expression, "since_ns": self.a.since_ns,
                  "until_ns": self.a.until_ns, "max_tokens": self.caps_a},
            "b": {"label": self.b.label, "filter": self.b.expression, "since_ns": self.b.since_ns,
                  "until_ns": self.b.until_ns, "max_tokens": self.caps_b},
            "deltas": "B - A",
            "method": self.method,
            "figures": [d.to_json() for d in self.deltas],
            "thumbs_down_by_ttft": [{"band": band, **d.to_json()} for band, d in self.thumbs_by_ttft],
            "verdict": {"decision": self.verdict.decision, "reason": self.verdict.reason,
                        "line": self.verdict.line, "warnings": list(self.verdict.warnings)},
            "rule": {"min_gain": self.rule.min_gain, "max_quality_drop": self.rule.max_quality_drop,
                     "max_error_rise": self.rule.max_error_rise,
                     "max_thumbs_down_rise": self.rule.max_thumbs_down_rise, "threshold": self.rule.threshold},
            "notes": self.notes,
        }  # fmt: skip


# --- reading a cohort ----------------------------------------------------------------------------


@dataclass
class _Side:
    """One cohort's values, each list ready for its statistic."""

    calls: list[CohortCall]
    runs: dict[bytes, int]  # trace id -> run wall clock
    scores: dict[str, list[float]]  # evaluation name -> scores of the cohort's calls (and runs)
    grounded: list[float]
    thumbs: dict[bytes, int]  # run -> its latest thumb (+1 / -1)
    abandoned: set[bytes]
    first_ttft: dict[bytes, int | None]  # run -> TTFT of its first call in the cohort


def _read(reader: Reader, cohort: Cohort, read: list[CohortCall] | None = None) -> _Side:
    """The cohort's values; ``read``: its calls before the group is applied, when already read."""
    try:
        flt = cohort.filter
    except ValueError as exc:
        raise CohortError(f"cohort {cohort.label}: {exc}") from exc
    try:
        calls = read
        if calls is None:
            calls = reader.cohort_calls(since_ns=cohort.since_ns, until_ns=cohort.until_ns, flt=flt)
    except ValueError as exc:  # a term this backend cannot decide
        raise CohortError(f"cohort {cohort.label}: {exc}") from exc
    if calls is None:
        raise CohortError("this source cannot list calls for a compare yet (use a SQLite database)")
    if cohort.group is not None:
        calls = [call for call in calls if cohort.takes(call)]
    runs: dict[bytes, int] = {}
    first_ttft: dict[bytes, int | None] = {}
    keys: set[tuple[bytes, bytes]] = set()
    for call in calls:  # oldest first: the first call of each run comes first
        if call.trace_id not in runs:
            runs[call.trace_id] = call.run_ns
            first_ttft[call.trace_id] = call.ttft_ns
        keys.add((call.trace_id, call.span_id))
    scores: dict[str, list[float]] = {}
    grounded_by_call: dict[tuple[bytes, bytes | None], list[tuple[float, str | None]]] = {}
    latest: dict[bytes, tuple[int, int]] = {}
    gone: set[bytes] = set()
    for result in _results(reader, set(runs)):
        if _user_result(result, latest, gone):
            continue
        # scores of the cohort's own calls, and results about a whole run
        if result.span_id is not None and (result.trace_id, result.span_id) not in keys:
            continue
        if result.score is None or not math.isfinite(result.score):
            continue
        scores.setdefault(result.name, []).append(float(result.score))
        if is_groundedness(result.name):
            grounded_by_call.setdefault((result.trace_id, result.span_id), []).append((result.score, result.label))
    grounded = [score for results in grounded_by_call.values() for score in preferred_scores(results)]
    return _Side(calls, runs, scores, grounded, {t: v for t, (_, v) in latest.items()}, gone, first_ttft)


def _results(reader: Reader, trace_ids: set[bytes]) -> list[EvaluationResult]:
    return reader.evaluation_results(trace_ids) if trace_ids else []


def _user_result(result: EvaluationResult, latest: dict[bytes, tuple[int, int]], gone: set[bytes]) -> bool:
    """Note a user's thumb (the latest per run wins) or an abandoned run; False for any other result."""
    if is_feedback(result.name):
        value = thumb(result.name, result.score, result.label)
        if value is not None and result.time_ns >= latest.get(result.trace_id, (-1, 0))[0]:
            latest[result.trace_id] = (result.time_ns, value)
        return True
    if abandoned(result.name, result.score, result.label):
        gone.add(result.trace_id)
        return True
    return False


# --- statistics ----------------------------------------------------------------------------------


def _quantile_interval(values: Sequence[float], q: float) -> tuple[float, float] | None:
    n = len(values)
    if n == 0:
        return None
    spread = _Z * math.sqrt(n * q * (1 - q))
    lo, hi = math.floor(n * q - spread), math.ceil(n * q + spread) + 1
    if lo < 1 or hi > n:
        return None
    return float(values[lo - 1]), float(values[hi - 1])


def _percentile_delta(
    metric: str, title: str, unit: str, better: int, a: list[float], b: list[float], q: float
) -> Delta:
    a, b = sorted(a), sorted(b)
    ia, ib = _quantile_interval(a, q), _quantile_interval(b, q)
    low = high = None
    if ia is not None and ib is not None:
        low, high = ib[0] - ia[1], ib[1] - ia[0]
    return Delta(metric, title, unit, better, percentile(a, q * 100), percentile(b, q * 100), len(a), len(b), low, high)


def _mean_var(values: Sequence[float]) -> tuple[float | None, float]:
    n = len(values)
    if n == 0:
        return None, 0.0
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, var


def _mean_delta(metric: str, title: str, unit: str, better: int, a: Sequence[float], b: Sequence[float]) -> Delta:
    ma, va = _mean_var(a)
    mb, vb = _mean_var(b)
    low = high = None
    if ma is not None and mb is not None and len(a) > 1 and len(b) > 1:
        spread = _Z * math.sqrt(va / len(a) + vb / len(b))
        low, high = mb - ma - spread, mb - ma + spread
    return Delta(metric, title, unit, better, ma, mb, len(a), len(b), low, high)


def _wilson(hits: int, n: int) -> tuple[float, float]:
    p = hits / n
    z2 = _Z * _Z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    spread = _Z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return centre - spread, centre + spread


def _rate_delta(metric: str, title: str, better: int, hits_a: int, n_a: int, hits_b: int, n_b: int) -> Delta:
    pa = hits_a / n_a if n_a else None
    pb = hits_b / n_b if n_b else None
    low = high = None
    if pa is not None and pb is not None:
        la, ua = _wilson(hits_a, n_a)
        lb, ub = _wilson(hits_b, n_b)
        d = pb - pa
        low = d - math.sqrt((pb - lb) ** 2 + (ua - pa) ** 2)
        high = d + math.sqrt((ub - pb) ** 2 + (pa - la) ** 2)
    return Delta(metric, title, "%", better, pa, pb, n_a, n_b, low, high)


# --- the comparison ------------------------------------------------------------------------------


def compare(reader: Reader, a: Cohort, b: Cohort, rule: Rule | None = None) -> Comparison:
    """Every figure of the two cohorts, their deltas (B − A) and the verdict."""
    rule = rule or Rule()
    if (
        a.group is not None
        and b.group is not None
        and (a.expression, a.since_ns, a.until_ns) == (b.expression, b.since_ns, b.until_ns)
    ):  # two rows of one Stats table: one read of the calls, split by group
        try:
            shared = reader.cohort_calls(since_ns=a.since_ns, until_ns=a.until_ns, flt=a.filter)
        except ValueError as exc:
            raise CohortError(f"cohort A: {exc}") from exc
        side_a, side_b = _read(reader, a, shared), _read(reader, b, shared)
    else:
        side_a, side_b = _read(reader, a), _read(reader, b)
    deltas: list[Delta] = [
        Delta("calls", "LLM calls", "n", 0, len(side_a.calls), len(side_b.calls), 1, 1),
        Delta("runs", "runs", "n", 0, len(side_a.runs), len(side_b.runs), 1, 1),
    ]

    def both(pick: Callable[[_Side], list[float]]) -> tuple[list[float], list[float]]:
        return pick(side_a), pick(side_b)

    figures: list[tuple[str, str, str, int, Callable[[_Side], list[float]]]] = [
        ("", "call duration", "ms", -1, lambda s: [c.duration_ns / 1e6 for c in s.calls]),
        ("_run", "run duration", "ms", -1, lambda s: [ns / 1e6 for ns in s.runs.values()]),
        ("_ttft", "TTFT", "ms", -1, lambda s: [c.ttft_ns / 1e6 for c in s.calls if c.ttft_ns is not None]),
        ("_decode", "decode speed", "tok/s", 1, lambda s: [c.tokens_per_s for c in s.calls if c.tokens_per_s]),
    ]
    for suffix, title, unit, better, pick in figures:
        va, vb = both(pick)
        for q in (50, 95, 99):
            deltas.append(_percentile_delta(f"p{q}{suffix}", f"{title} p{q}", unit, better, va, vb, q / 100))
    out_a, out_b = both(lambda s: [float(c.output_tokens) for c in s.calls if c.output_tokens is not None])
    deltas.append(_mean_delta("output_tokens", "output tokens, mean", "tokens", 0, out_a, out_b))
    deltas.append(_percentile_delta("output_tokens_p95", "output tokens p95", "tokens", 0, out_a, out_b, 0.95))
    unknown: list[str] = []
    flag: Callable[[CohortCall], int | None]
    for metric, title, flag in (
        ("error_rate", "error rate", lambda c: c.error),
        ("retry_rate", "retry rate", lambda c: c.retry),
        ("fallback_rate", "fallback rate", lambda c: c.fallback),
    ):
        flags_a, flags_b = list(map(flag, side_a.calls)), list(map(flag, side_b.calls))
        if None in flags_a or None in flags_b:  # the backend cannot tell: no rate ("—"), rather than 0 %
            unknown.append(title)
            flags_a, flags_b = ([] if None in flags_a else flags_a), ([] if None in flags_b else flags_b)
        deltas.append(_rate_delta(metric, title, -1, sum(flags_a), len(flags_a), sum(flags_b), len(flags_b)))
    deltas.append(_mean_delta("cost_per_run", "cost per run", "$", -1, *both(_run_costs)))
    deltas.append(_mean_delta("groundedness", "groundedness, mean", "", 1, side_a.grounded, side_b.grounded))
    below_a = sum(1 for s in side_a.grounded if s < rule.threshold)
    below_b = sum(1 for s in side_b.grounded if s < rule.threshold)
    deltas.append(
        _rate_delta(
            "groundedness_below", f"groundedness < {rule.threshold:g}", -1,
            below_a, len(side_a.grounded), below_b, len(side_b.grounded),
        )
    )  # fmt: skip
    for name in sorted(set(side_a.scores) | set(side_b.scores)):
        if not is_groundedness(name):
            deltas.append(
                _mean_delta(
                    f"eval:{name}", f"{name}, mean", "", 0, side_a.scores.get(name, []), side_b.scores.get(name, [])
                )
            )
    down_a = sum(1 for v in side_a.thumbs.values() if v < 0)
    down_b = sum(1 for v in side_b.thumbs.values() if v < 0)
    deltas.append(
        _rate_delta(
            "thumbs_down", "thumbs down (of rated runs)", -1, down_a, len(side_a.thumbs), down_b, len(side_b.thumbs)
        )
    )
    deltas.append(
        _rate_delta("feedback_rate", "runs with feedback", 0, len(side_a.thumbs), len(side_a.runs),
                    len(side_b.thumbs), len(side_b.runs))
    )  # fmt: skip
    deltas.append(
        _rate_delta("abandoned", "runs abandoned", -1, len(side_a.abandoned & set(side_a.runs)), len(side_a.runs),
                    len(side_b.abandoned & set(side_b.runs)), len(side_b.runs))
    )  # fmt: skip
    comparison = Comparison(
        a, b, rule, deltas, _caps(side_a.calls), _caps(side_b.calls), _thumbs_by_ttft(side_a, side_b),
        Verdict("", "", ""),
    )  # fmt: skip
    comparison.verdict = verdict(comparison)
    if unknown:
        comparison.notes.append(f"{' and '.join(unknown)}: not known over this source (it does not compare calls)")
    if not side_a.calls or not side_b.calls:
        comparison.notes.append(
            f"cohort {'A' if not side_a.calls else 'B'} has no LLM calls: check its filter and window"
        )
    return comparison


def _run_costs(side: _Side) -> list[float]:
    """Per run: the total of its priced calls in the cohort (runs without a priced call are left out)."""
    costs: dict[bytes, float] = {}
    for call in side.calls:
        if call.cost_usd is not None:
            costs[call.trace_id] = costs.get(call.trace_id, 0.0) + call.cost_usd
    return list(costs.values())


def _caps(calls: list[CohortCall]) -> dict[str, int]:
    counted = Counter("none" if c.max_tokens is None else str(c.max_tokens) for c in calls)
    return dict(sorted(counted.items(), key=lambda kv: (-kv[1], kv[0])))


def band_of(ttft_ns: int | None) -> str | None:
    """The TTFT cohort of a run (by its first call's TTFT); None without a TTFT."""
    if ttft_ns is None:
        return None
    for band, upper in TTFT_BANDS:
        if upper is None or ttft_ns < upper:
            return band
    return None  # unreachable: the last band has no upper bound


def _thumbs_by_ttft(side_a: _Side, side_b: _Side) -> list[tuple[str, Delta]]:
    out = []
    for band, _ in TTFT_BANDS:
        counts = []
        for side in (side_a, side_b):
            rated = [v for t, v in side.thumbs.items() if band_of(side.first_ttft.get(t)) == band]
            counts += [sum(1 for v in rated if v < 0), len(rated)]
        out.append((band, _rate_delta("thumbs_down", f"thumbs down, {band}", -1, *counts)))
    return out


@dataclass(frozen=True)
class Feelings:
    """What users felt about one cohort's runs: thumbs down per TTFT band, and abandonment."""

    bands: list[tuple[str, int, int]]  # (band, thumbs down, rated runs), in TTFT_BANDS order
    rated: int  # runs with a thumb (with or without a TTFT)
    down: int
    abandoned: int
    runs: int

    def text(self) -> str | None:
        """One line for the Stats screen; None when no run was rated or abandoned."""
        if not self.rated and not self.abandoned:
            return None
        parts = [f"thumbs down {_share(self.down, self.rated)} of {self.rated} rated runs"]
        parts += [f"{band} {_share(down, rated)} ({rated})" for band, down, rated in self.bands if rated]
        parts.append(f"abandoned {_share(self.abandoned, self.runs)} of {self.runs} runs")
        return " · ".join(parts)


def _share(part: int, whole: int) -> str:
    return "—" if not whole else f"{part / whole:.0%}"


#: Runs whose results one read of ``feelings`` takes (its memory stays bounded over a large window).
_FEELINGS_CHUNK = 2_000


def feelings(reader: Reader, cohort: Cohort) -> Feelings:
    """Thumbs down by the TTFT of each rated run's first call, and abandoned runs, over one cohort.

    A cohort without a group (the Stats "users:" line) reads one row per run (``Reader.first_calls``) and,
    a chunk of runs at a time, only the users' results: over 200,000 calls that is a few MB and a fraction of
    the time that listing every call takes.
    """
    if cohort.group is not None:  # a row of the Stats table: its calls are picked one by one
        side = _read(reader, cohort)
        return _feelings(side.first_ttft, side.thumbs, side.abandoned)
    try:
        flt = cohort.filter
    except ValueError as exc:
        raise CohortError(f"cohort {cohort.label}: {exc}") from exc
    try:
        firsts = reader.first_calls(since_ns=cohort.since_ns, until_ns=cohort.until_ns, flt=flt)
    except ValueError as exc:  # a term this backend cannot decide
        raise CohortError(f"cohort {cohort.label}: {exc}") from exc
    if firsts is None:
        raise CohortError("this source cannot list calls for a compare yet (use a SQLite database)")
    latest: dict[bytes, tuple[int, int]] = {}
    gone: set[bytes] = set()
    runs = list(firsts)
    for i in range(0, len(runs), _FEELINGS_CHUNK):
        for result in _results(reader, set(runs[i : i + _FEELINGS_CHUNK])):
            _user_result(result, latest, gone)
    return _feelings(firsts, {t: v for t, (_, v) in latest.items()}, gone)


def _feelings(first_ttft: dict[bytes, int | None], thumbs: dict[bytes, int], gone: set[bytes]) -> Feelings:
    bands = []
    for band, _ in TTFT_BANDS:
        rated = [v for t, v in thumbs.items() if band_of(first_ttft.get(t)) == band]
        bands.append((band, sum(1 for v in rated if v < 0), len(rated)))
    down = sum(1 for v in thumbs.values() if v < 0)
    return Feelings(bands, len(thumbs), down, len(gone & first_ttft.keys()), len(first_ttft))


def _has_changed_caps(caps_a: dict[str, int], caps_b: dict[str, int]) -> bool:
    known_a = {k for k in caps_a if k != "none"}
    known_b = {k for k in caps_b if k != "none"}
    return bool(known_a or known_b) and known_a != known_b


def verdict(c: Comparison) -> Verdict:
    """The rule of the module docstring, applied; the line names the figures it looked at."""
    rule = c.rule
    p99 = c.get("p99")
    grounded = c.get("groundedness")
    errors = c.get("error_rate")
    thumbs = c.get("thumbs_down")
    parts = []
    if p99 is not None and p99.relative is not None:
        parts.append(f"p99 {_signed_percent(p99.relative)}{_noise_mark(p99)}")
    if grounded is not None and grounded.delta is not None:
        parts.append(f"groundedness {_signed(grounded.delta, 2)}{_noise_mark(grounded)}")
    elif grounded is not None:
        parts.append("groundedness: no scores" if not (grounded.n_a or grounded.n_b) else "groundedness: one side only")
    warnings = []
    if _has_changed_caps(c.caps_a, c.caps_b):
        warnings.append(
            f"max_tokens caps differ (A: {caps_text(c.caps_a)}; B: {caps_text(c.caps_b)}): not an equal comparison"
        )
    decision, reason = "no clear change", "no figure of the rule moved beyond its noise"
    if grounded is not None and grounded.significant and (grounded.delta or 0) < -rule.max_quality_drop:
        decision, reason = "reject", "quality dropped"
    elif errors is not None and errors.significant and (errors.delta or 0) > rule.max_error_rise:
        decision, reason = "reject", "errors rose"
    elif thumbs is not None and thumbs.significant and (thumbs.delta or 0) > rule.max_thumbs_down_rise:
        decision, reason = "reject", "more thumbs down"
    elif p99 is not None and p99.significant and p99.relative is not None and p99.relative <= -rule.min_gain:
        decision = "accept"
        reason = "faster, quality held" if grounded is not None and grounded.known else "faster (quality not measured)"
    elif p99 is not None and p99.significant and p99.relative is not None and p99.relative >= rule.min_gain:
        decision, reason = "reject", "slower"
    elif p99 is not None and not p99.known:
        reason = "too few calls to tell"
    line = f"{', '.join(parts) or 'no figures'} → {decision}: {reason}"
    return Verdict(decision, reason, line, tuple(warnings))


def caps_text(caps: dict[str, int]) -> str:
    return ", ".join(f"{cap} ×{n}" for cap, n in caps.items()) or "no calls"


def _noise_mark(d: Delta) -> str:
    return "" if d.significant else " (n too small)" if not d.known else " (≈ noise)"


def _signed(value: float, digits: int) -> str:
    text = f"{abs(value):.{digits}f}"
    return f"−{text}" if value < 0 else f"+{text}" if value > 0 else text


def _signed_percent(value: float) -> str:
    return f"{_signed(value * 100, 0)} %"


# --- times -------------------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, now_ns: int) -> int:
    """``now``, a duration meaning that long ago (``2h``, ``7d``), or an ISO 8601 time (local unless it says)."""
    text = text.strip()
    if text.casefold() == "now":
        return now_ns
    m = _DURATION.match(text)
    if m:
        return now_ns - int(float(m.group(1)) * _UNIT_S[m.group(2)] * 1e9)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a time: write now, a duration ago (2h, 7d) or ISO 8601") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # the local time zone, as the user reads their clock
    return int(moment.timestamp() * 1e9)


def parse_range(text: str, now_ns: int) -> tuple[int | None, int | None]:
    """``START..END`` (either side may be empty); a bare ``START`` runs to now."""
    start, sep, end = text.partition("..")
    since = parse_time(start, now_ns) if start.strip() else None
    until = parse_time(end, now_ns) if sep and end.strip() else None
    if since is not None and until is not None and until <= since:
        raise ValueError(f"{text!r}: the end is not after the start")
    return since, until


# --- --fail-on -----------------------------------------------------------------------------------

_RULE = re.compile(r"^\s*([A-Za-z_][\w:.\-]*)\s*(<=|>=|<|>)\s*([+\-−]?\d+(?:\.\d+)?)\s*(%?)\s*$")


@dataclass(frozen=True)
class FailRule:
    """``metric OP value``: fails when the delta (B − A) satisfies it. ``%``: relative to A."""

    text: str
    metric: str
    op: str
    value: float
    relative: bool

    def check(self, comparison: Comparison) -> tuple[bool, str]:
        """(failed, message)."""
        found = comparison.get(self.metric)
        if found is None:
            return True, f"{self.text}: no figure called {self.metric!r} in this comparison"
        delta = found.relative if self.relative else found.delta
        if delta is None:
            return (
                True,
                f"{self.text}: cannot check, {self.metric} has no value on side {'A' if found.a is None else 'B'}",
            )
        measured = delta * 100 if self.relative else delta
        hit = {"<": measured < self.value, "<=": measured <= self.value,
               ">": measured > self.value, ">=": measured >= self.value}[self.op]  # fmt: skip
        shown = f"{_signed(measured, 1)} %" if self.relative else _signed(measured, 4).rstrip("0").rstrip(".")
        return hit, f"{self.text}: {self.metric} changed by {shown} ({found.confidence}) → {'FAIL' if hit else 'ok'}"


def parse_fail_on(text: str) -> list[FailRule]:
    """``"groundedness<-0.05,p99_ttft>+10%"`` -> rules; raises ValueError naming the bad one."""
    rules = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = _RULE.match(part)
        if not m:
            raise ValueError(f"bad --fail-on rule {part!r}: write METRIC<VALUE or METRIC>VALUE, e.g. p99_ttft>+10%")
        metric, op, number, percent = m.groups()
        rules.append(FailRule(part, metric, op, float(number.replace("−", "-")), percent == "%"))
    if not rules:
        raise ValueError("--fail-on names no rule")
    return rules


def metric_names(comparison: Comparison) -> list[str]:
    return [d.metric for d in comparison.deltas]


# --- text for the screen and the command ---------------------------------------------------------


def format_value(d: Delta, value: float | None) -> str:
    """A figure in its unit: "1.24 s", "12.5 %", "$0.0031", "0.82", "512"."""
    if value is None:
        return "—"
    if d.unit == "ms":
        return fmt_duration(round(value * 1e6))
    if d.unit == "%":
        return f"{value * 100:.1f} %"
    if d.unit == "$":
        return fmt_cost(value)
    if d.unit == "tok/s":
        return f"{value:.1f} tok/s"
    if d.unit in ("n", "tokens"):
        return f"{value:,.0f}" if float(value).is_integer() or d.unit == "n" else f"{value:,.1f}"
    return f"{value:.2f}"


def format_change(d: Delta) -> str:
    """The delta B − A in the figure's unit, with the relative change where it means something."""
    delta = d.delta
    if delta is None:
        return "—"
    if d.unit == "ms":
        text = ("−" if delta < 0 else "+" if delta > 0 else "") + fmt_duration(round(abs(delta) * 1e6))
    elif d.unit == "%":
        text = f"{_signed(delta * 100, 1)} pt"
    elif d.unit == "$":
        text = ("−" if delta < 0 else "+" if delta > 0 else "") + fmt_cost(abs(delta))
    elif d.unit == "":
        text = _signed(delta, 2)
    elif d.unit == "n":
        text = _signed(delta, 0)
    else:
        text = _signed(delta, 1 if abs(delta) < 100 else 0)
    if d.unit not in ("%", "") and d.relative is not None:
        text += f" ({_signed_percent(d.relative)})"
    return text


def format_verdict_word(d: Delta) -> str:
    """ "better" / "worse" / "higher" / "lower", qualified by what the sample can tell."""
    if d.unit == "n":
        return ""
    if d.a is None and d.b is None:
        return "no data"
    if d.a is None or d.b is None:
        return f"no data on {'A' if d.a is None else 'B'}"
    if d.confidence == "n too small":
        return f"{d.direction} (n too small)" if d.direction not in ("", "same") else "n too small"
    if d.confidence == "noise":
        return "≈ noise"
    return d.direction

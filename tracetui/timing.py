"""Where the time of a run went: retries, fallbacks and the wall-clock split.

Pure functions over a trace's LLM and tool calls (DESIGN.md section 6):

* Retry: an earlier failed call to the same model under the same parent (the
  LangChain agent pattern), exception events before a successful end of the
  same span, or ``http.request.resend_count``. Retry delay = time lost before
  the final attempt started.
* Fallback: a call to a different model after a failed call under the same
  parent, or one linked to the failed call by a span link.
* Split: every instant of the trace is given to the most specific activity
  running then (retry or fallback delay > waiting for the first token >
  decoding > an unsplit LLM response > tools > other), so the parts add up to
  the trace's duration even when calls overlap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The split's parts, in priority order (an instant goes to the first one active).
SPLIT_KEYS = ("retry", "fallback", "ttft", "decode", "response", "tool", "other")
_PRIORITY = {key: i for i, key in enumerate(SPLIT_KEYS)}
_TOOL_KINDS = frozenset({"tool", "retriever"})
_LLM_KINDS = frozenset({"llm", "embedding"})


@dataclass(slots=True)
class Call:
    """The facts about one span that the analysis needs."""

    span_id: bytes
    parent_span_id: bytes | None
    kind: str | None
    request_model: str | None
    response_model: str | None
    status_code: int
    start_ns: int
    end_ns: int
    ttft_ns: int | None = None
    attempt_offset_ns: int | None = None
    resend_count: int | None = None
    link_span_id: bytes | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    cost_source: str | None = None

    @property
    def failed(self) -> bool:
        return self.status_code == 2

    @property
    def model(self) -> str | None:
        return self.request_model or self.response_model


@dataclass(slots=True)
class CallTiming:
    is_retry: bool = False
    is_fallback: bool = False
    #: Time lost before this (final) attempt started: failed attempts and backoff.
    retry_ns: int | None = None


@dataclass(slots=True)
class Totals:
    """What a run's model calls add up to: leaf calls only, each request once."""

    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    unpriced_calls: int = 0


@dataclass(slots=True)
class Analysis:
    calls: dict[bytes, CallTiming] = field(default_factory=dict)
    split: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLIT_KEYS, 0))
    #: span id -> counted in the totals (model calls only)
    counted: dict[bytes, bool] = field(default_factory=dict)
    totals: Totals = field(default_factory=Totals)
    #: The longest LLM or tool call (the trace list's drill-down column).
    slowest: Call | None = None

    @property
    def retries(self) -> int:
        return sum(1 for t in self.calls.values() if t.is_retry)

    @property
    def fallbacks(self) -> int:
        return sum(1 for t in self.calls.values() if t.is_fallback)


def analyze(
    calls: list[Call], trace_start: int, trace_end: int, parents: dict[bytes, bytes | None] | None = None
) -> Analysis:
    """Retry/fallback flags per call, what counts in the totals, and the trace's time split.

    ``parents`` maps every span of the trace to its parent (non-model spans
    too), so a model call nested anywhere below another is seen as such.
    """
    result = Analysis()
    _count(calls, parents or {}, result)
    candidates = [c for c in calls if c.kind in _LLM_KINDS or c.kind in _TOOL_KINDS]
    if candidates:
        result.slowest = max(candidates, key=lambda c: (c.end_ns - c.start_ns, -c.start_ns))
    llm = sorted((c for c in calls if c.kind == "llm"), key=lambda c: (c.start_ns, c.end_ns))
    for c in llm:
        result.calls[c.span_id] = CallTiming()
    if any(c.status_code == 2 for c in llm):  # both look for calls made after a failed one
        _siblings(llm, result)
        _links(llm, result)
    for c in llm:  # retries inside the span itself
        timing = result.calls[c.span_id]
        if not timing.is_retry and not timing.is_fallback and (c.attempt_offset_ns or c.resend_count):
            timing.is_retry = True
            timing.retry_ns = c.attempt_offset_ns or None
    result.split = _split(calls, result, trace_start, trace_end)
    return result


def _same_model(a: Call, b: Call) -> bool:
    return a.model is not None and a.model == b.model


def _siblings(llm: list[Call], result: Analysis) -> None:
    by_parent: dict[bytes | None, list[Call]] = {}
    for c in llm:
        by_parent.setdefault(c.parent_span_id, []).append(c)
    for group in by_parent.values():
        pending: list[Call] = []  # failed calls not yet followed by another attempt
        for c in group:
            before = [f for f in pending if f.end_ns <= c.start_ns]
            if before:
                timing = result.calls[c.span_id]
                same = [f for f in before if _same_model(f, c)]
                if same:
                    timing.is_retry = True
                    timing.retry_ns = c.start_ns - min(f.start_ns for f in same)
                elif c.model is not None and any(f.model != c.model for f in before):
                    timing.is_fallback = True
                    timing.retry_ns = c.start_ns - min(f.start_ns for f in before)
                if timing.is_retry or timing.is_fallback:
                    pending = [f for f in pending if f not in before]
            if c.failed:
                pending.append(c)


def _links(llm: list[Call], result: Analysis) -> None:
    failed = {c.span_id: c for c in llm if c.failed}
    for c in llm:
        target = failed.get(c.link_span_id) if c.link_span_id else None
        timing = result.calls[c.span_id]
        if target is None or target is c or timing.is_retry or timing.is_fallback:
            continue
        if _same_model(target, c):
            timing.is_retry = True
        else:
            timing.is_fallback = True
        timing.retry_ns = max(0, c.start_ns - target.start_ns)


_P_RETRY, _P_FALLBACK, _P_TTFT, _P_DECODE, _P_RESPONSE, _P_TOOL = (_PRIORITY[k] for k in SPLIT_KEYS[:6])


def _split(calls: list[Call], analysis: Analysis, trace_start: int, trace_end: int) -> dict[str, int]:
    split = dict.fromkeys(SPLIT_KEYS, 0)
    total = trace_end - trace_start
    if total <= 0:
        return split
    # Each activity as (start, priority) / (end, priority) boundaries, clipped to the trace;
    # priorities are indexes into SPLIT_KEYS, lowest wins.
    points: list[tuple[int, int, int]] = []

    def add(s: int, e: int, priority: int) -> None:
        s = s if s > trace_start else trace_start
        e = e if e < trace_end else trace_end
        if e > s:
            points.append((s, 1, priority))
            points.append((e, -1, priority))

    timings = analysis.calls
    for c in calls:
        kind = c.kind
        start = c.start_ns
        end = c.end_ns if c.end_ns > start else start
        if kind in _LLM_KINDS:
            timing = timings.get(c.span_id)
            offset = c.attempt_offset_ns or 0
            if timing is not None and timing.retry_ns and (timing.is_retry or timing.is_fallback):
                lost = _P_RETRY if timing.is_retry else _P_FALLBACK
                if offset:
                    add(start, start + offset, lost)
                else:
                    add(start - timing.retry_ns, start, lost)
            attempt = start + offset
            ttft = c.ttft_ns
            if ttft is not None and attempt + ttft <= end:
                add(attempt, attempt + ttft, _P_TTFT)
                add(attempt + ttft, end, _P_DECODE)
            else:
                add(attempt, end, _P_RESPONSE)
        elif kind in _TOOL_KINDS:
            add(start, end, _P_TOOL)
    if not points:
        split["other"] = total
        return split
    # Sweep the boundaries; each piece goes to the highest-priority activity active in it.
    points.sort()  # ties at one instant: the order does not matter, the piece between them is empty
    active = [0] * len(SPLIT_KEYS)
    durations = [0] * len(SPLIT_KEYS)
    previous = trace_start
    for t, delta, priority in points:
        if t > previous:
            for i, n in enumerate(active):
                if n:
                    durations[i] += t - previous
                    break
            previous = t
        active[priority] += delta
    for key, ns in zip(SPLIT_KEYS, durations):
        split[key] = ns
    split["other"] += total - sum(durations)
    return split


def _count(calls: list[Call], parents: dict[bytes, bytes | None], result: Analysis) -> None:
    """Leaf model calls count once each (DESIGN.md section 5: no double counting).

    * A model call with another model call below it (a framework's span around
      the provider SDK's) is not a leaf: only the inner call counts.
    * Two instrumentations side by side can report one request twice, with
      overlapping times and the same token counts and neither inside the
      other: only one of them counts (the one with a reported cost, else the
      first).
    """
    model_calls = [c for c in calls if c.kind in _LLM_KINDS]
    ids = {c.span_id for c in model_calls}
    parents = {**{c.span_id: c.parent_span_id for c in calls}, **parents}
    inner: set[bytes] = set()  # calls that have a model call somewhere below them
    for c in model_calls:
        node, hops = parents.get(c.span_id), 0
        while node is not None and hops < 10_000:
            if node in ids:
                inner.add(node)
            node, hops = parents.get(node), hops + 1
    leaves = [c for c in model_calls if c.span_id not in inner]
    leaves.sort(key=lambda c: (c.cost_source != "reported", c.start_ns))
    kept: list[Call] = []
    for c in leaves:
        duplicate = c.input_tokens is not None and c.output_tokens is not None and any(
            k.input_tokens == c.input_tokens
            and k.output_tokens == c.output_tokens
            and max(k.start_ns, c.start_ns) < min(k.end_ns, c.end_ns)
            for k in kept
        )
        if not duplicate:
            kept.append(c)
    counted = {c.span_id for c in kept}
    totals = result.totals
    for c in model_calls:
        result.counted[c.span_id] = c.span_id in counted
    for c in kept:
        if c.kind == "llm":
            totals.llm_calls += 1
        totals.input_tokens += c.input_tokens or 0
        totals.output_tokens += c.output_tokens or 0
        if c.cost_usd is not None:
            totals.cost_usd = (totals.cost_usd or 0.0) + c.cost_usd
        elif c.input_tokens or c.output_tokens:
            totals.unpriced_calls += 1

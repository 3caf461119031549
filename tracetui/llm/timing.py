"""Where the time of a run went: retries, fallbacks and the wall-clock split.

Pure functions over a trace's LLM and tool calls (the timing model: ``docs/timing.md``):

* Retry: an earlier failed call to the same model under the same parent (the
  LangChain agent pattern; not when both inputs are known and differ),
  exception events before a successful end of the same span, HTTP client
  child spans (one per attempt: a failed ``POST`` before the one that
  succeeded, as opentelemetry-instrumentation-httpx 0.66b2 records the
  OpenAI SDK's own retries), or ``http.request.resend_count``. Retry delay =
  time lost before the final attempt started.
* Fallback: a call to a different model that *replaces* a failed call of the
  same step: linked to it by a span link, or under the same parent with the
  same input. Any call after a failure is not a fallback (an agent's next step
  after a failed one asks something else).
* Split: every instant of the trace is given to the most specific activity
  running then (retry or fallback delay > waiting for the first token >
  decoding > an unsplit LLM response > tools > other), so the parts add up to
  the trace's duration even when calls overlap.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from tracetui.model.rows import SPLIT_KEYS

#: SPLIT_KEYS is in priority order: an instant goes to the first part active.
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
    #: HTTP status of an HTTP client span (0: no response); None for other spans.
    http_status: int | None = None
    #: The normalizer's provenance JSON (where the time to first token came from).
    provenance: str | None = None
    #: What the call was asked (see ``analyze``'s ``input_of``); None when unknown.
    input_key: object = None

    @property
    def failed(self) -> bool:
        return self.status_code == 2

    @property
    def is_http_attempt(self) -> bool:
        """An HTTP request span: one attempt of its parent call when that is a model call."""
        return self.http_status is not None and self.kind is None

    @property
    def failed_attempt(self) -> bool:
        """An HTTP attempt that got no usable answer: an error status, no response, or a 4xx/5xx."""
        return self.failed or self.http_status == 0 or (self.http_status or 0) >= 400

    @property
    def model(self) -> str | None:
        return self.request_model or self.response_model


@dataclass(slots=True)
class CallTiming:
    is_retry: bool = False
    is_fallback: bool = False
    #: Time lost before this (final) attempt started: failed attempts and backoff.
    retry_ns: int | None = None
    #: Where in the span the final attempt started, when the retries happened inside
    #: it (exception events, HTTP attempt children); None when they were earlier spans.
    retry_offset_ns: int | None = None
    #: What showed the retry (or the fallback), e.g. "2 HTTP attempts, first 429";
    #: "1 HTTP attempt" says there was none.
    retry_source: str | None = None


@dataclass(slots=True)
class Totals:
    """What a run's model calls add up to: leaf calls only, each request once."""

    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    unpriced_calls: int = 0
    #: Successful model calls that reported no token counts (their cost is unknown too).
    tokenless_calls: int = 0


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
    calls: list[Call],
    trace_start: int,
    trace_end: int,
    parents: dict[bytes, bytes | None] | None = None,
    input_of: Callable[[Call], object] | None = None,
) -> Analysis:
    """Retry/fallback flags per call, what counts in the totals, and the trace's time split.

    ``calls`` are the trace's model, tool and agent spans, plus its HTTP client
    spans (``http_status`` set), which count as attempts of the model call they
    sit under. ``parents`` maps every span of the trace to its parent (non-model
    spans too), so a model call nested anywhere below another is seen as such.
    ``input_of(call)`` tells what a call was asked (any comparable value, None
    when unknown); it is asked only about calls made after a failed one, so it
    may be slow (it reads the raw span). By default ``Call.input_key``.
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
        inputs = _Inputs(input_of or _input_key)
        _siblings(llm, result, inputs)
        _links(llm, result)
    attempts = _attempts_by_parent(calls)
    for c in llm:  # retries inside the span itself
        if c.attempt_offset_ns or c.resend_count or c.span_id in attempts:
            _inside(c, result.calls[c.span_id], attempts.get(c.span_id))
    result.split = _split(calls, result, trace_start, trace_end)
    return result


def _input_key(call: Call) -> object:
    return call.input_key


class _Inputs:
    """``input_of`` asked at most once per call."""

    def __init__(self, input_of: Callable[[Call], object]) -> None:
        self._input_of = input_of
        self._known: dict[bytes, object] = {}

    def differ(self, a: Call, b: Call) -> bool:
        """Both inputs are known and they are not the same."""
        x, y = self.get(a), self.get(b)
        return x is not None and y is not None and x != y

    def same(self, a: Call, b: Call) -> bool:
        """Both inputs are known and equal."""
        x = self.get(a)
        return x is not None and x == self.get(b)

    def get(self, call: Call) -> object:
        if call.span_id not in self._known:
            self._known[call.span_id] = self._input_of(call)
        return self._known[call.span_id]


def _attempts_by_parent(calls: list[Call]) -> dict[bytes, list[Call]]:
    """HTTP attempt spans by the span they sit under, oldest first."""
    found: dict[bytes, list[Call]] = {}
    for c in calls:
        if c.is_http_attempt and c.parent_span_id is not None:
            found.setdefault(c.parent_span_id, []).append(c)
    for group in found.values():
        group.sort(key=lambda a: (a.start_ns, a.end_ns))
    return found


def _inside(call: Call, timing: CallTiming, attempts: list[Call] | None) -> None:
    """Retries the call's own span shows: HTTP attempt children, exception events, resend count."""
    offset, source = None, None
    if attempts:
        final = attempts[-1]
        resent = max((a.resend_count or 0) for a in attempts)
        if resent or any(a.failed_attempt for a in attempts[:-1]):
            offset = max(0, final.start_ns - call.start_ns)
            source = _attempts_text(attempts, resent)
        elif not (call.attempt_offset_ns or call.resend_count):
            # no failed attempt: the requests the call made (a library may make more than one)
            n = len(attempts)
            timing.retry_source = "1 HTTP attempt" if n == 1 else f"{n} HTTP requests, none failed"
            return
    if source is None and call.attempt_offset_ns:
        offset, source = call.attempt_offset_ns, "exception event before success"
    if source is None and call.resend_count:
        source = f"http.request.resend_count = {call.resend_count}"
    if source is None:
        return
    timing.retry_offset_ns = offset or None
    if timing.is_retry or timing.is_fallback:  # an earlier sibling too: its delay stays, the source adds up
        timing.retry_source = f"{timing.retry_source}; {source}" if timing.retry_source else source
        return
    timing.is_retry = True
    timing.retry_ns = offset or None
    timing.retry_source = source


def _attempts_text(attempts: list[Call], resent: int) -> str:
    """ "2 HTTP attempts, first 429" (statuses of the failed ones), or what a resend count adds."""
    failed = [a for a in attempts[:-1] if a.failed_attempt]
    if len(attempts) == 1:
        return f"1 HTTP attempt with http.request.resend_count = {resent} (earlier attempts not recorded)"
    text = f"{len(attempts)} HTTP attempts"
    if failed:
        first = failed[0].http_status
        text += f", first {first if first else 'without a response'}"
    return text


def _same_model(a: Call, b: Call) -> bool:
    return a.model is not None and a.model == b.model


def _siblings(llm: list[Call], result: Analysis, inputs: _Inputs) -> None:
    """Failed calls and the calls that followed them under the same parent.

    A later call to the same model retries the failed one unless both inputs
    are known and differ; a call to another model replaces it (a fallback) only
    when both inputs are known and equal.
    """
    by_parent: dict[bytes | None, list[Call]] = {}
    for c in llm:
        by_parent.setdefault(c.parent_span_id, []).append(c)
    for group in by_parent.values():
        pending: list[Call] = []  # failed calls not yet followed by another attempt
        for c in group:
            before = [f for f in pending if f.end_ns <= c.start_ns]
            if before:
                timing = result.calls[c.span_id]
                same = [f for f in before if _same_model(f, c) and not inputs.differ(f, c)]
                replaced = [] if same else [f for f in before if c.model is not None and f.model != c.model
                                            and inputs.same(f, c)]  # fmt: skip
                if same:
                    timing.is_retry = True
                    timing.retry_ns = c.start_ns - min(f.start_ns for f in same)
                    timing.retry_source = "an earlier failed call to the same model"
                elif replaced:
                    timing.is_fallback = True
                    timing.retry_ns = c.start_ns - min(f.start_ns for f in replaced)
                    timing.retry_source = "replaces a failed call with the same input"
                pending = [f for f in pending if f not in same and f not in replaced]
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
        timing.retry_source = "span link to the failed call"


#: How the normalizer's provenance names a time to first token taken from a span event.
_EVENT_TTFT = '"ttft":"event:'


def first_token_at(
    start: int, attempt: int, end: int, ttft_ns: int | None, attempt_offset_ns: int | None, provenance: str | None
) -> int | None:
    """When a call's first token arrived (ns), or None: not reported, or outside the final attempt.

    ``attempt`` is when the final attempt started (tracetui.llm.timing's retry offset).
    A time to first token from a span *event* is an instant the normalizer measured
    from the attempt it knew of (the span's start, or its last exception event), so
    it stays where it is when HTTP attempt children move the final attempt later
    (its value then includes the retry: ``ttft_includes_retry``). One from an
    attribute is a duration from the final attempt's start.
    """
    if ttft_ns is None:
        return None
    if provenance and _EVENT_TTFT in provenance:
        first = start + (attempt_offset_ns or 0) + ttft_ns
    else:
        first = attempt + ttft_ns
    return first if attempt <= first <= end else None


def ttft_includes_retry(retry_offset_ns: int | None, attempt_offset_ns: int | None, provenance: str | None) -> bool:
    """The stored time to first token was measured from before the final attempt (see first_token_at)."""
    moved = (retry_offset_ns or 0) > (attempt_offset_ns or 0)
    return moved and provenance is not None and _EVENT_TTFT in provenance


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
            offset = (timing.retry_offset_ns if timing is not None else c.attempt_offset_ns) or 0
            if timing is not None and timing.retry_ns and (timing.is_retry or timing.is_fallback):
                lost = _P_RETRY if timing.is_retry else _P_FALLBACK
                if offset:
                    add(start, start + offset, lost)
                else:
                    add(start - timing.retry_ns, start, lost)
            attempt = start + offset
            ttft = c.ttft_ns
            first = None if ttft is None else first_token_at(start, attempt, end, ttft, c.attempt_offset_ns,
                                                              c.provenance)  # fmt: skip
            if first is not None:
                add(attempt, first, _P_TTFT)
                add(first, end, _P_DECODE)
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
    for key, ns in zip(SPLIT_KEYS, durations, strict=False):
        split[key] = ns
    split["other"] += total - sum(durations)
    return split


def _count(calls: list[Call], parents: dict[bytes, bytes | None], result: Analysis) -> None:
    """Leaf model calls count once each: no usage is counted twice (``docs/timing.md``, "Counting").

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
    # kept calls by their token counts: a duplicate has the same counts, so each call is compared with
    # those few only (comparing with every kept call was quadratic: 6.6M comparisons for a 3,646-call run)
    by_tokens: dict[tuple[int, int], list[Call]] = {}
    for c in leaves:
        same = None
        if c.input_tokens is not None and c.output_tokens is not None:
            same = by_tokens.setdefault((c.input_tokens, c.output_tokens), [])
        if same is not None and any(max(k.start_ns, c.start_ns) < min(k.end_ns, c.end_ns) for k in same):
            continue  # one request reported twice
        kept.append(c)
        if same is not None:
            same.append(c)
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
        if c.input_tokens is None or c.output_tokens is None:
            totals.tokenless_calls += _tokenless(c)


def _tokenless(call: Call) -> bool:
    """A successful model call whose library reported no token counts (a stream without
    ``include_usage``, the OpenAI SDK's default): the run's tokens and cost are incomplete."""
    if call.failed:
        return False
    if call.kind == "embedding":
        return call.input_tokens is None
    return call.input_tokens is None or call.output_tokens is None


# --- the words for what a library did not report (detail pane, legend, summary) ----------------


#: Instrumentation scope names (the tracer names libraries create) -> the library a user installed.
#: A key ending in "." or "_" is a prefix, any other must match whole. Each is the name the
#: capture of that family carries (tests/fixtures) or its source sets; a scope not listed is
#: shown as its name. The Vercel AI SDK's tracers have generic default names that anyone may
#: use, so those are shown as the tracer's name with whose default it is, not as a certainty.
_LIBRARIES: dict[str, str] = {
    "opentelemetry.util.genai.": "the OpenTelemetry GenAI instrumentation",  # openai-v2 2.x writes through it
    "opentelemetry.instrumentation.openai_v2": "opentelemetry-instrumentation-openai-v2",
    "opentelemetry.instrumentation.openai.": "OpenLLMetry",  # traceloop's opentelemetry-instrumentation-openai
    "openinference.instrumentation.": "OpenInference",
    "traceai_": "traceAI",
    "litellm": "LiteLLM",
    "openlit.": "OpenLIT",
    "ai": "tracer 'ai' (the Vercel AI SDK's default)",  # ai@3-6: trace.getTracer("ai")
    "gen_ai": "tracer 'gen_ai' (the Vercel AI SDK's default)",  # @ai-sdk/otel 1.0: trace.getTracer('gen_ai')
}


def library_name(scope_name: str | None) -> str:
    """The library a span came from: its name when its instrumentation scope is a known
    library's ("OpenLLMetry" for ``opentelemetry.instrumentation.openai.v1``), else the scope name."""
    if not scope_name:
        return "the instrumentation (no scope name)"
    for key, library in _LIBRARIES.items():
        if scope_name == key.rstrip("._") or (key[-1] in "._" and scope_name.startswith(key)):
            return library
    return scope_name


def first_token_note(streaming: int | bool | None, ttft_ns: int | None, scope_name: str | None) -> str | None:
    """Why a model call's bar is one "response" segment; None when its first token is known.

    Streaming is yes, no or not reported (None): only a library that says the call
    was not streamed makes it "not streamed": not reported is not "no" (``docs/timing.md``).
    """
    if ttft_ns is not None:
        return None
    if streaming is not None and not streaming:
        return "not streamed"
    return f"first token not reported by {library_name(scope_name)}"


#: A call of a library that makes each attempt a span of its own (provenance ``attempts``), no failed one before it.
NO_RETRY_SEEN = "none (each attempt is its own span)"


def attempts_spanned(provenance: str | dict | None) -> bool:
    """Whether the call's library makes each HTTP attempt a span of its own (the Vercel AI SDK 3-6's
    ``doGenerate`` / ``doStream``): then a call with no failed attempt before it had no retry."""
    if isinstance(provenance, str):
        try:
            provenance = json.loads(provenance)
        except ValueError:
            return False
    return isinstance(provenance, dict) and bool(provenance.get("attempts"))


def retry_note(retry_source: str | None, scope_name: str | None, provenance: dict[str, str] | None = None) -> str:
    """What is known of a model call's retries: their source ("2 HTTP attempts, first 429",
    "1 HTTP attempt"), "none" when the library spans every attempt, else that nothing in the
    data could show one."""
    if retry_source:
        return retry_source
    if attempts_spanned(provenance):
        return NO_RETRY_SEEN
    return f"retry not reported by {library_name(scope_name)}"


def tokens_estimated_note(provenance: dict[str, str], scope_name: str | None) -> str | None:
    """ "estimated by litellm (per metadata.usage_object)" when the library counted a call's tokens itself.

    The normalizer marks such counts with provenance ``tokens_estimated``, naming the
    attribute that shows it (LiteLLM counts a stream's tokens itself when the provider
    sent no usage); None when the counts are the provider's.
    """
    source = provenance.get("tokens_estimated")
    if not source:
        return None
    return f"estimated by {library_name(scope_name)} (per {source})"

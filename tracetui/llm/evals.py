"""Evaluation results (groundedness, relevance, ...) carried by OTLP spans and log records.

Pure functions over the protobuf messages, no I/O and no UI imports: ``from_span`` runs on
the receiver's hot path for every span, so a span without evaluations costs one pass over
its attribute keys and event names and nothing else; given what ``semconv.read_span`` saw
of the same span, not even that pass.

Shapes understood (``docs/semconv.md``, "Evaluation results"):

- OTel GenAI event ``gen_ai.evaluation.result``, as a span event (``from_span``) or as a
  log record (``from_log_record``; event name in ``event_name`` or the older ``event.name``
  attribute). Attributes ``gen_ai.evaluation.name`` / ``.score.value`` / ``.score.label`` /
  ``.explanation`` and ``gen_ai.response.id``.
- traceAI / FutureAGI ai-evaluation span attributes: the same ``gen_ai.evaluation.*`` names
  directly on the span, plus ``gen_ai.evaluation.target_span_id`` (hex) naming the target.
- Per-metric ``eval.{name}.score`` / ``.label`` / ``.explanation``, and the legacy
  ai-evaluation (``fi.evals``) dual-write form: bare ``eval.{name}`` = numeric score and
  ``eval.{name}.reason`` = explanation. A span carrying ``eval.name`` with ``eval.score`` /
  ``eval.label`` / ``eval.explanation`` (one unnamed-prefix result) is read too, so that
  ``eval.score`` is never mistaken for a metric called "score".
- OpenInference flattened feedback ``evaluations.{i}.evaluation.*`` and
  ``annotations.{i}.annotation.*`` (span scope only: ``trace.*`` / ``session.*`` scoped
  feedback describes a whole trace or session and is deliberately not read here).
- EVALUATOR carrier spans (``openinference.span.kind`` / ``gen_ai.span.kind`` /
  ``fi.span.kind`` = EVALUATOR) with exactly one span link: their results describe the
  linked span (and its trace), not the carrier. Without a link the carrier stays the target
  (OpenInference: parentage MUST NOT identify the target).

Nothing here raises on malformed input: bad numbers become ``score=None``, bad ids are
ignored, huge strings are cut, and results without a name (or without any of score / label /
explanation) are skipped.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

from tracetui.llm.feedback import name_key

log = logging.getLogger(__name__)

EVENT_NAME = "gen_ai.evaluation.result"

SOURCE_SPAN_EVENT = "span event"
SOURCE_LOG_RECORD = "log record"
SOURCE_TRACEAI = "traceAI attributes"
SOURCE_EVAL_ATTRS = "eval attributes"
SOURCE_OI_EVALUATIONS = "OpenInference evaluations"
SOURCE_OI_ANNOTATIONS = "OpenInference annotations"
SOURCE_EVALUATOR_LINK = "evaluator span link"
SOURCE_FEEDBACK_RECORD = "feedback log record"

#: Longest explanation kept (the cut one ends with "…" and is exactly this long).
MAX_EXPLANATION = 4000
#: Longest name / label / response id kept.
MAX_SHORT_TEXT = 256
#: At most this many evaluations are read from one span (hostile attribute floods).
MAX_PER_SPAN = 256
#: Numeric strings longer than this are not parsed as scores.
_MAX_NUMBER_TEXT = 64

#: Attribute key prefixes of every attribute shape read here; a span without any such key
#: (and without an evaluation event) carries no evaluation.
ATTRIBUTE_PREFIXES = _PREFIXES = ("gen_ai.evaluation.", "eval.", "evaluations.", "annotations.")
_GA = "gen_ai.evaluation."
_GA_LEN = len(_GA)
_KIND_KEYS = frozenset(("openinference.span.kind", "gen_ai.span.kind", "fi.span.kind"))
_RESPONSE_ID = "gen_ai.response.id"
_EVENT_NAME_ATTR = "event.name"

_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)
_INT64_MAX = (1 << 63) - 1

#: ``eval.X`` keys that are metadata in the wild (fi.evals, traceAI, inspect-style
#: exporters), never a metric called X.
_EVAL_RESERVED = frozenset(
    (
        "name", "score", "label", "explanation", "reason", "metric", "model", "input", "output",
        "expected", "evaluated_at", "evaluator_version", "sample_rate", "sample_id", "epoch",
        "invocation_id", "answer", "id", "latency_ms",
    )
)  # fmt: skip
_EVAL_FIELDS = frozenset(("score", "label", "explanation", "reason"))
_OI_FIELDS = frozenset(("name", "score", "label", "explanation"))

#: Lower rank = more specific; kept when several shapes on one span carry the same result.
_RANK = {
    SOURCE_SPAN_EVENT: 0,
    SOURCE_OI_EVALUATIONS: 1,
    SOURCE_OI_ANNOTATIONS: 1,
    SOURCE_TRACEAI: 2,
    SOURCE_EVAL_ATTRS: 3,
}

_PASS_LABELS = frozenset(("pass", "passed", "true", "yes", "grounded", "correct", "relevant", "faithful", "ok"))
_FAIL_LABELS = frozenset(
    (
        "fail", "failed", "false", "no", "ungrounded", "not_grounded", "incorrect", "irrelevant",
        "not_relevant", "hallucinated", "unfaithful",
    )
)  # fmt: skip
_INVERSE_NAME_PARTS = ("unground", "not_ground", "nonground", "non_ground", "unfaithful", "hallucinat")


@dataclass(frozen=True, slots=True)
class Evaluation:
    trace_id: bytes  # 16 bytes
    span_id: bytes | None  # the EVALUATED span (target), when known
    response_id: str | None  # gen_ai.response.id, to find the target when span_id is unknown
    name: str
    score: float | None
    label: str | None
    explanation: str | None
    source: str  # "span event", "log record", "traceAI attributes", "eval attributes",
    # "OpenInference evaluations", "OpenInference annotations", "evaluator span link"
    time_ns: int


# --- what the normalizer already saw -------------------------------------------------

#: ``from_span``'s ``scan``: no key with ATTRIBUTE_PREFIXES and no events at all.
SCAN_NOTHING = 0
#: No key with ATTRIBUTE_PREFIXES, but events, whose names are still to be checked.
SCAN_EVENTS = 1
#: Some key starts with ATTRIBUTE_PREFIXES: the span is read in full.
SCAN_KEYS = 2


# --- public API -------------------------------------------------------------------


def from_span(span, scan: int | None = None) -> list[Evaluation]:
    """Evaluations carried by one OTLP Span proto (opentelemetry.proto.trace.v1.trace_pb2.Span).

    ``scan``: what ``semconv.read_span`` found of this span's keys (one of ``SCAN_*``),
    which spares reading them all a second time; None reads them here.
    """
    # Fast path: no other work than telling whether any key or event name can hold an
    # evaluation. An EVALUATOR span without any of these keys or events carries nothing
    # to redirect, so its kind needs no look here.
    found = scan
    if found is None:
        found = SCAN_EVENTS
        for kv in span.attributes:
            if kv.key.startswith(_PREFIXES):
                found = SCAN_KEYS
                break
    if found != SCAN_KEYS:
        if found == SCAN_NOTHING:
            return []
        for event in span.events:
            if event.name == EVENT_NAME:
                break
        else:
            return []
    try:
        return _from_span(span)
    except Exception:  # last resort: the hot path must never fail on one odd span
        log.debug("could not read evaluations from a span", exc_info=True)
        return []


def from_log_record(record, trace_id_fallback: bytes | None = None) -> list[Evaluation]:
    """Evaluations carried by one OTLP LogRecord proto (opentelemetry.proto.logs.v1.logs_pb2.LogRecord).

    ``gen_ai.evaluation.result`` events (event name in ``record.event_name`` or the older
    ``event.name`` attribute), and user feedback records named like ``user_feedback``,
    ``thumbs`` or ``abandoned`` (:data:`FEEDBACK_EVENTS`, read by ``_from_feedback_record``).
    Target span = ``record.span_id`` (8 bytes, non-zero); otherwise ``span_id`` is None and
    the caller finds the target later via ``response_id`` (a feedback record without a span
    is about its whole run).
    """
    event_name = record.event_name
    if not event_name:
        for kv in record.attributes:
            if kv.key == _EVENT_NAME_ATTR:
                event_name = _text(kv.value, MAX_SHORT_TEXT)
                break
    if event_name != EVENT_NAME and not is_feedback_event(event_name):
        return []
    try:
        if event_name != EVENT_NAME:
            return _from_feedback_record(record, str(event_name), trace_id_fallback)
        return _from_log_record(record, trace_id_fallback)
    except Exception:
        log.debug("could not read an evaluation from a log record", exc_info=True)
        return []


def is_groundedness(name: str) -> bool:
    """Groundedness / grounded / faithfulness style names (case-insensitive).

    E.g. "groundedness", "Groundedness", "context_groundedness", "is_grounded",
    "faithfulness". Not "hallucination" (inverse scale), not "ungroundedness", not
    "ground_truth_match".
    """
    if not isinstance(name, str):
        return False
    n = name.casefold().replace("-", "_").replace(" ", "_")
    if "grounded" not in n and "faithful" not in n:
        return False
    return not any(part in n for part in _INVERSE_NAME_PARTS)


#: The label of a groundedness *estimate* (tracetui's lexical judge), shown as "≈" beside the score.
ESTIMATE_LABEL = "estimate"


def preferred_scores(results: list[tuple[float, str | None]]) -> list[float]:
    """The scores of one call's (score, label) groundedness results that count: the judged ones (a model's or
    the app's) when there are any, else the estimates. Stats and compare average these, so an estimate never
    dilutes a judged score of the same call."""
    judged = [score for score, label in results if label != ESTIMATE_LABEL]
    return judged or [score for score, _ in results]


def worst_groundedness(results: list[tuple[float, str | None]]) -> tuple[float | None, bool]:
    """(the lowest score, whether it is an estimate) of (score, label) groundedness results.

    A judged score wins over an estimate: the estimate is used only when nothing else scored the call or run.
    """
    scores = preferred_scores(results)
    if not scores:
        return None, False
    return min(scores), all(label == ESTIMATE_LABEL for _, label in results)


def passed(score: float | None, label: str | None, threshold: float = 0.5) -> bool | None:
    """Pass/fail: ``score >= threshold`` when there is a (finite) score, else by label; None when unknown.

    The scale is assumed to be higher-is-better; inverse metrics such as hallucination
    must be handled by the caller.
    """
    if score is not None:
        try:
            s = float(score)
        except (TypeError, ValueError):
            s = math.nan
        if math.isfinite(s):
            return s >= threshold
    if isinstance(label, str):
        key = label.strip().casefold().replace("-", "_").replace(" ", "_")
        if key in _PASS_LABELS:
            return True
        if key in _FAIL_LABELS:
            return False
    return None


# --- spans ------------------------------------------------------------------------


def _from_span(span) -> list[Evaluation]:
    """from_span once it is known that some key or event may carry an evaluation."""
    trace_id = _valid_id(span.trace_id, 16)
    if trace_id is None:
        return []
    own_span_id = _valid_id(span.span_id, 8)
    span_time = _clamp_ns(span.end_time_unix_nano or span.start_time_unix_nano)

    ga: dict[str, object] = {}  # gen_ai.evaluation.<field> -> AnyValue
    per_metric: dict[str, dict[str, object]] = {}  # eval.<name>.<field>
    single: dict[str, object] = {}  # eval.name / eval.score / ...
    oi: dict[tuple[int, int], dict[str, object]] = {}  # (0 evaluations | 1 annotations, index)
    kind = _sort_attributes_by_shape(span, ga, per_metric, single, oi)

    # (evaluation, shape it was read from, explicitly targeted elsewhere?). Shapes are read
    # most specific first (the order of _RANK): MAX_PER_SPAN keeps the first ones read,
    # and _dedupe keeps the first of equal results within one shape.
    found: list[tuple[Evaluation, str, bool]] = []
    _read_span_events(span, trace_id, own_span_id, span_time, found)
    if oi:
        _read_openinference(oi, trace_id, own_span_id, span_time, found)
    if ga:
        _read_traceai(ga, trace_id, own_span_id, span_time, found)
    if single or per_metric:
        _read_eval_attributes(single, per_metric, trace_id, own_span_id, span_time, found)
    if not found:
        return []
    if kind is not None and kind.upper() == "EVALUATOR" and len(span.links) == 1:
        found = _retarget_to_linked_span(span.links[0], trace_id, found)
    return _dedupe(found)


def _sort_attributes_by_shape(span, ga: dict, per_metric: dict, single: dict, oi: dict) -> str | None:
    """One pass over the attributes, sorting the interesting ones into the shape they belong to; returns the span kind."""
    kind = None
    for kv in span.attributes:
        key = kv.key
        if key.startswith(_GA):
            ga[key[_GA_LEN:]] = kv.value
        elif key.startswith("eval."):
            _collect_eval_attr(key[5:], kv.value, per_metric, single)
        elif key.startswith("evaluations."):
            _collect_oi_attr(key[12:], "evaluation.", 0, kv.value, oi)
        elif key.startswith("annotations."):
            _collect_oi_attr(key[12:], "annotation.", 1, kv.value, oi)
        elif key in _KIND_KEYS and kind is None:
            kind = _text(kv.value, 64)
    return kind


def _add(found: list, evaluation: Evaluation | None, explicit: bool = False) -> None:
    """Keep one result read from a span, up to MAX_PER_SPAN of them."""
    if evaluation is not None and len(found) < MAX_PER_SPAN:
        found.append((evaluation, evaluation.source, explicit))


def _read_span_events(span, trace_id: bytes, own_span_id, span_time: int, found: list) -> None:
    """Rank 0: ``gen_ai.evaluation.result`` span events, each at its own time."""
    for event in span.events:
        if len(found) >= MAX_PER_SPAN:
            break
        if event.name != EVENT_NAME:
            continue
        fields, response = _ga_fields(event.attributes)
        _add(
            found,
            _build(
                trace_id,
                own_span_id,
                fields.get("name"),
                _score(fields.get("score.value")),
                fields.get("score.label"),
                fields.get("explanation"),
                response,
                SOURCE_SPAN_EVENT,
                _clamp_ns(event.time_unix_nano) or span_time,
            ),
        )


def _read_openinference(oi: dict, trace_id: bytes, own_span_id, span_time: int, found: list) -> None:
    """Rank 1: OpenInference ``evaluations.{i}`` then ``annotations.{i}``, each in index order."""
    for (form, _index), obj in sorted(oi.items(), key=lambda item: item[0]):
        if len(found) >= MAX_PER_SPAN:
            break
        _add(
            found,
            _build(
                trace_id,
                own_span_id,
                obj.get("name"),
                _score(obj.get("score")),
                obj.get("label"),
                obj.get("explanation"),
                None,
                SOURCE_OI_ANNOTATIONS if form else SOURCE_OI_EVALUATIONS,
                span_time,
            ),
        )


def _read_traceai(ga: dict, trace_id: bytes, own_span_id, span_time: int, found: list) -> None:
    """Rank 2: traceAI / ai-evaluation ``gen_ai.evaluation.*`` span attributes, which may name their target span."""
    target = own_span_id
    explicit = False
    raw_target = ga.get("target_span_id")
    if raw_target is not None:
        parsed = _span_id_value(raw_target)
        if parsed is not None:
            target, explicit = parsed, True
    _add(
        found,
        _build(
            trace_id,
            target,
            ga.get("name"),
            _score(ga.get("score.value")),
            ga.get("score.label"),
            ga.get("explanation"),
            None,
            SOURCE_TRACEAI,
            span_time,
        ),
        explicit,
    )


def _read_eval_attributes(
    single: dict, per_metric: dict, trace_id: bytes, own_span_id, span_time: int, found: list
) -> None:
    """Rank 3: ``eval.*`` attributes: the one unnamed-prefix result, then one result per metric."""
    if single:
        _add(
            found,
            _build(
                trace_id,
                own_span_id,
                single.get("name"),
                _score(single.get("score")),
                single.get("label"),
                single.get("explanation", single.get("reason")),
                None,
                SOURCE_EVAL_ATTRS,
                span_time,
            ),
        )
    for metric, fields in per_metric.items():
        if len(found) >= MAX_PER_SPAN:
            break
        if "score" in fields:
            score = _score(fields["score"])
        elif "" in fields:
            score = _score(
                fields[""], allow_text=False
            )  # bare eval.<name>: only a number value is a score, not a numeric string
        else:
            score = None
        _add(
            found,
            _build(
                trace_id,
                own_span_id,
                metric,
                score,
                fields.get("label"),
                fields.get("explanation", fields.get("reason")),
                None,
                SOURCE_EVAL_ATTRS,
                span_time,
            ),
        )


def _retarget_to_linked_span(link, trace_id: bytes, found: list) -> list:
    """An EVALUATOR carrier's results describe the one span it links to, unless a result names its own target.

    Without a valid link span id the carrier stays the target (OpenInference: parentage
    must not identify the target).
    """
    link_span = _valid_id(link.span_id, 8)
    if link_span is None:
        return found
    link_trace = _valid_id(link.trace_id, 16) or trace_id
    moved = []
    for evaluation, shape, explicit in found:
        if not explicit:
            evaluation = replace(evaluation, trace_id=link_trace, span_id=link_span, source=SOURCE_EVALUATOR_LINK)
        elif evaluation.span_id == link_span:
            evaluation = replace(evaluation, trace_id=link_trace)
        moved.append((evaluation, shape, explicit))
    return moved  # dedupe ranks still follow the shape each result was read from


def _collect_eval_attr(rest: str, value, per_metric: dict, single: dict) -> None:
    """Sort one ``eval.<rest>`` attribute into a per-metric or the single-result bucket."""
    if rest in _EVAL_RESERVED:
        if rest in _EVAL_FIELDS or rest == "name":
            single[rest] = value
        return
    name, dot, field = rest.rpartition(".")
    if dot:
        if field in _EVAL_FIELDS and name and name not in _EVAL_RESERVED:
            per_metric.setdefault(name, {})[field] = value
        return  # eval.<name>.latency_ms, eval.<name>.<metadata>, eval.score.<x>, ...
    if rest:
        per_metric.setdefault(rest, {})[""] = value  # legacy bare eval.<name> = score


def _collect_oi_attr(rest: str, infix: str, form: int, value, oi: dict) -> None:
    """``<index>.evaluation.<field>`` (or annotation) into ``oi[(form, index)][field]``."""
    index, dot, tail = rest.partition(".")
    if not dot or not index.isascii() or not index.isdigit() or len(index) > 9:
        return
    if not tail.startswith(infix):
        return
    field = tail[len(infix) :]
    if field in _OI_FIELDS:
        oi.setdefault((form, int(index)), {})[field] = value


# --- log records -------------------------------------------------------------------


def _ga_fields(attributes) -> tuple[dict[str, object], object]:
    """An evaluation event's or record's ``gen_ai.evaluation.*`` values (by suffix) and its response id value."""
    fields: dict[str, object] = {}
    response = None
    for kv in attributes:
        key = kv.key
        if key.startswith(_GA):
            fields[key[_GA_LEN:]] = kv.value
        elif key == _RESPONSE_ID:
            response = kv.value
    return fields, response


def _from_log_record(record, trace_id_fallback: bytes | None) -> list[Evaluation]:
    trace_id = _valid_id(record.trace_id, 16)
    if trace_id is None and isinstance(trace_id_fallback, bytes | bytearray):
        trace_id = _valid_id(bytes(trace_id_fallback), 16)
    if trace_id is None:
        return []
    fields, response = _ga_fields(record.attributes)
    # Some emitters put the event payload in a kvlist body; attributes win.
    body = record.body
    if body.WhichOneof("value") == "kvlist_value":
        for kv in body.kvlist_value.values:
            key = kv.key
            if key.startswith(_GA):
                fields.setdefault(key[_GA_LEN:], kv.value)
            elif key == _RESPONSE_ID and response is None:
                response = kv.value
    span_id = _valid_id(record.span_id, 8)
    if span_id is None and "target_span_id" in fields:
        span_id = _span_id_value(fields["target_span_id"])
    evaluation = _build(
        trace_id,
        span_id,
        fields.get("name"),
        _score(fields.get("score.value")),
        fields.get("score.label"),
        fields.get("explanation"),
        response,
        SOURCE_LOG_RECORD,
        _clamp_ns(record.time_unix_nano or record.observed_time_unix_nano),
    )
    return [evaluation] if evaluation is not None else []


#: Log record event names that carry user feedback (tracetui.llm.feedback reads their meaning).
FEEDBACK_EVENTS = frozenset(
    ("user_feedback", "feedback", "thumbs", "thumb", "thumbs_up", "thumbs_down", "user_rating", "rating",
     "abandoned", "user_abandoned")
)  # fmt: skip
#: Where a feedback record keeps its score (a number; text there is no score).
FEEDBACK_SCORE_KEYS = ("score", "value", "rating", "feedback.score", "user_feedback.score")
_FEEDBACK_LABEL_KEYS = ("label", "value", "thumb", "thumbs", "feedback", "rating", "sentiment", "feedback.value")
_FEEDBACK_NOTE_KEYS = ("comment", "note", "reason", "text", "feedback.comment", "user_feedback.comment")


def is_feedback_event(name: object) -> bool:
    """A log record event name that carries user feedback (:data:`FEEDBACK_EVENTS`, case and dashes ignored)."""
    return name_key(name) in FEEDBACK_EVENTS


def _from_feedback_record(record, event_name: str, trace_id_fallback: bytes | None) -> list[Evaluation]:
    """A feedback log record: its name is the result's name; score, label and note from the usual keys.

    Attributes first, then a kvlist body; a plain string body is the note.
    """
    trace_id = _valid_id(record.trace_id, 16)
    if trace_id is None and isinstance(trace_id_fallback, bytes | bytearray):
        trace_id = _valid_id(bytes(trace_id_fallback), 16)
    if trace_id is None:
        return []
    values: dict[str, object] = {kv.key: kv.value for kv in record.attributes}
    body = record.body
    note = None
    if body.WhichOneof("value") == "kvlist_value":
        for kv in body.kvlist_value.values:
            values.setdefault(kv.key, kv.value)
    elif body.WhichOneof("value") == "string_value":
        note = body
    score = next((s for s in (_score(values.get(k), allow_text=False) for k in FEEDBACK_SCORE_KEYS) if s is not None),
                 None)  # fmt: skip
    label = next((values[k] for k in _FEEDBACK_LABEL_KEYS if k in values and _score(values[k]) is None), None)
    note = next((values[k] for k in _FEEDBACK_NOTE_KEYS if k in values), note)
    evaluation = _build(
        trace_id,
        _valid_id(record.span_id, 8),
        name_key(event_name),
        score,
        label,
        note,
        values.get(_RESPONSE_ID),
        SOURCE_FEEDBACK_RECORD,
        _clamp_ns(record.time_unix_nano or record.observed_time_unix_nano),
    )
    return [evaluation] if evaluation is not None else []


# --- helpers -----------------------------------------------------------------------


def _build(
    trace_id: bytes,
    span_id: bytes | None,
    name_value,
    score: float | None,
    label_value,
    explanation_value,
    response_value,
    source: str,
    time_ns: int,
) -> Evaluation | None:
    """An Evaluation, or None without a name or without any of score / label / explanation."""
    name = _text(name_value, MAX_SHORT_TEXT) if name_value is not None else None
    if not name:
        return None
    label = _text(label_value, MAX_SHORT_TEXT) if label_value is not None else None
    explanation = _text(explanation_value, MAX_EXPLANATION) if explanation_value is not None else None
    if score is None and not label and not explanation:
        return None
    response = _text(response_value, MAX_SHORT_TEXT) if response_value is not None else None
    return Evaluation(
        trace_id=trace_id,
        span_id=span_id,
        response_id=response or None,
        name=name,
        score=score,
        label=label or None,
        explanation=explanation or None,
        source=source,
        time_ns=time_ns,
    )


def _dedupe(found: list[tuple[Evaluation, str, bool]]) -> list[Evaluation]:
    """One result per (target, name, score, compatible label) across shapes; the most specific wins.

    ``found`` holds (evaluation, shape it was read from, explicitly targeted). Repeats within
    one shape (two events with equal values) are kept: they are two runs. The kept result
    borrows a label / explanation / response id that a dropped duplicate had and it lacked.
    """
    if len(found) == 1:
        return [found[0][0]]
    order = sorted(range(len(found)), key=lambda i: _RANK[found[i][1]])
    kept: list[list] = []  # [evaluation, shape, position]
    for i in order:
        evaluation, shape, _explicit = found[i]
        for entry in kept:
            other = entry[0]
            if entry[1] != shape and _same_result(other, evaluation):
                entry[0] = replace(
                    other,
                    label=other.label or evaluation.label,
                    explanation=other.explanation or evaluation.explanation,
                    response_id=other.response_id or evaluation.response_id,
                )
                break
        else:
            kept.append([evaluation, shape, i])
    kept.sort(key=lambda entry: (_RANK[entry[1]], entry[2]))
    return [entry[0] for entry in kept]


def _same_result(a: Evaluation, b: Evaluation) -> bool:
    if a.span_id != b.span_id or a.trace_id != b.trace_id or a.name != b.name:
        return False
    if (a.score is None) != (b.score is None):
        return False
    if a.score is not None and b.score is not None and abs(a.score - b.score) > 1e-9 * max(1.0, abs(a.score)):
        return False
    return not (a.label and b.label and a.label.casefold() != b.label.casefold())


def _valid_id(value, size: int) -> bytes | None:
    """``value`` as an id of ``size`` (8 or 16) bytes, or None when it has another length or is all zero."""
    if len(value) != size or value == (_ZERO_SPAN_ID if size == 8 else _ZERO_TRACE_ID):
        return None
    return bytes(value)


def _span_id_value(value) -> bytes | None:
    """A span id from an attribute: 16 hex digits (optionally ``0x``) or 8 raw bytes."""
    kind = value.WhichOneof("value")
    if kind == "bytes_value":
        return _valid_id(value.bytes_value, 8)
    if kind != "string_value":
        return None
    text = value.string_value
    if len(text) > 40:
        return None
    text = text.strip()
    if text[:2] in ("0x", "0X"):
        text = text[2:]
    if len(text) != 16:
        return None
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return None
    return _valid_id(raw, 8)


def _score(value, allow_text: bool = True) -> float | None:
    """A finite float from a double / int / bool (1.0 / 0.0) / numeric string AnyValue."""
    if value is None:
        return None
    kind = value.WhichOneof("value")
    if kind == "double_value":
        number = value.double_value
    elif kind == "int_value":
        number = float(value.int_value)
    elif kind == "bool_value":
        return 1.0 if value.bool_value else 0.0
    elif kind == "string_value" and allow_text:
        text = value.string_value
        if len(text) > _MAX_NUMBER_TEXT:
            return None
        try:
            number = float(text.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _text(value, limit: int) -> str | None:
    """A scalar AnyValue (or a str) as stripped text cut to ``limit`` characters, else None."""
    if isinstance(value, str):
        text = value
    else:
        kind = value.WhichOneof("value")
        if kind == "string_value":
            text = value.string_value
        elif kind == "bool_value":
            text = "true" if value.bool_value else "false"
        elif kind == "int_value":
            text = str(value.int_value)
        elif kind == "double_value":
            text = repr(value.double_value)
        else:
            return None
    if len(text) > limit:
        text = text[: limit * 2]  # bound the strip on huge values
    text = text.strip()
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def _clamp_ns(value: int) -> int:
    return value if value <= _INT64_MAX else _INT64_MAX

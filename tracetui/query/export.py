"""A stored trace, out: as an OTLP request, as OTLP JSON, or as a compact text summary.

* :func:`trace_request` / :func:`trace_otlp_json` rebuild the OTLP request
  from what was stored (``spans.raw`` + ``sources``), so ``tracetui import``
  or any OTLP JSON consumer reads back exactly the same spans.
* :func:`trace_summary` is a few dozen lines to paste into an LLM prompt or an
  issue: the tree with timings, the slowest span, the time split, errors,
  tokens, cost, groundedness, and the prompts and answers cut to ``max_chars``.
* :func:`span_attributes_json` is one span's raw attributes as JSON.

Each of them is a copy of the data: it follows the content policy the database
records (``serve --no-content`` / ``--redact``, :meth:`Reader.content_policy`), through
tracetui.query.scrub; nothing here can turn that off.

Everything reads through the :class:`~tracetui.model.reader.Reader` protocol; no Textual.
Missing traces or spans raise :class:`ExportError`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tracetui.llm.chat import ChatMessage, extract_messages
from tracetui.llm.content import attributes_copy
from tracetui.llm.timing import attempts_spanned, first_token_note, retry_note, tokens_estimated_note
from tracetui.model.anyvalue import any_value_to_python, attributes_to_dict
from tracetui.model.config import CONTENT_OMITTED, ContentPolicy
from tracetui.model.fmt import fmt_cost, fmt_counted, fmt_duration, json_text, safe_text
from tracetui.model.reader import Reader
from tracetui.model.views import NO_ROOT, SPAN_KIND_NAMES, STATUS_NAMES, SpanDetail, SpanRow, TraceRow
from tracetui.otlp.otlp_json import message_to_json
from tracetui.query import scrub
from tracetui.query.tree import build_tree, flatten

#: Default length of each prompt / answer in a summary.
DEFAULT_MAX_CHARS = 500
#: Tree lines in a summary before the rest is counted as "... N more spans".
MAX_TREE_LINES = 150
#: Spans whose messages are quoted in a summary.
MAX_MESSAGE_SPANS = 12
#: Errors listed in a summary.
MAX_ERRORS = 20
#: How tool executions' messages are labelled.
_TOOL_LABELS = {"tool-call": "tool call", "tool-result": "tool result"}


class ExportError(LookupError):
    """The trace or span is not in the database."""


def resolve_trace_id(reader: Reader, text: str) -> bytes:
    """A stored trace id from its full hex form or a unique prefix; raises ExportError."""
    found = reader.trace_ids_starting(text, limit=3)
    if not found:
        raise ExportError(f"no trace matches {text!r} (give the full hex id or a unique prefix)")
    if len(found) > 1:
        some = ", ".join(t.hex() for t in found[:2]) + (", ..." if len(found) > 2 else "")
        raise ExportError(f"{text!r} matches several traces ({some}): give more of the id")
    return found[0]


# --- OTLP ------------------------------------------------------------------------------------


def _grouped(request, rows: list[tuple], resource_items: str, scope_items: str, item_field: str,
             policy: ContentPolicy) -> None:  # fmt: skip
    """Add (raw item, resource, scope, schema_url) rows to a request, grouped by resource and scope.

    Raw items are already copies under ``policy``; resources are copied under it here.
    """
    resources: dict[bytes, Any] = {}
    scopes: dict[tuple[bytes, bytes, str], Any] = {}
    for raw, resource, scope, schema_url in rows:
        resource = resource or b""
        scope = scope or b""
        group = resources.get(resource)
        if group is None:
            group = resources[resource] = getattr(request, resource_items).add()
            group.resource.CopyFrom(Resource.FromString(scrub.resource_bytes(resource, policy)))
        key = (resource, scope, schema_url or "")
        scoped = scopes.get(key)
        if scoped is None:
            scoped = scopes[key] = getattr(group, scope_items).add()
            scoped.scope.CopyFrom(InstrumentationScope.FromString(scope))
            scoped.schema_url = schema_url or ""
        getattr(scoped, item_field).add().MergeFromString(raw)


def trace_request(reader: Reader, trace_id: bytes) -> ExportTraceServiceRequest:
    """The stored spans of one trace as one ExportTraceServiceRequest, grouped by resource and scope."""
    rows = reader.stored_spans(trace_id)
    if not rows:
        raise ExportError(f"no trace {trace_id.hex()}")
    policy = reader.content_policy()
    request = ExportTraceServiceRequest()
    copies = [(scrub.span_bytes(r.raw, policy), r.resource, r.scope, r.schema_url) for r in rows]
    _grouped(request, copies, "resource_spans", "scope_spans", "spans", policy)
    return request


def logs_request(reader: Reader, trace_id: bytes) -> ExportLogsServiceRequest | None:
    """The log records stored with one trace (evaluation results, message content), or None."""
    policy = reader.content_policy()
    rows = [(scrub.log_bytes(r.raw, policy), r.resource, r.scope, r.schema_url) for r in reader.stored_logs(trace_id)]
    if not rows:
        return None
    request = ExportLogsServiceRequest()
    _grouped(request, rows, "resource_logs", "scope_logs", "log_records", policy)
    return request


def trace_otlp_json(reader: Reader, trace_id: bytes, *, indent: int | None = 2) -> str:
    """One trace as OTLP JSON (hex ids, 64-bit integers as strings), as `tracetui import` reads it back.

    A trace without log records is one pretty-printed ExportTraceServiceRequest.
    With log records it is JSON Lines, as the Collector's file exporter writes:
    the spans request on the first line, the log records request on the second.
    """
    spans = trace_request(reader, trace_id)
    logs = logs_request(reader, trace_id)
    if logs is None:
        return message_to_json(spans, indent=indent)
    return message_to_json(spans, indent=None) + "\n" + message_to_json(logs, indent=None)


def span_attributes_json(reader: Reader, trace_id: bytes, span_id: bytes) -> str:
    """One span's attributes as a JSON object (bytes values as hex), for the clipboard."""
    detail = reader.span_detail(trace_id, span_id)
    if detail is None:
        raise ExportError(f"no span {span_id.hex()} in trace {trace_id.hex()}")
    return json_text(attributes_copy(detail.attributes, reader.content_policy()), ensure_ascii=False)


# --- text helpers -------------------------------------------------------------------------------


def clip(text: str, max_chars: int) -> str:
    """At most ``max_chars`` characters of ``text``, saying how much was cut."""
    if max_chars >= 0 and len(text) > max_chars:
        return f"{text[:max_chars]}… [+{len(text) - max_chars:,} chars]"
    return text


def _block(text: str, indent: str) -> str:
    """Multi-line user text, control characters made visible, continuation lines indented."""
    lines = [safe_text(line).replace("\\t", "  ") for line in text.strip("\n").split("\n")]
    return ("\n" + indent).join(lines)


def _iso(ns: int) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ns / 1e9))
    except (OverflowError, OSError, ValueError):
        return "?"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole > 0 else "n/a"


def _num(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


# --- hooks for columns other issues add --------------------------------------------------------------


def _hook_cost(row: TraceRow) -> str | None:
    """``cost $X`` when the trace row has a cost (and says how many calls had no price), else None."""
    cost = getattr(row, "cost_usd", None)
    unpriced = getattr(row, "unpriced_calls", 0) or 0
    if cost is None:
        return f"cost unknown ({fmt_counted(unpriced, 'unpriced call')})" if unpriced else None
    return f"cost {fmt_cost(cost)}" + (f" (+{fmt_counted(unpriced, 'unpriced call')})" if unpriced else "")


def _hook_retries(row: TraceRow) -> list[str]:
    """Retry and fallback counts when the trace row has them."""
    out = []
    for name, one, many in (("retries", "retry", "retries"), ("fallbacks", "fallback", "fallbacks")):
        value = getattr(row, name, 0) or 0
        if value:
            out.append(f"{value} {one if value == 1 else many}")
    return out


def _hook_groundedness(row: TraceRow, evaluations: list[dict[str, Any]]) -> float | None:
    """Worst groundedness of the trace: the trace row's when the store has it, else from the evaluations."""
    for name in ("groundedness", "worst_groundedness"):
        value = getattr(row, name, None)
        if isinstance(value, (int, float)):
            return float(value)
    scores = [e["score"] for e in evaluations
              if str(e["name"]).lower() == "groundedness" and isinstance(e["score"], (int, float))]  # fmt: skip
    return min(scores) if scores else None


#: Readable names of the time-split parts (tracetui.model.rows.SPLIT_KEYS); unknown keys are shown as they are.
SPLIT_LABELS = {
    "retry": "retry delay",
    "fallback": "fallback delay",
    "ttft": "first token",
    "decode": "decode",
    "response": "response",
    "tool": "tools",
    "other": "other",
}


def _hook_time_split(row: TraceRow) -> dict[str, int] | None:
    """Where the run's time went (part -> ns), the parts that took any; None when none did."""
    parts = {key: int(ns) for key, ns in row.split.items() if isinstance(ns, (int, float)) and ns > 0}
    return parts or None


def _evaluations(reader: Reader, trace_id: bytes, spans: list[tuple[SpanRow, Span]]) -> list[dict[str, Any]]:
    """Evaluation results per span: from the store when it keeps them, else ``gen_ai.evaluation.result`` span events."""
    out: list[dict[str, Any]] = []
    for row, span in spans:
        found = reader.span_evaluations(trace_id, row.span_id)
        if found:  # the store's results include log records; none stored -> read the span's events
            out += [{"span": row.name, **e} for e in found]
            continue
        for event in span.events:
            if event.name == "gen_ai.evaluation.result":
                values = attributes_to_dict(event.attributes)
                out.append(
                    {
                        "span": row.name,
                        "name": str(values.get("gen_ai.evaluation.name", "?")),
                        "score": values.get("gen_ai.evaluation.score.value"),
                        "label": values.get("gen_ai.evaluation.score.label"),
                        "explanation": values.get("gen_ai.evaluation.explanation"),
                    }
                )
    return out


# --- the summary --------------------------------------------------------------------------------------


def _span_line(span: SpanRow, guides: str, trace_start: int) -> str:
    kind = span.llm_kind or ""
    model = span.model if span.llm_kind in ("llm", "embedding") else None
    tag = " ".join(x for x in (kind, safe_text(model, 60) if model else "") if x)
    parts = [f"{guides}{safe_text(span.name, 80)}"]
    if tag:
        parts.append(f"[{tag}]")
    if span.is_error:
        parts.append("ERROR")
    if span.orphan:
        parts.append("(parent missing)")
    parts.append(fmt_duration(span.duration_ns))
    offset = max(0, span.start_ns - trace_start)
    parts.append(f"@{fmt_duration(offset)}" if offset else "@0")
    if span.llm_kind == "llm":
        if span.ttft_ns is not None:
            parts.append(f"ttft {fmt_duration(span.ttft_ns)}")
        elif not span.is_error:
            parts.append(first_token_note(span.streaming, span.ttft_ns, span.library) or "")
        if span.is_retry or span.is_fallback:
            what = "fallback after" if span.is_fallback else "retry"
            lost = f" {fmt_duration(span.retry_ns)}" if span.retry_ns else ""
            parts.append(f"{what}{lost}" + (f" ({span.retry_source})" if span.retry_source else ""))
        if span.input_tokens is not None or span.output_tokens is not None:
            parts.append(f"tokens {_num(span.input_tokens)} in / {_num(span.output_tokens)} out")
        elif not span.is_error:
            parts.append("no token counts")
    if getattr(span, "cost_usd", None) is not None:
        parts.append(fmt_cost(span.cost_usd))
    return "  ".join(parts)


def _attempt_outcome(attempt: SpanRow, by_id: dict[bytes, SpanRow]) -> str:
    """What became of the model call an HTTP attempt belongs to ("" when it is not under one)."""
    call = by_id.get(attempt.parent_span_id) if attempt.parent_span_id else None
    if call is None or call.llm_kind not in ("llm", "embedding"):
        return ""
    if call.is_error:
        return f" (an attempt of {safe_text(call.name, 60)}, which failed)"
    return f" (an attempt of {safe_text(call.name, 60)}, retried: the call succeeded)"


def _unreported_retries(spans: list[SpanRow]) -> str | None:
    """One line naming the libraries whose calls could not show a retry (no HTTP attempt spans)."""
    # a library that spans every attempt showed that its calls without a failed one had none
    calls = [s for s in spans if s.llm_kind == "llm" and not s.retry_source and not attempts_spanned(s.provenance)]
    if not calls:
        return None
    notes = sorted({retry_note(None, s.library) for s in calls})
    return (f"Retries: {'; '.join(notes)} for {fmt_counted(len(calls), 'call')} "
            "(no HTTP attempt spans; opentelemetry-instrumentation-httpx records one per attempt)")  # fmt: skip


def _span_logs(reader: Reader, trace_id: bytes) -> dict[bytes, list[dict[str, Any]]]:
    """Log records of the trace by span, in the shape tracetui.llm.chat reads (GenAI content events)."""
    out: dict[bytes, list[dict[str, Any]]] = {}
    for log in reader.stored_logs(trace_id):
        if log.span_id is None:
            continue
        span_id, event_name, record = log.span_id, log.event_name, LogRecord.FromString(log.raw)
        out.setdefault(span_id, []).append(
            {
                "event_name": event_name,
                "attributes": attributes_to_dict(record.attributes),
                "body": any_value_to_python(record.body),
            }
        )
    return out


def _message_line(message: ChatMessage, max_chars: int, policy: ContentPolicy) -> str:
    """One message of a conversation: ``prompt (user): text``, tool calls appended (redacted before it is cut)."""
    text = message.content
    for call in message.tool_calls:
        text += f"\n[tool call] {call.name or '?'}({call.arguments or ''})"
    text = policy.redacted(text)
    label = _TOOL_LABELS.get(message.role)
    if label is None:
        label = "prompt" if message.direction == "input" else "answer"
        if message.role:
            label += f" ({safe_text(message.role, 30)})"
    return f"{label}: {_block(clip(text.strip(chr(10)), max_chars), '    ')}"


def trace_summary(reader: Reader, trace_id: bytes, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """A compact plain-text account of one trace, for an LLM prompt or an issue, under the content policy.

    Without content the messages are left out; redactions apply to every line (and to each
    message, error and explanation before it is cut to ``max_chars``).
    """
    policy = reader.content_policy()
    row = reader.trace(trace_id)
    spans = reader.spans(trace_id)
    if row is None or not spans:
        raise ExportError(f"no trace {trace_id.hex()}")
    raw = {stored.span_id: Span.FromString(stored.raw) for stored in reader.stored_spans(trace_id)}
    roots = build_tree(spans)
    lines_in_tree = flatten(roots)
    start, duration = row.start_ns, row.duration_ns
    name = row.name if row.has_root else f"{row.name} ({NO_ROOT})"

    out: list[str] = [f"Trace {trace_id.hex()}: {safe_text(name, 120)}"]
    facts = [
        f"service {safe_text(row.service, 60)}",
        f"started {_iso(start)}",
        f"duration {fmt_duration(duration)}",
        fmt_counted(row.span_count, "span"),
        fmt_counted(row.llm_calls, "LLM call"),
        fmt_counted(row.error_count, "error"),
    ]
    facts += _hook_retries(row)
    out.append(" · ".join(facts))
    totals = []
    if row.llm_calls or row.input_tokens or row.output_tokens:
        totals.append(f"tokens {row.input_tokens:,} in / {row.output_tokens:,} out")
    cost = _hook_cost(row)
    if cost is not None:
        totals.append(cost)
    if row.tokenless_calls:
        totals.append(fmt_counted(row.tokenless_calls, "call") + " without token counts (tokens and cost incomplete)")
    evaluations = [scrub.evaluation_copy(e, policy)
                   for e in _evaluations(reader, trace_id, [(s, raw[s.span_id]) for s in spans if s.span_id in raw])]  # fmt: skip
    grounded = _hook_groundedness(row, evaluations)
    if grounded is not None:
        totals.append(f"groundedness {grounded:.2f} (worst)")
    if totals:
        out.append(" · ".join(totals))

    out += ["", "Spans (name [kind model], duration, @start offset):"]
    for line in lines_in_tree[:MAX_TREE_LINES]:
        out.append("  " + _span_line(line.span, line.guides, start))
    if len(lines_in_tree) > MAX_TREE_LINES:
        out.append(f"  … {fmt_counted(len(lines_in_tree) - MAX_TREE_LINES, 'more span')}")

    non_roots = [s for s in spans if s.depth > 0] or spans
    slowest = max(non_roots, key=lambda s: (s.duration_ns, -s.start_ns))
    out += ["", f"Slowest span: {safe_text(slowest.name, 80)} {fmt_duration(slowest.duration_ns)} "
                f"({_pct(slowest.duration_ns, duration)} of the trace)"]  # fmt: skip

    unreported = _unreported_retries(spans)
    if unreported:
        out.append(unreported)

    split = _hook_time_split(row)
    if split:
        out.append(
            "Time split: "
            + " · ".join(f"{SPLIT_LABELS.get(k, k)} {fmt_duration(v)} ({_pct(v, duration)})" for k, v in split.items())
        )

    errors = [s for s in spans if s.is_error]
    if errors:
        out += ["", "Errors:"]
        by_id = {s.span_id: s for s in spans}
        for span in errors[:MAX_ERRORS]:
            message = span.status_message or "(no status message)"
            if span.http_status is not None:
                status = f"HTTP {span.http_status or 'request without a response'}"
                message = status + (f": {span.status_message}" if span.status_message else "")
                message += _attempt_outcome(span, by_id)
            error_type = None
            if span.span_id in raw:
                attrs = attributes_to_dict(raw[span.span_id].attributes)
                error_type = attrs.get("error.type")
            suffix = f" [{safe_text(error_type, 80)}]" if error_type else ""
            out.append(f"- {safe_text(span.name, 80)}: {safe_text(clip(policy.redacted(message), max_chars))}{suffix}")
        if len(errors) > MAX_ERRORS:
            out.append(f"- … {len(errors) - MAX_ERRORS} more")

    if evaluations:
        out += ["", "Evaluations:"]
        for e in evaluations:
            score = f"{e['score']:.2f}" if isinstance(e["score"], (int, float)) else "?"
            label = f" ({safe_text(e['label'], 40)})" if e["label"] else ""
            why = f": {safe_text(clip(str(e['explanation']), max_chars))}" if e["explanation"] else ""
            out.append(f"- {safe_text(e['span'], 60)}: {safe_text(e['name'], 40)} {score}{label}{why}")

    logs = _span_logs(reader, trace_id)
    quoted = 0
    message_lines: list[str] = []
    for line in lines_in_tree:
        raw_span = raw.get(line.span.span_id)
        if raw_span is None or quoted >= MAX_MESSAGE_SPANS:
            continue
        messages = extract_messages(attributes_to_dict(raw_span.attributes), logs.get(line.span.span_id))
        if not messages:
            continue
        quoted += 1
        message_lines += ["", f"## {safe_text(line.span.name, 80)}"]
        message_lines += [_message_line(m, max_chars, policy) for m in messages]
    if message_lines and not policy.keep_content:
        out += ["", f"Messages: {CONTENT_OMITTED} (this database was written with --no-content)"]
    elif message_lines:
        out += ["", f"Messages (each cut to {max_chars} characters):", *message_lines[1:]]
    return policy.redacted("\n".join(out) + "\n")


# --- tracetui spans --json ----------------------------------------------------------------------------


def span_json(reader: Reader, trace_id: bytes) -> list[dict[str, Any]]:
    """The spans of one trace for ``tracetui spans --json``, in start order, under the content policy."""
    policy = reader.content_policy()
    return [_span_json(scrub.detail_copy(detail, policy)) for detail in reader.span_details(trace_id)]


def iter_span_json(reader: Reader, trace_id: bytes) -> Iterator[dict[str, Any]]:
    """:func:`span_json` one span at a time (``tracetui spans`` streams a 100,000-span trace)."""
    policy = reader.content_policy()
    return (_span_json(scrub.detail_copy(detail, policy)) for detail in reader.iter_span_details(trace_id))


def _ms(ns: int | None) -> float | None:
    return None if ns is None else ns / 1e6


def _span_json(detail: SpanDetail) -> dict[str, Any]:
    r = detail.row
    provenance = json.loads(r["provenance"]) if r["provenance"] else {}
    return {
        "trace_id": r["trace_id"].hex(),
        "span_id": r["span_id"].hex(),
        "parent_span_id": r["parent_span_id"].hex() if r["parent_span_id"] else None,
        "name": r["name"],
        "kind": r["llm_kind"] or "other",
        "span_kind": SPAN_KIND_NAMES.get(r["kind"], str(r["kind"])),
        "service": r["service"],
        "start_ns": r["start_ns"],
        "end_ns": r["end_ns"],
        "duration_ms": max(0, r["end_ns"] - r["start_ns"]) / 1e6,
        "status": STATUS_NAMES.get(r["status_code"], str(r["status_code"])),
        "status_message": r["status_message"],
        "attributes": detail.attributes,
        "events": detail.events,
        "links": [{key: link[key] for key in ("trace_id", "span_id", "attributes")} for link in detail.links],
        "resource": detail.resource,
        "dropped": {
            "attributes": r["dropped_attributes"],
            "events": r["dropped_events"],
            "links": r["dropped_links"],
        },
        "provider": r["provider"],
        "request_model": r["request_model"],
        "response_model": r["response_model"],
        "input_tokens": r["input_tokens"],
        "output_tokens": r["output_tokens"],
        "cache_read_tokens": r["cache_read_tokens"],
        "cache_write_tokens": r["cache_write_tokens"],
        "reasoning_tokens": r["reasoning_tokens"],
        "streaming": None if r["streaming"] is None else bool(r["streaming"]),
        "ttft_ms": _ms(r["ttft_ns"]),
        "decode_ms": _ms(r["decode_ns"]),
        "tokens_per_s": r["tokens_per_s"],
        "retry_ms": _ms(r["retry_ns"]),
        "retry_source": r["retry_source"],
        "is_retry": bool(r["is_retry"]),
        "is_fallback": bool(r["is_fallback"]),
        "finish_reason": r["finish_reason"],
        "error_type": r["error_type"],
        "session_id": r["session_id"],
        "user_id": r["user_id"],
        "prompt_name": r["prompt_name"],
        "prompt_version": r["prompt_version"],
        "cost_usd": r["cost_usd"],
        "cost_source": r["cost_source"],
        "evaluations": detail.evaluations,
        "counted": None if r["counted"] is None else bool(r["counted"]),
        "provenance": provenance,
        **_not_reported(r, provenance),
    }


def _not_reported(r: dict[str, Any], provenance: dict[str, Any]) -> dict[str, Any]:
    """What a model call's library did not report, in words; {} for other spans."""
    if r["llm_kind"] != "llm":
        return {}
    tokens_note = None
    if r["input_tokens"] is None or r["output_tokens"] is None:  # as tracetui.llm.timing counts tokenless calls
        if r["status_code"] != 2:
            tokens_note = "no token counts" if r["input_tokens"] == r["output_tokens"] else "token counts incomplete"
    else:
        tokens_note = tokens_estimated_note(provenance, r["library"])
    return {
        "first_token_note": first_token_note(r["streaming"], r["ttft_ns"], r["library"]),
        "retry_note": retry_note(r["retry_source"], r["library"], provenance),
        "tokens_note": tokens_note,
    }


def write_private(path: str | Path, chunks: str | Iterable[str], *, tighten: bool = False) -> int:
    """Write ``chunks`` to ``path``, a new file readable by its owner only (0600, whatever the umask): it holds
    prompts. Returns how many chunks were written.

    An existing file keeps its permissions (the user chose them) unless ``tighten``: then it is made 0600 too
    (a regression set written again over a file someone left readable). A device such as /dev/stdout works as
    usual without ``tighten``.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600)
    if tighten:
        os.fchmod(fd, 0o600)
    written = 0
    with open(fd, "w", encoding="utf-8") as out:
        for chunk in [chunks] if isinstance(chunks, str) else chunks:
            out.write(chunk)
            written += 1
    return written

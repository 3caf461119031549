"""A regression evaluation set: the LLM calls matching a filter, one JSON object per call.

Two shapes (``docs/cohort.md`` documents both, field by field):

* ``tracetui`` (ours): every fact a regression run needs about one call: ids, the run's
  name, model and request parameters, the system prompt, the input messages, the
  output, the retrieval context of the run (documents of its retrieval spans that ended
  before the call started), every evaluation and every piece of user feedback, and the
  call's figures (duration, TTFT, tokens, cost, error).
* ``openai-evals``: the OpenAI Evals API's JSONL data source, one ``{"item": {...},
  "sample": {...}}`` per line. ``item`` holds what the eval's ``item_schema`` describes
  (:data:`OPENAI_ITEM_SCHEMA`: ``input`` messages incl. the system prompt, ``context``,
  ``expected``-free by design, ids and model in ``metadata``-like fields); ``sample`` the
  call's recorded answer as ``output_text``, so graders can score the recorded outputs
  without generating again.

A set is a copy of the data: it follows the content policy the database records
(:meth:`Reader.content_policy`, ``serve --no-content`` / ``--redact``). Without content
every message, document, explanation and note is "[content not kept]" (ids, model,
parameters and figures stay); redactions apply to every string.

Calls are read through the Reader protocol: the cohort's calls from
:meth:`Reader.cohort_calls`, each run's spans once from :meth:`Reader.span_details`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tracetui.llm.chat import extract_messages, retrieval_documents
from tracetui.llm.content import cleaned
from tracetui.llm.feedback import is_feedback, thumb
from tracetui.model.config import CONTENT_OMITTED, ContentPolicy
from tracetui.model.filter import Filter
from tracetui.model.reader import CohortCall, Reader
from tracetui.model.views import SpanDetail
from tracetui.query.export import write_private

__all__ = ["FORMATS", "OPENAI_ITEM_SCHEMA", "cohort_lines", "cohort_records", "default_path", "write_cohort"]

FORMATS = ("tracetui", "openai-evals")

#: Request parameters copied into the record, wherever the library put them.
_PARAMETER_PREFIXES = ("gen_ai.request.", "llm.request.", "ai.settings.")
_PARAMETER_BLOBS = ("llm.invocation_parameters", "gen_ai.request.parameters")
_NOT_PARAMETERS = frozenset(("gen_ai.request.model", "llm.request.model_name", "llm.request.type"))

#: The ``item_schema`` to create the eval with (data_source_config type "custom").
OPENAI_ITEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "input": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"role": {"type": "string"}, "content": {"type": "string"}},
                "required": ["role", "content"],
            },
        },
        "context": {"type": "array", "items": {"type": "string"}},
        "model": {"type": "string"},
        "trace_id": {"type": "string"},
        "span_id": {"type": "string"},
        "evaluations": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
        "feedback": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["input", "trace_id", "span_id"],
}


def cohort_records(
    reader: Reader,
    flt: Filter | None,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    limit: int | None = None,
    keep: Callable[[CohortCall], bool] | None = None,
) -> Iterator[dict[str, Any]]:
    """One record (our shape) per counted LLM call matching ``flt`` (and ``keep``), oldest first."""
    calls = reader.cohort_calls(since_ns=since_ns, until_ns=until_ns, flt=flt)
    if calls is None:
        raise ValueError("this source cannot list calls for a cohort yet (use a SQLite database)")
    if keep is not None:
        calls = [call for call in calls if keep(call)]
    if limit is not None:
        calls = calls[-limit:]  # the newest
    policy = reader.content_policy()
    by_trace: dict[bytes, list[bytes]] = {}
    for call in calls:
        by_trace.setdefault(call.trace_id, []).append(call.span_id)
    for trace_id, span_ids in by_trace.items():
        details = reader.span_details(trace_id)
        by_id = {bytes.fromhex(d.row["span_id"]) if isinstance(d.row["span_id"], str) else d.row["span_id"]: d
                 for d in details}  # fmt: skip
        run_feedback = [r for r in reader.evaluation_results({trace_id}) if r.span_id is None and is_feedback(r.name)]
        run_name = _run_name(details)
        for span_id in span_ids:
            detail = by_id.get(span_id)
            if detail is not None:
                yield _policed(_record(trace_id, span_id, detail, details, run_name, run_feedback), policy)


def _run_name(details: list[SpanDetail]) -> str | None:
    roots = [d for d in details if not d.row.get("parent_span_id")]
    return str(roots[0].row["name"]) if roots else None


def _record(
    trace_id: bytes, span_id: bytes, detail: SpanDetail, run: list[SpanDetail], run_name: str | None, run_feedback: list
) -> dict[str, Any]:
    row, attrs = detail.row, detail.attributes
    messages = extract_messages(attrs, detail.logs)
    system = [m.content for m in messages if m.direction == "input" and m.role == "system"]
    inputs = [_message(m) for m in messages if m.direction == "input" and m.role != "system"]
    outputs = [m for m in messages if m.direction == "output"]
    evaluations, feedback = [], []
    for e in detail.evaluations:
        if is_feedback(str(e.get("name"))):
            feedback.append(_feedback(e))
        else:
            evaluations.append({k: e.get(k) for k in ("name", "score", "label", "explanation", "source")})
    feedback += [_feedback(r._asdict()) for r in run_feedback]
    start, end = int(row["start_ns"]), int(row["end_ns"])
    return {
        "trace_id": trace_id.hex(),
        "span_id": span_id.hex(),
        "run": run_name,
        "name": row.get("name"),
        "start": datetime.fromtimestamp(start / 1e9, UTC).isoformat(timespec="milliseconds"),
        "model": row.get("request_model") or row.get("response_model"),
        "response_model": row.get("response_model"),
        "provider": row.get("provider"),
        "parameters": _parameters(attrs),
        "system": "\n\n".join(system) or None,
        "input": inputs,
        "output": "\n".join(m.content for m in outputs if m.content) or None,
        "output_messages": [_message(m) for m in outputs],
        "context": _context(run, start),
        "evaluations": evaluations,
        "feedback": feedback,
        "figures": {
            "duration_ms": max(end - start, 0) / 1e6,
            "ttft_ms": None if row.get("ttft_ns") is None else row["ttft_ns"] / 1e6,
            "input_tokens": row.get("input_tokens"),
            "output_tokens": row.get("output_tokens"),
            "cost_usd": row.get("cost_usd"),
            "error": row.get("status_code") == 2,
            "status_message": row.get("status_message") or None,
        },
    }


def _policed(record: dict[str, Any], policy: ContentPolicy) -> dict[str, Any]:
    """``record`` as the content policy lets it be copied (see the module's docstring)."""
    if not policy.keep_content:

        def omit(value: Any) -> Any:
            return CONTENT_OMITTED if value else value

        for message in record["input"] + record["output_messages"]:
            message["content"] = omit(message["content"])
            for call in message.get("tool_calls", ()):
                call["arguments"] = omit(call["arguments"])
        record["system"], record["output"] = omit(record["system"]), omit(record["output"])
        record["context"] = [CONTENT_OMITTED for _ in record["context"]]
        for evaluation in record["evaluations"]:
            evaluation["explanation"] = omit(evaluation["explanation"])
        for feedback in record["feedback"]:
            feedback["note"] = omit(feedback["note"])
    return cleaned(record, policy) if policy.redact else record  # type: ignore[return-value]


def _message(m: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [{"id": t.id, "name": t.name, "arguments": t.arguments} for t in m.tool_calls]
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    if m.name:
        out["name"] = m.name
    return out


def _feedback(e: dict[str, Any]) -> dict[str, Any]:
    value = thumb(str(e.get("name")), e.get("score"), e.get("label"))
    return {
        "thumb": None if value is None else ("up" if value > 0 else "down"),
        "name": e.get("name"),
        "score": e.get("score"),
        "label": e.get("label"),
        "note": e.get("explanation"),
        "source": e.get("source"),
    }


def _parameters(attrs: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key in _PARAMETER_BLOBS:
        blob = attrs.get(key)
        if isinstance(blob, str):
            try:
                parsed = json.loads(blob)
            except ValueError:
                continue
            if isinstance(parsed, dict):
                found.update({k: v for k, v in parsed.items() if k not in ("model", "messages")})
    for key, value in attrs.items():
        if key.startswith(_PARAMETER_PREFIXES) and key not in _NOT_PARAMETERS and key not in _PARAMETER_BLOBS:
            found.setdefault(key.rsplit(".", 1)[-1], value)
    return found


def _context(run: list[SpanDetail], before_ns: int) -> list[str]:
    """Documents of the run's retrieval spans that ended before the call started, in order."""
    texts: list[str] = []
    for d in run:
        if d.row.get("llm_kind") != "retriever" or int(d.row["end_ns"]) > before_ns:
            continue
        texts += retrieval_documents(d.attributes)
    return texts


def openai_evals_line(record: dict[str, Any]) -> dict[str, Any]:
    """One line of the OpenAI Evals API's JSONL data source from one of our records."""
    messages = ([{"role": "system", "content": record["system"]}] if record["system"] else []) + [
        {"role": m["role"], "content": m["content"]} for m in record["input"]
    ]
    item = {
        "input": messages,
        "context": record["context"],
        "model": record["model"] or "",
        "trace_id": record["trace_id"],
        "span_id": record["span_id"],
        "evaluations": {e["name"]: e["score"] for e in record["evaluations"] if e.get("name")},
        "feedback": [f["thumb"] for f in record["feedback"] if f["thumb"]],
    }
    return {"item": item, "sample": {"output_text": record["output"] or "", "model": record["model"] or ""}}


def cohort_lines(records: Iterator[dict[str, Any]], shape: str) -> Iterator[str]:
    """JSON lines in the asked shape (one of :data:`FORMATS`)."""
    if shape not in FORMATS:
        raise ValueError(f"unknown cohort format {shape!r} (one of: {', '.join(FORMATS)})")
    for record in records:
        out = openai_evals_line(record) if shape == "openai-evals" else record
        yield json.dumps(out, ensure_ascii=False, separators=(",", ":"), default=str)


def default_path() -> str:
    """Where the UI writes a regression set: ``tracetui-cohort-YYYYmmdd-HHMMSS.jsonl`` in the current directory."""
    return str(Path.cwd() / time.strftime("tracetui-cohort-%Y%m%d-%H%M%S.jsonl"))


def write_cohort(
    reader: Reader,
    path: str,
    flt: Filter | None,
    *,
    shape: str = "tracetui",
    since_ns: int | None = None,
    until_ns: int | None = None,
    limit: int | None = None,
    keep: Callable[[CohortCall], bool] | None = None,
) -> int:
    """The calls of :func:`cohort_records` as JSON lines in ``path``, owner-only even when it existed; returns
    how many calls were written."""
    records = cohort_records(reader, flt, since_ns=since_ns, until_ns=until_ns, limit=limit, keep=keep)
    return write_private(path, (line + "\n" for line in cohort_lines(records, shape)), tighten=True)

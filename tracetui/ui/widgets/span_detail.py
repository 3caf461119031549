"""The detail pane: everything about the selected span, shown literally.

Every user-supplied string goes through ``safe_text``/``safe_multiline`` and
into a ``rich.text.Text`` directly, so markup like ``[bold]`` and terminal
escape sequences in names or values are drawn as the characters they are.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from tracetui.llm.timing import first_token_note, library_name, retry_note, tokens_estimated_note, ttft_includes_retry
from tracetui.model.fmt import fmt_clock, fmt_cost, fmt_duration, fmt_elapsed, safe_multiline, safe_text
from tracetui.model.views import SPAN_KIND_NAMES, STATUS_NAMES, SpanDetail
from tracetui.ui.context import tui

#: Longest value shown in full in the pane; longer ones are cut with a note.
MAX_VALUE_CHARS = 4_000

_LLM_FIELDS = (
    ("llm_kind", "kind"),
    ("provider", "provider"),
    ("request_model", "request model"),
    ("response_model", "response model"),
    ("input_tokens", "input tokens"),
    ("output_tokens", "output tokens"),
    ("cache_read_tokens", "cache read tokens"),
    ("cache_write_tokens", "cache write tokens"),
    ("reasoning_tokens", "reasoning tokens"),
    ("streaming", "streaming"),
    ("ttft_ns", "time to first token"),
    ("decode_ns", "decode"),
    ("tokens_per_s", "output speed"),
    ("retry_ns", "time lost"),
    ("retry_source", "retries"),
    ("finish_reason", "finish reason"),
    ("session_id", "session"),
    ("user_id", "user"),
    ("prompt_name", "prompt"),
    ("prompt_version", "prompt version"),
    ("error_type", "error type"),
    ("cost_usd", "cost"),
)
_PROVENANCE_KEYS = {"llm_kind": "kind", "ttft_ns": "ttft", "cost_usd": "cost"}
#: Derived figures: how they were computed, shown where provenance goes.
_DERIVED = {"decode_ns": "end − first token", "tokens_per_s": "output tokens ÷ decode time"}


def _not_reported(row: dict[str, Any]) -> dict[str, str]:
    """Column -> what to show for a model call's fact its library did not report ("not reported" is not "no").

    The field's label already names the fact ("time to first token", "retries"), so the value
    says only what became of it: "not reported by OpenLIT", "not streamed" (timing's notes without
    their lead words, so the decision and wording stay timing's).
    """
    if row.get("llm_kind") != "llm":
        return {}
    library = library_name(row.get("library"))
    out = {"retry_source": retry_note(None, row.get("library"), row.get("provenance")).removeprefix("retry ")}
    if row["status_code"] == 2:
        return out  # a failed call has no first token or usage to report
    out["streaming"] = f"not reported by {library}"
    note = first_token_note(row.get("streaming"), row.get("ttft_ns"), row.get("library"))
    if note:
        out["ttft_ns"] = note.removeprefix("first token ")
    for col in ("input_tokens", "output_tokens"):
        out[col] = f"not reported by {library} (the run's tokens and cost are incomplete)"
    return out


def format_value(value: Any) -> str:
    """A value as readable text: JSON strings pretty-printed, long ones cut."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in "[{" and len(stripped) <= MAX_VALUE_CHARS * 4:
            try:
                value = json.loads(stripped)
            except ValueError:
                return safe_multiline(value, MAX_VALUE_CHARS)
        else:
            return safe_multiline(value, MAX_VALUE_CHARS)
    if isinstance(value, (dict, list)):
        return safe_multiline(json.dumps(value, indent=2, ensure_ascii=False, default=str), MAX_VALUE_CHARS)
    return safe_text(json.dumps(value) if isinstance(value, bool) or value is None else value)


def _section(text: Text, title: str) -> None:
    text.append(f"\n{title}\n", style="bold underline")


def _pairs(text: Text, items: dict[str, Any], key_style: str = "bold cyan", indent: str = "  ") -> None:
    if not items:
        text.append(f"{indent}(none)\n", style="dim")
        return
    for key in sorted(items):
        value = format_value(items[key])
        text.append(f"{indent}{safe_text(key, 120)}", style=key_style)
        text.append(" = ")
        if "\n" in value:
            text.append("\n")
            text.append(indent + "  " + value.replace("\n", "\n" + indent + "  "))
        else:
            text.append(value)
        text.append("\n")


ROLE_STYLES = {"system": "bold magenta", "user": "bold cyan", "assistant": "bold green", "tool": "bold yellow"}


def _messages(text: Text, detail: SpanDetail) -> None:
    from tracetui.llm.chat import extract_messages

    messages = extract_messages(detail.attributes, detail.logs)
    if not messages:
        return
    _section(text, f"Messages ({len(messages)})")
    direction = None
    for message in messages:
        if message.direction != direction:
            direction = message.direction
            text.append(f"  ── {direction} ── from {safe_text(message.source, 60)}\n", style="dim")
        text.append(f"  {safe_text(message.role, 20)}", style=ROLE_STYLES.get(message.role, "bold"))
        if message.name:
            text.append(f" ({safe_text(message.name, 40)})", style="dim")
        if message.tool_call_id:
            text.append(f" ← result of {safe_text(message.tool_call_id, 60)}", style="dim")
        if message.finish_reason:
            text.append(f"  [finish: {safe_text(message.finish_reason, 30)}]", style="dim")
        text.append("\n")
        if message.content:
            text.append("    " + safe_multiline(message.content, MAX_VALUE_CHARS).replace("\n", "\n    ") + "\n")
        for call in message.tool_calls:
            text.append(f"    → {safe_text(call.name or '?', 80)}", style="bold yellow")
            text.append(f"({safe_text(call.arguments or '', 400)})", style="yellow")
            if call.id:
                text.append(f"  id {safe_text(call.id, 60)}", style="dim")
            text.append("\n")


def evaluation_badge(score: float | None, label: str | None, threshold: float) -> tuple[str, str]:
    """(text, style) of a pass/fail badge, e.g. ("● 0.92 pass", "bold green")."""
    from tracetui.llm.evals import passed

    verdict = passed(score, label, threshold)
    shown = f"{score:.2f}" if score is not None else safe_text(label or "?", 20)
    if verdict is None:
        return f"○ {shown}", "bold"
    return (f"● {shown} pass", "bold green") if verdict else (f"✗ {shown} fail", "bold red")


def _evaluations(text: Text, detail: SpanDetail, threshold: float) -> None:
    if not detail.evaluations:
        return
    _section(text, f"Evaluations ({len(detail.evaluations)})")
    for ev in detail.evaluations:
        badge, style = evaluation_badge(ev["score"], ev["label"], threshold)
        text.append(f"  {safe_text(ev['name'], 60):<16} ", style="bold")
        text.append(badge, style=style)
        if ev["label"] and ev["score"] is not None:
            text.append(f"  {safe_text(ev['label'], 40)}")
        text.append(f"   ← {safe_text(ev['source'] or '', 80)}\n", style="dim")
        if ev["explanation"]:
            text.append("    " + safe_multiline(ev["explanation"], 2000).replace("\n", "\n    ") + "\n", style="italic")


def detail_text(detail: SpanDetail, now_ns: int | None = None, threshold: float = 0.5, width: int = 200) -> Text:
    """Build the pane's content for one span, for a pane ``width`` cells wide."""
    row = detail.row
    text = Text(no_wrap=False)
    _title_and_status(text, row)
    _duration_and_origin(text, row, now_ns)
    _ids(text, row, width)
    _dropped_by_sdk(text, row)
    _llm_call(text, row)
    _evaluations(text, detail, threshold)
    _messages(text, detail)
    _section(text, f"Attributes ({len(detail.attributes)})")
    _pairs(text, detail.attributes)
    _events(text, detail.events, row["start_ns"])
    _links(text, detail.links)
    _log_records(text, detail.logs, row["start_ns"])
    _resource_and_scope(text, detail)
    return text


def _title_and_status(text: Text, row: dict[str, Any]) -> None:
    """The span's name, then its status when it is set (OK, ERROR) or has a message."""
    text.append(safe_text(row["name"], 300), style="bold")
    status = row["status_code"]
    status_style = {2: "bold red", 1: "green"}.get(status, "dim")
    if status != 0 or row["status_message"]:
        text.append(f"   {STATUS_NAMES.get(status, str(status))}", style=status_style)
    if row["status_message"]:
        text.append(f": {safe_text(row['status_message'], 500)}", style=status_style)
    text.append("\n")


def _duration_and_origin(text: Text, row: dict[str, Any], now_ns: int | None) -> None:
    """How long the span took, when it started, its kind and its service."""
    elapsed = fmt_elapsed(row["start_ns"], row["end_ns"])  # the words the trace summary uses for the same span
    duration, _, note = elapsed.partition(" ")
    text.append(duration, style="bold")
    if note:
        text.append(f" {note}", style="bold red")
    text.append(f"  from {fmt_clock(row['start_ns'], now_ns)}  ·  {SPAN_KIND_NAMES.get(row['kind'], row['kind'])}")
    text.append(f"  ·  {safe_text(row['service'], 60)}\n", style="dim")


def _ids(text: Text, row: dict[str, Any], width: int) -> None:
    """Span, trace and parent ids; the parent on a line of its own when one line would wrap."""
    ids = f"span {row['span_id'].hex()}  trace {row['trace_id'].hex()}"
    if row["parent_span_id"]:
        parent = f"parent {row['parent_span_id'].hex()}"
        # a narrow pane (80 columns) gives the parent a line of its own rather than wrapping it after "parent"
        ids += ("  " if len(ids) + 2 + len(parent) <= width else "\n") + parent
    text.append(ids + "\n", style="dim")


def _dropped_by_sdk(text: Text, row: dict[str, Any]) -> None:
    """A warning when the SDK dropped attributes, events or links: what is shown is not all there was."""
    dropped = [
        f"{row[k]} {k.split('_')[1]}" for k in ("dropped_attributes", "dropped_events", "dropped_links") if row[k]
    ]
    if dropped:
        text.append(
            "⚠ the SDK dropped " + ", ".join(dropped) + " (limits hit; a 'first chunk' event may not be the first)\n",
            style="yellow",
        )


def _llm_call(text: Text, row: dict[str, Any]) -> None:
    """The LLM section: each known fact of the call with where it came from, and what its library did not report."""
    provenance = json.loads(row["provenance"]) if row.get("provenance") else {}
    llm = {label: row[col] for col, label in _LLM_FIELDS if row.get(col) is not None}
    if not llm:
        return
    _section(text, "LLM")
    _llm_warnings(text, row, provenance)
    missing = _not_reported(row)
    estimated = tokens_estimated_note(provenance, row.get("library"))
    for col, label in _LLM_FIELDS:
        value = row.get(col)
        if col == "retry_source" and row.get("is_fallback"):
            label = "fallback"  # what showed that this call replaces a failed one
        if value is None:
            if col in missing:
                text.append(f"  {label:<20}", style="bold")
                text.append(safe_text(missing[col], 200) + "\n", style="italic")
            continue
        if col in ("input_tokens", "output_tokens") and estimated:
            text.append(f"  {label:<20}", style="bold")
            text.append(f"~{value}")
            text.append(f"   ← {safe_text(estimated, 120)}\n", style="dim")
            continue
        text.append(f"  {label:<20}", style="bold")
        text.append(_llm_value(row, col, value))
        source = _llm_source(row, col, provenance)
        if source:
            text.append(f"   ← {safe_text(source, 80)}", style="dim")
        text.append("\n")


def _llm_warnings(text: Text, row: dict[str, Any], provenance: dict[str, Any]) -> None:
    """Above the fields: whether the call is a fallback or was retried, and whether its attributes are several calls'."""
    if row.get("is_fallback"):
        text.append("  ⤷ fallback: replaces a failed call to another model\n", style="bold yellow")
    elif row.get("is_retry"):
        text.append("  ↻ retried: earlier attempts failed\n", style="bold yellow")
    if provenance.get("merged"):  # semconv: LiteLLM wrote several calls onto this one span
        text.append(
            "  ⚠ attributes of several LiteLLM calls merged: the fields and messages below may come from "
            "different calls\n",
            style="bold yellow",
        )


def _llm_value(row: dict[str, Any], col: str, value: Any) -> str:
    """One LLM field's value, in the words and units the rest of the UI uses."""
    if col in ("ttft_ns", "decode_ns"):
        shown = fmt_duration(value)
        if col == "ttft_ns" and ttft_includes_retry(row.get("retry_offset_ns"), row.get("attempt_offset_ns"),
                                                    row.get("provenance")):  # fmt: skip
            shown += " (from the call's start: includes the retry)"
        return shown
    if col == "tokens_per_s":
        return f"{value:.1f} tokens/s"
    if col == "retry_ns":
        what = "the fallback" if row.get("is_fallback") else "the final attempt"
        return f"{fmt_duration(value)} before {what} (failed attempts and backoff)"
    if col == "streaming":
        return "yes" if value else "no"
    if col == "cost_usd":
        return fmt_cost(value)  # the string the tree shows for this span
    return safe_text(value, 200)


def _llm_source(row: dict[str, Any], col: str, provenance: dict[str, Any]) -> str | None:
    """Where one LLM field came from: the attribute that gave it, how it was derived, or who priced it."""
    source = provenance.get(_PROVENANCE_KEYS.get(col, col)) or _DERIVED.get(col)
    if col == "cost_usd":
        source = {
            "reported": f"reported by the span ({provenance.get('cost', '?')})",
            "priced": "genai-prices bundled data, at the call's start time",
            "user price": "your price file",
        }.get(row.get("cost_source") or "", source)
    return source


def _events(text: Text, events: list[dict[str, Any]], start_ns: int) -> None:
    """The span's events (the first 200), each at its offset from the span's start."""
    _section(text, f"Events ({len(events)})")
    if not events:
        text.append("  (none)\n", style="dim")
    for event in events[:200]:
        offset = event["time_ns"] - start_ns
        text.append(f"  +{fmt_duration(offset)} ", style="dim")
        text.append(
            safe_text(event["name"], 200) + "\n", style="bold yellow" if event["name"] == "exception" else "bold"
        )
        if event["attributes"]:
            _pairs(text, event["attributes"], key_style="cyan", indent="      ")
    if len(events) > 200:
        text.append(f"  … {len(events) - 200} more events\n", style="dim")


def _links(text: Text, links: list[dict[str, Any]]) -> None:
    _section(text, f"Links ({len(links)})")
    if not links:
        text.append("  (none)\n", style="dim")
    for link in links:
        text.append(f"  → span {link['span_id']} in trace {link['trace_id'][:8]}…\n")
        if link["attributes"]:
            _pairs(text, link["attributes"], key_style="cyan", indent="      ")


def _log_records(text: Text, logs: list[dict[str, Any]], start_ns: int) -> None:
    """The log records of the span (the first 100), when there are any."""
    if logs:
        _section(text, f"Log records ({len(logs)})")
        for record in logs[:100]:
            offset = record["time_ns"] - start_ns
            text.append(f"  +{fmt_duration(offset)} ", style="dim")
            text.append(safe_text(record["event_name"] or "log record", 120) + "\n", style="bold")
            if record["body"] not in (None, "", {}, []):
                text.append("      body = " + format_value(record["body"]).replace("\n", "\n      ") + "\n")
            if record["attributes"]:
                _pairs(text, record["attributes"], key_style="cyan", indent="      ")


def _resource_and_scope(text: Text, detail: SpanDetail) -> None:
    _section(text, "Resource")
    _pairs(text, detail.resource)
    scope = detail.scope
    if scope.get("name"):
        _section(text, "Instrumentation scope")
        text.append(f"  {safe_text(scope['name'], 200)} {safe_text(scope.get('version') or '', 40)}\n")


def highlight_matches(text: Text, search: str, style: str) -> int | None:
    """Style every case-insensitive occurrence of ``search`` in ``text``; the offset of the first one in the
    conversation (the Messages section) if there is one there, else of the first anywhere (None: none).

    Works on the text as drawn: data was made literal by safe_text before it got here, so
    markup and escapes in it stay characters, and a regex of the escaped search cannot match markup.
    """
    needle = search.strip()
    if not needle:
        return None
    pattern = re.compile(re.escape(needle), re.IGNORECASE)
    if not text.highlight_regex(pattern, style):
        return None
    plain = text.plain
    conversation = plain.find("\nMessages (")
    found = pattern.search(plain, conversation) if conversation >= 0 else None
    return (found or pattern.search(plain)).start()  # type: ignore[union-attr]


class SpanDetailPane(VerticalScroll, can_focus=True):
    """Scrollable pane holding one span's details."""

    DEFAULT_CSS = """
    SpanDetailPane { padding: 0 1; }
    SpanDetailPane > Static { width: 1fr; }
    """

    def compose(self):
        yield Static(Text("Select a span to see its details.", style="dim"), id="detail-body")

    #: The `/` search's matches in the pane: reverse video, bold (reads on a monochrome terminal too).
    MATCH_STYLE = "reverse bold"

    def __init__(self, *children, **options) -> None:
        super().__init__(*children, **options)
        self._detail: SpanDetail | None = None
        self._search = ""

    def show(self, detail: SpanDetail | None, search: str = "") -> None:
        """Show one span; with ``search``, its occurrences highlighted and the first one scrolled into view."""
        self._detail, self._search = detail, search
        body = self.query_one("#detail-body", Static)
        if detail is None:
            body.update(Text("This span is no longer in the database.", style="dim"))
            self.scroll_home(animate=False)
            return
        app = tui(self)
        width = self.scrollable_content_region.width or 200  # the padding and the scroll bar taken off
        text = detail_text(detail, app.clock(), app.threshold, width)
        first = highlight_matches(text, search, self.MATCH_STYLE)
        body.update(text)
        if first is None:
            self.scroll_home(animate=False)
        else:  # the line of the first match (counting newlines: wrapped lines may put it a little lower)
            self.call_after_refresh(self.scroll_to, y=max(0, text.plain.count("\n", 0, first) - 2), animate=False)

    def set_search(self, search: str) -> None:
        """Highlight another search in the span already shown."""
        if search != self._search and self._detail is not None:
            self.show(self._detail, search)

    def show_message(self, message: str) -> None:
        self.query_one("#detail-body", Static).update(Text(message, style="dim"))

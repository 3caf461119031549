"""Formatting shared by the UI and the text commands. No Textual here."""

from __future__ import annotations

import json
import math
import re
import time

# C0/C1 controls (ESC, BEL, CR...), DEL, and the bidirectional/zero-width
# format characters that can reorder or hide text on a terminal.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\e"}


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    named = _NAMED.get(ch)
    if named:
        return named
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def safe_text(value: object, limit: int | None = None) -> str:
    """A user-supplied value made safe to draw on one terminal line.

    Control and bidi characters become visible escapes (``\\e[31m`` stays
    literal text), so span names can never move the cursor, recolour the
    terminal or smuggle markup. ``limit`` truncates with an ellipsis.
    """
    text = value if isinstance(value, str) else str(value)
    if limit is not None and len(text) > limit * 4:
        text = text[: limit * 4]  # bound the work on 10 MB values before escaping
    text = _UNSAFE.sub(_escape, text)
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)] + "…"
    return text


def safe_multiline(value: object, limit: int = 20_000) -> str:
    """Like safe_text but keeps newlines and tabs (for long values in the detail pane)."""
    text = value if isinstance(value, str) else str(value)
    truncated = len(text) > limit
    text = text[:limit]
    text = "\n".join(safe_text(line).replace("\\t", "    ") for line in text.split("\n"))
    if truncated:
        text += f"\n… ({len(value) if isinstance(value, str) else '?':,} characters, first {limit:,} shown)"
    return text


#: GenAI semantic-convention operation names that start span names ("invoke_agent ticket-resolution").
OPERATION_PREFIXES = (
    "invoke_agent", "create_agent", "invoke_workflow", "execute_tool", "chat", "text_completion",
    "generate_content", "embeddings",
)  # fmt: skip


def short_name(name: str, width: int) -> str:
    """A span name that fits ``width`` cells better: the operation prefix goes first ("invoke_agent x" -> "x").

    Only when the whole name does not fit: the prefix says what kind of span it is, which is worth
    keeping while there is room. The caller still cuts what remains too long.
    """
    if len(name) <= width:
        return name
    head, _, rest = name.partition(" ")
    return rest if rest and head in OPERATION_PREFIXES else name


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters with an ellipsis (already-safe, single-cell text)."""
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)] + "…" if width > 0 else ""


def fmt_duration(ns: int | None) -> str:
    """Compact, fixed-precision durations: 850µs, 120ms, 2.41s, 3m05s, 1h02m."""
    if ns is None:
        return "n/a"
    if ns < 0:
        return "-" + fmt_duration(-ns)
    # Each unit is used only if the *rounded* value stays below the next unit
    # (999,999ns is "1ms", never "1000µs"; 59.99s is "1m00s", never "60.0s").
    if ns < 1_000:
        return f"{ns}ns"
    if round(ns / 1_000) < 1_000:
        return f"{ns / 1_000:.0f}µs"
    if round(ns / 1_000_000) < 1_000:
        return f"{ns / 1_000_000:.0f}ms"
    seconds = ns / 1e9
    if round(seconds, 2) < 10:
        return f"{seconds:.2f}s"
    if round(seconds, 1) < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


#: What a span or trace whose end is before its start shows next to its (negative) duration.
END_BEFORE_START = "end before start!"


def fmt_elapsed(start_ns: int, end_ns: int) -> str:
    """The duration from start to end, explained when the end comes first ("-1.00s (end before start!)").

    The trace summary and the span details both use it, so the same broken span reads
    the same in both (lists and bars clamp such spans to zero width).
    """
    if end_ns < start_ns:
        return f"{fmt_duration(end_ns - start_ns)} ({END_BEFORE_START})"
    return fmt_duration(end_ns - start_ns)


def join_to_fit(parts: list[tuple[int, str]], width: int, separators: tuple[str, ...] = ("  ·  ", " · ")) -> str:
    """``(priority, text)`` parts joined on one line of at most ``width`` characters, designed rather than cut.

    Tries the wide separator, then the narrow one; then, keeping the narrow one, drops
    the part with the highest priority number (priority 0 is never dropped); only
    when nothing is left to drop does it cut the first part (usually a name).
    The parts keep their order.
    """
    parts = [(priority, text) for priority, text in parts if text]
    for separator in separators[:-1]:  # every part, with a wider separator
        line = separator.join(text for _, text in parts)
        if len(line) <= width:
            return line
    while True:  # the narrow separator, then fewer parts
        line = separators[-1].join(text for _, text in parts)
        if len(line) <= width:
            return line
        droppable = [part for part in parts if part[0] > 0]
        if not droppable:
            break
        parts.remove(max(droppable, key=lambda part: part[0]))
    texts = [text for _, text in parts]
    rest = separators[-1].join(texts[1:])
    if not rest:
        return fit(texts[0], width)
    return separators[-1].join([fit(texts[0], max(1, width - len(rest) - len(separators[-1]))), *texts[1:]])


def fmt_clock(ns: int, now_ns: int | None = None) -> str:
    """Local wall-clock time (8 cells); month-day and minutes when not today (11); the date in another year."""
    if ns <= 0:
        return "—"
    seconds = ns / 1e9
    try:
        local = time.localtime(seconds)
    except (OverflowError, OSError, ValueError):
        return "?"
    today = time.localtime((now_ns or time.time_ns()) / 1e9)
    if (local.tm_year, local.tm_yday) == (today.tm_year, today.tm_yday):
        return time.strftime("%H:%M:%S", local)
    if local.tm_year == today.tm_year:
        return time.strftime("%m-%d %H:%M", local)  # 11 cells, like the time column
    return time.strftime("%Y-%m-%d", local)


def fmt_count(n: int | None) -> str:
    """1,234 -> 1.2k; 2,100,000 -> 2.1M."""
    if n is None:
        return "—"
    if n < 1000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.1f}M"


def fmt_counted(n: int, noun: str) -> str:
    """1 -> "1 span"; 10000 -> "10,000 spans" (nouns that take an "s")."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}GB"


#: Below this, an amount is shown as "<$0.000001" (a price per token is about $1e-8 to $1e-4).
COST_FLOOR_USD = 0.000_001


def fmt_cost(usd: float | None) -> str:
    """The one money format (screen, `y` copy, `export`): $1,234.56, $0.42, $0.00625, $0.000016, <$0.000001.

    Below a dollar: three significant digits, at most six decimals, trailing zeros
    dropped (at least two decimals), so a sub-cent amount is never rounded to a
    misleading "$0.0000" and the same amount reads the same everywhere. "unpriced"
    when unknown (never a misleading $0). At most 10 cells. ``--json`` output keeps the
    full float instead.
    """
    if usd is None:
        return "unpriced"
    if usd == 0:
        return "$0"
    if usd < 0:
        return "-" + fmt_cost(-usd)
    if usd < COST_FLOOR_USD:
        return "<$0.000001"
    if round(usd, 2) >= 1:
        return f"${usd:,.2f}"
    decimals = min(6, max(2, 2 - math.floor(math.log10(usd))))
    text = f"{usd:.{decimals}f}".rstrip("0")
    whole, _, fraction = text.partition(".")
    return f"${whole}.{fraction.ljust(2, '0')}"


def _finite(value: object) -> object:
    """``value`` with every NaN or infinite float replaced by None, in nested dicts and lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def json_text(value: object, ensure_ascii: bool = True) -> str:
    """JSON for scripts and the clipboard (``--json``, ``Y``): NaN and infinities become ``null``.

    OTLP carries IEEE doubles, and libraries do send NaN (the Vercel AI SDK 4 and 5 report
    NaN token counts on a stream without usage). Python's ``json`` would print a bare ``NaN``,
    which is not JSON (RFC 8259): ``jq`` and ``JSON.parse`` reject the whole document. The
    stored span keeps the original value (``export --format otlp-json`` writes ``"NaN"`` as
    the protobuf JSON mapping does); only this text says "no number".
    """
    return json.dumps(_finite(value), indent=2, ensure_ascii=ensure_ascii, allow_nan=False, default=str)

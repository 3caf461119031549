"""Text shown on the terminal: user-supplied values made harmless, durations made readable."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracetui.model.fmt import (
    fit,
    fmt_cost,
    fmt_counted,
    fmt_duration,
    fmt_elapsed,
    join_to_fit,
    safe_multiline,
    safe_text,
    short_name,
)

#: Unicode's Bidi_Control characters: they reorder the text around them.
BIDI_CONTROLS = {"\u061c", "\u200e", "\u200f", *map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A))}


def harmless(text: str) -> bool:
    return not any(unicodedata.category(c) == "Cc" or c in BIDI_CONTROLS for c in text)


# --- safe_text ---------------------------------------------------------------------------


def test_escape_sequences_become_visible_text():
    out = safe_text("red\x1b[31mALERT\x1b[0m")
    assert "\x1b" not in out
    assert out == "red\\e[31mALERT\\e[0m"


def test_osc_title_change_and_bell_are_neutralised():
    out = safe_text("\x1b]0;owned\x07done")
    assert "\x1b" not in out and "\x07" not in out
    assert "owned" in out and "done" in out


@pytest.mark.parametrize("char", ["\n", "\r", "\t", "\x00", "\x08", "\x7f", "\x9b"], ids=repr)
def test_control_characters_are_escaped_on_one_line(char):
    out = safe_text(f"a{char}b")
    assert char not in out
    assert out.startswith("a\\") and out.endswith("b")
    assert "\n" not in out


def test_newlines_show_as_backslash_n():
    assert safe_text("line one\nline two") == "line one\\nline two"


@pytest.mark.parametrize("char", sorted(BIDI_CONTROLS), ids=lambda c: f"U+{ord(c):04X}")
def test_bidi_controls_are_escaped(char):
    # "Trojan source": U+202E makes 'exe.txt' display as 'txt.exe'.
    out = safe_text(f"invoice{char}exe.txt")
    assert char not in out
    assert out.startswith("invoice\\u") and out.endswith("exe.txt")


def test_zero_width_characters_are_escaped():
    for char in ("\u200b", "\ufeff"):
        assert char not in safe_text(f"ad{char}min")


def test_rich_markup_is_left_as_literal_characters():
    for text in ("[bold red]x[/]", "[link=https://evil.example]click[/link]", "[/]", r"\[escaped]"):
        assert safe_text(text) == text


def test_ordinary_unicode_is_untouched():
    for text in ("naïve café", "日本語のテキスト", "emoji 🚀 ok", "Ελληνικά", "עברית"):
        assert safe_text(text) == text


def test_non_strings_are_shown_as_text():
    assert safe_text(42) == "42"
    assert safe_text(None) == "None"


def test_truncation_keeps_the_limit_and_marks_the_cut():
    out = safe_text("abcdefghij", 5)
    assert out == "abcd…"
    assert len(out) == 5
    assert safe_text("abcde", 5) == "abcde"  # exactly at the limit: nothing cut
    assert safe_text("", 5) == ""


def test_truncation_counts_the_escaped_form():
    out = safe_text("\x1b" * 100, 10)
    assert len(out) <= 10 and "\x1b" not in out and out.endswith("…")


def test_huge_values_are_cut_without_escaping_everything():
    out = safe_text("x" * 10_000_000, 20)
    assert len(out) == 20


@settings(max_examples=200, deadline=None)
@given(st.text(), st.one_of(st.none(), st.integers(min_value=1, max_value=80)))
def test_nothing_harmful_ever_survives(text, limit):
    out = safe_text(text, limit)
    assert harmless(out)
    if limit is not None:
        assert len(out) <= limit


def test_multiline_keeps_line_breaks_but_not_escapes():
    out = safe_multiline("first\x1b[2J\nsecond\tcol")
    assert out.split("\n") == ["first\\e[2J", "second    col"]


def test_multiline_says_when_it_cut_a_long_value():
    out = safe_multiline("y" * 50, limit=10)
    assert out.startswith("y" * 10)
    assert "50" in out and "10" in out


# --- fmt_duration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ns, shown",
    [
        (0, "0ns"),
        (750, "750ns"),
        (850_000, "850µs"),
        (120_000_000, "120ms"),
        (2_410_000_000, "2.41s"),
        (34_200_000_000, "34.2s"),
        (185_000_000_000, "3m05s"),
        (3_720_000_000_000, "1h02m"),
        (-5_000_000, "-5ms"),
        (None, "n/a"),
    ],
)
def test_duration_examples(ns, shown):
    assert fmt_duration(ns) == shown


@pytest.mark.parametrize(
    "ns, shown",
    [
        (999_999, "1ms"),  # not "1000µs"
        (999_999_999, "1.00s"),  # not "1000ms"
        (9_999_000_000, "10.0s"),  # not "10.00s"
        (59_990_000_000, "1m00s"),  # not "60.0s"
        (3_599_900_000_000, "1h00m"),  # not "60m00s"
    ],
)
def test_duration_rounding_never_shows_a_full_next_unit(ns, shown):
    assert fmt_duration(ns) == shown


#: Every shape a duration may take: each unit's number stays below the next unit.
DURATION_SHAPES = re.compile(
    r"\d{1,3}ns|[1-9]\d{0,2}µs|[1-9]\d{0,2}ms|\d\.\d\ds|[1-5]\d\.\ds|([1-9]|[1-5]\d)m[0-5]\ds|[1-9]\d?h[0-5]\dm"
)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=99 * 3600 * 10**9))
def test_durations_fit_a_narrow_column_and_never_overflow_their_unit(ns):
    text = fmt_duration(ns)
    assert DURATION_SHAPES.fullmatch(text), text
    assert len(text) <= 6  # the DURATION column, for anything under 100 hours


def test_fmt_counted_says_one_span_and_groups_thousands() -> None:
    assert fmt_counted(1, "span") == "1 span"
    assert fmt_counted(0, "error") == "0 errors"
    assert fmt_counted(2, "LLM call") == "2 LLM calls"
    assert fmt_counted(10_000, "span") == "10,000 spans"


@pytest.mark.parametrize(
    "usd, shown",
    [
        (None, "unpriced"),
        (0, "$0"),
        (0.000000162, "<$0.000001"),  # an 8-token embedding: below the floor, said so
        (0.000016, "$0.000016"),  # never "$0.0000"
        (0.000026, "$0.000026"),
        (0.00625, "$0.00625"),  # the tree and the details print this same string
        (0.007101, "$0.0071"),
        (0.0123, "$0.0123"),
        (0.42, "$0.42"),
        (0.1, "$0.10"),
        (0.999999, "$1.00"),
        (1234.567, "$1,234.57"),
    ],
)
def test_one_money_format(usd, shown):
    assert fmt_cost(usd) == shown


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=0, max_value=10_000, allow_nan=False))
def test_money_is_never_a_misleading_zero_and_fits_the_cost_column(usd):
    text = fmt_cost(usd)
    assert len(text) <= 10
    if usd > 0:
        assert text != "$0" and not re.fullmatch(r"\$0\.0+", text), (usd, text)
        digits = text.lstrip("<$").replace(",", "")
        if not text.startswith("<"):
            assert abs(float(digits) - usd) <= max(0.005 if usd >= 1 else usd * 0.06, 0.0000006), (usd, text)


def test_names_lose_their_operation_prefix_only_when_they_do_not_fit():
    assert short_name("invoke_agent ticket-resolution", 40) == "invoke_agent ticket-resolution"
    assert short_name("invoke_agent ticket-resolution", 20) == "ticket-resolution"
    assert short_name("chat gpt-4o", 5) == "gpt-4o"  # the caller still cuts what remains
    assert short_name("my own span name", 5) == "my own span name"  # not an operation: left alone
    assert fit("ticket-resolution", 8) == "ticket-…"


def test_parts_are_joined_to_fit_dropping_the_least_useful_first():
    parts = [(0, "ticket-resolution agent"), (0, "34.1s"), (3, "5 spans"), (2, "2 LLM calls"), (0, "$0.0071"),
             (0, "1 error")]  # fmt: skip
    assert (
        join_to_fit(parts, 200)
        == "ticket-resolution agent  ·  34.1s  ·  5 spans  ·  2 LLM calls  ·  $0.0071  ·  1 error"
    )
    assert join_to_fit(parts, 78) == "ticket-resolution agent · 34.1s · 5 spans · 2 LLM calls · $0.0071 · 1 error"
    assert join_to_fit(parts, 66) == "ticket-resolution agent · 34.1s · 2 LLM calls · $0.0071 · 1 error"
    assert join_to_fit(parts, 60) == "ticket-resolution agent · 34.1s · $0.0071 · 1 error"
    assert join_to_fit(parts, 40) == "ticket-reso… · 34.1s · $0.0071 · 1 error"  # 40 characters


def test_a_span_that_ends_before_it_starts_is_explained():
    assert fmt_elapsed(2_000_000_000, 1_000_000_000) == "-1.00s (end before start!)"
    assert fmt_elapsed(1_000_000_000, 2_000_000_000) == "1.00s"

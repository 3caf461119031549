"""What the trace screen says when a library did not report something (issue 13, timing honesty).

The official openai-v2 instrumentation (the otel_v2_current capture) reports no streaming flag and
no first token; its httpx children show the SDK's own 429 retry. The screen must say "first token
not reported by <library>" (never "not streamed"), show the retry and where it came from, and say
that the last call, streamed without usage, has no token counts.
"""

from __future__ import annotations

from pathlib import Path

from helpers import fill_db

from tests.ui.conftest import fixture_requests, make_app, settle
from tests.ui.test_hostile_ui import screen_text
from tracetui.query.export import span_json
from tracetui.ui.screens.trace_view import TraceScreen
from tracetui.ui.widgets.waterfall import Waterfall, bar_segments

#: The library as the screen names it: its instrumentation scope is ``opentelemetry.util.genai.handler``.
LIBRARY = "the OpenTelemetry GenAI instrumentation"


async def open_run(pilot) -> None:
    await settle(pilot)
    await pilot.press("enter")
    await settle(pilot)
    assert isinstance(pilot.app.screen, TraceScreen)


async def select(pilot, name: str, nth: int = 0) -> None:
    waterfall = pilot.app.screen.query_one(Waterfall)
    rows = [i for i, line in enumerate(waterfall.lines) if line.span.name == name]
    waterfall.cursor_row = rows[nth]
    await settle(pilot)


async def test_openai_v2_run_says_what_was_not_reported(tmp_path: Path) -> None:
    db = tmp_path / "v2.db"
    fill_db(db, fixture_requests("otel_v2_current.otlp"))
    app = make_app(db)
    async with app.run_test(size=(160, 50)) as pilot:
        await open_run(pilot)
        legend = str(app.screen.query_one("#legend").render())
        assert f"response (first token not reported by {LIBRARY})" in legend
        assert "not streamed" not in screen_text(app)
        summary = str(app.screen.query_one("#trace-summary").render())
        assert "1 call without token counts" in summary

        await select(pilot, "chat gpt-4.1-mini")
        waterfall = app.screen.query_one(Waterfall)
        span = waterfall.lines[waterfall.cursor_row].span
        assert "↻" in screen_text(app)
        pieces = bar_segments(span)
        assert [p[2] for p in pieces] == ["waterfall--retry", "waterfall--response"]
        assert 200e6 < pieces[0][1] - pieces[0][0] < 260e6  # the call's start to the second attempt's
        detail = str(app.screen.query_one("#detail-body").render())
        assert "2 HTTP attempts, first 429" in detail
        # each field's label says what is missing once: "time to first token  not reported by ..."
        assert f"time to first token not reported by {LIBRARY}" in detail
        assert f"streaming           not reported by {LIBRARY}" in detail
        assert "first token first token" not in detail and "retry not reported" not in detail
        assert "time lost           225ms before the final attempt (failed attempts and backoff)" in detail

        await select(pilot, "chat gpt-4o-mini", nth=2)  # the answer, streamed without include_usage
        detail = str(app.screen.query_one("#detail-body").render())
        assert f"input tokens        not reported by {LIBRARY}" in detail
        assert "1 HTTP attempt" in detail


async def test_estimated_token_counts_are_shown_as_estimates(tmp_path: Path) -> None:
    """A library's own estimate reads "~201": the normalizer marks it with provenance ``tokens_estimated``
    (LiteLLM's, naming the attribute that shows it); this is the display of that mark."""
    from helpers import make_request, make_span, sid, tid

    from tracetui.store.reader import SqliteReader
    from tracetui.ui.widgets.span_detail import detail_text

    span = make_span(tid(5), sid(1), name="litellm_request", attributes={
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 201, "gen_ai.usage.output_tokens": 24})  # fmt: skip
    db = tmp_path / "est.db"
    fill_db(db, [make_request([span])])
    reader = SqliteReader(db)
    try:
        detail = reader.span_detail(tid(5), sid(1))
        assert "estimated" not in str(detail_text(detail))
        detail.row["provenance"] = '{"tokens_estimated": "metadata.usage_object"}'
        detail.row["library"] = "litellm"
        text = str(detail_text(detail))
    finally:
        reader.close()
    assert "~201" in text and "~24" in text and "estimated by LiteLLM (per metadata.usage_object)" in text


def test_waterfall_marks_estimated_token_counts() -> None:
    from tracetui.model.views import SpanRow
    from tracetui.ui.widgets.waterfall import span_info

    span = SpanRow(b"s" * 8, None, "litellm_request", 3, "svc", 0, 10**9, 1, "", llm_kind="llm",
                   input_tokens=201, output_tokens=24)  # fmt: skip
    assert span_info(span, 30).startswith("201→24")
    span.provenance = '{"input_tokens":"gen_ai.usage.input_tokens","tokens_estimated":"metadata.usage_object"}'
    assert span_info(span, 30).startswith("~201→~24")


async def litellm_detail(db: Path, keys: tuple[str, ...], span: str) -> str:
    """The detail pane of ``span`` in the run the ``keys`` open, LiteLLM's capture stored in ``db``."""
    fill_db(db, fixture_requests("litellm_otel.otlp"))
    app = make_app(db)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        await pilot.press(*keys)
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen)
        await select(pilot, span)
        return str(app.screen.query_one("#detail-body").render())


async def test_a_streamed_call_without_a_first_token_is_not_called_not_streamed(tmp_path: Path) -> None:
    """LiteLLM says a call was streamed (``llm.is_streaming``) and reports no first token on the span."""
    # the newest run: a streamed call LiteLLM made its own root
    detail = await litellm_detail(tmp_path / "litellm.db", ("enter",), "litellm_request")
    assert "streaming           yes" in detail
    assert "time to first token not reported by LiteLLM" in detail
    assert "not streamed" not in detail


async def test_a_call_litellm_wrote_onto_the_apps_span_is_litellms_not_the_apps(tmp_path: Path) -> None:
    """LiteLLM's default: the call's attributes land on the app's own span, whose scope is the app's
    tracer (``tracetui.harness.agent``); what LiteLLM did not report is LiteLLM's to say."""
    from tracetui.store.reader import SqliteReader

    db = tmp_path / "litellm.db"
    # the oldest run: the app's span
    detail = await litellm_detail(db, ("end", "enter"), "invoke_agent support")
    assert "retries             not reported by LiteLLM" in detail
    assert "tracetui.harness.agent" not in detail.split("Attributes (")[0]
    reader = SqliteReader(db)
    try:
        (run,) = [t for t in reader.traces(0, -1) if t.name == "invoke_agent support"]
        (parent,) = [s for s in span_json(reader, run.trace_id) if s["name"] == "invoke_agent support"]
    finally:
        reader.close()
    assert parent["kind"] == "llm" and parent["retry_note"] == "retry not reported by LiteLLM"

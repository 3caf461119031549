"""What a user sees of LiteLLM's calls written onto the app's own span (issue 13, families)."""

from __future__ import annotations

from pathlib import Path

from tests.ui.conftest import fixture_requests, make_app, settle, write_requests
from tracetui.ui.screens.trace_view import TraceScreen
from tracetui.ui.widgets.waterfall import Waterfall


async def test_litellm_merged_calls_are_said_to_be_merged_on_the_apps_span(tmp_path: Path) -> None:
    db = tmp_path / "litellm.db"
    write_requests(db, fixture_requests("litellm_otel.otlp"))
    app = make_app(db)
    async with app.run_test(size=(160, 60)) as pilot:
        await settle(pilot)
        # newest first: the app's run (which the streamed litellm_request runs followed) is the last row
        await pilot.press("G", "enter")
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen)
        waterfall = app.screen.query_one(Waterfall)
        index = next(i for i, line in enumerate(waterfall.lines) if line.span.name == "invoke_agent support")
        waterfall.cursor_row = index
        await settle(pilot)
        body = str(app.screen.query_one("#detail-body").render())
        assert "invoke_agent support" in body  # the app's span keeps its name
        assert "attributes of several LiteLLM calls merged: the fields and messages below may come from" in body
        assert "gen_ai.agent.name = support" in body
        assert "InternalServerError" in body  # verify's 500, written onto the same span

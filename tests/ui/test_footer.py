"""The footer shows the focused pane's keys, and is not rebuilt when they stay the same."""

from __future__ import annotations

from textual.widgets._footer import FooterKey

from tests.ui.conftest import make_app, settle
from tests.ui.test_drill import enter_timeout_run
from tracetui.query.memory import MemoryReader
from tracetui.ui.screens.trace_view import TraceScreen


def footer_keys(app) -> list[tuple[str, str]]:
    return [(key.key, key.description) for key in app.screen.query(FooterKey)]


async def test_the_footer_follows_the_focused_pane_and_is_not_rebuilt_otherwise(agent_mem: MemoryReader) -> None:
    app = make_app(agent_mem)
    async with app.run_test(size=(130, 36)) as pilot:
        await settle(pilot)
        await enter_timeout_run(pilot)
        assert isinstance(app.screen, TraceScreen)
        tree_keys = footer_keys(app)
        widgets = list(app.screen.query(FooterKey))
        assert ("s", "Slowest") in tree_keys and ("c", "Critical path") in tree_keys

        app.screen.refresh_bindings()  # "bindings updated", with nothing changed
        await settle(pilot)
        assert list(app.screen.query(FooterKey)) == widgets, "the footer was rebuilt for the same keys"

        await pilot.press("tab")  # the detail pane: other keys
        await settle(pilot)
        detail_keys = footer_keys(app)
        assert detail_keys != tree_keys
        await pilot.press("tab")  # and back
        await settle(pilot)
        assert footer_keys(app) == tree_keys

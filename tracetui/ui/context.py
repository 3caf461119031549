"""The running app, typed for the screens and widgets that use its shared state.

Textual types ``node.app`` as ``App[object]``; our screens read the reader, the
clock and the header's addresses from :class:`~tracetui.ui.app.TraceTuiApp`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual.message_pump import MessagePump

if TYPE_CHECKING:
    from tracetui.ui.app import TraceTuiApp


def tui(node: MessagePump) -> TraceTuiApp:
    """``node.app`` as the TraceTuiApp it is (every screen and widget of ours runs inside one)."""
    return cast("TraceTuiApp", node.app)

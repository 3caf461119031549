"""Textual's Footer, rebuilt only when the keys it shows change.

The stock Footer recomposes on every "bindings updated" signal (a screen is
pushed, focus moves between panes, the app regains focus): it removes its key
widgets, mounts new ones and restyles each. Opening a trace sent six of those
signals for the same dozen keys, and the footer's restyling was the largest
single cost of showing the trace screen. Here the signal is ignored when the
bindings the footer would show (key, action, description, enabled, tooltip)
are exactly the ones already shown.
"""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer


class KeyFooter(Footer):
    _shown: tuple | None = None

    def bindings_changed(self, screen: Screen) -> None:
        will_recompose = screen.app.app_focus and self.is_attached and screen is self.screen
        if not will_recompose:
            super().bindings_changed(screen)
            return
        shown = tuple(
            (key, binding.action, binding.description, enabled, tooltip)
            for key, (_node, binding, enabled, tooltip) in screen.active_bindings.items()
            if binding.show or key == self.app.COMMAND_PALETTE_BINDING
        )
        if self._bindings_ready and shown == self._shown:
            return
        self._shown = shown
        super().bindings_changed(screen)

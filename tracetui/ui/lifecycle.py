"""Small helpers that keep screens cheap to update and to close."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from textual.dom import DOMNode
from textual.widget import Widget
from textual.worker import active_worker

F = TypeVar("F", bound=Callable)


def unwatch_app(node: DOMNode) -> None:
    """Forget the watchers ``node`` registered on the app with ``node.watch(app, ...)``.

    Textual (8.2.x) keeps them in the app's watcher lists and drops those of a
    closed node only the next time that attribute changes. A closed trace screen
    (with every span of its trace) therefore stayed alive until the next commit
    reached ``data_version``: indefinitely when no traffic arrives. Call from
    ``on_unmount``.
    """
    try:
        watchers = getattr(node.app, "__watchers")
    except (AttributeError, RuntimeError):  # nothing was ever watched, or no active app
        return
    for callbacks in watchers.values():
        callbacks[:] = [(owner, callback) for owner, callback in callbacks if owner is not node]


def set_display(widget: Widget, display: bool) -> None:
    """Show or hide ``widget``, touching its styles (and asking for a layout) only on a change."""
    if widget.display != display:
        widget.display = display


def forget_worker_when_done(fn: F) -> F:
    """For a screen's thread workers (put it under ``@work(thread=True, ...)``).

    Textual records the running worker in a context variable of the executor
    thread and leaves it there when the work returns, so each of the pool's
    threads keeps its last worker -- and, through it, the screen whose method
    it ran (a closed trace screen holds every span of its trace) -- until that
    thread happens to run another worker. Clearing the variable when the work
    is done lets a closed screen go as soon as it is popped.
    """

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        finally:
            active_worker.set(None)  # nothing runs on this thread now

    return run  # type: ignore[return-value]

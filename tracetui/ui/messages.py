"""Messages that cross widgets and threads (past-tense facts)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from tracetui.model.views import Counters


@dataclass
class DataChanged(Message):
    """Another process committed to the database. Only the latest one matters."""

    version: int

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, DataChanged)


@dataclass
class CountersUpdated(Message):
    """Fresh span/trace counters and receiver facts for the header."""

    counters: Counters
    receiver_alive: bool | None
    at_monotonic: float

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, CountersUpdated)


@dataclass
class CopyReady(Message):
    """Text to put on the clipboard (empty: it failed, ``note`` says why)."""

    text: str
    note: str


@dataclass
class FeedbackRecorded(Message):
    """The user's feedback was stored (or could not be: ``error``)."""

    text: str
    error: bool = False

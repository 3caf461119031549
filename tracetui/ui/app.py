"""The Textual application: a thin shell around the screens.

The app owns a :class:`~tracetui.model.reader.Reader` (handed in: the CLI opens
the SQLite one, tests also build apps over a seeded file or an in-memory reader;
the UI never learns which) and the watcher thread that notices new data. Screens
watch ``data_version`` and ``counters`` and re-query only what they show.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from functools import partial

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.reactive import var

from tracetui.model.reader import PinBoard, Reader
from tracetui.model.views import Counters
from tracetui.ui.marks import RunMark
from tracetui.ui.messages import CopyReady, CountersUpdated, DataChanged, FeedbackRecorded
from tracetui.ui.screens.help import HelpScreen
from tracetui.ui.screens.trace_list import TraceListScreen
from tracetui.ui.watcher import DbWatcher

#: Whether this process already moved its start-up objects out of the cyclic GC.
_gc_frozen = False
#: Allocations between young-generation collections once started (CPython's default is 700).
GC_GEN0_THRESHOLD = 2000


def freeze_startup_objects() -> bool:
    """Take the objects alive now out of the cyclic garbage collector, once per process.

    The UI process holds 60-110k GC-tracked objects once its first screen is up
    (Textual's DOM, styles and caches, imported modules), nearly all of them
    alive until exit. Every full (generation 2) collection walks all of them:
    on a loaded 2-core machine that is a 50-270 ms pause of the event loop,
    i.e. a key press that waits. ``gc.freeze()`` moves them to the permanent
    generation, which collections skip, so a full collection only walks what
    was allocated since. Cost: garbage cycles that already exist at that moment
    are never reclaimed (a one-time, bounded amount: ~2,000 objects measured);
    a ``gc.collect()`` first would reclaim them at the price of the very pause
    this avoids, right after the first paint.

    The young-generation threshold is also raised a little: each repaint and
    each data change allocate a few thousand short-lived objects (segments,
    strips, rows), which then die young instead of being promoted by a
    collection in mid-render.

    Process-wide, so once per process: the first app to start does it.
    """
    global _gc_frozen
    if _gc_frozen:
        return False
    _gc_frozen = True
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    if gen0 and gen0 < GC_GEN0_THRESHOLD:  # gen0 == 0: collection disabled by the embedder; leave it
        gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)
    return True


class TraceTuiApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "tracetui"
    ENABLE_COMMAND_PALETTE = True
    BINDINGS = [
        Binding("q", "quit", "Quit", show=True),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("question_mark", "help", "Help", show=True, key_display="?", tooltip="all keys, grouped"),
        Binding("S", "stats", "Stats", show=True, tooltip="latency percentiles, rates, cost by model / route / prompt"),
    ]

    data_version: var[int] = var(0)
    #: The filter typed with `/`, shared by the trace list and the stats screen.
    filter_text: var[str] = var("")
    counters: var[CountersUpdated | None] = var(None)
    #: The run marked with space in the trace list (run A of a diff, `d`); one at a time.
    run_mark: var[RunMark | None] = var(None)

    def __init__(
        self,
        reader: Reader,
        *,
        open_reader: Callable[[], Reader] | None = None,
        pins: PinBoard | None = None,
        listen: str | None = None,
        receiver_alive=None,
        poll_interval: float | None = 0.2,
        clock: Callable[[], int] = time.time_ns,
        threshold: float = 0.5,
        freeze_gc: bool = True,
    ) -> None:
        """
        Args:
            reader: read access to the traces, shared by the screens' thread workers.
            open_reader: opens another reader of the same store, for the watcher thread
                (needed when ``poll_interval`` is set).
            pins: where the trace on screen is pinned against retention (None: nowhere).
            listen: where the receiver listens (shown in the header).
            receiver_alive: callable telling whether our child receiver still runs.
            poll_interval: seconds between change checks; None disables the
                watcher thread (tests drive ``check_now`` themselves).
            clock: wall clock in ns (fixed in snapshot tests).
            threshold: evaluation score at or above which a result passes.
            freeze_gc: once the first screen shows data, take the start-up objects
                out of the cyclic GC (``freeze_startup_objects``; process-wide, so
                tests that run many apps in one process turn it off).
        """
        super().__init__()
        self.reader = reader
        self._open_reader = open_reader
        self._pins = pins
        self.listen = listen
        #: Where the receiver's OTLP/HTTP listens, when known (shown in the header).
        self.http: str | None = None
        #: How the user runs tracetui from any directory, for hints (cli_common.command_name).
        self.command = "tracetui"
        self._receiver_alive = receiver_alive
        self._poll_interval = poll_interval
        self._watcher: DbWatcher | None = None
        self.clock = clock
        self.threshold = threshold
        #: Span attribute that names a route on the stats screen (None: service / run name).
        self.route_attribute: str | None = None
        reader.threshold = threshold
        self.baseline_counters: Counters | None = None
        self._freeze_gc = freeze_gc
        self._started = False
        self._slow_reader: Reader | None = None
        self._slow_reader_lock = threading.Lock()

    def on_mount(self) -> None:
        self.push_screen(TraceListScreen())
        if self._poll_interval is not None and self._open_reader is not None:
            self._watcher = DbWatcher(
                self._open_reader, self.post_message, self._poll_interval, self._receiver_alive, self._pins
            )
            self._watcher.start()

    def on_unmount(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        if self._slow_reader is not None:
            self._slow_reader.close()

    def slow_reader(self) -> Reader:
        """A reader of its own (opened on first use) for secondary figures that take long, so that they never
        hold the screens' reader; the shared one when no other can be opened."""
        if self._open_reader is None:
            return self.reader
        with self._slow_reader_lock:
            if self._slow_reader is None:
                self._slow_reader = self._open_reader()
                self._slow_reader.threshold = self.threshold
            return self._slow_reader

    def on_data_changed(self, message: DataChanged) -> None:
        self.data_version = message.version

    def on_counters_updated(self, message: CountersUpdated) -> None:
        if self.baseline_counters is None:
            self.baseline_counters = message.counters  # "since start" counts from here
        self.counters = message

    def startup_done(self) -> None:
        """The first screen has its data (called by the trace list on every load; acts once)."""
        if self._started:
            return
        self._started = True
        if self._freeze_gc:
            # After the screen update that shows the data, not before it.
            self.call_after_refresh(freeze_startup_objects)

    def pin(self, trace_id: bytes | None) -> None:
        """The trace on screen: retention in the receiver will not evict it."""
        if self._watcher is not None:
            self._watcher.pinned = trace_id

    def check_now(self) -> None:
        """Tell the screens the data changed (tests, and after our own actions)."""
        self.data_version += 1

    # --- clipboard (OSC 52: works over SSH) -----------------------------------

    @work(thread=True, group="copy", exit_on_error=False, description="summarize a trace for the clipboard")
    def copy_trace_summary(self, trace_id: bytes) -> None:
        from tracetui.query.export import trace_summary

        try:
            text = trace_summary(self.reader, trace_id)
        except Exception as exc:
            self.post_message(CopyReady("", f"could not summarize the trace: {exc}"))
            return
        self.post_message(CopyReady(text, f"Copied the run's summary ({len(text):,} characters)"))

    @work(thread=True, group="copy", exit_on_error=False, description="copy span attributes")
    def copy_span_attributes(self, trace_id: bytes, span_id: bytes) -> None:
        from tracetui.query.export import span_attributes_json

        try:
            text = span_attributes_json(self.reader, trace_id, span_id)
        except Exception as exc:
            self.post_message(CopyReady("", f"could not read the span: {exc}"))
            return
        self.post_message(CopyReady(text, f"Copied the span's attributes as JSON ({len(text):,} characters)"))

    # --- the user's feedback (+ / -) ------------------------------------------

    @property
    def can_record_feedback(self) -> bool:
        """Feedback is written to the local database; a ClickHouse source or in-memory traces have none."""
        return self._pins is not None

    @work(thread=True, group="feedback", exit_on_error=False, description="record feedback")
    def record_feedback(self, trace_id: bytes, span_id: bytes | None, thumb: int, note: str | None, what: str) -> None:
        try:
            if self._pins is None:
                raise OSError("no local database to write to")
            self._pins.record_feedback(trace_id, span_id, thumb, note)
        except Exception as exc:
            self.post_message(FeedbackRecorded(f"Could not record the feedback: {exc}", error=True))
            return
        self.post_message(FeedbackRecorded(f"Recorded {'👍' if thumb > 0 else '👎'} on {what}" +
                                           (" with your note." if note else ".")))  # fmt: skip

    def on_feedback_recorded(self, message: FeedbackRecorded) -> None:
        self.notify(message.text, severity="error" if message.error else "information", markup=False, timeout=4)
        if not message.error:
            self.check_now()  # the lists and badges read it back

    def on_copy_ready(self, message: CopyReady) -> None:
        if not message.text:
            self.notify(message.note, severity="error", markup=False)
            return
        self.copy_to_clipboard(message.text)
        self.notify(message.note, markup=False, timeout=3)

    def action_stats(self) -> None:
        from tracetui.ui.screens.stats import StatsScreen

        if not isinstance(self.screen, StatsScreen):
            self.push_screen(StatsScreen(self.filter_text))

    def get_system_commands(self, screen):
        """The command palette lists every key's action on the current screen."""
        yield from super().get_system_commands(screen)
        seen: set[str] = set()
        for key, active in screen.active_bindings.items():
            binding = active.binding
            if binding.action in seen or not binding.description or binding.action.startswith("app.command"):
                continue
            seen.add(binding.action)
            yield SystemCommand(
                binding.description,
                f"{binding.tooltip or binding.description} (key: {binding.key_display or key})",
                partial(self.run_action, binding.action, active.node),
            )

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))


def run_app(
    open_reader: Callable[[], Reader],
    *,
    pins: PinBoard | None = None,
    receiver=None,
    listen: str | None = None,
    http: str | None = None,
    threshold: float = 0.5,
    route_attribute: str | None = None,
    command: str = "tracetui",
) -> None:
    """Run the UI over what ``open_reader`` opens until the user quits; ``command`` is how hints spell tracetui."""
    reader = open_reader()
    try:
        app = TraceTuiApp(
            reader,
            open_reader=open_reader,
            pins=pins,
            listen=listen,
            receiver_alive=receiver.alive if receiver else None,
            threshold=threshold,
        )
        app.http = http
        app.command = command
        app.route_attribute = route_attribute
        app.run()
    finally:
        reader.close()

"""The one-line header: where the receiver listens, how much has arrived, how fast."""

from __future__ import annotations

import time
from collections import deque

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from tracetui.model.fmt import fmt_bytes, fmt_cost, fmt_count, safe_text
from tracetui.model.views import Counters
from tracetui.ui.lifecycle import unwatch_app

#: A receiver whose heartbeat is older than this is shown as not running.
STALE_HEARTBEAT_S = 10.0
RATE_WINDOW_S = 5.0


class StatusHeader(Widget):
    DEFAULT_CSS = """
    StatusHeader {
        height: 1;
        background: $panel;
        color: $foreground;
    }
    """

    title: reactive[str] = reactive("")

    def __init__(self, listen: str | None = None, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.listen = listen
        self.counters: Counters | None = None
        self.receiver_alive: bool | None = None
        self._samples: deque[tuple[float, int]] = deque()
        #: Counters when the UI started: the header shows what arrived since.
        self._baseline: Counters | None = None

    def on_mount(self) -> None:
        # Every screen has its own header; each follows the app's counters itself.
        self.watch(self.app, "counters", self._counters_changed, init=True)

    def on_unmount(self) -> None:
        unwatch_app(self)  # else the app's watcher lists keep a closed screen's header alive

    def _counters_changed(self, update) -> None:
        if update is not None:
            self.update_counters(update.counters, update.receiver_alive, update.at_monotonic)

    def update_counters(self, counters: Counters, receiver_alive: bool | None, at: float) -> None:
        self.counters = counters
        if self._baseline is None:
            self._baseline = getattr(self.app, "baseline_counters", None) or counters
        self.receiver_alive = receiver_alive
        self._samples.append((at, counters.span_count))
        while len(self._samples) > 2 and at - self._samples[0][0] > RATE_WINDOW_S:
            self._samples.popleft()
        self.refresh()

    @property
    def spans_per_second(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        return max(0.0, (n1 - n0) / (t1 - t0)) if t1 > t0 else 0.0

    def receiver_state(self) -> tuple[str, str]:
        """(label, style) describing the receiver."""
        status = (self.counters.receiver if self.counters else None) or {}
        if self.counters is not None and self.counters.source:  # another system writes (the Collector)
            return f"◆ {self.counters.source}", "bold cyan"
        address = self.listen or status.get("grpc")
        if self.receiver_alive is False:
            return "✗ receiver stopped", "bold red"
        problem = self.counters.store_problem if self.counters else None
        # Said by the receiver beside the database, which it cannot write (tracetui.store.health).
        if problem and problem.get("problem") == "disk full":
            return "✗ disk full: exports are refused (retryable) until space is freed", "bold red"
        if problem and problem.get("problem") == "file size limit":
            return "✗ the database reached the file size limit (ulimit -f): exports are refused (retryable)", "bold red"
        beat = status.get("heartbeat_ns")
        silent_s = time.time() - beat / 1e9 if beat else None
        # `tracetui view` (receiver_alive is None): judge from what the receiver wrote into the file.
        if self.receiver_alive is None and (
            not (status.get("state") in ("listening", "overloaded") and silent_s is not None)
            or silent_s > STALE_HEARTBEAT_S
        ):
            return "○ no receiver writing", "dim"
        http = getattr(self.app, "http", None) or status.get("http")
        where = f"{address} grpc" + (f"  :{http.rsplit(':', 1)[-1]} http" if http else "")
        live = status.get("state") in ("listening", "overloaded")
        if live and silent_s is not None and silent_s > STALE_HEARTBEAT_S:
            # Our receiver runs but its heartbeat has not reached the file: every write fails.
            return f"◐ {where} (cannot write the database for {silent_s:.0f}s: locked or disk full?)", "bold red"
        if status.get("state") == "overloaded":
            return f"◐ {where} (busy: exporters asked to retry)", "bold yellow"
        return f"● {where}" if address else "● receiving", "bold green"

    def render(self) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(" tracetui ", style="bold")
        label, style = self.receiver_state()
        text.append(safe_text(label), style=style)
        if self.title:
            text.append("  " + safe_text(self.title, 40), style="bold")
        if self.counters is not None:
            c = self.counters
            text.append(f"   {c.span_count:,} spans", style="bold")
            text.append(f"  {self.spans_per_second:,.0f}/s")
            text.append(f"   {c.trace_count:,} traces")
            # Narrow terminals (80 columns) leave out a section whole rather than cut it mid-phrase.
            width = self.size.width or None
            # Retention at work: evicted traces were removed on purpose, not lost.
            evicted = Text(f"  evicted {fmt_count(c.evicted_traces)} traces" if c.evicted_traces else "", style="dim")
            # The full-text index lags during a burst (tracetui.jobs.indexer); a batch or so behind is normal.
            lag = c.index_behind or 0
            behind = Text(f"  indexing {fmt_count(lag)}{'+' if lag >= 100_000 else ''} behind" if lag >= 1_000 else "",
                          style="yellow")  # fmt: skip
            # An upgraded database's Stats rollup being filled (tracetui.jobs.rollup); Stats scans meanwhile.
            backfill = Text("" if c.stats_backfill is None else f"  stats: backfilling {c.stats_backfill:.0%}",
                            style="yellow")  # fmt: skip
            sections = (
                judge_section(c.judge),
                judge_waiting(c.judge),
                behind,
                backfill,
                self._since_start(c),
                Text(f"   db {fmt_bytes(c.db_bytes)}", style="dim"),
                evicted,
            )
            for section in sections:
                if width is None or text.cell_len + section.cell_len <= width:
                    text.append_text(section)
        return text

    def _since_start(self, c: Counters) -> Text:
        """What arrived since the UI started: "   since start: $0.0133  8.5k tok  4 LLM calls"."""
        base = self._baseline or c
        calls, tokens = c.llm_calls - base.llm_calls, c.tokens - base.tokens
        cost = c.cost_usd - base.cost_usd
        text = Text("   since start: ", style="dim")
        if c.costed:
            text.append(fmt_cost(max(0.0, cost)) if calls else "$0", style="bold")
            text.append("  ")
        text.append(f"{fmt_count(max(0, tokens))} tok  {max(0, calls):,} LLM calls")
        return text


#: A judge whose last state is older than this is shown as not running.
STALE_JUDGE_S = 30.0


def judge_section(judge: dict | None) -> Text:
    """The groundedness judge's state: "   judge: judging, 3 behind, 12 judged" (empty when none runs)."""
    if not judge:
        return Text("")
    beat = judge.get("heartbeat_ns")
    if not isinstance(beat, int) or time.time() - beat / 1e9 > STALE_JUDGE_S:
        return Text("   judge stopped", style="dim")
    state = str(judge.get("state", ""))
    style = "bold red" if state == "endpoint down" else "bold yellow" if judge.get("behind") else "green"
    text = Text("   judge: ", style="dim")
    text.append(safe_text(state, 30), style=style)
    if state == "paused for budget" and judge.get("budget"):
        text.append(f" ({safe_text(str(judge['budget']), 30)})")
    if judge.get("behind"):
        text.append(f", {fmt_count(int(judge['behind']))} behind")
    text.append(f", {fmt_count(int(judge.get('judged') or 0))} judged")
    if judge.get("retrying"):
        text.append(f", {fmt_count(int(judge['retrying']))} retrying", style="yellow")
    return text


def judge_waiting(judge: dict | None) -> Text:
    """The section ", 3 waiting for context": calls whose run may still bring their context (a section of its own, left out
    before the judge's state when the header is narrow)."""
    waiting = (judge or {}).get("waiting")
    if not waiting or not judge_section(judge).plain.startswith("   judge:"):
        return Text("")
    return Text(f", {fmt_count(int(waiting))} waiting for context", style="dim")

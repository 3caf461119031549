"""Render the README screenshots from demo data: `make screenshots`.

Runs the real pipeline: a headless receiver on a free port, `tracetui demo`
traffic through the OpenTelemetry SDK, then the real app (headless) over the
resulting database, saving SVGs into screenshots/.
"""

from __future__ import annotations

import asyncio
import io
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tracetui.cli.demo import run_demo  # noqa: E402
from tracetui.ingest.receiver import ReceiverProcess  # noqa: E402
from tracetui.model.config import ReceiverSettings  # noqa: E402
from tracetui.model.views import Counters  # noqa: E402
from tracetui.store.reader import SqliteReader  # noqa: E402
from tracetui.ui.app import TraceTuiApp  # noqa: E402
from tracetui.ui.messages import CountersUpdated  # noqa: E402

OUT = ROOT / "screenshots"
SIZE = (120, 34)


def fill_database(db: Path, runs: int = 40) -> None:
    receiver = ReceiverProcess(ReceiverSettings(db_path=db, grpc_port=0))
    ready = receiver.start()
    try:
        run_demo(endpoint=f"http://{ready.grpc}", count=runs, interval=0, seed=42, out=io.StringIO())
    finally:
        receiver.stop()


async def render(db: Path, listen: str) -> None:
    app = TraceTuiApp(SqliteReader(db), listen=listen, poll_interval=None)
    async with app.run_test(size=SIZE) as pilot:

        async def settle() -> None:
            for _ in range(3):
                await app.workers.wait_for_complete()
                await pilot.pause()

        # The receiver has stopped by now; show the header as it looked while live,
        # counting everything the demo sent as "since start".
        app.baseline_counters = Counters(span_count=0, trace_count=0, receiver=None, db_bytes=0)
        app.post_message(CountersUpdated(app.reader.counters(), True, time.monotonic()))
        await settle()
        app.save_screenshot("trace-list.svg", str(OUT))
        # Open the run with a fallback or an error if there is one: the interesting story.
        table = app.screen.query_one("#traces")
        target = next(
            (i for i in range(table.row_count) if table.row_at(i) and table.row_at(i).error_count),
            0,
        )
        for _ in range(target):
            await pilot.press("down")
        await pilot.press("enter")
        await settle()
        waterfall = app.screen.query_one("#waterfall")
        llm_rows = [i for i, line in enumerate(waterfall.lines) if line.span.llm_kind == "llm" and line.span.ttft_ns]
        if llm_rows:
            waterfall.cursor_row = llm_rows[-1]
            await settle()
        app.save_screenshot("trace-view.svg", str(OUT))

        # The run diff: that run marked (A), another run of the same name (B), d.
        await pilot.press("escape")
        await settle()
        table = app.screen.query_one("#traces")
        marked = table.row_at(table.cursor_row)
        await pilot.press("space")
        other = next(
            (i for i in range(table.row_count)
             if table.row_at(i).root_name == marked.root_name and table.row_at(i).trace_id != marked.trace_id),
            None,
        )  # fmt: skip
        if other is not None:
            table.cursor_row = other
            await pilot.press("d")
            await settle()
            app.clear_notifications()
            await settle()
            app.save_screenshot("run-diff.svg", str(OUT))
            await pilot.press("escape")
            await settle()

        # Compare: the stats screen, the two busiest models marked, C.
        await pilot.press("S")
        await settle()
        stats = app.screen.query_one("#stats-table")
        for row in (0, 1):
            stats.move_cursor(row=row)
            await pilot.press("space")
        await pilot.press("C")
        await settle()
        app.clear_notifications()
        await settle()
        app.save_screenshot("compare.svg", str(OUT))

        # Sessions: back to the list, v (the demo's runs come in conversations of 2 to 4).
        while len(app.screen_stack) > 2:
            app.pop_screen()
            await settle()
        await pilot.press("v")
        await settle()
        app.save_screenshot("sessions.svg", str(OUT))


def main() -> None:
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "demo.db"
        fill_database(db)
        asyncio.run(render(db, "127.0.0.1:4317"))  # the address a user would see
    print(f"wrote trace-list.svg, trace-view.svg, run-diff.svg, compare.svg and sessions.svg into {OUT}")


if __name__ == "__main__":
    main()

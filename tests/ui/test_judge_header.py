"""The header shows the groundedness judge's state, as `serve --judge` (its own process) wrote it into the file."""

from __future__ import annotations

import signal

from helpers import start_receiver, tid, wait_until

from tests.jobs.test_judge import fake_judge, results, run_request, send  # noqa: F401  (fake_judge: a fixture)
from tests.ui.test_status_header import header_text
from tracetui.store.reader import SqliteReader


def _judge_state(db) -> dict | None:
    reader = SqliteReader(db)
    try:
        return reader.counters().judge
    finally:
        reader.close()


async def test_the_header_shows_the_judge_judging_and_its_results(tmp_path):
    receiver = start_receiver(tmp_path / "j.db", "--judge", "lexical", cwd=tmp_path)
    try:
        send(receiver, run_request(1, "Refunds are possible within 30 days of purchase."))
        assert wait_until(lambda: tid(1) in results(receiver.db_path), timeout=30), receiver.stderr
        assert wait_until(lambda: (_judge_state(receiver.db_path) or {}).get("judged"), timeout=30)
        shown = await header_text(receiver.db_path, lambda: True, width=250)
        assert "judge: " in shown and "1 judged" in shown
    finally:
        assert receiver.stop(signal.SIGTERM) == 0, receiver.stderr


async def test_the_header_says_the_judge_endpoint_is_down(tmp_path):
    receiver = start_receiver(tmp_path / "j.db", "--judge", "http://127.0.0.1:9/v1", "--judge-model", "m", cwd=tmp_path)
    try:
        send(receiver, run_request(1, "Refunds are possible within 30 days of purchase."))
        assert wait_until(lambda: (_judge_state(receiver.db_path) or {}).get("state") == "endpoint down", timeout=30)
        shown = await header_text(receiver.db_path, lambda: True, width=250)
        assert "judge: endpoint down" in shown
        assert results(receiver.db_path) == {}  # nothing recorded, never a 0
    finally:
        assert receiver.stop(signal.SIGTERM) == 0, receiver.stderr


async def test_the_header_says_the_judge_is_paused_for_budget(tmp_path, fake_judge):  # noqa: F811
    receiver = start_receiver(tmp_path / "j.db", "--judge", fake_judge, "--judge-model", "fake-7b",
                              "--judge-budget", "50", "--judge-rate", "0", "--judge-concurrency", "1",
                              cwd=tmp_path)  # fmt: skip
    try:
        send(receiver, *(run_request(n, "Refunds are possible within 30 days.") for n in (1, 2)))
        paused = lambda: (_judge_state(receiver.db_path) or {}).get("state") == "paused for budget"  # noqa: E731
        assert wait_until(paused, timeout=30), receiver.stderr
        shown = await header_text(receiver.db_path, lambda: True, width=250)
        assert "judge: paused for budget (50 tokens/h)" in shown
        assert len(results(receiver.db_path)) == 1  # one call spent the budget; the other waits, no score
    finally:
        assert receiver.stop(signal.SIGTERM) == 0, receiver.stderr


async def test_the_header_counts_the_calls_waiting_to_retry(tmp_path, fake_judge):  # noqa: F811
    receiver = start_receiver(tmp_path / "j.db", "--judge", fake_judge, "--judge-model", "fake-7b",
                              "--judge-timeout", "0.3", "--judge-rate", "0", cwd=tmp_path)  # fmt: skip
    try:
        send(receiver, run_request(1, "a slow answer"))
        assert wait_until(lambda: (_judge_state(receiver.db_path) or {}).get("retrying") == 1, timeout=30)
        shown = await header_text(receiver.db_path, lambda: True, width=250)
        assert "1 retrying" in shown
        assert results(receiver.db_path) == {}
    finally:
        assert receiver.stop(signal.SIGTERM) == 0, receiver.stderr

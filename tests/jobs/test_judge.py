"""`tracetui judge` over spans the real receiver stored: lexical estimate, a fake OpenAI-compatible judge, failures.

The fake judge is an http.server on 127.0.0.1:0 answering /v1/chat/completions with deterministic
verdicts chosen by a word in the answer it is asked about (including broken ones).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import channel_to, exporter_stub, make_request, make_span, query_ro, receiver_env, sid, tid, wait_until

DOCS = json.dumps([{"id": "kb-1", "content": "Refunds are possible within 30 days of purchase."}])


def _messages(text: str) -> str:
    return json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": text}]}])


def run_request(n: int, answer: str, with_docs: bool = True, docs: str = DOCS, only: tuple[int, ...] = (1, 2, 3)):
    chat = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.system": "openai",
            "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5,
            "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "Refund?"}]}]),
            "gen_ai.output.messages": _messages(answer)}  # fmt: skip
    spans = [make_span(tid(n), sid(1), None, name="invoke_agent support", start=0, duration=100)] if 1 in only else []
    if with_docs and 2 in only:
        spans.append(make_span(tid(n), sid(2), sid(1), name="retrieval kb", start=1, duration=5, attributes={
            "gen_ai.operation.name": "retrieval", "gen_ai.retrieval.documents": docs}))  # fmt: skip
    if 3 in only:
        spans.append(make_span(tid(n), sid(3), sid(1), name="chat gpt-4o", start=10, duration=50, attributes=chat))
    return make_request(spans).SerializeToString()


def send(receiver, *payloads: bytes) -> None:
    with channel_to(receiver.port) as channel:
        for payload in payloads:
            exporter_stub(channel)(payload, timeout=20)


def judge_cli(db: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tracetui", "judge", "--db", str(db), *args],
                          capture_output=True, text=True, env=receiver_env(), timeout=60)  # fmt: skip


def results(db: Path) -> dict[bytes, tuple]:
    rows = query_ro(db, "SELECT trace_id, score, label, explanation, source FROM evaluations WHERE name='groundedness'")
    return {row[0]: row[1:] for row in rows}


def test_lexical_estimate_through_the_receiver_once_per_call(receiver):
    send(receiver, run_request(1, "Refunds are possible within 30 days of purchase."),
         run_request(2, "Refunds are possible within 45 days."), run_request(3, "Hi there, refunds!", with_docs=False))  # fmt: skip
    done = judge_cli(receiver.db_path)
    assert done.returncode == 0, done.stderr
    found = results(receiver.db_path)
    assert found[tid(1)][0] == 1.0 and found[tid(1)][1] == "estimate"
    assert found[tid(1)][3] == "tracetui judge (lexical estimate)"
    assert found[tid(2)][0] < 0.7 and "45" in found[tid(2)][2]
    assert found[tid(3)][0] is None and found[tid(3)][1] == "not judged: no context"
    again = judge_cli(receiver.db_path)
    assert again.returncode == 0 and "0 calls judged, 0 not judged" in again.stderr
    assert len(query_ro(receiver.db_path, "SELECT * FROM evaluations")) == 3


class FakeJudge(BaseHTTPRequestHandler):
    """Verdicts by a word in the answer: 'broken' -> non-JSON, 'refuse' -> a refusal, 'slow' -> no answer
    within 2 s, 'patient' -> a verdict after 0.5 s (counting the requests in flight), else claim-level JSON."""

    in_flight = 0
    most_in_flight = 0
    counting = threading.Lock()
    #: Every request body received, as text.
    received: list[str] = []

    def do_POST(self) -> None:  # noqa: N802
        raw = self.rfile.read(int(self.headers["content-length"]))
        FakeJudge.received.append(raw.decode())
        body = json.loads(raw)
        answer = body["messages"][-1]["content"].rsplit("ANSWER:\n", 1)[-1]
        if "patient" in answer:
            self._count(+1)
            time.sleep(0.5)
            self._count(-1)
        if "slow" in answer:
            time.sleep(2)  # past the tests' short --judge-timeout: no answer
            return
        if "broken" in answer:
            content = "I think it is fine."
        elif "refuse" in answer:
            content = "I'm sorry, I can't help with that."
        else:
            content = json.dumps({"claims": [{"claim": answer, "verdict": "supported", "reason": "kb-1"},
                                             {"claim": "extra", "verdict": "unsupported", "reason": "absent"}]})  # fmt: skip
        out = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                          "usage": {"prompt_tokens": 50, "completion_tokens": 20}}).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    @classmethod
    def _count(cls, step: int) -> None:
        with cls.counting:
            cls.in_flight += step
            cls.most_in_flight = max(cls.most_in_flight, cls.in_flight)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def fake_judge():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_model_judge_scores_claims_and_never_records_a_broken_verdict(receiver, fake_judge):
    send(receiver, run_request(1, "Refunds are possible within 30 days."), run_request(2, "broken answer"),
         run_request(3, "please refuse"))  # fmt: skip
    done = judge_cli(receiver.db_path, "--judge", fake_judge, "--judge-model", "fake-7b")
    assert done.returncode == 0, done.stderr
    found = results(receiver.db_path)
    assert found[tid(1)][0] == 0.5 and found[tid(1)][3] == "tracetui judge (fake-7b)"
    assert "1 of 2 claims supported" in found[tid(1)][2]
    assert tid(2) not in found and tid(3) not in found  # nothing recorded, never a 0
    assert "non-JSON verdict" in done.stderr and "refused" in done.stderr


def test_endpoint_down_is_said_and_nothing_recorded(receiver):
    send(receiver, run_request(1, "Refunds are possible within 30 days."))
    done = judge_cli(receiver.db_path, "--judge", "http://127.0.0.1:9/v1", "--judge-model", "m")
    assert "endpoint down" in done.stderr and "stopped: the endpoint" in done.stderr
    assert results(receiver.db_path) == {}


def test_a_remote_url_needs_allow_remote():
    done = subprocess.run([sys.executable, "-m", "tracetui", "judge", "--judge", "https://api.example.com/v1",
                           "--judge-model", "m"], capture_output=True, text=True, env=receiver_env(), timeout=60)  # fmt: skip
    assert done.returncode != 0 and "--judge-allow-remote" in done.stderr


def test_the_estimate_is_labelled_on_the_list_badge_and_a_judged_score_wins(receiver, fake_judge):
    from tracetui.store.reader import SqliteReader
    from tracetui.ui.widgets.trace_table import COLUMNS, cell_text

    send(receiver, run_request(1, "Refunds are possible within 30 days of purchase."))
    assert judge_cli(receiver.db_path).returncode == 0
    grounded = next(c for c in COLUMNS if c.key == "grounded")
    reader = SqliteReader(receiver.db_path)
    try:
        (row,) = reader.traces()
        assert row.groundedness == 1.0 and row.groundedness_estimated
        assert "≈1.00" in cell_text(grounded, row)
        assert judge_cli(receiver.db_path, "--judge", fake_judge, "--judge-model", "fake-7b").returncode == 0
        (row,) = reader.traces()
        assert row.groundedness == 0.5 and not row.groundedness_estimated  # the model's verdict, not the estimate
        assert "≈" not in cell_text(grounded, row)
        # Stats and compare average the model's score alone, not the model's and the estimate's (0.75).
        assert reader.groundedness_scores() == {(tid(1), sid(3)): [0.5]}
    finally:
        reader.close()


def test_serve_judge_runs_as_its_own_process_and_judges_new_calls(start_rcv):
    receiver = start_rcv("--judge", "lexical")
    send(receiver, run_request(1, "Refunds are possible within 30 days of purchase."))
    assert wait_until(lambda: tid(1) in results(receiver.db_path), timeout=30), receiver.stderr
    assert results(receiver.db_path)[tid(1)][3] == "tracetui judge (lexical estimate)"
    jobs = subprocess.run(["ps", "-o", "args=", "--ppid", str(receiver.proc.pid)], capture_output=True, text=True)
    assert " job judge " in jobs.stdout
    send(receiver, run_request(2, "Refunds are possible within 45 days."))  # a new call, judged while serving
    assert wait_until(lambda: tid(2) in results(receiver.db_path), timeout=30), receiver.stderr


def test_sampling_judges_the_same_share_on_every_run(receiver):
    send(receiver, *(run_request(n, "Refunds are possible within 30 days of purchase.") for n in range(1, 41)))
    assert judge_cli(receiver.db_path, "--judge-sample", "0").returncode == 0
    assert results(receiver.db_path) == {}
    assert judge_cli(receiver.db_path, "--judge-sample", "0.5").returncode == 0
    first = set(results(receiver.db_path))
    assert 5 < len(first) < 35
    assert judge_cli(receiver.db_path, "--judge-sample", "0.5").returncode == 0
    assert set(results(receiver.db_path)) == first  # the same calls: nothing new on a rerun


def _judge_state(db: Path) -> dict:
    rows = query_ro(db, "SELECT value FROM meta WHERE key = 'judge'")
    return json.loads(rows[0][0]) if rows else {}


def _passes_after_now(db: Path, n: int = 2, timeout: float = 30) -> bool:
    """Wait until the judge beside `serve` has published ``n`` states after this moment (so a whole pass ran)."""
    seen: set[int] = set()
    since = time.time_ns()

    def enough() -> bool:
        beat = _judge_state(db).get("heartbeat_ns", 0)
        if beat > since:
            seen.add(beat)
        return len(seen) >= n

    return wait_until(enough, timeout=timeout, interval=0.1)


def test_serve_passes_the_limits_to_its_judge(start_rcv, fake_judge):
    receiver = start_rcv("--judge", fake_judge, "--judge-model", "fake-7b", "--judge-sample", "0",
                         "--judge-rate", "600", "--judge-timeout", "5")  # fmt: skip
    send(receiver, run_request(1, "Refunds are possible within 30 days of purchase."))
    assert _passes_after_now(receiver.db_path), receiver.stderr
    assert results(receiver.db_path) == {}  # sampled out: never sent to the judge
    state = _judge_state(receiver.db_path)
    assert state["state"] == "idle" and state["behind"] == 0
    jobs = subprocess.run(
        ["ps", "-ww", "-o", "args=", "--ppid", str(receiver.proc.pid)], capture_output=True, text=True
    )
    assert "--judge-rate 600" in jobs.stdout and "--judge-timeout 5" in jobs.stdout


def test_a_token_budget_pauses_the_judge_and_nothing_is_recorded_for_the_rest(receiver, fake_judge):
    send(receiver, *(run_request(n, "Refunds are possible within 30 days.") for n in (1, 2, 3)))
    # The fake judge reports 70 tokens a call: the second call reaches the budget of 100.
    done = judge_cli(receiver.db_path, "--judge", fake_judge, "--judge-model", "fake-7b", "--judge-budget", "100",
                     "--judge-concurrency", "1")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(results(receiver.db_path)) == 2
    assert "paused for budget (100 tokens/h)" in done.stderr


def test_a_dollar_budget_is_priced_and_needs_a_price(receiver, fake_judge):
    send(receiver, *(run_request(n, "Refunds are possible within 30 days.") for n in (1, 2)))
    unpriced = judge_cli(receiver.db_path, "--judge", fake_judge, "--judge-model", "fake-7b", "--judge-budget", "$1")
    assert unpriced.returncode != 0 and "no price for 'fake-7b'" in unpriced.stderr
    assert "in tokens" in unpriced.stderr
    done = judge_cli(receiver.db_path, "--judge", fake_judge, "--judge-model", "gpt-4o-mini",
                     "--judge-budget", "$0.000001", "--judge-concurrency", "1")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(results(receiver.db_path)) == 1 and "paused for budget ($1e-06/h)" in done.stderr


def test_serve_judge_retries_a_timed_out_call_with_backoff_and_records_no_score(start_rcv, fake_judge):
    receiver = start_rcv("--judge", fake_judge, "--judge-model", "fake-7b", "--judge-timeout", "0.3",
                         "--judge-rate", "0")  # fmt: skip
    send(receiver, run_request(1, "a slow answer"), run_request(2, "Refunds are possible within 30 days."))
    retrying = lambda: _judge_state(receiver.db_path).get("retrying") == 1  # noqa: E731
    assert wait_until(retrying, timeout=30), receiver.stderr
    assert wait_until(lambda: tid(2) in results(receiver.db_path), timeout=30)
    assert "timeout" in _judge_state(receiver.db_path)["last_failure"]
    assert _passes_after_now(receiver.db_path, n=3)  # it keeps trying (with backoff): never a score
    assert tid(1) not in results(receiver.db_path) and _judge_state(receiver.db_path)["retrying"] == 1
    status = subprocess.run([sys.executable, "-m", "tracetui", "status", "--json", "--db", str(receiver.db_path)],
                            capture_output=True, text=True, env=receiver_env(), timeout=60)  # fmt: skip
    assert json.loads(status.stdout)["judge"]["retrying"] == 1, status.stderr


@pytest.mark.parametrize("concurrency", [1, 3])
def test_concurrency_is_the_number_of_calls_in_flight(receiver, fake_judge, concurrency):
    send(receiver, *(run_request(n, "A patient answer: refunds within 30 days.") for n in range(1, 7)))
    FakeJudge.most_in_flight = 0
    done = judge_cli(receiver.db_path, "--judge", fake_judge, "--judge-model", "fake-7b", "--judge-rate", "0",
                     "--judge-concurrency", str(concurrency))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert FakeJudge.most_in_flight == concurrency
    assert len(results(receiver.db_path)) == 6 and "6 calls judged" in done.stderr


SECRET_EMAIL, SECRET_KEY = "alice.smith@example.com", "sk-live0123456789abcdefXYZ"


def test_with_redact_the_judge_model_never_receives_a_redacted_pattern(start_rcv, fake_judge):
    receiver = start_rcv("--judge", fake_judge, "--judge-model", "fake-7b", "--judge-rate", "0",
                         "--redact", "emails", "--redact", "keys")  # fmt: skip
    docs = json.dumps([{"id": "kb-1", "content": f"Refunds within 30 days. Contact {SECRET_EMAIL}, key {SECRET_KEY}."}])
    FakeJudge.received.clear()
    send(receiver, run_request(1, f"Write to {SECRET_EMAIL} for refunds within 30 days.", docs=docs))
    assert wait_until(lambda: tid(1) in results(receiver.db_path), timeout=30), receiver.stderr
    assert FakeJudge.received and all(SECRET_EMAIL not in b and SECRET_KEY not in b for b in FakeJudge.received)
    assert "[redacted]" in FakeJudge.received[0] and "30 days" in FakeJudge.received[0]
    assert SECRET_EMAIL not in results(receiver.db_path)[tid(1)][2]  # nor in the stored explanation


def test_no_content_refuses_a_model_judge_before_anything_starts(tmp_path, fake_judge):
    done = subprocess.run([sys.executable, "-m", "tracetui", "serve", "--headless", "--db", str(tmp_path / "x.db"),
                           "--no-content", "--judge", fake_judge, "--judge-model", "fake-7b"],
                          capture_output=True, text=True, env=receiver_env(), timeout=60)  # fmt: skip
    assert done.returncode != 0 and "content is kept out (--no-content)" in done.stderr
    assert "--judge lexical" in done.stderr and "listening" not in done.stderr


def test_no_content_the_estimate_quotes_nothing_and_the_recorded_policy_holds(start_rcv, fake_judge):
    receiver = start_rcv("--judge", "lexical", "--no-content")
    send(receiver, run_request(1, "Refunds are possible within 45 days."))
    assert wait_until(lambda: tid(1) in results(receiver.db_path), timeout=30), receiver.stderr
    score, label, explanation, _ = results(receiver.db_path)[tid(1)]
    assert score is not None and score < 0.7 and label == "estimate"
    assert "45" not in explanation and "Refunds" not in explanation and "not quoted" in explanation
    # `tracetui judge` over this database follows the policy its receiver recorded: no model reads it.
    assert wait_until(lambda: query_ro(receiver.db_path, "SELECT 1 FROM meta WHERE key = 'content_policy'"))
    done = judge_cli(receiver.db_path, "--judge", fake_judge, "--judge-model", "fake-7b")
    assert done.returncode != 0 and "--no-content" in done.stderr


def test_a_budget_is_not_passed_by_the_calls_in_flight(receiver, fake_judge):
    send(receiver, *(run_request(n, "A patient answer: refunds within 30 days.") for n in range(1, 7)))
    FakeJudge.most_in_flight = 0
    # 70 tokens a call, a budget of 100, 3 calls allowed in flight: each call reserves its estimate first,
    # so the second starts only once the first has settled, and nothing starts after the budget is spent.
    done = judge_cli(receiver.db_path, "--judge", fake_judge, "--judge-model", "fake-7b", "--judge-rate", "0",
                     "--judge-budget", "100", "--judge-concurrency", "3")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(results(receiver.db_path)) == 2 and FakeJudge.most_in_flight == 1
    assert "paused for budget (100 tokens/h)" in done.stderr


def test_a_call_waits_for_context_that_arrives_after_it(start_rcv):
    receiver = start_rcv("--judge", "lexical")
    send(receiver, run_request(1, "Refunds are possible within 30 days of purchase.", only=(1, 3)))
    assert _passes_after_now(receiver.db_path), receiver.stderr
    assert tid(1) not in results(receiver.db_path) and _judge_state(receiver.db_path)["waiting"] == 1
    send(receiver, run_request(1, "", only=(2,)))  # the run's retrieval, in a later export
    assert wait_until(lambda: tid(1) in results(receiver.db_path), timeout=30), receiver.stderr
    assert results(receiver.db_path)[tid(1)][0] == 1.0  # judged against it, not "not judged: no context"


def _job(db: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tracetui", "job", "judge", "--db", str(db), *args],
                            env=receiver_env(), stderr=subprocess.DEVNULL)  # fmt: skip


def _kill(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(10)


def test_the_budget_spent_survives_a_killed_judge(receiver, fake_judge):
    args = ("--judge", fake_judge, "--judge-model", "fake-7b", "--judge-budget", "100", "--judge-rate", "0")
    send(receiver, *(run_request(n, "Refunds are possible within 30 days.") for n in (1, 2, 3)))
    job = _job(receiver.db_path, *args)
    try:
        paused = lambda: _judge_state(receiver.db_path).get("state") == "paused for budget"  # noqa: E731
        assert wait_until(paused, timeout=30)
        assert len(results(receiver.db_path)) == 2
    finally:
        _kill(job)
    job = _job(receiver.db_path, *args)  # a new process, the same hour
    try:
        assert _passes_after_now(receiver.db_path)
        assert _judge_state(receiver.db_path)["state"] == "paused for budget"
        assert len(results(receiver.db_path)) == 2  # it did not start a new hour of spending
    finally:
        _kill(job)


def _failures(db: Path) -> int:
    rows = query_ro(db, "SELECT value FROM meta WHERE key = 'judge_progress'")
    retries = json.loads(rows[0][0])["retries"] if rows else []
    return retries[0][1] if retries else 0


def test_the_retries_and_their_backoff_survive_a_killed_judge(receiver, fake_judge):
    args = ("--judge", fake_judge, "--judge-model", "fake-7b", "--judge-timeout", "0.3", "--judge-rate", "0")
    send(receiver, run_request(1, "a slow answer"))
    job = _job(receiver.db_path, *args)
    try:
        assert wait_until(lambda: _failures(receiver.db_path) >= 2, timeout=30)
    finally:
        _kill(job)
    before = _failures(receiver.db_path)
    job = _job(receiver.db_path, *args)
    try:
        assert _passes_after_now(receiver.db_path, n=1)
        assert _judge_state(receiver.db_path)["retrying"] == 1
        assert wait_until(lambda: _failures(receiver.db_path) > before, timeout=60)
        assert _failures(receiver.db_path) == before + 1  # the backoff goes on where it was, not from 2 s
        assert tid(1) not in results(receiver.db_path)
    finally:
        _kill(job)

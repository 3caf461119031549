"""Live: the real `openai` SDK with the official instrumentation, through `tracetui serve --headless`.

The app (a subprocess) uses ``openai`` with ``opentelemetry-instrumentation-openai-v2`` and
``opentelemetry-instrumentation-httpx`` (HTTPX2ClientInstrumentor: openai 3.x sends through
``httpx2``), exporting over OTLP/gRPC to a real receiver process. It talks to a fake
OpenAI-compatible server started here: the first request for ``gpt-4.1-mini`` gets HTTP 429
with ``retry-after: 0.2``, and the SDK's own retry (``max_retries``) succeeds; answers stream
as server-sent events. Ground truth is the fake server's own request log. tracetui must find
the retry (≈ 0.2 s, "2 HTTP attempts, first 429") and say the first token was not reported.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import receiver_env, start_receiver, wait_until

from tracetui.query.export import span_json
from tracetui.store.reader import SqliteReader

RETRIED_MODEL = "gpt-4.1-mini"
FIRST_TOKEN_S = 0.05
WORDS = ["Your", " card", " was", " charged", " once", "."]


class FakeOpenAI(BaseHTTPRequestHandler):
    """POST /v1/chat/completions: a 429 on the first request for RETRIED_MODEL, else a streamed answer."""

    log: list[dict]  # set on the class by the fixture: (time, model, status) of every request

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        model = body.get("model")
        first = not any(r["model"] == model for r in self.log)
        status = 429 if model == RETRIED_MODEL and first else 200
        self.log.append({"t": time.time(), "model": model, "status": status})
        if status == 429:
            payload = json.dumps({"error": {"message": "rate limited", "type": "rate_limit_error"}}).encode()
            self.send_response(429)
            for name, value in (("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
                                ("retry-after", "0.2"), ("retry-after-ms", "200")):  # fmt: skip
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        time.sleep(FIRST_TOKEN_S)
        for i, word in enumerate(WORDS):
            chunk = {"id": "chatcmpl-live", "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": f"{model}-2025-04-14",
                     "choices": [{"index": 0, "delta": {"role": "assistant", "content": word} if i == 0
                                  else {"content": word}, "finish_reason": None}]}  # fmt: skip
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            time.sleep(0.005)
        last = {
            "id": "chatcmpl-live",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": f"{model}-2025-04-14",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
        self.wfile.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())
        self.wfile.flush()
        self.close_connection = True


#: The app: official instrumentation, defaults except the latest GenAI conventions (as the capture).
APP = textwrap.dedent(
    """
    import sys
    from openai import OpenAI
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "live-openai-v2"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=sys.argv[1], insecure=True)))
    trace.set_tracer_provider(provider)
    OpenAIInstrumentor().instrument()
    HTTPX2ClientInstrumentor().instrument()

    client = OpenAI(base_url=sys.argv[2], api_key="test-key")
    with trace.get_tracer("live-app").start_as_current_span("invoke_agent live"):
        stream = client.chat.completions.create(
            model=sys.argv[3], stream=True, messages=[{"role": "user", "content": "Was I charged twice?"}]
        )
        print("".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices))
    provider.shutdown()
    """
)


@pytest.fixture
def fake_openai():
    handler = type("Handler", (FakeOpenAI,), {"log": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler.log
    server.shutdown()
    server.server_close()


def test_sdk_retry_and_unreported_first_token_through_the_real_receiver(tmp_path: Path, fake_openai) -> None:
    url, server_log = fake_openai
    rcv = start_receiver(tmp_path / "live.db", cwd=tmp_path)
    try:
        env = receiver_env({"OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental"})
        app = subprocess.run(
            [sys.executable, "-c", APP, f"http://{rcv.host}:{rcv.port}", url, RETRIED_MODEL],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert app.returncode == 0, app.stderr
        assert app.stdout.strip() == "".join(WORDS)

        def stored() -> bool:
            reader = SqliteReader(rcv.db_path)
            try:
                return any(t.span_count >= 4 and t.llm_calls for t in reader.traces(0, -1))
            finally:
                reader.close()

        assert wait_until(stored, timeout=20), rcv.stderr
    finally:
        assert rcv.stop(signal.SIGTERM) == 0, rcv.stderr

    # ground truth: the fake server saw the 429, then the SDK's retry about 0.2 s later
    assert [r["status"] for r in server_log] == [429, 200]
    gap_ms = (server_log[1]["t"] - server_log[0]["t"]) * 1000
    assert 190 <= gap_ms < 1000

    # what `tracetui traces --json` / `spans --json` print, read from the receiver's database
    reader = SqliteReader(rcv.db_path)
    try:
        (row,) = reader.traces(0, -1)
        run, spans = row.to_json(), span_json(reader, row.trace_id)
    finally:
        reader.close()
    (call,) = [s for s in spans if s["kind"] == "llm"]
    attempts = [s for s in spans if s["parent_span_id"] == call["span_id"]]
    assert len(attempts) == 2, [s["name"] for s in spans]  # one POST per HTTP attempt, from httpx

    assert call["request_model"] == RETRIED_MODEL
    assert call["is_retry"] and not call["is_fallback"]
    assert call["retry_source"] == call["retry_note"] == "2 HTTP attempts, first 429"
    assert gap_ms * 0.9 <= call["retry_ms"] <= gap_ms + 100  # from the call's start to the retry's
    assert call["streaming"] is None and call["ttft_ms"] is None  # openai-v2 reports neither
    assert call["first_token_note"].startswith("first token not reported by ")
    assert run["retries"] == 1 and run["fallbacks"] == 0
    assert run["time_split_ms"]["retry"] == pytest.approx(call["retry_ms"], abs=1)

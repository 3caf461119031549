"""Files holding span data are owner-only whatever the umask; a JSON number too long to convert is a 400.

Against the real receiver: its database and companion files, `tracetui export -o`, and OTLP/HTTP.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import requests
from helpers import channel_to, exporter_stub, make_request, make_span, receiver_env, sid, start_receiver, tid

UNDER_UMASK_000 = (
    "import os, sys, runpy; os.umask(0); sys.argv = ['tracetui', *sys.argv[1:]]; "
    "runpy.run_module('tracetui', run_name='__main__')"
)


def _under_umask_000(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run tracetui with umask 000 (the most permissive a user can have)."""
    return subprocess.run(
        [sys.executable, "-c", UNDER_UMASK_000, *args],
        capture_output=True, text=True, env=receiver_env(), cwd=cwd, timeout=60, check=False,
    )  # fmt: skip


def test_every_file_with_span_data_is_owner_only_even_under_umask_000(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        receiver = start_receiver(tmp_path / "t.db", cwd=tmp_path)  # inherits umask 000
    finally:
        os.umask(old)
    try:
        with channel_to(receiver.port) as channel:
            span = make_span(tid(1), sid(1), name="secret prompt", attributes={"gen_ai.prompt": "my password is"})
            exporter_stub(channel)(make_request([span]).SerializeToString(), timeout=30)
    finally:
        assert receiver.stop(signal.SIGTERM) == 0
    written = {}
    for fmt in ("summary", "otlp-json"):
        out = tmp_path / f"export-{fmt}.txt"
        done = _under_umask_000(["export", tid(1).hex(), "--format", fmt, "-o", str(out), "--db", str(tmp_path / "t.db")],
                                tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr
        written[out.name] = out.read_text()
    assert "my password is" in written["export-otlp-json.txt"]
    files = [p for p in tmp_path.iterdir() if p.is_file()]
    assert {p.name for p in files} >= {"t.db", "t.db-lock", "t.db-health", "export-summary.txt", "export-otlp-json.txt"}
    for path in files:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == 0o600, f"{path.name} is {oct(mode)}"


def test_a_json_number_too_long_to_convert_is_a_400_naming_its_path(tmp_path: Path) -> None:
    receiver = start_receiver(tmp_path / "n.db", cwd=tmp_path)
    try:
        url = f"http://{receiver.http}"
        body = (
            '{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10",'
            '"spanId":"0102030405060708","name":"s","attributes":[{"key":"n","value":{"intValue":'
            + "7" * 5000
            + "}}]}]}]}]}"
        )
        answer = requests.post(url + "/v1/traces", data=body, headers={"Content-Type": "application/json"}, timeout=30)
        assert answer.status_code == 400, answer.text
        message = json.loads(answer.text)["message"]
        assert "resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value.intValue" in message
        assert "5,000 digits" in message and "Traceback" not in answer.text
        assert receiver.alive()
        ok = requests.post(url + "/v1/traces", data=body.replace("7" * 5000, "7"),
                           headers={"Content-Type": "application/json"}, timeout=30)  # fmt: skip
        assert ok.status_code == 200
    finally:
        assert receiver.stop(signal.SIGTERM) == 0
    assert all("Traceback" not in line for line in receiver.lines), receiver.stderr

"""A full disk says so: a retryable answer naming it, the header and `tracetui status` show it, few log lines,
and once space is freed the exporters' retries are stored with nothing acknowledged lost.

The disk is a small tmpfs mounted for the test (root only; skipped elsewhere),
filled up by a file beside the database while the real receiver runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from helpers import (
    EXPORT_METHOD,
    channel_to,
    integrity,
    make_request,
    make_span,
    receiver_env,
    sid,
    start_receiver,
    stored_counts,
    tid,
)

DISK_MB = 24


@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(path: Path) -> None:
    """Write ``path`` until the disk is full."""
    chunk = b"\0" * (64 * 1024)
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
        for size in (4096, 512, 1):  # the last partial blocks too
            try:
                while True:
                    f.write(chunk[:size])
            except OSError:
                pass


def _request(n: int) -> bytes:
    """200 spans in 20 traces of 10, each with a few KB of attributes (the disk fills quickly)."""
    spans = [make_span(tid(n * 100 + t), sid(k + 1), sid(1) if k else None, name=f"export {n} step {k}",
                       attributes={"gen_ai.prompt": "x" * 2000})
             for t in range(20) for k in range(10)]  # fmt: skip
    return make_request(spans).SerializeToString()


def _status(db: Path) -> subprocess.CompletedProcess:
    """``tracetui status --json`` on ``db``, as a user would run it beside the receiver."""
    return subprocess.run([sys.executable, "-m", "tracetui", "status", "--json", "--db", str(db)],
                          capture_output=True, text=True, env=receiver_env(), timeout=60, check=False)  # fmt: skip


def test_a_full_disk_is_named_shown_and_survived(small_disk: Path) -> None:
    from tests.ui.test_status_header import header_text

    def header(alive) -> str:  # the real app, its header as a user sees it
        return asyncio.run(header_text(db, alive))

    db = small_disk / "traces.db"
    receiver = start_receiver(db, cwd=small_disk.parent)
    channel = channel_to(receiver.port)
    export = channel.unary_unary(EXPORT_METHOD, request_serializer=None, response_deserializer=None)
    acked: list[int] = []
    refused: list[int] = []
    filler = small_disk / "filler"
    try:
        for n in range(3):
            export(_request(n), timeout=30)
            acked.append(n)
        _fill(filler)
        failures: list[grpc.RpcError] = []
        deadline = time.monotonic() + 3
        n = 3
        while time.monotonic() < deadline:  # an exporter sending, then retrying its refused batch, for a few seconds
            try:
                export(_request(n), timeout=30)
                acked.append(n)
                n += 1
            except grpc.RpcError as exc:
                failures.append(exc)
                refused = [n]
                time.sleep(0.01)
        assert failures, "the full disk never refused an export"
        first = failures[0]
        # Retryable, and saying what is wrong: not "cannot rollback - no transaction is active".
        assert first.code() == grpc.StatusCode.UNAVAILABLE, first
        assert "full" in first.details() and "disk" in first.details(), first.details()
        assert "rollback" not in first.details()

        status = _status(db)
        assert status.returncode == 0, status.stderr
        problem = json.loads(status.stdout)["store_problem"]
        assert problem and problem["problem"] == "disk full", problem
        assert "disk full" in header(None)
        assert "disk full" in header(lambda: True)

        # Free the space: the exporters' retries are stored.
        filler.unlink()
        for n in refused:
            deadline = time.monotonic() + 30
            while True:
                try:
                    export(_request(n), timeout=30)
                    acked.append(n)
                    break
                except grpc.RpcError:
                    assert time.monotonic() < deadline, "ingest did not resume once space was freed"
                    time.sleep(0.2)
        time.sleep(0.5)
        assert "disk full" not in header(lambda: True)
    finally:
        channel.close()
        code = receiver.stop(signal.SIGTERM)
    assert code == 0, receiver.stderr
    assert integrity(db) == "ok"
    stored = stored_counts(db)[0]
    assert stored == 200 * len(set(acked)), "every acknowledged span is stored, once"
    # A few lines for a few seconds of failures (per process: the receiver, its two ingest workers),
    # not one per failed commit or checkpoint poll.
    complaints = [line for line in receiver.lines if "full" in line or "checkpoint" in line]
    assert len(failures) > 20
    assert 1 <= len(complaints) <= 12, "\n".join(complaints)


def test_a_file_size_limit_is_named_and_loses_nothing(tmp_path: Path) -> None:
    """No root needed: the receiver runs under `ulimit -f` (RLIMIT_FSIZE), SIGXFSZ ignored as a shell would."""
    import resource

    from helpers import READY_RE, spawn_receiver

    limit = 6 * 1024 * 1024

    def limit_file_size() -> None:  # in the child, before exec; inherited by its ingest workers
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    db = tmp_path / "limited.db"
    proc, lines, ready, _done = spawn_receiver(
        ["--db", str(db), "--grpc-port", "0"], cwd=tmp_path, preexec_fn=limit_file_size
    )
    try:
        assert ready.wait(60) and proc.poll() is None, "\n".join(lines)
        port = int(next(m for m in map(READY_RE.match, lines) if m)["port"])
        acked, failures = [], []
        with channel_to(port) as channel:
            export = channel.unary_unary(EXPORT_METHOD, request_serializer=None, response_deserializer=None)
            deadline, n = time.monotonic() + 60, 0
            while len(failures) < 30 and time.monotonic() < deadline:
                try:
                    export(_request(n), timeout=30)
                    acked.append(n)
                    n += 1
                except grpc.RpcError as exc:
                    failures.append(exc)
                    time.sleep(0.05)
        assert failures, "the file size limit never refused an export"
        assert failures[0].code() == grpc.StatusCode.UNAVAILABLE
        assert "file size limit" in failures[0].details(), failures[0].details()
        status = _status(db)
        assert json.loads(status.stdout)["store_problem"]["problem"] == "file size limit", status.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert integrity(db) == "ok"
    assert stored_counts(db)[0] == 200 * len(acked), "every acknowledged span"
    assert len([line for line in lines if "limit" in line or "checkpoint" in line]) <= 12, "\n".join(lines)

"""The first commands a newcomer runs, as processes (issue 14): a demo with nobody listening, a port already taken."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import receiver_env


def tracetui(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tracetui", *args], env=receiver_env(), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def assert_runs(command: str) -> None:
    """The command in a hint runs as printed, from another directory."""
    done = subprocess.run([*shlex.split(command), "--help"], cwd="/", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Usage:" in done.stdout, (command, done.stderr)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_demo_with_no_receiver_fails_with_one_clear_line() -> None:
    port = free_port()  # nobody listens there
    done = tracetui("demo", "--count", "1", "--endpoint", f"http://127.0.0.1:{port}")
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if not line.startswith("demo: run 1 ")]
    assert len(errors) == 1, done.stderr
    match = re.fullmatch(
        rf"Error: nothing reached http://127\.0\.0\.1:{port} \(0 of 1 run acknowledged\): "
        r"start a receiver with `(.+) serve`, or pass --endpoint",
        errors[0],
    )
    assert match, errors[0]
    assert_runs(match[1])
    assert "sent 1" not in done.stderr and "could not send" not in done.stderr


def test_serve_on_a_taken_port_names_it_its_holder_and_the_ways_forward(tmp_path) -> None:
    """The UI's `serve` (receiver in a child process): one message, no raw grpc log line."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = tracetui("serve", "--db", str(tmp_path / "t.db"), "--grpc-port", str(port), "--http-port", "0")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0].startswith(
        f"Error: the receiver did not start: port {port} (OTLP/gRPC) is already in use on 127.0.0.1"
    )
    if sys.platform == "linux":
        assert f"by pid {os.getpid()} (" in lines[0]  # this test process holds it
    start = re.fullmatch(r"  Start on free ports: +(.+) serve --grpc-port 0 --http-port 0", lines[1])
    assert start, done.stderr
    assert_runs(start[1])
    if sys.platform == "linux":  # the holder is known and is not a tracetui: `view` would not help
        assert lines[2].startswith(f"  or stop pid {os.getpid()} (") and "not a tracetui" in lines[2]
    else:
        assert re.fullmatch(r"  or watch the running one: +(.+) view", lines[2]), lines[2]
    assert len(lines) == 3, done.stderr
    assert "add_port" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "t.db").exists()


@pytest.mark.slow
def test_make_sets_up_quietly(tmp_path) -> None:
    """`make run`'s first step on a fresh checkout prints one line, nothing from pip or setuptools (their
    "Editable installation ... folders with the same name" banner went to the terminal)."""
    root = Path(__file__).resolve().parents[2]
    files = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, tmp_path / name)
    # As a user runs it: not as a sub-make of `make stress` (whose MAKELEVEL makes make print its directories).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    done = subprocess.run(
        ["make", ".venv/.installed"], cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout + done.stderr == "Setting up .venv (first run only)...\n"
    assert (tmp_path / ".venv" / "bin" / "tracetui").exists()

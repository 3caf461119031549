"""The receiver's write lock: exclusive across processes and threads, and freed when its holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from tracetui.store.lock import WriteLock, lock_path


def test_threads_sharing_one_lock_take_turns(tmp_path):
    lock = WriteLock(tmp_path / "x.db")
    inside = 0
    most = 0

    def work() -> None:
        nonlocal inside, most
        for _ in range(200):
            with lock:
                inside += 1
                most = max(most, inside)
                time.sleep(0)
                inside -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    lock.close()
    assert most == 1


HOLD = """
import sys, time
from tracetui.store.lock import WriteLock
lock = WriteLock(sys.argv[1])
lock.__enter__()
print("held", flush=True)
time.sleep(60)
"""


def test_another_process_waits_and_a_killed_holder_frees_the_lock(tmp_path):
    db = tmp_path / "x.db"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        lock = WriteLock(db)
        got = threading.Event()

        def take() -> None:
            with lock:
                got.set()

        taker = threading.Thread(target=take, daemon=True)
        taker.start()
        assert not got.wait(0.5), "two processes held the write lock at once"
        os.kill(holder.pid, signal.SIGKILL)  # a worker killed in the middle of a write
        assert got.wait(10), "the lock of a dead process was never released"
        taker.join(10)
        lock.close()
    finally:
        holder.kill()
        holder.wait()
    assert lock_path(db).stat().st_mode & 0o777 == 0o600

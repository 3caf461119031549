"""The receiver process: OTLP servers in front of the SQLite writer.

``tracetui serve --headless`` is this process alone; ``tracetui serve`` starts
it as a child (see :class:`ReceiverProcess`) and runs the UI in the
foreground. Start order: schema and writer, then servers. Stop order: servers
stop accepting and finish in-flight exports (which wait for their commit),
then the writer flushes and closes the file.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TextIO

from tracetui.ingest.admission import Admission, default_budget
from tracetui.ingest.grpc_server import start_grpc_server
from tracetui.ingest.hints import COMMAND_ENV, command_name, port_in_use_message, port_is_free
from tracetui.ingest.workers import Decoder, InlineDecoder, WorkerPool, configure_pricing
from tracetui.llm import pricing
from tracetui.model.config import TOKEN_ENV, ReceiverSettings
from tracetui.model.freed_memory import return_freed_memory_promptly
from tracetui.store import text_index
from tracetui.store.retention import Retention, parse_age
from tracetui.store.writer import Writer, receiver_status_defaults

if TYPE_CHECKING:
    import grpc

    from tracetui.ingest.http_server import HttpReceiver

READY_PREFIX = "tracetui: listening "
_READY_RE = re.compile(r"^tracetui: listening grpc=(?P<grpc>\S+) http=(?P<http>\S+) db=(?P<db>.+)$")
SHUTDOWN_GRACE_S = 10.0


def _busy_ports(settings: ReceiverSettings) -> list[tuple[str, int]]:
    """The requested ports someone else listens on, checked before grpc tries (it would log a raw C-core line)."""
    busy = []
    for protocol, port in (("OTLP/gRPC", settings.grpc_port), ("OTLP/HTTP", settings.http_port)):
        try:
            if not port_is_free(settings.host, port):
                busy.append((protocol, port))
        except OSError:
            pass  # not a port conflict (a host we cannot bind at all): the servers say what it is
    return busy


def run_receiver(settings: ReceiverSettings, *, err: TextIO = sys.stderr, stop: threading.Event | None = None) -> int:
    """Run until SIGINT/SIGTERM (or ``stop`` is set). Returns the exit code."""
    stop = stop or threading.Event()
    return_freed_memory_promptly()
    _warn_if_reachable_from_other_machines(settings, err)
    if not _prices_load(settings, err):
        return 1
    retention = _retention(settings)
    created = not settings.db_path.exists()
    writer = _open_writer(settings, retention, err)
    if writer is None:
        return 1
    # every copy of the data (index, JSON column, exports, judge) follows the policy the database records
    text_index.record_policy_at(settings.db_path, settings.content)
    writer.start()
    decoder: Decoder = InlineDecoder()
    try:
        if settings.decode_workers:
            decoder = _start_worker_pool(settings, retention)
            writer.backlog = decoder.backlog
        servers = _start_servers(settings, writer, decoder)
    except _StartupFailed as failure:
        # Startup failed after the database was opened: close it, and remove it if this run created it.
        decoder.close()
        writer.stop()
        if created:
            remove_database(settings.db_path)
        print(f"tracetui: {failure}", file=err, flush=True)
        return 1
    writer.set_status(
        **receiver_status_defaults(settings.host, servers.grpc_port), http=f"{settings.host}:{servers.http_port}"
    )
    _stop_on_signals(stop, err)
    print(
        f"{READY_PREFIX}grpc={settings.host}:{servers.grpc_port} http={settings.host}:{servers.http_port} "
        f"db={settings.db_path}",
        file=err,
        flush=True,
    )
    _wait_for_stop(settings, stop)
    if servers.admission.in_flight:
        n = servers.admission.in_flight
        print(f"tracetui: stopping: waiting for {n} export{'s' if n != 1 else ''} in flight to be written "
              "(interrupt again to exit now)", file=err, flush=True)  # fmt: skip
    _shut_down(servers, decoder, writer, err)
    return 0


class _StartupFailed(Exception):
    """The receiver cannot start; the message says why (printed after "tracetui: ")."""


class _Servers(NamedTuple):
    """The two listening OTLP servers and their ports (asked for 0, the system picks)."""

    grpc: grpc.Server
    grpc_port: int
    http: HttpReceiver
    http_port: int
    admission: Admission


def _warn_if_reachable_from_other_machines(settings: ReceiverSettings, err: TextIO) -> None:
    if not settings.is_loopback:
        print(
            f"tracetui: warning: listening on {settings.host}, reachable from other machines; "
            "anyone who can reach it can write traces",
            file=err,
            flush=True,
        )


def _prices_load(settings: ReceiverSettings, err: TextIO) -> bool:
    """Load the price data before anything else starts; False (said on ``err``) for a bad price file."""
    try:
        if settings.decode_workers:
            pricing.configure(settings.prices_path)  # only to report a bad price file now; workers price
        else:
            configure_pricing(settings.prices_path)
    except pricing.PriceFileError as exc:
        print(f"tracetui: {exc}", file=err, flush=True)
        return False
    return True


def _retention(settings: ReceiverSettings) -> Retention:
    return Retention(
        max_spans=settings.max_spans,
        max_db_bytes=settings.max_db_mb * 1024 * 1024 if settings.max_db_mb else None,
        max_age_s=parse_age(settings.max_age) if settings.max_age else None,
    )


def _open_writer(settings: ReceiverSettings, retention: Retention, err: TextIO) -> Writer | None:
    """The database's writer, not started yet; None (said on ``err``) when the database cannot be opened."""
    try:
        return Writer(settings.db_path, max_pending_spans=settings.max_pending_spans, retention=retention)
    except Exception as exc:  # sqlite3.Error, OSError, SchemaTooNew
        print(f"tracetui: cannot open database {settings.db_path}: {exc}", file=err, flush=True)
        return None


def _start_worker_pool(settings: ReceiverSettings, retention: Retention) -> WorkerPool:
    """The ingest worker processes, started and warm. Raises _StartupFailed (with the pool closed)."""
    try:
        pool = WorkerPool(
            settings.decode_workers,
            settings.db_path,
            settings.prices_path,
            settings.max_pending_spans,
            retention=retention,
        )
    except Exception as exc:
        raise _StartupFailed(f"cannot start the ingest workers: {exc}") from exc
    try:
        pool.warm()
    except Exception as exc:
        pool.close()
        raise _StartupFailed(f"cannot start the ingest workers: {exc}") from exc
    return pool


def _start_servers(settings: ReceiverSettings, writer: Writer, decoder: Decoder) -> _Servers:
    """The OTLP/gRPC and OTLP/HTTP servers, listening and sharing one admission budget. Raises _StartupFailed."""
    busy = _busy_ports(settings)
    if busy:
        raise _StartupFailed(port_in_use_message(settings.host, busy))
    try:
        admission = Admission(default_budget(settings.max_request_bytes))  # shared by gRPC and HTTP
        server, port = start_grpc_server(
            writer,
            settings.host,
            settings.grpc_port,
            max_request_bytes=settings.max_request_bytes,
            workers=settings.grpc_workers,
            token=settings.token,
            decoder=decoder,
            admission=admission,
            body_timeout_s=settings.grpc_body_timeout_s,
        )
    except OSError as exc:
        raise _StartupFailed(str(exc)) from exc
    from tracetui.ingest.http_server import HttpReceiver  # aiohttp only where it is needed

    http = HttpReceiver(
        writer,
        settings.host,
        settings.http_port,
        max_request_bytes=settings.max_request_bytes,
        token=settings.token,
        workers=settings.grpc_workers,
        shutdown_grace_s=SHUTDOWN_GRACE_S,
        decoder=decoder,
        admission=admission,
        header_timeout_s=settings.http_header_timeout_s,
        body_timeout_s=settings.http_body_timeout_s,
    )
    try:
        http_port = http.start()
    except OSError as exc:
        server.stop(grace=None).wait()
        raise _StartupFailed(str(exc)) from exc
    return _Servers(server, port, http, http_port, admission)


def _stop_on_signals(stop: threading.Event, err: TextIO) -> None:
    """SIGINT/SIGTERM set ``stop`` (a graceful stop); a second one exits at once."""

    def on_signal(signum: int, _frame) -> None:
        if not stop.is_set():
            stop.set()
            return
        # Asked twice: stop waiting for the exports in flight. Nothing acknowledged is
        # lost (it is committed); the exports not yet answered are resent by their clients.
        print(f"tracetui: {signal.Signals(signum).name} again: exiting now, exports in flight were not "
              "acknowledged (exporters resend them)", file=err, flush=True)  # fmt: skip
        os._exit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)


def _wait_for_stop(settings: ReceiverSettings, stop: threading.Event) -> None:
    """Until ``stop`` is set, or (``exit_with_parent``) the UI that started this process is gone."""
    parent = os.getppid()
    while not stop.wait(0.5):
        if settings.exit_with_parent and os.getppid() != parent:
            break


def _shut_down(servers: _Servers, decoder: Decoder, writer: Writer, err: TextIO) -> None:
    """Stop in order, so that nothing acknowledged is lost, and say how many spans were written.

    Both servers stop accepting and finish the exports in flight (each waits for its
    commit), then the writer flushes what is queued and closes.
    """
    grpc_stopped = servers.grpc.stop(grace=SHUTDOWN_GRACE_S)
    servers.http.stop()
    grpc_stopped.wait()
    decoder.close()
    writer.stop()
    written = writer.spans_written + (decoder.spans_written if isinstance(decoder, WorkerPool) else 0)
    print(f"tracetui: stopped ({written} spans written)", file=err, flush=True)


def remove_database(path: Path) -> None:
    """Delete a database file and its WAL companions (only ever one this run created)."""
    for suffix in ("", "-wal", "-shm", "-lock", "-health"):
        try:
            os.unlink(f"{path}{suffix}")
        except FileNotFoundError:
            pass


@dataclass(frozen=True)
class ReadyInfo:
    grpc: str
    http: str
    db: str


def parse_ready_line(line: str) -> ReadyInfo | None:
    match = _READY_RE.match(line.strip())
    return ReadyInfo(match["grpc"], match["http"], match["db"]) if match else None


class ReceiverProcess:
    """The receiver as a child process of the UI (``tracetui serve``).

    The child's stderr is read until its ready line; afterwards it keeps being
    drained so the child never blocks on a full pipe, and its last lines are
    kept for the UI to show if it dies.
    """

    def __init__(self, settings: ReceiverSettings) -> None:
        self.settings = settings
        self.proc: subprocess.Popen[str] | None = None
        self.ready: ReadyInfo | None = None
        self.lines: deque[str] = deque(maxlen=50)

    def command(self) -> list[str]:
        s = self.settings
        cmd = [
            sys.executable, "-m", "tracetui", "serve", "--headless", "--exit-with-parent",
            "--db", str(s.db_path), "--host", s.host, "--grpc-port", str(s.grpc_port),
            "--http-port", str(s.http_port),
            "--max-request-mb", str(max(1, s.max_request_bytes // (1024 * 1024))),
            "--max-pending-spans", str(s.max_pending_spans), "--decode-workers", str(s.decode_workers),
            "--http-header-timeout", str(s.http_header_timeout_s), "--http-body-timeout", str(s.http_body_timeout_s),
            "--grpc-body-timeout", str(s.grpc_body_timeout_s),
        ]  # fmt: skip
        for option, value in (("--max-spans", s.max_spans), ("--max-db-mb", s.max_db_mb), ("--max-age", s.max_age),
                              ("--prices", s.prices_path)):  # fmt: skip
            if value is not None:
                cmd += [option, str(value)]
        # The child starts the full-text indexer beside itself, with the user's content policy.
        if not s.index:
            cmd.append("--no-index")
        cmd.append("--content" if s.content.keep_content else "--no-content")  # exactly, not the recorded one
        for pattern in s.content.redact:
            cmd += ["--redact", pattern]
        return cmd

    def start(self, timeout: float = 20.0) -> ReadyInfo:
        """Start the child and wait for its ready line; raises RuntimeError on failure."""
        # The token goes in the environment, not on the command line where `ps` shows it.
        env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
        if self.settings.token:
            env[TOKEN_ENV] = self.settings.token
        env[COMMAND_ENV] = command_name()  # the child runs as `python -m tracetui`; its hints name what the user ran
        self.proc = subprocess.Popen(
            self.command(),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # Ctrl-C in the terminal goes to the UI, which stops us in order
        )
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        ready_event = threading.Event()

        def drain() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                self.lines.append(line.rstrip("\n"))
                if self.ready is None:
                    info = parse_ready_line(line)
                    if info is not None:
                        self.ready = info
                        ready_event.set()
            ready_event.set()  # EOF: the child exited

        threading.Thread(target=drain, name="tracetui-receiver-stderr", daemon=True).start()
        ready_event.wait(max(0.0, deadline - time.monotonic()))
        if self.ready is None:
            self.stop()
            raise RuntimeError(f"the receiver did not start: {self._failure()}")
        return self.ready

    def _failure(self) -> str:
        """Why the child exited before it was ready: its own "tracetui: ..." lines when it wrote any
        (one readable message), else everything it printed."""
        ours: list[str] = []
        for line in self.lines:
            if line.startswith("tracetui: "):
                ours.append(line.removeprefix("tracetui: "))
            elif ours and line.startswith("  "):
                ours.append(line)  # a message's continuation lines
        if ours:
            return "\n".join(ours)
        return "\n" + ("\n".join(self.lines) or "no output")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = SHUTDOWN_GRACE_S + 20) -> int | None:
        """SIGTERM, then wait for the flush; SIGKILL only if it hangs."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

"""The one process that owns a chdb directory, speaking enough of ClickHouse's HTTP interface for clickhouse-connect.

chdb (ClickHouse embedded in Python) lets one process at a time open a directory,
and importing it costs ~250 MB of resident memory, so it never runs in the UI
process: :func:`tracetui.clickhouse.connect.connect` starts this module as a
subprocess and talks to it with the stock ``clickhouse_connect`` HTTP client, the
same code path as a real ClickHouse server::

    python -m tracetui.clickhouse.chdb_server PATH [--port 0] [--host 127.0.0.1]

It prints exactly ``LISTENING <port>`` on stdout once it accepts connections, and
serves until its stdin reaches end of file (the parent closed it, or died) or it
gets SIGTERM/SIGHUP (SIGINT is ignored: Ctrl-C is the parent's to handle); then it
closes the session and exits 0. It exits 2 with one line on stderr when chdb is not
installed, another process has the directory open, or PATH is not a usable directory.

What it serves (what ``clickhouse_connect.get_client(host, port, compress=False)``
sends; research notes in /work/notes/chdb_probe.md, section 6):

* ``GET /ping`` and a bare ``GET /``: ``Ok.``;
* SQL in the body, in the ``query`` URL parameter, or both (the body then follows the
  query, as in ClickHouse), or in a ``multipart/form-data`` body (the client's choice
  for long bound parameters);
* bound parameters (``param_<name>``) bound by the engine, never spliced into the SQL;
* ``INSERT ... FORMAT <fmt>`` with the data after the statement line, chunked or not,
  streamed into ``Session.send_insert`` (how clickhouse-connect sends Native inserts);
* the ``database`` URL parameter (``USE`` before each request), and any other URL
  parameter that is not a transport option as a setting (``SET``, undone with
  ``SET ... = DEFAULT`` when a later request no longer sends it);
* errors as HTTP 500 with ``X-ClickHouse-Exception-Code``, which the client raises as
  ``DatabaseError`` carrying the engine's message.

Not served: compressed request bodies (use ``compress=False``), external data,
sessions (every request sees one engine state), progress headers, the ``readonly``
setting (ignored).

It binds a loopback address only. When the environment variable
``TRACETUI_CHDB_PASSWORD`` is set (``connect`` sets a random one), every request but
``/ping`` must carry it (HTTP basic auth), so other local users cannot use the port;
without it there is no authentication.

Every chdb call runs under one lock: chdb's bound parameters are not thread-safe
on a shared connection, and ``USE`` and ``SET`` must stay with their query.
"""

from __future__ import annotations

import argparse
import base64
import email.parser
import email.policy
import fcntl
import hmac
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tracetui.clickhouse.schema import quote_identifier

#: Seconds to wait for another process to release the directory before saying it is taken.
LOCK_WAIT_S = 3.0
#: Exit status for "cannot start" (chdb missing, directory locked or unusable, bad arguments).
EXIT_CANNOT_START = 2
#: The environment variable holding the password every request must carry (unset: no authentication).
PASSWORD_ENV = "TRACETUI_CHDB_PASSWORD"
#: Addresses this server agrees to bind: it has no TLS and at most a shared password.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})

#: URL parameters never applied as settings: those that steer the HTTP exchange rather than the query, and
#: ``readonly``, which the engine cannot take back once set (every later ``SET`` would fail) and which this
#: server has no per-request session to confine; it is ignored.
TRANSPORT_PARAMETERS = frozenset({
    "query", "database", "default_format", "query_id", "session_id", "session_timeout", "session_check",
    "compress", "decompress", "enable_http_compression", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms", "wait_end_of_query", "buffer_size", "user", "password", "quota_key",
    "role", "client_protocol_version", "cancel_http_readonly_queries_on_client_close", "readonly",
})  # fmt: skip

#: ``INSERT INTO ... FORMAT <fmt>`` then a newline, at the start of a body whose data follows it.
_INSERT_HEAD = re.compile(rb"\s*(INSERT\s+INTO\s+[^\n]*?)\s+FORMAT\s+(\w+)[ \t]*\r?\n", re.IGNORECASE)
#: The same, for a statement given whole in the ``query`` URL parameter (the body is all data).
_INSERT_QUERY = re.compile(r"\s*(INSERT\s+INTO\s+.*?)\s+FORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE | re.DOTALL)
#: A trailing ``FORMAT <fmt>``: the output format the statement asks for.
_FORMAT_CLAUSE = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
#: ``Code: 60.`` in an engine message: the ClickHouse error code.
_ERROR_CODE = re.compile(r"Code: (\d+)")
#: ClickHouse's output format for a statement without a FORMAT clause or ``default_format``.
_DEFAULT_FORMAT = "TabSeparated"


class RequestError(Exception):
    """A request this server cannot serve, answered as a ClickHouse error with ``code``."""

    def __init__(self, message: str, code: int = 1, status: int = 500) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class Engine:
    """A chdb session behind one lock, with the per-request database and settings applied before each query."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._lock = threading.Lock()
        self._settings: dict[str, str] = {}
        self._closed = False

    def close(self) -> None:
        """Close the session (waiting for a query in progress); later requests get an error."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._session.close()

    def run(self, sql: str, fmt: str, params: dict[str, str], database: str, settings: dict[str, str]) -> Any:
        """Run one statement in ``database`` with ``settings``; the chdb result (``.bytes()``, ``.rows_read()``)."""
        with self._lock:
            self._prepare(database, settings)
            return self._session.query(sql, fmt, params=params)

    def insert(self, statement: str, fmt: str, data: bytes, database: str, settings: dict[str, str]) -> int:
        """Stream ``data`` (in input format ``fmt``) into ``INSERT INTO ...``; the rows written."""
        with self._lock:
            self._prepare(database, settings)
            with self._session.send_insert(statement, fmt) as inserter:
                inserter.append(data)
                return int(inserter.finish().rows_written)

    def _prepare(self, database: str, settings: dict[str, str]) -> None:
        if self._closed:
            raise RequestError("the chdb server is shutting down", code=210)
        # USE costs ~60 us: done every time, so a client's own USE never leaks into the next request.
        self._session.query(f"USE {quote_identifier(database)}")
        for name in self._settings.keys() - settings.keys():
            self._session.query(f"SET {quote_identifier(name)} = DEFAULT")
            del self._settings[name]
        for name, value in settings.items():
            if self._settings.get(name) != value:
                # A quoted string: the engine converts it to the setting's type, as the HTTP interface does.
                self._session.query(f"SET {quote_identifier(name)} = {_quote_string(value)}")
                self._settings[name] = value


def _quote_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Handler(BaseHTTPRequestHandler):
    """One HTTP request: parse it the way ClickHouse does, run it on :attr:`engine`, answer as ClickHouse would."""

    protocol_version = "HTTP/1.1"
    #: Headers and body go out in separate writes: without this, Nagle plus delayed ACK cost ~40 ms a request.
    disable_nagle_algorithm = True
    #: An idle keep-alive connection is dropped after this many seconds.
    timeout = 300
    server_version = "tracetui-chdb"
    engine: Engine  # set on the subclass made by serve()
    password: str | None = None

    def do_GET(self) -> None:  # http.server's naming
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: errors go back to the client, and stderr belongs to the parent's diagnostics."""

    def _handle(self) -> None:
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        try:
            try:
                body = self._read_body()  # first, always: a body left unread would be parsed as the next request
            except RequestError:
                self.close_connection = True
                raise
            if url.path.rstrip("/") == "/ping" or (not body and "query" not in query):
                self._send(200, b"Ok.\n")  # as ClickHouse answers a health check: without authentication
                return
            self._check_password(query)
            self._execute(query, body)
        except RequestError as exc:
            self._send(exc.status, f"Code: {exc.code}. DB::Exception: {exc}. (tracetui chdb server)\n".encode(),
                       {"X-ClickHouse-Exception-Code": str(exc.code)})  # fmt: skip
        except Exception as exc:  # the engine's errors: ChdbError / RuntimeError carrying "Code: N. DB::Exception"
            message = str(exc).strip()
            code = _ERROR_CODE.search(message)
            self._send(500, message.encode() + b"\n", {"X-ClickHouse-Exception-Code": code.group(1) if code else "1"})

    def _check_password(self, query: dict[str, str]) -> None:
        if self.password is None:
            return
        given = query.get("password") or self.headers.get("X-ClickHouse-Key") or ""
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                given = base64.b64decode(auth[6:]).decode().partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                given = ""
        if not hmac.compare_digest(given.encode(), self.password.encode()):
            raise RequestError("default: Authentication failed: password is incorrect", code=516, status=403)

    def _read_body(self) -> bytes:
        if self.headers.get("Content-Encoding", "identity").lower() not in ("", "identity"):
            raise RequestError(
                f"compressed request bodies ({self.headers['Content-Encoding']}) are not supported: "
                "connect with compress=False",
                code=415,
            )
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _execute(self, query: dict[str, str], body: bytes) -> None:
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("multipart/form-data"):
            query.update(_form_fields(content_type, body))
            body = b""
        database = query.get("database") or "default"
        params = {name[6:]: value for name, value in query.items() if name.startswith("param_")}
        settings = {
            name: value
            for name, value in query.items()
            if name not in TRANSPORT_PARAMETERS and not name.startswith("param_")
        }
        sql = query.get("query")
        if sql is None:
            insert = _INSERT_HEAD.match(body)
            if insert:  # a clickhouse-connect insert: the statement line, then the data
                statement, fmt = insert.group(1).decode(), insert.group(2).decode()
                self._inserted(self.engine.insert(statement, fmt, body[insert.end() :], database, settings))
                return
            sql = body.decode()
        elif body:
            insert_query = _INSERT_QUERY.match(sql)
            if insert_query:  # the statement in the URL, all of the body is data
                statement, fmt = insert_query.group(1), insert_query.group(2)
                self._inserted(self.engine.insert(statement, fmt, body, database, settings))
                return
            sql = sql + "\n" + body.decode()
        format_clause = _FORMAT_CLAUSE.search(sql)
        fmt = format_clause.group(1) if format_clause else query.get("default_format", _DEFAULT_FORMAT)
        result = self.engine.run(sql, fmt, params, database, settings)
        summary = {"read_rows": str(result.rows_read()), "read_bytes": str(result.bytes_read()), "written_rows": "0"}
        self._send(200, result.bytes(), {"X-ClickHouse-Format": fmt, "X-ClickHouse-Summary": json.dumps(summary)})

    def _inserted(self, rows: int) -> None:
        self._send(200, b"", {"X-ClickHouse-Summary": json.dumps({"written_rows": str(rows), "read_rows": "0"})})

    def _send(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        query_id = dict(parse_qsl(urlsplit(self.path).query)).get("query_id")
        if query_id:
            self.send_header("X-ClickHouse-Query-Id", query_id)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def _form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The text fields of a ``multipart/form-data`` body (``query``, ``param_<name>``); files are refused."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if part.get_filename() is not None:
            raise RequestError("external data (form file fields) is not supported", code=48)
        if isinstance(name, str):
            payload = part.get_payload(decode=True)
            fields[name] = payload.decode() if isinstance(payload, bytes) else str(payload)
    return fields


# --- the process ------------------------------------------------------------------------------------


#: How this server's own messages on stderr begin (the parent shows them rather than the engine's noise).
MESSAGE_PREFIX = "tracetui chdb server: "


def _fail(message: str) -> int:
    print(f"{MESSAGE_PREFIX}{message}", file=sys.stderr, flush=True)
    return EXIT_CANNOT_START


def _directory_locked(path: Path) -> bool:
    """Whether another process holds the engine's lock on ``PATH/status`` (ClickHouse takes an exclusive flock)."""
    try:
        fd = os.open(path / "status", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's own lock
    return False


def _open_session(path: Path) -> Any:
    """``chdb.session.Session(path)``; raises SystemExit(2) with a one-line message when it cannot."""
    locked = f"another process already has {path} open; chdb allows one"
    if path.exists() and not path.is_dir():
        raise SystemExit(_fail(f"{path} is not a directory (chdb:PATH names a directory the engine owns)"))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SystemExit(_fail(f"cannot create {path}: {exc.strerror or exc}")) from None
    # A tracetui that just quit may still be closing its session (a fraction of a second): wait for it a little.
    deadline = time.monotonic() + LOCK_WAIT_S
    while _directory_locked(path):
        if time.monotonic() > deadline:
            raise SystemExit(_fail(locked))
        time.sleep(0.1)
    try:
        from chdb import session
    except ImportError:
        raise SystemExit(_fail("chdb is not installed: pip install 'tracetui[chdb]'")) from None
    try:
        return session.Session(str(path))
    except Exception as exc:
        if _directory_locked(path):  # lost a race with another process opening it
            raise SystemExit(_fail(locked)) from None
        raise SystemExit(_fail(f"cannot open {path}: {exc}")) from None


def _stop_on_stdin_eof(stop: threading.Event) -> None:
    """Set ``stop`` when stdin reaches end of file: the parent closed it, or died."""

    def wait() -> None:
        # os.read on the descriptor, not sys.stdin: a daemon thread blocked inside a buffered reader holds its
        # lock, and the interpreter aborts at exit when it cannot take that lock to close stdin.
        try:
            while os.read(0, 65536):
                pass
        except OSError:
            pass
        stop.set()

    threading.Thread(target=wait, name="stdin-eof", daemon=True).start()


def _announce(port: int) -> None:
    """Print the ready line, then point stdout at /dev/null: the parent reads one line and no more."""
    sys.stdout.write(f"LISTENING {port}\n")
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # chdb's own writes to fd 1 can never fill a pipe nobody reads
    os.close(devnull)


def serve(path: Path, host: str = "127.0.0.1", port: int = 0, *, announce: Callable[[int], None] = _announce) -> int:
    """Own ``path`` and serve it until stdin closes or a stop signal; the exit status."""
    if host not in LOOPBACK_HOSTS:
        return _fail(f"refusing to bind {host}: the chdb server binds a loopback address only (127.0.0.1, ::1)")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes stdin after
    engine = Engine(_open_session(path))
    handler = type("BoundHandler", (Handler,), {"engine": engine, "password": os.environ.get(PASSWORD_ENV) or None})
    server_class = type("Server", (ThreadingHTTPServer,), {"address_family": _family(host)})
    try:
        server = server_class((host, port), handler)
    except OSError as exc:
        engine.close()
        return _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    # serve_forever checks for shutdown every poll_interval: 0.1 s keeps Connection.close() quick.
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), name="http", daemon=True)
    thread.start()
    _stop_on_stdin_eof(stop)
    announce(server.server_address[1])
    while not stop.wait(1.0):  # a timed wait, so signal handlers run promptly
        pass
    server.shutdown()
    server.server_close()
    engine.close()
    return 0


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def main(argv: list[str] | None = None) -> int:
    """``python -m tracetui.clickhouse.chdb_server PATH [--port 0] [--host 127.0.0.1]``."""
    parser = argparse.ArgumentParser(
        prog="python -m tracetui.clickhouse.chdb_server",
        description="Own a chdb directory and serve ClickHouse's HTTP interface on a loopback address "
        "until stdin closes.",
    )
    parser.add_argument("path", type=Path, help="the chdb directory (created if missing)")
    parser.add_argument("--port", type=int, default=0, help="0 (default) picks a free port")
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address (default 127.0.0.1)")
    args = parser.parse_args(argv)
    try:
        return serve(args.path.expanduser(), args.host, args.port)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_CANNOT_START


if __name__ == "__main__":
    sys.exit(main())

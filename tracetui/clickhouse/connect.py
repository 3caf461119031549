"""``--source`` URLs to a ClickHouse HTTP client: a ClickHouse server, or a chdb directory served by a subprocess.

Accepted sources:

* ``clickhouse://[USER[:PASS]@]HOST[:PORT][/DATABASE]``: ClickHouse's HTTP interface,
  port 8123 by default;
* ``clickhouses://...``: the same over TLS, port 8443 by default;
* ``chdb:PATH`` (``chdb:///abs/path`` too): an embedded ClickHouse in the directory
  PATH, owned by a :mod:`tracetui.clickhouse.chdb_server` subprocess that this
  process talks to over HTTP on a loopback port, so both kinds go through the same
  ``clickhouse_connect`` client code.

The client process stays small: ``clickhouse_connect`` is imported on connect, chdb
never (it runs in the subprocess), and nothing here asks for pandas or pyarrow
(the UI must keep to ``client.query`` / ``client.command``: ``query_df`` and
``query_arrow`` load them, and so does ``client.insert``, which checks its data
for a DataFrame).

The password is never shown: :class:`SourceSpec` hides it from ``repr`` and every
:class:`SourceError` message is scrubbed of it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import re
import secrets
import selectors
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

from tracetui.clickhouse.schema import quote_identifier

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

#: The environment variable read for the password when neither ``--password`` nor a password file gives one.
PASSWORD_ENV = "CLICKHOUSE_PASSWORD"
#: ClickHouse's HTTP ports, plain and TLS.
HTTP_PORT, HTTPS_PORT = 8123, 8443
#: Native-protocol ports: worth a hint when a connection to one fails (tracetui speaks HTTP).
NATIVE_PORTS = frozenset({9000, 9440})
#: The chdb server's password variable (``chdb_server.PASSWORD_ENV``, not imported: the UI process needs none of it).
CHDB_PASSWORD_ENV = "TRACETUI_CHDB_PASSWORD"
#: How the chdb server's own stderr messages begin (``chdb_server.MESSAGE_PREFIX``).
CHDB_MESSAGE_PREFIX = "tracetui chdb server: "
#: How long to wait for a chdb server to say LISTENING (importing chdb and opening a big directory take seconds).
CHDB_START_TIMEOUT_S = 60.0
#: How long a chdb server gets to close its session after its stdin closes, before it is killed.
CHDB_STOP_TIMEOUT_S = 10.0

_NULL_HANDLER = logging.NullHandler()
_CLICKHOUSE_EXTRA = "ClickHouse support is an optional extra: pip install 'tracetui[clickhouse]'"
_CHDB_EXTRA = "chdb support is an optional extra: pip install 'tracetui[chdb]'"
_FOR_URL = re.compile(r"\s*\(for url [^)]*\)\s*$")
_HOST_PORT = re.compile(r"[\w.-]+:\d{1,5}")
_USAGE = "--source takes clickhouse://USER@HOST:PORT/DATABASE, clickhouses://... (TLS) or chdb:PATH"


class SourceError(ValueError):
    """A source that cannot be parsed or reached; the message says what to do and never holds the password."""


@dataclass
class SourceSpec:
    """Where the exporter's tables are: a ClickHouse server over HTTP(S), or a chdb directory."""

    kind: Literal["clickhouse", "chdb"]
    host: str = ""
    port: int = 0
    user: str = "default"
    password: str = field(default="", repr=False)
    database: str = "default"
    secure: bool = False
    #: The chdb directory (kind "chdb" only).
    path: Path | None = None
    traces_table: str = "otel_traces"
    logs_table: str = "otel_logs"

    def display(self) -> str:
        """The source as a user would write it, without the password (for messages)."""
        if self.kind == "chdb":
            return f"chdb:{self.path}"
        scheme = "clickhouses" if self.secure else "clickhouse"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{self.user}@{host}:{self.port}/{self.database}"


def parse_source(
    text: str,
    *,
    password: str | None = None,
    password_file: Path | None = None,
    secure: bool | None = None,
    database: str | None = None,
    traces_table: str | None = None,
    logs_table: str | None = None,
) -> SourceSpec:
    """Parse a ``--source`` value; the keyword arguments (command-line options) override what the URL says.

    The password is the first of: ``password``, the first line of ``password_file``,
    the environment variable ``CLICKHOUSE_PASSWORD``, the URL's. Raises
    :class:`SourceError` for anything that is not one of the forms above.
    """
    scheme, colon, rest = text.partition(":")
    scheme = scheme.lower()
    if not colon or scheme not in ("clickhouse", "clickhouses", "chdb"):
        raise SourceError(_unrecognized(text))
    if scheme == "chdb":
        spec = SourceSpec(kind="chdb", path=_chdb_path(text, rest))
    else:
        spec = _clickhouse_spec(text, scheme == "clickhouses", secure)
        spec.password = _password(password, password_file, spec.password)
    if database is not None:
        spec.database = database
    spec.traces_table = traces_table if traces_table is not None else spec.traces_table
    spec.logs_table = logs_table if logs_table is not None else spec.logs_table
    for option, value in (("database", spec.database), ("traces table", spec.traces_table),
                          ("logs table", spec.logs_table)):  # fmt: skip
        if not value:
            raise SourceError(f"the {option} name is empty")
    return spec


def _unrecognized(text: str) -> str:
    """The message for a source of no known form, with a hint for the usual mistakes."""
    lower = text.lower()
    if lower.startswith(("http://", "https://")):
        return f"{_USAGE}: write clickhouse://HOST:8123 for http:// and clickhouses://HOST:8443 for https://"
    if lower.startswith(("tcp://", "native://")):
        return f"{_USAGE}: tracetui speaks ClickHouse's HTTP interface (port 8123, 8443 with TLS), not native TCP"
    if "://" in text:
        return _USAGE
    if _HOST_PORT.fullmatch(text):
        return f"{_USAGE}: did you mean clickhouse://{text}?"
    return f"{_USAGE}; for a SQLite file use --db"


def _chdb_path(text: str, rest: str) -> Path:
    """``chdb:PATH`` or ``chdb:///abs/path`` -> the directory (``~`` expanded)."""
    if rest.startswith("///"):
        rest = rest[2:]
    elif rest.startswith("//"):
        raise SourceError(f"{text!r}: write chdb:PATH (relative or absolute) or chdb:///abs/path for a chdb directory")
    if not rest:
        raise SourceError("chdb: needs a directory: chdb:PATH")
    return Path(rest).expanduser()


def _clickhouse_spec(text: str, tls: bool, secure: bool | None) -> SourceSpec:
    """The parts of a ``clickhouse(s)://`` URL (its password as written; the caller applies the precedence)."""
    url = urlsplit(text)
    try:
        port = url.port
    except ValueError:
        raise SourceError(f"{_redact_url(text)}: the port is not a number from 1 to 65535") from None
    if not url.hostname:
        raise SourceError(f"{_redact_url(text)}: no host (clickhouse://USER@HOST:PORT/DATABASE)")
    if url.query or url.fragment:
        raise SourceError(f"{_redact_url(text)}: no ?options or #fragment here; use the command-line options")
    path = url.path.strip("/")
    if "/" in path:
        raise SourceError(f"{_redact_url(text)}: the path is one database name, not {path!r}")
    use_tls = tls if secure is None else secure
    return SourceSpec(
        kind="clickhouse",
        host=url.hostname,
        port=port or (HTTPS_PORT if use_tls else HTTP_PORT),
        user=unquote(url.username) if url.username else "default",
        password=unquote(url.password) if url.password else "",
        database=unquote(path) or "default",
        secure=use_tls,
    )


def _redact_url(text: str) -> str:
    """The URL with its password, if any, replaced by ``***``."""
    url = urlsplit(text)
    if url.password is None:
        return text
    userinfo, _, hostport = url.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return url._replace(netloc=f"{user}:***@{hostport}").geturl()


def _password(explicit: str | None, password_file: Path | None, from_url: str) -> str:
    """The precedence: explicit > password file (first line, stripped) > $CLICKHOUSE_PASSWORD > the URL's."""
    if explicit is not None:
        return explicit
    if password_file is not None:
        try:
            lines = Path(password_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
            raise SourceError(f"cannot read the password file {password_file}: {reason}") from None
        return lines[0].strip() if lines else ""
    env = os.environ.get(PASSWORD_ENV)
    if env is not None:
        return env
    return from_url


# --- connecting --------------------------------------------------------------------------------------


class Connection:
    """An open ``clickhouse_connect`` client for a source, and for ``chdb:`` the server subprocess behind it."""

    def __init__(self, client: Client, spec: SourceSpec, server: subprocess.Popen[bytes] | None = None) -> None:
        self.client = client
        self.spec = spec
        self._server = server
        # Stops the server even if close() is never called (at exit, or when the Connection is collected).
        self._finalizer = weakref.finalize(self, _stop_server, server) if server is not None else None

    @property
    def server_pid(self) -> int | None:
        """The chdb server's process id (None for a ClickHouse server)."""
        return self._server.pid if self._server is not None else None

    def close(self) -> None:
        """Close the client, then let the chdb server close its session and exit (idempotent)."""
        try:
            self.client.close()
        finally:
            if self._finalizer is not None:
                self._finalizer()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Connection({self.spec.display()})"

    def borrowed(self, database: str | None = None) -> Borrowed:
        """This connection's client for a second user (another reader, or another ``database``), which closing
        leaves open: the owner closes it, and stops the chdb server, once."""
        spec = self.spec if database is None else dataclasses.replace(self.spec, database=database)
        return Borrowed(self.client, spec)


class Borrowed:
    """A :class:`Connection`'s client used by someone who does not own it: ``close()`` does nothing."""

    def __init__(self, client: Client, spec: SourceSpec) -> None:
        self.client = client
        self.spec = spec

    def close(self) -> None:
        pass


def connect(spec: SourceSpec, *, create_database: bool = False) -> Connection:
    """Open a client for ``spec``; for ``chdb`` start the server subprocess first. Raises :class:`SourceError`.

    ``create_database`` creates ``spec.database`` when it is missing (for ``tracetui
    import --into``); otherwise a missing database is an error, as for any query.
    """
    get_client = _client_factory(spec.kind)
    if spec.kind == "chdb":
        return _connect_chdb(spec, get_client, create_database)
    where = f"{spec.host}:{spec.port}"
    try:
        client = _open_client(get_client, spec, create_database, host=spec.host, port=spec.port,
                              username=spec.user, password=spec.password, secure=spec.secure)  # fmt: skip
    except Exception as exc:
        hint = ""
        if spec.port in NATIVE_PORTS:
            hint = f" ({spec.port} is a native-protocol port; tracetui needs the HTTP one, 8123 or 8443 with TLS)"
        raise SourceError(_scrub(f"cannot connect to ClickHouse at {where}: {_cause(exc)}{hint}", spec)) from None
    return Connection(client, spec)


def _client_factory(kind: str) -> Any:
    """``clickhouse_connect.get_client``, imported now; SourceError naming the extra to install when missing."""
    extra = _CHDB_EXTRA if kind == "chdb" else _CLICKHOUSE_EXTRA
    try:
        import clickhouse_connect
    except ImportError:
        raise SourceError(extra) from None
    # Its errors reach the user as SourceError; without a handler, logging's last resort would also print
    # them on stderr (over the UI). Records still propagate to any handler the application configures.
    logging.getLogger("clickhouse_connect").addHandler(_NULL_HANDLER)
    if kind == "chdb" and importlib.util.find_spec("chdb") is None:  # found without importing it
        raise SourceError(extra)
    return clickhouse_connect.get_client


def _open_client(get_client: Any, spec: SourceSpec, create_database: bool, **options: Any) -> Client:
    """``get_client(**options)`` in ``spec.database``, creating that first when asked to."""
    if not create_database:
        return get_client(database=spec.database, **options)
    client = get_client(**options)
    client.command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(spec.database)}")
    client.database = spec.database
    return client


def _connect_chdb(spec: SourceSpec, get_client: Any, create_database: bool) -> Connection:
    """Start the server on ``spec.path``, wait for its port, and connect to it with a one-time password."""
    assert spec.path is not None
    password = secrets.token_urlsafe(24)
    # The server's stderr goes to a file, read only if the start fails: a pipe nobody reads could fill and block it.
    # The server keeps its own descriptor of the (unlinked) file after this one closes.
    with tempfile.TemporaryFile() as stderr:
        server = subprocess.Popen(
            [sys.executable, "-m", "tracetui.clickhouse.chdb_server", str(spec.path), "--port", "0"],
            stdin=subprocess.PIPE,  # kept open: its end of file (close, or this process dying) stops the server
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, CHDB_PASSWORD_ENV: password},
        )
        try:
            port = _read_port(server, CHDB_START_TIMEOUT_S)
        except SourceError as exc:
            _stop_server(server)
            raise SourceError(f"cannot start the chdb server for {spec.path}: {exc}{_tail(stderr)}") from None
        finally:
            assert server.stdout is not None
            server.stdout.close()
    try:
        # compress=False: the server reads plain request bodies only (and compressing on loopback gains nothing).
        client = _open_client(get_client, spec, create_database, host="127.0.0.1", port=port, username="default",
                              password=password, compress=False)  # fmt: skip
    except Exception as exc:
        _stop_server(server)
        raise SourceError(f"cannot open {spec.display()}: {_cause(exc)}") from None
    return Connection(client, spec, server)


def _read_port(server: subprocess.Popen[bytes], timeout: float) -> int:
    """The port of the server's ``LISTENING <port>`` line; SourceError if it exits or is silent too long."""
    assert server.stdout is not None
    deadline = time.monotonic() + timeout
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(server.stdout, selectors.EVENT_READ)
        while b"\n" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SourceError(f"it did not report its port within {timeout:.0f}s")
            if selector.select(left):
                chunk = os.read(server.stdout.fileno(), 4096)
                if not chunk:
                    code = server.wait()
                    raise SourceError(f"it exited with status {code}")
                buffer += chunk
    line = buffer.split(b"\n", 1)[0].decode(errors="replace").strip()
    word, _, port = line.partition(" ")
    if word != "LISTENING" or not port.isdigit():
        raise SourceError(f"unexpected first line {line!r}")
    return int(port)


def _tail(stderr: IO[bytes], lines: int = 12) -> str:
    """The server's stderr as a suffix for a message: its own one-line messages when it wrote any (the engine
    may have printed a stack trace before them), else the last ``lines`` lines; empty when there is nothing."""
    stderr.seek(0)
    text = stderr.read().decode(errors="replace").strip()
    own = [line for line in text.splitlines() if line.startswith(CHDB_MESSAGE_PREFIX)]
    shown = own or text.splitlines()[-lines:]
    return ":\n" + "\n".join(shown) if shown else ""


def _stop_server(server: subprocess.Popen[bytes] | None) -> None:
    """Close the server's stdin (it stops and closes its session), then wait; kill it if it does not exit."""
    if server is None:
        return
    if server.stdin is not None and not server.stdin.closed:
        try:
            server.stdin.close()
        except OSError:
            pass
    try:
        server.wait(CHDB_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def _cause(exc: BaseException) -> str:
    """What went wrong, in a few words: the socket's reason (``Connection refused``, ``Name or service not known``)
    when the chain of causes has one, else the first line of the server's message."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, OSError) and link.strerror:
            return str(link.strerror)
        link = link.__cause__ or link.__context__
    text = (str(exc).strip() or type(exc).__name__).split("\n", 1)[0]
    text = _FOR_URL.sub("", text)
    return text.removeprefix("Received ClickHouse exception, ")


def _scrub(message: str, spec: SourceSpec) -> str:
    """``message`` with the password, if it appears, replaced by ``***``."""
    return message.replace(spec.password, "***") if spec.password else message

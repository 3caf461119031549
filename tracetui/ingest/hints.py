"""Hints that run as printed, and the message for a port that is already taken (no Textual, no click).

Every command we suggest is spelled the way it runs from the user's terminal:
"tracetui" only when that is on their PATH and is this installation. After
`make run` the console script is .venv/bin/tracetui, which is not on the PATH,
so hints name it by its absolute path (`pipx install .` or `uv tool install .`
put a `tracetui` on the PATH; the README says so).
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from tracetui.model.fmt import safe_text

#: Set by `tracetui serve` for its receiver process (started as `python -m tracetui`), so that the
#: receiver's messages spell tracetui the way the user started it.
COMMAND_ENV = "TRACETUI_COMMAND"


def command_name(argv0: str | None = None, which=shutil.which) -> str:
    """How the user can run this tracetui from any directory.

    "tracetui" when that is on the PATH and is this installation; else the absolute
    path of the console script we were started as; else ``python -m tracetui``
    with this interpreter's absolute path.
    """
    if argv0 is None:
        inherited = os.environ.get(COMMAND_ENV)
        if inherited:
            return inherited
        argv0 = sys.argv[0]
    on_path = which("tracetui")
    path = Path(argv0) if argv0 else None
    if path is not None and path.name == "tracetui" and path.exists():
        if on_path and Path(on_path).resolve() == path.resolve():
            return "tracetui"
        return shlex.quote(os.path.abspath(argv0))
    if on_path and Path(on_path).resolve().parent == Path(sys.executable).resolve().parent:
        return "tracetui"  # `python -m tracetui` from the environment whose tracetui is on the PATH
    return f"{shlex.quote(sys.executable)} -m tracetui"


def hint(arguments: str) -> str:
    """``tracetui ARGUMENTS`` spelled so that it runs as printed (see command_name)."""
    return f"{command_name()} {arguments}"


# --- a port that is already taken -------------------------------------------------------------


@dataclass(frozen=True)
class PortHolder:
    """The process listening on a port, as far as /proc tells us."""

    pid: int
    command: list[str]

    def describe(self) -> str:
        """ "pid 3062 (tracetui serve --headless --db a.db)": the interpreter left out, programs by their name."""
        command = self.command
        if command and Path(command[0]).name.startswith("python") and len(command) > 1:
            command = command[1:]
            if command[0] == "-m" and len(command) > 1:
                command = command[1:]
        shown = " ".join([Path(command[0]).name, *command[1:]]) if command else "?"
        return f"pid {self.pid} ({safe_text(shown, 80)})"

    @property
    def is_tracetui(self) -> bool:
        """Started as the console script or as `python -m tracetui` (not merely from a path holding the word)."""
        head = self.command[:3]
        if any(Path(arg).name == "tracetui" for arg in head):
            return True
        return (
            "-m" in head
            and head.index("-m") + 1 < len(self.command)
            and self.command[head.index("-m") + 1] == "tracetui"
        )

    def db_path(self) -> str | None:
        """The --db of a tracetui holding the port, so `view` can be pointed at its database."""
        if not self.is_tracetui or "--db" not in self.command:
            return None
        i = self.command.index("--db")
        return self.command[i + 1] if i + 1 < len(self.command) else None


def port_is_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound for listening now (as the receivers will, with SO_REUSEADDR).

    Checked before grpc tries: grpc's C core logs a raw ``E... add_port.cc`` line to
    stderr when it cannot bind, before our own message.
    """
    if port == 0:
        return True
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((bare, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on ``port`` (TCP, IPv4 and IPv6), from /proc/net/tcp{,6} (Linux)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # sl local_address rem_address st ... inode; st 0A is LISTEN
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def port_holder(port: int) -> PortHolder | None:
    """The process listening on ``port``, when /proc lets us see it (our own user's processes, on Linux).

    Reads /proc/net/tcp for the listening socket's inode, then the processes' open
    files for that socket: what ``ss -ltnp`` does, without a dependency (psutil) or
    a subprocess. None when not found (another user's process, or not Linux).
    """
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in targets:
                    raw = (proc / "cmdline").read_bytes()
                    return PortHolder(int(proc.name), [a.decode(errors="replace") for a in raw.split(b"\0") if a])
        except OSError:
            continue  # gone, or not ours to read
    return None


def port_in_use_message(host: str, busy: list[tuple[str, int]]) -> str:
    """One message for the ports that are taken: which, by whom when we can tell, and the two ways forward.

    ``busy`` is [(protocol, port)], e.g. [("OTLP/gRPC", 4317), ("OTLP/HTTP", 4318)]. Three lines:
    what happened, then one command per way forward, each runnable as printed. `view` is offered
    only when the holder is (or may be) a tracetui: it cannot show what a Collector receives.
    """
    ports = " and ".join(f"{port} ({protocol})" for protocol, port in busy)
    verb = "port {} is" if len(busy) == 1 else "ports {} are"
    holders = [holder for _, port in busy if (holder := port_holder(port)) is not None]
    by = f", by {holders[0].describe()}" if holders else ""
    db = next((path for holder in holders if (path := holder.db_path())), None)
    if holders and not any(holder.is_tracetui for holder in holders):
        other = f"  or stop {holders[0].describe()}, which is not a tracetui, and start again"
    else:
        other = f"  or watch the running one:     {hint('view' + (f' --db {shlex.quote(db)}' if db else ''))}"
    return (
        f"{verb.format(ports)} already in use on {host}{by}.\n"
        f"  Start on free ports:          {hint('serve --grpc-port 0 --http-port 0')}\n"
        f"{other}"
    )

"""Settings shared by the receiver, the UI and the scripting commands."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_GRPC_PORT = 4317
DEFAULT_HTTP_PORT = 4318
#: OTLP recommends accepting requests of up to 64 MiB (exporters cap theirs there).
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
#: Spans waiting for the writer before exports are answered with a retryable
#: UNAVAILABLE. Bounds the receiver's memory under overload.
DEFAULT_MAX_PENDING_SPANS = 50_000
DB_ENV = "TRACETUI_DB"
#: Bearer token the receiver requires when set (`--token`).
TOKEN_ENV = "TRACETUI_TOKEN"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def default_decode_workers() -> int:
    """Ingest worker processes (decode and write): one per core, at most two.

    Their transactions take turns under the write lock, so a third would add
    ~50 MB of memory for the decoding it runs in parallel; on two cores it has none to use.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(2, cores))


def default_db_path() -> Path:
    """Where the database lives unless `--db` or `TRACETUI_DB` says otherwise."""
    env = os.environ.get(DB_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("tracetui", appauthor=False)) / "traces.db"


@dataclass(frozen=True)
class ReceiverSettings:
    """Everything the receiver process needs to start."""

    db_path: Path
    host: str = DEFAULT_HOST
    grpc_port: int = DEFAULT_GRPC_PORT
    http_port: int = DEFAULT_HTTP_PORT
    #: Retention limits (None: unlimited); see tracetui.store.retention.
    max_spans: int | None = None
    max_db_mb: int | None = None
    max_age: str | None = None
    #: User price file (TOML); None: the one in the user config directory, if any.
    prices_path: Path | None = None
    #: When set, exports need `authorization: Bearer TOKEN` (HTTP 401 / gRPC UNAUTHENTICATED otherwise).
    token: str | None = field(default=None, repr=False)
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_pending_spans: int = DEFAULT_MAX_PENDING_SPANS
    #: Handler threads: each decodes one export then waits for its commit (cheap while waiting).
    grpc_workers: int = 32
    #: Processes that decode exports (0: decode in the receiver process itself).
    decode_workers: int = field(default_factory=lambda: default_decode_workers())
    #: OTLP/HTTP: seconds for a request's headers (and idle keep-alive), and for its body.
    http_header_timeout_s: float = 10.0
    http_body_timeout_s: float = 30.0
    #: OTLP/gRPC: seconds for an admitted export's message to arrive (tracetui.ingest.grpc_server.ExportHandler).
    grpc_body_timeout_s: float = 10.0
    #: Exit when the parent process goes away (used by `tracetui serve`).
    exit_with_parent: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS

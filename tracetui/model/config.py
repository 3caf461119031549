"""Settings shared by the receiver, the UI and the scripting commands."""

from __future__ import annotations

import functools
import json
import os
import re
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
    #: Build the full-text index and the JSON attributes in a background process (tracetui.jobs.indexer).
    index: bool = True
    #: What of the message content the index, the JSON attributes, exports and the judge may copy.
    content: ContentPolicy = field(default_factory=lambda: ContentPolicy())
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS


# --- where prompts may be copied ---------------------------------------------------------

#: Named redaction patterns for ``--redact`` (anything else given is a regular expression).
REDACTION_PRESETS: dict[str, str] = {
    # API keys and tokens: OpenAI/Anthropic "sk-...", AWS access key ids, GitHub and Slack tokens,
    # Google API keys, and the value after "Bearer ".
    "keys": (
        r"\bsk-[A-Za-z0-9_\-]{16,}|\bAKIA[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{20,}"
        r"|\bxox[abpr]-[A-Za-z0-9\-]{10,}|\bAIza[0-9A-Za-z_\-]{30,}|(?<=Bearer )[A-Za-z0-9._~+/\-]{16,}=*"
    ),
    "emails": r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}",
}
REDACTED = "[redacted]"
#: What stands for a message's content when content is not kept (``--no-content``).
CONTENT_OMITTED = "[content not kept]"


class RedactionError(ValueError):
    """A ``--redact`` value that is neither a preset name nor a valid regular expression."""


@dataclass(frozen=True)
class ContentPolicy:
    """Where message content (prompts, completions, tool arguments and results) may be copied.

    The stored spans always keep what the app sent (raw OTLP). Every *copy* honours
    this policy: the full-text index and the JSON attributes the indexer writes
    (tracetui.jobs.indexer), exports, and the judge (which sends content to a model).
    ``serve --no-content`` / ``--redact`` set it; the receiver records it in the
    database (meta ``content_policy``) so that later readers of the file follow it
    (``Reader.content_policy``; tracetui.query.scrub makes the exports' copies).
    """

    #: False: no message content is copied at all (``--no-content``).
    keep_content: bool = True
    #: Preset names (REDACTION_PRESETS) or regular expressions; matches become "[redacted]".
    redact: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.pattern()  # a bad expression fails here, at startup, not in the indexer later

    def pattern(self) -> re.Pattern[str] | None:
        """One compiled alternation of every redaction, or None when there are none."""
        if not self.redact:
            return None
        return _compile_redactions(self.redact)

    def clean(self, text: str) -> str:
        """Message content as it may be copied: "" without content, else with every redaction applied."""
        return self.redacted(text) if self.keep_content else ""

    def redacted(self, text: str) -> str:
        """``text`` with every redaction applied (for what is copied even without content: names, errors)."""
        pattern = self.pattern()
        return pattern.sub(REDACTED, text) if pattern is not None and text else text

    def to_json(self) -> str:
        return json.dumps({"keep_content": self.keep_content, "redact": list(self.redact)})

    @classmethod
    def from_json(cls, text: str | None) -> ContentPolicy:
        """The policy recorded in a database; the default (keep everything) when none was."""
        if not text:
            return cls()
        data = json.loads(text)
        return cls(bool(data.get("keep_content", True)), tuple(str(p) for p in data.get("redact", ())))


@functools.lru_cache(maxsize=8)
def _compile_redactions(redact: tuple[str, ...]) -> re.Pattern[str]:
    parts = []
    for item in redact:
        expression = REDACTION_PRESETS.get(item, item)
        try:
            re.compile(expression)
        except re.error as exc:
            raise RedactionError(
                f"--redact {item!r}: not a preset ({', '.join(REDACTION_PRESETS)}) nor a regular expression: {exc}"
            ) from None
        flags = _LEADING_FLAGS.match(expression)  # "(?i)word" alone is fine, not inside an alternation: scope it
        parts.append(f"(?{flags[1]}:{expression[flags.end() :]})" if flags else f"(?:{expression})")
    try:
        return re.compile("|".join(parts))
    except re.error as exc:
        raise RedactionError(f"--redact {' '.join(redact)!r}: these expressions do not combine: {exc}") from None


#: Global inline flags at the start of a regular expression, e.g. "(?i)".
_LEADING_FLAGS = re.compile(r"^\(\?([imsx]+)\)")

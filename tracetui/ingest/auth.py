"""The optional bearer token (``--token`` / ``TRACETUI_TOKEN``), shared by the gRPC and HTTP receivers."""

from __future__ import annotations

import hmac


def bearer_ok(header: str | bytes | None, token: str) -> bool:
    """Whether an ``authorization`` value is ``Bearer TOKEN`` (scheme case-insensitive; constant-time compare)."""
    if not header:
        return False
    if isinstance(header, bytes):
        header = header.decode("utf-8", "replace")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode("utf-8"), token.encode("utf-8"))

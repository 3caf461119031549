"""Giving freed memory back to the system (glibc's ``malloc_trim`` and ``mallopt``; no-ops elsewhere).

CPython frees objects into its own arenas and glibc's heaps, which keep their
pages: after a large message (the receiver) or a large trace closed (the UI),
RSS stays where the peak was. These helpers return what is free.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ctypes

#: glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Allocations from this size up get their own mapping, returned to the system when freed.
MMAP_THRESHOLD = 128 * 1024


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc through ctypes, or None (another C library, or none found).

    Looked up once: ``ctypes.util.find_library`` runs ``ldconfig -p`` in a child process.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt, libc.malloc_trim  # noqa: B018 - glibc's, or AttributeError
    except (OSError, AttributeError):  # not glibc
        return None
    return libc


#: A message at least this large is followed by :func:`trim_freed_memory` once received: above what
#: an SDK exporter's 512-span batch weighs (~0.75 MB of LLM spans), where a trim after each 1.5 MB
#: export cost ~2 us a span (benchmarks/README.md, "Memory per process under the floods").
TRIM_AFTER_BYTES = 4 * 1024 * 1024
#: Seconds between two trims at most: each walks every heap (milliseconds),
#: so a steady stream of large messages pays for two a second, not one per message.
TRIM_INTERVAL_S = 0.5
_last_trim = 0.0


def trim_freed_memory() -> None:
    """Give the system back the free pages inside glibc's heaps (``malloc_trim(0)``; no-op elsewhere).

    grpc core receives a message as many small buffers, then copies them into
    one Python bytes object and frees them; freed in the middle of a thread's
    heap, their pages stayed resident. After a 40 MB message that was ~87 MB
    of RSS holding nothing. Skipped when the last trim was under
    :data:`TRIM_INTERVAL_S` ago (what it leaves is given back by the next one).
    """
    global _last_trim
    now = time.monotonic()
    if now - _last_trim < TRIM_INTERVAL_S:
        return
    _last_trim = now  # unlocked: two threads trimming at once only costs a trim
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def return_freed_memory_promptly() -> None:
    """Make glibc give large freed blocks back to the system at once (no-op elsewhere).

    By default glibc raises its mmap threshold to the largest block freed so far
    (up to 32 MB), after which request bodies are carved from per-thread heaps
    that keep their pages: 8 exports of 30 MB, each admitted alone, still took
    the receiver from 60 to 387 MB of RSS, one heap per handler thread; with a
    fixed threshold, 216 MB. Setting it also turns the dynamic adjustment off.
    """
    libc = _libc()
    if libc is None:
        return
    libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    libc.mallopt(_M_TRIM_THRESHOLD, MMAP_THRESHOLD)

"""Files of OTLP messages: 4-byte big-endian length, then that many bytes, repeated.

This is how ``shared/fixtures/*.otlp`` are framed (one record per export call).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path


class FramingError(ValueError):
    """The file is not a sequence of length-prefixed records."""


def read_length_delimited(path: Path) -> Iterator[bytes]:
    """Yield each record's bytes; raises FramingError naming the offset of a bad record."""
    data = Path(path).read_bytes()
    offset = 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise FramingError(f"{path}: truncated length prefix at byte {offset}")
        (size,) = struct.unpack_from(">I", data, offset)
        offset += 4
        if offset + size > len(data):
            raise FramingError(
                f"{path}: record at byte {offset - 4} claims {size} bytes, only {len(data) - offset} left"
            )
        yield data[offset : offset + size]
        offset += size

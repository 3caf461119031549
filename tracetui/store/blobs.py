"""Long repeated strings stored once: a span's raw bytes with its long JSON strings cut out.

Agent traffic repeats itself. Every model call sends the same system prompt and
tool definitions again, and each turn of a conversation re-sends all the turns
before it, inside one JSON attribute (``gen_ai.input.messages``) whose other
parts (tool-call ids, the newest message) differ. Storing each span's OTLP bytes
whole (``spans.raw``) stored those strings again and again.

So before a batch is written (in the decode worker, outside the write lock),
every JSON string literal of at least :data:`MIN_CUT` bytes found in a span's
serialized bytes is cut out, keyed by its blake2b-128 digest, into the
``blobs`` table (``INSERT`` once, whatever the number of spans using it), and
the span's ``raw`` becomes a *compact raw*::

    MARK  varint(n)  n x (varint(len) literal-bytes digest[16])  tail-bytes

Reading it back is concatenation: the literal bytes, each digest's blob, the
tail. Nothing is parsed or re-encoded, so the bytes read back are exactly the
bytes that arrived (whatever the field order, unknown fields or encoding of
the span); cutting at any offset would be just as exact, the JSON literals are
only where the repeats are. A literal is found by its bytes alone (a quoted run
without control bytes, which protobuf's framing always has), so cutting costs
one C regex scan per large span. Spans shorter than :data:`MIN_SCAN` bytes
are left as they are, and so is everything stored before this version: a raw
that does not start with :data:`MARK` (no serialized Span can: field number 0
does not exist) is a plain serialized Span.

Every reader of ``spans.raw`` goes through :class:`Blobs` (``expand``).

Garbage: a blob carries ``last_span``, a spans row id at least as high as
every span using it, less :data:`SLACK` (refreshed by the commit that uses it
when it has fallen further behind: one write per blob per SLACK spans, not one
per use). Once every span below ``last_span + SLACK`` is gone, nothing uses it;
retention deletes such blobs in the transaction that evicts the spans
(:func:`collect`), keeping those the spans of pinned traces use.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Iterable, Iterator

from tracetui.model.rows import COL, Decoded

#: A compact raw starts with these bytes (a serialized Span cannot start with a zero byte).
MARK = b"\x00\x01"
#: JSON string literals at least this long (in bytes, quotes excluded) are stored as blobs.
#: A reference costs ~18 bytes in the span, a new blob ~70 bytes of table and indexes:
#: shorter strings (tool-call ids, short answers) rarely repeat enough to pay for it.
MIN_CUT = 256
#: Spans smaller than this are never scanned (they cannot hold a literal worth cutting and a reference).
MIN_SCAN = 2 * MIN_CUT
#: How far (in spans row ids) a blob's ``last_span`` may lag behind its newest use.
SLACK = 10_000
DIGEST_BYTES = 16

_I_RAW = COL["raw"]
# A JSON string literal: quote, runs of ordinary bytes or backslash escapes, quote. Control
# bytes are excluded (JSON escapes them; protobuf's tags and lengths are full of them), so a
# match never runs across fields of the binary message. The lookahead skips at once the short
# literals (keys, ids, roles) that make most of a JSON value's quotes: a long string that starts
# with an escape within its first 16 bytes is not cut (it stays in the span, as before).
_LITERAL = re.compile(rb'"(?=[^"\\\x00-\x1f]{16})[^"\\\x00-\x1f]*+(?:\\[^\x00-\x1f][^"\\\x00-\x1f]*+)*+"')

_UPSERT = (
    "INSERT INTO blobs(digest, bytes, last_span) VALUES (?, ?, ?) "
    "ON CONFLICT(digest) DO UPDATE SET last_span = excluded.last_span "
    f"WHERE last_span < excluded.last_span - {SLACK:d}"
)


class MissingBlob(LookupError):
    """A compact raw names a blob the database does not hold (a damaged file)."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def cut(raw: bytes, found: dict[bytes, bytes]) -> bytes:
    """``raw`` with its long JSON string literals replaced by digests (each added to ``found``).

    Returns ``raw`` itself when there is nothing to cut.
    """
    if len(raw) < MIN_SCAN:
        return raw
    pieces: list[bytes] = []
    pos = count = 0
    for match in _LITERAL.finditer(raw):
        start, end = match.span()
        start, end = start + 1, end - 1  # the quotes stay in place
        if end - start < MIN_CUT:
            continue
        value = raw[start:end]
        digest = hashlib.blake2b(value, digest_size=DIGEST_BYTES).digest()
        found[digest] = value
        pieces += (_varint(start - pos), raw[pos:start], digest)
        pos = end
        count += 1
    if not count:
        return raw
    return b"".join((MARK, _varint(count), *pieces, raw[pos:]))


def _parts(compact: bytes) -> Iterator[bytes]:
    """The pieces of a compact raw, in order: literal bytes and 16-byte digests alternate, then the tail."""
    count, pos = _read_varint(compact, len(MARK))
    for _ in range(count):
        size, pos = _read_varint(compact, pos)
        yield compact[pos : pos + size]
        pos += size
        yield compact[pos : pos + DIGEST_BYTES]
        pos += DIGEST_BYTES
    yield compact[pos:]


def digests(compact: bytes) -> list[bytes]:
    """The blobs a raw uses (none for a plain serialized Span)."""
    if not compact.startswith(MARK):
        return []
    return list(_parts(compact))[1:-1:2]


def expand_with(compact: bytes, blob: dict[bytes, bytes]) -> bytes:
    """The span's original bytes, the blobs given by digest."""
    if not compact.startswith(MARK):
        return compact
    parts = list(_parts(compact))
    for i in range(1, len(parts) - 1, 2):
        parts[i] = blob[parts[i]]
    return b"".join(parts)


def compact_rows(decoded: Decoded) -> None:
    """Cut the long strings out of the raw bytes of ``decoded``'s span rows (into ``decoded.blobs``).

    Runs after tracetui.store.batch.prepare (which reads the original bytes) and before the write lock.
    """
    found = decoded.blobs
    spans = decoded.spans
    for n, row in enumerate(spans):
        raw = row[_I_RAW]
        if len(raw) < MIN_SCAN or raw.startswith(MARK):
            continue
        compact = cut(raw, found)
        if compact is not raw:
            spans[n] = (*row[:_I_RAW], compact, *row[_I_RAW + 1 :])


def store(conn: sqlite3.Connection, parts: Iterable[Decoded], spans: int) -> None:
    """Insert the blobs of a batch of ``spans`` spans, in the transaction that inserts them (before them)."""
    found: dict[bytes, bytes] = {}
    for decoded in parts:
        found.update(decoded.blobs)
    if not found:
        return
    # the highest row id the batch's spans can get (new rows take max(id) + 1, + 2...)
    newest = (conn.execute("SELECT max(id) FROM spans").fetchone()[0] or 0) + spans
    conn.executemany(_UPSERT, [(digest, value, newest) for digest, value in found.items()])


def collect(conn: sqlite3.Connection) -> int:
    """Delete the blobs no stored span uses any more, in the caller's transaction; returns how many.

    Called by retention after it deleted traces. The spans of pinned traces (a
    UI is showing them; they may be much older than the rest) do not hold back
    the others' blobs: their own blobs are kept by name.
    """
    low = conn.execute(
        "SELECT id FROM spans WHERE trace_id NOT IN (SELECT trace_id FROM pins) ORDER BY id LIMIT 1"
    ).fetchone()
    keep: set[bytes] = set()
    for (raw,) in conn.execute(
        "SELECT raw FROM spans WHERE trace_id IN (SELECT trace_id FROM pins) AND substr(raw, 1, 2) = ?", (MARK,)
    ):
        keep.update(digests(raw))
    before = conn.total_changes
    sql = "DELETE FROM blobs WHERE last_span < ?" if low is not None else "DELETE FROM blobs WHERE ?"
    if keep:
        marks = ",".join("?" * len(keep))
        sql += f" AND digest NOT IN ({marks})"
    conn.execute(sql, [low[0] - SLACK if low is not None else 1, *keep])
    return conn.total_changes - before


class Blobs:
    """Reads raw spans back whole through one connection (caching the blobs it fetched).

    Blobs never change (content-addressed), so the cache is never stale; it is bounded by bytes.
    """

    CACHE_BYTES = 16 * 1024 * 1024

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._cache: dict[bytes, bytes] = {}
        self._cached_bytes = 0

    def expand(self, raw: bytes) -> bytes:
        """The span's original serialized bytes (``raw`` itself when it was stored whole)."""
        if not raw.startswith(MARK):
            return raw
        return expand_with(raw, self._fetch(digests(raw)))

    def expand_all(self, raws: list[bytes]) -> list[bytes]:
        """``expand`` for many raws, fetching the blobs they need in a few queries."""
        needed = {d for raw in raws if raw.startswith(MARK) for d in digests(raw)}
        if not needed:
            return raws
        blob = self._fetch(needed)
        return [expand_with(raw, blob) for raw in raws]

    def _fetch(self, wanted: Iterable[bytes]) -> dict[bytes, bytes]:
        cache = self._cache
        found = {d: cache[d] for d in wanted if d in cache}
        missing = [d for d in wanted if d not in found]
        for i in range(0, len(missing), 500):
            chunk = missing[i : i + 500]
            rows = self.conn.execute(
                f"SELECT digest, bytes FROM blobs WHERE digest IN ({','.join('?' * len(chunk))})", chunk
            ).fetchall()
            found.update(rows)
            for digest, value in rows:
                self._remember(digest, value)
        if len(found) < len(set(wanted)):
            lost = next(d for d in wanted if d not in found)
            raise MissingBlob(f"a stored span refers to blob {lost.hex()}, which the database does not hold")
        return found

    def _remember(self, digest: bytes, value: bytes) -> None:
        if self._cached_bytes + len(value) > self.CACHE_BYTES:
            self._cache.clear()
            self._cached_bytes = 0
        self._cache[digest] = value
        self._cached_bytes += len(value)

"""Values stored once: a span's raw bytes with their repeated parts cut out, and provenance interned.

Agent traffic repeats itself. Every model call sends the same system prompt and
tool definitions again, and each turn of a conversation re-sends all the turns
before it, inside one JSON attribute (``gen_ai.input.messages``) whose other
parts (tool-call ids, the newest message) differ. Storing each span's OTLP bytes
whole (``spans.raw``) stored those bytes again and again.

So before a batch is written (in the decode worker, outside the write lock),
the repeated parts of each span's serialized bytes (:func:`cut`: whole tool
definitions, each chat message followed by another, long JSON string literals)
are cut out, keyed by their blake2b-128 digest, into the ``blobs`` table
(``INSERT`` once, whatever the number of spans using them), and the span's
``raw`` becomes a *compact raw*::

    MARK  varint(n)  n x (varint(len) literal-bytes digest[16])  tail-bytes

Reading it back is concatenation: the literal bytes, each digest's blob, the
tail. Nothing is parsed or re-encoded, so the bytes read back are exactly the
bytes that arrived (whatever the field order, unknown fields or encoding of
the span): cutting at any offset would be just as exact; the places chosen are
only where the repeats are. They are found by their bytes alone (a search for
a marker, a C regex scan for literals), never by parsing the span. Spans
shorter than :data:`MIN_SCAN` bytes are left as they are, and so is everything
stored before this version: a raw that does not start with :data:`MARK` (no
serialized Span can: field number 0 does not exist) is a plain serialized Span.

Then the raw (compact or plain) is compressed (:func:`compressed`, schema v14) with zstd and a
preset dictionary of the attribute keys and short values that instrumentation libraries
send (``raw-dict-1.bin``, built by scripts/make_raw_dictionary.py from the captures in
tests/fixtures): ``ZMARK``, the dictionary's number, a zstd frame. A span of a few hundred
bytes is mostly such keys, which a compressor cannot find in so little text on its own:
742 -> ~400 bytes on the benchmark traffic. Decompressing gives back the same bytes; a raw
that does not shrink is stored as it was. Measured on the benchmark's spans: zstd level 3
takes ~10 us to compress and ~3 us to decompress with a reused context; zlib with the same
dictionary made 346 bytes but cost ~40 us to compress; the standard library's zstd (Python
3.14) creates a context for every frame, ~18 us.

Every reader of ``spans.raw`` goes through :class:`Blobs` (``expand``).

The normalizer's provenance JSON (which attribute each LLM field came from,
~250 bytes, the same for every call one library records) is stored once in
``provenances``; ``spans.provenance`` then holds its id (an 8-byte blob), and SQL reads
either form through :func:`provenance_sql`.

Garbage: a blob carries ``last_span``, a spans row id at least as high as
every span using it, less :data:`SLACK` (refreshed by the commit that uses it
when it has fallen further behind: one write per blob per SLACK spans, not one
per use). Once every span below ``last_span + SLACK`` is gone, nothing uses it;
retention deletes such blobs in the transaction that evicts the spans
(:func:`collect`), keeping those the spans of pinned traces use. Provenances
are few (one per library and shape of span) and are kept until ``purge``.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from importlib import resources

import zstandard

from tracetui.model.rows import COL, Decoded

#: A compact raw starts with these bytes (a serialized Span cannot start with a zero byte).
MARK = b"\x00\x01"
#: A compressed raw starts with these bytes, then the number of its dictionary (``raw-dict-N.bin``), then a
#: zstd frame of the plain or compact raw.
ZMARK = b"\x00\x02"
#: The dictionary new raws are compressed with. A shipped dictionary never changes (stored spans need it):
#: a better one gets the next number, and the old files stay.
DICTIONARY = 1
#: Raws shorter than this are stored as they are.
MIN_COMPRESS = 128
#: zstd's level: 3 (its default) took the benchmark's spans to 399 B in ~10 us; 1 to 410 B in ~8.5 us.
LEVEL = 3
#: JSON string literals at least this long (in bytes, quotes excluded) are stored as blobs.
#: A reference costs ~18 bytes in the span, a new blob ~70 bytes of table and indexes:
#: shorter strings (tool-call ids, short answers) rarely repeat enough to pay for it.
MIN_CUT = 256
#: Chat messages followed by another (re-sent with every later call of the conversation) are stored once
#: from this size: each later call then saves the message for a 16-byte digest.
MIN_MESSAGE = 128
#: Spans smaller than this are never scanned: a span's own fields (ids, times, name, a few attributes) take
#: a few hundred bytes, so a smaller one holds no literal worth cutting nor two messages.
MIN_SCAN = 2 * MIN_CUT
#: How far (in spans row ids) a blob's ``last_span`` may lag behind its newest use: a blob used again is
#: written again once per SLACK spans, and outlives its last user by at most twice that (which a size
#: limit pays for by evicting more: in test_blobs' 2,400-span database halved, SLACK 1,000 left 53 of 400 runs).
SLACK = 256
DIGEST_BYTES = 16

_I_RAW, _I_PROVENANCE = COL["raw"], COL["provenance"]
#: Where a chat message starts in a JSON array of messages (``json.dumps`` and compact JSON alike).
_MESSAGE = b'{"role"'
#: How a message ends when another follows it in the array (``json.dumps`` and compact JSON).
_SEPARATORS = (b"}, ", b"},")
#: Attributes whose whole value an agent sends again, unchanged, with every call.
WHOLE_VALUES = ("gen_ai.tool.definitions", "gen_ai.system_instructions")
#: Each as it starts in a serialized KeyValue: key (field 1, its length), then the value (field 2) follows.
_WHOLE_KEYS = tuple(b"\n" + bytes([len(key)]) + key.encode() for key in WHOLE_VALUES)
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


class DamagedRaw(ValueError):
    """A compressed raw that does not decompress (a damaged file), or names a dictionary this version lacks."""


# --- compression with a preset dictionary -----------------------------------------------------

_dictionaries: dict[int, zstandard.ZstdCompressionDict] = {}
#: zstd contexts are not thread-safe and cost ~18 us to create: each thread keeps its own, reused.
_contexts = threading.local()


def _dictionary(number: int) -> zstandard.ZstdCompressionDict:
    found = _dictionaries.get(number)
    if found is None:
        try:
            data = resources.files("tracetui.store").joinpath(f"raw-dict-{number}.bin").read_bytes()
        except FileNotFoundError:
            raise DamagedRaw(f"a stored span was compressed with dictionary {number}, which this tracetui does not "
                             "have (written by a newer version?)") from None  # fmt: skip
        found = _dictionaries[number] = zstandard.ZstdCompressionDict(data, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    return found


def _compressor() -> zstandard.ZstdCompressor:
    found = getattr(_contexts, "compressor", None)
    if found is None:
        found = _contexts.compressor = zstandard.ZstdCompressor(
            level=LEVEL,
            dict_data=_dictionary(DICTIONARY),
            write_checksum=False,  # SQLite's pages are the place for integrity checks
            write_dict_id=False,  # the dictionary's number is in the raw's header
            write_content_size=True,
        )
    return found


def _decompressor(number: int) -> zstandard.ZstdDecompressor:
    found: dict[int, zstandard.ZstdDecompressor] | None = getattr(_contexts, "decompressors", None)
    if found is None:
        found = _contexts.decompressors = {}
    decompressor = found.get(number)
    if decompressor is None:
        decompressor = found[number] = zstandard.ZstdDecompressor(dict_data=_dictionary(number))
    return decompressor


def compressed(raw: bytes) -> bytes:
    """``raw`` (plain or compact) compressed with the current dictionary; ``raw`` itself when that does not
    make it smaller, or it is short."""
    if len(raw) < MIN_COMPRESS or raw.startswith(ZMARK):
        return raw
    out = b"".join((ZMARK, bytes((DICTIONARY,)), _compressor().compress(raw)))
    return out if len(out) < len(raw) else raw


def decompressed(raw: bytes) -> bytes:
    """The plain or compact raw that :func:`compressed` made ``raw`` from (``raw`` itself when not compressed)."""
    if not raw.startswith(ZMARK):
        return raw
    if len(raw) < len(ZMARK) + 1:
        raise DamagedRaw("a stored span is cut short")
    decompressor = _decompressor(raw[len(ZMARK)])
    try:
        return decompressor.decompress(raw[len(ZMARK) + 1 :])
    except zstandard.ZstdError as exc:
        raise DamagedRaw(f"a stored span does not decompress (a damaged file?): {exc}") from None


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
    """``raw`` with its repeated parts replaced by digests (each added to ``found``); ``raw`` itself when
    there is nothing to cut.

    Three kinds of parts, found by their bytes alone (nothing is parsed):

    * whole values of the attributes that hold what an agent sends unchanged with every call
      (:data:`WHOLE_VALUES`: its tool definitions, its system instructions);
    * chat messages: a JSON array of messages (``[{"role": ...}, {"role": ...}]``, the OTel GenAI and
      OpenAI shapes) is cut before each ``{"role"``; every message followed by another, and at least
      :data:`MIN_MESSAGE` bytes long, is one part. An agent re-sends its whole conversation with each call,
      so each message is stored once however many calls repeat it, and only the newest stays in the span
      (the bytes of re-sent messages are hashed, never scanned);
    * the long JSON string literals (:data:`MIN_CUT` bytes or more) in what is left: a system prompt, a
      document, an answer, a tool's result.
    """
    pending: list[bytes] = []
    entries: list[tuple[bytes, bytes]] = []
    pos = 0
    for start, end in _whole_values(raw):
        _cut_messages(raw[pos:start], found, pending, entries)
        entries.append((b"".join(pending), _stored(raw[start:end], found)))
        pending.clear()
        pos = end
    _cut_messages(raw[pos:] if pos else raw, found, pending, entries)
    return _encode(entries, pending) if entries else raw


def _whole_values(raw: bytes) -> list[tuple[int, int]]:
    """Where the string values of the :data:`WHOLE_VALUES` attributes are in ``raw`` (MIN_CUT bytes or more)."""
    found = []
    for key in _WHOLE_KEYS:
        at = raw.find(key)
        if at < 0:
            continue
        try:  # KeyValue.value (field 2): AnyValue, whose string_value (field 1) is the value
            pos = at + len(key)
            if raw[pos] != 0x12:
                continue
            _, pos = _read_varint(raw, pos + 1)
            if raw[pos] != 0x0A:
                continue
            size, pos = _read_varint(raw, pos + 1)
        except IndexError:
            continue
        if size >= MIN_CUT and pos + size <= len(raw):
            found.append((pos, pos + size))
    found.sort()
    return found


def _cut_messages(
    data: bytes, found: dict[bytes, bytes], pending: list[bytes], entries: list[tuple[bytes, bytes]]
) -> None:
    """Cut ``data``'s chat messages, then the long literals around them (see ``cut``)."""
    pieces = data.split(_MESSAGE)
    if len(pieces) < 3:
        _cut_literals(data, found, pending, entries)
        return
    _cut_literals(pieces[0], found, pending, entries)
    for piece in pieces[1:-1]:
        message = _MESSAGE + piece
        # Only a message followed by the next in its array (it ends with the separator): the last one of
        # an array runs on into the span's other fields (attribute keys stay in the span: readers look for them).
        if len(message) >= MIN_MESSAGE and message.endswith(_SEPARATORS):
            entries.append((b"".join(pending), _stored(message, found)))
            pending.clear()
        else:
            _cut_literals(message, found, pending, entries)
    _cut_literals(_MESSAGE + pieces[-1], found, pending, entries)


def _cut_literals(
    data: bytes, found: dict[bytes, bytes], pending: list[bytes], entries: list[tuple[bytes, bytes]]
) -> None:
    """Cut the long JSON string literals of ``data``: appends (bytes before, digest) to ``entries`` and what
    follows the last to ``pending``."""
    pos = 0
    if len(data) >= MIN_CUT:
        for match in _LITERAL.finditer(data):
            start, end = match.span()
            start, end = start + 1, end - 1  # the quotes stay in place
            if end - start < MIN_CUT:
                continue
            pending.append(data[pos:start])
            entries.append((b"".join(pending), _stored(data[start:end], found)))
            pending.clear()
            pos = end
    pending.append(data[pos:] if pos else data)


#: Digests of the values this process cut lately (a re-sent message is looked up, not hashed again:
#: Python's own hash of the bytes costs less than blake2b), at most _RECENT_BYTES of values.
_recent: dict[bytes, bytes] = {}
_recent_bytes = 0
_RECENT_BYTES = 8 * 1024 * 1024


def _stored(value: bytes, found: dict[bytes, bytes]) -> bytes:
    global _recent_bytes
    digest = _recent.get(value)
    if digest is None:
        digest = hashlib.blake2b(value, digest_size=DIGEST_BYTES).digest()
        if _recent_bytes > _RECENT_BYTES:
            _recent.clear()
            _recent_bytes = 0
        _recent[value] = digest
        _recent_bytes += len(value)
    found[digest] = value
    return digest


def _encode(entries: list[tuple[bytes, bytes]], tail: list[bytes]) -> bytes:
    """The compact raw of ``entries`` (literal bytes, digest) then ``tail``; the tail alone when nothing was cut."""
    if not entries:
        return b"".join(tail)
    out = [MARK, _varint(len(entries))]
    for literal, digest in entries:
        out += (_varint(len(literal)), literal, digest)
    out += tail
    return b"".join(out)


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
    compact = decompressed(compact)
    if not compact.startswith(MARK):
        return []
    return list(_parts(compact))[1:-1:2]


def expand_with(compact: bytes, blob: dict[bytes, bytes]) -> bytes:
    """The span's original bytes, the blobs given by digest."""
    compact = decompressed(compact)
    if not compact.startswith(MARK):
        return compact
    parts = list(_parts(compact))
    for i in range(1, len(parts) - 1, 2):
        parts[i] = blob[parts[i]]
    return b"".join(parts)


def compact_rows(decoded: Decoded) -> None:
    """Cut the long strings out of the raw bytes of ``decoded``'s span rows (into ``decoded.blobs``), and
    replace each provenance JSON by its id (into ``decoded.provenances``).

    Runs after tracetui.store.batch.prepare (which reads the original bytes and provenance) and before the
    write lock.
    """
    found, provenances = decoded.blobs, decoded.provenances
    spans = decoded.spans
    for n, row in enumerate(spans):
        raw, provenance = row[_I_RAW], row[_I_PROVENANCE]
        if provenance.__class__ is str:
            pid = provenance_id(provenance)
            provenances[pid] = provenance
            provenance = pid
        if not raw.startswith((MARK, ZMARK)):
            if len(raw) >= MIN_SCAN:
                raw = cut(raw, found)
            raw = compressed(raw)
        if raw is not row[_I_RAW] or provenance is not row[_I_PROVENANCE]:
            spans[n] = (*row[:_I_RAW], raw, *row[_I_RAW + 1 : _I_PROVENANCE], provenance, *row[_I_PROVENANCE + 1 :])


#: provenance JSON -> its id (few distinct values: one per library and shape of span).
_provenance_ids: dict[str, bytes] = {}


def provenance_id(provenance: str) -> bytes:
    """The id a provenance JSON is stored under: its 8-byte digest, so a decode worker knows it without asking
    the database. A blob, not an integer: the column's TEXT affinity would store an integer as text. A
    different JSON already stored under it (a 64-bit collision) is detected by the writer, which then keeps
    that span's provenance inline."""
    pid = _provenance_ids.get(provenance)
    if pid is None:
        if len(_provenance_ids) > 10_000:
            _provenance_ids.clear()
        pid = _provenance_ids[provenance] = hashlib.blake2b(provenance.encode(), digest_size=8).digest()
    return pid


def provenance_sql(column: str) -> str:
    """SQL for a span's provenance JSON: stored inline (text, and every row before schema 12), or interned
    (a blob, the id of its ``provenances`` row)."""
    return (f"CASE WHEN typeof({column}) = 'blob' THEN (SELECT json FROM provenances WHERE id = {column}) "
            f"ELSE {column} END")  # fmt: skip


def store_provenances(
    conn: sqlite3.Connection,
    parts: Iterable[Decoded],
    rows: list[tuple],
    known: set[bytes],
    column: int = _I_PROVENANCE,
) -> list[tuple]:
    """Insert the batch's new provenances (``known``: ids this connection stored or saw); returns ``rows``
    (the provenance at index ``column``), with the provenance inline again in the rare row whose id is taken
    by another JSON."""
    wanted: dict[bytes, str] = {}
    for decoded in parts:
        wanted.update(decoded.provenances)
    missing = [(pid, text) for pid, text in wanted.items() if pid not in known]
    if not missing:
        return rows
    conn.executemany("INSERT INTO provenances(id, json) VALUES (?, ?) ON CONFLICT DO NOTHING", missing)
    taken: dict[bytes, str] = {}
    for i in range(0, len(missing), 500):
        chunk = [pid for pid, _ in missing[i : i + 500]]
        for pid, text in conn.execute(
            f"SELECT id, json FROM provenances WHERE id IN ({','.join('?' * len(chunk))})", chunk
        ):
            if text == wanted[pid]:
                known.add(pid)
            else:
                taken[pid] = wanted[pid]
    if not taken:
        return rows
    return [(*row[:column], taken[row[column]], *row[column + 1 :]) if row[column] in taken else row
            for row in rows]  # fmt: skip


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
        "SELECT raw FROM spans WHERE trace_id IN (SELECT trace_id FROM pins) AND substr(raw, 1, 2) IN (?, ?)",
        (MARK, ZMARK),
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
        raw = decompressed(raw)
        if not raw.startswith(MARK):
            return raw
        return expand_with(raw, self._fetch(digests(raw)))

    def expand_all(self, raws: list[bytes]) -> list[bytes]:
        """``expand`` for many raws, fetching the blobs they need in a few queries."""
        raws = [decompressed(raw) for raw in raws]
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

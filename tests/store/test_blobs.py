"""Long repeated strings stored once (tracetui.store.blobs): nothing lost, nothing left behind.

Every span is written through the real decoder and Writer into a real SQLite file
and read back through the real Reader; the bytes that come back must be the
bytes the exporter sent.
"""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import pytest
from helpers import (
    BASE_NS,
    make_request,
    make_span,
    read_records,
    sid,
    tid,
    trace_fixture_files,
)

from tracetui.model.filter import parse as parse_filter
from tracetui.otlp.decode import decode_trace_bytes, parse_trace_request, span_bytes
from tracetui.query.export import trace_request
from tracetui.store import blobs
from tracetui.store.reader import SqliteReader
from tracetui.store.retention import Retention, delete_traces, enforce, purge, used_bytes
from tracetui.store.schema import MIGRATIONS, connect_writer
from tracetui.store.writer import Writer

WORDS = "the order refund agent tool answer customer policy billing shipping invoice".split()


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n // 5))[:n]


def _write(db: Path, requests: list[bytes]) -> dict[tuple[bytes, bytes], bytes]:
    """Store serialized trace requests; returns each span's bytes as sent, by (trace id, span id)."""
    sent: dict[tuple[bytes, bytes], bytes] = {}
    writer = Writer(db)
    writer.start()
    try:
        for data in requests:
            request = parse_trace_request(data)
            spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
            for span, raw in zip(spans, span_bytes(data) or [], strict=True):
                sent[(span.trace_id, span.span_id)] = raw
            ticket = writer.submit(decode_trace_bytes(data))
            assert ticket.wait(30) and ticket.error is None, ticket.error
    finally:
        writer.stop()
    return sent


def _read_back(db: Path, trace_ids) -> dict[tuple[bytes, bytes], bytes]:
    reader = SqliteReader(db)
    try:
        return {(t, s.span_id): s.raw for t in trace_ids for s in reader.stored_spans(t)}
    finally:
        reader.close()


def _agent_requests(traces: int, seed: int = 3, calls: int = 6) -> list[bytes]:
    """Multi-turn conversations: each call re-sends the same system prompt and every earlier message."""
    rng = random.Random(seed)
    system = _text(rng, 2000) + ' with "quotes", \\ backslashes, \n newlines, ünïcödé and zebrafinch'
    requests = []
    for t in range(traces):
        messages = [{"role": "system", "parts": [{"type": "text", "content": system}]}]
        spans = []
        for n in range(calls):
            messages.append({"role": "user", "parts": [{"type": "text", "content": _text(rng, 400)}]})
            answer = {"role": "assistant", "parts": [{"type": "text", "content": _text(rng, 600)}]}
            attributes = {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.input.messages": json.dumps(messages),
                "gen_ai.output.messages": json.dumps([answer]),
                "gen_ai.tool.call.id": f"call_{rng.getrandbits(40):x}",
            }
            spans.append(make_span(tid(t + 1), sid(n + 1), name="chat gpt-4o", start=n * 1000, attributes=attributes))
            messages.append(answer)
        requests.append(make_request(spans).SerializeToString())
    return requests


def test_every_fixture_span_reads_back_exactly_as_it_arrived(tmp_path: Path) -> None:
    db = tmp_path / "fixtures.db"
    requests = [record for path in trace_fixture_files() for record in read_records(path)]
    sent = _write(db, requests)
    assert _read_back(db, {key[0] for key in sent}) == sent


def test_repeated_conversation_strings_are_stored_once_and_read_back_exactly(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    requests = _agent_requests(traces=5)
    sent = _write(db, requests)
    assert _read_back(db, {key[0] for key in sent}) == sent

    conn = sqlite3.connect(db)
    stored = conn.execute("SELECT sum(length(raw)) FROM spans").fetchone()[0]
    blob_bytes = conn.execute("SELECT sum(length(bytes)) FROM blobs").fetchone()[0]
    holding_the_prompt = conn.execute("SELECT count(*) FROM blobs WHERE instr(bytes, ?)", (b"zebrafinch",)).fetchone()[
        0
    ]
    conn.close()
    sent_bytes = sum(len(raw) for raw in sent.values())
    # The system prompt is stored once for the 30 calls that send it; each message once for every later call.
    assert holding_the_prompt == 1
    assert stored + blob_bytes < sent_bytes / 2


def test_export_of_a_compacted_trace_is_what_was_sent(tmp_path: Path) -> None:
    db = tmp_path / "export.db"
    requests = _agent_requests(traces=1)
    sent = _write(db, requests)
    reader = SqliteReader(db)
    try:
        exported = trace_request(reader, tid(1)).SerializeToString()
    finally:
        reader.close()
    assert sorted(span_bytes(exported) or []) == sorted(sent.values())


def test_filters_and_span_details_see_the_text_that_was_cut_out(tmp_path: Path) -> None:
    db = tmp_path / "filter.db"
    _write(db, _agent_requests(traces=2))
    reader = SqliteReader(db)
    try:
        # "zebrafinch" is only in the system prompt, which is stored once, as a blob
        assert len(reader.traces(limit=10, flt=parse_filter("zebrafinch"))) == 2
        detail = reader.span_details(tid(1))[0]
        assert "zebrafinch" in detail.attributes["gen_ai.input.messages"]
    finally:
        reader.close()


def test_eviction_deletes_the_blobs_no_span_uses_any_more(tmp_path: Path) -> None:
    db = tmp_path / "evict.db"
    old = _agent_requests(traces=3, seed=1)  # prompts of their own
    # then blobs.SLACK more spans, evicted with them: a blob's last use is known to within SLACK spans
    filler = [
        make_request([make_span(tid(50 + k), sid(n + 1), start=n) for n in range(2_000)]).SerializeToString()
        for k in range(blobs.SLACK // 2_000 + 1)
    ]
    new = [data.replace(tid(t + 1), tid(t + 100)) for t, data in enumerate(_agent_requests(traces=3, seed=2))]
    sent = _write(db, old + filler + new)
    conn = sqlite3.connect(db, isolation_level=None)
    before = conn.execute("SELECT count(*) FROM blobs").fetchone()[0]
    conn.execute("BEGIN IMMEDIATE")
    oldest = [tid(1), tid(2), tid(3), *(tid(50 + k) for k in range(len(filler)))]
    delete_traces(conn, oldest)  # what retention does with the oldest traces
    conn.execute("COMMIT")
    after = conn.execute("SELECT count(*) FROM blobs").fetchone()[0]
    used = {d for (raw,) in conn.execute("SELECT raw FROM spans") for d in blobs.digests(raw)}
    held = {d for (d,) in conn.execute("SELECT digest FROM blobs")}
    conn.close()
    assert 0 < after < before
    assert held == used  # nothing unused is kept, nothing used is gone
    kept = {key: raw for key, raw in sent.items() if key[0] in {tid(100), tid(101), tid(102)}}
    assert _read_back(db, {tid(100), tid(101), tid(102)}) == kept


def test_the_size_limit_holds_with_values_stored_once(tmp_path: Path) -> None:
    db = tmp_path / "size.db"
    requests = [data.replace(tid(1), tid(k + 1)) for k in range(400) for data in _agent_requests(1, seed=k)]
    sent = _write(db, requests)  # 2,400 calls, each conversation its own prompt and messages
    conn = connect_writer(db)
    limit = used_bytes(conn) // 2
    enforce(conn, Retention(max_db_bytes=limit))
    assert used_bytes(conn) <= limit
    left = {row[0] for row in conn.execute("SELECT trace_id FROM traces")}
    conn.close()
    assert 100 < len(left) < 400  # about half, not everything: the values of evicted spans went with them
    assert _read_back(db, left) == {key: raw for key, raw in sent.items() if key[0] in left}


def test_a_database_from_before_the_blobs_still_reads(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db, isolation_level=None)
    for n in range(11):  # the schema before blobs and interned provenance
        MIGRATIONS[n](conn)
    conn.execute("PRAGMA user_version=11")
    conn.close()
    span = make_span(tid(7), sid(1), name="old call", attributes={"gen_ai.input.messages": "x" * 5000})
    raw = span.SerializeToString()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("INSERT INTO sources(id, digest, service, resource) VALUES (1, x'01', 'svc', x'')")
    conn.execute(
        "INSERT INTO spans(trace_id, span_id, name, kind, source_id, service, start_ns, end_ns, status_code, raw, "
        "llm_kind, provenance) VALUES (?, ?, 'old call', 1, 1, 'svc', ?, ?, 0, ?, 'llm', ?)",
        (tid(7), sid(1), BASE_NS, BASE_NS + 1, raw, '{"kind": "gen_ai.operation.name", "library": "openlit"}'),
    )
    conn.close()
    assert _read_back(db, [tid(7)]) == {(tid(7), sid(1)): raw}
    reader = SqliteReader(db)
    try:
        row = reader.span_details(tid(7))[0].row
        assert row["library"] == "openlit"  # the provenance stored inline, as before
        assert json.loads(row["provenance"])["kind"] == "gen_ai.operation.name"
    finally:
        reader.close()
    conn = sqlite3.connect(db)
    # migrated, nothing rewritten
    assert conn.execute("SELECT count(*) FROM blobs").fetchone() == (0,)
    assert conn.execute("SELECT typeof(provenance), length(raw) FROM spans").fetchone() == ("text", len(raw))
    conn.close()


def test_provenance_is_stored_once_and_reads_as_the_normalizer_wrote_it(tmp_path: Path) -> None:
    db = tmp_path / "provenance.db"
    _write(db, _agent_requests(traces=3))
    conn = sqlite3.connect(db)
    kinds = conn.execute("SELECT DISTINCT typeof(provenance) FROM spans").fetchall()
    interned = conn.execute("SELECT count(*) FROM provenances").fetchone()[0]
    conn.close()
    assert kinds == [("blob",)]
    assert interned == 1  # 18 calls recorded alike
    reader = SqliteReader(db)
    try:
        for detail in reader.span_details(tid(2)):
            provenance = json.loads(detail.row["provenance"])
            assert provenance["kind"] == "gen_ai.operation.name"
            assert provenance["request_model"] == "gen_ai.request.model"
    finally:
        reader.close()


def test_tool_definitions_sent_with_every_call_are_stored_once(tmp_path: Path) -> None:
    db = tmp_path / "tools.db"
    rng = random.Random(5)
    tools = json.dumps([{"type": "function", "name": f"tool{n}", "description": _text(rng, 100)} for n in range(8)])
    spans = [
        make_span(tid(1), sid(n + 1), name="chat", attributes={"gen_ai.tool.definitions": tools, "n": n})
        for n in range(10)
    ]
    sent = _write(db, [make_request(spans).SerializeToString()])
    assert _read_back(db, [tid(1)]) == sent
    conn = sqlite3.connect(db)
    whole = conn.execute("SELECT count(*) FROM blobs WHERE bytes = ?", (tools.encode(),)).fetchone()[0]
    stored = conn.execute("SELECT max(length(raw)) FROM spans").fetchone()[0]
    conn.close()
    assert whole == 1
    assert stored < 200 < len(tools)


def test_purge_leaves_no_blob_or_provenance(tmp_path: Path) -> None:
    db = tmp_path / "purge.db"
    _write(db, _agent_requests(traces=2))
    conn = sqlite3.connect(db, isolation_level=None)
    purge(conn)
    counts = [
        conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in ("spans", "blobs", "provenances")
    ]
    conn.close()
    assert counts == [0, 0, 0]
    sent = _write(db, _agent_requests(traces=1, seed=9))  # the writer stores them again after a purge
    assert _read_back(db, [tid(1)]) == sent


@pytest.mark.parametrize("size", [0, 1, 255, 256, 5000])
def test_cut_then_expand_is_the_identity(size: int) -> None:
    value = json.dumps([{"content": "ü" * size + '"\\', "id": "call_1"}, {"content": "ü" * size}], ensure_ascii=False)
    raw = make_span(tid(1), sid(1), attributes={"v": value, "w": value}).SerializeToString()
    found: dict[bytes, bytes] = {}
    compact = blobs.cut(raw, found)
    assert blobs.expand_with(compact, found) == raw
    assert (compact is raw) == (2 * size < blobs.MIN_CUT)  # (ü: 2 bytes)


@pytest.mark.parametrize("separators", [(", ", ": "), (",", ":")], ids=["json.dumps", "compact"])
def test_re_sent_messages_are_cut_and_attribute_keys_stay_in_the_span(separators) -> None:
    rng = random.Random(1)
    messages = [{"role": "user", "content": _text(rng, 200)}, {"role": "assistant", "content": _text(rng, 200)},
                {"role": "user", "content": _text(rng, 200)}]  # fmt: skip
    attributes = {
        "gen_ai.input.messages": json.dumps(messages, separators=separators),
        "route": "billing",
        "gen_ai.output.messages": json.dumps([{"role": "assistant", "content": "ok"}], separators=separators),
    }
    raw = make_span(tid(1), sid(1), attributes=attributes).SerializeToString()
    found: dict[bytes, bytes] = {}
    compact = blobs.cut(raw, found)
    assert blobs.expand_with(compact, found) == raw
    assert len(found) == 2  # the two messages another follows; the newest stays in the span
    for key in attributes:
        assert key.encode() in compact  # readers look for attribute keys in the stored bytes


# --- compressed raws (schema 14) ----------------------------------------------------------------------

#: The shipped dictionary is part of the file format: stored spans need these very bytes to inflate.
DICTIONARY_1_DIGEST = "8aa54abb6e6f82075df96bdea9826021"


def test_stored_spans_are_compressed_and_read_back_exactly(tmp_path: Path) -> None:
    db = tmp_path / "fixtures.db"
    requests = [record for path in trace_fixture_files() for record in read_records(path)]
    sent = _write(db, requests)
    conn = sqlite3.connect(db)
    stored = [raw for (raw,) in conn.execute("SELECT raw FROM spans")]
    conn.close()
    compressed = [raw for raw in stored if raw.startswith(blobs.ZMARK)]
    assert len(compressed) > len(stored) // 2  # most spans are worth it
    assert sum(map(len, stored)) < sum(len(raw) for raw in sent.values()) * 0.7
    assert _read_back(db, {key[0] for key in sent}) == sent  # and decompress to the very bytes sent


def test_a_damaged_or_unknown_compressed_raw_says_so() -> None:
    span = make_span(tid(1), sid(1), name="x" * 300).SerializeToString()
    packed = blobs.compressed(span)
    assert packed.startswith(blobs.ZMARK) and len(packed) < len(span) and blobs.decompressed(packed) == span
    with pytest.raises(blobs.DamagedRaw, match="does not decompress"):
        blobs.decompressed(packed[:-3])
    with pytest.raises(blobs.DamagedRaw, match="does not decompress"):
        blobs.decompressed(packed[:3] + b"\xff" * 20)
    with pytest.raises(blobs.DamagedRaw, match="cut short"):
        blobs.decompressed(blobs.ZMARK)
    with pytest.raises(blobs.DamagedRaw, match="dictionary 9, which this tracetui does not have"):
        blobs.decompressed(blobs.ZMARK + b"\x09" + packed[3:])
    assert blobs.compressed(b"\x0a\x01x") == b"\x0a\x01x"  # too short to gain anything: kept as it is


def test_the_shipped_dictionary_never_changes() -> None:
    import hashlib
    from importlib import resources

    data = resources.files("tracetui.store").joinpath(f"raw-dict-{blobs.DICTIONARY}.bin").read_bytes()
    assert hashlib.blake2b(data, digest_size=16).hexdigest() == DICTIONARY_1_DIGEST

"""Decoding in worker processes gives exactly what decoding in place gives, and survives dead workers."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from helpers import make_request, make_span, read_records, sid, tid, trace_fixture_files

from tracetui.otlp.decode import DecodeError
from tracetui.otlp.decoder import InlineDecoder, ProcessDecoder, pack, unpack

FIXTURES = Path(__file__).parent / "fixtures"


def _log_fixture_records() -> list[bytes]:
    return [record for path in sorted(FIXTURES.glob("*.logs.otlp")) for record in read_records(path)]


def _same(a, b) -> None:
    assert a.spans == b.spans
    assert a.logs == b.logs
    assert a.evaluations == b.evaluations
    assert a.sources == b.sources
    assert (a.rejected, a.reasons, a.unit) == (b.rejected, b.reasons, b.unit)


@pytest.fixture(scope="module")
def workers():
    decoder = ProcessDecoder(2)
    decoder.warm()
    yield decoder
    decoder.close()


def test_pack_round_trip_is_exact():
    inline = InlineDecoder()
    for path in trace_fixture_files():
        for record in read_records(path):
            decoded = inline.decode("traces", record)
            _same(unpack(pack(decoded)), decoded)


def test_workers_decode_every_fixture_exactly_as_inline(workers):
    inline = InlineDecoder()
    count = 0
    for path in trace_fixture_files():
        for record in read_records(path):
            _same(workers.decode("traces", record), inline.decode("traces", record))
            count += 1
    for record in _log_fixture_records():
        _same(workers.decode("logs", record), inline.decode("logs", record))
        count += 1
    assert count > 10


def test_parsed_messages_and_rejections_cross_the_boundary(workers):
    good = make_span(tid(1), sid(1), name="ok")
    bad = make_span(tid(1), b"\x01\x02", name="short id")
    decoded = workers.decode("traces", make_request([good, bad]))  # an already parsed message (HTTP JSON path)
    assert [row[3] for row in decoded.spans] == ["ok"]
    assert decoded.rejected == 1 and "invalid span_id (2 bytes)" in decoded.rejection_message


def test_undecodable_bytes_raise_decode_error_with_the_reason(workers):
    with pytest.raises(DecodeError, match="not a valid ExportTraceServiceRequest"):
        workers.decode("traces", b"\xff\xff\xff\xff garbage")
    # and the pool still works afterwards
    assert len(workers.decode("traces", make_request([make_span(tid(2), sid(2))]).SerializeToString()).spans) == 1


def test_a_killed_worker_costs_nothing():
    decoder = ProcessDecoder(1)
    try:
        decoder.warm()
        request = make_request([make_span(tid(3), sid(3), name="after the crash")]).SerializeToString()
        (pid,) = decoder._pool._processes  # the one worker
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        # The pool notices the dead worker, is rebuilt, and the export is decoded.
        decoded = decoder.decode("traces", request)
        assert [row[3] for row in decoded.spans] == ["after the crash"]
        assert pid not in decoder._pool._processes
    finally:
        decoder.close()

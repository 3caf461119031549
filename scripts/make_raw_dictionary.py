"""Build the preset dictionary that stored spans are compressed with (zstd) (tracetui/store/raw-dict-1.bin).

    .venv/bin/python scripts/make_raw_dictionary.py            # writes the file once; refuses to change it

What a compressor finds again and again in a serialized OTLP span is its attributes:
the same keys (``gen_ai.usage.input_tokens``, ``llm.token_count.prompt``, ...)
and many of the same short values (``gen_ai.operation.name`` = ``chat``). The
dictionary is those, taken from the real captures of every instrumentation
library in tests/fixtures (nothing from the benchmarks' synthetic traffic):
each attribute's serialized KeyValue when it is short, else its key alone, the
most frequent nearest the end (near matches code a little shorter).

A dictionary is part of the file format: databases hold spans compressed with
it, so once shipped it never changes. A better one is a new file with the next
number (blobs.DICTIONARIES), and both are kept.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers import read_records, trace_fixture_files  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402

OUT = ROOT / "tracetui" / "store" / "raw-dict-1.bin"
SIZE = 16 * 1024
#: A KeyValue longer than this goes in by its key only (long values rarely repeat whole).
MAX_KEY_VALUE = 96


def build() -> bytes:
    counts: collections.Counter[bytes] = collections.Counter()
    for path in trace_fixture_files():
        for record in read_records(path):
            request = ExportTraceServiceRequest.FromString(record)
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        for kv in span.attributes:
                            data = kv.SerializeToString()
                            if len(data) > MAX_KEY_VALUE:
                                key = kv.key.encode()
                                data = b"\n" + bytes([len(key)]) + key if len(key) < 128 else b""
                            if data:
                                counts[data] += 1
    out = b""
    for data, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if len(out) + len(data) > SIZE:
            break
        out = data + out
    return out


def main() -> int:
    data = build()
    if OUT.exists():
        same = OUT.read_bytes() == data
        print(f"{OUT.name} exists ({'the same bytes' if same else 'DIFFERENT bytes: left unchanged'})")
        return 0 if same else 1
    OUT.write_bytes(data)
    print(f"wrote {OUT} ({len(data):,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

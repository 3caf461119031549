"""Full-text search latency and index size (issue 21).

Builds a database with the real schema (tracetui.store.schema) and the real FTS index
(tracetui.store.text_index, sqlite-utils), fills `spans` with minimal rows and
`span_text` with synthetic conversation text (a Zipf-like vocabulary, so that common
words are common and rare ones rare), then times `text_index.search` (the first 50
results, newest first, joined to `spans` as every search is) over a mix of queries:
a rare word, a common word, a phrase and a prefix. Prints p50/p95 per query kind and
the index's bytes per span (dbstat), with the load average.

    python benchmarks/search.py --spans 200000     # cached in /tmp/tracetui-bench-search-N.db
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import time
from pathlib import Path

from tracetui.store import text_index
from tracetui.store.schema import connect_writer

VOCAB = [f"w{i}" for i in range(20_000)]


def build(path: Path, n: int, seed: int = 7) -> None:
    conn = connect_writer(path)
    rng = random.Random(seed)
    weights = [1 / (i + 1) for i in range(len(VOCAB))]
    conn.execute("INSERT OR IGNORE INTO sources(id, digest, service, resource) VALUES (1, x'00', 'bench', x'')")
    batch = 20_000
    for start in range(1, n + 1, batch):
        spans, texts = [], []
        for i in range(start, min(n + 1, start + batch)):
            tid, sid = i.to_bytes(16, "big"), i.to_bytes(8, "big")
            spans.append((i, tid, sid, "chat gpt-4o", 1, "bench", i, i + 1, 0, b""))
            words = rng.choices(VOCAB, weights, k=rng.randint(20, 60))
            if i % 1000 == 0:
                words += ["refund", "policy"]
            texts.append((i, tid, sid, " ".join(words), "{}"))
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO spans(id, trace_id, span_id, name, kind, service, start_ns, end_ns, "
                         "status_code, raw, source_id) VALUES (?,?,?,?,?,?,?,?,?,?,1)", spans)  # fmt: skip
        conn.executemany("INSERT INTO span_text VALUES (?,?,?,?,?)", texts)
        conn.execute("COMMIT")
    conn.execute("INSERT INTO span_text_fts(span_text_fts) VALUES ('optimize')")
    conn.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spans", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=40)
    args = ap.parse_args()
    path = Path(f"/tmp/tracetui-bench-search-{args.spans}.db")
    if not path.exists():
        t0 = time.perf_counter()
        build(path, args.spans)
        print(f"built {args.spans:,} spans in {time.perf_counter() - t0:.1f}s")
    conn = sqlite3.connect(path)
    size = dict(conn.execute(
        "SELECT name, sum(pgsize) FROM dbstat WHERE name LIKE 'span_text%' GROUP BY name").fetchall())  # fmt: skip
    n = conn.execute("SELECT count(*) FROM span_text").fetchone()[0]
    fts = sum(v for k, v in size.items() if k.startswith("span_text_fts"))
    print(
        f"index (FTS5 tables) {fts / n:.0f} B/span; text table {size.get('span_text', 0) / n:.0f} B/span; {n:,} spans"
    )
    mix = {"rare word": "w19990", "common word": "w1", "phrase": '"refund policy"', "prefix": "w123*"}
    for kind, query in mix.items():
        times, found = [], 0
        for _ in range(args.runs):
            t0 = time.perf_counter()
            found = len(text_index.search(conn, query, 50))
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        p95 = times[int(len(times) * 0.95) - 1]
        print(f"{kind:12} {query!r:18} {found:3} hits  p50 {statistics.median(times):7.2f} ms  p95 {p95:7.2f} ms")
    print("loadavg", Path("/proc/loadavg").read_text().strip())


if __name__ == "__main__":
    main()

"""Metric points through tracetui's decoder and writer, hand-built: temporality, restarts, resends,
retention, and the bucket percentiles against hand-computed values."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import FIXTURES, make_request, make_span, query_ro, read_records, sid, tid, ttft_exemplar_request
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from tracetui.ingest.ack import Outcome, ingest
from tracetui.jobs.reindex import reindex
from tracetui.query import metric_stats
from tracetui.query.metric_stats import pieces, quantile
from tracetui.store.blobs import provenance_sql
from tracetui.store.reader import SqliteReader
from tracetui.store.retention import Retention, enforce, purge, used_bytes
from tracetui.store.schema import connect_writer
from tracetui.store.writer import Writer

#: A span's provenance JSON, stored inline or interned (tracetui.store.blobs).
PROVENANCE = provenance_sql("provenance")

S = 10**9
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
BOUNDS = (0.1, 0.5, 1.0)


def histogram_request(
    points: list[tuple[int, int, list[int], float]],
    temporality=CUMULATIVE,
    name: str = "gen_ai.client.operation.duration",
    model: str = "m",
) -> bytes:
    """One series; each point (start s, time s, bucket counts over BOUNDS, sum)."""
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add(name=name, unit="s")
    metric.histogram.aggregation_temporality = temporality
    for start, end, counts, total in points:
        point = metric.histogram.data_points.add(start_time_unix_nano=start * S, time_unix_nano=end * S)
        point.explicit_bounds.extend(BOUNDS)
        point.bucket_counts.extend(counts)
        point.count, point.sum = sum(counts), total
        point.attributes.add(key="gen_ai.request.model").value.string_value = model
    return request.SerializeToString()


@pytest.fixture
def writer(tmp_path: Path):
    w = Writer(tmp_path / "m.db")
    w.start()
    yield w
    w.stop()


def send(writer: Writer, record: bytes) -> None:
    assert ingest(writer, "metrics", record).outcome is Outcome.OK


def deltas(writer: Writer) -> list[tuple]:
    """(start s, end s, bucket counts, sum) of every stored point, in time order."""
    sql = "SELECT start_ns / 1000000000, time_ns / 1000000000, counts, sum FROM metric_points ORDER BY time_ns, id"
    return query_ro(writer.path, sql)


def test_cumulative_points_become_per_interval_deltas(writer):
    send(writer, histogram_request([(100, 110, [1, 1, 0, 0], 0.4)]))
    send(writer, histogram_request([(100, 120, [1, 1, 0, 0], 0.4)]))  # nothing new: nothing stored
    send(writer, histogram_request([(100, 130, [1, 3, 1, 0], 1.9)]))
    assert deltas(writer) == [(100, 110, "[1, 1, 0, 0]", 0.4), (120, 130, "[0, 2, 1, 0]", pytest.approx(1.5))]


def test_a_series_restart_starts_a_new_baseline_and_never_goes_negative(writer):
    send(writer, histogram_request([(100, 110, [0, 5, 0, 0], 1.5)]))
    # the app restarted: a new start time, fewer calls than before
    send(writer, histogram_request([(200, 210, [1, 0, 0, 0], 0.05)]))
    # and a broken exporter that lost its counts without a new start time
    send(writer, histogram_request([(200, 220, [0, 0, 0, 1], 2.0)]))
    stored = deltas(writer)
    assert stored == [
        (100, 110, "[0, 5, 0, 0]", 1.5),
        (200, 210, "[1, 0, 0, 0]", 0.05),
        (200, 220, "[0, 0, 0, 1]", 2.0),  # taken whole, not as -1 / +1 buckets
    ]
    assert all(int(c) >= 0 for _, _, counts, _ in stored for c in counts.strip("[]").split(","))


def test_late_and_resent_points_are_ignored(writer):
    send(writer, histogram_request([(100, 130, [0, 3, 0, 0], 0.9)]))
    send(writer, histogram_request([(100, 120, [0, 2, 0, 0], 0.6)]))  # older than what we have
    send(writer, histogram_request([(100, 130, [0, 3, 0, 0], 0.9)]))  # resent
    assert [d[2] for d in deltas(writer)] == ["[0, 3, 0, 0]"]


def test_delta_points_are_stored_as_sent_and_deduplicated(writer):
    send(writer, histogram_request([(100, 110, [0, 1, 0, 0], 0.3)], DELTA))
    send(writer, histogram_request([(110, 120, [0, 0, 2, 0], 1.5)], DELTA))
    send(writer, histogram_request([(110, 120, [0, 0, 2, 0], 1.5)], DELTA))  # resent
    assert deltas(writer) == [(100, 110, "[0, 1, 0, 0]", 0.3), (110, 120, "[0, 0, 2, 0]", 1.5)]


def test_cumulative_sums_are_differenced(writer):
    def sum_request(end: int, value: float) -> bytes:
        request = ExportMetricsServiceRequest()
        metric = request.resource_metrics.add().scope_metrics.add().metrics.add(name="gen_ai.usage.cost", unit="USD")
        metric.sum.aggregation_temporality, metric.sum.is_monotonic = CUMULATIVE, True
        point = metric.sum.data_points.add(start_time_unix_nano=100 * S, time_unix_nano=end * S, as_double=value)
        point.attributes.add(key="gen_ai.request.model").value.string_value = "m"
        return request.SerializeToString()

    for end, value in ((110, 0.25), (120, 0.25), (130, 1.0)):
        send(writer, sum_request(end, value))
    assert query_ro(writer.path, "SELECT value FROM metric_points ORDER BY time_ns") == [(0.25,), (0.75,)]


# --- retention ------------------------------------------------------------------------------------


def test_max_age_and_purge_reach_metric_points(writer, tmp_path):
    now = 10_000
    send(writer, histogram_request([(now - 4000, now - 3600, [0, 1, 0, 0], 0.3)], DELTA, model="old"))
    send(writer, histogram_request([(now - 60, now - 10, [0, 1, 0, 0], 0.3)], DELTA, model="new"))
    writer.stop()
    conn = connect_writer(tmp_path / "m.db")
    try:
        enforce(conn, Retention(max_age_s=1800), now_ns=now * S)
        models = [
            m for (m,) in conn.execute("SELECT s.model FROM metric_points p JOIN metric_series s ON s.id = p.series_id")
        ]
        assert models == ["new"]
        assert [m for (m,) in conn.execute("SELECT model FROM metric_series")] == ["new"]
        purge(conn)
        for table in ("metric_points", "metric_series", "metric_cumulative", "metric_exemplars"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    finally:
        conn.close()


def test_max_db_size_evicts_metric_points_oldest_first(writer, tmp_path):
    empty = connect_writer(tmp_path / "empty.db")
    schema_bytes = used_bytes(empty)
    empty.close()
    send(writer, histogram_request([(n * 10, n * 10 + 5, [0, 1, 0, 0], 0.3) for n in range(5000)], DELTA))
    writer.stop()
    conn = connect_writer(tmp_path / "m.db")
    try:
        before = conn.execute("SELECT count(*), min(time_ns) FROM metric_points").fetchone()
        limit = schema_bytes + (used_bytes(conn) - schema_bytes) // 2
        enforce(conn, Retention(max_db_bytes=limit), now_ns=10**6 * S)
        after = conn.execute("SELECT count(*), min(time_ns) FROM metric_points").fetchone()
        assert 0 < after[0] < before[0] and after[1] > before[1]  # some went, the oldest first
        assert used_bytes(conn) <= limit
    finally:
        conn.close()


# --- percentiles from buckets ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("merged", "q", "expected"),
    [
        # 10 values spread evenly over 0..10: the p-th percentile is at p/10
        ([(0.0, 10.0, 10)], 50, 5.0),
        ([(0.0, 10.0, 10)], 95, 9.5),
        # two buckets: 0..1 holds 1, 1..3 holds 3; rank 2 (p50) is 1/3 into the second -> 1 + 2/3
        ([(0.0, 1.0, 1), (1.0, 3.0, 3)], 50, 1 + 2 / 3),
        # single values (min = max): the value itself
        ([(0.2, 0.2, 1), (0.7, 0.7, 1)], 50, 0.2),
        ([(0.2, 0.2, 1), (0.7, 0.7, 1)], 99, 0.7),
        # overlapping pieces from two series: mixture of 0..2 (2 values) and 1..3 (2 values);
        # below 1 there is 1 value, 1..2 adds 2 -> p50 (rank 2) at 1.5
        ([(0.0, 2.0, 2), (1.0, 3.0, 2)], 50, 1.5),
    ],
)
def test_quantile_of_uniform_pieces_hand_computed(merged, q, expected):
    value, _ = quantile(merged, q)
    assert value == pytest.approx(expected)


def test_quantile_error_bound_is_the_width_of_the_bucket_it_fell_in():
    assert quantile([(0.0, 1.0, 1), (1.0, 3.0, 3)], 50)[1] == pytest.approx(2.0)
    assert quantile([(0.2, 0.2, 1)], 50) == (0.2, 0.0)
    assert quantile([], 50) is None


def test_buckets_are_narrowed_to_min_and_max():
    # bounds 0.1, 0.5, 1: values in (0.1, 0.5] and the open last bucket, min 0.2, max 2
    assert pieces([0.1, 0.5, 1.0], [0, 3, 0, 1], 0.2, 2.0) == [(0.2, 0.5, 3), (1.0, 2.0, 1)]
    # without min/max the open last bucket is taken at its lower bound
    assert pieces([0.1, 0.5, 1.0], [0, 0, 0, 2], None, None) == [(1.0, 1.0, 2)]


def test_model_percentiles_prefer_the_client_metric_and_say_which(writer):
    send(writer, histogram_request([(100, 110, [0, 2, 0, 0], 0.6)], DELTA))
    send(writer, histogram_request([(100, 110, [1, 0, 0, 0], 0.05)], DELTA, name="gen_ai.server.request.duration"))
    send(writer, histogram_request([(100, 110, [0, 0, 0, 1], 3.0)], DELTA, name="gen_ai.server.time_to_first_token"))
    conn = SqliteReader(writer.path)
    try:
        found = metric_stats.compute(conn)["m"]
        windowed = metric_stats.compute(conn, window_s=60, now_ns=200 * S)
    finally:
        conn.close()
    assert found.duration.metric == "gen_ai.client.operation.duration" and found.duration.count == 2
    # (0.1, 0.5] with no min/max: p50 at the middle, 300 ms, error at most the bucket's 400 ms
    assert found.duration.p50_ms == pytest.approx(300) and found.duration.max_error_ms == pytest.approx(400)
    assert found.ttft.metric == "gen_ai.server.time_to_first_token" and found.ttft.p50_ms == pytest.approx(1000)
    assert windowed == {}  # the points ended 90 s before "now"


# --- exemplars ------------------------------------------------------------------------------------

FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"


def test_an_exemplar_gives_no_first_token_to_a_call_its_library_says_was_not_streamed(writer):
    """OpenLIT records ``gen_ai.server.time_to_first_token`` on a non-streamed call too: the whole call.
    The normalizer leaves that span value unread, and the metric's exemplar must not bring it back
    (it made the call 406.8 ms "first token" + 0.8 ms decode: 25,315 tokens/s in the stats)."""
    for record in read_records(FIXTURES / "openlit_openai.otlp"):
        assert ingest(writer, "traces", record).outcome is Outcome.OK
    for record in read_records(FIXTURES / "openlit_openai.metrics.otlp"):
        send(writer, record)
    writer.stop()
    sql = (f"SELECT streaming, ttft_ns, tokens_per_s, json_extract({PROVENANCE}, '$.ttft') "
           "FROM spans WHERE llm_kind = 'llm' AND status_code != 2 ORDER BY start_ns")  # fmt: skip
    rows = query_ro(writer.path, sql)
    assert [r[0] for r in rows] == [0, 1, 1, 1]  # plan is not streamed; research, summarize, answer are
    assert rows[0][1:] == (None, None, None)
    assert all(r[1] is not None and r[2] < 1000 for r in rows[1:])  # the streamed ones keep their first token


def test_exemplar_ttft_survives_reindex_and_reaches_only_llm_spans(writer):
    chat = make_span(tid(7), sid(2), sid(1), name="chat m", duration=S, attributes={"gen_ai.operation.name": "chat"})
    tool = make_span(tid(7), sid(3), sid(1), name="execute_tool x", duration=S,
                     attributes={"gen_ai.operation.name": "execute_tool"})  # fmt: skip
    assert ingest(writer, "traces", make_request([chat, tool]).SerializeToString()).outcome is Outcome.OK
    send(writer, ttft_exemplar_request(tid(7), sid(2), 0.3, FIRST_CHUNK))
    send(writer, ttft_exemplar_request(tid(7), sid(3), 0.3, FIRST_CHUNK))  # a tool has no first token
    writer.stop()
    sql = (
        f"SELECT span_id, ttft_ns, json_extract({PROVENANCE}, '$.ttft') FROM spans WHERE trace_id = ? ORDER BY span_id"
    )
    expected = [
        (sid(2), 300_000_000, "metric exemplar (gen_ai.client.operation.time_to_first_chunk)"),
        (sid(3), None, None),
    ]
    assert query_ro(writer.path, sql, (tid(7),)) == expected
    reindex(writer.path)
    assert query_ro(writer.path, sql, (tid(7),)) == expected

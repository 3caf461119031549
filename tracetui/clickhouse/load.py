"""``tracetui import --into clickhouse://... | chdb:PATH``: OTLP files into the exporter's tables.

The files are read by the SQLite import's readers (:func:`tracetui.ingest.importer.read_requests`:
OTLP JSON, JSON Lines, length-delimited protobuf), every file before anything is
written, so a bad file stops the import before the first insert. The tables are
created if missing, as the exporter's ``create_schema: true`` does
(:func:`~tracetui.clickhouse.schema.ensure_schema`), and the rows are the exporter's
(:mod:`tracetui.clickhouse.convert`), inserted in batches of :data:`BATCH_ROWS`.

Unlike the SQLite import this is not one transaction: ClickHouse has none across
batches, so an insert that fails midway leaves the batches before it (the error
says how many rows were written). And a MergeTree table keeps duplicates: a file
imported twice is stored twice, as spans exported twice by a Collector are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar, cast

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tracetui.clickhouse.connect import Borrowed, Connection, SourceSpec, connect
from tracetui.clickhouse.convert import LOG_COLUMNS, TRACE_COLUMNS, log_rows, trace_rows
from tracetui.clickhouse.schema import SchemaMismatch, check_shape, ensure_schema, quote_identifier
from tracetui.ingest.importer import ImportReport, read_requests
from tracetui.model.fmt import fmt_counted

_Request = TypeVar("_Request", ExportTraceServiceRequest, ExportLogsServiceRequest)

#: Rows per INSERT: big enough to keep parts few, small enough to keep the client's buffers modest.
BATCH_ROWS = 10_000


class LoadError(Exception):
    """An insert failed; the rows of earlier batches stay written (the message says how many)."""


def insert_requests(
    conn: Connection | Borrowed,
    traces: Iterable[ExportTraceServiceRequest],
    logs: Iterable[ExportLogsServiceRequest],
    *,
    batch_rows: int = BATCH_ROWS,
) -> tuple[int, int]:
    """Insert the requests' spans and log records into ``conn.spec``'s tables; (spans, log records) written.

    The tables must exist (:func:`~tracetui.clickhouse.schema.ensure_schema`) and have the
    exporter's shape (checked first: :class:`~tracetui.clickhouse.schema.SchemaMismatch`).
    Log columns an older logs table lacks (``EventName``, ...) are left out, as the
    exporter leaves them out. Raises :class:`LoadError` when an insert fails.
    """
    spec = conn.spec
    shape = check_shape(conn.client, spec.database, spec.traces_table, spec.logs_table)
    spans = _insert(conn, spec.traces_table, TRACE_COLUMNS, _rows(traces, trace_rows), batch_rows)
    log_batches = _rows(logs, log_rows)
    first = next(log_batches, None)
    if first is None:
        return spans, 0
    if shape.logs_table is None:
        raise SchemaMismatch(f"no table {spec.database}.{spec.logs_table} (is --logs-table right?)")
    kept = [i for i, name in enumerate(LOG_COLUMNS) if name in shape.log_columns]
    columns = [LOG_COLUMNS[i] for i in kept]
    projected = ([tuple(row[i] for i in kept) for row in batch] for batch in _chain(first, log_batches))
    return spans, _insert(conn, spec.logs_table, columns, projected, batch_rows)


def _rows(requests: Iterable[_Request], convert: Callable[[_Request], list[tuple]]) -> Iterator[list[tuple]]:
    """Each request's rows (requests without any are skipped)."""
    for request in requests:
        rows = convert(request)
        if rows:
            yield rows


def _chain(first: list[tuple], rest: Iterator[list[tuple]]) -> Iterator[list[tuple]]:
    yield first
    yield from rest


def _insert(
    conn: Connection | Borrowed, table: str, columns: Sequence[str], row_lists: Iterable[list[tuple]], batch_rows: int
) -> int:
    """Insert the rows in batches of ``batch_rows``; how many were written."""
    target = f"{quote_identifier(conn.spec.database)}.{quote_identifier(table)}"
    written = 0
    pending: list[tuple] = []

    def flush(rows: list[tuple]) -> None:
        nonlocal written
        try:
            conn.client.insert(target, rows, column_names=list(columns))
        except Exception as exc:
            done = f"{fmt_counted(written, 'row')} written before it" if written else "nothing written"
            raise LoadError(f"insert into {conn.spec.database}.{table} failed ({done}): {exc}") from None
        written += len(rows)

    for rows in row_lists:
        pending.extend(rows)
        while len(pending) >= batch_rows:
            flush(pending[:batch_rows])
            del pending[:batch_rows]
    if pending:
        flush(pending)
    return written


def import_files_into(spec: SourceSpec, paths: Iterable[Path]) -> ImportReport:
    """Read every file, then create the exporter's tables if missing and insert; what was read and written.

    Raises ImportFailed (a bad file: nothing written), SourceError (cannot connect),
    SchemaMismatch (the tables are not the exporter's) or LoadError (an insert failed).
    """
    report = ImportReport()
    requests = read_requests(paths, report)
    traces = [cast(ExportTraceServiceRequest, r.message) for r in requests if r.signal == "traces"]
    logs = [cast(ExportLogsServiceRequest, r.message) for r in requests if r.signal == "logs"]
    spans = [span for request in traces for span in _spans(request)]
    records = sum(len(scope.log_records) for request in logs for resource in request.resource_logs
                  for scope in resource.scope_logs)  # fmt: skip
    if not spans and not records:
        return report
    report.traces = len({span.trace_id for span in spans})
    with connect(spec, create_database=True) as conn:
        ensure_schema(conn.client, spec.database, spec.traces_table, spec.logs_table)
        report.spans, report.logs = insert_requests(conn, traces, logs)
    report.new_spans = report.spans
    return report


def summary_into(report: ImportReport, spec: SourceSpec) -> str:
    """One line saying what was imported where, as the SQLite import's summary does."""
    parts = [f"{fmt_counted(report.spans, 'span')} in {fmt_counted(report.traces, 'trace')}"] if report.spans else []
    parts += [fmt_counted(report.logs, "log record")] if report.logs else []
    tables = ", ".join(([spec.traces_table] if report.spans else []) + ([spec.logs_table] if report.logs else []))
    text = f"imported {' and '.join(parts)} from {fmt_counted(report.files, 'file')} into {spec.display()} ({tables})"
    if report.skipped_metrics:
        text += f"; skipped {fmt_counted(report.skipped_metrics, 'metrics request')}"
    return text


def _spans(request: ExportTraceServiceRequest) -> Iterator[Span]:
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            yield from scope_spans.spans

"""``tracetui import``: OTLP files into the database, all or nothing.

Accepted files:

* OTLP JSON: one request per file (``{"resourceSpans": [...]}`` or
  ``{"resourceLogs": [...]}``), or JSON Lines with one request per line, as
  the OpenTelemetry Collector's file exporter writes them. Metrics requests
  are skipped.
* Length-delimited protobuf (4-byte big-endian length, then one serialized
  ``Export*ServiceRequest``, repeated), as in ``tests/fixtures/*.otlp``; a
  file named ``*.logs.*`` holds logs requests, ``*.metrics.*`` metrics
  (skipped), any other traces.

Every file is read and decoded before anything is written; the first problem
in each file is reported with the file name and the line (JSON) or record
number (protobuf), and then nothing is stored. What is valid goes through the
same decode and normalize path as the receivers and is written by the real
:class:`~tracetui.store.writer.Writer` in a single transaction, so a failed
write leaves nothing half-written either.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

from google.protobuf.message import Message

from tracetui.model.fmt import fmt_counted
from tracetui.model.rows import Decoded
from tracetui.otlp.decode import DecodeError, parse_logs_request, parse_trace_request
from tracetui.otlp.files import FramingError, read_length_delimited
from tracetui.otlp.otlp_json import REQUEST_TYPES, load_json, message_from_dict, signal_of

if TYPE_CHECKING:
    from tracetui.otlp.signals import Signal

#: Errors listed before the rest are summarized as "... and N more".
MAX_ERRORS_SHOWN = 20
#: How long the import waits for its transaction (a running receiver may hold the lock briefly).
WRITE_TIMEOUT_S = 600.0


class ImportFailed(Exception):
    """Nothing was imported; ``errors`` says why, one line per problem."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        shown = errors[:MAX_ERRORS_SHOWN]
        more = len(errors) - len(shown)
        super().__init__("\n".join(shown) + (f"\n... and {more} more" if more else ""))


@dataclass
class ImportReport:
    """What an import read and wrote."""

    files: int = 0
    requests: int = 0
    spans: int = 0
    new_spans: int = 0
    traces: int = 0
    logs: int = 0
    rejected: int = 0
    skipped_metrics: int = 0
    #: Per-item problems that did not stop the import (spans with invalid ids), with where they were.
    warnings: list[str] = field(default_factory=list)

    def summary(self, db: Path | str = "the database") -> str:
        """One line that leads with what changed: how many spans were new, and how many were already stored."""
        logs = f" and {fmt_counted(self.logs, 'log record')}" if self.logs else ""
        source = f"from {fmt_counted(self.files, 'file')}"
        old = self.spans - self.new_spans
        if self.spans and not self.new_spans:
            spans = f"{fmt_counted(self.spans, 'span')} in {fmt_counted(self.traces, 'trace')}"
            if self.logs:  # the writer does not count new log records: say what is known
                records = fmt_counted(self.logs, "log record")
                text = f"no new spans: the {spans} {source} were all already in {db}; "
                text += f"{records} read (one already stored is not stored twice)"
            else:
                text = f"nothing new: the {spans} {source} were all already in {db}"
        elif old:
            # Some spans were stored already: the traces read are not all the new spans' traces.
            text = f"imported {fmt_counted(self.new_spans, 'new span')}{logs} {source} into {db}"
            text += (f" ({old:,} of the {fmt_counted(self.spans, 'span')} read, in {fmt_counted(self.traces, 'trace')},"
                     f" {'was' if old == 1 else 'were'} already there)")  # fmt: skip
        else:
            spans = f"{fmt_counted(self.new_spans, 'new span')} in {fmt_counted(self.traces, 'trace')}"
            text = f"imported {spans}{logs} {source} into {db}"
        if self.rejected:
            text += f"; rejected {fmt_counted(self.rejected, 'invalid item')}"
        if self.skipped_metrics:
            text += f"; skipped {fmt_counted(self.skipped_metrics, 'metrics request')}"
        return text


@dataclass
class FileRequest:
    """One export request read from a file, with where it was (for messages)."""

    where: str  # "FILE:LINE" or "FILE: record N"
    signal: str  # "traces" or "logs": metrics requests are skipped as they are read
    message: Message


# --- reading ---------------------------------------------------------------------------------


def _looks_like_json(data: bytes) -> bool:
    head = data.lstrip()[:1]
    return head in (b"{", b"[")


def _json_requests(path: Path, data: bytes) -> Iterator[tuple[str, object]]:
    """(where, loaded object) for a JSON document or each line of a JSON Lines file."""
    lines = data.splitlines()
    content = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    json_lines = False
    if len(content) > 1:
        try:
            load_json(content[0][1])
            json_lines = True
        except DecodeError:
            json_lines = False  # a pretty-printed document: its first line alone is not JSON
    if not json_lines:
        try:
            yield str(path), load_json(data)
        except DecodeError as exc:
            raise DecodeError(f"{path}: {exc}") from None
        return
    for n, line in content:
        try:
            yield f"{path}:{n}", load_json(line)
        except DecodeError as exc:
            raise DecodeError(f"{path}:{n}: {str(exc).replace(' at line 1 column', ' at column')}") from None


def _read_json(path: Path, data: bytes, report: ImportReport) -> list[FileRequest]:
    out = []
    for where, obj in _json_requests(path, data):
        if not isinstance(obj, dict):
            kind = {"list": "array", "str": "string", "int": "number", "float": "number", "bool": "boolean"}.get(
                type(obj).__name__, "null"
            )
            raise DecodeError(f'{where}: expected an OTLP JSON object ({{"resourceSpans": ...}}), got a JSON {kind}')
        signal = signal_of(obj)
        if signal is None:
            if obj:
                raise DecodeError(f"{where}: not an OTLP request (no resourceSpans or resourceLogs)")
            continue  # {} is an empty request
        if signal == "metrics":
            report.skipped_metrics += 1
            continue
        try:
            out.append(FileRequest(where, signal, message_from_dict(obj, REQUEST_TYPES[signal])))
        except DecodeError as exc:
            raise DecodeError(f"{where}: {exc}") from None
    return out


def _read_protobuf(path: Path, report: ImportReport) -> list[FileRequest]:
    signal = "metrics" if ".metrics." in path.name else "logs" if ".logs." in path.name else "traces"
    parse = parse_logs_request if signal == "logs" else parse_trace_request
    out = []
    try:
        for n, record in enumerate(read_length_delimited(path), 1):
            if signal == "metrics":  # skipped, as metrics in JSON files are
                report.skipped_metrics += 1
                continue
            try:
                out.append(FileRequest(f"{path}: record {n}", signal, parse(record)))
            except DecodeError as exc:
                hint = "" if signal == "logs" else " (a logs file must be named *.logs.otlp)"
                raise DecodeError(f"{path}: record {n}: {exc}{hint}") from None
    except FramingError as exc:
        raise DecodeError(f"{exc} (not a length-delimited OTLP protobuf file, nor JSON)") from None
    return out


def read_file(path: Path, report: ImportReport | None = None) -> list[FileRequest]:
    """Every request in one file; raises DecodeError naming the file and the line or record."""
    report = report if report is not None else ImportReport()
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DecodeError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not data.strip():
        raise DecodeError(f"{path}: the file is empty")
    if _looks_like_json(data):
        return _read_json(Path(path), data, report)
    return _read_protobuf(Path(path), report)


def read_requests(paths: Iterable[Path], report: ImportReport | None = None) -> list[FileRequest]:
    """Every traces and logs request in these files, in order, all read before the caller writes anything.

    Raises ImportFailed listing every bad file (the first problem in each). Counts files,
    requests and skipped metrics requests into ``report``. For writers that take the
    requests as they are (``tracetui import --into clickhouse://...``); :func:`load`
    also decodes them for the SQLite store.
    """
    report = report if report is not None else ImportReport()
    out: list[FileRequest] = []
    errors: list[str] = []
    for path in paths:
        report.files += 1
        try:
            requests = read_file(Path(path), report)
        except DecodeError as exc:
            errors.append(str(exc))
            continue
        out.extend(requests)
        report.requests += len(requests)
    if errors:
        raise ImportFailed(errors)
    return out


def _merge(into: Decoded, decoded: Decoded, where: str, report: ImportReport) -> None:
    into.sources.update(decoded.sources)
    into.spans.extend(decoded.spans)
    into.logs.extend(decoded.logs)
    into.evaluations.extend(decoded.evaluations)
    if decoded.rejected:
        report.rejected += decoded.rejected
        report.warnings.append(f"{where}: {decoded.rejection_message}")


def load(paths: Iterable[Path]) -> tuple[Decoded, ImportReport]:
    """Read and decode every file; raises ImportFailed listing every bad file (nothing is written)."""
    # The receivers' one decode entry point; imported on use, as Writer is below.
    from tracetui.otlp.signals import decode_request

    report = ImportReport()
    merged = Decoded()
    errors: list[str] = []
    for path in paths:
        report.files += 1
        try:
            requests = read_file(Path(path), report)
            for request in requests:
                decoded = decode_request(cast("Signal", request.signal), request.message)
                _merge(merged, decoded, request.where, report)
            report.requests += len(requests)
        except DecodeError as exc:
            errors.append(str(exc))
    if errors:
        raise ImportFailed(errors)
    report.spans = len({(row[0], row[1]) for row in merged.spans})
    report.traces = len({row[0] for row in merged.spans})
    report.logs = len(merged.logs)
    return merged, report


def import_files(paths: Iterable[Path], db_path: Path) -> ImportReport:
    """Import files into the database at ``db_path`` in one transaction; raises ImportFailed."""
    from tracetui.store.writer import Writer

    merged, report = load(paths)
    if not merged.count:
        return report
    try:
        writer = Writer(db_path)
    except Exception as exc:  # sqlite3.Error, OSError, SchemaTooNew
        raise ImportFailed([f"cannot open database {db_path}: {exc}"]) from None
    writer.start()
    try:
        # One ticket is always written whole in one transaction (Writer._take_batch).
        ticket = writer.submit(merged)
        if not ticket.wait(WRITE_TIMEOUT_S):
            raise ImportFailed([f"{db_path}: the write did not finish within {WRITE_TIMEOUT_S:.0f}s"])
        if ticket.error is not None:
            raise ImportFailed([f"{db_path}: nothing imported: {ticket.error}"])
    finally:
        writer.stop()
    report.new_spans = writer.spans_written
    return report

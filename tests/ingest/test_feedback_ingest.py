"""What users felt, as apps send it: feedback through a real receiver from the real OpenTelemetry SDK.

Three routes an app takes (docs/semconv.md, "User feedback"): a ``gen_ai.evaluation.result``
span event named ``user_feedback``; a log record whose event name is ``user_feedback`` /
``thumbs`` / ``abandoned`` with ``value`` / ``score`` / ``comment`` attributes; and an
evaluation result log record named ``thumbs``. Each is stored once, read as thumbs up/down,
and counted by compare.
"""

from __future__ import annotations

import signal
import time

from helpers import start_receiver, wait_until
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, set_span_in_context

from tracetui.llm.feedback import abandoned, thumb
from tracetui.query import compare as cmp
from tracetui.store.reader import SqliteReader


def test_feedback_sent_three_ways_is_stored_and_counted(tmp_path):
    receiver = start_receiver(tmp_path / "feedback.db")
    endpoint = f"http://127.0.0.1:{receiver.port}"
    try:
        resource = Resource.create({"service.name": "support-bot"})
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
        logger_provider = LoggerProvider(resource=resource)
        logger_provider.add_log_record_processor(
            SimpleLogRecordProcessor(OTLPLogExporter(endpoint=endpoint, insecure=True))
        )
        tracer, logger = tracer_provider.get_tracer("app"), logger_provider.get_logger("app.feedback")
        calls = []
        for run in range(3):
            with tracer.start_as_current_span("support agent") as root:
                with tracer.start_as_current_span(
                    "chat gpt-4o-mini",
                    kind=SpanKind.CLIENT,
                    attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
                                "gen_ai.response.time_to_first_chunk": 0.4 if run < 2 else 3.5},
                ) as call:  # fmt: skip
                    if run == 0:  # 1: a span event, as the OTel GenAI conventions describe results
                        call.add_event(
                            "gen_ai.evaluation.result",
                            {"gen_ai.evaluation.name": "user_feedback", "gen_ai.evaluation.score.label": "thumbs_up"},
                        )
                calls.append(call)
            if run == 1:  # 2: a log record named user_feedback, on the call, with a comment
                logger.emit(
                    timestamp=time.time_ns(), context=set_span_in_context(call), event_name="user_feedback",
                    attributes={"value": "thumbs_down", "comment": "cited the wrong invoice"},
                )  # fmt: skip
            if run == 2:  # 3: an evaluation result named thumbs (score 0 = down), and the run abandoned
                logger.emit(
                    timestamp=time.time_ns(), context=set_span_in_context(call), event_name="gen_ai.evaluation.result",
                    attributes={"gen_ai.evaluation.name": "thumbs", "gen_ai.evaluation.score.value": 0.0},
                )  # fmt: skip
                logger.emit(
                    timestamp=time.time_ns(), context=set_span_in_context(root), event_name="abandoned",
                    attributes={"value": True},
                )  # fmt: skip
        tracer_provider.shutdown()
        logger_provider.shutdown()

        reader = SqliteReader(receiver.db_path)
        try:
            assert wait_until(lambda: reader.count_traces() == 3 and len(_results(reader, calls)) == 4, 15)
            results = _results(reader, calls)
            read = sorted((r.name, thumb(r.name, r.score, r.label), r.source) for r in results
                          if thumb(r.name, r.score, r.label) is not None)  # fmt: skip
            assert read == [
                ("thumbs", -1, "log record"),
                ("user_feedback", -1, "feedback log record"),
                ("user_feedback", 1, "span event"),
            ]
            note = next(r for r in results if r.source == "feedback log record" and r.name == "user_feedback")
            assert note.explanation == "cited the wrong invoice"
            assert note.span_id == calls[1].get_span_context().span_id.to_bytes(8, "big")
            assert [r.name for r in results if abandoned(r.name, r.score, r.label)] == ["abandoned"]
            comparison = cmp.compare(reader, cmp.Cohort("A", "ttft<1s"), cmp.Cohort("B", "ttft>1s"))
        finally:
            reader.close()
        thumbs_down, gone = comparison.get("thumbs_down"), comparison.get("abandoned")
        assert (thumbs_down.a, thumbs_down.n_a, thumbs_down.b, thumbs_down.n_b) == (0.5, 2, 1.0, 1)
        assert (gone.a, gone.b) == (0.0, 1.0)
        bands = dict(comparison.thumbs_by_ttft)
        assert (bands["TTFT < 1 s"].a, bands["> 3 s"].b) == (0.5, 1.0)
    finally:
        assert receiver.stop(signal.SIGTERM) == 0


def _results(reader: SqliteReader, calls) -> list:
    trace_ids = {c.get_span_context().trace_id.to_bytes(16, "big") for c in calls}
    return reader.evaluation_results(trace_ids)

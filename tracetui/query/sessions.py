"""Runs grouped into conversations: the sessions view and ``tracetui sessions``.

A *session* is every run (trace) whose session / conversation id is the same
(``traces.session_id``: ``gen_ai.conversation.id``, ``session.id``,
``langfuse.session.id``, Vercel's ``ai.telemetry.metadata.sessionId``... as
tracetui.llm.semconv normalizes them). :func:`group_runs` adds up list rows that
a backend has already built; the SQLite reader does the same sums in SQL over
the whole table instead, and the tests hold both to the same answers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from tracetui.model.views import SessionRow, TraceRow

#: Sessions a view or a command lists at most (the most recently active first).
DEFAULT_LIMIT = 1000


def session_row(session_id: str, runs: list[TraceRow]) -> SessionRow:
    """One session's totals from its runs (at least one)."""
    runs = sorted(runs, key=lambda r: (r.start_ns, r.seq))
    costs = [r.cost_usd for r in runs if r.cost_usd is not None]
    grounded = [r.groundedness for r in runs if r.groundedness is not None]
    first = runs[0]
    return SessionRow(
        session_id=session_id,
        runs=len(runs),
        first_start_ns=first.start_ns,
        last_start_ns=runs[-1].start_ns,
        last_end_ns=max(r.end_ns for r in runs),
        duration_ns=sum(r.duration_ns for r in runs),
        llm_calls=sum(r.llm_calls for r in runs),
        tokens=sum(r.input_tokens + r.output_tokens for r in runs),
        cost_usd=math.fsum(costs) if costs else None,
        unpriced_calls=sum(r.unpriced_calls for r in runs),
        tokenless_calls=sum(r.tokenless_calls for r in runs),
        errors=sum(r.error_count for r in runs),
        error_runs=sum(1 for r in runs if r.error_count),
        groundedness=min(grounded) if grounded else None,
        first_name=first.name,
        service=first.service,
    )


def group_runs(rows: Iterable[TraceRow], limit: int | None = DEFAULT_LIMIT) -> list[SessionRow]:
    """Sessions of these runs (rows without a session id are left out), most recently active first."""
    by_session: dict[str, list[TraceRow]] = {}
    for row in rows:
        if row.session_id:
            by_session.setdefault(row.session_id, []).append(row)
    sessions = [session_row(sid, runs) for sid, runs in by_session.items()]
    sessions.sort(key=lambda s: (s.last_start_ns, s.session_id), reverse=True)
    return sessions if limit is None else sessions[:limit]

"""Two runs aligned by structure (tracetui.query.diff): the handmade agent's two runs, and generated pairs."""

from __future__ import annotations

import copy

import pytest
from helpers import FIXTURES, read_records

from tracetui.model.views import SpanRow
from tracetui.query import diff as diff_module
from tracetui.query.diff import RunDiff, RunTotals, diff_runs
from tracetui.query.memory import MemoryReader

MS = 1_000_000

# --- the handmade agent: the 34 s run (gpt-4o times out, claude-sonnet-4 falls back) against the clean one ---
#
# Ground truth (tests/fixtures/handmade_agent.json, tests/fixtures/README.md):
#   A, trace f88fdd41, 34,139 ms: retrieval kb-billing 310 ms; execute_tool lookup_invoice 210 ms;
#      chat gpt-4o 30,000 ms, ERROR (timed out waiting for the first chunk, no usage);
#      chat claude-sonnet-4 3,570 ms, fallback (link to the failed call), first chunk at 0.82 s, 1432 in / 187 out.
#   B, trace 7d62cae1, 2,712 ms: retrieval kb-billing 288 ms; chat gpt-4o 2,400 ms, not streamed, 918 in / 64 out,
#      response model gpt-4o-2024-08-06.
# Prices (genai-prices): gpt-4o $2.50 / $10 per million tokens, claude-sonnet-4 $3 / $15.


def _s(ms: float) -> int:
    return round(ms * MS)


@pytest.fixture(scope="module")
def agent_runs() -> tuple[MemoryReader, bytes, bytes]:
    reader = MemoryReader.of(read_records(FIXTURES / "handmade_agent.otlp"))
    by_prefix = {row.trace_id.hex()[:8]: row.trace_id for row in reader.traces(0, -1)}
    return reader, by_prefix["f88fdd41"], by_prefix["7d62cae1"]


@pytest.fixture(scope="module")
def agent_diff(agent_runs) -> RunDiff:
    reader, a, b = agent_runs
    return diff_runs(reader.spans(a), reader.spans(b))


def test_the_agent_runs_align_by_structure(agent_diff: RunDiff) -> None:
    rows = [(r.status, r.depth, r.span.name) for r in agent_diff.rows]
    assert rows == [
        ("aligned", 0, "ticket-resolution agent"),
        ("aligned", 1, "retrieval kb-billing"),
        ("removed", 1, "execute_tool lookup_invoice"),
        ("aligned", 1, "chat gpt-4o"),
        ("removed", 1, "chat claude-sonnet-4"),
    ]
    assert [r.paired_by for r in agent_diff.pairs] == ["root", "key", "key"]
    assert agent_diff.calls("removed") == 2 and agent_diff.calls("added") == 0
    assert agent_diff.calls("removed", diff_module.MODEL_KINDS) == 1
    fallback = agent_diff.removed[1].a
    assert fallback is not None and fallback.is_fallback  # the call B did not need


def test_the_agent_runs_deltas_are_b_minus_a(agent_diff: RunDiff) -> None:
    root, retrieval, chat = agent_diff.pairs
    assert root.change("duration").delta == _s(2712) - _s(34139) == -31_427 * MS
    assert root.change("duration").verdict == 1  # B is faster
    assert retrieval.change("duration").delta == _s(288) - _s(310)
    assert {c.key for c in retrieval.changes} == {"duration", "status"}  # not a model call: duration and status

    chat_changes = {c.key: c for c in chat.changes}
    assert chat_changes["duration"].delta == _s(2400) - _s(30000)
    assert (chat_changes["status"].a, chat_changes["status"].b, chat_changes["status"].verdict) == ("error", "ok", 1)
    assert (chat_changes["input_tokens"].a, chat_changes["input_tokens"].b) == (None, 918)
    assert (chat_changes["output_tokens"].a, chat_changes["output_tokens"].b) == (None, 64)
    assert chat_changes["input_tokens"].delta is None  # A reported no usage: no difference to compute
    assert chat_changes["request_model"].changed is False
    assert (chat_changes["response_model"].a, chat_changes["response_model"].b) == (None, "gpt-4o-2024-08-06")
    assert chat_changes["cost_usd"].a is None
    assert chat_changes["cost_usd"].b == pytest.approx(918 * 2.5e-6 + 64 * 10e-6)
    assert chat_changes["ttft_ns"].a is None and chat_changes["ttft_ns"].b is None  # timed out / not streamed
    assert not chat_changes["is_fallback"].changed and not chat_changes["is_retry"].changed


def test_the_agent_runs_totals(agent_runs) -> None:
    reader, a, b = agent_runs
    ta, tb = RunTotals.of(reader.trace(a)), RunTotals.of(reader.trace(b))
    assert (ta.duration_ns, tb.duration_ns) == (_s(34139), _s(2712))
    assert (ta.tokens, tb.tokens) == (1432 + 187, 918 + 64)  # leaf calls once: not the agent span's copy
    assert ta.cost_usd == pytest.approx(1432 * 3e-6 + 187 * 15e-6)
    assert tb.cost_usd == pytest.approx(918 * 2.5e-6 + 64 * 10e-6)
    assert (ta.llm_calls, tb.llm_calls) == (2, 1)


def test_the_fallback_call_diffed_against_the_clean_call(agent_runs) -> None:
    """Swapped in B's place: claude-sonnet-4 (A) against gpt-4o (B) pair as a model swap, with every figure."""
    reader, a, b = agent_runs
    spans_a = [s for s in reader.spans(a) if s.name != "chat gpt-4o"]  # only the fallback left in A
    diff = diff_runs(spans_a, reader.spans(b))
    (chat,) = [r for r in diff.pairs if r.is_model_call]
    assert (chat.span.name, chat.b.name, chat.paired_by) == ("chat claude-sonnet-4", "chat gpt-4o", "model")
    c = {change.key: change for change in chat.changes}
    assert c["duration"].delta == _s(2400) - _s(3570)
    assert (c["ttft_ns"].a, c["ttft_ns"].b) == (_s(820), None)
    assert (c["decode_ns"].a, c["tokens_per_s"].a) == (_s(3570) - _s(820), pytest.approx(187 / 2.75))
    assert c["input_tokens"].delta == 918 - 1432 and c["output_tokens"].delta == 64 - 187
    assert c["cost_usd"].delta == pytest.approx((918 * 2.5e-6 + 64 * 10e-6) - (1432 * 3e-6 + 187 * 15e-6))
    assert c["cost_usd"].verdict == 1  # cheaper
    assert (c["request_model"].a, c["request_model"].b) == ("claude-sonnet-4", "gpt-4o")
    assert (c["is_fallback"].a, c["is_fallback"].b, c["is_fallback"].verdict) == (1, 0, 1)
    assert c["retry_ns"].a == _s(30008) and c["retry_ns"].b is None  # the failed call and the gap before the fallback


# --- generated pairs ---------------------------------------------------------------------------------


class Run:
    """A run built by hand: an agent root and children, each (kind, name, duration ms[, parent index])."""

    def __init__(self, *children: tuple, root: str = "agent run", root_ms: float = 10_000) -> None:
        self.spans = [SpanRow(b"\x00" * 7 + b"\x01", None, root, 1, "svc", 0, _s(root_ms), 0, "", llm_kind="agent")]
        t = 0
        for n, child in enumerate(children, start=2):
            kind, name, ms, *parent = child
            parent_id = self.spans[parent[0]].span_id if parent else self.spans[0].span_id
            self.spans.append(SpanRow(n.to_bytes(8, "big"), parent_id, name, 1, "svc", t, t + _s(ms), 0, "",
                                      llm_kind=kind))  # fmt: skip
            t += _s(ms)


def _rows(diff: RunDiff) -> list[tuple[str, str]]:
    return [(r.status, r.span.name) for r in diff.rows]


def test_a_tool_added_in_the_middle_shifts_nothing_after_it() -> None:
    a = Run(("llm", "chat plan", 900), ("tool", "execute_tool search", 200), ("llm", "chat answer", 1500))
    b = Run(("llm", "chat plan", 800), ("tool", "execute_tool search", 250), ("tool", "execute_tool fetch", 90),
            ("llm", "chat answer", 1400))  # fmt: skip
    diff = diff_runs(a.spans, b.spans)
    assert _rows(diff) == [("aligned", "agent run"), ("aligned", "chat plan"), ("aligned", "execute_tool search"),
                           ("added", "execute_tool fetch"), ("aligned", "chat answer")]  # fmt: skip
    assert [r.change("duration").delta for r in diff.pairs[1:]] == [-100 * MS, 50 * MS, -100 * MS]
    assert diff.pairs[2].change("duration").verdict == -1  # search got slower
    assert diff.calls("added") == 1 and diff.calls("removed") == 0


def test_a_removed_tool_takes_its_subtree_with_it() -> None:
    a = Run(("tool", "execute_tool browse", 500), ("tool", "execute_tool fetch", 100, 1), ("llm", "chat x", 900))
    b = Run(("llm", "chat x", 900))
    diff = diff_runs(a.spans, b.spans)
    assert [(r.status, r.depth, r.span.name) for r in diff.rows] == [
        ("aligned", 0, "agent run"),
        ("removed", 1, "execute_tool browse"),
        ("removed", 2, "execute_tool fetch"),
        ("aligned", 1, "chat x"),
    ]


def test_reordered_calls_keep_the_longest_common_order() -> None:
    a = Run(("tool", "execute_tool x", 100), ("tool", "execute_tool y", 100), ("llm", "chat z", 100))
    b = Run(("tool", "execute_tool y", 100), ("tool", "execute_tool x", 100), ("llm", "chat z", 100))
    diff = diff_runs(a.spans, b.spans)
    # x and y swapped: one of them pairs (the earlier pairing: y), the other shows as moved (removed + added)
    assert _rows(diff) == [("aligned", "agent run"), ("removed", "execute_tool x"), ("aligned", "execute_tool y"),
                           ("added", "execute_tool x"), ("aligned", "chat z")]  # fmt: skip


def test_repeated_calls_pair_in_order() -> None:
    a = Run(("llm", "chat step", 100), ("llm", "chat step", 200), ("llm", "chat step", 300))
    b = Run(("llm", "chat step", 110), ("llm", "chat step", 190))
    diff = diff_runs(a.spans, b.spans)
    assert _rows(diff)[1:] == [("aligned", "chat step"), ("aligned", "chat step"), ("removed", "chat step")]
    assert [r.change("duration").delta for r in diff.pairs[1:]] == [10 * MS, -10 * MS]


def test_a_model_swap_is_one_changed_call_but_another_tool_is_not() -> None:
    a = Run(("llm", "chat gpt-4o", 2000), ("tool", "execute_tool lookup", 100))
    b = Run(("llm", "chat gpt-4o-mini", 700), ("tool", "execute_tool search", 100))
    a.spans[1].request_model, b.spans[1].request_model = "gpt-4o", "gpt-4o-mini"
    diff = diff_runs(a.spans, b.spans)
    assert [(r.status, r.span.name, r.paired_by) for r in diff.rows] == [
        ("aligned", "agent run", "root"),
        ("aligned", "chat gpt-4o", "model"),
        ("removed", "execute_tool lookup", ""),
        ("added", "execute_tool search", ""),
    ]
    model = diff.pairs[1].change("request_model")
    assert (model.a, model.b, model.changed, model.delta) == ("gpt-4o", "gpt-4o-mini", True, None)


def test_children_are_aligned_per_parent() -> None:
    """A tool under step 1 in A and under step 2 in B is not the same call."""
    a = Run(("chain", "step 1", 500), ("tool", "execute_tool t", 100, 1), ("chain", "step 2", 500))
    b = Run(("chain", "step 1", 500), ("chain", "step 2", 500), ("tool", "execute_tool t", 100, 2))
    diff = diff_runs(a.spans, b.spans)
    assert [(r.status, r.depth, r.span.name) for r in diff.rows] == [
        ("aligned", 0, "agent run"),
        ("aligned", 1, "step 1"),
        ("removed", 2, "execute_tool t"),
        ("aligned", 1, "step 2"),
        ("added", 2, "execute_tool t"),
    ]


def test_identical_runs_have_every_delta_zero(agent_runs) -> None:
    reader, a, _b = agent_runs
    spans = reader.spans(a)
    diff = diff_runs(spans, copy.deepcopy(spans))
    assert not diff.added and not diff.removed and len(diff.pairs) == 5
    for row in diff.pairs:
        for change in row.changes:
            assert not change.changed and change.verdict == 0, (row.span.name, change)
            assert change.delta in (0, None)  # None: a figure neither side has
        assert row.change("duration").delta == 0


def test_an_empty_run() -> None:
    b = Run(("llm", "chat x", 100))
    assert _rows(diff_runs([], b.spans)) == [("added", "agent run"), ("added", "chat x")]
    assert _rows(diff_runs(b.spans, [])) == [("removed", "agent run"), ("removed", "chat x")]
    assert diff_runs([], []).rows == []


def test_single_roots_pair_whatever_their_names_and_several_roots_align_by_key() -> None:
    a, b = Run(("llm", "chat x", 100), root="run one"), Run(("llm", "chat x", 120), root="run two")
    assert _rows(diff_runs(a.spans, b.spans))[:1] == [("aligned", "run one")]
    orphan = SpanRow(b"\x09" * 8, b"\x77" * 8, "late child", 1, "svc", 0, MS, 0, "")  # its parent never arrived
    diff = diff_runs([*a.spans, orphan], b.spans)
    assert ("removed", "late child") in _rows(diff) and ("removed", "run one") in _rows(diff)


def test_status_and_retries_changes_have_a_direction() -> None:
    a, b = Run(("llm", "chat x", 100)), Run(("llm", "chat x", 100))
    a.spans[1].status_code, a.spans[1].is_retry, a.spans[1].retry_ns = 2, 0, None
    b.spans[1].is_retry, b.spans[1].retry_ns = 1, 400 * MS
    call = diff_runs(a.spans, b.spans).pairs[1]
    assert call.change("status").verdict == 1  # error -> ok: fixed
    assert call.change("is_retry").verdict == -1  # B needed a retry
    assert call.change("retry_ns").delta is None  # A lost nothing to retries: no figure to subtract


def test_a_deep_chain_and_a_wide_level_do_not_recurse_or_blow_up(monkeypatch) -> None:
    deep = [SpanRow(n.to_bytes(8, "big"), (n - 1).to_bytes(8, "big") if n else None, "step", 1, "svc", n, n + 1, 0, "")
            for n in range(5000)]  # fmt: skip
    diff = diff_runs(deep, copy.deepcopy(deep))
    assert len(diff.pairs) == 5000 and diff.rows[-1].depth == 4999

    monkeypatch.setattr(diff_module, "MAX_LCS_CELLS", 10)  # the difflib fallback: still a common subsequence
    a = Run(*[("tool", f"execute_tool t{i % 7}", 10) for i in range(40)])
    b = Run(*[("tool", f"execute_tool t{i % 5}", 10) for i in range(40)])
    diff = diff_runs(a.spans, b.spans)
    for row in diff.pairs:
        assert row.a.name == row.b.name
    assert len(diff.pairs) + len(diff.removed) == 41 and len(diff.pairs) + len(diff.added) == 41

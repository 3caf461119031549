"""The output cap of each call (``max_tokens``), read from every captured library.

Ground truth: tests/fixtures/README.md. The openai suite's ``chat`` call and the agent's
``plan`` call ask for at most 200 tokens, the agent's ``summarize`` call for 120, and no
other call sets a cap. Compare (issue 18) warns when two cohorts were capped differently.
"""

from __future__ import annotations

import json

import pytest
from helpers import requests_of, trace_fixture_files

from tracetui.model.rows import COL
from tracetui.otlp.decode import decode_spans

#: Where each library puts the cap (tests/fixtures/README.md, reference table row 14).
WHERE = {
    "openinference_openai": "llm.invocation_parameters.max_tokens",
    "traceai_openai": "gen_ai.request.parameters.max_tokens",
}


def _caps(name: str) -> list[tuple[str, int | None, str | None]]:
    path = next(p for p in trace_fixture_files() if p.name == f"{name}.otlp")
    found = []
    for request in requests_of(path):
        for row in decode_spans(request).spans:
            if row[COL["llm_kind"]] == "llm":
                provenance = json.loads(row[COL["provenance"]] or "{}")
                found.append((row[COL["request_model"]], row[COL["max_tokens"]], provenance.get("max_tokens")))
    return found


@pytest.mark.parametrize(
    "name", sorted(p.name.removesuffix(".otlp") for p in trace_fixture_files() if p.name != "handmade_agent.otlp")
)
def test_every_library_reports_the_caps_the_app_asked_for(name):
    caps = _caps(name)
    assert caps, f"{name}: no LLM call decoded"
    seen = {cap for _, cap, _ in caps if cap is not None}
    assert seen == {200, 120}
    assert {where for _, cap, where in caps if cap is not None} == {WHERE.get(name, "gen_ai.request.max_tokens")}


def test_the_cap_of_a_call_without_one_is_unknown_not_zero():
    caps = _caps("otel_v2_openai")
    assert [cap for model, cap, _ in caps if model == "gpt-4.1"] == [None]  # the timeout call sets none


def test_litellm_plan_call_cap_sits_on_a_child_span_that_is_not_read():
    # LiteLLM writes the plan call's cap only on its raw_gen_ai_request child (llm.openai.max_tokens)
    assert [cap for model, cap, _ in _caps("litellm_otel") if model == "gpt-4o-mini"] == [None, None]


def test_handmade_agent_caps():
    assert [cap for _, cap, _ in _caps("handmade_agent")] == [512, 512, 512]

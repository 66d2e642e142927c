"""Adaptive self-consistency: the stopping rule against hand-worked numbers, and the runs it
makes (what it draws, when it stops, the budgets its record answers and what they cost)."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import numpy as np
import pytest

from testtime.config import DatasetConfig, RunConfig
from testtime.prompts.base import PromptTemplate
from testtime.runner import run
from testtime.search.adaptive_sc import (
    adaptive_sc,
    beta_majority_probability,
    dirichlet_majority_probability,
)
from testtime.search.base import SamplingConfig, SearchConfig, SearchContext, SearchResult
from testtime.store import read_records
from testtime.testing import RuleScorer, ScriptedPolicy
from testtime.types import Problem


@pytest.mark.parametrize(("v1", "v2", "want"), [
    (1, 0, 0.75), (3, 0, 0.9375), (4, 0, 0.96875), (2, 1, 11 / 16), (3, 1, 26 / 32),
    (5, 1, 120 / 128), (6, 1, 1 - 9 / 256), (9, 3, 1 - 378 / 8192), (2, 2, 0.5),
])
def test_beta_rule_by_hand(v1: int, v2: int, want: float) -> None:
    # P(p1 > p2) under Beta(v1+1, v2+1) = P(Binomial(v1+v2+1, 1/2) <= v1)
    assert beta_majority_probability(v1, v2) == pytest.approx(want, abs=1e-12)


def test_dirichlet_rule() -> None:
    rng = random.Random(0)
    assert dirichlet_majority_probability([4, 1], rng) == beta_majority_probability(4, 1)
    counts = [6, 1, 1]
    draws = np.random.default_rng(1).dirichlet(np.array(counts) + 1.0, size=400_000)
    reference = float((draws[:, 0] > draws[:, 1:].max(axis=1)).mean())
    assert dirichlet_majority_probability(counts, rng) == pytest.approx(reference, abs=0.01)


def answers_script(sequence: list[str | None]) -> ScriptedPolicy:
    """Sample i answers sequence[i] (None: no answer)."""
    def script(problem: str, prefix: str, i: int, params: object) -> str:
        a = sequence[i % len(sequence)]
        return "I do not know." if a is None else f"Work.\n\nSo \\boxed{{{a}}}"
    return ScriptedPolicy(script)


def solve(sequence: list[str | None], **kw: object) -> SearchResult:
    cfg = SearchConfig(**{"method": "adaptive_sc", "n": 16, **kw})
    ctx = SearchContext(answers_script(sequence), RuleScorer(lambda *a: 0.5),
                        PromptTemplate("plain"), cfg, SamplingConfig())
    return asyncio.run(adaptive_sc(Problem("p", "What is 1?", "1"), ctx))


@pytest.mark.parametrize(("sequence", "kw", "drawn", "stop"), [
    (["1"], {}, 4, "decided"),                      # (4, 0): 0.969; (3, 0) was 0.9375
    (["1", "2", "1", "1", "1", "1", "1"], {}, 7, "decided"),  # (6, 1): 0.965
    ([None, "1", "1", "1", "1"], {}, 5, "decided"),  # an unanswered sample does not count
    (["1", "2"], {}, 16, "budget"),                  # never decided: all N drawn
    (["1"], {"n": 3}, 3, "budget"),                  # the cap comes first
    (["1", "2", "1", "1", "1", "1", "1", "1"], {"sc_round": 4}, 8, "decided"),  # (3,1) .81
    (["1"], {"sc_threshold": 0.99}, 6, "decided"),   # (6, 0): 0.992; (5, 0) 0.984
])
def test_stops_when_the_majority_is_decided(sequence: list[str | None], kw: dict[str, object],
                                            drawn: int, stop: str) -> None:
    r = solve(sequence, **kw)
    info = r.info["adaptive_sc"]
    assert (info["drawn"], info["stop"]) == (drawn, stop)
    assert len(r.candidates) == r.compute.generations == drawn
    assert r.independent_prefixes and r.budget == kw.get("n", 16)


def test_round_size_changes_when_it_stops_not_what_it_draws() -> None:
    one, four = solve(["1", "2", "3"], n=8), solve(["1", "2", "3"], n=8, sc_round=4)
    assert [c.text for c in one.candidates] == [c.text for c in four.candidates]


def test_a_run_records_what_was_drawn_and_smaller_budgets(tmp_path: Path) -> None:
    data = tmp_path / "set.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"Question {i}?",
                                        "answer": "1"}) + "\n" for i in range(2)))
    cfg = RunConfig(dataset=DatasetConfig(name=str(data)), policy="scripted", prm="rule",
                    search=SearchConfig(method="adaptive_sc", n=8))
    seq = {"Question 0?": ["1"], "Question 1?": ["1", "2"]}

    def script(problem: str, prefix: str, i: int, params: object) -> str:
        answers = seq[problem]
        return f"So \\boxed{{{answers[i % len(answers)]}}}"

    asyncio.run(run(cfg, tmp_path / "run", policy=ScriptedPolicy(script),
                    scorer=RuleScorer(lambda *a: 0.5), progress=False))
    recs = {r.id: r for r in read_records(tmp_path / "run" / "results.jsonl")}
    assert recs["p0"].compute.generations == 4 and recs["p1"].compute.generations == 8
    assert set(recs["p0"].predictions) == {"1", "2", "4", "8"}
    assert recs["p0"].predictions["8"]["majority"].correct

    from testtime.analysis.runs import load_results

    res = load_results([tmp_path / "run"])
    (key,) = res.keys()
    outcomes = next(by_budget for s, by_budget in res.outcomes[key].items()
                    if s.rule == "majority")
    # at budget b the method drew min(stop, b) samples: a mean budget below b
    assert outcomes[2]["p0"].generations == 2 and outcomes[8]["p0"].generations == 4
    assert outcomes[8]["p1"].generations == 8
    assert outcomes[8]["p0"].policy_tokens == pytest.approx(
        recs["p0"].compute.prompt_tokens + recs["p0"].compute.completion_tokens)
    assert outcomes[2]["p0"].policy_tokens == pytest.approx(outcomes[8]["p0"].policy_tokens / 2)

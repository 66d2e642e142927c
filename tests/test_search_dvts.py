"""DVTS: independent one-beam subtrees, laid out so that whole-subtree prefixes are valid runs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from testtime.config import DatasetConfig, RunConfig
from testtime.prompts.base import PromptTemplate
from testtime.records import RecordStore
from testtime.runner import run
from testtime.search.base import SamplingConfig, SearchConfig, SearchContext, SearchResult
from testtime.search.beam_search import beam_search
from testtime.search.dvts import dvts
from testtime.testing import (
    RuleScorer,
    ScriptedPolicy,
    keyword_rule,
    text_scorer,
    tree_policy,
)
from testtime.types import Problem, SamplingParams

PROBLEM = Problem("q1", "What is 1 + 2?", "3")
PLAIN = PromptTemplate("plain")


def search(fn, policy: ScriptedPolicy, scorer: RuleScorer, **kw) -> SearchResult:  # type: ignore[no-untyped-def]
    cfg = SearchConfig(**{"method": "dvts", "n": 4, "beam_width": 2, **kw})
    ctx = SearchContext(policy, scorer, PLAIN, cfg, SamplingConfig(seed=3))
    return asyncio.run(fn(PROBLEM, ctx))


TREE = {
    "": ["A1.\n\n", "A2.\n\n", "B1.\n\n", "B2.\n\n"],
    "A1.\n\n": ["A1x \\boxed{3}", "A1y.\n\n"],
    "A1.\n\nA1y.\n\n": ["A1y1 \\boxed{3}", "A1y2 \\boxed{5}"],
    "B1.\n\n": ["B1x \\boxed{4}", "B1y \\boxed{4}"],
    "B2.\n\n": ["B2x \\boxed{4}", "B2y \\boxed{4}"],
}
SCORES = {"A1.": 0.3, "A2.": 0.2, "B1.": 0.9, "B2.": 0.8, "A1x \\boxed{3}": 0.6,
          "A1y1 \\boxed{3}": 0.7, "A1y2 \\boxed{5}": 0.1}


def test_subtrees_expand_only_their_own_beam() -> None:
    policy = tree_policy(TREE)
    scorer = text_scorer(SCORES)
    result = search(dvts, policy, scorer)
    calls = [[(r.prefix, r.params.n) for r in call] for call in policy.generate_calls]
    assert calls == [
        [("", 2), ("", 2)],  # one request of M first steps per subtree, in one call
        # subtree 0 keeps A1, the best of ITS two first steps, although B2 scored higher
        [("A1.\n\n", 2), ("B1.\n\n", 2)],
        # subtree 1 finished both paths; subtree 0 goes on alone
        [("A1.\n\nA1y.\n\n", 2)],
    ]
    status = {n.step.text.strip(): n.status for n in result.tree}
    assert status["A1."] == status["B1."] == "kept"
    assert status["A2."] == status["B2."] == "pruned"
    # candidates laid out subtree by subtree, M each, best first within a subtree
    assert [(c.origin, c.text) for c in result.candidates] == [
        (0, "A1.\n\nA1y.\n\nA1y1 \\boxed{3}"), (0, "A1.\n\nA1x \\boxed{3}"),
        (1, "B1.\n\nB1x \\boxed{4}"), (1, "B1.\n\nB1y \\boxed{4}")]
    # every path descends from its own subtree's first steps (nodes 0-1: subtree 0, 2-3: 1)
    for c in result.candidates:
        assert c.node_ids[0] in ({0, 1} if c.origin == 0 else {2, 3})
    # the scorer saw each subtree's own paths
    seen = {tuple(s.text.strip() for s in r.steps) for r in scorer.requests}
    assert {("A1.", "A1y.", "A1y1 \\boxed{3}"), ("B1.", "B1y \\boxed{4}")} <= seen
    assert result.independent_prefixes and result.prefix_unit == 2
    assert result.compute.completion_tokens == sum(n.step.num_tokens for n in result.tree)
    # beam search on the same tree keeps the two best first steps of one pool instead
    beam = search(beam_search, tree_policy(TREE), text_scorer(SCORES), method="beam_search")
    beam_status = {n.step.text.strip(): n.status for n in beam.tree}
    assert beam_status["B1."] == beam_status["B2."] == "kept"
    assert beam_status["A1."] == "pruned"


def test_subtree_seeds_do_not_depend_on_the_budget() -> None:
    small, large = tree_policy(TREE), tree_policy(TREE)
    search(dvts, small, text_scorer(SCORES), n=4)
    search(dvts, large, text_scorer(SCORES), n=8)
    seeds4 = [r.params.seed for r in small.generate_calls[0]]
    seeds8 = [r.params.seed for r in large.generate_calls[0]]
    assert len(seeds8) == 4 and seeds8[:2] == seeds4
    assert len(set(seeds8)) == 4


def answer_script(problem: str, prefix: str, i: int, params: SamplingParams) -> str:
    """Subtree 0 (first steps W1, W2) ends wrong with 4; the others end right with 3."""
    if not prefix:
        return ["W1.\n\n", "W2.\n\n", "R1.\n\n", "R2.\n\n", "R3.\n\n", "R4.\n\n", "R5.\n\n",
                "R6.\n\n"][i % 8]
    return "So \\boxed{4}" if prefix.startswith("W") else "So \\boxed{3}"


def test_budgets_are_whole_subtrees_and_selection_crosses_them(tmp_path: Path) -> None:
    data = tmp_path / "set.jsonl"
    data.write_text(json.dumps({"id": "p0", "problem": "What is 1 + 2?", "answer": "3"}) + "\n")
    cfg = RunConfig(dataset=DatasetConfig(name=str(data)), prm="rule",
                    search=SearchConfig(method="dvts", n=8, beam_width=2))
    scorer = RuleScorer(keyword_rule({"boxed{3}": 0.9, "boxed{4}": 0.2}))
    asyncio.run(run(cfg, tmp_path / "run", policy=ScriptedPolicy(answer_script),
                    scorer=scorer, progress=False))
    [rec] = RecordStore(tmp_path / "run" / "results.jsonl")
    assert [c.origin for c in rec.candidates] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [c.answer for c in rec.candidates] == ["4", "4"] + ["3"] * 6
    # budgets M, 2M, N: only whole subtrees
    assert set(rec.predictions) == {"2", "4", "8"}
    majority = {b: rec.predictions[b]["majority"].correct for b in rec.predictions}
    # budget 2 = subtree 0 alone; at 4 the 2-2 tie goes to the first answer; at 8, 3 wins
    assert majority == {"2": False, "4": False, "8": True}
    # a PRM rule picks the right answer from another subtree at budget 4
    assert rec.predictions["4"]["prm_last_max"].index == 2
    assert rec.predictions["4"]["prm_last_max"].correct
    assert rec.compute.completion_tokens == sum(n.tokens for n in rec.tree)

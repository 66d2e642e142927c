"""DVTS, worked by hand in both semantics; whole-subtree prefixes as smaller budgets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from testtime.config import DatasetConfig, RunConfig
from testtime.prompts.base import PromptTemplate
from testtime.runner import run
from testtime.search.base import SamplingConfig, SearchConfig, SearchContext, SearchResult
from testtime.search.dvts import dvts
from testtime.store import RecordStore
from testtime.testing import RuleScorer, ScriptedPolicy, keyword_rule, text_scorer, tree_policy
from testtime.types import Problem, SamplingParams

PROBLEM = Problem("q1", "What is 1 + 2?", "3")
PLAIN = PromptTemplate("plain")
TREE = {"": ["A1 \\boxed{1}.\n\n", "A2.\n\n", "A3.\n\n", "A4.\n\n"],
        "A3.\n\n": ["C1.\n\n", "C2 \\boxed{3}.\n\n"]}
SCORES = {"A1 \\boxed{1}.": 0.9, "A2.": 0.5, "A3.": 0.6, "A4.": 0.2, "C1.": 0.1,
          "C2 \\boxed{3}.": 0.4}


def search(policy: ScriptedPolicy, **kw) -> SearchResult:  # type: ignore[no-untyped-def]
    cfg = SearchConfig(**{"method": "dvts", "n": 4, "beam_width": 2, "max_depth": 4, **kw})
    ctx = SearchContext(policy, text_scorer(SCORES), PLAIN, cfg, SamplingConfig(seed=3))
    return asyncio.run(dvts(PROBLEM, ctx))


def test_paper_subtree_stops_when_its_best_child_has_ended() -> None:
    # Subtree 0 draws A1, A2: the best (A1, boxed, 0.9) is kept although it has ended, so the
    # subtree stops with one path (the earlier testtime kept the best unfinished child).
    # Subtree 1 draws A3, A4, keeps A3, then C1/C2 and keeps C2, which is boxed.
    policy = tree_policy(TREE)
    result = search(policy)
    assert [c.text for c in result.candidates] == ["A1 \\boxed{1}.\n\n",
                                                   "A3.\n\nC2 \\boxed{3}.\n\n"]
    assert [c.origin for c in result.candidates] == [0, 1]
    assert [c.scores for c in result.candidates] == [[0.9], [0.6, 0.4]]
    assert result.independent_prefixes and result.unit_budget == 2 and result.budget == 4
    assert [(r.prefix, r.params.n) for r in policy.calls] == [("", 2), ("", 2), ("A3.\n\n", 2)]


def test_sal_picks_among_all_candidates_and_returns_the_last_siblings() -> None:
    # One request per candidate. Subtree 0: A1 (0.9) wins and holds "boxed{": it stops, and
    # both siblings (A1, A2) are its output. Subtree 1: A3 wins, then C2 among C1/C2.
    policy = tree_policy(TREE)
    result = search(policy, semantics="sal")
    assert [c.text for c in result.candidates] == [
        "A1 \\boxed{1}.\n\n", "A2.\n\n", "A3.\n\nC1.\n\n", "A3.\n\nC2 \\boxed{3}.\n\n"]
    assert [c.origin for c in result.candidates] == [0, 0, 1, 1]
    assert [c.scores for c in result.candidates] == [[0.9], [0.5], [0.6, 0.1], [0.6, 0.4]]
    assert all(r.params.n == 1 for r in policy.calls)


def test_sal_lookahead_scores_the_rolled_out_step() -> None:
    tree = {"": ["A.\n\n", "B.\n\n"], "A.\n\n": ["Bad.\n\n"], "B.\n\n": ["Good.\n\n"]}
    scores = {"A.": 0.9, "B.": 0.1, "Bad.": 0.0, "Good.": 1.0}
    cfg = SearchConfig(method="dvts", n=2, beam_width=2, max_depth=1, semantics="sal",
                       lookahead=1)
    policy = tree_policy(tree)
    ctx = SearchContext(policy, text_scorer(scores), PLAIN, cfg, SamplingConfig(seed=3))
    result = asyncio.run(dvts(PROBLEM, ctx))
    # with one iteration (the last) there is no roll-out; with two, B wins through "Good."
    assert not any(n.status == "lookahead" for n in result.tree)
    cfg2 = SearchConfig(method="dvts", n=2, beam_width=2, max_depth=2, semantics="sal",
                        lookahead=1)
    policy2 = tree_policy(tree)
    ctx2 = SearchContext(policy2, text_scorer(scores), PLAIN, cfg2, SamplingConfig(seed=3))
    result2 = asyncio.run(dvts(PROBLEM, ctx2))
    kept = [n.step.text for n in result2.tree if n.status == "kept" and n.parent == -1]
    assert kept == ["B.\n\n"]
    rolls = [n for n in result2.tree if n.status == "lookahead"]
    assert rolls and all(r.params.temperature == 0.0 for r in policy2.calls if r.prefix in
                         ("A.\n\n", "B.\n\n") and r.params.n == 1 and r.params.seed and
                         r.params.temperature == 0.0)
    assert result2.compute.completion_tokens == sum(n.step.num_tokens for n in result2.tree)


def test_subtree_seeds_do_not_depend_on_the_budget() -> None:
    small, large = tree_policy(TREE), tree_policy(TREE)
    search(small, n=4)
    search(large, n=8)
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


@pytest.mark.parametrize(("semantics", "paths_per_subtree"), [("paper", 1), ("sal", 2)])
def test_budgets_are_whole_subtrees_and_selection_crosses_them(
    tmp_path: Path, semantics: str, paths_per_subtree: int
) -> None:
    data = tmp_path / "set.jsonl"
    data.write_text(json.dumps({"id": "p0", "problem": "What is 1 + 2?", "answer": "3"}) + "\n")
    cfg = RunConfig(dataset=DatasetConfig(name=str(data)), prm="rule",
                    search=SearchConfig(method="dvts", n=8, beam_width=2,
                                        semantics=semantics))  # type: ignore[arg-type]
    scorer = RuleScorer(keyword_rule({"boxed{3}": 0.9, "boxed{4}": 0.2, "W": 0.8}))
    asyncio.run(run(cfg, tmp_path / "run", policy=ScriptedPolicy(answer_script),
                    scorer=scorer, progress=False))
    [rec] = RecordStore(tmp_path / "run" / "results.jsonl")
    k = paths_per_subtree
    assert [c.origin for c in rec.candidates] == [o for o in range(4) for _ in range(k)]
    assert [c.answer for c in rec.candidates] == ["4"] * k + ["3"] * (3 * k)
    assert rec.n == 8 and rec.paths == 4 * k
    # budgets M, 2M, N: whole subtrees only (budget 2 is subtree 0 alone)
    assert set(rec.predictions) == {"2", "4", "8"}
    majority = {b: rec.predictions[b]["majority"].correct for b in rec.predictions}
    # at 4 the tie of subtrees 0 and 1 goes to the first answer; at 8, 3 wins
    assert majority == {"2": False, "4": False, "8": True}
    # a PRM rule picks the right answer from another subtree at budget 4
    assert rec.predictions["4"]["prm_last_max"].index == k
    assert rec.predictions["4"]["prm_last_max"].correct
    assert rec.compute.completion_tokens == sum(n.tokens for n in rec.tree)

"""What every search method shares, in both semantics: its budget spent, token totals equal
to the tree, records through the runner, cross-problem batching, and seeds that ignore the
other problems."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from testtime.config import DatasetConfig, RunConfig
from testtime.prompts.base import PromptTemplate
from testtime.runner import run
from testtime.search import get_method
from testtime.search.base import SamplingConfig, SearchConfig, SearchContext, SearchResult
from testtime.store import RecordStore
from testtime.testing import RuleScorer, Script, ScriptedPolicy, keyword_rule
from testtime.types import Problem, SamplingParams

#: Greedy decoding (entry 0 at every prefix) guesses 5; the lower-probability "Think" branch,
#: which the scorer likes, leads to 3.
TREE: dict[str, list[str]] = {
    "": ["Guess fast.\n\n", "Think carefully.\n\n"],
    "Guess fast.\n\n": ["So \\boxed{5}"],
    "Think carefully.\n\n": ["Add 1 and 2.\n\n", "Hmm.\n\n"],
    "Think carefully.\n\nAdd 1 and 2.\n\n": ["That is \\boxed{3}"],
    "Think carefully.\n\nHmm.\n\n": ["Maybe \\boxed{4}", "Hmm again.\n\n"],
}
RULE = keyword_rule({"Guess": 0.2, "carefully": 0.9, "Add": 0.8, "boxed{3}": 0.9, "Hmm": 0.3,
                     "boxed{4}": 0.3, "boxed{5}": 0.6})
METHODS = ("cot", "best_of_n", "beam_search", "dvts")


def walk(tree: Mapping[str, Sequence[str]]) -> Script:
    """Whole solutions from a step table: from ``prefix``, keep taking entry i (0 if greedy)
    until a step without a trailing blank line or a prefix the table does not know."""

    def script(problem: str, prefix: str, i: int, params: SamplingParams) -> str:
        out, cur = "", prefix
        while options := tree.get(cur):
            step = options[0 if params.temperature == 0 else i % len(options)]
            out, cur = out + step, cur + step
            if not step.endswith("\n\n"):
                break
        return out or "I am stuck."

    return script


def write_set(path: Path, k: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"What is 1 + 2? ({i})",
                                        "answer": "3"}) + "\n" for i in range(k)))
    return path


def run_config(data: Path, method: str, **search) -> RunConfig:  # type: ignore[no-untyped-def]
    return RunConfig(dataset=DatasetConfig(name=str(data)), prm="rule",
                     search=SearchConfig(method=method, **{"n": 4, "beam_width": 2,
                                                           "max_depth": 6, **search}))


def direct(method: str, policy: ScriptedPolicy, problems: Sequence[Problem],
           **search) -> list[SearchResult]:  # type: ignore[no-untyped-def]
    cfg = SearchConfig(method=method, **{"n": 4, "beam_width": 2, "max_depth": 6, **search})
    ctx = SearchContext(policy, RuleScorer(RULE), PromptTemplate("plain"), cfg,
                        SamplingConfig(seed=5))
    fn = get_method(method)

    async def main() -> list[SearchResult]:
        return list(await asyncio.gather(*(fn(p, ctx) for p in problems)))

    return asyncio.run(main())


def test_beam_search_finds_what_greedy_misses(tmp_path: Path) -> None:
    # Worked by hand (paper semantics, N=4, M=2 so K=2): the root's 4 samples are Guess,
    # Think, Guess, Think (duplicates dropped); both kept; Think's best children Add (0.8)
    # and Guess's only child "So \\boxed{5}" (0.6) are kept; then Add's "\\boxed{3}" and the
    # \\boxed{5} path end. The last-step PRM rule picks 3; greedy CoT guesses 5.
    data = write_set(tmp_path / "set.jsonl", 1)
    got = {}
    for method in ("cot", "beam_search"):
        asyncio.run(run(run_config(data, method), tmp_path / method,
                        policy=ScriptedPolicy(walk(TREE)), scorer=RuleScorer(RULE),
                        progress=False))
        [rec] = RecordStore(tmp_path / method / "results.jsonl")
        got[method] = ([c.answer for c in rec.candidates],
                       rec.predictions[str(rec.n)]["prm_last_max" if method != "cot"
                                                   else "majority"].answer)
    assert got == {"cot": (["5"], "5"), "beam_search": (["5", "3"], "3")}


@pytest.mark.parametrize("semantics", ["paper", "sal"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_spends_its_budget_and_its_tree_holds_every_token(
    method: str, semantics: str
) -> None:
    lookahead = 1 if (semantics, method) == ("sal", "dvts") else 0
    [result] = direct(method, ScriptedPolicy(walk(TREE)), [Problem("p", "1 + 2?", "3")],
                      semantics=semantics, lookahead=lookahead)
    paths = {"cot": 1, "best_of_n": 4, "beam_search": 2 if semantics == "paper" else 4,
             "dvts": 2 if semantics == "paper" else 4}[method]
    assert len(result.candidates) <= paths and result.candidates
    assert result.budget == (1 if method == "cot" else 4)
    tree = result.tree
    assert result.compute.completion_tokens == sum(n.step.num_tokens for n in tree)
    assert result.compute.completion_tokens > 0
    for c in result.candidates:
        assert len(c.steps) == len(c.scores) == len(c.node_ids)
        assert [tree[i].step for i in c.node_ids] == c.steps
        assert [tree[i].parent for i in c.node_ids] == [-1, *c.node_ids[:-1]]
        assert tree[c.node_ids[-1]].status == "finished"
    assert all(n.status in ("kept", "pruned", "finished", "lookahead", "dropped") for n in tree)
    if method in ("beam_search", "dvts"):
        # step-level methods sample one node per generation (dropped samples included)
        assert result.compute.generations == len(tree)
        assert any(n.status == "lookahead" for n in tree) == bool(lookahead)


@pytest.mark.parametrize("semantics", ["paper", "sal"])
def test_runner_records_trees_predictions_and_batches_problems(tmp_path: Path,
                                                               semantics: str) -> None:
    data = write_set(tmp_path / "set.jsonl", 3)
    budgets = {"paper": ({"4"}, {"2", "4"}), "sal": ({"4"}, {"2", "4"})}[semantics]
    for method, want in zip(("beam_search", "dvts"), budgets, strict=True):
        policy = ScriptedPolicy(walk(TREE))
        asyncio.run(run(run_config(data, method, semantics=semantics), tmp_path / method /
                        semantics, policy=policy, scorer=RuleScorer(RULE), progress=False))
        records = list(RecordStore(tmp_path / method / semantics / "results.jsonl"))
        assert [r.id for r in records] == ["p0", "p1", "p2"]
        for r in records:
            assert r.error is None and r.n == 4 and r.paths == len(r.candidates) >= 1
            assert r.semantics == semantics
            assert set(r.predictions) == want
            assert {n.status for n in r.tree} >= {"kept", "finished"}
            assert r.compute.completion_tokens == sum(n.tokens for n in r.tree)
            assert all(n.parent < n.id for n in r.tree)
            # an ideal prefix cache recomputes none of a path the policy itself generated
            assert r.compute.prefill_tokens < r.compute.prompt_tokens
        # the three problems advance in lockstep: every backend batch holds all three
        # problems' rows (the same numbers of them)
        assert policy.batches and all(b % 3 == 0 for b in policy.batches)
        assert max(policy.batches) == 12  # 4 first steps x 3 problems


def test_seeds_do_not_depend_on_other_problems() -> None:
    problems = [Problem(f"p{i}", f"What is 1 + 2? ({i})", "3") for i in range(3)]

    def seeds(policy: ScriptedPolicy, text: str) -> list[int | None]:
        return [r.params.seed for r in policy.calls if r.messages[-1].content == text]

    for method in ("beam_search", "dvts"):
        alone, together = ScriptedPolicy(walk(TREE)), ScriptedPolicy(walk(TREE))
        direct(method, alone, problems[1:2])
        direct(method, together, problems)
        mine = seeds(together, problems[1].problem)
        assert mine == seeds(alone, problems[1].problem) and mine
        assert not set(mine) & set(seeds(together, problems[0].problem))

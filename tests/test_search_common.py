"""What every search method shares: exactly N paths, token totals equal to the tree, records
through the runner, cross-problem batching, and seeds that ignore the other problems."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from testtime.config import DatasetConfig, RunConfig
from testtime.prompts.base import PromptTemplate
from testtime.records import RecordStore
from testtime.runner import run
from testtime.search import get_method
from testtime.search.base import SamplingConfig, SearchConfig, SearchContext, SearchResult
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
                     search=SearchConfig(method=method, **{"n": 4, "beam_width": 2, **search}))


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
    data = write_set(tmp_path / "set.jsonl", 1)
    acc = {}
    for method in ("cot", "beam_search"):
        out = asyncio.run(run(run_config(data, method), tmp_path / method,
                              policy=ScriptedPolicy(walk(TREE)), scorer=RuleScorer(RULE),
                              progress=False))
        [rec] = RecordStore(tmp_path / method / "results.jsonl")
        acc[method] = (rec.predictions[str(rec.n)]["prm_last_max"].answer,
                       out.summary["accuracy"][str(rec.n)]["majority"])
    assert acc == {"cot": ("5", 0.0), "beam_search": ("3", 1.0)}


@pytest.mark.parametrize("lookahead", [0, 1])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_returns_n_paths_and_its_tree_holds_every_token(
    method: str, lookahead: int
) -> None:
    [result] = direct(method, ScriptedPolicy(walk(TREE)), [Problem("p", "1 + 2?", "3")],
                      lookahead=lookahead)
    assert len(result.candidates) == (1 if method == "cot" else 4)
    tree = result.tree
    assert result.compute.completion_tokens == sum(n.step.num_tokens for n in tree)
    assert result.compute.completion_tokens > 0
    for c in result.candidates:
        assert len(c.steps) == len(c.scores) == len(c.node_ids)
        assert [tree[i].step for i in c.node_ids] == c.steps
        assert [tree[i].parent for i in c.node_ids] == [-1, *c.node_ids[:-1]]
        assert tree[c.node_ids[-1]].status == "finished"
    assert all(n.status in ("kept", "pruned", "finished", "lookahead") for n in tree)
    if method in ("beam_search", "dvts"):
        # step-level methods sample one node per generation
        assert result.compute.generations == len(tree)
        assert any(n.status == "lookahead" for n in tree) == bool(lookahead)


def test_runner_records_trees_predictions_and_batches_problems(tmp_path: Path) -> None:
    data = write_set(tmp_path / "set.jsonl", 3)
    for method, budgets in (("beam_search", {"4"}), ("dvts", {"2", "4"})):
        policy = ScriptedPolicy(walk(TREE))
        asyncio.run(run(run_config(data, method, lookahead=1), tmp_path / method,
                        policy=policy, scorer=RuleScorer(RULE), progress=False))
        records = list(RecordStore(tmp_path / method / "results.jsonl"))
        assert [r.id for r in records] == ["p0", "p1", "p2"]
        for r in records:
            assert r.error is None and len(r.candidates) == 4
            assert set(r.predictions) == budgets
            assert r.predictions["4"]["prm_last_max"].answer == "3"
            assert {n.status for n in r.tree} >= {"kept", "pruned", "finished", "lookahead"}
            assert r.compute.completion_tokens == sum(n.tokens for n in r.tree)
            assert all(n.parent < n.id for n in r.tree)
        # the three problems advance in lockstep: each backend batch holds all three
        # problems' rows of one depth (4 sampled rows, or 4 greedy roll-outs, per problem)
        assert policy.batches and all(b == 12 for b in policy.batches)


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

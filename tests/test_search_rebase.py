"""REBASE: the rounded softmax allocation against hand-worked numbers, exact N final paths, the
tree it records, one policy call per depth batched across problems, and a run's record."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

from testtime.config import DatasetConfig, RunConfig
from testtime.prompts.base import PromptTemplate
from testtime.runner import run
from testtime.search.base import SamplingConfig, SearchConfig, SearchContext, SearchResult
from testtime.search.rebase import allocate, rebase
from testtime.store import read_records
from testtime.testing import ScriptedPolicy, text_scorer, tree_policy
from testtime.types import Problem

PLAIN = PromptTemplate("plain")
TREE = {"": ["good\n\n", "mid one\n\n", "mid two\n\n", "bad\n\n"],
        "good\n\n": ["So \\boxed{1}", "more\n\n"]}
SCORES = {"good": 0.9, "mid one": 0.5, "mid two": 0.5, "bad": 0.1, "more": 0.7}


def search(problems: list[Problem], policy: ScriptedPolicy, **kw: object) -> list[SearchResult]:
    cfg = SearchConfig(**{"method": "rebase", "n": 4, "max_depth": 5,
                          "rebase_temperature": 1.0, **kw})
    ctx = SearchContext(policy, text_scorer(SCORES), PLAIN, cfg, SamplingConfig(seed=3))

    async def all_of_them() -> list[SearchResult]:
        return await asyncio.gather(*(rebase(p, ctx) for p in problems))

    return asyncio.run(all_of_them())


def test_allocation_by_hand() -> None:
    # T=1: weights 1 : e^-.4 : e^-.4 : e^-.8 (sum 2.7899); good ceil(4/2.7899 = 1.43) = 2,
    # mid one ceil(2 * .6703 / 1.7899 = .75) = 1, mid two ceil(.6703 / 1.1196 = .60) = 1, bad 0
    assert allocate([0.9, 0.5, 0.5, 0.1], 4, 1.0) == [2, 1, 1, 0]
    # T=0.2 sharpens: ceil(4 / (1 + e^-2 + e^-4)) = ceil(3.47) = 4 all to the best
    assert allocate([0.9, 0.5, 0.1], 4, 0.2) == [4, 0, 0]
    # order does not matter, ties go to the earlier node
    assert allocate([0.1, 0.5, 0.9, 0.5], 4, 1.0) == [0, 1, 2, 1]
    assert allocate([0.5, 0.5], 3, 1.0) == [2, 1]
    assert allocate([0.5, 0.5, 0.5], 3, 0.2) == [1, 1, 1]  # 3 * 1/3 is 1, not 2 (float noise)
    assert allocate([math.nan, 0.5], 2, 1.0) == [0, 2]     # non-finite: weight 0
    assert allocate([math.nan, math.nan], 2, 1.0) == [1, 1]
    assert allocate([0.3, 0.2, 0.9], 7, 0.5) == [2, 0, 5]  # ceil(4.52) = 5, ceil(1.10) = 2
    assert sum(allocate([0.1 * i for i in range(10)], 13, 0.3)) == 13


def test_exact_n_paths_and_the_tree() -> None:
    pol = tree_policy(TREE, default="So \\boxed{1}")
    [r] = search([Problem("p", "What is 1?", "1")], pol)
    assert len(r.candidates) == 4 and r.budget == 4
    assert all(c.finish_reason == "boxed" for c in r.candidates)
    [d1, d2] = r.info["rebase"]["depths"]
    assert d1 == {"depth": 1, "nodes": [0, 1, 2, 3], "expansions": [2, 1, 1, 0]}
    # good's two children: one answers (w = 3), one goes on: all of w on it
    assert d2["expansions"] == [1]
    status = [t.status for t in r.tree]
    assert status[:4] == ["kept", "kept", "kept", "pruned"]
    assert status.count("finished") == 4 and len(r.tree) == 9
    assert r.compute.generations == 9
    assert r.compute.completion_tokens == sum(t.step.num_tokens for t in r.tree)
    texts = sorted(c.text for c in r.candidates)
    assert texts == sorted(["good\n\nSo \\boxed{1}", "good\n\nmore\n\nSo \\boxed{1}",
                            "mid one\n\nSo \\boxed{1}", "mid two\n\nSo \\boxed{1}"])


def test_depth_limit_still_gives_exactly_n() -> None:
    pol = tree_policy({}, default="step\n\n")
    [r] = search([Problem("p", "What is 1?", "1")], pol, max_depth=3, n=5)
    assert len(r.candidates) == 5
    assert all(c.finish_reason == "depth" and len(c.steps) == 3 for c in r.candidates)


def test_one_policy_call_per_depth_batched_across_problems() -> None:
    pol = tree_policy(TREE, default="So \\boxed{1}")
    problems = [Problem(f"p{i}", f"What is {i}?", "1") for i in range(3)]
    rs = search(problems, pol)
    assert all(len(r.candidates) == 4 for r in rs)
    # each problem: one generate call per depth (3 depths), all its nodes in it
    assert len(pol.generate_calls) == 3 * 3
    # the first depth of all three problems shares one backend batch
    assert pol.batches[0] == 12


def test_a_run_records_the_tree(tmp_path: Path) -> None:
    data = tmp_path / "set.jsonl"
    data.write_text(json.dumps({"id": "p0", "problem": "What is 1?", "answer": "1"}) + "\n")
    cfg = RunConfig(dataset=DatasetConfig(name=str(data)), policy="scripted", prm="rule",
                    search=SearchConfig(method="rebase", n=4, rebase_temperature=1.0))
    asyncio.run(run(cfg, tmp_path / "run", policy=tree_policy(TREE, default="So \\boxed{1}"),
                    scorer=text_scorer(SCORES), progress=False))
    (rec,) = read_records(tmp_path / "run" / "results.jsonl")
    assert rec.method == "rebase" and rec.paths == 4 and set(rec.predictions) == {"4"}
    assert rec.predictions["4"]["majority"].correct
    assert [t.status for t in rec.tree].count("finished") == 4
    assert rec.info["rebase"]["depths"][0]["expansions"] == [2, 1, 1, 0]

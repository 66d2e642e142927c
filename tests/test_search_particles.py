"""Particle filtering on scripted trees: exact N, what is kept, the tree, and resampling in the
proportions softmax(logit(score) / T) says, over many seeds."""

from __future__ import annotations

import asyncio
import math
from collections import Counter

import pytest

from testtime.prompts.base import PromptTemplate
from testtime.search.base import SamplingConfig, SearchConfig, SearchContext, SearchResult
from testtime.search.particle_filtering import particle_filtering, resampling_weights
from testtime.testing import text_scorer, tree_policy
from testtime.types import Problem

PLAIN = PromptTemplate("plain")
#: four first steps (particle i draws entry i), then every path ends with its answer
TREE = {"": ["good\n\n", "mid one\n\n", "mid two\n\n", "bad\n\n"]}
SCORES = {"good": 0.9, "mid one": 0.5, "mid two": 0.5, "bad": 0.1}


def run(problems: list[Problem], tree: dict[str, list[str]], scores: dict[str, float],
        **kw: object) -> list[SearchResult]:
    cfg = SearchConfig(**{"method": "particle_filtering", "n": 4, "max_depth": 5, **kw})
    ctx = SearchContext(tree_policy(tree, default="So \\boxed{1}"), text_scorer(scores),
                        PLAIN, cfg, SamplingConfig(seed=3))

    async def all_of_them() -> list[SearchResult]:
        return await asyncio.gather(*(particle_filtering(p, ctx) for p in problems))

    return asyncio.run(all_of_them())


def test_weights_are_a_softmax_of_logits() -> None:
    w = resampling_weights([0.9, 0.5, 0.5, 0.1], 1.0)
    # logit(0.9) = ln 9: weights 9 : 1 : 1 : 1/9
    assert w == pytest.approx([9 / (11 + 1 / 9), 1 / (11 + 1 / 9), 1 / (11 + 1 / 9),
                               (1 / 9) / (11 + 1 / 9)])
    hot = resampling_weights([0.9, 0.1], 2.0)  # T=2: (9 ** 0.5) : (1/9) ** 0.5
    assert hot == pytest.approx([3 / (3 + 1 / 3), (1 / 3) / (3 + 1 / 3)])
    assert resampling_weights([math.nan, 0.5], 1.0) == [0.0, 1.0]  # non-finite: never drawn
    assert resampling_weights([math.nan, math.inf], 1.0) == [0.5, 0.5]
    assert resampling_weights([0.0, 1.0], 1.0)[1] == pytest.approx(1.0)  # clipped, finite


def test_exact_n_paths_and_the_tree_of_one_search() -> None:
    [r] = run([Problem("p", "What is 1?", "1")], TREE, SCORES)
    assert len(r.candidates) == 4 and r.budget == 4
    assert all(c.finish_reason == "boxed" for c in r.candidates)
    [round0] = r.info["particle_filtering"]["rounds"]
    assert round0["slots"] == [0, 1, 2, 3]
    # every final path is its source's first step plus its own second step
    for slot, src in zip(round0["slots"], round0["from"], strict=True):
        path = r.candidates[slot]
        assert path.steps[0].text == TREE[""][src] and path.steps[1].text == "So \\boxed{1}"
        assert path.node_ids[0] == src  # the first four nodes are the first steps, in order
    status = {t.id: t.status for t in r.tree[:4]}
    drawn = set(round0["from"])
    assert all(status[i] == ("kept" if i in drawn else "pruned") for i in range(4))
    children = Counter(t.parent for t in r.tree[4:])
    assert children == Counter(round0["from"])  # a source drawn k times has k children
    assert r.compute.generations == len(r.tree) == 8
    assert r.compute.completion_tokens == sum(t.step.num_tokens for t in r.tree)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_resampling_follows_the_weights_over_many_seeds(temperature: float) -> None:
    problems = [Problem(f"p{i}", "What is 1?", "1") for i in range(600)]
    results = run(problems, TREE, SCORES, pf_temperature=temperature)
    drawn = Counter(src for r in results for src in r.info["particle_filtering"]["rounds"][0]
                    ["from"])
    total = sum(drawn.values())
    want = resampling_weights([0.9, 0.5, 0.5, 0.1], temperature)
    for i, w in enumerate(want):
        # 2400 draws: one standard deviation is at most 0.011; allow 4
        assert abs(drawn[i] / total - w) < 0.045, (i, drawn[i] / total, w)


def test_finished_particles_are_kept_unless_resampled() -> None:
    # particle 3 ends at once with a poor score; the others go on
    tree = {"": ["a\n\n", "b\n\n", "c\n\n", "\\boxed{9}"], "a\n\n": ["x\n\n"],
            "b\n\n": ["x\n\n"], "c\n\n": ["x\n\n"]}
    scores = {"a": 0.6, "b": 0.6, "c": 0.6, "\\boxed{9}": 0.01, "x": 0.6}
    problems = [Problem(f"p{i}", "Q?", "1") for i in range(40)]
    kept = run(problems, tree, scores)
    for r in kept:
        finished = [c for c in r.candidates if c.text == "\\boxed{9}"]
        assert len(finished) == 1 and len(r.candidates) == 4
        assert 3 not in r.info["particle_filtering"]["rounds"][0]["slots"]
    # resampled with the others at its weight (0.01 vs 0.6: about 1 % of draws), it is
    # usually dropped
    dropped = run(problems, tree, scores, pf_resample_finished=True)
    survivors = sum(any(c.text == "\\boxed{9}" for c in r.candidates) for r in dropped)
    assert survivors < 10
    assert all(len(r.candidates) == 4 for r in dropped)


def test_paths_end_at_max_depth_and_seeds_make_copies_differ() -> None:
    # nothing ever ends: every particle stops at max_depth; copies of one particle draw
    # different next steps (the scripted sampler walks its list)
    tree = {"": ["s\n\n"] * 4, "s\n\n": ["u\n\n", "v\n\n", "w\n\n", "z\n\n"]}
    [r] = run([Problem("p", "Q?", "1")], tree, {}, max_depth=2)
    assert all(c.finish_reason == "depth" and len(c.steps) == 2 for c in r.candidates)
    assert len({c.steps[1].text for c in r.candidates}) == 4

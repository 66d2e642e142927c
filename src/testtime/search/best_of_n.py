"""Best-of-N: N independent full samples, every step scored.

As the paper's code (``--method best_of_n``) and search-and-learn's ``best_of_n``: one request
of N samples with no stop string, each running to EOS or ``max_path_tokens`` (the paper's 8192,
32768 for DeepSeek-R1-Distill); every sample is kept (truncated, empty and duplicate ones too).
A sample's steps are its blank-line-separated pieces (blank pieces dropped, as the paper's
``raw.strip().split("\\n\\n")``); the PRM scores them all, and the answer is the sample's last
``\\boxed``.
"""

from __future__ import annotations

from collections.abc import Sequence

from testtime.search.base import (
    Candidate,
    Compute,
    SearchContext,
    SearchResult,
    TreeNode,
    problem_seed,
)
from testtime.types import BOXED, Completion, Problem, ScoreRequest, Step


async def sample_paths(
    problem: Problem, ctx: SearchContext, *, n: int, greedy: bool
) -> SearchResult:
    """Sample ``n`` complete solutions in one request and score all their steps at once."""
    compute = Compute()
    params = ctx.params(n=n, max_tokens=ctx.search.max_path_tokens,
                        seed=problem_seed(ctx.sampling.seed, problem.id), greedy=greedy)
    [outs] = await ctx.generate([ctx.request(problem, "", params)], compute)
    result = await paths_result(problem, ctx, outs, compute)
    result.independent_prefixes, result.budget = not greedy, n
    return result


async def paths_result(problem: Problem, ctx: SearchContext, outs: Sequence[Completion],
                       compute: Compute) -> SearchResult:
    """Complete samples as candidates (sample i is unit i), every step scored in one call."""
    paths = [ctx.steps_of(c) for c in outs]
    scores = await ctx.score([ScoreRequest(problem.problem, tuple(p)) for p in paths], compute)
    tree: list[TreeNode] = []
    candidates = []
    for i, (c, steps, sc) in enumerate(zip(outs, paths, scores, strict=True)):
        ids = []
        for depth, (step, s) in enumerate(zip(steps, sc, strict=True)):
            node = TreeNode(len(tree), ids[-1] if ids else -1, depth, step, s, "kept")
            tree.append(node)
            ids.append(node.id)
        if ids:
            tree[ids[-1]].status = "finished"
        candidates.append(Candidate(steps, list(sc), _reason(c, steps), ids, origin=i))
    return SearchResult(candidates, compute, tree)


def _reason(c: Completion, steps: list[Step]) -> str:
    if c.finish_reason == "eos" and steps and BOXED in steps[-1].text:
        return "boxed"
    return c.finish_reason


async def best_of_n(problem: Problem, ctx: SearchContext) -> SearchResult:
    """N independent samples; prefixes of the candidates are valid smaller budgets."""
    return await sample_paths(problem, ctx, n=ctx.search.n, greedy=False)

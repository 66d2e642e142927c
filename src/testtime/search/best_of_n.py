"""Best-of-N: N independent full samples, every step scored."""

from __future__ import annotations

import dataclasses

from testtime.search.base import (
    Candidate,
    Compute,
    SearchContext,
    SearchResult,
    TreeNode,
    problem_seed,
)
from testtime.types import (
    BOXED,
    Completion,
    GenerationRequest,
    Problem,
    ScoreRequest,
    Step,
)


def finish_path(steps: list[Step], max_depth: int) -> list[Step]:
    """Cut a sampled path after its first step with ``\\boxed`` or at ``max_depth`` steps.

    The tokens of dropped steps were generated and stay in the cost: they are charged to the
    last kept step, so the tree's token total still equals what the policy reported.
    """
    end = next((i + 1 for i, s in enumerate(steps) if BOXED in s.text), len(steps))
    end = min(end, max_depth)
    if end >= len(steps):
        return steps
    dropped = sum(s.num_tokens for s in steps[end:])
    kept = steps[:end]
    kept[-1] = dataclasses.replace(kept[-1], num_tokens=kept[-1].num_tokens + dropped)
    return kept


async def sample_paths(
    problem: Problem, ctx: SearchContext, *, n: int, greedy: bool
) -> SearchResult:
    """Sample ``n`` complete solutions in one request and score all their steps at once."""
    compute = Compute()
    params = ctx.params(
        n=n,
        max_tokens=ctx.search.max_path_tokens,
        seed=problem_seed(ctx.sampling.seed, problem.id),
        greedy=greedy,
        # the path ends at its \boxed step (finish_path): generating past it is waste
        end_at_boxed_step=True,
    )
    [outs] = await ctx.generate([GenerationRequest(ctx.messages(problem), "", params)], compute)
    paths = [finish_path(ctx.steps_of(c), ctx.search.max_depth) for c in outs]
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
    return SearchResult(candidates, compute, tree, independent_prefixes=not greedy)


def _reason(c: Completion, steps: list[Step]) -> str:
    if steps and BOXED in steps[-1].text:
        return "boxed"
    return c.finish_reason


async def best_of_n(problem: Problem, ctx: SearchContext) -> SearchResult:
    """N independent samples; prefixes of the candidates are valid smaller budgets."""
    return await sample_paths(problem, ctx, n=ctx.search.n, greedy=False)


"""Chain-of-thought: one sample (greedy, as the paper; DeepSeek-R1-Distill samples), scored
like any other path; only majority voting (its own answer) applies."""

from __future__ import annotations

from testtime.search.base import SearchContext, SearchResult
from testtime.search.best_of_n import sample_paths
from testtime.types import Problem


async def cot(problem: Problem, ctx: SearchContext) -> SearchResult:
    """One sample; the budget is always 1 whatever ``search.n`` says."""
    return await sample_paths(problem, ctx, n=1, greedy=ctx.sampling.greedy_cot)

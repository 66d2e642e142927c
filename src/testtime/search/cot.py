"""Chain-of-thought: one greedy sample, scored like any other path."""

from __future__ import annotations

from testtime.search.base import SearchContext, SearchResult
from testtime.search.best_of_n import sample_paths
from testtime.types import Problem


async def cot(problem: Problem, ctx: SearchContext) -> SearchResult:
    """One greedy sample; the budget is always 1 whatever ``search.n`` says."""
    return await sample_paths(problem, ctx, n=1, greedy=True)

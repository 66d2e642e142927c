"""Diverse Verifier Tree Search (Beeching et al. 2024; Liu et al. 2025).

With budget N and width M, DVTS runs N/M independent subtrees. Each is a beam search with one
beam: it samples M first steps, keeps the best partial path and expands it M ways per depth
(the rules of ``beam_search.py`` with budget M), and returns exactly M paths. The subtrees
share nothing but batched calls: their own requests and seeds (derived from the subtree index,
never from N), their own scoring requests, their own kept beam.

Candidates are laid out subtree by subtree (``candidates[k*M:(k+1)*M]`` is subtree k,
``Candidate.origin == k``), so the first j subtrees form a valid DVTS run with budget j*M;
``SearchResult.prefix_unit = M`` tells the runner to evaluate budgets M, 2M, 4M, ... and N.
Selection then picks one answer across all subtrees, which search-and-learn never does (it
returns the M final siblings of each subtree and leaves the choice to the caller).
"""

from __future__ import annotations

from testtime.search.base import SearchContext, SearchResult
from testtime.search.beam_search import Subtree, check_budget, final_paths, run_subtrees
from testtime.types import Problem


async def dvts(problem: Problem, ctx: SearchContext) -> SearchResult:
    """N/M independent one-beam searches of M paths each; prefixes of M*j paths are valid."""
    n, m = ctx.search.n, ctx.search.beam_width
    check_budget(n, m)
    subtrees = [Subtree(k, m, m) for k in range(n // m)]
    state = await run_subtrees(problem, ctx, subtrees)
    candidates = [c for t in subtrees for c in final_paths(t)]
    return SearchResult(candidates, state.compute, state.tree, independent_prefixes=True,
                        prefix_unit=m)

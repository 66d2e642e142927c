"""Diverse Verifier Tree Search (Beeching et al. 2024; Liu et al. 2025).

Budget N, width M: N/M independent subtrees, two reproductions:

* ``paper`` (default): the README's recipe of compute-optimal-tts (``--width M --num_seq 1
  --num_q N/M``): N/M independent runs of its beam search with width M and beam size 1
  (:mod:`testtime.search.paper_tree`): each keeps the best of its node's M children (ended
  ones included) and stops as soon as the kept child has ended: **one path per subtree, N/M
  final paths**. The paper's code scores each run alone (its README averages the runs'
  correctness); here selection rules choose across the subtrees' paths, the same way as for
  Best-of-N, so that methods compare at equal N.
* ``sal``: search-and-learn's ``dvts`` (:mod:`testtime.search.sal_dvts`): the best of all M
  candidates each iteration; a subtree stops when that candidate ended or the path holds
  ``boxed{``; the M siblings of its last expansion are its output: N final paths.

Subtrees share nothing but batched calls (their seeds derive from the subtree index, never
from N), so the first j subtrees are a valid DVTS run with budget j*M.
"""

from __future__ import annotations

from testtime.search.base import SearchContext, SearchResult
from testtime.search.beam_search import check_budget
from testtime.search.expand import SearchState
from testtime.search.paper_tree import Tree, candidates, run_trees
from testtime.types import Problem


async def dvts(problem: Problem, ctx: SearchContext) -> SearchResult:
    """N/M independent subtrees of width M; prefixes of whole subtrees are valid."""
    n, m = ctx.search.n, ctx.search.beam_width
    check_budget(n, m)
    if ctx.search.semantics == "sal":
        from testtime.search.sal_dvts import sal_dvts

        return await sal_dvts(problem, ctx)
    state = SearchState(problem, ctx)
    trees = [Tree(k, m, 1) for k in range(n // m)]
    await run_trees(state, trees)
    cands = [c for t in trees for c in candidates(state, t)]
    return SearchResult(cands, state.compute, state.tree, independent_prefixes=True,
                        prefix_unit=1, budget=n, unit_budget=m)

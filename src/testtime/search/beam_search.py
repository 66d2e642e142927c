"""Beam search over steps with a process reward model (Liu et al. 2025; Snell et al. 2024).

Budget N, beam width M (``search.n``, ``search.beam_width``), two reproductions:

* ``paper`` (default): compute-optimal-tts' ``SearchTree.beam_search`` with width N and beam
  size K = N/M (:mod:`testtime.search.paper_tree`): N first steps, the K best children kept
  (ended ones included), M samples per kept node, until K paths have ended; **K final paths**.
* ``sal``: search-and-learn's ``beam_search`` (:mod:`testtime.search.sal_beam`): N beams, the
  N/M best unfinished ones kept and duplicated back to N each iteration; N final paths.

Its candidates are one search, not independent samples: only budget N is valid.
"""

from __future__ import annotations

from testtime.search.base import SearchContext, SearchResult
from testtime.search.expand import SearchState
from testtime.search.paper_tree import Tree, candidates, run_trees
from testtime.types import Problem


def check_budget(n: int, width: int) -> None:
    if n < 1 or width < 1 or n % width:
        raise ValueError(f"search.n={n} must be a positive multiple of beam_width={width}")


async def beam_search(problem: Problem, ctx: SearchContext) -> SearchResult:
    """Beam search at budget N = ``search.n`` with beam width M = ``search.beam_width``."""
    n, m = ctx.search.n, ctx.search.beam_width
    check_budget(n, m)
    if ctx.search.semantics == "sal":
        from testtime.search.sal_beam import sal_beam_search

        return await sal_beam_search(problem, ctx)
    state = SearchState(problem, ctx)
    tree = Tree(0, n, n // m)
    await run_trees(state, [tree])
    return SearchResult(candidates(state, tree), state.compute, state.tree, budget=n)

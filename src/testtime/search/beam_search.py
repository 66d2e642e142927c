"""Beam search over steps with a process reward model (Snell et al. 2024; Liu et al. 2025).

With budget N and beam width M: sample N first steps (one request, ``n=N``); keep the N/M best
partial paths; expand each with M new steps (one request per beam, ``n=M``, all beams in one
policy call); repeat. Paths that end leave the beam. The search stops once N paths have ended
naturally (``\\boxed`` or EOS) or no partial path is left, and returns exactly N paths.

Choices (documented where search-and-learn is silent or differs):

* Ranking: a partial path is ranked by its newest step's score (the PRM's last-step score,
  search-and-learn's default ``agg_strategy="last"``); with lookahead k, by the score of the
  last of k greedy roll-out steps. Ties keep the earlier candidate.
* When fewer than N/M partial paths are left, all of them are kept and each is still expanded
  M ways (search-and-learn duplicates survivors to N; we spend only what the beams ask for).
* Final paths: the naturally ended paths, best last-step score first (at most N, search-and-
  learn returns more: its issue #42); if fewer than N ended naturally, the best paths cut off by
  a limit fill up, keeping their finish reason ("length", "depth"). At least N paths always
  end: every depth keeps ``min(active, N/M)`` beams with M children each, so ended + pending
  never drops below N.
* Lookahead is rolled out only where it decides something: for the partial children of a
  subtree that goes on and has more of them than it keeps.

The same driver runs DVTS (``dvts.py``): there, each of N/M subtrees is this search with
budget M and width M (one kept beam), all subtrees advancing depth by depth in lockstep so that
their requests share policy and scorer calls; nothing else is shared between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from testtime.search.base import Candidate, SearchContext, SearchResult
from testtime.search.expand import (
    Beam,
    Expansion,
    SearchState,
    expand,
    look_ahead,
    ranked,
    request_seed,
    score,
)
from testtime.types import Problem


@dataclass
class Subtree:
    """One beam search: returns ``n`` paths; keeps ``n // width`` partial paths per depth and
    expands each ``width`` ways. ``index`` names it in seeds and in ``Candidate.origin``."""

    index: int
    n: int
    width: int
    beams: list[Beam] = field(default_factory=list)
    """Partial paths kept at the last depth, to expand next (best first)."""
    ended: list[Beam] = field(default_factory=list)
    """Paths that ended, in the order they ended."""
    done: bool = False

    def __post_init__(self) -> None:
        check_budget(self.n, self.width)

    @property
    def keep(self) -> int:
        return self.n // self.width

    @property
    def natural(self) -> int:
        return sum(b.natural for b in self.ended)


def check_budget(n: int, width: int) -> None:
    if n < 1 or width < 1 or n % width:
        raise ValueError(f"search.n={n} must be a positive multiple of beam_width={width}")


async def run_subtrees(problem: Problem, ctx: SearchContext,
                       subtrees: Sequence[Subtree]) -> SearchState:
    """Advance every subtree depth by depth; each depth is one policy call (plus one per
    lookahead round) and one scorer call for all subtrees together."""
    state = SearchState(problem, ctx)
    depth = 0
    while live := [t for t in subtrees if not t.done]:
        expansions: list[Expansion] = []
        owners: list[Subtree] = []
        for t in live:
            if depth == 0:
                parents: list[Beam | None] = [None]
                n = t.n
            else:
                parents, n = list(t.beams), t.width
            for j, parent in enumerate(parents):
                expansions.append(Expansion(parent, n, request_seed(ctx, problem, t.index,
                                                                     depth, j)))
                owners.append(t)
        groups = await expand(state, expansions)
        kids: dict[int, list[Beam]] = {id(t): [] for t in live}
        for owner, group in zip(owners, groups, strict=True):
            kids[id(owner)].extend(group)
        if ctx.search.lookahead:
            roll, seeds = [], []
            for t in live:
                active = [c for c in kids[id(t)] if c.end is None]
                ending = t.natural + sum(c.natural for c in kids[id(t)]) >= t.n
                if not ending and len(active) > t.keep:
                    roll += active
                    seeds += [request_seed(ctx, problem, t.index, depth, "child", i)
                               for i in range(len(active))]
            await look_ahead(state, roll, ctx.search.lookahead, seeds)
        await score(state, [c for t in live for c in kids[id(t)]])
        for t in live:
            _advance(state, t, kids[id(t)])
        depth += 1
    return state


def _advance(state: SearchState, t: Subtree, children: list[Beam]) -> None:
    """Ended children leave; the best ``keep`` partial ones are kept, the rest pruned."""
    active = []
    for c in children:
        if c.end is None:
            active.append(c)
        else:
            state.set_status(c, "finished")
            t.ended.append(c)
    best = ranked(active)
    # Enough finished paths: the search is over and no partial path is expanded again.
    t.beams = [] if t.natural >= t.n else best[: t.keep]
    for i, c in enumerate(best):
        state.set_status(c, "kept" if i < len(t.beams) else "pruned")
    t.done = not t.beams


def final_paths(t: Subtree) -> list[Candidate]:
    """Exactly ``t.n`` paths: natural ends by score, then the best cut-off paths."""
    chosen = ranked([b for b in t.ended if b.natural])[: t.n]
    chosen += ranked([b for b in t.ended if not b.natural])[: t.n - len(chosen)]
    if len(chosen) != t.n:  # impossible by the counting argument in the module doc
        raise RuntimeError(f"subtree {t.index} ended with {len(chosen)} paths, expected {t.n}")
    return [Candidate(list(b.steps), list(b.scores), b.end or "", list(b.node_ids),
                      origin=t.index) for b in chosen]


async def beam_search(problem: Problem, ctx: SearchContext) -> SearchResult:
    """Beam search with N = ``search.n`` final paths and beam width M = ``search.beam_width``.

    Its candidates are one search, not N independent samples: only budget N is valid.
    """
    tree = Subtree(0, ctx.search.n, ctx.search.beam_width)
    state = await run_subtrees(problem, ctx, [tree])
    return SearchResult(final_paths(tree), state.compute, state.tree,
                        independent_prefixes=False)

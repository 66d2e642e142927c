"""search-and-learn's beam search, decision for decision (``sal/search/beam_search.py``).

Budget N, width M, ``max_depth`` iterations (``num_iterations``):

* N beams start empty; every iteration the unpruned beams are copied round-robin back to N
  (``(active * r)[:N]``, in list order) and each copy samples **one** step (stop at the blank
  line, kept in the text; no stop string in the last iteration);
* a beam whose step ended at EOS or at the token limit, or is empty, is *completed*: it joins
  the completed list (in list order) before pruning, whatever its score;
* every beam is scored; among the unfinished ones (whole-text duplicates dropped first with
  ``filter_duplicates``, the first kept) the N/M with the best last-step score survive, as
  ``np.argsort(scores)[-N/M:]`` picks them (a stable sort: among equal scores the later beams);
* the search ends when no beam is unfinished or the iterations run out, and returns the first
  N completed beams (copied round-robin up to N if fewer completed).

There is no stop at ``\\boxed``: a beam goes on until EOS, the token limit or the last
iteration. search-and-learn's look-ahead roll-outs are never used for beam search, so none are
generated (``--lookahead`` is refused).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from testtime.search.base import Candidate, SearchContext, SearchResult
from testtime.search.expand import SearchState, as_step, request_seed
from testtime.selection import finite
from testtime.types import Problem, Step


@dataclass
class SalBeam:
    """One beam: its steps and node ids, the scores of its last scoring, its state."""

    steps: list[Step] = field(default_factory=list)
    node_ids: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    tokens: int = 0
    completed: bool = False
    pruned: bool = False
    finish: str = ""

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.steps)


def round_robin(beams: list[SalBeam], n: int) -> list[SalBeam]:
    """``[copy of b for b in (beams * r)[:n]]`` with ``r = n // len(beams) + 1``."""
    r = n // len(beams) + 1
    return [copy.deepcopy(b) for b in (beams * r)[:n]]


def top_indices(scores: list[float], keep: int) -> set[int]:
    """Indices of ``np.argsort(scores)[-keep:]`` with a stable ascending sort."""
    order = sorted(range(len(scores)), key=lambda i: finite(scores[i]))
    return set(order[-keep:]) if keep > 0 else set()


async def sal_beam_search(problem: Problem, ctx: SearchContext) -> SearchResult:
    n, m = ctx.search.n, ctx.search.beam_width
    state = SearchState(problem, ctx)
    iterations = ctx.search.max_depth
    active = [SalBeam() for _ in range(n)]
    completed: list[SalBeam] = []
    for i in range(iterations):
        active = [b for b in active if not b.pruned]
        if len(active) != n:
            active = round_robin(active, n)
        last = i == iterations - 1
        requests = [state.step_request(b.text, b.tokens, 1,
                                       request_seed(ctx, problem, "sal-beam", i, j), last=last)
                    for j, b in enumerate(active)]
        groups = await state.generate(requests)
        for b, (c,) in zip(active, groups, strict=True):
            step = as_step(ctx, c)
            b.node_ids.append(state.add_node(b.node_ids[-1] if b.node_ids else -1,
                                             len(b.steps), step, "active"))
            b.steps.append(step)
            b.tokens += step.num_tokens
            if c.finish_reason in ("eos", "length") or not c.text:
                b.completed, b.finish = True, c.finish_reason if c.text else "empty"
                completed.append(b)
        for b, row in zip(active, await state.last_scores([b.steps for b in active]),
                          strict=True):
            b.scores = row
            state.tree[b.node_ids[-1]].score = row[-1]
        live = [b for b in active if not b.completed]
        if not live:
            break
        if ctx.search.filter_duplicates:
            first: dict[str, SalBeam] = {}
            for b in live:
                first.setdefault(b.text, b)
            live = list(first.values())
        keep = top_indices([b.scores[-1] for b in live], n // m)
        for j, b in enumerate(live):
            b.pruned = j not in keep
            state.set_status(b.node_ids[-1], "pruned" if b.pruned else "kept")
        active = live
    chosen = completed[:n]
    if chosen and len(chosen) != n:
        chosen = round_robin(chosen, n)
    for b in chosen:
        state.set_status(b.node_ids[-1], "finished")
    cands = [Candidate(list(b.steps), list(b.scores), b.finish or "depth", list(b.node_ids))
             for b in chosen]
    return SearchResult(cands, state.compute, state.tree, budget=n)

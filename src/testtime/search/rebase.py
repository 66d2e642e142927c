"""REBASE: reward-balanced tree search (Wu et al. 2024, "Inference Scaling Laws", arXiv
2408.00724; SqueezeAILab/ETS ``rebase.py``, ``select_softmax``).

The search keeps a *width* w, starting at N = ``search.n``. The root is expanded into N first
steps (one request of N samples). Then, depth by depth:

1. Every child generated at the previous depth is scored by the PRM (its whole partial path;
   a node's score is its **latest** step score). A child that ends its path (``\\boxed`` in
   the step, EOS, the token limit, or ``max_depth`` steps) is a final path and lowers w by
   one (``finished``); the others are the open nodes.
2. The w expansions are spread over all open nodes in proportion to
   ``softmax(score / rebase_temperature)``, rounded as the ETS code does: nodes in order of
   decreasing score (ties: the earlier node first), each gets
   ``ceil(w_left * exp(s_i / T) / sum_{j >= i} exp(s_j / T))`` and ``w_left`` shrinks by it, so
   the counts add up to w exactly and the best node never gets fewer than its share. (A node
   with a non-finite score weighs 0; if all do, the weights are equal. The sums are computed
   over the remaining nodes, not by running subtraction, and a quotient within 1e-9 of an
   integer counts as that integer, so float noise never adds a sample.)
3. A node given k > 0 expansions samples k next steps in one request (``kept``); a node given
   none is ``pruned``. All requests of a depth go to the policy in one call (and the policy's
   batcher joins those of every problem in flight).

The search stops when w reaches 0 or no node is open. Each depth generates exactly w children
and every finished one lowers w by one, so the search returns **exactly N final paths** (at
``max_depth`` every open child finishes). Tree statuses: ``kept`` (expanded), ``pruned`` (no
expansion), ``finished`` (the end of a final path). ``info["rebase"]`` holds the temperature
and, per depth, the open node ids and their expansion counts.
"""

from __future__ import annotations

import math

from testtime.search.base import Candidate, SearchContext, SearchResult
from testtime.search.expand import Path, SearchState, as_step, path_end, request_seed
from testtime.types import Problem

#: A quotient within this of an integer rounds to it (float noise must not add a sample).
ROUND_EPS = 1e-9


def allocate(scores: list[float], width: int, temperature: float) -> list[int]:
    """Expansions per node (in the given order) for ``width`` expansions: REBASE's rounded
    softmax allocation (see the module docstring); the counts add up to ``width``."""
    if not scores or width <= 0:
        return [0] * len(scores)
    z = [s / temperature if math.isfinite(s) else -math.inf for s in scores]
    top = max(z)
    e = [math.exp(x - top) if x > -math.inf else 0.0 for x in z] if top > -math.inf \
        else [1.0] * len(z)
    order = sorted(range(len(z)), key=lambda i: (-z[i], i))
    out = [0] * len(z)
    left = width
    for pos, i in enumerate(order):
        rest = math.fsum(e[j] for j in order[pos:])
        if left <= 0 or rest <= 0:
            break
        q = left * e[i] / rest
        k = min(left, max(0, math.ceil(q - ROUND_EPS)))
        out[i] = k
        left -= k
    return out


async def rebase(problem: Problem, ctx: SearchContext) -> SearchResult:
    """Reward-balanced expansion depth by depth until N paths have finished."""
    n, temperature = ctx.search.n, ctx.search.rebase_temperature
    state = SearchState(problem, ctx)
    width = n
    open_: list[Path] = [Path()]
    alloc = [n]
    finals: list[Path] = []
    depths: list[dict[str, list[int]]] = []
    for depth in range(ctx.search.max_depth):
        if depth:
            alloc = allocate([p.scores[-1] if p.scores else -math.inf for p in open_], width,
                             temperature)
            depths.append({"depth": depth, "nodes": [p.nodes[-1] for p in open_],
                           "expansions": alloc})
        parents = [(p, k) for p, k in zip(open_, alloc, strict=True) if k > 0]
        for p, k in zip(open_, alloc, strict=True):
            if p.nodes:
                state.set_status(p.nodes[-1], "kept" if k else "pruned")
        outs = await state.generate([
            state.step_request(p.text, p.tokens, k, request_seed(
                ctx, problem, "rebase", depth, p.nodes[-1] if p.nodes else -1))
            for p, k in parents])
        children: list[Path] = []
        for (p, _), group in zip(parents, outs, strict=True):
            for c in group:
                step = as_step(ctx, c)
                child = Path([*p.steps, step], list(p.scores),
                             [*p.nodes, state.add_node(p.nodes[-1] if p.nodes else -1, depth,
                                                       step, "active")],
                             p.tokens + c.completion_tokens)
                child.end = path_end(ctx, child, c.finish_reason, depth)
                children.append(child)
        scores = await state.last_scores([c.steps for c in children])
        open_ = []
        for child, sc in zip(children, scores, strict=True):
            child.scores = list(sc)
            state.tree[child.nodes[-1]].score = sc[-1] if sc else None
            if child.end:
                finals.append(child)
                state.set_status(child.nodes[-1], "finished")
                width -= 1
            else:
                open_.append(child)
        if width <= 0 or not open_:
            break
    cands = [Candidate(p.steps, p.scores, p.end, p.nodes, origin=i)
             for i, p in enumerate(finals)]
    return SearchResult(cands, state.compute, state.tree, budget=n,
                        info={"rebase": {"temperature": temperature, "depths": depths}})

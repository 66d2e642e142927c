"""search-and-learn's DVTS, decision for decision (``sal/search/diverse_verifier_tree_search.py``).

Budget N, width M, ``max_depth`` iterations: N/M subtrees start empty. Every iteration each
live subtree samples M next steps (one request per candidate, stop at the blank line; none in
the last iteration), each optionally followed by up to ``lookahead`` greedy steps (each roll-out
goes on only while the previous step ended on the blank line); every candidate is scored with
its roll-out, and the one with the best last score (the first of equals, as ``np.argmax``) is
appended, finished or not. A subtree stops when that candidate is empty or ended at EOS or the
token limit, or when its path holds ``boxed{``. Its output is the M siblings of its last
expansion (previous path + each candidate step), finished or not: N paths in all, subtree by
subtree, each with the scores of its own steps (a roll-out's are not part of the path).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from testtime.search.base import Candidate, SearchContext, SearchResult
from testtime.search.expand import SearchState, as_step, request_seed
from testtime.selection import finite
from testtime.types import Completion, Problem, Step


@dataclass
class Subtree:
    index: int
    steps: list[Step] = field(default_factory=list)
    node_ids: list[int] = field(default_factory=list)
    tokens: int = 0
    pruned: bool = False
    last: list[tuple[list[Step], list[int], list[float], str]] = field(default_factory=list)
    """The M siblings of the last expansion: (path steps, node ids, step scores, finish)."""


async def _roll_out(state: SearchState, paths: list[list[Step]], parents: list[int],
                    tokens: list[int], k: int) -> list[list[Step]]:
    """Up to ``k`` greedy steps after each path (one policy call per round); a roll-out goes
    on only while its previous step ended on the blank line. Roll-out steps are tree nodes of
    status ``lookahead`` under the candidate they score."""
    rolled: list[list[Step]] = [[] for _ in paths]
    last_node = list(parents)
    going = list(range(len(paths)))
    for r in range(k):
        if not going:
            break
        requests = []
        for i in going:
            prefix = "".join(st.text for st in paths[i] + rolled[i])
            used = tokens[i] + sum(st.num_tokens for st in rolled[i])
            seed = request_seed(state.ctx, state.problem, "lookahead", parents[i], r)
            req = state.step_request(prefix, used, 1, seed)
            params = state.ctx.params(n=1, max_tokens=req.params.max_tokens,
                                      stop=req.params.stop, seed=seed, greedy=True)
            requests.append(state.ctx.request(state.problem, prefix, params))
        groups = await state.generate(requests)
        still = []
        for i, (c,) in zip(going, groups, strict=True):
            step = as_step(state.ctx, c)
            last_node[i] = state.add_node(last_node[i], len(paths[i]) + len(rolled[i]), step,
                                          "lookahead")
            rolled[i].append(step)
            if c.finish_reason == "stop":
                still.append(i)
        going = still
    return rolled


async def sal_dvts(problem: Problem, ctx: SearchContext) -> SearchResult:
    n, m = ctx.search.n, ctx.search.beam_width
    state = SearchState(problem, ctx)
    iterations = ctx.search.max_depth
    subtrees = [Subtree(k) for k in range(n // m)]
    for i in range(iterations):
        live = [s for s in subtrees if not s.pruned]
        if not live:
            break
        last = i == iterations - 1
        requests, owners = [], []
        for s in live:
            for j in range(m):
                seed = request_seed(ctx, problem, s.index, i, j)
                requests.append(state.step_request(_text(s), s.tokens, 1, seed, last=last))
                owners.append((s, j))
        groups = await state.generate(requests)
        cands: list[tuple[Subtree, Step, int, Completion]] = []
        for (s, _), (c,) in zip(owners, groups, strict=True):
            step = as_step(ctx, c)
            node = state.add_node(s.node_ids[-1] if s.node_ids else -1, len(s.steps), step,
                                  "active")
            cands.append((s, step, node, c))
        paths = [[*s.steps, step] for s, step, _, _ in cands]
        look = ctx.search.lookahead if not last else 0
        rolled = await _roll_out(state, paths, [nd for _, _, nd, _ in cands],
                                 [s.tokens + st.num_tokens for s, st, _, _ in cands],
                                 look) if look else [[] for _ in cands]
        scores = await state.last_scores([p + r for p, r in zip(paths, rolled, strict=True)])
        for s in live:
            mine = [k for k, cand in enumerate(cands) if cand[0] is s]
            best = max(mine, key=lambda k: (finite(scores[k][-1]), -k))
            s.last = [(paths[k], [*s.node_ids, cands[k][2]], scores[k][: len(paths[k])],
                       cands[k][3].finish_reason) for k in mine]
            for k in mine:
                state.tree[cands[k][2]].score = scores[k][len(paths[k]) - 1]
                state.set_status(cands[k][2], "kept" if k == best else "pruned")
            _, step, node, c = cands[best]
            s.steps.append(step)
            s.node_ids.append(node)
            s.tokens += step.num_tokens
            if not c.text or c.finish_reason in ("eos", "length"):
                s.pruned = True
        for s in live:
            if "boxed{" in _text(s):
                s.pruned = True
    out = []
    for s in subtrees:
        for steps, ids, sc, finish in s.last:
            state.set_status(ids[-1], "finished")
            out.append(Candidate(list(steps), list(sc), _finish(steps, finish), ids,
                                 origin=s.index))
    return SearchResult(out, state.compute, state.tree, independent_prefixes=True,
                        prefix_unit=m, budget=n, unit_budget=m)


def _text(s: Subtree) -> str:
    return "".join(st.text for st in s.steps)


def _finish(steps: list[Step], finish: str) -> str:
    if "boxed{" in "".join(s.text for s in steps):
        return "boxed"
    return {"stop": "step"}.get(finish, finish)

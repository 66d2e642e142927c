"""Particle filtering over steps (Puri et al. 2025, arXiv 2502.01618; its_hub's
``ParticleFiltering``).

N particles (``search.n``) start empty and advance one step at a time: every unfinished particle
samples one step (stop at the blank line, the run's sampling settings) and the PRM scores its
whole partial path; the particle's weight is its **latest** step score. Then the unfinished
particles are resampled: N_unfinished draws with replacement (multinomial), in proportion to
``softmax(logit(score) / pf_temperature)`` over the unfinished particles. The defaults are the
authors' (their code: weight = logit of the PRM reward, softmax temperature 1.0; its_hub: the
same, ``log(s / (1 - s))`` clipped to [1e-7, 1 - 1e-7]). A copy continues from its source's
path with its own seed, so copies diverge at the next step.

A particle finishes when its step holds ``\\boxed``, ends at EOS, reaches ``max_depth`` steps
or uses ``max_path_tokens``. Finished particles are kept as they are and leave the pool, so
the search returns exactly N paths (the answer rule is the run's selection rules; the authors
pick the path with the highest last score: ``prm_last_max``). ``pf_resample_finished`` makes
finished particles take part in resampling at their final weight (the authors' run script,
``--resample-inactive``, and its_hub do this: a finished path can then be copied or dropped).

The tree records every step; a node copied k times has k children (the copies' next steps);
an unfinished node drawn by no slot is ``pruned``. ``info["particle_filtering"]`` holds, per
round, which particle each slot copied.
"""

from __future__ import annotations

import math
import random

from testtime.search.base import Candidate, SearchContext, SearchResult
from testtime.search.expand import Path, SearchState, as_step, path_end, request_seed
from testtime.types import Problem

#: Scores are clipped before the logit, as its_hub does (a score of exactly 0 or 1 is finite).
LOGIT_EPS = 1e-7


def logit(score: float) -> float:
    """``log(s / (1 - s))`` with ``s`` clipped to [1e-7, 1 - 1e-7]; non-finite stays -inf."""
    if not math.isfinite(score):
        return -math.inf
    s = min(max(score, LOGIT_EPS), 1.0 - LOGIT_EPS)
    return math.log(s / (1.0 - s))


def resampling_weights(scores: list[float], temperature: float) -> list[float]:
    """``softmax(logit(score) / temperature)``; a non-finite score gets weight 0, and when
    every score is non-finite the weights are uniform."""
    z = [logit(s) / temperature for s in scores]
    top = max(z, default=-math.inf)
    if top == -math.inf:
        return [1.0 / len(z)] * len(z) if z else []
    e = [math.exp(x - top) if x > -math.inf else 0.0 for x in z]
    total = sum(e)
    return [x / total for x in e]


async def particle_filtering(problem: Problem, ctx: SearchContext) -> SearchResult:
    """N particles, one step per round, resampled by their latest PRM score."""
    n, temperature = ctx.search.n, ctx.search.pf_temperature
    state = SearchState(problem, ctx)
    particles = [Path() for _ in range(n)]
    rng = random.Random(request_seed(ctx, problem, "pf-resample"))
    rounds: list[dict[str, list[int]]] = []
    for depth in range(ctx.search.max_depth):
        live = [i for i, p in enumerate(particles) if not p.end]
        if not live:
            break
        outs = await state.generate([
            state.step_request(particles[i].text, particles[i].tokens, 1,
                               request_seed(ctx, problem, "pf", depth, i)) for i in live])
        for i, [c] in zip(live, outs, strict=True):
            p = particles[i]
            step = as_step(ctx, c)
            p.nodes.append(state.add_node(p.nodes[-1] if p.nodes else -1, depth, step,
                                          "active"))
            p.steps.append(step)
            p.tokens += c.completion_tokens
            p.end = path_end(ctx, p, c.finish_reason, depth)
        scores = await state.last_scores([particles[i].steps for i in live])
        for i, sc in zip(live, scores, strict=True):
            particles[i].scores = list(sc)
            state.tree[particles[i].nodes[-1]].score = sc[-1] if sc else None
        if all(p.end for p in particles):
            break
        # the slots refilled this round, and the particles they draw from (the same set)
        pool = list(range(n)) if ctx.search.pf_resample_finished else \
            [i for i in live if not particles[i].end]
        weights = resampling_weights([particles[i].scores[-1] if particles[i].scores
                                      else -math.inf for i in pool], temperature)
        drawn = rng.choices(pool, weights=weights, k=len(pool))
        rounds.append({"depth": depth, "slots": pool, "from": drawn})
        for i in set(pool) - set(drawn):
            state.set_status(particles[i].nodes[-1], "pruned")
        for i in set(drawn):
            if not particles[i].end:
                state.set_status(particles[i].nodes[-1], "kept")
        copies = [particles[src].copy() for src in drawn]
        for slot, p in zip(pool, copies, strict=True):
            particles[slot] = p
    for p in particles:
        p.end = p.end or "depth"
        if p.nodes:
            state.set_status(p.nodes[-1], "finished")
    cands = [Candidate(p.steps, p.scores, p.end, p.nodes, origin=i)
             for i, p in enumerate(particles)]
    return SearchResult(cands, state.compute, state.tree, budget=n,
                        info={"particle_filtering": {
                            "temperature": temperature, "rounds": rounds,
                            "resample_finished": ctx.search.pf_resample_finished}})

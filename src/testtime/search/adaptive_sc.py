"""Adaptive self-consistency: sample until the majority answer is decided (Aggarwal et al. 2023,
"Let's Sample Step by Step: Adaptive-Consistency", arXiv 2305.11860; its_hub's
``BetaSelfConsistency``).

Full samples (as Best-of-N's) are drawn ``sc_round`` at a time, up to N = ``search.n``. After
each round the answers drawn so far are counted (the run's answer grouping; samples without an
answer do not count) and the problem stops once the leading answer's posterior probability of
being the majority reaches ``sc_threshold``:

* ``beta`` (default; the paper's and its_hub's): with v1 >= v2 the counts of the two leading
  answers, P(p1 > p2) under Beta(v1 + 1, v2 + 1), i.e. ``1 - I_0.5(v1 + 1, v2 + 1)``, which
  for integer counts is exactly ``P(Binomial(v1 + v2 + 1, 1/2) <= v1)``;
* ``dirichlet``: P(p1 > max_i p_i) under Dirichlet(v + 1) of the five leading counts, by a
  seeded Monte-Carlo estimate (20,000 draws); with fewer than three distinct answers it is the
  Beta rule, as in the paper's code.

The paper's defaults: threshold 0.95, a check after every sample (``sc_round`` 1), at most 40
samples. A larger round trades extra samples for fewer sequential calls (a check is made
only at round ends). Sample ``i`` is one request seeded ``request_seed(problem, "sc", i)``
whatever the round size, so the samples are the same for every round size and every N, and
a run at budget N also answers every smaller budget b exactly (the prefix up to ``min(stop,
b)``): the record's prefixes are valid budgets (``independent_prefixes``), with the compute of
what was drawn. ``info["adaptive_sc"]`` holds the samples drawn, the stop reason and the
posterior at the stop.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence

from testtime.search.base import SearchContext, SearchResult
from testtime.search.best_of_n import paths_result
from testtime.search.compute import Compute
from testtime.search.expand import request_seed
from testtime.types import Problem

#: Monte-Carlo draws of the Dirichlet rule.
DIRICHLET_DRAWS = 20_000
#: Leading answers the Dirichlet rule looks at (the paper's code: ``top_k_elements=5``).
DIRICHLET_TOP = 5


def beta_majority_probability(v1: int, v2: int) -> float:
    """P(p1 > p2) under Beta(v1 + 1, v2 + 1): ``P(Binomial(v1 + v2 + 1, 1/2) <= v1)``."""
    n = v1 + v2 + 1
    return sum(math.comb(n, k) for k in range(v1 + 1)) / 2**n


def dirichlet_majority_probability(counts: Sequence[int], rng: random.Random) -> float:
    """P(the first count's share exceeds every other's) under Dirichlet(counts + 1), estimated
    with :data:`DIRICHLET_DRAWS` seeded draws over the :data:`DIRICHLET_TOP` largest counts;
    the Beta rule below three distinct answers."""
    top = sorted(counts, reverse=True)[:DIRICHLET_TOP]
    if len(top) < 3:
        return beta_majority_probability(top[0] if top else 0, top[1] if len(top) > 1 else 0)
    wins = 0
    for _ in range(DIRICHLET_DRAWS):
        g = [rng.gammavariate(c + 1, 1.0) for c in top]
        wins += g[0] > max(g[1:])
    return wins / DIRICHLET_DRAWS


def majority_probability(keys: Sequence[str | int | None], criterion: str,
                         rng: random.Random) -> float:
    """The posterior probability that the leading answer among ``keys`` is the majority
    (``None``: no answer, not counted)."""
    counts = sorted(Counter(k for k in keys if k is not None).values(), reverse=True)
    if criterion == "beta":
        return beta_majority_probability(counts[0] if counts else 0,
                                         counts[1] if len(counts) > 1 else 0)
    if criterion == "dirichlet":
        return dirichlet_majority_probability(counts, rng)
    raise ValueError(f"unknown stopping criterion {criterion!r}; use beta or dirichlet")


async def answer_keys(problem: Problem, ctx: SearchContext,
                      texts: Sequence[str]) -> list[str | int | None]:
    """One key per text, equal for answers the run's grouping puts together (None: no
    answer): the paper's normalised string, or a Math-Verify class."""
    if ctx.search.answer_grouping == "equivalence":
        return list(await ctx.answer_groups(problem, texts))
    from testtime.grading.seed_answer import seed_answer_key

    return [seed_answer_key(t) or None for t in texts]  # "": the text has no answer


async def adaptive_sc(problem: Problem, ctx: SearchContext) -> SearchResult:
    """Samples in rounds until the majority is decided or N are drawn."""
    s = ctx.search
    rng = random.Random(request_seed(ctx, problem, "sc-dirichlet"))
    compute = Compute()
    outs, keys = [], []
    probability, stop = 0.0, "budget"
    while len(outs) < s.n:
        k = min(s.sc_round, s.n - len(outs))
        params = [ctx.params(n=1, max_tokens=s.max_path_tokens,
                             seed=request_seed(ctx, problem, "sc", len(outs) + j))
                  for j in range(k)]
        got = await ctx.generate([ctx.request(problem, "", p) for p in params], compute)
        new = [g[0] for g in got]
        outs += new
        keys += await answer_keys(problem, ctx, [c.text for c in new])
        probability = majority_probability(keys, s.sc_criterion, rng)
        if probability >= s.sc_threshold:
            stop = "decided"
            break
    result = await paths_result(problem, ctx, outs, compute)
    result.independent_prefixes = True
    result.budget = s.n
    result.info = {"adaptive_sc": {"drawn": len(outs), "stop": stop,
                                   "probability": probability, "criterion": s.sc_criterion,
                                   "threshold": s.sc_threshold, "round": s.sc_round}}
    return result

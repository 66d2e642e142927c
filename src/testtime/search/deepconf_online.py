"""Online DeepConf: stop weak traces while they are generated (Fu et al. 2025, "Deep Think with
Confidence", arXiv 2508.15260, Algorithm 2; facebookresearch/deepconf ``deepconf-online.py``).

The rule, with W = ``min(dc_warmup, N)`` warm-up traces, window w = ``dc_window``, keep share
eta = ``dc_eta`` and consensus tau = ``dc_consensus``:

1. **Warm-up.** W full traces (no early stop). A trace's *lowest group confidence* is the
   least mean DeepConf token confidence over its sliding windows of w tokens (the whole
   trace's mean when it is shorter than w; 0 for an empty trace), as the authors'
   ``compute_least_grouped``. The threshold s is the ``(100 - eta)``-th percentile of the W
   warm-up values (``numpy.percentile``, linear): eta 10 (DeepConf-low) -> 90th percentile,
   eta 90 (DeepConf-high) -> 10th. Warm-up traces below s take no part in the vote.
2. **Online.** Traces are generated ``dc_round`` at a time (the paper: one) with
   ``SamplingParams.confidence_stop = ConfidenceStop(s, w)``: the backend ends a trace right
   after the first token whose last-w-token mean confidence is below s (``finish_reason
   "confidence"``), keeping what it generated. A stopped trace, or one that ended with a
   lowest group below s (a trace shorter than w is never checked while it is generated; the
   authors' script drops it afterwards the same way), stays in the record with its text,
   tokens and confidences but is not ``voted``: no selection rule sees it.
3. **Consensus.** After each online round, the confidence-weighted vote (each voted trace
   with an answer adds its lowest group confidence to its answer) is checked; sampling stops
   once the top answer holds at least tau of the weight, or at N traces.

With N <= ``dc_warmup`` the run is the warm-up alone (W = N, no online phase): offline
DeepConf on N full traces. Trace i is seeded as adaptive self-consistency's sample i
(``request_seed(problem, "sc", i)``), so ``--method adaptive_sc --sc-threshold 1`` draws the
very traces this method would have generated in full. The method's own answer is the
prediction ``deepconf`` = the rule ``deepconf_lowest_100_wvote`` over the voted traces
(weights: the record's lowest group confidence, :mod:`testtime.confidence`'s 2048-token
window; the same as the method's weights when ``dc_window`` is 2048); every other rule is
also applied to the voted traces. Budgets W, 2W, 4W, ... < N and N are exact prefixes (a run
at budget b draws the same first ``min(stop, b)`` traces, and budget W is the warm-up with
its own threshold), so the record answers them when W divides N. Compute counts only the
tokens generated. ``info["deepconf"]`` holds the threshold, the warm-up values, the traces
drawn and stopped, and the stop reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from testtime.search.adaptive_sc import answer_keys
from testtime.search.base import SearchContext, SearchResult
from testtime.search.best_of_n import paths_result
from testtime.search.compute import Compute
from testtime.search.expand import request_seed
from testtime.selection import percentile
from testtime.types import Completion, ConfidenceStop, Problem

#: The rule that is the method's own answer (weighted vote of the voted traces, no filter).
PAPER_RULE = "deepconf_lowest_100_wvote"
#: The name of that answer among the record's predictions (``deepconf/deepconf`` in analyses).
OWN_ANSWER = "deepconf"


def lowest_group(confidences: Sequence[float], window: int) -> float:
    """Least mean over sliding windows of ``window`` tokens (stride 1); the mean of a
    shorter trace; 0 for an empty one (the authors' ``compute_least_grouped``)."""
    c = np.asarray(confidences, dtype=np.float64)
    if c.size == 0:
        return 0.0
    if c.size < window:
        return float(c.mean())
    s = np.concatenate(([0.0], np.cumsum(c)))
    return float(((s[window:] - s[:-window]) / window).min())


def threshold(lows: Sequence[float], eta: float) -> float:
    """s: the ``(100 - eta)``-th percentile of the warm-up traces' lowest group confidences."""
    return percentile(lows, 100.0 - eta)


def vote_share(keys: Sequence[str | int | None], weights: Sequence[float],
               voted: Sequence[bool]) -> float:
    """The top answer's share of the confidence-weighted vote (0 when nobody votes)."""
    totals: dict[str | int, float] = {}
    for k, w, v in zip(keys, weights, voted, strict=True):
        if v and k is not None:
            totals[k] = totals.get(k, 0.0) + w
    total = sum(totals.values())
    return max(totals.values()) / total if total > 0 else 0.0


def _confidences(c: Completion, problem: Problem) -> tuple[float, ...]:
    if c.completion_tokens and not c.token_confidences and c.token_texts:
        raise ValueError(f"problem {problem.id}: online DeepConf needs per-token confidences "
                         "and the policy returned none")
    return c.token_confidences


async def deepconf(problem: Problem, ctx: SearchContext) -> SearchResult:
    """Warm-up, threshold, traces stopped online, until consensus or N (module docstring)."""
    s = ctx.search
    warm = min(s.dc_warmup, s.n)
    compute = Compute()

    async def draw(first: int, count: int, stop: ConfidenceStop | None) -> list[Completion]:
        reqs = []
        for i in range(first, first + count):
            p = ctx.params(n=1, max_tokens=s.max_path_tokens,
                           seed=request_seed(ctx, problem, "sc", i))
            reqs.append(ctx.request(problem, "", replace(p, confidence_stop=stop)))
        return [g[0] for g in await ctx.generate(reqs, compute)]

    outs = await draw(0, warm, None)
    lows = [lowest_group(_confidences(c, problem), s.dc_window) for c in outs]
    s_bar = threshold(lows, s.dc_eta)
    voted = [x >= s_bar for x in lows]
    keys = list(await answer_keys(problem, ctx, [c.text for c in outs]))
    stop, share, stopped = "budget", 0.0, 0
    while len(outs) < s.n:
        new = await draw(len(outs), min(s.dc_round, s.n - len(outs)),
                         ConfidenceStop(s_bar, s.dc_window))
        for c in new:
            low = lowest_group(_confidences(c, problem), s.dc_window)
            lows.append(low)
            voted.append(c.finish_reason != "confidence" and low >= s_bar)
            stopped += c.finish_reason == "confidence"
        outs += new
        keys += await answer_keys(problem, ctx, [c.text for c in new])
        share = vote_share(keys, lows, voted)
        if share >= s.dc_consensus:
            stop = "consensus"
            break
    result = await paths_result(problem, ctx, outs, compute)
    for i, (cand, v) in enumerate(zip(result.candidates, voted, strict=True)):
        cand.voted, cand.origin = v, i // warm
    result.budget, result.unit_budget = s.n, warm
    result.independent_prefixes = s.n % warm == 0
    if not result.independent_prefixes:
        for cand in result.candidates:
            cand.origin = 0
    result.extra_predictions = {OWN_ANSWER: PAPER_RULE}
    result.info = {"deepconf": {
        "threshold": s_bar, "warmup": warm, "warmup_lowest": lows[:warm], "drawn": len(outs),
        "stopped": stopped, "voted": sum(voted), "stop": stop, "share": share,
        "window": s.dc_window, "eta": s.dc_eta, "consensus": s.dc_consensus}}
    return result


def summarize(records: Sequence[Any], config: Any) -> dict[str, Any]:
    """``summary.json``'s ``deepconf`` section: traces drawn, stopped early, voted, the
    generated tokens per problem, and the accuracy of the method's own answer (prediction
    ``deepconf``) per budget (failed problems count as wrong)."""
    infos = [(r.info or {}).get("deepconf") for r in records if r.error is None]
    infos = [i for i in infos if i]
    done = [r for r in records if r.error is None]
    if not infos:
        return {}
    k = len(infos)
    return {"problems": k,
            "mean_drawn": sum(i["drawn"] for i in infos) / k,
            "mean_stopped": sum(i["stopped"] for i in infos) / k,
            "mean_voted": sum(i["voted"] for i in infos) / k,
            "consensus_stops": sum(i["stop"] == "consensus" for i in infos),
            "mean_completion_tokens": sum(r.compute.completion_tokens for r in done) / k,
            "accuracy": {b: sum(bool(r.predictions.get(b, {}).get(OWN_ANSWER) and
                                     r.predictions[b][OWN_ANSWER].correct) for r in done)
                         / len(records)
                         for b in sorted({b for r in done for b in r.predictions}, key=int)}}

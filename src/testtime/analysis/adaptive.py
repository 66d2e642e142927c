"""The adaptive solver: spend a per-problem budget the way the compute-optimal table says.

It is a search method (``--method adaptive``; ``testtime run --strategy optimal`` and
``testtime adaptive`` set it), so it runs through the runner like any other: retries, error
records, resume, one record per problem. Its settings are ``RunConfig.adaptive``
(:class:`testtime.config.AdaptiveSettings`). For each problem (no reference answer is used for
any decision):

1. Pilot: ``pilot`` independent samples (Best-of-N), scored by the PRM. Their *agreement*
   (share of the pilot in the largest answer group; unanswered samples count against it) is
   the online estimate of pass@1; their mean last-step score is a second opinion.
2. Early stop: agreement >= ``stop_agreement`` and mean score >= ``stop_score`` -> the pilot's
   majority answer, nothing more is spent.
3. Bin: the table's binning (``absolute`` by default) places the estimate (``Binning.bin_of``).
4. Escalation: the pilot is *uncertain* when the estimate lies within ``margin`` of a bin
   boundary or agreement and mean score differ by more than ``disagreement``; an uncertain
   problem gets the next harder bin and ``escalation`` x the budget.
5. Spend: the table's strategy for (bin, largest table budget <= the problem's budget) is run
   at that budget; a Best-of-N choice reuses the pilot samples as its first candidates. The
   strategy's selection rule picks the answer (``predictions[n]["adaptive"]``).

What was decided goes into the record's ``info["adaptive"]``; the run's ``summary.json`` gets
an ``adaptive`` section (:mod:`testtime.analysis.adaptive_summary`) comparing accuracy and mean
compute with the best fixed strategy at the same mean budget.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testtime.analysis.budget import BudgetLedger
from testtime.analysis.difficulty import Binning
from testtime.analysis.optimal import load_table
from testtime.analysis.runs import Strategy
from testtime.search.base import SearchContext, SearchFn, SearchResult
from testtime.types import Problem

if TYPE_CHECKING:
    from testtime.config import AdaptiveSettings, RunConfig
    from testtime.records import ProblemRecord

#: The prediction key of the solver's own pick in every record.
ADAPTIVE = "adaptive"


@dataclass
class Plan:
    """The table's strategies for one (policy, PRM) and binning."""

    binning: Binning
    choices: dict[tuple[str, int], Strategy]
    fixed: dict[str, list[tuple[int, float, float]]]
    """Fixed strategy label -> (budget, accuracy, flops) points, for the comparison."""

    def strategy(self, name: str, budget: int) -> tuple[Strategy, int]:
        """The choice for ``name`` at the largest table budget <= ``budget`` (else smallest)."""
        avail = sorted(b for (n, b) in self.choices if n == name)
        if not avail:
            raise ValueError(f"the table has no rows for bin {name!r}")
        b = max((x for x in avail if x <= budget), default=avail[0])
        return self.choices[(name, b)], b


def plan_from_table(table: dict[str, Any], policy: str, prm: str, scheme: str) -> Plan:
    entries = table["entries"]
    entry = next((e for e in entries if (e["policy"], e["prm"]) == (policy, prm)), None)
    if entry is None:
        have = ", ".join(f"{e['policy']} + {e['prm']}" for e in entries)
        raise ValueError(f"the table has no entry for {policy} + {prm}; it has: {have}")
    b = next((x for x in entry["binnings"] if x["scheme"] == scheme), None)
    if b is None:
        raise ValueError(f"the table has no {scheme!r} binning for {policy} + {prm}")
    binning = Binning(scheme, tuple(b["bins"]), {},
                      {k: (float(v[0]), float(v[1])) for k, v in b["bounds"].items()})
    choices = {(r["bin"], int(r["budget"])): Strategy.from_json(r["strategy"])
               for r in entry["rows"] if r["scheme"] == scheme}
    fixed = {label: [(int(p["budget"]), float(p["accuracy"]), float(p["flops"]))
                     for p in c["points"]] for label, c in entry["fixed"].items()}
    return Plan(binning, choices, fixed)


def load_plan(config: RunConfig) -> Plan:
    """The plan of ``config.adaptive.table`` for the run's policy and PRM."""
    settings = _settings(config)
    return plan_from_table(load_table(Path(settings.table)), config.policy, config.prm,
                           settings.scheme)


def pilot_estimate(groups: Sequence[int | None],
                   last_scores: Sequence[float]) -> tuple[float, float]:
    """(agreement, mean last-step score) of the pilot samples."""
    counts = Counter(g for g in groups if g is not None)
    agreement = max(counts.values()) / len(groups) if counts else 0.0
    score = sum(last_scores) / len(last_scores) if last_scores else 0.0
    return agreement, score


def decide(plan: Plan, cfg: AdaptiveSettings, agreement: float,
           score: float) -> tuple[str, bool, bool]:
    """(bin, stop after the pilot, escalate) for one pilot."""
    stop = agreement >= cfg.stop_agreement and score >= cfg.stop_score
    name = plan.binning.bin_of(agreement)
    edges = [lo for lo, _ in plan.binning.bounds.values() if 0.0 < lo]
    uncertain = any(abs(agreement - e) < cfg.margin for e in edges) or \
        abs(agreement - score) > cfg.disagreement
    if uncertain and not stop:
        i = plan.binning.bins.index(name)
        name = plan.binning.bins[min(i + 1, len(plan.binning.bins) - 1)]
    return name, stop, uncertain and not stop


def merge(a: SearchResult, b: SearchResult) -> SearchResult:
    """Candidates of ``a`` then ``b`` (independent samples), trees and compute combined."""
    off, units = len(a.tree), 1 + max((c.origin for c in a.candidates), default=-1)
    tree = list(a.tree) + [dataclasses.replace(t, id=t.id + off,
                                               parent=t.parent + off if t.parent >= 0 else -1)
                           for t in b.tree]
    cands = list(a.candidates) + [dataclasses.replace(c, node_ids=[i + off for i in c.node_ids],
                                                      origin=c.origin + units)
                                  for c in b.candidates]
    compute = dataclasses.replace(a.compute)
    compute.add(b.compute)
    return SearchResult(cands, compute, tree, independent_prefixes=False)


def _settings(config: RunConfig) -> AdaptiveSettings:
    if config.adaptive is None:
        raise ValueError("method 'adaptive' needs adaptive settings (--table and --budget)")
    return config.adaptive


def make(config: RunConfig) -> SearchFn:
    """The search function of a run: :func:`solve` with the run's plan (the table is read
    here, once, while the run is being built) and, when capped, the run's budget ledger."""
    settings = _settings(config)
    ledger = BudgetLedger(settings.budget) if settings.cap else None
    return functools.partial(solve, plan=load_plan(config), cfg=settings, ledger=ledger)


async def solve(problem: Problem, ctx: SearchContext, *, plan: Plan,
                cfg: AdaptiveSettings, ledger: BudgetLedger | None = None) -> SearchResult:
    """Pilot, decide, spend; the candidates of what was run, with the decision in ``info``.
    With a ``ledger`` (the cap) the spend stays within the problem's allowance."""
    if ledger is None:
        return await _solve(problem, ctx, plan, cfg, None)
    ledger.register(problem.id)  # before the first await: the order problems start in
    try:
        return await _solve(problem, ctx, plan, cfg, ledger)
    except BaseException:
        await ledger.fail(problem.id)
        raise


async def _solve(problem: Problem, ctx: SearchContext, plan: Plan, cfg: AdaptiveSettings,
                 ledger: BudgetLedger | None) -> SearchResult:
    from testtime.search import get_method

    def context(method: str, n: int, width: int | None, seed: int,
                think: int | None = None) -> SearchContext:
        # a strategy measured with a thinking budget runs with it; else the run's own setting
        search = dataclasses.replace(ctx.search, method=method, n=n,
                                     beam_width=width or ctx.search.beam_width,
                                     think_budget=think or ctx.search.think_budget)
        return dataclasses.replace(ctx, search=search,
                                   sampling=dataclasses.replace(ctx.sampling, seed=seed))

    base_seed = ctx.sampling.seed
    pilot = await get_method("best_of_n")(problem, context("best_of_n", cfg.pilot, None,
                                                           base_seed))
    groups = await ctx.answer_groups(problem, [c.text for c in pilot.candidates])
    agreement, score = pilot_estimate(groups, [c.scores[-1] if c.scores else 0.0
                                               for c in pilot.candidates])
    name, stop, escalated = decide(plan, cfg, agreement, score)
    budget = cfg.budget * (cfg.escalation if escalated else 1)
    allowance, capped = None, False
    if ledger is not None:
        allowance = await ledger.allowance(problem.id)
        if budget > allowance:  # the bank cannot pay for all of it: what it affords
            budget, capped = allowance, True
            escalated = escalated and budget > cfg.budget
    # What to run, and its spend in generations (N-equivalents, the pilot included)
    strategy, n = Strategy("best_of_n", "majority"), cfg.pilot
    if not stop:
        strategy, n = plan.strategy(name, budget)
        if allowance is not None and strategy.method == "best_of_n":
            n = min(n, allowance)  # Best-of-N runs at any N: the table's rule, fewer samples
        elif allowance is not None and cfg.pilot + n > allowance:
            # a search does not reuse the pilot: its budget must leave room for it
            strategy, n = plan.strategy(name, allowance - cfg.pilot)
            if cfg.pilot + n > allowance:  # not even the table's smallest fits: the pilot
                strategy, n = Strategy("best_of_n", "majority"), cfg.pilot
    # Best-of-N extends the pilot's samples, unless the table's strategy thinks to another
    # budget than the pilot did: then it is a run of its own, as any search
    bon = strategy.method == "best_of_n" and strategy.think_budget in (
        None, ctx.search.think_budget)
    spent = max(n, cfg.pilot) if bon else cfg.pilot + n
    if ledger is not None:
        await ledger.spend(problem.id, spent)  # now, so later problems need not wait
    if bon and n > cfg.pilot:
        more = await get_method("best_of_n")(
            problem, context("best_of_n", n - cfg.pilot, None, base_seed + 1,
                             strategy.think_budget))
        result = merge(pilot, more)
    elif bon:
        result = pilot
    else:
        run = await get_method(strategy.method)(
            problem, context(strategy.method, n, strategy.beam_width, base_seed + 1,
                             strategy.think_budget))
        compute = dataclasses.replace(run.compute)
        compute.add(pilot.compute)  # the pilot was spent too
        result = dataclasses.replace(run, compute=compute)
    rule = "majority" if strategy.method == "cot" else strategy.rule
    return dataclasses.replace(
        result, independent_prefixes=False, extra_predictions={ADAPTIVE: rule},
        info={ADAPTIVE: {"agreement": agreement, "pilot_score": score, "bin": name,
                         "stopped": stop, "escalated": escalated, "strategy": strategy.label,
                         "budget": len(result.candidates), "spent": spent,
                         "allowance": allowance, "capped": capped}})


def summarize(records: Sequence[ProblemRecord], config: RunConfig) -> dict[str, Any]:
    """The ``adaptive`` section of ``summary.json`` (see ``adaptive_summary``)."""
    from testtime.analysis.adaptive_summary import summarize_adaptive

    settings = _settings(config)
    compare = [Path(p) for p in settings.compare] or None
    return summarize_adaptive(records, load_plan(config).fixed, settings, config, compare)

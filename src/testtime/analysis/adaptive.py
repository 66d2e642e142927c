"""The adaptive solver: spend a per-problem budget the way the compute-optimal table says.

For each problem (no reference answer is used for any decision):

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

The output directory holds ``adaptive.json`` (settings), ``results.jsonl`` (one record per
problem; ``metadata["adaptive"]`` tells what was decided) and ``summary.json``, which compares
accuracy and mean compute with the best fixed strategy at the same mean budget (linear
interpolation in generations between measured budgets, no extrapolation).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testtime.analysis.difficulty import Binning
from testtime.analysis.optimal import load_table
from testtime.analysis.runs import Strategy
from testtime.config import RunConfig
from testtime.flops import FlopCosts, costs_for_specs
from testtime.records import PredictionRecord, ProblemRecord, RecordStore, dump_json
from testtime.search.base import SearchContext, SearchResult

SETTINGS_FILE = "adaptive.json"


@dataclass(frozen=True)
class AdaptiveConfig:
    """How the solver spends its budget."""

    budget: int
    """Target generations per problem (B)."""
    pilot: int = 4
    """Pilot samples per problem (counted in the budget)."""
    scheme: str = "absolute"
    """Binning of the table to use (``absolute``, ``quantile`` or ``all``)."""
    stop_agreement: float = 1.0
    """Pilot agreement at or above which (with ``stop_score``) the pilot answer is final."""
    stop_score: float = 0.5
    """Mean last-step score needed for an early stop."""
    margin: float = 0.1
    """Distance of the estimate to a bin boundary below which the pilot is uncertain."""
    disagreement: float = 0.4
    """|agreement - mean score| above which the pilot is uncertain."""
    escalation: int = 2
    """Budget multiplier for uncertain problems."""

    def __post_init__(self) -> None:
        if self.budget < 1 or self.pilot < 1 or self.escalation < 1:
            raise ValueError("budget, pilot and escalation must be >= 1")
        if self.pilot > self.budget:
            raise ValueError(f"pilot ({self.pilot}) must not exceed the budget ({self.budget})")


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


def pilot_estimate(groups: list[int | None], last_scores: list[float]) -> tuple[float, float]:
    """(agreement, mean last-step score) of the pilot samples."""
    counts = Counter(g for g in groups if g is not None)
    agreement = max(counts.values()) / len(groups) if counts else 0.0
    score = sum(last_scores) / len(last_scores) if last_scores else 0.0
    return agreement, score


def decide(plan: Plan, cfg: AdaptiveConfig, agreement: float,
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
    off, units = len(a.tree), 1 + max((c.group for c in a.candidates), default=-1)
    tree = list(a.tree) + [dataclasses.replace(t, id=t.id + off,
                                               parent=t.parent + off if t.parent >= 0 else -1)
                           for t in b.tree]
    cands = list(a.candidates) + [dataclasses.replace(c, node_ids=[i + off for i in c.node_ids],
                                                      group=c.group + units)
                                  for c in b.candidates]
    compute = dataclasses.replace(a.compute)
    compute.add(b.compute)
    return SearchResult(cands, compute, tree, independent_prefixes=False)


async def solve(problem: Any, ctx: SearchContext, plan: Plan, cfg: AdaptiveConfig,
                run_cfg: RunConfig, grader: Any) -> ProblemRecord:
    """Pilot, decide, spend; the record of one problem."""
    from testtime.answers import grade_and_group
    from testtime.runner import build_record
    from testtime.search import get_method

    def context(method: str, n: int, width: int | None, seed: int) -> SearchContext:
        search = dataclasses.replace(ctx.search, method=method, n=n,
                                     beam_width=width or ctx.search.beam_width)
        return dataclasses.replace(ctx, search=search,
                                   sampling=dataclasses.replace(ctx.sampling, seed=seed))

    base_seed = ctx.sampling.seed
    pilot = await get_method("best_of_n")(problem, context("best_of_n", cfg.pilot, None,
                                                           base_seed))
    _, _, groups = await grade_and_group([c.text for c in pilot.candidates], problem.answer,
                                         grader)
    agreement, score = pilot_estimate(groups, [c.scores[-1] if c.scores else 0.0
                                               for c in pilot.candidates])
    name, stop, escalated = decide(plan, cfg, agreement, score)
    budget = cfg.budget * (cfg.escalation if escalated else 1)
    spent = cfg.pilot  # generations in budget units (N-equivalents), the pilot included
    if stop:
        strategy, n, result = Strategy("best_of_n", "majority"), cfg.pilot, pilot
    else:
        strategy, n = plan.strategy(name, budget)
        if strategy.method == "best_of_n" and n > cfg.pilot:
            more = await get_method("best_of_n")(
                problem, context("best_of_n", n - cfg.pilot, None, base_seed + 1))
            result, spent = merge(pilot, more), n
        elif strategy.method == "best_of_n":
            result = pilot
        else:
            spent += n
            run = await get_method(strategy.method)(
                problem, context(strategy.method, n, strategy.beam_width, base_seed + 1))
            compute = dataclasses.replace(run.compute)
            compute.add(pilot.compute)  # the pilot was spent too
            result = dataclasses.replace(run, compute=compute)
    result = dataclasses.replace(result, independent_prefixes=False)
    record = await build_record(problem, result, run_cfg, grader)
    [(b, preds)] = record.predictions.items()
    rule = "majority" if strategy.method == "cot" else strategy.rule
    preds["adaptive"] = PredictionRecord(**preds[rule].model_dump())
    record.metadata = {**record.metadata, "adaptive": {
        "agreement": agreement, "pilot_score": score, "bin": name, "stopped": stop,
        "escalated": escalated, "strategy": strategy.label, "budget": int(b),
        "spent": spent}}
    return record


async def run_adaptive(table_path: Path, cfg: AdaptiveConfig, run_cfg: RunConfig, out: Path, *,
                       policy: Any = None, scorer: Any = None, compare: list[Path] | None = None,
                       resume: bool = False) -> dict[str, Any]:
    """Solve every problem of ``run_cfg``'s dataset into ``out``; returns the summary."""
    from testtime.grading import Grader
    from testtime.prompts import prompt_for_model
    from testtime.runner import problems_of

    plan = plan_from_table(load_table(table_path), run_cfg.policy, run_cfg.prm, cfg.scheme)
    problems = problems_of(run_cfg)
    settings = {"adaptive": dataclasses.asdict(cfg), "run": json.loads(run_cfg.model_dump_json()),
                "table": str(table_path)}
    out.mkdir(parents=True, exist_ok=True)
    if (out / SETTINGS_FILE).exists():
        saved = json.loads((out / SETTINGS_FILE).read_text())
        if saved != settings:
            raise ValueError(f"{out / SETTINGS_FILE}: holds different settings; use a new --out")
        if not resume:
            raise ValueError(f"{out} already holds an adaptive run; add --resume")
    dump_json(out / SETTINGS_FILE, settings)
    store = RecordStore(out / "results.jsonl")
    todo = [p for p in problems if p.id not in store.done_ids()]
    if todo:
        if policy is None:
            from testtime.policy.registry import build_policy

            policy = build_policy(run_cfg.policy, run_cfg.policy_options)
        if scorer is None:
            from testtime.scoring.registry import build_scorer

            scorer = build_scorer(run_cfg.prm, run_cfg.prm_options)
        costs = FlopCosts.of(policy, scorer)
        if costs == FlopCosts():
            costs = costs_for_specs(run_cfg.policy, run_cfg.prm)
        ctx = SearchContext(policy, scorer, prompt_for_model(policy.name, run_cfg.prompt),
                            run_cfg.search, run_cfg.sampling)
        sem = asyncio.Semaphore(run_cfg.max_concurrent_problems)

        async def one(p: Any) -> None:
            async with sem:
                rec = await solve(p, ctx, plan, cfg, run_cfg, grader)
                costs.fill(rec.compute)
                store.append(rec)

        with Grader() as grader:
            await asyncio.gather(*(one(p) for p in todo))
    from testtime.analysis.adaptive_summary import summarize_adaptive

    records = [store.records[p.id] for p in problems if p.id in store.records]
    summary = summarize_adaptive(records, plan, cfg, run_cfg, compare)
    dump_json(out / "summary.json", summary)
    return summary

"""Load run directories into one table of per-problem outcomes for the analyses.

A *strategy* is a search method (with its beam width where it has one) plus a selection rule.
For every (policy, PRM) pair, strategy, budget and problem the table holds an ``Outcome``:
correctness (averaged over seeds) and the compute spent at that budget. Budgets below a run's
N come from prefixes of its candidates (Best-of-N, DVTS, adaptive self-consistency); their
compute is the run's compute scaled by ``budget / N``, since prefix units are exchangeable
samples of the same cost (adaptive self-consistency: by ``min(drawn, budget) / drawn``, and its
generations are the samples it drew, a mean budget below the nominal one).

Records written without FLOPs get them from the run config's model names through the
known-config table of ``testtime.flops`` (0 for unknown models).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from testtime.analysis.comparable import WIDTH_METHODS, check_comparable
from testtime.config import RunConfig
from testtime.flops import FlopCosts, costs_for_specs
from testtime.records import ProblemRecord
from testtime.search.deepconf_online import OWN_ANSWER as DEEPCONF_OWN
from testtime.selection import DEEPCONF_RULES, ORACLE, RULES
from testtime.store import read_records, writer_of

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"
OWN_ANSWERS: dict[str, tuple[str, ...]] = {"deepconf": (DEEPCONF_OWN,)}
"""Predictions a method writes beside the selection rules (its own answer), analysed as a
strategy of their own: online DeepConf's ``deepconf`` (the confidence-weighted vote of the
traces it did not stop) is ``deepconf/deepconf``."""


@dataclass(frozen=True, order=True)
class Strategy:
    """A method (with beam width where it matters, and thinking budget where runs had one) and
    a selection rule."""

    method: str
    rule: str
    beam_width: int | None = None
    think_budget: int | None = None
    """The runs' thinking budget (``--think-budget``; None: none)."""

    @property
    def method_label(self) -> str:
        label = self.method if self.beam_width is None else f"{self.method}_m{self.beam_width}"
        return label if self.think_budget is None else f"{label}_t{self.think_budget}"

    @property
    def label(self) -> str:
        return "cot" if self.method == "cot" else f"{self.method_label}/{self.rule}"

    def to_json(self) -> dict[str, object]:
        d: dict[str, object] = {"method": self.method, "rule": self.rule,
                                "beam_width": self.beam_width}
        if self.think_budget is not None:
            d["think_budget"] = self.think_budget
        return d

    @classmethod
    def from_json(cls, d: dict[str, object]) -> Strategy:
        bw, tb = d.get("beam_width"), d.get("think_budget")
        return cls(str(d["method"]), str(d["rule"]), None if bw is None else int(str(bw)),
                   None if tb is None else int(str(tb)))


MAJORITY_BON = Strategy("best_of_n", "majority")
"""The baseline of the efficiency gain: Best-of-N with majority voting."""


@dataclass
class Outcome:
    """One problem under one strategy at one budget (means over seeds)."""

    correct: float
    generations: float
    """The budget: final paths (the papers' x-axis)."""
    policy_tokens: float
    """Prompt (billed: every sample pays its prompt) + completion tokens of the policy."""
    scored_tokens: float
    flops: float
    """Policy + PRM FLOPs (``testtime.flops``)."""
    prefill_tokens: float = 0.0
    """Prompt tokens an engine with prefix caching computes + completion tokens."""


@dataclass
class RunInfo:
    path: Path
    config: RunConfig
    records: int
    errors: int


Key = tuple[str, str]
"""(policy, prm)"""


@dataclass
class Results:
    """Everything the analyses need, read once from the run directories."""

    runs: list[RunInfo] = field(default_factory=list)
    outcomes: dict[Key, dict[Strategy, dict[int, dict[str, Outcome]]]] = field(
        default_factory=dict)
    """(policy, prm) -> strategy -> budget -> problem id -> outcome."""
    oracle: dict[Key, dict[str, dict[int, dict[str, Outcome]]]] = field(default_factory=dict)
    """(policy, prm) -> method label -> budget -> problem id -> pass@budget (an upper bound)."""
    pass1: dict[str, dict[str, float]] = field(default_factory=dict)
    """policy -> problem id -> fraction of correct Best-of-N candidates (pooled over runs)."""
    records: list[tuple[RunInfo, ProblemRecord]] = field(default_factory=list)
    """Every finished record, for drawing trees."""
    levels: dict[str, int | None] = field(default_factory=dict)

    def keys(self) -> list[Key]:
        return sorted(self.outcomes)

    def problems(self, key: Key) -> list[str]:
        """Problems every strategy of ``key`` answered (the common universe)."""
        sets = [set(by_pid) for strat in self.outcomes[key].values()
                for by_pid in strat.values()]
        return sorted(set.intersection(*sets)) if sets else []


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Run directories named directly, listed by a sweep's ``sweep.json`` or found one level
    below a given directory; duplicates removed, order kept."""
    out: list[Path] = []
    for p in paths:
        if (p / "config.json").exists():
            found = [p]
        elif (p / SWEEP_FILE).exists():
            sweep = json.loads((p / SWEEP_FILE).read_text())
            found = [p / c["run_dir"] for c in sweep["cells"]
                     if (p / c["run_dir"] / "config.json").exists()]
        elif (holder := writer_of(p)) is not None:
            raise FileNotFoundError(f"{p}: run in progress ({holder}); no config.json yet")
        elif p.is_dir():
            found = sorted(d for d in p.iterdir() if (d / "config.json").exists())
        else:
            raise FileNotFoundError(f"{p}: not a run directory (no config.json)")
        if not found:
            raise FileNotFoundError(f"{p}: no run directories in it")
        for d in found:
            if d.resolve() not in {o.resolve() for o in out}:
                out.append(d)
    return out


def load_results(paths: list[Path]) -> Results:
    """Read every run under ``paths`` (see ``find_run_dirs``)."""
    res = Results()
    sums: dict[tuple[Key, Strategy, int, str], list[Outcome]] = defaultdict(list)
    oracle: dict[tuple[Key, str, int, str], list[Outcome]] = defaultdict(list)
    hits: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    configs: list[tuple[Path, RunConfig]] = []
    for run_dir in find_run_dirs(paths):
        try:
            configs.append((run_dir, RunConfig.model_validate_json(
                (run_dir / "config.json").read_text())))
        except ValueError as exc:
            raise ValueError(f"{run_dir / 'config.json'}: {exc}") from None
    check_comparable([(str(d), c) for d, c in configs])
    for run_dir, cfg in configs:
        if (holder := writer_of(run_dir)) is not None:
            log.warning("%s: run in progress (%s); reading the records finished so far",
                        run_dir, holder)
        recs = read_records(run_dir / "results.jsonl")
        ok = [r for r in recs if r.error is None]
        info = RunInfo(run_dir, cfg, len(recs), len(recs) - len(ok))
        res.runs.append(info)
        if info.errors:
            log.warning("%s: %d failed problems left out", run_dir, info.errors)
        key = (cfg.policy, cfg.prm)
        costs = costs_for_specs(cfg.policy, cfg.prm)
        width = cfg.search.beam_width if cfg.search.method in WIDTH_METHODS else None
        think = cfg.search.think_budget
        rules = ("majority",) if cfg.search.method == "cot" else tuple(
            r for r in RULES if r != ORACLE) + OWN_ANSWERS.get(cfg.search.method, ())
        for rec in ok:
            res.records.append((info, rec))
            res.levels[rec.id] = rec.level
            if cfg.search.method == "best_of_n":
                h = hits[cfg.policy][rec.id]
                h[0] += sum(c.correct for c in rec.candidates)
                h[1] += len(rec.candidates)
            # Without token confidences the DeepConf rules are the majority vote: no strategy
            # of their own. Records older than a rule lack it.
            confident = any(c.confidence for c in rec.candidates)
            mine = [r for r in rules if confident or r not in DEEPCONF_RULES]
            for b, preds in rec.predictions.items():
                budget = int(b)
                out = _outcome(rec, budget, costs)
                for rule in (r for r in mine if r in preds):
                    o = Outcome(float(preds[rule].correct), out.generations, out.policy_tokens,
                                out.scored_tokens, out.flops, out.prefill_tokens)
                    sums[(key, Strategy(cfg.search.method, rule, width, think), budget,
                          rec.id)].append(o)
                if ORACLE in preds:
                    o = Outcome(float(preds[ORACLE].correct), out.generations,
                                out.policy_tokens, out.scored_tokens, out.flops,
                                out.prefill_tokens)
                    label = Strategy(cfg.search.method, ORACLE, width, think).method_label
                    oracle[(key, label, budget, rec.id)].append(o)
    for (key, strat, budget, pid), os_ in sums.items():
        res.outcomes.setdefault(key, {}).setdefault(strat, {}).setdefault(budget, {})[pid] = \
            _mean(os_)
    for (key, label, budget, pid), os_ in oracle.items():
        res.oracle.setdefault(key, {}).setdefault(label, {}).setdefault(budget, {})[pid] = \
            _mean(os_)
    res.pass1 = {pol: {pid: c / t for pid, (c, t) in by.items() if t}
                 for pol, by in hits.items()}
    return res


def _outcome(rec: ProblemRecord, budget: int, costs: FlopCosts) -> Outcome:
    c = rec.compute
    info = rec.info or {}
    online = info.get("deepconf") or {}
    drawn = (info.get("adaptive_sc") or online).get("drawn")
    if drawn and online:  # online DeepConf at budget b drew its first min(drawn, b) traces,
        # stopped ones shorter than the rest: bill the share of tokens they generated
        used = min(int(drawn), budget)
        made = [cand.completion_tokens for cand in rec.candidates]
        total = sum(made)
        generations = float(used)
        scale = sum(made[:used]) / total if total else used / int(drawn)
    elif drawn:  # adaptive self-consistency at budget b drew min(drawn, b) samples
        used = min(int(drawn), budget)
        generations, scale = float(used), used / int(drawn)
    else:
        generations = float(budget)
        scale = budget / rec.n if 0 < budget < rec.n else 1.0
    flops = c.policy_flops + c.prm_flops
    if flops == 0.0:
        flops = (costs.policy_flops(c.prompt_tokens, c.completion_tokens)
                 + costs.prm_flops(c.scored_tokens))
    return Outcome(0.0, generations, scale * (c.prompt_tokens + c.completion_tokens),
                   scale * c.scored_tokens, scale * flops,
                   scale * (c.prefill_tokens + c.completion_tokens))


def _mean(os_: list[Outcome]) -> Outcome:
    k = len(os_)
    return Outcome(*(sum(getattr(o, f) for o in os_) / k for f in
                     ("correct", "generations", "policy_tokens", "scored_tokens", "flops",
                      "prefill_tokens")))

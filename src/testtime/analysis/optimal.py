"""The compute-optimal table: the best strategy per difficulty bin and budget, cross-validated.

For each (policy, PRM), binning, bin and budget, the strategies (method x selection rule) that
answered every problem at that budget compete. Following Snell et al. 2024 the choice is made
with two-fold cross-validation across problems: within every bin the problems are split in two
folds (by a seeded hash of their id, alternating, so the folds differ in size by at most one);
the strategy with the best accuracy on one fold is scored on the other, and vice versa. The
table's ``cv_accuracy`` is therefore never measured on the problems that chose the strategy.
``strategy`` is the choice made on all problems of the bin (what an adaptive solver uses) and
``in_sample_accuracy`` its (optimistic) accuracy there.

Ties: strategies whose accuracy on the choosing problems is within one standard error of the
best one's (``sqrt(a (1 - a) / n)`` of the best accuracy a over n problems, so exact ties only
when it is 0 or 1) are equal, and among them the choice goes to lower mean FLOPs, then lower
mean policy tokens, then plain majority voting over any other rule at the same cost (rules of
one run cost the same), then the label; results do not depend on dict order. So a sweep where
every strategy of a bin scores 0 picks the cheapest majority vote, never an arbitrary rule. A bin
with a single problem has no second fold: it uses the choice made on the other fold over all
bins (``fallback``). A bin with fewer than :data:`MIN_BIN_PROBLEMS` problems is marked
``few_problems``: its choice is too noisy to trust (the report and ``analyze`` can show it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from testtime.analysis.difficulty import Binning
from testtime.analysis.runs import MAJORITY_BON, Key, Outcome, Results, Strategy

TABLE_VERSION = 1
#: Bins with fewer problems are marked ``few_problems`` (too few to choose a strategy from).
MIN_BIN_PROBLEMS = 10
ByStrategy = Mapping[Strategy, Mapping[str, Outcome]]


@dataclass
class Row:
    """One cell of the compute-optimal table."""

    policy: str
    prm: str
    scheme: str
    bin: str
    budget: int
    problems: int
    strategy: Strategy
    """Chosen on all problems of the bin."""
    in_sample_accuracy: float
    cv_accuracy: float
    """Accuracy of the fold-chosen strategies on the held-out folds."""
    fold_choices: tuple[str, str]
    """Labels chosen by fold 0 and fold 1 (applied to the other fold)."""
    majority_accuracy: float | None
    """Best-of-N majority at this budget on the same problems (None if not run)."""
    cv_flops: float
    """Mean FLOPs per problem of the held-out choices."""
    fallback: bool = False
    few_problems: bool = False
    """Fewer than :data:`MIN_BIN_PROBLEMS` problems: the choice is noise more than signal."""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["strategy"] = self.strategy.to_json()
        d["label"] = self.strategy.label
        return d


@dataclass
class CvPoint:
    """The cross-validated compute-optimal curve at one budget (all bins together)."""

    budget: int
    accuracy: float
    generations: float
    policy_tokens: float
    flops: float
    chosen: dict[str, Outcome]
    """problem id -> outcome under its held-out choice."""


def fold_assignment(binning: Binning, seed: int = 0) -> dict[str, int]:
    """Problem -> fold (0/1): within each bin, alternate over a seeded hash order."""
    out: dict[str, int] = {}
    for name in binning.bins:
        ids = sorted(binning.members(name),
                     key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
        out.update({p: i % 2 for i, p in enumerate(ids)})
    return out


def pick(by_strategy: ByStrategy, ids: list[str]) -> Strategy:
    """The strategy with the best mean accuracy on ``ids``; strategies within one standard
    error of it tie, and ties go to fewer FLOPs, fewer tokens, majority voting, the label."""
    if not ids or not by_strategy:
        raise ValueError("pick needs problems and strategies")
    n = len(ids)
    acc = {s: sum(by_strategy[s][p].correct for p in ids) / n for s in by_strategy}
    best = max(acc.values())
    band = (best * (1.0 - best) / n) ** 0.5 + 1e-12

    def key(s: Strategy) -> tuple[float, float, bool, str]:
        os_ = [by_strategy[s][p] for p in ids]
        return (sum(o.flops for o in os_), sum(o.policy_tokens for o in os_),
                s.rule != "majority", s.label)

    return min((s for s in by_strategy if acc[s] >= best - band), key=key)


def eligible(results: Results, key: Key, budget: int, ids: list[str]) -> dict[Strategy,
                                                                              dict[str, Outcome]]:
    """Strategies that answered every problem in ``ids`` at ``budget``."""
    out = {}
    for s, by_budget in results.outcomes[key].items():
        got = by_budget.get(budget, {})
        if all(p in got for p in ids):
            out[s] = {p: got[p] for p in ids}
    return out


def budgets_of(results: Results, key: Key) -> list[int]:
    return sorted({b for by_b in results.outcomes[key].values() for b in by_b})


def cross_validate(
    results: Results, key: Key, binning: Binning, seed: int = 0
) -> tuple[list[Row], list[CvPoint]]:
    """The table rows of one (policy, PRM) and binning, and its compute-optimal curve."""
    universe = results.problems(key)
    folds = fold_assignment(binning, seed)
    rows: list[Row] = []
    curve: list[CvPoint] = []
    for budget in budgets_of(results, key):
        cands = eligible(results, key, budget, universe)
        if not cands:
            continue
        # Global per-fold picks, used by bins too small to hold both folds.
        fold_ids = [[p for p in universe if folds.get(p) == f] for f in (0, 1)]
        global_pick = [pick(cands, fold_ids[1 - f]) if fold_ids[1 - f] else pick(cands, universe)
                       for f in (0, 1)]
        chosen: dict[str, Outcome] = {}
        in_universe = set(universe)
        for name in binning.bins:
            ids = [p for p in binning.members(name) if p in in_universe]
            if not ids:
                continue
            parts = [[p for p in ids if folds[p] == f] for f in (0, 1)]
            fallback = not (parts[0] and parts[1])
            by_fold = [global_pick[f] if fallback else pick(cands, parts[1 - f]) for f in (0, 1)]
            held = {p: cands[by_fold[folds[p]]][p] for p in ids}
            chosen.update(held)
            best = pick(cands, ids)
            base = cands.get(MAJORITY_BON)
            rows.append(Row(
                policy=key[0], prm=key[1], scheme=binning.scheme, bin=name, budget=budget,
                problems=len(ids), strategy=best,
                in_sample_accuracy=_mean(cands[best][p].correct for p in ids),
                cv_accuracy=_mean(o.correct for o in held.values()),
                fold_choices=(by_fold[0].label, by_fold[1].label),
                majority_accuracy=None if base is None else _mean(base[p].correct for p in ids),
                cv_flops=_mean(o.flops for o in held.values()), fallback=fallback,
                few_problems=len(ids) < MIN_BIN_PROBLEMS,
            ))
        vals = list(chosen.values())
        curve.append(CvPoint(budget, _mean(o.correct for o in vals),
                             _mean(o.generations for o in vals),
                             _mean(o.policy_tokens for o in vals),
                             _mean(o.flops for o in vals), chosen))
    return rows, curve


def _mean(xs: Any) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def save_table(path: Path, rows: list[Row], binnings: Mapping[Key, list[Binning]],
               fixed: Mapping[Key, Mapping[str, dict[str, Any]]]) -> None:
    """Write the table JSON (rows, binning bounds, fixed-strategy curves for comparisons)."""
    keys = sorted({(r.policy, r.prm) for r in rows})
    data = {
        "version": TABLE_VERSION,
        "entries": [{
            "policy": k[0], "prm": k[1],
            "binnings": [b.to_json() for b in binnings.get(k, [])],
            "rows": [r.to_json() for r in rows if (r.policy, r.prm) == k],
            "fixed": {label: pts for label, pts in fixed.get(k, {}).items()},
        } for k in keys],
    }
    path.write_text(json.dumps(data, indent=1) + "\n")


def load_table(path: Path) -> dict[str, Any]:
    """Read and check a table written by ``save_table``."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the compute-optimal table: {exc}") from None
    if data.get("version") != TABLE_VERSION or "entries" not in data:
        raise ValueError(f"{path}: not a compute-optimal table (version {TABLE_VERSION})")
    return data

"""Accuracy against budget (generations, tokens, FLOPs), bootstrap intervals, the
compute-optimal frontier and the efficiency gain over majority voting.

* A curve's point at budget ``b``: mean accuracy over the common problems, a percentile
  bootstrap interval (problems resampled with replacement, ``n_boot`` times, seeded), and the
  mean compute per problem.
* ``envelope``: the best strategy at each budget measured on all problems (optimistic).
* ``cv_curve``: the cross-validated compute-optimal curve of ``optimal.cross_validate``
  (each problem answered by the strategy its other fold chose for its difficulty bin).
* Efficiency gain (Snell et al.): ``C_maj / C_opt`` where ``C_maj`` is the compute at the peak
  of the majority-voting curve (its first maximum) and ``C_opt`` the compute at which the
  compute-optimal curve first reaches that accuracy, by linear interpolation between its
  points (sorted by compute). No extrapolation: below the first point ``C_opt`` is the first
  point's compute; if the curve never reaches the peak the gain is None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

import numpy as np

from testtime.analysis.optimal import CvPoint
from testtime.analysis.runs import Key, Outcome, Results, Strategy

Axis = Literal["generations", "policy_tokens", "prefill_tokens", "flops"]
DEFAULT_BOOT = 1000
CI_LEVEL = 0.95


@dataclass
class Point:
    budget: int
    generations: float
    policy_tokens: float
    flops: float
    accuracy: float
    ci_low: float
    ci_high: float
    problems: int
    prefill_tokens: float = 0.0
    """Policy tokens an engine with prefix caching computes (billed: ``policy_tokens``)."""

    def x(self, axis: Axis) -> float:
        return float(getattr(self, axis))


@dataclass
class Curve:
    label: str
    points: list[Point]

    def to_json(self) -> dict[str, object]:
        return {"label": self.label, "points": [vars(p) for p in self.points]}


def bootstrap_ci(values: Sequence[float], n_boot: int = DEFAULT_BOOT, seed: int = 0,
                 level: float = CI_LEVEL) -> tuple[float, float]:
    """Percentile interval of the mean of ``values`` over bootstrap resamples."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def make_point(budget: int, outcomes: Sequence[Outcome], n_boot: int, seed: int) -> Point:
    k = len(outcomes) or 1
    correct = [o.correct for o in outcomes]
    lo, hi = bootstrap_ci(correct, n_boot, seed)
    return Point(budget, sum(o.generations for o in outcomes) / k,
                 sum(o.policy_tokens for o in outcomes) / k,
                 sum(o.flops for o in outcomes) / k, sum(correct) / k, lo, hi, len(outcomes),
                 sum(o.prefill_tokens for o in outcomes) / k)


def strategy_curves(results: Results, key: Key, n_boot: int = DEFAULT_BOOT,
                    seed: int = 0) -> dict[Strategy, Curve]:
    """One curve per strategy over the common problems of ``key``."""
    ids = results.problems(key)
    out = {}
    for s, by_b in sorted(results.outcomes[key].items(), key=lambda kv: kv[0].label):
        pts = [make_point(b, [by_b[b][p] for p in ids], n_boot, seed)
               for b in sorted(by_b) if all(p in by_b[b] for p in ids)]
        if pts:
            out[s] = Curve(s.label, pts)
    return out


def best_rule_curves(curves: Mapping[Strategy, Curve]) -> dict[str, Curve]:
    """Per method, the curve of its rule with the highest mean accuracy over its budgets
    (what a plot of one line per method shows)."""
    best: dict[str, tuple[float, Curve]] = {}
    for s, c in curves.items():
        score = sum(p.accuracy for p in c.points) / len(c.points)
        if s.method_label not in best or score > best[s.method_label][0]:
            best[s.method_label] = (score, c)
    return {m: c for m, (_, c) in sorted(best.items())}


def envelope(curves: Mapping[Strategy, Curve]) -> Curve:
    """At each budget the strategy with the best accuracy (ties: lower FLOPs)."""
    by_b: dict[int, Point] = {}
    for c in curves.values():
        for p in c.points:
            cur = by_b.get(p.budget)
            if cur is None or (p.accuracy, -p.flops) > (cur.accuracy, -cur.flops):
                by_b[p.budget] = p
    return Curve("best per budget (in-sample)", [by_b[b] for b in sorted(by_b)])


def cv_curve(points: Sequence[CvPoint], label: str, n_boot: int = DEFAULT_BOOT,
             seed: int = 0) -> Curve:
    """The cross-validated compute-optimal curve with bootstrap intervals."""
    return Curve(label, [make_point(cp.budget, list(cp.chosen.values()), n_boot, seed)
                         for cp in points])


@dataclass
class Gain:
    axis: str
    peak_accuracy: float
    majority_compute: float
    optimal_compute: float | None
    gain: float | None
    """``majority_compute / optimal_compute``; None when the optimal curve never gets there."""


def first_reach(points: Sequence[tuple[float, float]], target: float) -> float | None:
    """Smallest x at which the piecewise-linear curve through ``(x, accuracy)`` points (sorted
    by x) reaches ``target``; None if it never does."""
    pts = sorted(points)
    if not pts:
        return None
    if pts[0][1] >= target:
        return pts[0][0]
    for (x0, y0), (x1, y1) in pairwise(pts):
        if y1 >= target > y0:
            return x0 + (target - y0) * (x1 - x0) / (y1 - y0)
    return None


def efficiency_gain(majority: Curve, optimal: Curve, axis: Axis = "generations") -> Gain:
    """Compute saved by the compute-optimal curve at the majority curve's peak accuracy."""
    if not majority.points or not optimal.points:
        raise ValueError("efficiency gain needs non-empty majority and optimal curves")
    peak = max(majority.points, key=lambda p: (p.accuracy, -p.x(axis)))
    c_opt = first_reach([(p.x(axis), p.accuracy) for p in optimal.points], peak.accuracy)
    gain = None if c_opt is None or c_opt <= 0 else peak.x(axis) / c_opt
    return Gain(axis, peak.accuracy, peak.x(axis), c_opt, gain)

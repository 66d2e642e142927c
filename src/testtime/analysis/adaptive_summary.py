"""Summary of an adaptive run and its comparison with the best fixed strategy.

The adaptive solver's mean spend (in N-equivalent generations, pilot included) is placed on
every fixed strategy's accuracy-vs-budget curve by linear interpolation between its measured
budgets (no extrapolation); the best of them is the comparison. With ``compare`` run
directories the fixed curves are measured on exactly the adaptive run's problems; otherwise
they come from the table file (measured on the problems the table was built from).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testtime.records import ProblemRecord

if TYPE_CHECKING:
    from testtime.config import AdaptiveSettings, RunConfig

FixedCurves = Mapping[str, Sequence[tuple[int, float, float]]]
"""label -> (budget, accuracy, flops) points."""


def interpolate(points: Sequence[tuple[float, float]], x: float) -> float | None:
    """Linear interpolation of ``(x, y)`` points at ``x``; None outside their range."""
    pts = sorted(points)
    if not pts or not pts[0][0] <= x <= pts[-1][0]:
        return None
    for (x0, y0), (x1, y1) in pairwise(pts):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (x - x0) * (y1 - y0) / (x1 - x0)
    return pts[-1][1]


def best_fixed_at(fixed: FixedCurves, x: float, axis: int = 0) -> dict[str, Any] | None:
    """The fixed strategy with the best interpolated accuracy at ``x`` (axis 0: budget,
    2: FLOPs); None when no strategy's measured range covers ``x``."""
    best: dict[str, Any] | None = None
    for label, pts in sorted(fixed.items()):
        acc = interpolate([(p[axis], p[1]) for p in pts], x)
        if acc is not None and (best is None or acc > best["accuracy"]):
            best = {"strategy": label, "accuracy": acc}
    return best


def fixed_from_runs(paths: list[Path], key: tuple[str, str], ids: set[str]) -> dict[
        str, list[tuple[int, float, float]]]:
    """Fixed curves of the runs in ``paths`` for (policy, PRM) ``key`` on problems ``ids``."""
    from testtime.analysis.runs import load_results

    res = load_results(paths)
    if key not in res.outcomes:
        raise ValueError(f"the --compare runs hold no {key[0]} + {key[1]} runs")
    out: dict[str, list[tuple[int, float, float]]] = {}
    for s, by_b in res.outcomes[key].items():
        pts = []
        for b, by_pid in sorted(by_b.items()):
            if ids <= set(by_pid):
                os_ = [by_pid[p] for p in ids]
                pts.append((b, sum(o.correct for o in os_) / len(os_),
                            sum(o.flops for o in os_) / len(os_)))
        if pts:
            out[s.label] = pts
    if not out:
        raise ValueError("no --compare run covers every problem of the adaptive run")
    return out


def summarize_adaptive(records: Sequence[ProblemRecord], table_curves: FixedCurves,
                       cfg: AdaptiveSettings, run_cfg: RunConfig,
                       compare: list[Path] | None) -> dict[str, Any]:
    """Accuracy, mean spend and compute, decisions, and the fixed-strategy comparison."""
    ok = [r for r in records if r.error is None]
    k = len(records) or 1
    meta = [r.info["adaptive"] for r in ok]
    accuracy = sum(r.predictions[str(m["budget"])]["adaptive"].correct
                   for r, m in zip(ok, meta, strict=True)) / k
    spent = sum(m["spent"] for m in meta) / k
    flops = sum(r.compute.policy_flops + r.compute.prm_flops for r in records) / k
    fixed = (fixed_from_runs(compare, (run_cfg.policy, run_cfg.prm), {r.id for r in ok})
             if compare else {label: list(p) for label, p in table_curves.items()})
    out: dict[str, Any] = {
        "problems": len(records), "errors": len(records) - len(ok),
        "budget": cfg.budget, "accuracy": accuracy,
        "mean_generations": spent,
        "mean_policy_tokens": sum(r.compute.prompt_tokens + r.compute.completion_tokens
                                  for r in records) / k,
        "mean_flops": flops,
        "stopped_after_pilot": sum(m["stopped"] for m in meta) / k,
        "escalated": sum(m["escalated"] for m in meta) / k,
        "bins": dict(Counter(m["bin"] for m in meta)),
        "strategies": dict(Counter(m["strategy"] for m in meta)),
        "comparison_source": "compare runs (same problems)" if compare
        else "table (the table's problems)",
        "best_fixed_at_same_budget": best_fixed_at(fixed, spent),
        "best_fixed_at_same_flops": best_fixed_at(fixed, flops, axis=2) if flops > 0 else None,
    }
    return out


def adaptive_table(summary: Mapping[str, Any]) -> Any:
    """A rich table of the summary."""
    from testtime.tables import column, table

    t = table(f"adaptive solver, budget {summary['budget']} ({summary['problems']} problems)")
    column(t, "")
    column(t, "accuracy", numeric=True)
    column(t, "mean generations", numeric=True)
    column(t, "mean FLOPs", numeric=True)
    t.add_row("adaptive", f"{summary['accuracy']:.1%}", f"{summary['mean_generations']:.2f}",
              f"{summary['mean_flops']:.3g}")
    for name, key in (("best fixed, same budget", "best_fixed_at_same_budget"),
                      ("best fixed, same FLOPs", "best_fixed_at_same_flops")):
        b = summary[key]
        if b is not None:
            t.add_row(f"{name}: {b['strategy']}", f"{b['accuracy']:.1%}", "", "")
    return t

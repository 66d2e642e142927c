"""``testtime analyze``: everything computed from run directories, as data, JSON and tables.

For each (policy, PRM): difficulty binnings (from the policy's Best-of-N pass@1), the
cross-validated compute-optimal table per binning, accuracy curves per strategy with bootstrap
intervals, the in-sample envelope, the cross-validated compute-optimal curve per binning and
its efficiency gain over Best-of-N majority voting (in generations and in FLOPs).

Files written by ``write_analysis``: ``analysis.json`` (all of it) and ``optimal_table.json``
(the table the adaptive solver reads).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testtime.analysis.curves import (
    DEFAULT_BOOT,
    Axis,
    Curve,
    Gain,
    best_rule_curves,
    cv_curve,
    efficiency_gain,
    envelope,
    strategy_curves,
)
from testtime.analysis.difficulty import Binning, binnings_for
from testtime.analysis.optimal import Row, cross_validate, save_table
from testtime.analysis.runs import MAJORITY_BON, Key, Results, Strategy, load_results

if TYPE_CHECKING:
    from rich.table import Table

ANALYSIS_FILE = "analysis.json"
TABLE_FILE = "optimal_table.json"
GAIN_AXES: tuple[Axis, ...] = ("generations", "flops")


@dataclass
class KeyAnalysis:
    """The analysis of one (policy, PRM) pair."""

    key: Key
    problems: list[str]
    binnings: list[Binning]
    rows: list[Row]
    curves: dict[Strategy, Curve]
    per_method: dict[str, Curve]
    envelope: Curve
    optimal: dict[str, Curve]
    """binning scheme -> cross-validated compute-optimal curve."""
    gains: dict[str, list[Gain]] = field(default_factory=dict)
    """binning scheme -> gains per axis (empty without a Best-of-N majority curve)."""


@dataclass
class Analysis:
    results: Results
    keys: list[KeyAnalysis]


def analyze(paths: list[Path], n_boot: int = DEFAULT_BOOT, seed: int = 0) -> Analysis:
    """Load runs and compute every analysis (deterministic for a given ``seed``)."""
    results = load_results(paths)
    out = []
    for key in results.keys():  # noqa: SIM118 (Results.keys is a method, not a dict)
        ids = results.problems(key)
        if not ids:
            continue
        binnings = binnings_for(results.pass1.get(key[0]), ids)
        rows: list[Row] = []
        optimal: dict[str, Curve] = {}
        for b in binnings:
            r, pts = cross_validate(results, key, b, seed)
            rows += r
            if pts:
                optimal[b.scheme] = cv_curve(pts, f"compute-optimal (CV, {b.scheme} bins)",
                                             n_boot, seed)
        curves = strategy_curves(results, key, n_boot, seed)
        ka = KeyAnalysis(key, ids, binnings, rows, curves, best_rule_curves(curves),
                         envelope(curves), optimal)
        if MAJORITY_BON in curves:
            # An axis whose compute is unknown (FLOPs of fake models: all 0) has no gain.
            axes = [ax for ax in GAIN_AXES
                    if any(p.x(ax) > 0 for p in curves[MAJORITY_BON].points)]
            for scheme, c in optimal.items():
                ka.gains[scheme] = [efficiency_gain(curves[MAJORITY_BON], c, ax) for ax in axes]
        out.append(ka)
    return Analysis(results, out)


def fixed_curves(ka: KeyAnalysis) -> dict[str, dict[str, Any]]:
    """Per strategy label, its points (for the adaptive solver's comparison)."""
    return {s.label: {"strategy": s.to_json(),
                      "points": [{"budget": p.budget, "accuracy": p.accuracy, "flops": p.flops,
                                  "policy_tokens": p.policy_tokens} for p in c.points]}
            for s, c in ka.curves.items()}


def to_json(a: Analysis) -> dict[str, Any]:
    return {
        "runs": [{"path": str(r.path), "method": r.config.search.method, "n": r.config.search.n,
                  "policy": r.config.policy, "prm": r.config.prm, "seed": r.config.sampling.seed,
                  "records": r.records, "errors": r.errors} for r in a.results.runs],
        "analyses": [{
            "policy": ka.key[0], "prm": ka.key[1], "problems": len(ka.problems),
            "binnings": [{**b.to_json(), "assignment": b.assignment} for b in ka.binnings],
            "table": [r.to_json() for r in ka.rows],
            "curves": [c.to_json() for c in ka.curves.values()],
            "envelope": ka.envelope.to_json(),
            "optimal": {k: c.to_json() for k, c in ka.optimal.items()},
            "gains": {k: [asdict(g) for g in gs] for k, gs in ka.gains.items()},
        } for ka in a.keys],
    }


def write_analysis(a: Analysis, out: Path) -> list[Path]:
    """Write ``analysis.json`` and ``optimal_table.json`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / ANALYSIS_FILE).write_text(json.dumps(to_json(a), indent=1) + "\n")
    save_table(out / TABLE_FILE, [r for ka in a.keys for r in ka.rows],
               {ka.key: ka.binnings for ka in a.keys},
               {ka.key: fixed_curves(ka) for ka in a.keys})
    return [out / ANALYSIS_FILE, out / TABLE_FILE]


def preferred_scheme(ka: KeyAnalysis) -> str:
    """Snell's quantile bins when difficulty is known, else the single bin."""
    return next((s for s in ("quantile", "absolute", "all") if s in ka.optimal), "all")


def analysis_tables(a: Analysis) -> list[Table]:
    """Rich tables: the compute-optimal table (absolute bins, else all) and gains."""
    from testtime.tables import column, table

    out = []
    for ka in a.keys:
        scheme = "absolute" if any(r.scheme == "absolute" for r in ka.rows) else "all"
        t = table(f"compute-optimal strategy, {ka.key[0]} + {ka.key[1]} "
                  f"({len(ka.problems)} problems, 2-fold CV, {scheme} bins)")
        for col in ("bin", "N", "problems", "strategy", "CV acc", "in-sample", "majority"):
            column(t, col, numeric=col not in ("bin", "strategy"))
        for r in ka.rows:
            if r.scheme != scheme:
                continue
            maj = "-" if r.majority_accuracy is None else f"{r.majority_accuracy:.1%}"
            t.add_row(r.bin, str(r.budget), str(r.problems), r.strategy.label,
                      f"{r.cv_accuracy:.1%}", f"{r.in_sample_accuracy:.1%}", maj)
        out.append(t)
        if ka.gains:
            g = table("efficiency gain over Best-of-N majority voting")
            for col in ("bins", "axis", "majority peak", "at compute", "optimal reaches at",
                        "gain"):
                column(g, col, numeric=col not in ("bins", "axis"))
            for scheme_name, gains in ka.gains.items():
                for gn in gains:
                    g.add_row(scheme_name, gn.axis, f"{gn.peak_accuracy:.1%}",
                              f"{gn.majority_compute:.4g}",
                              "never" if gn.optimal_compute is None
                              else f"{gn.optimal_compute:.4g}",
                              "-" if gn.gain is None else f"{gn.gain:.2f}x")
            out.append(g)
    return out

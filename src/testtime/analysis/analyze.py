"""``testtime analyze``: everything computed from run directories, as data, JSON and tables.

For each (policy, PRM): difficulty binnings (from the policy's Best-of-N pass@1), the
cross-validated compute-optimal table per binning, accuracy curves per strategy with bootstrap
intervals, the in-sample envelope, the cross-validated compute-optimal curve per binning and
its efficiency gain over Best-of-N majority voting (in generations and in FLOPs).

Runs on several datasets (MATH-500, AIME24, ...) are analysed dataset by dataset (the
dataset is read from each run's config: :func:`testtime.analysis.paper_models.dataset_id`), so
one call takes any set of runs and sweeps. ``analysis.json`` also carries the comparison with
the paper's published numbers (:mod:`testtime.analysis.paper_compare`).

Files written by ``write_analysis``: ``analysis.json`` (all of it) and ``optimal_table.json``
(the table the adaptive solver reads; with several datasets one ``optimal_table-<dataset>.json``
each).
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
from testtime.analysis.paper_compare import compare_with_paper
from testtime.analysis.paper_models import dataset_id
from testtime.analysis.runs import (
    MAJORITY_BON,
    Key,
    Results,
    Strategy,
    find_run_dirs,
    load_results,
)

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
    dataset: str = ""
    """The runs' dataset (``paper_models.dataset_id``: ``math500``, ``aime24``, ...)."""


@dataclass
class Analysis:
    results: Results
    """Every run (with several datasets: runs and records of all, outcomes in ``by_dataset``)."""
    keys: list[KeyAnalysis]
    by_dataset: dict[str, Results] = field(default_factory=dict)
    """dataset -> its runs' results."""


def dataset_groups(paths: list[Path]) -> dict[str, list[Path]]:
    """The run directories under ``paths`` by dataset (read from each ``config.json``)."""
    groups: dict[str, list[Path]] = {}
    for run_dir in find_run_dirs(paths):
        try:
            name = json.loads((run_dir / "config.json").read_text())["dataset"]["name"]
        except (OSError, ValueError, KeyError, TypeError):
            name = ""  # load_results names the broken config
        groups.setdefault(dataset_id(str(name)), []).append(run_dir)
    return groups


def analyze(paths: list[Path], n_boot: int = DEFAULT_BOOT, seed: int = 0) -> Analysis:
    """Load runs and compute every analysis (deterministic for a given ``seed``)."""
    groups = dataset_groups(paths)
    by_dataset = {ds: load_results(dirs) for ds, dirs in groups.items()}
    keys = [ka for ds, res in by_dataset.items() for ka in _analyze_results(res, ds, n_boot, seed)]
    if len(by_dataset) == 1:
        results = next(iter(by_dataset.values()))
    else:
        results = Results(runs=[r for res in by_dataset.values() for r in res.runs],
                          records=[r for res in by_dataset.values() for r in res.records])
    return Analysis(results, keys, by_dataset)


def _analyze_results(results: Results, dataset: str, n_boot: int,
                     seed: int) -> list[KeyAnalysis]:
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
                         envelope(curves), optimal, dataset=dataset)
        if MAJORITY_BON in curves:
            # An axis whose compute is unknown (FLOPs of fake models: all 0) has no gain.
            axes = [ax for ax in GAIN_AXES
                    if any(p.x(ax) > 0 for p in curves[MAJORITY_BON].points)]
            for scheme, c in optimal.items():
                ka.gains[scheme] = [efficiency_gain(curves[MAJORITY_BON], c, ax) for ax in axes]
        out.append(ka)
    return out


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
            "dataset": ka.dataset,
            "policy": ka.key[0], "prm": ka.key[1], "problems": len(ka.problems),
            "binnings": [{**b.to_json(), "assignment": b.assignment} for b in ka.binnings],
            "table": [r.to_json() for r in ka.rows],
            "curves": [c.to_json() for c in ka.curves.values()],
            "envelope": ka.envelope.to_json(),
            "optimal": {k: c.to_json() for k, c in ka.optimal.items()},
            "gains": {k: [asdict(g) for g in gs] for k, gs in ka.gains.items()},
        } for ka in a.keys],
        "paper_comparison": compare_with_paper(a.keys, a.by_dataset).to_json(),
    }


def write_analysis(a: Analysis, out: Path) -> list[Path]:
    """Write ``analysis.json`` and ``optimal_table.json`` into ``out`` (several datasets: one
    ``optimal_table-<dataset>.json`` each, since the adaptive solver's table is per dataset)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / ANALYSIS_FILE).write_text(json.dumps(to_json(a), indent=1) + "\n")
    written = [out / ANALYSIS_FILE]
    datasets = sorted({ka.dataset for ka in a.keys})
    for ds in datasets:
        kas = [ka for ka in a.keys if ka.dataset == ds]
        path = out / (TABLE_FILE if len(datasets) == 1 else f"optimal_table-{ds}.json")
        save_table(path, [r for ka in kas for r in ka.rows], {ka.key: ka.binnings for ka in kas},
                   {ka.key: fixed_curves(ka) for ka in kas})
        written.append(path)
    if not datasets:  # nothing analysed: an empty table, as before
        save_table(out / TABLE_FILE, [], {}, {})
        written.append(out / TABLE_FILE)
    return written


def preferred_scheme(ka: KeyAnalysis) -> str:
    """Snell's quantile bins when difficulty is known, else the single bin."""
    return next((s for s in ("quantile", "absolute", "all") if s in ka.optimal), "all")


def analysis_tables(a: Analysis) -> list[Table]:
    """Rich tables: the compute-optimal table (absolute bins, else all) and gains."""
    from testtime.tables import column, table

    out = []
    for ka in a.keys:
        scheme = "absolute" if any(r.scheme == "absolute" for r in ka.rows) else "all"
        on = f"on {ka.dataset} " if len({k.dataset for k in a.keys}) > 1 else ""
        t = table(f"compute-optimal strategy, {ka.key[0]} + {ka.key[1]} {on}"
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
    return [*out, *_paper_tables(a)]


def _paper_tables(a: Analysis) -> list[Table]:
    """The cells with both a run value and a published one (``analysis.json`` has them all)."""
    from testtime.tables import column, table

    cmp = compare_with_paper(a.keys, a.by_dataset)
    cells = [c for c in cmp.cells if c.value is not None and c.paper is not None]
    if not cells or not cmp.matches_paper:
        return []
    t = table("against the paper (Liu et al. 2025): yours [95% CI] - paper; FLOPs: yours / "
              "paper; N* = not the paper's N or problem count")
    for col in ("table", "row", "column", "N", "yours", "paper", "diff"):
        column(t, col, numeric=col not in ("table", "row", "column"))
    for c in cells:
        flops = c.unit == "flops"
        n = "-" if c.n is None else f"{c.n}{'' if c.same_setting else '*'}"
        yours = f"{c.value:.3g}" if flops else f"{c.value:.1f} [{c.ci_low:.1f}, {c.ci_high:.1f}]"
        t.add_row(f"{c.table} {c.dataset}", c.row, c.column, n, yours,
                  f"{c.paper:.3g}" if flops else f"{c.paper:.1f}",
                  f"{c.ratio:.2f}x" if flops else f"{c.diff:+.1f}")
    return [t]

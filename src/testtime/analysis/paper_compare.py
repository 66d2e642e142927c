"""The paper's Tables 2-5 filled from the user's runs, each cell beside the published value.

Runs are matched to the paper by dataset, policy and PRM as read from their configs
(:mod:`testtime.analysis.paper_models`), by method and by budget N:

* **Table 5** (per policy): CoT; Best-of-N majority voting at N; compute-optimal at N = the
  best strategy (PRM x method x rule, over every PRM the policy ran with) at that budget,
  chosen by :func:`testtime.analysis.optimal.pick` on all problems (in-sample, as the paper
  reports its best setting).
* **Table 3**: the paper's small policies with compute-optimal TTS, its large models with CoT
  (a policy the paper does not list gets both rows).
* **Table 2**: Best-of-N at N under each voting rule, one column per PRM (the policy is not
  matched: the issue does not name Table 2's policy).
* **Table 4**: inference FLOPs over the benchmark (mean per problem x its size) of the
  compute-optimal setting and of CoT; a large model the user did not run is *estimated* from the
  small policy's CoT tokens (``2 N`` per token); pre-training ``6 N D``.

N is :data:`~testtime.analysis.paper_data.PAPER_N` when the run has it, else the run's largest
budget below it (else its largest); a cell says when N or the problem count differ from the
paper's (``same_setting``). Accuracy cells carry the run's 95% bootstrap interval
(``analysis/curves.py``) and ``diff`` = run - paper in points; FLOPs cells the ratio.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from testtime.analysis import paper_data as pd
from testtime.analysis.curves import Curve, Point
from testtime.analysis.optimal import eligible, pick
from testtime.analysis.paper_cell import Cell
from testtime.analysis.paper_models import (
    ModelId,
    canonical,
    policy_id,
    pretraining_flops,
    prm_id,
    size_of,
)
from testtime.analysis.runs import MAJORITY_BON, Key, Outcome, Results, Strategy

COT_STRATEGY = Strategy("cot", "majority")


class KeyView(Protocol):
    """What the comparison reads of one (policy, PRM) analysis (``analyze.KeyAnalysis``)."""

    @property
    def key(self) -> Key: ...
    @property
    def dataset(self) -> str: ...
    @property
    def problems(self) -> list[str]: ...
    @property
    def curves(self) -> Mapping[Strategy, Curve]: ...


@dataclass
class PolicyResult:
    """One policy on one dataset: its CoT, majority and compute-optimal points."""

    dataset: str
    model: ModelId
    cot: Point | None = None
    majority: Point | None = None
    optimal: Point | None = None
    optimal_label: str | None = None
    budget: int | None = None
    problems: int = 0


@dataclass
class Comparison:
    cells: list[Cell] = field(default_factory=list)
    policies: list[PolicyResult] = field(default_factory=list)

    @property
    def matches_paper(self) -> bool:
        """Some run is on a paper dataset or of a policy the paper reports."""
        models = {canonical(v.model) for v in pd.PAPER_VALUES}
        return any(r.dataset in (pd.MATH500, pd.AIME24) or r.model.label in models
                   for r in self.policies)

    def table(self, name: str, dataset: str | None = None) -> list[Cell]:
        return [c for c in self.cells if c.table == name
                and (dataset is None or c.dataset == dataset)]

    def to_json(self) -> dict[str, Any]:
        return {"paper": "Liu et al. 2025, Can 1B LLM Surpass 405B LLM?",
                "assumptions": {"paper_n": pd.PAPER_N, "table2_method": pd.TABLE2_METHOD,
                                "table2_policy": "not matched (not named by the issue)"},
                "cells": [c.to_json() for c in self.cells]}


def _budget(curve: Curve | None) -> int | None:
    if curve is None or not curve.points:
        return None
    budgets = sorted(p.budget for p in curve.points)
    under = [b for b in budgets if b <= pd.PAPER_N]
    return under[-1] if under else budgets[-1]


def _at(curve: Curve | None, budget: int | None) -> Point | None:
    if curve is None or budget is None:
        return None
    return next((p for p in curve.points if p.budget == budget), None)


def _pick_optimal(res: PolicyResult, kas: Sequence[KeyView],
                  results: Mapping[str, Results]) -> None:
    """The compute-optimal point of ``res``: :func:`optimal.pick` over every (PRM, method,
    rule) at ``res.budget``, on the problems all of them answered."""
    assert res.budget is not None
    ids = sorted(set.intersection(*(set(k.problems) for k in kas)))
    joint: dict[Strategy, tuple[KeyView, Strategy, str, Mapping[str, Outcome]]] = {}
    for k in kas:
        prm = prm_id(k.key[1]).label
        for s, outs in eligible(results[k.dataset], k.key, res.budget, ids).items():
            if s != COT_STRATEGY:  # tagged by PRM, so one pick compares across PRMs
                joint[Strategy(f"{prm}|{s.method}", s.rule, s.beam_width)] = (k, s, prm, outs)
    if not joint or not ids:
        return
    k, s, prm, _ = joint[pick({j: v[3] for j, v in joint.items()}, ids)]
    res.optimal, res.optimal_label = _at(k.curves.get(s), res.budget), f"{s.label} + {prm}"


def _policy_results(keys: Sequence[KeyView],
                    results: Mapping[str, Results]) -> list[PolicyResult]:
    groups: dict[tuple[str, str], list[KeyView]] = {}
    for ka in keys:
        groups.setdefault((ka.dataset, ka.key[0]), []).append(ka)
    out = []
    for (ds, spec), kas in sorted(groups.items()):
        res = PolicyResult(ds, policy_id(spec), problems=max(len(k.problems) for k in kas))
        res.cot = next((_at(k.curves[COT_STRATEGY], 1) for k in kas if COT_STRATEGY in k.curves),
                       None)
        maj = next((k.curves[MAJORITY_BON] for k in kas if MAJORITY_BON in k.curves), None)
        res.budget = _budget(maj) or max((b for k in kas for c in k.curves.values()
                                          if (b := _budget(c)) and b > 1), default=None)
        res.majority = _at(maj, res.budget)
        if res.budget is not None:
            _pick_optimal(res, kas, results)
        out.append(res)
    return out


def _cell(table: str, ds: str, row: str, column: str, method: str, res: PolicyResult | None,
          point: Point | None, paper: float | None, paper_n: int | None, **kw: Any) -> Cell:
    c = Cell(table, ds, row, column, method, paper=paper, paper_n=paper_n, **kw)
    if res is not None and point is not None:
        c.policy, c.problems, c.n = res.model.label, res.problems, point.budget
        c.value, c.flops = 100 * point.accuracy, point.flops
        c.ci_low, c.ci_high = 100 * point.ci_low, 100 * point.ci_high
    return c


def _paper(table: str, ds: str, model: str | None, method: str,
           prm: str | None = None) -> float | None:
    for v in pd.values(table, ds, method):
        if (model is None or canonical(v.model) == model) and (prm is None or v.prm == prm):
            return v.value
    return None


def _points(res: PolicyResult) -> dict[str, Point | None]:
    return {pd.COT: res.cot, pd.MAJORITY: res.majority, pd.OPTIMAL: res.optimal}


def _table5(cmp: Comparison, datasets: list[str]) -> None:
    cols = {pd.COT: "CoT", pd.MAJORITY: "majority", pd.OPTIMAL: "compute-optimal"}
    for ds in datasets:
        mine = {r.model.label: r for r in cmp.policies if r.dataset == ds}
        paper_rows = [canonical(m) for m in dict.fromkeys(
            v.model for v in pd.values("Table 5", ds))]
        for row in dict.fromkeys([*paper_rows, *mine]):
            res = mine.get(row)
            for m, col in cols.items():
                cell = _cell("Table 5", ds, row, col, m, res, _points(res)[m] if res else None,
                             _paper("Table 5", ds, row, m), None if m == pd.COT else pd.PAPER_N)
                if res and m == pd.OPTIMAL:
                    cell.strategy = res.optimal_label
                cmp.cells.append(cell)


def _table3(cmp: Comparison, datasets: list[str]) -> None:
    small = [canonical(v.model) for v in pd.values("Table 3", pd.MATH500, pd.OPTIMAL)]
    large = [canonical(v.model) for v in pd.values("Table 3", pd.MATH500, pd.COT)]
    for ds in datasets:
        mine = {r.model.label: r for r in cmp.policies if r.dataset == ds}
        rows = [(m, pd.OPTIMAL) for m in small] + [(m, pd.COT) for m in large]
        rows += [(m, meth) for m in mine if m not in small and m not in large
                 for meth in (pd.OPTIMAL, pd.COT)]
        for model, m in rows:
            res = mine.get(model)
            label = f"{model} + compute-optimal TTS" if m == pd.OPTIMAL else f"{model} CoT"
            cell = _cell("Table 3", ds, label, pd.DATASET_LABELS.get(ds, ds), m, res,
                         _points(res)[m] if res else None, _paper("Table 3", ds, model, m),
                         pd.PAPER_N if m == pd.OPTIMAL else None)
            if res and m == pd.OPTIMAL:
                cell.strategy = res.optimal_label
            cmp.cells.append(cell)


def _table2(cmp: Comparison, keys: Sequence[KeyView], datasets: list[str]) -> None:
    seen: set[tuple[str, str]] = set()
    for ka in sorted(keys, key=lambda k: (k.dataset, k.key)):
        prm, pol = prm_id(ka.key[1]), policy_id(ka.key[0])
        curves = {s.rule: c for s, c in ka.curves.items() if s.method == pd.TABLE2_METHOD}
        if not curves:
            continue
        seen.add((ka.dataset, prm.label))
        res = PolicyResult(ka.dataset, pol, problems=len(ka.problems))
        budget = _budget(curves.get("majority") or next(iter(curves.values())))
        for rule in pd.TABLE2_RULES:
            cmp.cells.append(_cell(
                "Table 2", ka.dataset, f"{pd.RULE_LABELS[rule]} ({pol.label})", prm.label, rule,
                res, _at(curves.get(rule), budget), _paper("Table 2", ka.dataset, None, rule,
                                                            prm.label), pd.PAPER_N,
                prm=prm.label))
    for ds in datasets:  # the paper's columns the user did not run, for the whole layout
        for prm_name in pd.TABLE2_PRMS:
            if ds == pd.MATH500 and (ds, prm_name) not in seen:
                cmp.cells += [Cell("Table 2", ds, pd.RULE_LABELS[rule], prm_name, rule,
                                   prm=prm_name, paper=_paper("Table 2", ds, None, rule, prm_name),
                                   paper_n=pd.PAPER_N) for rule in pd.TABLE2_RULES]


def _table4(cmp: Comparison) -> None:
    ds, size = pd.MATH500, pd.BENCHMARK_SIZE[pd.MATH500]
    mine = {r.model.label: r for r in cmp.policies if r.dataset == ds}
    pairs: list[tuple[str, str | None]] = [(canonical(s), canonical(lg))
                                           for s, lg in pd.TABLE4_PAIRS]
    pairs += [(m, None) for m in mine if m not in {s for s, _ in pairs}]
    for small, large in pairs:
        res = mine.get(small)
        tts = res.optimal if res else None
        rows = [(small, "tts_inference", f"{small} + TTS",
                 None if tts is None else tts.flops * size, "")]
        if large is not None:
            own = mine.get(large)
            value, note = (own.cot.flops * size, "") if own and own.cot else (None, "")
            if value is None and res and res.cot and size_of(large):
                value = 2.0 * size_of(large) * res.cot.policy_tokens * size  # type: ignore[operator]
                note = f"estimated: {large}'s 2N FLOPs per token x {small}'s CoT tokens"
            rows.append((large, "cot_inference", f"{large} CoT", value, note))
        for model, method, label, value, note in rows:
            for m, col, v in ((method, "inference FLOPs", value),
                              ("pretraining", "pre-training FLOPs", pretraining_flops(model))):
                cmp.cells.append(Cell(
                    "Table 4", ds, label, col, m, "flops", policy=model if res else None,
                    value=v, n=tts.budget if tts and m == "tts_inference" else None,
                    problems=size if m == "pretraining" else res.problems if res else 0,
                    note=note if m != "pretraining" else "6ND (testtime.model_sizes)",
                    paper=_paper("Table 4", ds, model, m)))


def compare_with_paper(keys: Sequence[KeyView], results: Mapping[str, Results]) -> Comparison:
    """Every table's cells for the analysed (policy, PRM) pairs (see the module docstring);
    ``results`` are the loaded runs by dataset (``analyze.Analysis.by_dataset``)."""
    cmp = Comparison(policies=_policy_results(keys, results))
    mine = sorted({ka.dataset for ka in keys})
    _table5(cmp, [pd.MATH500, *(d for d in mine if d != pd.MATH500)])
    _table3(cmp, [pd.MATH500, pd.AIME24, *(d for d in mine if d not in (pd.MATH500, pd.AIME24))])
    _table2(cmp, keys, [pd.MATH500])
    _table4(cmp)
    return cmp

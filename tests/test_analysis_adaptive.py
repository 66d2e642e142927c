"""The adaptive solver: its decisions on known pilots, and a run with a table built from a
sweep of the scripted fakes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from test_analysis_sweep import Factory, K, make_sweep, scorer

from testtime.analysis.adaptive import Plan, decide, merge, pilot_estimate
from testtime.analysis.adaptive_summary import best_fixed_at, interpolate
from testtime.analysis.analyze import TABLE_FILE, analyze, write_analysis
from testtime.analysis.difficulty import absolute_binning
from testtime.analysis.runs import Strategy
from testtime.config import AdaptiveSettings, DatasetConfig, RunConfig
from testtime.runner import run
from testtime.search.base import Candidate, Compute, SearchConfig, SearchResult, TreeNode
from testtime.store import RecordStore
from testtime.types import Step

BON = Strategy("best_of_n", "majority")
PRM = Strategy("best_of_n", "prm_min_max")


def plan() -> Plan:
    binning = absolute_binning({"x": 0.9, "y": 0.3, "z": 0.0})
    choices = {(b, n): (BON if b == "easy" else PRM) for b in binning.bins for n in (4, 16)}
    return Plan(binning, choices, {})


def test_pilot_estimate() -> None:
    assert pilot_estimate([0, 0, 1, None], [0.8, 0.6, 0.4, 0.2]) == (0.5, pytest.approx(0.5))
    assert pilot_estimate([None, None], [0.1, 0.3]) == (0.0, pytest.approx(0.2))


def test_decisions_stop_bin_and_escalate() -> None:
    cfg = AdaptiveSettings(table="unused.json", budget=4)
    assert decide(plan(), cfg, 1.0, 0.9) == ("easy", True, False)  # unanimous and confident
    assert decide(plan(), cfg, 0.75, 0.7) == ("easy", False, False)
    assert decide(plan(), cfg, 0.3, 0.3) == ("medium", False, False)
    # near the 0.5 boundary: uncertain -> one bin harder, escalated budget
    assert decide(plan(), cfg, 0.55, 0.6) == ("medium", False, True)
    # agreement says easy, the PRM disagrees strongly -> escalate
    assert decide(plan(), cfg, 0.75, 0.1) == ("medium", False, True)
    assert decide(plan(), cfg, 0.0, 0.0) == ("hard", False, False)


def test_plan_uses_the_largest_table_budget_not_above() -> None:
    p = plan()
    assert p.strategy("easy", 8) == (BON, 4)
    assert p.strategy("hard", 32) == (PRM, 16)
    assert p.strategy("hard", 2) == (PRM, 4)  # below the table: its smallest budget
    with pytest.raises(ValueError, match="no rows"):
        p.strategy("unknown", 4)


def test_merge_keeps_trees_and_units_apart() -> None:
    def result(tag: str, n: int) -> SearchResult:
        tree = [TreeNode(i, -1, 0, Step(f"{tag}{i}", 2), 0.5, "finished") for i in range(n)]
        cands = [Candidate([t.step], [0.5], "boxed", [t.id], origin=t.id) for t in tree]
        return SearchResult(cands, Compute(generations=n, completion_tokens=2 * n), tree, True)

    m = merge(result("a", 2), result("b", 3))
    assert [c.origin for c in m.candidates] == [0, 1, 2, 3, 4]
    assert [c.node_ids for c in m.candidates] == [[0], [1], [2], [3], [4]]
    assert [t.id for t in m.tree] == [0, 1, 2, 3, 4]
    assert m.compute.generations == 5 and m.compute.completion_tokens == 10


def test_interpolation_for_the_fixed_comparison() -> None:
    assert interpolate([(1, 0.2), (4, 0.8)], 2.0) == pytest.approx(0.4)
    assert interpolate([(1, 0.2), (4, 0.8)], 8.0) is None  # no extrapolation
    fixed = {"a": [(1, 0.5, 10.0), (4, 0.6, 40.0)], "b": [(2, 0.2, 20.0), (8, 0.9, 80.0)]}
    assert best_fixed_at(fixed, 3.0) == {"strategy": "a", "accuracy": pytest.approx(0.5667,
                                                                                    abs=1e-4)}
    assert best_fixed_at(fixed, 6.0)["strategy"] == "b"  # type: ignore[index]
    assert best_fixed_at(fixed, 60.0, axis=2)["strategy"] == "b"  # type: ignore[index]
    assert best_fixed_at(fixed, 0.5) is None


def adaptive_config(tmp_path: Path, policy: str = "fake:a", **settings: object) -> RunConfig:
    return RunConfig(dataset=DatasetConfig(name=str(tmp_path / "set.jsonl")), policy=policy,
                     prm="rule", search=SearchConfig(method="adaptive", n=4),
                     adaptive=AdaptiveSettings(table=str(tmp_path / "an" / TABLE_FILE),
                                               budget=4, **settings))  # type: ignore[arg-type]


def test_adaptive_run_against_fixed_methods(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path)
    write_analysis(analyze([sweep], n_boot=50), tmp_path / "an")
    cfg = adaptive_config(tmp_path, pilot=2, compare=(str(sweep),))
    out = tmp_path / "adaptive"
    outcome = asyncio.run(run(cfg, out, policy=Factory()("fake:a"), scorer=scorer(),
                              progress=False))
    summary = outcome.summary["adaptive"]
    recs = RecordStore(out / "results.jsonl").records
    assert len(recs) == len(K) and summary["problems"] == len(K)
    assert all(r.error is None and r.method == "adaptive" for r in recs.values())
    meta = {pid: r.info["adaptive"] for pid, r in recs.items()}
    # p0 and p6 are always right and confident: the pilot settles them
    assert meta["p0"]["stopped"] and meta["p6"]["stopped"]
    assert meta["p0"]["spent"] == 2 and recs["p0"].predictions["2"]["adaptive"].correct
    # p5 is never right: the pilot disagrees with itself and is escalated
    assert meta["p5"]["escalated"] and not meta["p5"]["stopped"]
    assert summary["accuracy"] == pytest.approx(
        sum(r.predictions[str(m["budget"])]["adaptive"].correct
            for r, m in ((recs[p], meta[p]) for p in recs)) / len(K))
    assert summary["mean_generations"] == pytest.approx(
        sum(m["spent"] for m in meta.values()) / len(K))
    assert 1 <= summary["mean_generations"] <= 4
    best = summary["best_fixed_at_same_budget"]
    assert best is not None and 0.0 <= best["accuracy"] <= 1.0
    assert summary["comparison_source"].startswith("compare runs")
    saved = json.loads((out / "summary.json").read_text())
    assert saved["adaptive"]["accuracy"] == summary["accuracy"]
    # Through the runner: the same directory is finished, so nothing is computed again, and
    # the comparison (a resume-free setting) can change without a new run.
    again = asyncio.run(run(adaptive_config(tmp_path, pilot=2), out, resume=True,
                            progress=False))
    assert again.computed == 0
    assert again.summary["adaptive"]["accuracy"] == summary["accuracy"]
    assert again.summary["adaptive"]["comparison_source"].startswith("table")
    # A changed decision setting is refused, naming the field.
    from testtime.runner import RunDirError

    with pytest.raises(RunDirError, match="adaptive.pilot"):
        asyncio.run(run(adaptive_config(tmp_path, pilot=3), out, resume=True, progress=False))


def test_table_without_the_pair_is_refused(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path)
    write_analysis(analyze([sweep], n_boot=50), tmp_path / "an")
    with pytest.raises(ValueError, match="no entry for fake:b"):
        asyncio.run(run(adaptive_config(tmp_path, policy="fake:b"), tmp_path / "ad",
                        policy=Factory()("fake:b"), scorer=scorer(), progress=False))


def test_run_strategy_optimal_is_the_adaptive_solver(tmp_path: Path) -> None:
    # `testtime run --strategy optimal` delegates to the adaptive solver with the same table
    # checks; the option combinations that make no sense are refused before anything loads.
    from typer.testing import CliRunner

    from testtime.cli import app

    sweep = make_sweep(tmp_path)
    write_analysis(analyze([sweep], n_boot=50), tmp_path / "an")
    cli = CliRunner()
    no_table = cli.invoke(app, ["run", "--strategy", "optimal", "--budget", "4"])
    assert no_table.exit_code == 2 and "--table" in no_table.output
    stray = cli.invoke(app, ["run", "--budget", "4"])
    assert stray.exit_code == 2 and "--strategy optimal" in stray.output
    # `testtime adaptive` is the same command with the strategy set: same checks, same options
    alias = cli.invoke(app, ["adaptive", "--budget", "4"])
    assert alias.exit_code == 2 and "--table" in alias.output
    wrong = cli.invoke(app, ["run", "--strategy", "optimal", "--table",
                             str(tmp_path / "an" / TABLE_FILE), "--budget", "4", "--dataset",
                             str(tmp_path / "set.jsonl"), "--policy", "fake:b", "--prm", "rule",
                             "--out", str(tmp_path / "ad")])
    # a policy spec that names no backend fails at once, as one line
    assert wrong.exit_code == 2 and "--policy" in wrong.output
    assert len(wrong.output.strip().splitlines()) == 1


@pytest.mark.parametrize("concurrency", [1, 7])
def test_the_cap_keeps_the_mean_spend_within_the_budget(tmp_path: Path,
                                                        concurrency: int) -> None:
    from test_analysis_sweep import grid_for, write_problems

    from testtime.analysis.sweep import run_sweep

    data = write_problems(tmp_path / "set.jsonl")  # a table with budgets up to 16
    asyncio.run(run_sweep(grid_for(data, ns=(2, 4, 16)), tmp_path / "sweep",
                          policy_factory=Factory(), scorer_factory=scorer, progress=False))
    write_analysis(analyze([tmp_path / "sweep"], n_boot=50), tmp_path / "an")

    def spend(cap: bool, out: str, conc: int = concurrency) -> dict[str, dict[str, object]]:
        cfg = adaptive_config(tmp_path, pilot=2, escalation=4, cap=cap)
        cfg = cfg.model_copy(update={"max_concurrent_problems": conc})
        asyncio.run(run(cfg, tmp_path / out, policy=Factory()("fake:a"), scorer=scorer(),
                        progress=False))
        recs = RecordStore(tmp_path / out / "results.jsonl").records
        return {p: recs[p].info["adaptive"] for p in sorted(recs)}

    free = spend(False, f"free{concurrency}")
    capped = spend(True, f"capped{concurrency}")
    budget = 4
    mean_free = sum(m["spent"] for m in free.values()) / len(free)  # type: ignore[misc]
    assert mean_free > budget  # escalation x4 overshoots without the cap
    # With it, every prefix of the problems (in dataset order) stays within k * B ...
    total = 0
    for k, m in enumerate(capped.values(), 1):
        total += m["spent"]  # type: ignore[operator]
        assert total <= k * budget
        assert m["spent"] <= m["allowance"]  # type: ignore[operator]
    # ... escalations still happen when earlier stops paid for them ...
    assert any(m["escalated"] for m in capped.values())
    # ... and the decisions do not depend on how many problems run at once.
    assert capped == spend(True, f"serial{concurrency}", conc=1)


def test_a_strategy_measured_with_a_thinking_budget_runs_with_it() -> None:
    """A table row measured with ``--think-budget`` T is run with T (not the run's own
    setting), and as a run of its own rather than an extension of the unbudgeted pilot."""
    from test_analysis_sweep import r1_script

    from testtime.analysis.adaptive import solve
    from testtime.grading.verify import default_grader
    from testtime.prompts.base import PromptTemplate
    from testtime.search.base import SamplingConfig, SearchContext
    from testtime.testing import RuleScorer, ScriptedPolicy
    from testtime.types import Problem

    binning = absolute_binning({"x": 0.9, "y": 0.3, "z": 0.0})
    short = Strategy("best_of_n", "majority", None, 4)
    table = Plan(binning, {(b, 4): short for b in binning.bins}, {})
    pol = ScriptedPolicy(r1_script)
    ctx = SearchContext(pol, RuleScorer(lambda *a: 0.1), PromptTemplate("plain"),
                        SearchConfig(method="adaptive", n=4), SamplingConfig(),
                        grader=default_grader())
    cfg = AdaptiveSettings(table="unused.json", budget=4, pilot=2)
    r = asyncio.run(solve(Problem("p", "Q1: what is 1 + 1?", "2"), ctx, plan=table, cfg=cfg))
    info = r.info["adaptive"]
    assert not info["stopped"] and info["strategy"] == "best_of_n_t4/majority"
    pilot = [c for c in pol.calls if c.params.max_tokens != 4 and "</think>" not in c.prefix]
    budgeted = [c for c in pol.calls if c.params.max_tokens == 4]
    assert pilot and budgeted  # the pilot thought freely, the table's strategy within 4
    assert all(c.params.stop == ("</think>",) for c in budgeted)
    assert len(r.candidates) == 4  # its own 4 samples, not merged with the pilot's 2
    assert all(c.text.endswith("\\boxed{8}") for c in r.candidates)  # cut before "checked"

"""``testtime sweep`` end to end on the scripted fakes, and ``analyze``/``report`` on its output.

The fake policy answers problem ``i`` correctly on ``K[i]`` of every 4 consecutive samples, so
the policy's pass@1 (and with it every difficulty bin) is known exactly.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from testtime.analysis.runs import load_results
from testtime.analysis.sweep import SweepGrid, plan, run_sweep
from testtime.config import DatasetConfig, RunConfig
from testtime.store import RecordStore
from testtime.testing import RuleScorer, ScriptedPolicy, keyword_rule

#: correct samples out of every 4, per problem
K = (4, 3, 2, 1, 1, 0, 4, 2)


def write_problems(path: Path) -> Path:
    path.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"Q{i}: what is {i} + 1?",
                                        "answer": str(i + 1)}) + "\n" for i in range(len(K))))
    return path


def script(problem: str, prefix: str, j: int, params: object) -> str:
    if not problem.startswith("Q"):  # a judge's question about a step
        return "Yes" if "Sure" in problem else "No"
    i = int(problem.split(":")[0].removeprefix("Q"))
    if (j + i) % 4 < K[i]:
        return f"Sure, add one.\n\nSo \\boxed{{{i + 1}}}"
    return f"Maybe add seven.\n\nSo \\boxed{{{i + 7 + j % 2}}}"


def scorer(_: str = "rule") -> RuleScorer:
    return RuleScorer(keyword_rule({"Sure": 0.9, "Maybe": 0.2}))


class Factory:
    """Builds scripted policies and counts how often a policy was built."""

    def __init__(self) -> None:
        self.built: Counter[str] = Counter()

    def __call__(self, spec: str) -> ScriptedPolicy:
        self.built[spec] += 1
        return ScriptedPolicy(script, name=spec)


def grid_for(data: Path, methods: tuple[str, ...] = ("best_of_n", "cot"),
             ns: tuple[int, ...] = (2, 4)) -> SweepGrid:
    return SweepGrid(base=RunConfig(dataset=DatasetConfig(name=str(data))), methods=methods,
                     ns=ns, prms=("rule",), policies=("fake:a",), seeds=(0,))


def make_sweep(root: Path) -> Path:
    """A finished sweep (Best-of-N at N in {2, 4} and CoT) under ``root/sweep``."""
    data = write_problems(root / "set.jsonl")
    out = root / "sweep"
    asyncio.run(run_sweep(grid_for(data), out, policy_factory=Factory(),
                          scorer_factory=scorer, progress=False))
    return out


@pytest.fixture
def with_copy_method(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register a non-prefix method (Best-of-N under another name) for the test."""
    from testtime import search

    monkeypatch.setitem(search.METHODS, "bon_copy", "testtime.search.best_of_n:best_of_n")


def test_plan_runs_largest_prefix_n_only(with_copy_method: None, tmp_path: Path) -> None:
    data = write_problems(tmp_path / "set.jsonl")
    cells = plan(grid_for(data, ("best_of_n", "bon_copy", "cot"), (4, 2, 3)))
    runs = sorted(c.run_dir for c in cells if not c.derived)
    assert runs == ["best_of_n-n3-fake_a-rule-seed0", "best_of_n-n4-fake_a-rule-seed0",
                    "bon_copy-n2-fake_a-rule-seed0", "bon_copy-n3-fake_a-rule-seed0",
                    "bon_copy-n4-fake_a-rule-seed0", "cot-n1-fake_a-rule-seed0"]
    [derived] = [c for c in cells if c.derived]  # N=3 is no power of two: it runs by itself
    assert (derived.n, derived.budget, derived.run_dir) == (2, 2, "best_of_n-n4-fake_a-rule-seed0")


def test_unknown_method_is_named() -> None:
    with pytest.raises(ValueError, match="nope"):
        SweepGrid(methods=("nope",))


def test_sweep_runs_resumes_and_skips(with_copy_method: None, tmp_path: Path) -> None:
    data = write_problems(tmp_path / "set.jsonl")
    grid = grid_for(data, ("best_of_n", "bon_copy", "cot"))
    out = tmp_path / "sweep"
    factory = Factory()
    cells = asyncio.run(run_sweep(grid, out, policy_factory=factory, scorer_factory=scorer,
                                  progress=False))
    assert factory.built == {"fake:a": 1}  # one policy shared by every cell
    dirs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert dirs == ["best_of_n-n4-fake_a-rule-seed0", "bon_copy-n2-fake_a-rule-seed0",
                    "bon_copy-n4-fake_a-rule-seed0", "cot-n1-fake_a-rule-seed0"]
    for d in dirs:  # each a normal run directory
        cfg = RunConfig.model_validate_json((out / d / "config.json").read_text())
        assert cfg.policy == "fake:a" and cfg.prm == "rule"
        assert len(RecordStore(out / d / "results.jsonl").done_ids()) == len(K)
    bon = RecordStore(out / dirs[0] / "results.jsonl").records["p0"]
    assert set(bon.predictions) == {"1", "2", "4"}  # the derived N=2 cell reads budget "2"
    manifest = json.loads((out / "sweep.json").read_text())
    derived = [c for c in manifest["cells"] if c["derived"]]
    assert derived == [{"method": "best_of_n", "n": 2, "policy": "fake:a", "prm": "rule",
                        "seed": 0, "run_dir": dirs[0], "budget": 2, "derived": True,
                        "status": "derived: done", "think_budget": None}]
    assert all(c.status in ("done", "derived: done") for c in cells)

    # A finished sweep is skipped cell by cell without building a model.
    again = Factory()
    cells = asyncio.run(run_sweep(grid, out, policy_factory=again, scorer_factory=scorer,
                                  progress=False))
    assert not again.built
    assert {c.status for c in cells if not c.derived} == {"done (skipped)"}

    # An interrupted cell resumes: only its missing problems are computed.
    results = out / "bon_copy-n4-fake_a-rule-seed0" / "results.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    results.write_text("".join(lines[:3]) + lines[3][:20])  # 3 done, one torn line
    resumed = Factory()
    cells = asyncio.run(run_sweep(grid, out, policy_factory=resumed, scorer_factory=scorer,
                                  progress=False))
    assert resumed.built == {"fake:a": 1}
    status = {c.run_dir: c.status for c in cells if not c.derived}
    assert status["bon_copy-n4-fake_a-rule-seed0"] == "done"
    assert status["cot-n1-fake_a-rule-seed0"] == "done (skipped)"
    assert len(results.read_text().splitlines()) == len(K)


def test_analysis_of_the_sweep(tmp_path: Path) -> None:
    out = make_sweep(tmp_path)
    res = load_results([out])
    assert len(res.runs) == 2  # the derived cell adds no second copy of the Best-of-N run
    assert res.pass1["fake:a"] == {f"p{i}": k / 4 for i, k in enumerate(K)}
    from testtime.analysis.analyze import analyze

    a = analyze([out], n_boot=100)
    [ka] = a.keys
    absolute = {r.bin: r for r in ka.rows if r.scheme == "absolute" and r.budget == 4}
    assert {b: r.problems for b, r in absolute.items()} == {"easy": 5, "medium": 2, "hard": 1}
    # medium problems have one right sample in four: majority fails, the PRM finds it
    assert absolute["medium"].majority_accuracy == 0.0
    assert absolute["medium"].strategy.rule.startswith("prm_")
    assert absolute["medium"].in_sample_accuracy == 1.0
    assert absolute["hard"].cv_accuracy == 0.0  # no sample is ever right
    budgets = sorted({r.budget for r in ka.rows})
    assert budgets == [1, 2, 4]
    assert "cot" in {s.method for s in ka.curves}


def test_analyze_and_report_commands(tmp_path: Path) -> None:
    from testtime.cli import app

    out = make_sweep(tmp_path)
    r = CliRunner().invoke(app, ["analyze", str(out), "--out", str(tmp_path / "an"),
                                 "--boot", "100"])
    assert r.exit_code == 0, r.output
    table = json.loads((tmp_path / "an" / "optimal_table.json").read_text())
    [entry] = table["entries"]
    assert {b["scheme"] for b in entry["binnings"]} == {"all", "absolute", "quantile"}
    assert "best_of_n/majority" in entry["fixed"]
    r = CliRunner().invoke(app, ["report", str(out), "--out", str(tmp_path / "rep"),
                                 "--boot", "100", "--trees", "2"])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "rep" / "index.html").read_text()
    # generations, billed and prefix-cached tokens, bins (no FLOPs plot for fakes)
    assert page.count('<img src="data:image/png;base64,') == 4
    assert 'class="optimal"' in page and 'class="search-tree"' in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    bad = CliRunner().invoke(app, ["analyze", str(tmp_path / "nothing")])
    assert bad.exit_code == 2 and "not a run directory" in bad.output


def test_sweep_builds_judge_and_oracle_scorers_as_run_does(tmp_path: Path) -> None:
    # Built by compose.build_run: the judge scores with the cell's policy and the oracle gets
    # the problems' references (a sweep used to raise for one and leave the other blind).
    data = write_problems(tmp_path / "set.jsonl")
    grid = SweepGrid(base=RunConfig(dataset=DatasetConfig(name=str(data), limit=3)),
                     methods=("best_of_n",), ns=(2,), prms=("oracle", "judge"),
                     policies=("fake:a",), seeds=(0,))
    out = tmp_path / "sweep"
    cells = asyncio.run(run_sweep(grid, out, policy_factory=Factory(), progress=False))
    assert {c.status for c in cells} == {"done"}
    oracle = RecordStore(out / "best_of_n-n2-fake_a-oracle-seed0" / "results.jsonl").records
    for rec in oracle.values():
        assert rec.error is None and rec.scorer == "oracle"
        for c in rec.candidates:  # 1.0 exactly where the answer is right
            assert {s.score for s in c.steps} == {1.0 if c.correct else 0.0}
    judge = RecordStore(out / "best_of_n-n2-fake_a-judge-seed0" / "results.jsonl").records
    assert all(r.error is None and r.compute.scored_tokens > 0 for r in judge.values())


def r1_script(problem: str, prefix: str, j: int, params: object) -> str:
    """An R1-style trace: a thought whose last word is what makes the answer right."""
    i = int(problem.split(":")[0].removeprefix("Q"))
    if "</think>" in prefix:  # the answer phase after a forced end of the thought
        answer = i + 1 if "checked" in prefix else i + 7
        return f"\n\nSo \\boxed{{{answer}}}"
    return "<think>\n" + "hmm " * 12 + "checked</think>\n\n" + f"So \\boxed{{{i + 1}}}"


def test_thinking_budgets_are_a_grid_axis_and_strategies(tmp_path: Path) -> None:
    """``think_budgets`` makes one cell per budget (``-t<T>``); the analyses pool neither
    budget with the other but tell them apart as strategies, and the table keeps the budget."""
    from testtime.analysis.analyze import analyze
    from testtime.analysis.runs import Strategy

    data = write_problems(tmp_path / "set.jsonl")
    grid = SweepGrid(base=RunConfig(dataset=DatasetConfig(name=str(data), limit=3)),
                     methods=("best_of_n",), ns=(2,), prms=("rule",), policies=("fake:r1",),
                     seeds=(0,), think_budgets=(4, 1000))
    cells = plan(grid)
    assert [c.run_dir for c in cells] == [
        "best_of_n-n2-t4-fake_r1-rule-seed0", "best_of_n-n2-t1000-fake_r1-rule-seed0"]
    assert [c.config.search.think_budget for c in cells] == [4, 1000]
    out = tmp_path / "sweep"
    asyncio.run(run_sweep(grid, out, policy_factory=lambda s: ScriptedPolicy(r1_script, name=s),
                          scorer_factory=scorer, progress=False))
    manifest = json.loads((out / "sweep.json").read_text())
    assert [c["think_budget"] for c in manifest["cells"]] == [4, 1000]
    res = load_results([out])
    [key] = res.outcomes
    short, full = (res.outcomes[key][Strategy("best_of_n", "majority", None, t)][2]
                   for t in (4, 1000))
    assert {o.correct for o in short.values()} == {0.0}  # cut before "checked"
    assert {o.correct for o in full.values()} == {1.0}
    assert all(short[p].policy_tokens < full[p].policy_tokens for p in short)
    [ka] = analyze([out], n_boot=50).keys
    chosen = {r.strategy for r in ka.rows if r.scheme == "all" and r.budget == 2}
    assert chosen == {Strategy("best_of_n", "majority", None, 1000)}
    assert Strategy("best_of_n", "majority", None, 1000).label == "best_of_n_t1000/majority"
    s = Strategy("beam_search", "prm_min_max", 4, 512)
    assert Strategy.from_json(s.to_json()) == s
    assert Strategy.from_json({"method": "dvts", "rule": "majority", "beam_width": 4}) == \
        Strategy("dvts", "majority", 4)  # tables written before the field
    with pytest.raises(ValueError, match="think_budgets"):
        SweepGrid(think_budgets=(0,))


def test_sweep_and_run_name_the_embedded_model_alike(tmp_path: Path) -> None:
    """``sweep --policies default`` records the policy as ``run --policy default`` does
    (``BACKEND:default``), so analyze keys a sweep and a run of the embedded model as one
    (policy, PRM) pair: one table entry, not two."""
    from testtime.cli import app
    from testtime.policy.registry import default_backend

    data = write_problems(tmp_path / "set.jsonl")
    common = ["--dataset", str(data), "--limit", "1", "--prm", "self-certainty",
              "--max-path-tokens", "8", "--no-progress"]
    r = CliRunner().invoke(app, ["run", "--policy", "default", "--method", "best_of_n", "--n",
                                 "2", *common, "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    sweep_opts = [x.replace("--prm", "--prms") for x in common]
    r = CliRunner().invoke(app, ["sweep", "--policies", "default", "--methods", "cot", "--ns",
                                 "1", *sweep_opts, "--out", str(tmp_path / "sweep")])
    assert r.exit_code == 0, r.output
    res = load_results([tmp_path / "run", tmp_path / "sweep"])
    assert list(res.outcomes) == [(f"{default_backend()}:default", "self-certainty")]

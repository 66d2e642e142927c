"""``analyze`` pools runs of one strategy as seeds only when nothing else that shapes results
differs; readers of a run in progress get a clear "run in progress", never a modified file."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from testtime.analysis.comparable import IncomparableRuns, check_comparable
from testtime.analysis.runs import load_results
from testtime.cli import app
from testtime.config import DatasetConfig, RunConfig
from testtime.runner import run
from testtime.search.base import SamplingConfig, SearchConfig
from testtime.testing import RuleScorer, ScriptedPolicy

SRC = Path(__file__).resolve().parents[1] / "src"


def scripted_run(tmp_path: Path, name: str, cfg: RunConfig) -> Path:
    out = tmp_path / name
    asyncio.run(run(cfg, out, progress=False,
                    policy=ScriptedPolicy(lambda p, prefix, i, params: f"So \\boxed{{{i % 2}}}"),
                    scorer=RuleScorer(lambda *a: 0.5)))
    return out


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "a" / "set.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"{i}?", "answer": "1"}) + "\n"
                            for i in range(3)))
    return path


def base(data: Path) -> RunConfig:
    return RunConfig(dataset=DatasetConfig(name=str(data)), policy="scripted", prm="rule",
                     search=SearchConfig(n=4))


def test_seeds_data_paths_and_budgets_may_differ(tmp_path: Path, data: Path) -> None:
    moved = tmp_path / "b" / "set.jsonl"  # the same file elsewhere
    moved.parent.mkdir()
    moved.write_bytes(data.read_bytes())
    cfg = base(data)
    a = scripted_run(tmp_path, "s0", cfg)
    b = scripted_run(tmp_path, "s1", cfg.model_copy(update={
        "dataset": DatasetConfig(name=str(moved)), "sampling": replace(cfg.sampling, seed=1),
        "search": SearchConfig(n=8), "max_concurrent_problems": 2}))
    res = load_results([a, b])
    assert len(res.runs) == 2


@pytest.mark.parametrize(("change", "field"), [
    ({"sampling": SamplingConfig(temperature=0.9)}, "sampling.temperature"),
    ({"search": SearchConfig(n=4, semantics="sal")}, "search.semantics"),
    ({"dataset": DatasetConfig(name="demo")}, "dataset.name"),
    ({"prompt": "qwen"}, "prompt"),
])
def test_runs_differing_in_what_shapes_results_are_not_pooled(
    tmp_path: Path, data: Path, change: dict[str, object], field: str
) -> None:
    cfg = base(data)
    with pytest.raises(IncomparableRuns, match=rf"differ in {field} \("):
        check_comparable([("run_a", cfg), ("run_b", cfg.model_copy(update=change))])


def test_analyze_names_the_runs_and_fields(tmp_path: Path, data: Path) -> None:
    cfg = base(data)
    a = scripted_run(tmp_path, "t07", cfg)
    b = scripted_run(tmp_path, "t09", cfg.model_copy(
        update={"sampling": replace(cfg.sampling, temperature=0.9)}))
    r = CliRunner().invoke(app, ["analyze", str(a), str(b), "--out", str(tmp_path / "an")])
    assert r.exit_code == 2, r.output
    line = " ".join(r.output.split())
    assert f"{a} and {b}" in line and "sampling.temperature (0.7 vs 0.9)" in line
    # different methods are different strategies, not seeds: they merge fine
    c = scripted_run(tmp_path, "maj", cfg.model_copy(update={"search": SearchConfig(
        method="cot", n=1)}))
    assert len(load_results([a, c]).runs) == 2


HOLD = """
import sys, time
from pathlib import Path
from testtime.store import RunLock
with RunLock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_readers_of_a_run_in_progress_say_so(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)],
                              env={"PYTHONPATH": str(SRC)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        r = CliRunner().invoke(app, ["summary", str(run_dir)])
        assert r.exit_code == 2
        assert "run in progress" in r.output and f"pid {holder.pid}" in r.output
        with pytest.raises(FileNotFoundError, match="run in progress"):
            load_results([run_dir])
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]
    finally:
        holder.kill()
        holder.wait()

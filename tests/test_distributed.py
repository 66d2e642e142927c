"""Distributed runs on a local Ray cluster started by the tests (2 CPUs, fake policy).

The actors build their engines from the factories below. Ray ships them by value
(``register_pickle_by_value``), so the workers need not import this test module.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from testtime.cli import app
from testtime.cli.common import RAY_LOCAL
from testtime.cli.execution import fill_ray_flag
from testtime.config import DatasetConfig, RunConfig
from testtime.distributed import ExecutorError, RayExecutor, RayOptions
from testtime.records import ProblemRecord
from testtime.retry import RetryPolicy
from testtime.runner import run
from testtime.search.base import SearchConfig
from testtime.store import RecordStore
from testtime.testing import RuleScorer, ScriptedPolicy, keyword_rule
from testtime.types import Completion

REPO = Path(__file__).resolve().parents[1]
#: Fast retries: the tests wait for lost actors, not for backoff.
FAST_RETRY = RetryPolicy(max_retries=2, base_delay_s=0.05, max_delay_s=0.2)
#: Per-row delay of the fake policy, so that a run lasts long enough to kill an actor in it.
ROW_DELAY_S = 0.03


def solutions(problem: str, prefix: str, i: int, params: Any) -> str:
    """Two right answers, one wrong, one without an answer; a process-killer for 'poison'."""
    if "poison" in problem:
        os._exit(1)  # the actor's process dies, as on a node failure or a segfault
    time.sleep(ROW_DELAY_S)
    return ["We add.\n\nThat gives 3.\n\nSo \\boxed{3}.", "Quick: \\boxed{3}",
            "Hmm wrong.\n\n\\boxed{4}", "I give up."][i % 4]


def make_policy(config: RunConfig) -> ScriptedPolicy:
    return ScriptedPolicy(solutions)


def make_scorer(config: RunConfig, policy: Any) -> RuleScorer:
    return RuleScorer(keyword_rule({"wrong": 0.1, "3": 0.9}, default=0.5))


def broken_scorer(config: RunConfig, policy: Any) -> RuleScorer:
    raise ValueError("PRM checkpoint /nowhere/prm is not a directory")


class FlakyPolicy(ScriptedPolicy):
    """Fails each problem marked 'flaky' on the first request an actor gets for it (a 503),
    and every request for problems marked 'broken'."""

    def __init__(self) -> None:
        super().__init__(solutions)
        self.failed: set[str] = set()

    async def generate(self, requests: Any) -> list[list[Completion]]:
        for r in requests:
            text = r.messages[-1].content
            if "broken" in text:
                raise RuntimeError("HTTP 503 from the policy server")
            if "flaky" in text and text not in self.failed:
                self.failed.add(text)
                raise TimeoutError("policy request timed out")
        return await super().generate(requests)


def make_flaky_policy(config: RunConfig) -> FlakyPolicy:
    return FlakyPolicy()


def write_set(path: Path, names: list[str]) -> Path:
    path.write_text("".join(
        json.dumps({"id": name, "problem": f"What is 1 + 2? ({name})", "answer": "3"}) + "\n"
        for name in names))
    return path


def config(data: Path, concurrency: int = 4) -> RunConfig:
    # "scripted" names no known model, so FLOPs are 0 whether they come from the loaded
    # policy (local run) or from the spec (driver of a distributed run)
    return RunConfig(dataset=DatasetConfig(name=str(data)), policy="scripted",
                     search=SearchConfig(n=4), prm="rule", max_concurrent_problems=concurrency)


def content(record: ProblemRecord) -> dict[str, Any]:
    """A record without what legitimately differs between runs."""
    return record.model_dump(exclude={"wall_time_s"})


def result_lines(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """One local Ray for the session (starting Ray takes seconds)."""
    ray = pytest.importorskip("ray")
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The reference: the same problems searched in this process."""
    tmp = tmp_path_factory.mktemp("local")
    data = write_set(tmp / "set.jsonl", [f"p{i:02d}" for i in range(12)])
    cfg = config(data)
    policy = make_policy(cfg)
    asyncio.run(run(cfg, tmp / "run", policy=policy, scorer=make_scorer(cfg, policy),
                    progress=False))
    return data, {r.id: content(r) for r in RecordStore(tmp / "run" / "results.jsonl")}


def test_distributed_run_writes_the_same_records_as_a_local_run(
    ray_cluster: Any, local_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    data, expected = local_run
    cfg = config(data)

    async def main() -> tuple[Any, RayExecutor]:
        async with RayExecutor(cfg, RayOptions(actors=2), policy_factory=make_policy,
                               scorer_factory=make_scorer) as ex:
            out = await run(cfg, tmp_path / "run", progress=False, executor=ex,
                            retry=FAST_RETRY)
            return out, ex

    out, ex = asyncio.run(main())
    assert out.computed == 12 and out.summary["errors"] == 0
    got = {r.id: content(r) for r in RecordStore(tmp_path / "run" / "results.jsonl")}
    assert sorted(got) == sorted(expected)
    for pid in expected:
        assert [c["text"] for c in got[pid]["candidates"]] == \
            [c["text"] for c in expected[pid]["candidates"]]
        assert got[pid]["predictions"] == expected[pid]["predictions"]
        assert got[pid] == expected[pid]
    # both actors did work (least-busy dispatch), nothing was lost
    assert ex.stats.actors_ready == 2 and ex.stats.units_sent == 12
    assert ex.stats.units_lost == 0
    assert len({s.info["pid"] for s in ex.slots}) == 2


def test_killing_an_actor_mid_run_loses_only_its_units(
    ray_cluster: Any, local_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    data, expected = local_run
    cfg = config(data)
    run_dir = tmp_path / "run"
    killed: list[str] = []

    async def kill_one_busy_actor(ex: RayExecutor) -> None:
        results = run_dir / "results.jsonl"
        while True:  # after two records, kill an actor that holds units
            done = len(results.read_text().splitlines()) if results.exists() else 0
            busy = [s for s in ex.live_actors() if s.in_flight > 0]
            if done >= 2 and busy:
                ray_cluster.kill(busy[0].handle)
                killed.append(busy[0].name)
                return
            await asyncio.sleep(0.01)

    async def main() -> tuple[Any, RayExecutor]:
        async with RayExecutor(cfg, RayOptions(actors=2), policy_factory=make_policy,
                               scorer_factory=make_scorer) as ex:
            await ex.start()
            out, _ = await asyncio.gather(
                run(cfg, run_dir, progress=False, executor=ex, retry=FAST_RETRY),
                kill_one_busy_actor(ex))
            return out, ex

    out, ex = asyncio.run(main())
    assert killed and ex.stats.actors_lost == 1 and ex.stats.units_lost >= 1
    assert out.summary["completed"] == 12 and out.summary["errors"] == 0
    ids = [line["id"] for line in result_lines(run_dir)]
    assert sorted(ids) == sorted(expected) and len(ids) == len(set(ids)) == 12
    got = {r.id: content(r) for r in RecordStore(run_dir / "results.jsonl")}
    retried = {pid for pid, r in got.items() if r["attempts"] > 1}
    assert len(retried) == ex.stats.units_lost
    for pid, record in got.items():
        record["attempts"] = 1  # the lost units took a second attempt; all else is equal
        assert record == expected[pid]


def test_a_problem_that_keeps_killing_its_actor_is_recorded_and_the_run_goes_on(
    ray_cluster: Any, tmp_path: Path
) -> None:
    # concurrency 2 over 2 actors: one unit per actor, so the poison takes nobody with it
    data = write_set(tmp_path / "set.jsonl", ["a", "poison", "b", "c"])
    cfg = config(data, concurrency=2)
    retry = RetryPolicy(max_retries=1, base_delay_s=0.05)

    async def main() -> tuple[Any, RayExecutor]:
        async with RayExecutor(cfg, RayOptions(actors=2), policy_factory=make_policy,
                               scorer_factory=make_scorer) as ex:
            return await run(cfg, tmp_path / "run", progress=False, executor=ex,
                             retry=retry), ex

    out, ex = asyncio.run(main())
    assert out.summary["completed"] == 3 and out.summary["errors"] == 1
    records = RecordStore(tmp_path / "run" / "results.jsonl").records
    poison = records["poison"]
    assert poison.attempts == 2 and poison.error is not None
    assert poison.error.startswith("ActorLostError: worker-")
    assert "lost holding problem poison" in poison.error and "after 2 attempts" in poison.error
    assert all(records[k].error is None and records[k].attempts == 1 for k in "abc")
    assert ex.stats.actors_lost == 2 and ex.stats.replacements == 2
    assert len(result_lines(tmp_path / "run")) == 4


def test_search_errors_in_actors_are_retried_then_recorded(
    ray_cluster: Any, tmp_path: Path
) -> None:
    data = write_set(tmp_path / "set.jsonl", ["ok", "flaky", "broken"])
    cfg = config(data)

    async def main() -> Any:
        async with RayExecutor(cfg, RayOptions(actors=2), policy_factory=make_flaky_policy,
                               scorer_factory=make_scorer) as ex:
            return await run(cfg, tmp_path / "run", progress=False, executor=ex,
                             retry=FAST_RETRY)

    out = asyncio.run(main())
    assert out.summary["completed"] == 2 and out.summary["errors"] == 1
    records = RecordStore(tmp_path / "run" / "results.jsonl").records
    assert records["ok"].attempts == 1
    # the first request on each actor times out: 2 or 3 attempts, then a normal record
    assert records["flaky"].error is None and records["flaky"].attempts in (2, 3)
    # the original exception type survives the trip through Ray
    assert records["broken"].error == \
        "RuntimeError: HTTP 503 from the policy server (after 3 attempts)"
    assert records["broken"].attempts == 3


def test_actors_that_cannot_load_their_models_fail_the_start_clearly(
    ray_cluster: Any, tmp_path: Path
) -> None:
    data = write_set(tmp_path / "set.jsonl", ["a"])
    cfg = config(data)

    async def main() -> None:
        async with RayExecutor(cfg, RayOptions(actors=2), policy_factory=make_policy,
                               scorer_factory=broken_scorer) as ex:
            await run(cfg, tmp_path / "run", progress=False, executor=ex)

    with pytest.raises(ExecutorError, match=r"no Ray actor could start \(2 failed\).*"
                                            r"PRM checkpoint /nowhere/prm is not a directory"):
        asyncio.run(main())
    assert not (tmp_path / "run" / "results.jsonl").exists()


def test_without_ray_nothing_imports_ray(tmp_path: Path) -> None:
    data = write_set(tmp_path / "set.jsonl", ["a", "b"])
    code = f"""
import asyncio, sys
import testtime.cli, testtime.distributed, testtime.runner
from testtime.config import DatasetConfig, RunConfig
from testtime.search.base import SearchConfig
from testtime.testing import RuleScorer, ScriptedPolicy
cfg = RunConfig(dataset=DatasetConfig(name={str(data)!r}), search=SearchConfig(n=2), prm="rule")
out = asyncio.run(testtime.runner.run(cfg, __import__("pathlib").Path({str(tmp_path / "r")!r}),
    policy=ScriptedPolicy(lambda *a: "\\\\boxed{{3}}"), scorer=RuleScorer(lambda *a: 0.5),
    progress=False))
assert out.summary["completed"] == 2, out.summary
print(sorted(m for m in sys.modules if m == "ray" or m.startswith("ray.")))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_cli_ray_options() -> None:
    assert fill_ray_flag(["run", "--ray"]) == ["run", "--ray", RAY_LOCAL]
    assert fill_ray_flag(["run", "--ray", "--ray-actors", "2"]) == \
        ["run", "--ray", RAY_LOCAL, "--ray-actors", "2"]
    assert fill_ray_flag(["run", "--ray", "auto", "--n", "4"]) == \
        ["run", "--ray", "auto", "--n", "4"]
    assert fill_ray_flag(["run", "--", "--ray"]) == ["run", "--", "--ray"]
    runner = CliRunner()
    result = runner.invoke(app, ["run", "--ray-actors", "2"])
    assert result.exit_code == 2 and "only apply with --ray" in result.output
    result = runner.invoke(app, ["run", "--max-retries", "-1"])
    assert result.exit_code == 2 and "--max-retries -1: must be >= 0" in result.output
    result = runner.invoke(app, ["run", "--ray", "local", "--gpus-per-actor", "-1"])
    assert result.exit_code == 2 and "--gpus-per-actor must be >= 0" in result.output
    with pytest.raises(ValueError, match="--ray-actors must be >= 1"):
        RayOptions(actors=0)



def test_cli_run_with_ray_reaches_the_actors(ray_cluster: Any, tmp_path: Path) -> None:
    # the whole CLI path: options -> RayExecutor -> actors building the policy from its spec
    # (a model directory passes the up-front check, but its config describes no model)
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "config.json").write_text("{}")
    result = CliRunner().invoke(app, [
        "run", "--dataset", "demo-2", "--policy", f"hf:{not_a_model}", "--out",
        str(tmp_path / "r"), "--ray", RAY_LOCAL, "--ray-actors", "1", "--gpus-per-actor", "0",
        "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "no Ray actor could start (1 failed)" in " ".join(result.output.split())


def test_sweep_on_ray_shares_one_actor_pool_across_its_cells(
    ray_cluster: Any, tmp_path: Path
) -> None:
    # `testtime sweep --ray`: every cell of a policy/PRM pair runs on the same actors (the
    # models load once), each cell's method, budget and seed travel with its work units.
    from testtime.analysis.sweep import SweepGrid, run_sweep
    from testtime.search.base import SamplingConfig

    data = write_set(tmp_path / "set.jsonl", [f"s{i}" for i in range(6)])
    grid = SweepGrid(base=RunConfig(dataset=DatasetConfig(name=str(data)),
                                    search=SearchConfig(beam_width=2),
                                    sampling=SamplingConfig(temperature=0.8)),
                     methods=("best_of_n", "beam_search", "cot"), ns=(4,), prms=("rule",),
                     policies=("scripted",), seeds=(0, 1))
    cells = asyncio.run(run_sweep(grid, tmp_path / "sweep", progress=False,
                                  ray=RayOptions(actors=2),
                                  executor_kwargs={"policy_factory": make_policy,
                                                   "scorer_factory": make_scorer}))
    runs = [c for c in cells if not c.derived]
    assert len(runs) == 6  # 3 methods x 2 seeds (N=4 only: no derived cells)
    assert all(c.status == "done" for c in runs)
    for c in runs:
        recs = RecordStore(tmp_path / "sweep" / c.run_dir / "results.jsonl").records
        assert sorted(recs) == [f"s{i}" for i in range(6)]
        assert all(r.error is None and r.method == c.method for r in recs.values())
        # budget N=4 each; the paper's beam search (M=2) returns K = N/M = 2 paths
        assert all(r.n == (1 if c.method == "cot" else 4) for r in recs.values())
        paths = {"cot": 1, "best_of_n": 4, "beam_search": 2}[c.method]
        assert all(1 <= r.paths == len(r.candidates) <= paths for r in recs.values())


def test_bind_refuses_a_config_with_other_models(tmp_path: Path) -> None:
    data = write_set(tmp_path / "set.jsonl", ["a"])
    ex = RayExecutor(config(data))
    other = config(data).model_copy(update={"prm": "self-certainty"})
    with pytest.raises(ValueError, match="prm"):
        ex.bind(other)
    bound = ex.bind(config(data).model_copy(update={"search": SearchConfig(n=8)}))
    assert bound.config.search.n == 8 and bound.base is ex

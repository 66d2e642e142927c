"""Crash safety: SIGKILL a run at random points, resume it each time, and compare the final
records with an uninterrupted run's; torn last lines; config checks on resume.

Run as a script, this file is the child process the crash test kills:
``python test_crash_resume.py DATA OUT_DIR``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from testtime.config import DatasetConfig, RunConfig
from testtime.runner import RunDirError, run
from testtime.search.base import SamplingConfig, SearchConfig
from testtime.store import RecordStore
from testtime.testing import RuleScorer, ScriptedPolicy, keyword_rule

REPO = Path(__file__).resolve().parents[1]
PROBLEMS = 20
#: SIGKILLs per crash test; each lands after at most 2 more records, so the run is never
#: finished before the last one.
KILLS = 6
#: Per-row delay of the fake policy: a batch of 2 problems x 4 samples takes ~0.16 s, so a
#: run lasts long enough to be killed in the middle.
ROW_DELAY_S = 0.02
#: A run must not take longer than this (a hang fails the test instead of stalling it).
CHILD_TIMEOUT_S = 60.0


def solutions(problem: str, prefix: str, i: int, params: Any) -> str:
    """Multi-step solutions whose answers depend on the problem and the sample."""
    time.sleep(ROW_DELAY_S)
    k = int(problem.split("#")[1].split(")")[0])
    answer = k + 1 if i % 3 else k + 2
    return f"Start {k}.\n\nStep {i}.\n\nSo \\boxed{{{answer}}}."


def config(data: Path, concurrency: int = 2, **search: Any) -> RunConfig:
    return RunConfig(dataset=DatasetConfig(name=str(data)), policy="scripted", prm="rule",
                     search=SearchConfig(n=4, **search), max_concurrent_problems=concurrency)


def scorer() -> RuleScorer:
    return RuleScorer(keyword_rule({"Step 0": 0.9, "Step 1": 0.2}, default=0.5))


def write_set(path: Path, k: int = PROBLEMS) -> Path:
    path.write_text("".join(
        json.dumps({"id": f"q{i:02d}", "problem": f"Add one to (#{i}).", "answer": str(i + 1)})
        + "\n" for i in range(k)))
    return path


def run_once(data: Path, out: Path, resume: bool = True) -> Any:
    """What the child process runs (and the uninterrupted reference, in process)."""
    return asyncio.run(run(config(data), out, policy=ScriptedPolicy(solutions),
                           scorer=scorer(), resume=resume, progress=False))


def contents(run_dir: Path) -> dict[str, dict[str, Any]]:
    return {r.id: r.model_dump(exclude={"wall_time_s"})
            for r in RecordStore(run_dir / "results.jsonl")}


def file_ids(run_dir: Path) -> list[str]:
    path = run_dir / "results.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["id"] for line in path.read_bytes().split(b"\n")[:-1]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("ref")
    data = write_set(tmp / "set.jsonl")
    out = run_once(data, tmp / "run", resume=False)
    assert out.summary["completed"] == PROBLEMS
    return data, contents(tmp / "run")


def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(
    reference: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    data, expected = reference
    run_dir = tmp_path / "run"
    rng = random.Random(20240601)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    kills, torn, rounds = 0, 0, 0
    killed_at: list[int] = []  # records on disk at each kill
    while True:
        rounds += 1
        assert rounds < 30, "the run makes no progress between kills"
        results = run_dir / "results.jsonl"
        if results.exists() and not results.read_bytes().endswith(b"\n") \
                and results.stat().st_size:
            torn += 1  # killed mid-write: the resumed run must drop the torn line
        before = len(RecordStore(results).done_ids()) if results.exists() else 0
        child = subprocess.Popen([sys.executable, __file__, str(data), str(run_dir)], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Kill after 0-2 more records (0: during start-up or the first batch), at a random
        # moment inside a batch; then let the run finish.
        target = before + rng.randint(0, 2)
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while child.poll() is None and len(file_ids(run_dir)) < target:
            assert time.monotonic() < deadline, "the child run hangs"
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.08))
        if child.poll() is None and kills < KILLS:
            child.send_signal(signal.SIGKILL)
            kills += 1
            killed_at.append(len(file_ids(run_dir)))
            assert child.wait(10) == -signal.SIGKILL
            continue
        _, err = child.communicate(timeout=CHILD_TIMEOUT_S)
        assert child.returncode == 0, err.decode()[-2000:]
        if len(RecordStore(results).done_ids()) == PROBLEMS:
            break
    ids = file_ids(run_dir)
    print(f"\ncrash test: {kills} SIGKILLs over {rounds} runs (records on disk at each: "
          f"{killed_at}), {torn} torn last lines, {len(ids)} records")
    assert kills == KILLS and killed_at[-1] < PROBLEMS
    assert sorted(ids) == sorted(expected) and len(ids) == len(set(ids)), \
        "every problem exactly once: no duplicates, none missing"
    assert contents(run_dir) == expected


@pytest.mark.parametrize("cut", [1, 0.25, 0.5, 0.9, -1, "corrupt"])
def test_torn_or_corrupt_last_line_is_dropped_and_recomputed(
    reference: tuple[Path, dict[str, Any]], tmp_path: Path, cut: float | str
) -> None:
    data, expected = reference
    run_dir = tmp_path / "run"
    shutil.copytree(data.parent / "run", run_dir)
    results = run_dir / "results.jsonl"
    lines = results.read_bytes().split(b"\n")[:-1]
    last = lines[-1]
    if cut == "corrupt":  # complete line, unreadable record
        tail = b'{"id": "q99", "candid\n'
    else:
        n = int(len(last) * cut) if isinstance(cut, float) else cut % len(last)
        tail = last[:n]
    results.write_bytes(b"\n".join(lines[:-1]) + b"\n" + tail)
    with pytest.raises(RunDirError, match="--resume"):
        run_once(data, run_dir, resume=False)
    out = run_once(data, run_dir, resume=True)
    assert out.computed == 1
    ids = file_ids(run_dir)
    assert sorted(ids) == sorted(expected) and len(ids) == PROBLEMS
    assert contents(run_dir) == expected


def test_resume_names_every_differing_field_and_ignores_resume_free_ones(
    tmp_path: Path
) -> None:
    small = write_set(tmp_path / "small.jsonl", 2)
    run_dir = tmp_path / "run"
    base = config(small)
    asyncio.run(run(base, run_dir, policy=ScriptedPolicy(solutions), scorer=scorer(),
                    progress=False))
    changed = base.model_copy(update={
        "search": SearchConfig(n=8),
        "sampling": SamplingConfig(temperature=0.5),
        "prm": "other",
    })
    with pytest.raises(RunDirError) as info:
        asyncio.run(run(changed, run_dir, policy=ScriptedPolicy(solutions), scorer=scorer(),
                        resume=True, progress=False))
    message = str(info.value)
    assert "config.json: cannot resume" in message
    for field in ("search.n (saved 4, now 8)", "sampling.temperature (saved 0.7, now 0.5)",
                  "prm (saved 'rule', now 'other')"):
        assert field in message
    # concurrency and the data directory do not change results: resuming is allowed
    free = base.model_copy(update={"max_concurrent_problems": 7, "dataset": DatasetConfig(
        name=str(small), data_dir=str(tmp_path))})
    out = asyncio.run(run(free, run_dir, policy=ScriptedPolicy(solutions), scorer=scorer(),
                          resume=True, progress=False))
    assert out.computed == 0 and out.summary["completed"] == 2


if __name__ == "__main__":
    run_once(Path(sys.argv[1]), Path(sys.argv[2]))

"""Soak: a writer killed with SIGKILL at ten random points and resumed each time, while three
readers read the run directory in a loop (records, the analysis loader, the summary).

Afterwards: no record lost, none duplicated, no corrupt line, and no reader error other than a
clear "run in progress". Bounded to well under two minutes. The counts are printed (``-s``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from testtime.store import read_records, writer_of

SRC = Path(__file__).resolve().parents[1] / "src"
PROBLEMS = 60
KILLS = 10

WRITER = """
import asyncio, random, sys
from pathlib import Path
from testtime.config import DatasetConfig, RunConfig
from testtime.runner import run
from testtime.search.base import SearchConfig
from testtime.testing import RuleScorer, ScriptedPolicy

class Slow(ScriptedPolicy):
    async def generate(self, requests):
        await asyncio.sleep(random.uniform(0.05, 0.6))
        return await super().generate(requests)

def script(problem, prefix, i, params):
    return f"Add.\\n\\nSo \\\\boxed{{{problem.split('+')[0]}}}"

root = Path(sys.argv[1])
cfg = RunConfig(dataset=DatasetConfig(name=str(root / "set.jsonl")), policy="scripted",
                prm="rule", search=SearchConfig(n=4), max_concurrent_problems=3)
asyncio.run(run(cfg, root / "run", resume=True, progress=False, policy=Slow(script),
                scorer=RuleScorer(lambda *a: 0.5)))
"""


class Readers:
    """Three reader threads; any error but "run in progress" is collected."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.in_progress = 0
        self.reads = 0
        self.threads = [threading.Thread(target=self.loop, args=(f,), daemon=True)
                        for f in (self.records, self.analysis, self.summary)]

    def loop(self, fn: object) -> None:
        while not self.stop.is_set():
            try:
                fn()  # type: ignore[operator]
                self.reads += 1
            except Exception as exc:  # noqa: BLE001  (every error is reported by the test)
                if "in progress" in str(exc):
                    self.in_progress += 1
                else:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.01)

    def records(self) -> None:
        read_records(self.run_dir / "results.jsonl")

    def analysis(self) -> None:
        from testtime.analysis.runs import load_results

        if (self.run_dir / "config.json").exists():
            load_results([self.run_dir])

    def summary(self) -> None:
        path = self.run_dir / "summary.json"
        if not path.exists():
            raise RuntimeError(f"{path}: run in progress ({writer_of(self.run_dir)})")
        json.loads(path.read_text())


@pytest.mark.timeout(150)
def test_kill_resume_with_readers_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    (tmp_path / "set.jsonl").write_text("".join(
        json.dumps({"id": f"p{i:02d}", "problem": f"{i}+0?", "answer": str(i)}) + "\n"
        for i in range(PROBLEMS)))
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    rng = random.Random(7)
    readers = Readers(tmp_path / "run")
    started = time.monotonic()
    kills, done_at_kill = 0, []
    for attempt in range(KILLS + 1):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if attempt == 0:
            while not (tmp_path / "run" / "config.json").exists():
                time.sleep(0.05)
            for t in readers.threads:
                t.start()
        if attempt < KILLS:
            # kill at a random moment after the writer has appended something new
            before = len(read_records(tmp_path / "run" / "results.jsonl"))
            while (proc.poll() is None
                   and len(read_records(tmp_path / "run" / "results.jsonl")) == before):
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.6))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait()
            done_at_kill.append(len(read_records(tmp_path / "run" / "results.jsonl")))
        else:
            _, err = proc.communicate(timeout=90)
            assert proc.returncode == 0, err.decode()[-2000:]
    time.sleep(0.2)
    readers.stop.set()
    for t in readers.threads:
        t.join()
    lines = (tmp_path / "run" / "results.jsonl").read_bytes().split(b"\n")
    assert lines.pop() == b""  # complete lines only
    ids = []
    corrupt = 0
    for line in lines:
        try:
            ids.append(json.loads(line)["id"])
        except ValueError:
            corrupt += 1
    lost = PROBLEMS - len(set(ids))
    duplicated = len(ids) - len(set(ids))
    print(f"\nsoak: {kills} SIGKILLs (records done at each: {done_at_kill}), {lost} lost, "
          f"{duplicated} duplicated, {corrupt} corrupt lines; readers: {readers.reads} reads, "
          f"{readers.in_progress} 'run in progress', {len(readers.errors)} errors; "
          f"{time.monotonic() - started:.0f} s")
    assert kills == KILLS
    assert (lost, duplicated, corrupt) == (0, 0, 0)
    assert readers.errors == []
    assert readers.reads > 100
    assert done_at_kill == sorted(done_at_kill) and done_at_kill[-1] < PROBLEMS  # kills mid-run
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["completed"] == PROBLEMS and summary["missing"] == 0

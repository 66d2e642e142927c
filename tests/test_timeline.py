"""The run timeline: unions of intervals per kind, idle time, and the split in summaries."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from testtime import timeline
from testtime.config import DatasetConfig, RunConfig
from testtime.runner import run
from testtime.testing import RuleScorer, ScriptedPolicy


def test_split_by_hand() -> None:
    t = timeline.Timeline()
    t.add("policy", 0.0, 2.0)
    t.add("policy", 1.0, 3.0)   # overlaps the first: 3 s of policy in all
    t.add("prm", 2.5, 4.0)      # overlaps policy for 0.5 s
    t.add("grading", 8.0, 9.0)
    t.add("policy", 20.0, 30.0)  # outside the window
    got = t.split(0.0, 10.0)
    assert got == {"load_s": 0.0, "policy_s": 3.0, "prm_s": 1.5, "grading_s": 1.0, "busy_s": 5.0,
                   "idle_s": 5.0}
    mark = t.mark()
    t.add("prm", 5.0, 6.0)
    assert t.split(0.0, 10.0, mark)["prm_s"] == 1.0  # only what came after the mark


def test_the_oldest_half_is_dropped_past_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeline, "MAX_SPANS", 10)
    t = timeline.Timeline()
    for i in range(8):
        t.add("policy", i, i + 0.5)
    mark = t.mark()
    for i in range(8, 12):  # the 11th add drops 5
        t.add("prm", i, i + 0.5)
    assert t.split(0.0, 100.0, mark) == {"load_s": 0.0, "policy_s": 0.0, "prm_s": 2.0,
                                          "grading_s": 0.0, "busy_s": 2.0, "idle_s": 98.0}


def test_a_run_summary_says_where_the_wall_went(tmp_path: Path) -> None:
    data = tmp_path / "set.jsonl"
    data.write_text(json.dumps({"id": "p", "problem": "1?", "answer": "1"}) + "\n")
    cfg = RunConfig(dataset=DatasetConfig(name=str(data)), policy="scripted", prm="rule")
    def slow(*args: object) -> str:  # runs inside the policy's batch call
        time.sleep(0.05)
        return "\\boxed{1}"

    out = asyncio.run(run(cfg, tmp_path / "run", policy=ScriptedPolicy(slow),
                          scorer=RuleScorer(lambda *a: 0.5), progress=False))
    split = out.summary["timeline"]
    assert split["policy_s"] >= 0.05 and split["grading_s"] > 0 and split["load_s"] >= 0
    assert split["busy_s"] + split["idle_s"] == pytest.approx(out.summary["wall_time_s"],
                                                              abs=0.01)

"""A real run on the embedded SmolLM2: demo and MATH-500 problems, graded and recorded."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from testtime.config import DatasetConfig, RunConfig
from testtime.runner import run
from testtime.scoring.self_certainty import SelfCertaintyScorer
from testtime.search.base import SearchConfig
from testtime.store import RecordStore

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("dataset,limit", [("demo", 3), ("math500", 2)])
def test_best_of_n_on_smollm2(smollm2_policy, data_dir: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                              dataset: str, limit: int) -> None:
    cfg = RunConfig(dataset=DatasetConfig(name=dataset, data_dir=str(data_dir), limit=limit),
                    search=SearchConfig(n=2, max_path_tokens=48))
    out = asyncio.run(run(cfg, tmp_path / "run", policy=smollm2_policy,
                          scorer=SelfCertaintyScorer(), progress=False))
    s = out.summary
    assert s["completed"] == limit and s["errors"] == 0
    assert s["compute"]["generations"] == 2 * limit
    assert 0 <= s["accuracy"]["2"]["majority"] <= s["accuracy"]["2"]["oracle"] <= 1
    for r in RecordStore(tmp_path / "run" / "results.jsonl"):
        assert len(r.candidates) == 2
        for c in r.candidates:
            assert c.steps and all(0 <= st.score <= 1 for st in c.steps)  # type: ignore[operator]
            assert c.completion_tokens <= 48 + 1
        assert r.compute.completion_tokens == sum(n.tokens for n in r.tree)

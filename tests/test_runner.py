"""The run loop end to end on the scripted fakes: records, summary, resume, crash safety."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from testtime.config import DatasetConfig, RunConfig
from testtime.datasets import DatasetError
from testtime.runner import RunDirError, run
from testtime.search.base import SearchConfig
from testtime.store import RecordStore
from testtime.testing import RuleScorer, ScriptedPolicy, keyword_rule


def right_or_wrong(problem: str, prefix: str, i: int, params) -> str:  # type: ignore[no-untyped-def]
    """Samples 0 and 1 answer 3 (right for the test set), sample 2 answers 4, sample 3 none."""
    return [
        "We add.\n\nThat gives 3.\n\nSo \\boxed{3}.",
        "Quick: \\boxed{3}",
        "Hmm wrong.\n\n\\boxed{4}",
        "I give up.",
    ][i % 4]


def write_set(path: Path, k: int = 3) -> Path:
    path.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"What is 1 + 2? ({i})",
                                        "answer": "3"}) + "\n" for i in range(k)))
    return path


def config(path: Path, n: int = 4, **kw) -> RunConfig:  # type: ignore[no-untyped-def]
    return RunConfig(dataset=DatasetConfig(name=str(path)), search=SearchConfig(n=n, **kw),
                     prm="rule")


def scorer() -> RuleScorer:
    return RuleScorer(keyword_rule({"wrong": 0.1, "3": 0.9}, default=0.5))


def test_best_of_n_records_and_summary(tmp_path: Path) -> None:
    data = write_set(tmp_path / "set.jsonl")
    policy = ScriptedPolicy(right_or_wrong)
    out = asyncio.run(run(config(data), tmp_path / "run", policy=policy, scorer=scorer(),
                          progress=False))
    records = list(RecordStore(tmp_path / "run" / "results.jsonl"))
    assert [r.id for r in records] == ["p0", "p1", "p2"]
    r = records[0]
    assert [c.answer for c in r.candidates] == ["3", "3", "4", None]
    assert [c.correct for c in r.candidates] == [True, True, False, False]
    assert r.candidates[0].group == r.candidates[1].group != r.candidates[2].group
    # the paper's grouping: a path without an answer votes for the empty answer
    assert r.candidates[3].group not in (r.candidates[0].group, r.candidates[2].group, None)
    # budgets from prefixes: 1, 2, 4
    assert set(r.predictions) == {"1", "2", "4"}
    assert r.predictions["4"]["majority"].answer == "3"
    assert r.predictions["4"]["oracle"].correct
    # The scorer gives the "wrong" step 0.1: min-vote picks 3.
    assert r.predictions["4"]["prm_min_vote"].correct
    # token totals equal the sum over the tree and over the candidates
    assert r.compute.completion_tokens == sum(node.tokens for node in r.tree)
    assert r.compute.completion_tokens == sum(c.completion_tokens for c in r.candidates)
    assert r.compute.generations == 4 and r.compute.policy_calls == 1
    assert r.compute.scored_tokens > 0
    s = out.summary
    assert s["accuracy"]["4"]["majority"] == 1.0 and s["completed"] == 3
    assert s["compute"]["generations"] == 12
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["problems"] == 3
    # all three problems were in flight together: their requests shared a batch
    assert max(policy.batches) == 12


def test_cot_is_greedy_and_single(tmp_path: Path) -> None:
    data = write_set(tmp_path / "set.jsonl", 2)
    policy = ScriptedPolicy(right_or_wrong)
    out = asyncio.run(run(config(data, method="cot"), tmp_path / "run", policy=policy,
                          scorer=scorer(), progress=False))
    assert all(c.params.temperature == 0 and c.params.n == 1 for c in policy.calls)
    assert out.summary["accuracy"]["1"]["majority"] == 1.0


def test_resume_skips_done_and_drops_torn_line(tmp_path: Path) -> None:
    data = write_set(tmp_path / "set.jsonl", 4)
    cfg = config(data)
    run_dir = tmp_path / "run"
    asyncio.run(run(cfg, run_dir, policy=ScriptedPolicy(right_or_wrong), scorer=scorer(),
                    progress=False))
    results = run_dir / "results.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    # Simulate a crash: two problems done, the third torn mid-write.
    results.write_text(lines[0] + lines[1] + lines[2][: len(lines[2]) // 2])
    policy = ScriptedPolicy(right_or_wrong)
    with pytest.raises(RunDirError, match="--resume"):
        asyncio.run(run(cfg, run_dir, policy=policy, scorer=scorer(), progress=False))
    out = asyncio.run(run(cfg, run_dir, policy=policy, scorer=scorer(), resume=True,
                          progress=False))
    assert out.computed == 2
    ids = [json.loads(line)["id"] for line in results.read_text().splitlines()]
    assert sorted(ids) == ["p0", "p1", "p2", "p3"] and len(ids) == 4
    # a complete run with the same config is accepted without --resume and reruns nothing
    again = asyncio.run(run(cfg, run_dir, policy=policy, scorer=scorer(), progress=False))
    assert again.computed == 0


def test_resume_refuses_changed_config_naming_fields(tmp_path: Path) -> None:
    data = write_set(tmp_path / "set.jsonl", 1)
    run_dir = tmp_path / "run"
    asyncio.run(run(config(data), run_dir, policy=ScriptedPolicy(right_or_wrong),
                    scorer=scorer(), progress=False))
    with pytest.raises(RunDirError, match=r"search\.n \(saved 4, now 8\)"):
        asyncio.run(run(config(data, n=8), run_dir, policy=ScriptedPolicy(right_or_wrong),
                        scorer=scorer(), resume=True, progress=False))


def test_failed_problem_is_recorded_and_retried_on_resume(tmp_path: Path) -> None:
    data = write_set(tmp_path / "set.jsonl", 2)
    run_dir = tmp_path / "run"

    def flaky(problem: str, prefix: str, i: int, params) -> str:  # type: ignore[no-untyped-def]
        if "(1)" in problem:
            raise RuntimeError("backend exploded")
        return right_or_wrong(problem, prefix, i, params)

    out = asyncio.run(run(config(data), run_dir, policy=ScriptedPolicy(flaky), scorer=scorer(),
                          progress=False))
    assert out.summary["errors"] == 1 and out.summary["completed"] == 1
    rec = RecordStore(run_dir / "results.jsonl").records["p1"]
    assert rec.error is not None and "backend exploded" in rec.error
    out = asyncio.run(run(config(data), run_dir, policy=ScriptedPolicy(right_or_wrong),
                          scorer=scorer(), resume=True, progress=False))
    assert out.computed == 1 and out.summary["errors"] == 0
    assert out.summary["accuracy"]["4"]["majority"] == 1.0


def test_malformed_dataset_fails_before_any_model_loads(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "problem": "1+1", "answer": "2"}\n{"id": "b", "problem": 5}\n')
    cfg = RunConfig(dataset=DatasetConfig(name=str(bad)), policy="hf:/nonexistent/model")
    with pytest.raises(DatasetError, match=r"bad\.jsonl:2: field"):
        asyncio.run(run(cfg, tmp_path / "run", progress=False))
    assert not (tmp_path / "run").exists()


def test_beam_config_validation() -> None:
    with pytest.raises(ValueError, match="must be a multiple of search.beam_width=4"):
        RunConfig(search=SearchConfig(method="beam_search", n=6, beam_width=4))

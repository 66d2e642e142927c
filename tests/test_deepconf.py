"""DeepConf: token and trace confidences, and the confidence-filtered voting rules against
hand-computed tables, on stored candidates and through a run."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import numpy as np
import pytest

from testtime import confidence
from testtime.config import DatasetConfig, RunConfig
from testtime.policy.gguf_support import token_stats
from testtime.runner import run
from testtime.search.base import SearchConfig
from testtime.selection import DEEPCONF_RULES, RULES, Scored, percentile, select
from testtime.store import read_records
from testtime.testing import RuleScorer, ScriptedPolicy


def test_token_confidence_is_minus_the_mean_top_k_logprob() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=500).astype(np.float32)
    logp = logits.astype(np.float64) - np.log(np.exp(logits.astype(np.float64)).sum())
    want = -np.sort(logp)[-20:].mean()
    assert confidence.top_k_confidence(logits) == pytest.approx(want, abs=1e-9)
    assert token_stats(logits, 3, math.log(500))[2] == pytest.approx(want, abs=1e-9)
    assert confidence.token_confidence([-0.1, -2.0, -3.9]) == pytest.approx(2.0)


def test_hf_logits_processor_gives_the_same_confidence() -> None:
    import torch

    from testtime.policy.hf_logits import TokenStats

    rng = np.random.default_rng(1)
    rows = rng.normal(size=(2, 300)).astype(np.float32)
    stats = TokenStats(300)
    stats(torch.zeros((2, 1), dtype=torch.long), torch.tensor(rows))
    _, _, conf = stats.finish(torch.tensor([0, 1]))
    for row, got in zip(rows, conf, strict=True):
        assert got[0] == pytest.approx(confidence.top_k_confidence(row), abs=1e-5)


def test_trace_metrics_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(confidence, "WINDOW", 3)
    # windows of 3 over 1..6: means 2, 3, 4, 5
    got = confidence.trace_confidence([1, 2, 3, 4, 5, 6])
    assert got == {"lowest": 2.0, "bottom10": 2.0, "tail": 5.0, "mean": 3.5}
    short = confidence.trace_confidence([4, 2])  # shorter than a window: one group
    assert short == {"lowest": 3.0, "bottom10": 3.0, "tail": 3.0, "mean": 3.0}
    monkeypatch.setattr(confidence, "WINDOW", 1)
    # 20 windows of one token: the bottom 10 % are the 2 lowest
    assert confidence.trace_confidence(list(range(20)))["bottom10"] == 0.5
    assert confidence.trace_confidence([]) is None


def cands(groups: list[int | None], lowest: list[float], correct_group: int = 0) -> list[Scored]:
    return [Scored(g, (0.5,), g == correct_group, {"lowest": c, "tail": -c})
            for g, c in zip(groups, lowest, strict=True)]


def test_percentile_is_numpys() -> None:
    xs = [3.0, 9.0, 1.0, 4.0, 7.5]
    for q in (0, 10, 37.5, 90, 100):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))


def test_rules_by_hand() -> None:
    # ten paths; lowest-group confidences 9, 8, ..., 0; the most confident one says 0, the
    # other nine say 1
    c = cands([0] + [1] * 9, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    assert select("majority", c).index == 1
    # top 10 %: values >= percentile 90 = 8.1 -> only the first path
    assert select("deepconf_lowest_10_wvote", c) == select("deepconf_lowest_10_vote", c)
    assert select("deepconf_lowest_10_vote", c).index == 0
    assert select("deepconf_lowest_10_vote", c).correct
    # top 90 %: values >= 0.9 -> paths 0..8; weighted: group 0 has 9, group 1 has 8+...+1 = 36
    assert select("deepconf_lowest_90_wvote", c).index == 1
    # tail confidences are the negatives here: the first path is the least confident
    assert select("deepconf_tail_10_vote", c).index == 9
    # weights matter: two paths of group 0 with 5 and 5 beat three of group 1 with 1, 1, 1
    w = cands([0, 0, 1, 1, 1], [5, 5, 1, 1, 1])
    assert select("deepconf_lowest_90_vote", w).index == 2  # plain vote after the filter
    assert select("deepconf_lowest_90_wvote", w).index == 0
    # unanswered paths never vote; without confidences the rules are the majority vote
    assert select("deepconf_lowest_10_vote", cands([None, 1], [9, 1])).index == 1
    bare = [Scored(g, (0.5,), False) for g in (2, 1, 1)]
    assert all(select(r, bare) == select("majority", bare) for r in DEEPCONF_RULES)
    with pytest.raises(ValueError, match="unknown selection rule"):
        select("deepconf_lowest_10_median", c)


def test_rules_are_listed_before_the_oracle() -> None:
    assert RULES[-1] == "oracle" and set(DEEPCONF_RULES) <= set(RULES)
    assert len(DEEPCONF_RULES) == 8


def test_a_run_records_trace_confidences_and_the_rules_use_them(tmp_path: Path) -> None:
    data = tmp_path / "set.jsonl"
    data.write_text(json.dumps({"id": "p", "problem": "What is 1?", "answer": "1"}) + "\n")
    cfg = RunConfig(dataset=DatasetConfig(name=str(data)), policy="scripted", prm="rule",
                    search=SearchConfig(n=8))
    # three of eight samples answer 1, confidently; five answer 2, unsure
    answers = ["1", "2", "2", "1", "2", "2", "1", "2"]

    def script(problem: str, prefix: str, i: int, params: object) -> str:
        return f"Think.\n\nSo \\boxed{{{answers[i]}}}"

    policy = ScriptedPolicy(script, confidence=lambda text: 9.0 if "{1}" in text else 1.0)
    asyncio.run(run(cfg, tmp_path / "run", policy=policy, scorer=RuleScorer(lambda *a: 0.5),
                    progress=False))
    [rec] = read_records(tmp_path / "run" / "results.jsonl")
    assert [c.confidence["lowest"] for c in rec.candidates] == \
        [9.0 if a == "1" else 1.0 for a in answers]
    preds = rec.predictions["8"]
    assert not preds["majority"].correct
    assert preds["deepconf_lowest_10_wvote"].correct and preds["deepconf_lowest_90_wvote"].correct
    assert not preds["deepconf_lowest_90_vote"].correct  # 90 % keeps all: 3 vs 5
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["accuracy"]["8"]["deepconf_tail_10_wvote"] == 1.0

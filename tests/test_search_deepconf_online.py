"""Online DeepConf: the threshold, the online stop and the consensus stop against hand-computed
traces (scripted policy, scripted per-token confidences), and the record a run writes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from testtime.config import DatasetConfig, RunConfig
from testtime.prompts.base import PromptTemplate
from testtime.runner import run
from testtime.search.base import SamplingConfig, SearchConfig, SearchContext, SearchResult
from testtime.search.deepconf_online import deepconf, lowest_group, threshold, vote_share
from testtime.store import read_records
from testtime.testing import RuleScorer, ScriptedPolicy, confidence_cut
from testtime.types import Completion, ConfidenceStop, Problem

# trace i: (answer, confidence of each of its 4 tokens "t<i> x x \boxed{a}")
TRACES: list[tuple[str, list[float]]] = [
    ("1", [5, 5, 5, 5]),  # warm-up, lowest (window 2) 5
    ("2", [4, 4, 4, 4]),  # 4
    ("2", [3, 3, 3, 3]),  # 3
    ("2", [6, 6, 2, 2]),  # windows 6, 4, 2 -> 2
    ("2", [9, 9, 1, 9]),  # online: windows 9, 5, 5 -> never below 4.7, voted with 5
    ("2", [9, 1, 1, 9]),  # windows 5, 1: stopped after its 3rd token
    ("1", [8, 8, 8, 8]),  # 8
    ("1", [8, 8, 8, 8]),
]


def policy() -> ScriptedPolicy:
    def script(problem: str, prefix: str, i: int, params: object) -> str:
        return f"t{i} x x \\boxed{{{TRACES[i][0]}}}"

    def confs(text: str) -> list[float]:
        return TRACES[int(text.split()[0][1:])][1]

    # every trace is its own request (seeded per index), so i counts requests per prefix
    return ScriptedPolicy(script, token_confidences=confs)


def solve(**kw: object) -> tuple[SearchResult, ScriptedPolicy]:
    cfg = SearchConfig(**{"method": "deepconf", "n": 8, "dc_warmup": 4, "dc_window": 2,
                          **kw})
    pol = policy()
    ctx = SearchContext(pol, RuleScorer(lambda *a: 0.5), PromptTemplate("plain"), cfg,
                        SamplingConfig())
    return asyncio.run(deepconf(Problem("p", "What is 1?", "1"), ctx)), pol


def test_group_confidence_and_threshold_by_hand() -> None:
    assert lowest_group([6, 6, 2, 2], 2) == 2.0
    assert lowest_group([6, 6, 2, 2], 8) == 4.0  # shorter than the window: its mean
    assert lowest_group([], 2) == 0.0
    lows = [5.0, 4.0, 3.0, 2.0]
    assert threshold(lows, 10) == pytest.approx(4.7)  # 90th percentile: DeepConf-low
    assert threshold(lows, 90) == pytest.approx(2.3)  # 10th: DeepConf-high
    assert vote_share(["1", "2", "1", None], [5, 5, 8, 9], [True, True, True, True]) == \
        pytest.approx(13 / 18)
    assert vote_share(["1", "2"], [5, 5], [True, False]) == 1.0


def test_confidence_cut_keeps_what_was_generated() -> None:
    c = Completion("a b c d", 3, 4, "eos", ("a ", "b ", "c ", "d"), (-1.0,) * 4, (0.5,) * 4,
                   (9.0, 1.0, 1.0, 9.0))
    cut = confidence_cut(c, ConfidenceStop(4.7, 2))
    assert (cut.text, cut.completion_tokens, cut.finish_reason) == ("a b c ", 3, "confidence")
    assert cut.token_confidences == (9.0, 1.0, 1.0)
    assert confidence_cut(c, ConfidenceStop(4.7, 3)).completion_tokens == 3  # (9+1+1)/3
    assert confidence_cut(c, ConfidenceStop(1.0, 2)) is c          # never below
    assert confidence_cut(c, ConfidenceStop(4.7, 5)) is c          # window never fills
    assert confidence_cut(c, None) is c


def test_warmup_threshold_online_stop_and_consensus() -> None:
    r, pol = solve(dc_consensus=0.7)
    info = r.info["deepconf"]
    assert info["threshold"] == pytest.approx(4.7)
    assert info["warmup_lowest"] == [5.0, 4.0, 3.0, 2.0]
    # trace 4: "2" with 5; trace 5 stopped; trace 6: "1" with 8 -> 13/18 = 0.72 >= 0.7
    assert (info["drawn"], info["stopped"], info["stop"]) == (7, 1, "consensus")
    assert info["share"] == pytest.approx(13 / 18)
    assert [c.voted for c in r.candidates] == [True, False, False, False, True, False, True]
    stopped = r.candidates[5]
    assert stopped.finish_reason == "confidence" and stopped.text == "t5 x x "
    # the warm-up ran without a stop, every later trace with ConfidenceStop(s, window)
    assert [c.params.confidence_stop for c in pol.calls[:4]] == [None] * 4
    assert all(c.params.confidence_stop == ConfidenceStop(pytest.approx(4.7), 2)
               for c in pol.calls[4:])
    # compute: 6 full traces of 4 tokens + EOS, the stopped one's 3 tokens
    assert r.compute.completion_tokens == 6 * 5 + 3
    assert r.extra_predictions == {"deepconf": "deepconf_lowest_100_wvote"}
    assert r.independent_prefixes and r.unit_budget == 4
    assert [c.origin for c in r.candidates] == [0, 0, 0, 0, 1, 1, 1]


def test_deepconf_high_keeps_more_warmup_and_budget_ends_it() -> None:
    r, _ = solve(dc_eta=90.0, dc_consensus=1.0)
    info = r.info["deepconf"]
    assert info["threshold"] == pytest.approx(2.3)
    assert (info["drawn"], info["stop"]) == (8, "budget")
    # s = 2.3: trace 3 (lowest 2) is out; trace 5's window (1+1)/2 = 1 < 2.3 stops it
    assert [c.voted for c in r.candidates] == [True, True, True, False, True, False, True,
                                               True]


def test_budget_below_the_warmup_is_offline_deepconf() -> None:
    r, pol = solve(n=3, dc_warmup=16)
    assert r.info["deepconf"]["drawn"] == 3 and r.info["deepconf"]["warmup"] == 3
    assert all(c.params.confidence_stop is None for c in pol.calls)
    assert r.independent_prefixes and r.unit_budget == 3


def test_a_run_records_stopped_traces_outside_the_vote(tmp_path: Path) -> None:
    data = tmp_path / "set.jsonl"
    data.write_text(json.dumps({"id": "p0", "problem": "What is 1?", "answer": "1"}) + "\n")
    cfg = RunConfig(dataset=DatasetConfig(name=str(data)), policy="scripted", prm="rule",
                    search=SearchConfig(method="deepconf", n=8, dc_warmup=4, dc_window=2,
                                        dc_consensus=0.7))
    asyncio.run(run(cfg, tmp_path / "run", policy=policy(), scorer=RuleScorer(lambda *a: 0.5),
                    progress=False))
    (rec,) = read_records(tmp_path / "run" / "results.jsonl")
    assert set(rec.predictions) == {"4", "8"}
    assert [c.voted for c in rec.candidates][4:] == [True, False, True]
    assert rec.candidates[5].finish_reason == "confidence"
    assert rec.compute.completion_tokens == 33
    # budget 4 = the warm-up: only trace 0 ("1") passes its threshold
    assert rec.predictions["4"]["deepconf"].answer == "1"
    assert rec.predictions["4"]["majority"].correct
    # budget 8: voted traces 0 ("1", 5), 4 ("2", 7 = its mean), 6 ("1", 8): "1"
    assert rec.predictions["8"]["deepconf"].correct
    # no rule ever picks a trace that is not voted
    for preds in rec.predictions.values():
        assert all(p.index is None or rec.candidates[p.index].voted for p in preds.values())
    from testtime.search.deepconf_online import summarize

    section = summarize([rec], cfg)
    assert section["mean_drawn"] == 7 and section["mean_stopped"] == 1
    assert section["accuracy"] == {"4": 1.0, "8": 1.0}
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["deepconf"]["consensus_stops"] == 1


def test_the_methods_own_answer_is_an_analysis_strategy(tmp_path: Path) -> None:
    """``deepconf/deepconf`` (the weighted vote of the traces not stopped) is a strategy of the
    analyses at each budget the record answers, billed for the traces drawn by then."""
    from testtime.analysis.runs import Strategy, load_results

    test_a_run_records_stopped_traces_outside_the_vote(tmp_path)
    res = load_results([tmp_path / "run"])
    (key,) = res.outcomes
    own = res.outcomes[key][Strategy("deepconf", "deepconf")]
    assert sorted(own) == [4, 8]
    assert own[4]["p0"].correct == 1.0 and own[4]["p0"].generations == 4.0
    assert own[8]["p0"].correct == 1.0 and own[8]["p0"].generations == 7.0  # 7 drawn of 8
    assert Strategy("deepconf", "deepconf").label == "deepconf/deepconf"

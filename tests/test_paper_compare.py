"""The paper's published numbers, model matching from run configs, and the Table 2-5
comparison filled by a scripted sweep over two policies and two PRMs on two datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from paper_sweep import make_paper_sweep
from typer.testing import CliRunner

from testtime.analysis import paper_data as pd
from testtime.analysis.paper_models import dataset_id, policy_id, prm_id
from testtime.model_sizes import KNOWN_CONFIGS

# The numbers exactly as issue 25 lists them.
TABLE5 = {"Llama-3.2-1B": (26.0, 39.0, 66.2), "Llama-3.2-3B": (41.4, 58.4, 78.2),
          "Llama-3.1-8B": (49.8, 66.4, 80.6), "Qwen2.5-0.5B": (31.6, 47.2, 76.4),
          "Qwen2.5-1.5B": (54.4, 68.4, 85.6), "Qwen2.5-3B": (64.0, 77.0, 87.6),
          "Qwen2.5-7B": (76.8, 83.6, 91.0), "Qwen2.5-14B": (80.2, 85.6, 91.0),
          "Qwen2.5-32B": (82.4, 87.0, 90.6), "Qwen2.5-72B": (83.8, 87.2, 91.8)}
TABLE3_TTS = {"Llama-3.2-1B": (66.2, 16.7), "Llama-3.2-3B": (75.6, 30.0),
              "Qwen2.5-0.5B": (76.4, 10.0), "Qwen2.5-1.5B": (81.8, 20.0),
              "DeepSeek-R1-Distill-1.5B": (91.6, 63.3), "DeepSeek-R1-Distill-7B": (95.2, 83.3)}
TABLE3_COT = {"GPT-4o": (74.6, 9.3), "o1-preview": (85.5, 44.6), "o1-mini": (90.0, 63.6),
              "o1": (94.8, 79.2), "Llama-3.1-70B": (65.2, 16.7), "Llama-3.1-405B": (71.4, 23.3),
              "QwQ-32B-Preview": (90.6, 50.0), "DeepSeek-R1": (97.3, 79.8)}
TABLE2 = {"majority": (86.8, 87.6), "prm_min_max": (83.0, 87.4), "prm_min_vote": (86.6, 87.6),
          "prm_last_max": (84.4, 87.6), "prm_last_vote": (87.0, 87.6),
          "prm_avg_max": (85.8, 87.8), "prm_avg_vote": (86.8, 87.6)}
TABLE4 = {("Llama-3.2-3B", "tts_inference"): 3.07e17, ("Llama-3.1-405B", "cot_inference"): 4.25e17,
          ("DeepSeek-R1-Distill-7B", "tts_inference"): 8.15e17,
          ("DeepSeek-R1", "cot_inference"): 4.03e18, ("Llama-3.2-3B", "pretraining"): 1.62e23,
          ("Llama-3.1-405B", "pretraining"): 3.65e25,
          ("DeepSeek-R1-Distill-7B", "pretraining"): 7.56e23,
          ("DeepSeek-R1", "pretraining"): 5.96e25}


def test_published_values_are_the_issues_each_with_its_table() -> None:
    want = set()
    for m, vals in TABLE5.items():
        want |= {("Table 5", "math500", m, k, None, v)
                 for k, v in zip(("cot", "majority", "compute_optimal"), vals, strict=True)}
    for rows, method in ((TABLE3_TTS, "compute_optimal"), (TABLE3_COT, "cot")):
        for m, (math, aime) in rows.items():
            want |= {("Table 3", "math500", m, method, None, math),
                     ("Table 3", "aime24", m, method, None, aime)}
    for rule, (sky, qwen) in TABLE2.items():
        want |= {("Table 2", "math500", "", rule, "Skywork-PRM-7B", sky),
                 ("Table 2", "math500", "", rule, "Qwen2.5-Math-PRM-7B", qwen)}
    want |= {("Table 4", "math500", m, k, None, v) for (m, k), v in TABLE4.items()}
    got = {(v.table, v.dataset, v.model, v.method, v.prm, v.value) for v in pd.PAPER_VALUES}
    assert got == want and len(pd.PAPER_VALUES) == len(want) == 30 + 28 + 14 + 8
    assert {v.unit for v in pd.PAPER_VALUES if v.table == "Table 4"} == {"flops"}


def test_models_are_read_from_names_and_config_json(tmp_path: Path) -> None:
    assert policy_id("hf:Qwen/Qwen2.5-1.5B-Instruct").name == "Qwen2.5-1.5B"
    assert policy_id("openai:Llama-3.1-8B-Instruct@http://h:8000").params == 8e9
    named = tmp_path / "ckpt-a"
    named.mkdir()
    (named / "config.json").write_text(json.dumps(
        {"_name_or_path": "meta-llama/Llama-3.2-1B-Instruct", "model_type": "llama"}))
    got = policy_id(f"vllm:{named}")
    assert (got.name, got.source) == ("Llama-3.2-1B", "config.json _name_or_path")
    shaped = tmp_path / "ckpt-b"  # no name anywhere: the architecture decides
    shaped.mkdir()
    (shaped / "config.json").write_text(json.dumps(KNOWN_CONFIGS["Llama-3.2-3B"]))
    got = policy_id(f"hf:{shaped}")
    assert (got.name, got.params, got.source) == ("Llama-3.2-3B", 3e9, "config.json architecture")
    (shaped / "config.json").write_text(json.dumps(KNOWN_CONFIGS["Qwen2.5-1.5B"]))
    assert policy_id(f"hf:{shaped}").source.endswith("(shared with Qwen2.5-Math-1.5B)")
    assert policy_id("hf:/no/such/dir").name is None
    assert prm_id("skywork:Skywork/Skywork-o1-Open-PRM-Qwen-2.5-7B").name == "Skywork-PRM-7B"
    assert prm_id("vllm-pooling:qwen_prm:Qwen/Qwen2.5-Math-PRM-7B@http://h:1").name == \
        "Qwen2.5-Math-PRM-7B"
    (shaped / "config.json").write_text(json.dumps(KNOWN_CONFIGS["Qwen2.5-Math-7B"]))
    assert prm_id(f"skywork:{shaped}").name == "Skywork-PRM-7B"  # family + backbone size
    assert prm_id("http://h:1").name is None and prm_id("self-certainty").name is None
    assert [dataset_id(n) for n in ("math500", "/x/MATH-500.jsonl", "aime_2024", "set.jsonl")] \
        == ["math500", "math500", "aime24", "set"]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_paper_sweep(tmp_path_factory.mktemp("paper"))


def test_a_sweep_fills_every_table(sweeps: list[Path]) -> None:
    from testtime.analysis.analyze import analyze
    from testtime.analysis.paper_compare import COT_STRATEGY, compare_with_paper

    a = analyze(sweeps, n_boot=200)
    assert sorted({ka.dataset for ka in a.keys}) == ["aime24", "math500"]
    assert len(a.keys) == 5  # MATH-500: 2 policies x 2 PRMs; AIME24: one pair
    cmp = compare_with_paper(a.keys, a.by_dataset)
    t5 = {(c.row, c.method): c for c in cmp.table("Table 5", "math500")}
    for pol in ("Qwen2.5-1.5B", "Llama-3.2-1B"):
        for m, paper in zip(("cot", "majority", "compute_optimal"), TABLE5[pol], strict=True):
            c = t5[(pol, m)]
            assert c.value is not None and c.paper == paper
            assert c.diff == pytest.approx(c.value - paper)
            assert c.ci_low <= c.value <= c.ci_high
            assert c.within_ci == (c.ci_low <= paper <= c.ci_high)
            assert c.same_setting is False  # 8 problems, N=4: not the paper's setting
            assert c.n == (1 if m == "cot" else 4)
    assert t5[("Qwen2.5-72B", "cot")].value is None  # a paper-only row
    assert t5[("Qwen2.5-72B", "cot")].paper == 83.8
    # compute-optimal = optimal.pick over both PRMs' strategies at N=4 (ties: within one
    # standard error of the best), shown with the chosen strategy's bootstrap interval
    kas = [k for k in a.keys if k.dataset == "math500" and "Qwen" in k.key[0]]
    best = max(p.accuracy for k in kas for s, c in k.curves.items() if s != COT_STRATEGY
               for p in c.points if p.budget == 4)
    opt = t5[("Qwen2.5-1.5B", "compute_optimal")]
    assert opt.value >= 100 * (best - (best * (1 - best) / 8) ** 0.5) - 1e-9
    label, prm = (opt.strategy or "").split(" + ")
    [chosen] = [p for k in kas if prm_id(k.key[1]).label == prm for s, c in k.curves.items()
                if s.label == label for p in c.points if p.budget == 4]
    assert (opt.value, opt.ci_low, opt.ci_high) == pytest.approx(
        (100 * chosen.accuracy, 100 * chosen.ci_low, 100 * chosen.ci_high))
    t3 = {(c.dataset, c.row): c for c in cmp.table("Table 3")}
    assert t3[("aime24", "Qwen2.5-1.5B + compute-optimal TTS")].paper == 20.0
    assert t3[("aime24", "Qwen2.5-1.5B + compute-optimal TTS")].value is not None
    assert t3[("math500", "GPT-4o CoT")].paper == 74.6
    t2 = [c for c in cmp.table("Table 2") if c.dataset == "math500" and c.value is not None]
    assert {(c.prm, c.method) for c in t2} == {(p, r) for p in pd.TABLE2_PRMS
                                               for r in pd.TABLE2_RULES}
    assert all(c.paper == TABLE2[c.method][pd.TABLE2_PRMS.index(c.prm)] for c in t2)
    t4 = {(c.row, c.method): c for c in cmp.table("Table 4")}
    assert t4[("Llama-3.2-3B + TTS", "tts_inference")].value is None  # not run
    assert t4[("Llama-3.2-3B + TTS", "pretraining")].ratio == pytest.approx(1.0)
    assert t4[("DeepSeek-R1 CoT", "pretraining")].ratio == pytest.approx(1.0, abs=0.001)
    mine = t4[("Qwen2.5-1.5B + TTS", "tts_inference")]
    assert mine.value and mine.value > 0 and mine.n == 4


def test_analyze_json_carries_the_comparison(sweeps: list[Path], tmp_path: Path) -> None:
    from testtime.cli import app

    r = CliRunner().invoke(app, ["analyze", *map(str, sweeps), "--json", "--boot", "100",
                                 "--out", str(tmp_path / "an")])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert {x["dataset"] for x in data["analyses"]} == {"math500", "aime24"}
    assert data["paper_comparison"]["assumptions"]["paper_n"] == 256
    cells = [c for c in data["paper_comparison"]["cells"]
             if c["value"] is not None and c["diff"] is not None]
    assert {c["table"] for c in cells} == {"Table 2", "Table 3", "Table 5"}
    # what a script checks: within 2 points of the paper, per cell
    for c in cells:
        assert (abs(c["diff"]) <= 2) == (abs(c["value"] - c["paper"]) <= 2)
    written = sorted(p.name for p in (tmp_path / "an").iterdir())
    assert written == ["analysis.json", "optimal_table-aime24.json", "optimal_table-math500.json"]
    r = CliRunner().invoke(app, ["analyze", str(sweeps[0]), "--boot", "50",
                                 "--out", str(tmp_path / "an1")])
    assert r.exit_code == 0 and "against the paper" in r.output
    assert (tmp_path / "an1" / "optimal_table.json").exists()  # one dataset: as before

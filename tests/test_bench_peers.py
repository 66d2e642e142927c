"""bench/bench_peers.py without a run: the command lines, the limits each side gets, the parsing
of both sides' results, the counting wrappers around sal's engine and PRM, and the table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("bench_peers", REPO / "bench" / "bench_peers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_peers"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bp = _load()
S = bp.Settings(problems=3, n=8, beam_width=4, max_depth=5, max_tokens=300)


def option(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


@pytest.mark.parametrize(("method", "step", "path"), [
    ("best_of_n", 300, 300),  # a sample is cut at sal's max_tokens
    ("beam_search", 300, 1500),  # a step at max_tokens; the path limit cannot bind
    ("dvts", 2048, 10240),  # sal's DVTS hard-codes 2048 per step
])
def test_testtime_command_mirrors_sal_limits(method: str, step: int, path: int) -> None:
    cmd = bp.testtime_command("PY", method, S, "/prm", "/data", "/out")
    assert cmd[:4] == ["PY", "-m", "testtime.cli", "run"]
    assert option(cmd, "--method") == method
    assert (option(cmd, "--max-step-tokens"), option(cmd, "--max-path-tokens")) == \
        (str(step), str(path))
    assert option(cmd, "--semantics") == "sal"
    assert option(cmd, "--policy") == "vllm:default"
    assert option(cmd, "--prm") == "rlhflow:/prm"
    assert option(cmd, "--prompt") == "llama3"  # sal's system prompt
    for flag, value in (("--n", "8"), ("--beam-width", "4"), ("--max-depth", "5"),
                        ("--limit", "3"), ("--temperature", "0.8"), ("--top-p", "1.0"),
                        ("--seed", "42"), ("--out", "/out"), ("--data-dir", "/data")):
        assert option(cmd, flag) == value, flag


def test_sal_config_is_the_same_search() -> None:
    beam = bp.sal_config("beam_search", S, "/policy", "/prm")
    assert beam["search_batch_size"] == 1  # sal refuses batched beam search
    assert (beam["n"], beam["beam_width"], beam["num_iterations"], beam["max_tokens"]) == \
        (8, 4, 5, 300)
    assert (beam["model_path"], beam["prm_path"], beam["approach"]) == \
        ("/policy", "/prm", "beam_search")
    assert beam["custom_chat_template"] is None  # both render SmolLM2's own template
    assert (beam["temperature"], beam["top_p"], beam["seed"]) == (0.8, 1.0, 42)
    assert bp.sal_config("dvts", S, "/p", "/r")["search_batch_size"] == 25  # sal's default


def test_settings_validate() -> None:
    with pytest.raises(ValueError, match="multiple"):
        bp.Settings(n=6, beam_width=4)
    with pytest.raises(ValueError, match=">= 1"):
        bp.Settings(problems=0)


SUMMARY = {"problems": 4, "n": 8, "wall_time_s": 130.0,
           "timeline": {"load_s": 30.0, "policy_s": 80.0, "prm_s": 9.0},
           "accuracy": {"8": {"prm_last_max": 0.25, "majority": 0.5}},
           "compute": {"completion_tokens": 5000, "prompt_tokens": 90000, "policy_calls": 60,
                       "scored_tokens": 40000, "scored_cached_tokens": 30000}}


def test_sides_and_table() -> None:
    tt = bp.testtime_side(SUMMARY, "beam_search")
    assert (tt.search_s, tt.correct, tt.prm_tokens) == (100.0, 1, 10000)  # load left out
    assert tt.per_hour == pytest.approx(144.0)
    sal = bp.sal_side({"method": "beam_search", "problems": 4, "search_s": 400.0,
                       "completion_tokens": 4000, "prompt_tokens": 80000, "policy_calls": 40,
                       "prm_tokens": 70000, "correct": [True, False, False, False],
                       "generate_s": 400.0, "prm_s": 12.0})
    assert (sal.correct, sal.per_hour, sal.s_per_token) == (1, 36.0, 0.1)
    text = bp.table([(0, sal, tt)])
    lines = text.splitlines()
    assert len(lines) == 8  # the rows, then the split of each pair's time
    assert lines[-1] == "| beam_search | 0 | 400.0 | 12.0 | 80.0 | 9.0 |"
    assert "| beam_search | 0 | sal | 100.0 s | 4,000 |" in lines[2]
    assert "| beam_search | 0 | testtime | 25.0 s | 5,000 |" in lines[3]
    assert lines[3].endswith("| 1/4 | 144 | **4.00x** |")  # 144 / 36 problems per hour
    assert lines[2].endswith("| 1/4 | 36 |  |")


def test_collect_leaves_out_loading_and_teardown(tmp_path: Path) -> None:
    import json
    import os

    run = tmp_path / "beam_search-1"
    (run / "sal").mkdir(parents=True)
    (run / "testtime").mkdir()
    (run / "sal" / "result.json").write_text(json.dumps({
        "method": "beam_search", "problems": 4, "search_s": 200.0, "completion_tokens": 4000,
        "prompt_tokens": 1, "policy_calls": 1, "prm_tokens": 1, "correct": [False] * 4}))
    (run / "testtime" / "summary.json").write_text(json.dumps(SUMMARY))
    (run / "testtime" / "results.jsonl").write_text("{}\n")
    os.utime(run / "testtime" / "results.jsonl", (1000.0, 1000.0))
    os.utime(run / "testtime" / "summary.json", (1005.0, 1005.0))  # 5 s closing the engine
    [(k, sal, tt)] = bp.collect(tmp_path)
    assert (k, sal.side, tt.side) == (1, "sal", "testtime")
    assert tt.search_s == pytest.approx(95.0)  # 130 s wall - 30 s loading - 5 s teardown
    assert tt.per_hour / sal.per_hour == pytest.approx(200.0 / 95.0)


def test_counting_wrappers() -> None:
    out = SimpleNamespace(prompt_token_ids=[1, 2, 3],
                          outputs=[SimpleNamespace(token_ids=[4, 5]),
                                   SimpleNamespace(token_ids=[6])])

    class FakeLLM:
        def generate(self, prompts: list[str], *_: Any, **__: Any) -> list[Any]:
            return [out for _ in prompts]

        def get_tokenizer(self) -> str:
            return "tok"

    llm = bp.CountingLLM(FakeLLM())
    assert len(llm.generate(["a", "b"], None, use_tqdm=False)) == 2
    assert (llm.calls, llm.rows, llm.prompt_tokens, llm.completion_tokens) == (1, 2, 6, 6)
    assert llm.get_tokenizer() == "tok"  # everything else passes through

    torch = pytest.importorskip("torch")
    prm = SimpleNamespace(model=torch.nn.Identity(), score=lambda q, o: [[0.5]])
    count = bp.PRMCount(prm, pad_id=0)
    assert prm.score(["q"], [["a"]]) == [[0.5]]
    prm.model(torch.tensor([[5, 6, 7, 0], [5, 6, 0, 0]]))  # right padding with id 0
    assert (count.forwards, count.tokens, count.real_tokens) == (1, 8, 5)
    assert count.seconds >= 0


def test_extract_sal_pins_the_commit(tmp_path: Path) -> None:
    if not (bp.SAL_GIT / "HEAD").exists():
        pytest.skip(f"search-and-learn's git directory is not at {bp.SAL_GIT}")
    src = bp.extract_sal(bp.SAL_GIT, bp.SAL_COMMIT, tmp_path / "sal")
    for f in ("search/beam_search.py", "search/best_of_n.py",
              "search/diverse_verifier_tree_search.py", "models/reward_models.py", "config.py"):
        assert (src / "sal" / f).is_file(), f
    assert "def _beam_search" in (src / "sal" / "search" / "beam_search.py").read_text()

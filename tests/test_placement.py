"""The placement planner on the real models' ``config.json`` shapes (tests/data/configs/):
the paper's five GPU layouts fit on its GPU counts and fail, in one line, on one GPU fewer;
the shapes, the option dicts, the JSON and ``testtime plan``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from testtime.errors import UserError
from testtime.placement import (
    GpuInfo,
    PlacementError,
    given_gpus,
    model_shape,
    plan_placement,
    read_config,
)
from testtime.placement import budget as B

CONFIGS = Path(__file__).parent / "data" / "configs"
#: total memory torch reports for an H100 80GB (79.19 GiB); the paper's "80 GB" GPU
H100_GIB = 85_029_158_912 / (1 << 30)


def cfg(name: str) -> str:
    return str(CONFIGS / name)


def policy(name: str, backend: str = "vllm") -> str:
    return f"{backend}:{cfg(f'Qwen2.5-{name}-Instruct')}"


PRMS = {
    "skywork-1.5b": f"skywork:{cfg('Skywork-o1-Open-PRM-Qwen-2.5-1.5B')}",
    "skywork-7b": f"skywork:{cfg('Skywork-o1-Open-PRM-Qwen-2.5-7B')}",
    "qwen-prm-7b": f"qwen_prm:{cfg('Qwen2.5-Math-PRM-7B')}",
    "rlhflow-8b": f"rlhflow:{cfg('Llama3.1-8B-PRM-Deepseek-Data')}",
    "shepherd-7b": f"math_shepherd:{cfg('math-shepherd-mistral-7b-prm')}",
}
SMALL_PRMS = list(PRMS.values())
PRM_72B = f"qwen_prm:{cfg('Qwen2.5-Math-PRM-72B')}"
#: The paper's table: (policies, PRMs, GPUs), compute-optimal-tts serve_gpu*.sh.
PAPER_ROWS = [
    (["7B", "14B"], SMALL_PRMS, 1),
    (["32B"], SMALL_PRMS, 2),
    (["72B"], SMALL_PRMS, 3),
    (["7B", "14B", "32B"], [PRM_72B], 3),
    (["72B"], [PRM_72B], 4),
]


def test_shapes_from_config_json_match_the_published_sizes() -> None:
    s72 = model_shape(cfg("Qwen2.5-72B-Instruct"))
    assert (s72.layers, s72.hidden, s72.heads, s72.kv_heads, s72.head_dim, s72.vocab) == \
        (80, 8192, 64, 8, 128, 152064)
    assert s72.dtype_bytes == 2 and not s72.tied_embeddings and s72.sliding_window is None
    assert 72.5e9 < s72.parameters < 72.9e9  # Qwen2.5-72B: 72.7B parameters
    assert s72.kv_bytes_per_token == 2 * 80 * 8 * 128 * 2  # 320 KiB
    sky = model_shape(cfg("Skywork-o1-Open-PRM-Qwen-2.5-1.5B"))
    assert sky.tied_embeddings and sky.max_position_embeddings == 4096
    assert 1.5e9 < sky.parameters < 1.6e9
    shepherd = model_shape(cfg("math-shepherd-mistral-7b-prm"))
    assert shepherd.sliding_window == 4096 and 7.2e9 < shepherd.parameters < 7.3e9
    assert model_shape(cfg("Llama3.1-8B-PRM-Deepseek-Data")).max_position_embeddings == 131072
    assert model_shape(cfg("Qwen2.5-7B-Instruct"), "float32").dtype_bytes == 4


def test_config_errors_are_one_line_user_errors(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(UserError, match="no config.json"):
        read_config(str(tmp_path))
    (tmp_path / "config.json").write_text("{nope")
    with pytest.raises(PlacementError, match="cannot read config"):
        read_config(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(PlacementError, match="num_hidden_layers"):
        model_shape(str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(PlacementError, match="not in the local Hugging Face cache") as err:
        plan_placement("vllm:nobody/no-such-model-xyz", "confidence", given_gpus(1, 80))
    assert "\n" not in str(err.value) and "nobody/no-such-model-xyz" in str(err.value)


@pytest.mark.parametrize("memory", [80.0, H100_GIB])
@pytest.mark.parametrize("row", range(len(PAPER_ROWS)))
def test_paper_rows_fit_on_the_papers_gpu_counts(row: int, memory: float) -> None:
    sizes, prms, count = PAPER_ROWS[row]
    for size in sizes:
        for prm in prms:
            plan = plan_placement(policy(size), prm, given_gpus(count, memory))
            data = plan.to_json()
            for gpu in data["gpus"]:
                assert 0 < gpu["planned_gb"] <= gpu["total_gb"], (size, prm, data)
            util = data["policy"]["gpu_memory_utilization"]
            assert data["policy"]["gpus"] and util <= B.PAPER_UTIL_ALONE
            shared = set(data["policy"]["gpus"]) & set(data["prm"]["gpus"])
            assert util <= (B.PAPER_UTIL_SHARED if shared else B.PAPER_UTIL_ALONE)
            # 70B/72B policies run with tensor parallel 2, as in the paper
            assert data["policy"]["tensor_parallel_size"] == (2 if size == "72B" else 1)
            if prm == PRM_72B:  # the 72B PRM is split over two GPUs of its own
                assert len(data["prm"]["gpus"]) == 2 and not shared
                assert plan.prm_options()["device_map"] == "auto"
                assert set(plan.prm_options()["max_memory"]) == \
                    {f"cuda:{g}" for g in data["prm"]["gpus"]}


def test_paper_utilisations_are_reproduced_where_consistent() -> None:
    # a policy alone on its GPUs: 0.95; a 1.5B PRM beside it leaves the paper's 0.88
    alone = plan_placement(policy("32B"), PRMS["rlhflow-8b"], given_gpus(2, 80))
    assert alone.policy_options() == {"gpus": (0,), "tensor_parallel_size": 1,
                                      "gpu_memory_utilization": 0.95, "max_model_len": 8192}
    assert alone.prm_options()["gpus"] == (1,) and alone.prm_options()["device"] == "cuda:1"
    shared = plan_placement(policy("14B"), PRMS["skywork-1.5b"], given_gpus(1, 80))
    assert shared.policy_options()["gpu_memory_utilization"] == 0.88
    assert shared.prm_options()["kv_cache_gb"] >= B.PRM_KV_STORE_MIN_GIB
    # a 7B/8B PRM beside it needs more than 12 %: vLLM's share is what the PRM leaves
    big = plan_placement(policy("14B"), PRMS["rlhflow-8b"], given_gpus(1, 80)).to_json()
    prm_gb = big["prm"]["planned_gb"]["0"]
    assert big["policy"]["gpu_memory_utilization"] == B.floor_util(1 - prm_gb / 80)
    assert big["gpus"][0]["planned_gb"] <= 80
    assert prm_gb > big["prm"]["weights_gb"] > 14.9


@pytest.mark.parametrize("row", range(1, len(PAPER_ROWS)))
def test_one_gpu_fewer_than_a_row_needs_fails_in_one_line(row: int) -> None:
    sizes, prms, count = PAPER_ROWS[row]
    prm = PRM_72B if PRM_72B in prms else PRMS["rlhflow-8b"]  # the row's largest PRM
    with pytest.raises(PlacementError) as err:
        plan_placement(policy(sizes[-1]), prm, given_gpus(count - 1, 80))
    line = str(err.value)
    assert "\n" not in line and line.startswith("--prm ") and "needs " in line and "GiB" in line
    assert f"{count - 1} x 80 GiB" in line and prm in line


def test_row_one_fails_without_a_gpu_or_on_a_small_one() -> None:
    with pytest.raises(PlacementError, match="needs a GPU and there is none"):
        plan_placement(policy("14B"), PRMS["rlhflow-8b"], given_gpus(0, 80))
    with pytest.raises(PlacementError, match=r"--prm rlhflow:.*needs .* GiB.*1 x 40 GiB"):
        plan_placement(policy("14B"), PRMS["rlhflow-8b"], given_gpus(1, 40))
    with pytest.raises(PlacementError, match=r"--policy vllm:.*72B.*needs .* GiB on each of 2 "
                                             r"GPUs \(tensor parallel 2\)"):
        plan_placement(policy("72B"), "confidence", given_gpus(2, 40))


def test_fixed_options_model_free_scorers_and_the_hf_backend() -> None:
    free = plan_placement(policy("7B"), "confidence", given_gpus(2, 80))
    assert free.prm_options() == {} and free.policy_options()["gpu_memory_utilization"] == 0.95
    assert free.to_json()["prm"]["gpus"] == []
    nothing = plan_placement("openai:smol@http://127.0.0.1:1", "confidence", [])
    assert nothing.policy_options() == {} and nothing.prm_options() == {}
    fixed = plan_placement(policy("7B"), PRMS["skywork-1.5b"], given_gpus(4, 80),
                           policy_options={"gpus": (2, 3), "max_model_len": 4096},
                           prm_options={"gpus": (0,), "kv_cache_gb": 2})
    assert fixed.policy_options()["gpus"] == (2, 3)
    assert fixed.policy_options()["tensor_parallel_size"] == 2
    assert fixed.policy_options()["max_model_len"] == 4096
    assert fixed.prm_options() == {"gpus": (0,), "device": "cuda:0", "kv_cache_gb": 2.0}
    cpu_prm = plan_placement(policy("7B"), PRMS["skywork-1.5b"], given_gpus(1, 80),
                             prm_options={"device": "cpu"})
    assert cpu_prm.prm_options() == {} and cpu_prm.policy_options()["gpu_memory_utilization"] \
        == B.PAPER_UTIL_ALONE
    with pytest.raises(PlacementError, match="--prm-gpus 7: no GPU 7"):
        plan_placement(policy("7B"), PRMS["skywork-1.5b"], given_gpus(2, 80),
                       prm_options={"gpus": (7,)})
    # vLLM TP must divide the heads (Qwen2.5-7B: 28) and be a power of two: 3 is refused
    with pytest.raises(PlacementError, match="--policy"):
        plan_placement(policy("7B"), "confidence", given_gpus(3, 80),
                       policy_options={"tensor_parallel_size": 3})
    hf = plan_placement(policy("72B", "hf"), PRMS["skywork-1.5b"], given_gpus(3, 80))
    opts = hf.policy_options()
    assert opts["gpus"] == (0, 1) and opts["device_map"] == "auto"
    assert set(opts["max_memory"]) == {"cuda:0", "cuda:1"} and "tensor_parallel_size" not in opts
    assert "gpu_memory_utilization" not in hf.to_json()["policy"]
    one = plan_placement(policy("7B"), "confidence", [GpuInfo(0, 80.0)])
    assert one.policy_options()["max_model_len"] == B.DEFAULT_MAX_MODEL_LEN


def test_deepseek_r1_distills_get_the_long_context(tmp_path: Path) -> None:
    d = tmp_path / "DeepSeek-R1-Distill-Qwen-7B"
    d.mkdir()
    data = json.loads((CONFIGS / "Qwen2.5-7B-Instruct" / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**data, "max_position_embeddings": 131072}))
    plan = plan_placement(f"vllm:{d}", "confidence", given_gpus(1, 80))
    assert plan.policy_options()["max_model_len"] == B.LONG_MAX_MODEL_LEN


def test_plan_command_prints_the_table_the_json_and_one_line_errors() -> None:
    from testtime.cli.plan import plan

    app = typer.Typer()
    app.command()(plan)
    runner = CliRunner()
    args = ["--policy", policy("72B"), "--prm", PRM_72B, "--num-gpus", "4", "--gpu-memory", "80"]
    out = runner.invoke(app, [*args, "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert [g["index"] for g in data["gpus"]] == [0, 1, 2, 3]
    assert set(data["gpus"][0]) == {"index", "total_gb", "planned_gb"}
    assert data["policy"]["tensor_parallel_size"] == 2 and data["prm"]["gpus"] == [2, 3]
    assert data["policy"]["weights_gb"] > 135 and data["prm"]["weights_gb"] > 135
    table = runner.invoke(app, args)
    assert table.exit_code == 0 and "policy" in table.stdout and "tensor_parallel_size=2" in \
        table.stdout.replace("\n", "")
    bad = runner.invoke(app, [*args[:4], "--num-gpus", "3", "--gpu-memory", "80"])
    assert bad.exit_code == 2
    lines = [line for line in bad.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --prm qwen_prm:")
    half = runner.invoke(app, [*args[:4], "--num-gpus", "2"])
    assert half.exit_code == 2 and "--gpu-memory" in half.output

"""Engine and placement settings a user can reach (issue 20): every setting on `run` and
`sweep`, checked before anything loads; none dropped silently; a scorer the policy cannot feed
refused; the default scorer one every backend feeds; bugs keep their tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cli_errors import one_line_error
from typer.testing import CliRunner

from testtime.cli import app
from testtime.cli.engine_cli import EngineArgs
from testtime.config import RunConfig
from testtime.errors import UserError
from testtime.scoring.registry import check_scorer_options, default_scorer


def test_engine_args_build_the_policy_and_prm_options() -> None:
    args = EngineArgs(dtype="BFloat16", tensor_parallel_size=2, gpu_memory_utilization=0.88,
                      max_model_len=8192, gpus="0,1",
                      engine_arg=["enforce-eager=true", "block_size=32", "quantization=fp8"],
                      prm_gpus="2", prm_max_memory="cuda:2=30,cpu=60", prm_kv_cache_gb=4,
                      prm_arg=["max_batch_tokens=4096"], trust_remote_code=True)
    assert args.policy_options() == {
        "dtype": "bfloat16", "tensor_parallel_size": 2, "gpu_memory_utilization": 0.88,
        "max_model_len": 8192, "gpus": (0, 1), "trust_remote_code": True,
        "enforce_eager": True, "block_size": 32, "quantization": "fp8"}
    # the PRM inherits --dtype and --trust-remote-code; a model-free scorer takes neither
    assert args.prm_options("skywork:/m") == {
        "dtype": "bfloat16", "gpus": (2,), "max_memory": {"cuda:2": 30.0, "cpu": 60.0},
        "kv_cache_gb": 4, "trust_remote_code": True, "max_batch_tokens": 4096}
    assert EngineArgs(device="cuda:0", dtype="float32").prm_options("confidence") == {}


@pytest.mark.parametrize(("args", "expected"), [
    (EngineArgs(engine_arg=["enforce_eager"]), "--engine-arg enforce_eager: expected KEY=VALUE"),
    (EngineArgs(engine_arg=["a=1", "a=2"]), "--engine-arg a=2: a given twice"),
    (EngineArgs(max_model_len=4096, engine_arg=["max_model_len=8192"]),
     "--engine-arg max_model_len=8192: max_model_len is also set by its own option"),
    (EngineArgs(gpus="0,0"), "--gpus 0,0: expected distinct non-negative GPU indices"),
    (EngineArgs(gpus="a"), "--gpus a: expected comma-separated GPU indices"),
    (EngineArgs(dtype="fp8"), "--dtype fp8: unknown dtype; use one of auto, float32"),
    (EngineArgs(gpu_memory_utilization=1.2), "--gpu-memory-utilization 1.2: must be in (0, 1]"),
    (EngineArgs(max_memory="gpu0=3"), "--max-memory gpu0=3: expected DEVICE=GiB pairs"),
])
def test_bad_engine_args_are_user_errors(args: EngineArgs, expected: str) -> None:
    with pytest.raises(UserError) as info:
        args.policy_options()
    assert str(info.value).startswith(expected)


@pytest.mark.parametrize(("args", "expected"), [
    # vLLM has no --device: it was dropped silently before
    (["--policy", "vllm:default", "--device", "cuda:1"],
     "--device cuda:1: the vllm policy backend has no such setting (it applies to: hf)"),
    (["--policy", "hf:default", "--tensor-parallel-size", "2"],
     ("--tensor-parallel-size 2: the hf policy backend has no such setting (it applies to: "
      "vllm)")),
    (["--policy", "vllm:default", "--gpus", "1"],
     "--gpus 1: an in-process vLLM engine runs on GPUs 0..0"),
    (["--policy", "vllm:default", "--prm", "self-certainty"],
     ("--prm self-certainty: self-certainty needs the policy's full next-token distribution, "
      "which vllm does not report; use --prm confidence")),
    (["--policy", "openai:m@http://127.0.0.1:9/v1", "--prm", "self-certainty"],
     "which openai does not report"),
    (["--prm", "confidence", "--prm-device", "cuda:0"],
     "--prm-device cuda:0: the scorer confidence has no such setting (it loads no model)"),
    (["--prm", "http://127.0.0.1:9", "--prm-arg", "kv_cache_gb=2"],
     ("--prm-kv-cache-gb 2: the scorer http://127.0.0.1:9 has no such setting; it takes: "
      "api_key")),
    (["--engine-arg", "n_gpu_layers=3"],
     "--engine-arg n_gpu_layers=3: not a setting of the"),
])
def test_settings_a_backend_lacks_fail_before_loading(args: list[str], expected: str,
                                                       tmp_path: Path) -> None:
    out = one_line_error(["run", "--out", str(tmp_path / "run"), *args])
    assert expected in out
    assert not (tmp_path / "run").exists()


def test_sweep_takes_the_same_settings(tmp_path: Path) -> None:
    out = one_line_error(["sweep", "--policies", "vllm:default", "--prms", "confidence",
                          "--ns", "2", "--out", str(tmp_path / "s"), "--max-model-len", "0"])
    assert "--max-model-len 0: must be >= 1" in out


def test_the_default_scorer_is_one_every_backend_feeds() -> None:
    assert default_scorer("llamacpp:default") == "self-certainty"
    assert default_scorer("hf:Qwen/Qwen2.5-1.5B-Instruct") == "self-certainty"
    assert default_scorer("vllm:Qwen/Qwen2.5-1.5B-Instruct") == "confidence"
    assert default_scorer("openai:m@http://127.0.0.1:9/v1") == "confidence"
    assert RunConfig(policy="vllm:default").prm == "confidence"
    assert RunConfig(policy="vllm:default", prm="skywork:/x").prm == "skywork:/x"
    assert RunConfig().prm == "self-certainty"
    check_scorer_options("skywork:/x", {"gpus": (1,), "device_map": "auto",
                                        "max_memory": {"cuda:1": 10.0}})


def test_an_internal_value_error_keeps_its_traceback(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Only user errors are one line: a bug raising ValueError inside a backend while the run
    loads its models is not dressed up as a user error."""
    import dataclasses

    from testtime.policy import registry

    def broken(model: str, options: dict) -> object:
        raise ValueError("a bug inside the backend")

    hf = registry.POLICY_BACKENDS["hf"]
    monkeypatch.setitem(registry.POLICY_BACKENDS, "hf", dataclasses.replace(hf, factory=broken))
    result = CliRunner().invoke(app, ["run", "--policy", "hf:default", "--limit", "1",
                                      "--out", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 1 and not result.output.startswith("error:"), result.output
    assert isinstance(result.exception, ValueError)
    assert str(result.exception) == "a bug inside the backend"


def test_a_run_whose_every_problem_failed_exits_non_zero() -> None:
    from testtime.cli.run import _all_failed

    assert _all_failed({"problems": 2, "errors": 2, "first_error": "HTTPError: 400"}) == \
        "HTTPError: 400"
    assert _all_failed({"problems": 2, "errors": 1, "first_error": "x"}) is None
    assert _all_failed({"problems": 0, "errors": 0}) is None


def test_ray_actors_plan_for_their_gpus_and_split_vllm_share(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An actor plans for the GPUs Ray gives it; half a GPU per actor halves vLLM's share of
    the whole GPU, so two actors' engines fit side by side. Options the user gave win."""
    from testtime import placement
    from testtime.distributed import worker
    from testtime.placement.plan import GpuInfo

    configs = Path(__file__).parent / "data" / "configs"
    monkeypatch.setattr(placement, "detect_gpus", lambda: [GpuInfo(0, 80.0)])
    cfg = RunConfig(policy=f"vllm:{configs / 'Qwen2.5-7B-Instruct'}",
                    prm=f"skywork:{configs / 'Skywork-o1-Open-PRM-Qwen-2.5-1.5B'}")
    whole = worker.plan_for_actor(cfg, 1.0)
    half = worker.plan_for_actor(cfg, 0.5)
    u_whole = whole.policy_options["gpu_memory_utilization"]
    u_half = half.policy_options["gpu_memory_utilization"]
    assert 0 < u_half < u_whole / 2 + 0.05 and u_half <= 0.5
    assert half.prm_options and whole.prm_options
    mine = cfg.model_copy(update={"policy_options": {"gpu_memory_utilization": 0.3}})
    assert worker.plan_for_actor(mine, 0.5).policy_options["gpu_memory_utilization"] == 0.3
    monkeypatch.setattr(placement, "detect_gpus", list)
    assert worker.plan_for_actor(cfg, 0.5) == cfg


@pytest.mark.parametrize("policy", ["vllm", "hf"])
@pytest.mark.parametrize("gpus", [1, 3])
def test_the_plans_options_are_settings_the_engines_take(policy: str, gpus: int) -> None:
    """What `run` merges from the plan passes the same checks as the user's settings: an
    engine is never handed a setting it would refuse."""
    from testtime.placement import given_gpus, plan_placement
    from testtime.policy.registry import check_policy_options

    configs = Path(__file__).parent / "data" / "configs"
    pol = f"{policy}:{configs / ('Qwen2.5-7B-Instruct' if gpus == 1 else 'Qwen2.5-32B-Instruct')}"
    prm = f"qwen_prm:{configs / ('Qwen2.5-Math-PRM-7B' if gpus == 1 else 'Qwen2.5-Math-PRM-72B')}"
    plan = plan_placement(pol, prm, given_gpus(gpus, 80))
    assert plan.policy_options() and plan.prm_options()
    check_policy_options(pol, plan.policy_options())
    check_scorer_options(prm, plan.prm_options())

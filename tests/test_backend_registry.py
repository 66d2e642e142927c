"""Policy specs (``--policy``) and the backend registry."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from testtime.flops import known_param_count
from testtime.policy.registry import (
    POLICY_BACKENDS,
    build_policy,
    config_from_options,
    default_backend,
    parse_policy_spec,
)


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("default", (default_backend(), "default")),
        ("hf:Qwen/Qwen2.5-1.5B-Instruct", ("hf", "Qwen/Qwen2.5-1.5B-Instruct")),
        ("llamacpp:/models/x.Q4_K_M.gguf", ("llamacpp", "/models/x.Q4_K_M.gguf")),
        ("openai:m@http://127.0.0.1:8000/v1,http://h:1/v1",
         ("openai", "m@http://127.0.0.1:8000/v1,http://h:1/v1")),
        ("vllm:meta-llama/Llama-3.2-1B-Instruct", ("vllm", "meta-llama/Llama-3.2-1B-Instruct")),
    ],
)
def test_parse_policy_spec(spec: str, parsed: tuple[str, str]) -> None:
    assert parse_policy_spec(spec) == parsed


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("Qwen/Qwen2.5-1.5B-Instruct", "expected 'default' or BACKEND:MODEL"),
        ("torch:model", "BACKEND in hf, llamacpp, openai, vllm"),
        ("hf:", "the model after 'hf:' is empty"),
        ("openai:m@localhost:8000", "expected MODEL@http://HOST:PORT/v1"),
    ],
)
def test_bad_specs_are_clear_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_policy(spec, {})


def test_every_backend_is_listed_with_a_parseable_example() -> None:
    assert set(POLICY_BACKENDS) == {"hf", "llamacpp", "openai", "vllm"}
    for name, backend in POLICY_BACKENDS.items():
        assert parse_policy_spec(backend.example)[0] == name and backend.summary


def test_config_from_options_refuses_settings_a_backend_lacks() -> None:
    """No option is dropped silently: a setting the backend has no field for is a one-line
    user error naming the CLI option and the backends that have it."""
    from testtime.errors import UserError
    from testtime.policy.llamacpp import LlamaCppPolicyConfig

    cfg = config_from_options(LlamaCppPolicyConfig, "llamacpp", {"model": "x.gguf"},
                              {"device": "cpu", "max_batch_seqs": 8})
    assert (cfg.model, cfg.max_batch_seqs) == ("x.gguf", 8)
    with pytest.raises(UserError, match=r"^--gpu-memory-utilization 0.5: the llamacpp policy "
                                        r"backend has no such setting \(it applies to: vllm\)"):
        config_from_options(LlamaCppPolicyConfig, "llamacpp", {"model": "x"},
                            {"gpu_memory_utilization": 0.5})
    with pytest.raises(UserError, match=r"^--device cuda: the llamacpp"):
        config_from_options(LlamaCppPolicyConfig, "llamacpp", {"model": "x"},
                            {"device": "cuda"})
    with pytest.raises(UserError, match=r"^--engine-arg n_gpu=1: not a setting of the "
                                        r"llamacpp policy backend; valid: .*dequantize"):
        config_from_options(LlamaCppPolicyConfig, "llamacpp", {"model": "x"}, {"n_gpu": 1})
    with pytest.raises(ValueError, match="max_batch_seqs must be >= 1"):
        config_from_options(LlamaCppPolicyConfig, "llamacpp", {"model": "x"},
                            {"max_batch_seqs": 0})


def test_check_policy_options_before_loading() -> None:
    """Every backend's settings are checked without loading a model: vLLM's named settings,
    its pass-through, and GPUs it cannot honour in process."""
    from testtime.errors import UserError
    from testtime.policy.registry import check_policy_options

    check_policy_options("vllm:/no/such/model", {"tensor_parallel_size": 2,
                                                "gpu_memory_utilization": 0.8,
                                                "max_model_len": 8192, "gpus": (0, 1)})
    with pytest.raises(UserError, match=r"^--device cuda:1: the vllm policy backend has no "
                                        r"such setting \(it applies to: hf\)"):
        check_policy_options("vllm:m", {"device": "cuda:1"})
    with pytest.raises(UserError, match=r"^--gpus 2,3: an in-process vLLM engine runs on GPUs "
                                        r"0..1"):
        check_policy_options("vllm:m", {"gpus": (2, 3)})
    with pytest.raises(UserError, match=r"^--policy vllm:m: vllm.gpu_memory_utilization"):
        check_policy_options("vllm:m", {"gpu_memory_utilization": 1.5})
    with pytest.raises(UserError, match=r"^--tensor-parallel-size 2: the hf policy backend"):
        check_policy_options("hf:m", {"tensor_parallel_size": 2})
    with pytest.raises(UserError, match=r"^--dtype float32: the openai policy backend"):
        check_policy_options("openai:m@http://127.0.0.1:1/v1", {"dtype": "float32"})


def test_known_param_count_for_flops() -> None:
    assert known_param_count("llamacpp:default") is not None
    assert known_param_count("openai:no-such-model", "") is None
    a = known_param_count("vllm:Qwen/Qwen2.5-1.5B-Instruct")
    assert a is not None and a.pick("non_embedding") > 1e9


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs llama-cpp-python")
def test_build_llamacpp_default_with_options() -> None:
    policy = build_policy("llamacpp:default", {"max_batch_seqs": 4, "n_ctx": 2048,
                                               "device": "cpu"})
    assert policy.name == "llamacpp:default"
    assert policy.config.max_batch_seqs == 4 and policy.n_ctx == 2048  # type: ignore[attr-defined]
    assert policy.param_count is not None  # type: ignore[attr-defined]
    asyncio.run(policy.aclose())

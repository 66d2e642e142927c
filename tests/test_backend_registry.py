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


def test_config_from_options_filters_portable_and_rejects_unknown() -> None:
    from testtime.policy.llamacpp import LlamaCppPolicyConfig

    cfg = config_from_options(LlamaCppPolicyConfig, "llamacpp", {"model": "x.gguf"},
                              {"device": "cpu", "dtype": "float32", "max_batch_seqs": 8})
    assert (cfg.model, cfg.max_batch_seqs) == ("x.gguf", 8)
    with pytest.raises(ValueError, match="'gpu_memory_utilization' is not valid for backend "
                                         "'llamacpp'; valid: .*dequantize"):
        config_from_options(LlamaCppPolicyConfig, "llamacpp", {"model": "x"},
                            {"gpu_memory_utilization": 0.5})
    with pytest.raises(ValueError, match="max_batch_seqs must be >= 1"):
        config_from_options(LlamaCppPolicyConfig, "llamacpp", {"model": "x"},
                            {"max_batch_seqs": 0})


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

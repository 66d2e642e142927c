"""Parameter counts of published configs, FLOPs accounting and the ``testtime flops`` command."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from testtime.flops import (
    KNOWN_CONFIGS,
    FlopCosts,
    ParamCount,
    costs_for_specs,
    count_parameters,
    known_name,
    params_of,
    resolve_params,
)
from testtime.records import ComputeRecord

# config.json values as published on the Hub (fields the count ignores left in on purpose).
QWEN25_1_5B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 1536,
    "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
    "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
    "max_position_embeddings": 131072, "rope_theta": 1000000.0, "rms_norm_eps": 1e-06,
    "hidden_act": "silu", "torch_dtype": "bfloat16",
}
LLAMA32_3B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 3072,
    "intermediate_size": 8192, "num_hidden_layers": 28, "num_attention_heads": 24,
    "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256,
    "tie_word_embeddings": True, "attention_bias": False, "mlp_bias": False,
    "rope_scaling": {"factor": 32.0, "rope_type": "llama3"},
}
SKYWORK_PRM_1_5B = {  # Skywork-o1-Open-PRM-Qwen-2.5-1.5B: the Qwen2.5-Math-1.5B architecture
    "architectures": ["Qwen2ForPrmModel"], "model_type": "qwen2", "hidden_size": 1536,
    "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
    "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
    "max_position_embeddings": 4096, "rope_theta": 10000.0,
}
QWEN25_7B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584,
    "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
    "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False,
}
LLAMA31_8B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False,
    "attention_bias": False, "mlp_bias": False,
}
MISTRAL_7B = {
    "architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "vocab_size": 32000, "tie_word_embeddings": False,
    "sliding_window": 4096,
}


def billions(n: int) -> float:
    return round(n / 1e9, 2)


def matches(n: int, published_billions: float) -> bool:
    """Equal to a size published with two decimals (publishers round or truncate)."""
    return abs(n / 1e9 - published_billions) < 0.01


@pytest.mark.parametrize(("config", "total", "non_embedding"), [
    (QWEN25_1_5B, 1.54, 1.31),
    (LLAMA32_3B, 3.21, None),
    (SKYWORK_PRM_1_5B, 1.54, 1.31),
    (QWEN25_7B, 7.61, 6.53),
    (LLAMA31_8B, 8.03, None),
    (MISTRAL_7B, 7.24, None),
])
def test_published_sizes(config: dict, total: float, non_embedding: float | None) -> None:
    p = count_parameters(config)
    assert matches(p.total, total)
    if non_embedding is not None:
        assert matches(p.non_embedding, non_embedding)


def test_exact_count_and_tied_embeddings() -> None:
    p = count_parameters(QWEN25_1_5B)
    # hand count: 28 layers x (attention with q/k/v bias + SwiGLU + 2 norms) + final norm
    layer = (1536 * 1536 + 1536) + 2 * (1536 * 256 + 256) + 1536 * 1536 + 3 * 1536 * 8960 \
        + 2 * 1536
    assert p.non_embedding == 28 * layer + 1536
    assert p.total == p.non_embedding + 151936 * 1536  # tied: the embedding counts once
    untied = count_parameters({**QWEN25_1_5B, "tie_word_embeddings": False})
    assert untied.total - p.total == 151936 * 1536
    assert untied.non_embedding == p.non_embedding
    # Llama has no q/k/v bias: the same shapes as Qwen2 count fewer parameters
    as_llama = count_parameters({**QWEN25_1_5B, "model_type": "llama"})
    assert p.non_embedding - as_llama.non_embedding == 28 * (1536 + 2 * 256)


def test_pretrained_config_object_counts_the_same() -> None:
    from transformers import LlamaConfig, Qwen2Config

    fields = {k: v for k, v in QWEN25_7B.items() if k not in ("architectures", "model_type")}
    assert count_parameters(Qwen2Config(**fields)) == count_parameters(QWEN25_7B)
    fields = {k: v for k, v in LLAMA32_3B.items()
              if k not in ("architectures", "model_type", "rope_scaling")}
    assert count_parameters(LlamaConfig(**fields)) == count_parameters(LLAMA32_3B)


def test_bad_configs_name_the_problem() -> None:
    with pytest.raises(ValueError, match="hidden_size"):
        count_parameters({k: v for k, v in QWEN25_7B.items() if k != "hidden_size"})
    with pytest.raises(ValueError, match="gpt2"):
        count_parameters({**QWEN25_7B, "model_type": "gpt2"})


def test_known_table_and_names(tmp_path: Path) -> None:
    assert count_parameters(KNOWN_CONFIGS["Qwen2.5-7B"]) == count_parameters(QWEN25_7B)
    assert count_parameters(KNOWN_CONFIGS["Llama-3.1-8B"]) == count_parameters(LLAMA31_8B)
    assert billions(count_parameters(KNOWN_CONFIGS["Llama-3.1-405B"]).total) == 405.85
    assert billions(count_parameters(KNOWN_CONFIGS["Qwen2.5-72B"]).total) == 72.71
    assert billions(count_parameters(KNOWN_CONFIGS["Qwen2.5-0.5B"]).total) == 0.49
    assert known_name("hf:Qwen/Qwen2.5-1.5B-Instruct") == "Qwen2.5-1.5B"
    assert known_name("skywork:Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B") == "Qwen2.5-Math-1.5B"
    assert known_name("default") == "SmolLM2-135M"
    assert known_name("hf:some/unknown-model") is None
    cfg = tmp_path / "m" / "config.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps(MISTRAL_7B))
    assert resolve_params(str(cfg.parent))[1] == count_parameters(MISTRAL_7B)
    with pytest.raises(ValueError, match="unknown model"):
        resolve_params("NoSuchModel-3B")


def test_flop_costs_from_objects_and_records() -> None:
    policy = SimpleNamespace(model=SimpleNamespace(config=QWEN25_1_5B))
    prm = SimpleNamespace(engine=SimpleNamespace(backbone=SimpleNamespace(config=QWEN25_7B)))
    fake = SimpleNamespace(name="scripted")
    assert params_of(policy) == count_parameters(QWEN25_1_5B)
    assert params_of(fake) is None
    assert params_of(SimpleNamespace(param_count=ParamCount(10, 7))) == ParamCount(10, 7)
    costs = FlopCosts.of(policy, prm, "non_embedding")
    rec = ComputeRecord(prompt_tokens=100, completion_tokens=300, scored_tokens=500)
    costs.fill(rec)
    assert rec.policy_flops == 2 * count_parameters(QWEN25_1_5B).non_embedding * 400
    assert rec.prm_flops == 2 * count_parameters(QWEN25_7B).non_embedding * 500
    # by default the nominal size of a named model (an unnamed one: its total count)
    named = SimpleNamespace(model=SimpleNamespace(config=QWEN25_1_5B),
                            name="hf:Qwen/Qwen2.5-1.5B-Instruct")
    assert FlopCosts.of(named, None).policy_params == 1_500_000_000
    assert FlopCosts.of(policy, None).policy_params == count_parameters(QWEN25_1_5B).total
    zero = FlopCosts.of(fake, fake)
    zero.fill(rec)
    assert rec.policy_flops == 0.0 and rec.prm_flops == 0.0
    total = FlopCosts.of(policy, fake, "total")
    assert total.policy_params == count_parameters(QWEN25_1_5B).total
    # records without FLOPs: from the run config's specs; model-free scorers cost nothing
    assert costs_for_specs("default", "self-certainty").prm_params == 0
    assert costs_for_specs("hf:Qwen/Qwen2.5-7B-Instruct", "qwen_prm:Qwen/Qwen2.5-Math-PRM-7B") \
        == FlopCosts(7_000_000_000, 7_000_000_000)
    assert costs_for_specs("hf:Qwen/Qwen2.5-7B-Instruct", "qwen_prm:Qwen/Qwen2.5-Math-PRM-7B",
                           "non_embedding") \
        == FlopCosts(count_parameters(QWEN25_7B).non_embedding,
                     count_parameters(KNOWN_CONFIGS["Qwen2.5-Math-7B"]).non_embedding)


def test_flops_command_small_tts_vs_large_cot() -> None:
    from testtime.cli import app

    r = CliRunner().invoke(app, [
        "flops", "--small", "Qwen2.5-0.5B", "--n", "256", "--method", "best_of_n",
        "--large", "Qwen2.5-72B", "--prm", "Qwen2.5-Math-PRM-7B", "--prompt-tokens", "100",
        "--completion-tokens", "400", "--pretrain", "--params", "non_embedding", "--json"])
    assert r.exit_code == 0, r.output
    small, large = json.loads(r.output)
    n_small = count_parameters(KNOWN_CONFIGS["Qwen2.5-0.5B"]).non_embedding
    n_prm = count_parameters(KNOWN_CONFIGS["Qwen2.5-Math-7B"]).non_embedding
    n_large = count_parameters(KNOWN_CONFIGS["Qwen2.5-72B"]).non_embedding
    assert small["inference_flops"] == pytest.approx(2 * n_small * 256 * 500
                                                     + 2 * n_prm * 256 * 500)
    assert large["inference_flops"] == pytest.approx(2 * n_large * 500)
    assert large["pretrain_flops"] == pytest.approx(6 * n_large * 18e12)
    assert large["total_flops"] > small["total_flops"]
    bad = CliRunner().invoke(app, ["flops", "--small", "Nope-1B", "--large", "Qwen2.5-72B"])
    assert bad.exit_code == 2 and "unknown model" in bad.output


def flops_json(*args: str) -> list[dict]:  # type: ignore[type-arg]
    from testtime.cli import app

    r = CliRunner().invoke(app, ["flops", *args, "--pretrain", "--no-prm-flops",
                                 "--problems", "500", "--prompt-tokens", "0", "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)  # type: ignore[no-any-return]


def close(x: float, published: float) -> bool:
    """Equal to the 3 significant digits the paper prints."""
    return float(f"{x:.2e}") == published or abs(x - published) / published < 2e-3


def test_flops_reproduces_table_4_of_liu_et_al() -> None:
    # Table 4 counts MATH-500 (500 problems), nominal sizes, 2N per token, 6ND pre-training.
    # The paper gives no token counts: these per-problem ones are what its inference FLOPs
    # imply (3B: 512 samples of 199.87 tokens; 405B CoT: 1049.38; 7B: 64 x 1819.20; R1 CoT:
    # 6005.96 tokens), so the test pins the sizes, data sizes and formulas.
    small, large = flops_json("--small", "Llama-3.2-3B", "--n", "512", "--completion-tokens",
                              "199.8698", "--large", "Llama-3.1-405B",
                              "--large-completion-tokens", "1049.3827")
    assert small["params"] == 3e9 and large["params"] == 405e9
    assert close(small["pretrain_flops"], 1.62e23) and close(small["inference_flops"], 3.07e17)
    assert close(large["pretrain_flops"], 3.65e25) and close(large["inference_flops"], 4.25e17)
    small, large = flops_json("--small", "DeepSeek-R1-Distill-Qwen-7B", "--n", "64",
                              "--completion-tokens", "1819.1964", "--large", "DeepSeek-R1",
                              "--large-completion-tokens", "6005.96")
    assert small["params"] == 7e9 and large["params"] == 671e9
    assert close(small["pretrain_flops"], 7.56e23) and close(small["inference_flops"], 8.15e17)
    assert close(large["pretrain_flops"], 5.96e25) and close(large["inference_flops"], 4.03e18)
    assert "DeepSeek-R1 (671B total, 37B active) CoT" == large["label"]
    # active parameters of the mixture of experts, on request
    _, active = flops_json("--small", "Llama-3.2-3B", "--large", "DeepSeek-R1",
                           "--params", "active")
    assert active["params"] == 37e9


def test_prm_flops_are_a_switch() -> None:
    from testtime.cli import app

    args = ["flops", "--small", "Qwen2.5-1.5B", "--n", "4", "--large", "Qwen2.5-72B",
            "--prm", "Skywork-PRM-1.5B", "--json"]
    on = json.loads(CliRunner().invoke(app, args).output)[0]["inference_flops"]
    off = json.loads(CliRunner().invoke(app, [*args, "--no-prm-flops"]).output)[0][
        "inference_flops"]
    assert on == pytest.approx(2 * off)  # the PRM (1.5B) reads what the policy (1.5B) wrote

"""Published sizes of the papers' models: their ``config.json`` values, nominal and
mixture-of-experts sizes, name aliases and pre-training token counts (data only; counting and
FLOPs are in :mod:`testtime.flops`)."""

from __future__ import annotations

from typing import Any


def _cfg(h: int, inter: int, layers: int, heads: int, kv: int, vocab: int, tied: bool,
         model_type: str, **extra: Any) -> dict[str, Any]:
    return {"model_type": model_type, "hidden_size": h, "intermediate_size": inter,
            "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": kv, "vocab_size": vocab, "tie_word_embeddings": tied, **extra}


_QWEN_SMALL = 151936
_QWEN_LARGE = 152064
_LLAMA3 = 128256

#: Published config.json values of the models in Liu et al. 2025 (policies and PRM backbones;
#: a PRM's head is a few thousand parameters and is left out).
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "Qwen2.5-0.5B": _cfg(896, 4864, 24, 14, 2, _QWEN_SMALL, True, "qwen2"),
    "Qwen2.5-1.5B": _cfg(1536, 8960, 28, 12, 2, _QWEN_SMALL, True, "qwen2"),
    "Qwen2.5-3B": _cfg(2048, 11008, 36, 16, 2, _QWEN_SMALL, True, "qwen2"),
    "Qwen2.5-7B": _cfg(3584, 18944, 28, 28, 4, _QWEN_LARGE, False, "qwen2"),
    "Qwen2.5-14B": _cfg(5120, 13824, 48, 40, 8, _QWEN_LARGE, False, "qwen2"),
    "Qwen2.5-32B": _cfg(5120, 27648, 64, 40, 8, _QWEN_LARGE, False, "qwen2"),
    "Qwen2.5-72B": _cfg(8192, 29568, 80, 64, 8, _QWEN_LARGE, False, "qwen2"),
    "Qwen2.5-Math-1.5B": _cfg(1536, 8960, 28, 12, 2, _QWEN_SMALL, True, "qwen2"),
    "Qwen2.5-Math-7B": _cfg(3584, 18944, 28, 28, 4, _QWEN_LARGE, False, "qwen2"),
    "DeepSeek-R1-Distill-Qwen-1.5B": _cfg(1536, 8960, 28, 12, 2, _QWEN_SMALL, False, "qwen2"),
    "DeepSeek-R1-Distill-Qwen-7B": _cfg(3584, 18944, 28, 28, 4, _QWEN_LARGE, False, "qwen2"),
    "Llama-3.2-1B": _cfg(2048, 8192, 16, 32, 8, _LLAMA3, True, "llama", head_dim=64),
    "Llama-3.2-3B": _cfg(3072, 8192, 28, 24, 8, _LLAMA3, True, "llama"),
    "Llama-3.1-8B": _cfg(4096, 14336, 32, 32, 8, _LLAMA3, False, "llama"),
    "Llama-3.1-70B": _cfg(8192, 28672, 80, 64, 8, _LLAMA3, False, "llama"),
    "Llama-3.1-405B": _cfg(16384, 53248, 126, 128, 8, _LLAMA3, False, "llama"),
    "Mistral-7B": _cfg(4096, 14336, 32, 32, 8, 32000, False, "mistral"),
    "SmolLM2-135M": _cfg(576, 1536, 30, 9, 3, 49152, True, "llama"),
}
#: Published sizes (the number in the name), the default ``N`` of FLOPs.
NOMINAL: dict[str, float] = {
    "Qwen2.5-0.5B": 0.5e9, "Qwen2.5-1.5B": 1.5e9, "Qwen2.5-3B": 3e9, "Qwen2.5-7B": 7e9,
    "Qwen2.5-14B": 14e9, "Qwen2.5-32B": 32e9, "Qwen2.5-72B": 72e9,
    "Qwen2.5-Math-1.5B": 1.5e9, "Qwen2.5-Math-7B": 7e9,
    "DeepSeek-R1-Distill-Qwen-1.5B": 1.5e9, "DeepSeek-R1-Distill-Qwen-7B": 7e9,
    "Llama-3.2-1B": 1e9, "Llama-3.2-3B": 3e9, "Llama-3.1-8B": 8e9, "Llama-3.1-70B": 70e9,
    "Llama-3.1-405B": 405e9, "Mistral-7B": 7e9, "SmolLM2-135M": 135e6,
}
#: Mixture-of-experts models, whose layout the dense counter does not know: (total, active).
MOE: dict[str, tuple[float, float]] = {
    "DeepSeek-R1": (671e9, 37e9),
}
#: Other names (PRMs, instruct variants) -> the architecture they share.
ALIASES: dict[str, str] = {
    "Skywork-PRM-1.5B": "Qwen2.5-Math-1.5B",
    "Skywork-o1-Open-PRM-Qwen-2.5-1.5B": "Qwen2.5-Math-1.5B",
    "Skywork-PRM-7B": "Qwen2.5-Math-7B",
    "Skywork-o1-Open-PRM-Qwen-2.5-7B": "Qwen2.5-Math-7B",
    "Qwen2.5-Math-PRM-7B": "Qwen2.5-Math-7B",
    "Qwen2.5-Math-PRM-72B": "Qwen2.5-72B",
    "Math-Shepherd": "Mistral-7B",
    "math-shepherd-mistral-7b-prm": "Mistral-7B",
    "RLHFlow-PRM-Mistral-8B": "Llama-3.1-8B",
    "Llama3.1-8B-PRM-Mistral-Data": "Llama-3.1-8B",
    "RLHFlow-PRM-Deepseek-8B": "Llama-3.1-8B",
    "Llama3.1-8B-PRM-Deepseek-Data": "Llama-3.1-8B",
    "Mistral-7B-v0.1": "Mistral-7B",
    "DeepSeek-R1-Distill-7B": "DeepSeek-R1-Distill-Qwen-7B",
    "DeepSeek-R1-Distill-1.5B": "DeepSeek-R1-Distill-Qwen-1.5B",
    "default": "SmolLM2-135M",
}
#: Published pre-training token counts (for 6ND); None where not published.
PRETRAIN_TOKENS: dict[str, float] = {
    **{k: 18e12 for k in KNOWN_CONFIGS if k.startswith("Qwen2.5-") and "Math" not in k},
    "Llama-3.2-1B": 9e12, "Llama-3.2-3B": 9e12,
    "Llama-3.1-8B": 15e12, "Llama-3.1-70B": 15e12, "Llama-3.1-405B": 15e12,
    "SmolLM2-135M": 2e12,
    # the distills' base models (Qwen2.5-Math) were pre-trained like Qwen2.5: 18T tokens
    "DeepSeek-R1-Distill-Qwen-1.5B": 18e12, "DeepSeek-R1-Distill-Qwen-7B": 18e12,
    "DeepSeek-R1": 14.8e12,  # DeepSeek-V3's pre-training
}
SUFFIXES = ("-Instruct", "-instruct", "-Chat", "-chat", "-it")
"""Name suffixes of fine-tuned variants that share the base model's size."""

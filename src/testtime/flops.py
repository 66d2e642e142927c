"""Parameter counts from model configs and the FLOPs of policy and PRM tokens.

Convention (Kaplan et al. 2020, used by Snell et al. 2024 and Liu et al. 2025):

* a forward pass costs ``2 * N`` FLOPs per token, pre-training ``6 * N * D``;
* ``N`` is the *non-embedding* parameter count by default: the token-embedding lookup is not a
  matrix product, and the output projection is excluded too (Kaplan's convention), which also
  makes a PRM (whose head scores a few positions) and its base LM cost the same per token.
  ``--params total`` switches to all parameters (input + output embeddings, tied ones once).
* policy FLOPs = ``2 * N_policy * (prompt_tokens + completion_tokens)``, PRM FLOPs =
  ``2 * N_prm * scored_tokens``; the attention context term (``2 * layers * ctx * d``) is left
  out, as in the papers.

Parameters are counted from config fields (Llama, Mistral, Qwen2 decoders: attention with
grouped KV heads, SwiGLU MLP, RMSNorm; Qwen2 adds q/k/v biases; tied embeddings count once).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Convention = Literal["non_embedding", "total"]
#: Architectures whose layer layout ``count_parameters`` knows.
ARCHITECTURES = ("llama", "mistral", "qwen2")
#: Defaults of ``tie_word_embeddings`` per model_type (transformers' config classes).
_TIED_DEFAULT = {"llama": False, "mistral": False, "qwen2": False}


@dataclass(frozen=True)
class ParamCount:
    """Parameters of a decoder: ``total`` and ``non_embedding`` (no embedding / LM head)."""

    total: int
    non_embedding: int

    def pick(self, convention: Convention = "non_embedding") -> int:
        return self.non_embedding if convention == "non_embedding" else self.total


def _as_dict(config: Mapping[str, Any] | Any) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    raise TypeError(f"expected a config dict or PretrainedConfig, got {type(config).__name__}")


def count_parameters(config: Mapping[str, Any] | Any) -> ParamCount:
    """Parameter count of a Llama / Mistral / Qwen2 decoder from its ``config.json`` fields.

    Raises ``ValueError`` naming a missing field or an unknown ``model_type``.
    """
    c = _as_dict(config)
    model_type = c.get("model_type", "llama")
    if model_type not in ARCHITECTURES:
        raise ValueError(f"model_type {model_type!r} not supported; known: {ARCHITECTURES}")
    try:
        h = int(c["hidden_size"])
        inter = int(c["intermediate_size"])
        layers = int(c["num_hidden_layers"])
        heads = int(c["num_attention_heads"])
        vocab = int(c["vocab_size"])
    except KeyError as exc:
        raise ValueError(f"config field {exc.args[0]!r} is missing") from None
    kv_heads = int(c.get("num_key_value_heads") or heads)
    head_dim = int(c.get("head_dim") or h // heads)
    tied = bool(c.get("tie_word_embeddings", _TIED_DEFAULT[model_type]))
    qkv_bias = model_type == "qwen2" or bool(c.get("attention_bias", False))
    o_bias = model_type != "qwen2" and bool(c.get("attention_bias", False))
    mlp_bias = bool(c.get("mlp_bias", False))
    q, kv = heads * head_dim, kv_heads * head_dim
    attn = h * q + 2 * h * kv + q * h
    if qkv_bias:
        attn += q + 2 * kv
    if o_bias:
        attn += h
    mlp = 3 * h * inter + (2 * inter + h if mlp_bias else 0)
    norms = 2 * h
    non_embedding = layers * (attn + mlp + norms) + h  # + the final norm
    embed = vocab * h
    total = non_embedding + embed + (0 if tied else embed)
    return ParamCount(total=total, non_embedding=non_embedding)


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
    "default": "SmolLM2-135M",
}
#: Published pre-training token counts (for 6ND); None where not published.
PRETRAIN_TOKENS: dict[str, float] = {
    **{k: 18e12 for k in KNOWN_CONFIGS if k.startswith("Qwen2.5-") and "Math" not in k},
    "Llama-3.2-1B": 9e12, "Llama-3.2-3B": 9e12,
    "Llama-3.1-8B": 15e12, "Llama-3.1-70B": 15e12, "Llama-3.1-405B": 15e12,
    "SmolLM2-135M": 2e12,
}
_SUFFIXES = ("-Instruct", "-instruct", "-Chat", "-chat", "-it")


def known_name(spec: str) -> str | None:
    """The ``KNOWN_CONFIGS`` key a model spec or Hub id names (``hf:Qwen/Qwen2.5-7B-Instruct``,
    ``skywork:Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B``, ``Qwen2.5-0.5B``), else None."""
    base = spec.split(":", 1)[-1].rstrip("/").split("/")[-1]
    base = base.removesuffix(".gguf").split(".Q")[0]
    for name in (base, *(base.removesuffix(s) for s in _SUFFIXES)):
        name = ALIASES.get(name, name)
        for key in KNOWN_CONFIGS:
            if key.lower() == name.lower():
                return key
    return None


def resolve_params(model: str) -> tuple[str, ParamCount]:
    """Parameter count of a known model name/spec or of a ``config.json`` path (or its dir)."""
    path = Path(model)
    if path.is_dir():
        path = path / "config.json"
    if path.suffix == ".json" and path.exists():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from None
        try:
            return path.parent.name or str(path), count_parameters(data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    name = known_name(model)
    if name is None:
        raise ValueError(f"unknown model {model!r}: give a config.json path or one of "
                         f"{', '.join([*KNOWN_CONFIGS, *ALIASES])}")
    return name, count_parameters(KNOWN_CONFIGS[name])


def known_param_count(*specs: str) -> ParamCount | None:
    """``ParamCount`` of the first spec naming a known model or a ``config.json`` directory
    (for backends and clients without a loaded transformers model), else None."""
    for spec in specs:
        if not spec:
            continue
        try:
            return resolve_params(spec)[1]
        except (ValueError, OSError):
            continue
    return None


def params_of(obj: Any) -> ParamCount | None:
    """Parameters of a loaded policy or scorer, or None when it has no model (fakes, model-free
    scorers). Looks at ``param_count`` (a ``ParamCount`` a fake may carry), then the model
    config at ``.model.config`` (HF policy), ``.engine.backbone.config`` (PRM scorers)."""
    given = getattr(obj, "param_count", None)
    if isinstance(given, ParamCount):
        return given
    for path in (("model", "config"), ("engine", "backbone", "config"), ("backbone", "config")):
        target = obj
        for attr in path:
            target = getattr(target, attr, None)
            if target is None:
                break
        if target is not None:
            try:
                return count_parameters(target)
            except (ValueError, TypeError):
                return None  # an architecture we do not count: FLOPs stay 0 rather than wrong
    return None


@dataclass(frozen=True)
class FlopCosts:
    """FLOPs per token of the policy and the PRM (``2 * N``); 0 when unknown or model-free."""

    policy_params: int = 0
    prm_params: int = 0

    @classmethod
    def of(cls, policy: Any, scorer: Any, convention: Convention = "non_embedding") -> FlopCosts:
        p, s = params_of(policy), params_of(scorer)
        return cls(p.pick(convention) if p else 0, s.pick(convention) if s else 0)

    def policy_flops(self, prompt_tokens: float, completion_tokens: float) -> float:
        return 2.0 * self.policy_params * (prompt_tokens + completion_tokens)

    def prm_flops(self, scored_tokens: float) -> float:
        return 2.0 * self.prm_params * scored_tokens

    def fill(self, compute: Any) -> None:
        """Set ``policy_flops``/``prm_flops`` on a ``ComputeRecord`` from its token counts."""
        compute.policy_flops = self.policy_flops(compute.prompt_tokens, compute.completion_tokens)
        compute.prm_flops = self.prm_flops(compute.scored_tokens)


def costs_for_specs(policy: str, prm: str, convention: Convention = "non_embedding") -> FlopCosts:
    """Costs from a run config's ``policy``/``prm`` specs via the known-config table (0 where a
    spec is unknown or a scorer is model-free) -- for records written without FLOPs."""
    def known(spec: str) -> int:
        name = known_name(spec)
        return count_parameters(KNOWN_CONFIGS[name]).pick(convention) if name else 0

    return FlopCosts(known(policy), known(prm) if ":" in prm else 0)


def pretrain_flops(params: int, tokens: float) -> float:
    """``6 * N * D`` (Kaplan et al.; Hoffmann et al.)."""
    return 6.0 * params * tokens

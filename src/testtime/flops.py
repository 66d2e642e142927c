"""Parameter counts from model configs and the FLOPs of policy and PRM tokens.

Convention (Kaplan et al. 2020, used by Snell et al. 2024 and Liu et al. 2025):

* a forward pass costs ``2 * N`` FLOPs per token, pre-training ``6 * N * D``;
* ``N`` is the model's *nominal* size by default, the one in its name (3B, 405B; DeepSeek-R1:
  671B in all), which is what reproduces Liu et al.'s Table 4 exactly (Llama-3.2-3B
  pre-training ``6 * 3e9 * 9e12 = 1.62e23``, Llama-3.1-405B ``3.65e25``, DeepSeek-R1-Distill-7B
  ``7.56e23``, DeepSeek-R1 ``6 * 671e9 * 14.8e12 = 5.96e25``). ``--params non_embedding``
  counts the non-embedding parameters from the config (Kaplan's convention, 6-7 % below
  nominal for these models: the embedding lookup is no matrix product and the PRM's head reads
  a few positions), ``total`` every parameter, ``active`` the parameters a token passes
  through (a mixture of experts: DeepSeek-R1's 37B). A model without a published nominal size
  (a local directory) counts its total parameters as nominal.
* policy FLOPs = ``2 * N_policy * (prompt_tokens + completion_tokens)``, PRM FLOPs =
  ``2 * N_prm * scored_tokens``; the attention context term (``2 * layers * ctx * d``) is left
  out, as in the papers.

Parameters are counted from config fields (Llama, Mistral, Qwen2 decoders: attention with
grouped KV heads, SwiGLU MLP, RMSNorm; Qwen2 adds q/k/v biases; tied embeddings count once).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from testtime.model_sizes import (  # noqa: F401  (re-exported)
    ALIASES,
    KNOWN_CONFIGS,
    MOE,
    NOMINAL,
    PRETRAIN_TOKENS,
    SUFFIXES,
)

Convention = Literal["nominal", "non_embedding", "total", "active"]
CONVENTIONS: tuple[str, ...] = ("nominal", "non_embedding", "total", "active")
#: Architectures whose layer layout ``count_parameters`` knows.
ARCHITECTURES = ("llama", "mistral", "qwen2")
#: Defaults of ``tie_word_embeddings`` per model_type (transformers' config classes).
_TIED_DEFAULT = {"llama": False, "mistral": False, "qwen2": False}


@dataclass(frozen=True)
class ParamCount:
    """Parameters of a model: ``total``, ``non_embedding`` (no embedding / LM head), the
    published ``nominal`` size (None: unknown) and ``active`` per token (None: dense)."""

    total: int
    non_embedding: int
    nominal: int | None = None
    active: int | None = None

    def pick(self, convention: Convention = "nominal") -> int:
        if convention == "nominal":
            return self.nominal if self.nominal is not None else self.total
        if convention == "active":
            return self.active if self.active is not None else self.pick("nominal")
        if convention == "non_embedding":
            return self.non_embedding
        if convention == "total":
            return self.total
        raise ValueError(f"unknown parameter convention {convention!r}; use one of "
                         f"{', '.join(CONVENTIONS)}")


def _as_dict(config: Mapping[str, Any] | Any) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    raise TypeError(f"expected a config dict or PretrainedConfig, got {type(config).__name__}")


@dataclass(frozen=True)
class DecoderDims:
    """A dense decoder's dimensions as its ``config.json`` states them."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool


class MissingField(ValueError):
    """A ``config.json`` lacks a dimension (``field``)."""

    def __init__(self, field: str) -> None:
        self.field = field
        super().__init__(f"config field {field!r} is missing")


def decoder_dims(c: Mapping[str, Any]) -> DecoderDims:
    """The dimensions in ``config.json`` fields ``c`` (the counter's and the placement
    planner's one reading of them). Raises :class:`MissingField`."""
    try:
        layers = int(c["num_hidden_layers"])
        h = int(c["hidden_size"])
        heads = int(c["num_attention_heads"])
        vocab = int(c["vocab_size"])
        inter = int(c["intermediate_size"])
    except KeyError as exc:
        raise MissingField(exc.args[0]) from None
    tied_default = _TIED_DEFAULT.get(str(c.get("model_type", "llama")), False)
    return DecoderDims(h, inter, layers, heads, int(c.get("num_key_value_heads") or heads),
                       int(c.get("head_dim") or h // heads), vocab,
                       bool(c.get("tie_word_embeddings", tied_default)))


def count_parameters(config: Mapping[str, Any] | Any) -> ParamCount:
    """Parameter count of a Llama / Mistral / Qwen2 decoder from its ``config.json`` fields.

    Raises ``ValueError`` naming a missing field or an unknown ``model_type``.
    """
    c = _as_dict(config)
    model_type = c.get("model_type", "llama")
    if model_type not in ARCHITECTURES:
        raise ValueError(f"model_type {model_type!r} not supported; known: {ARCHITECTURES}")
    d = decoder_dims(c)
    h, inter, layers, heads, kv_heads, head_dim, vocab, tied = dataclasses.astuple(d)
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


def known_name(spec: str) -> str | None:
    """The ``KNOWN_CONFIGS`` key a model spec or Hub id names (``hf:Qwen/Qwen2.5-7B-Instruct``,
    ``skywork:Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B``, ``Qwen2.5-0.5B``), else None."""
    base = spec.split(":", 1)[-1].rstrip("/").split("/")[-1]
    base = base.removesuffix(".gguf").split(".Q")[0]
    for name in (base, *(base.removesuffix(s) for s in SUFFIXES)):
        name = ALIASES.get(name, name)
        for key in (*KNOWN_CONFIGS, *MOE):
            if key.lower() == name.lower():
                return key
    return None


def known_count(name: str) -> ParamCount:
    """The ``ParamCount`` of a ``known_name`` (nominal sizes filled in)."""
    if name in MOE:
        total, active = (int(x) for x in MOE[name])
        return ParamCount(total, total, total, active)
    c = count_parameters(KNOWN_CONFIGS[name])
    nominal = NOMINAL.get(name)
    return ParamCount(c.total, c.non_embedding, None if nominal is None else int(nominal))


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
                         f"{', '.join([*KNOWN_CONFIGS, *MOE, *ALIASES])}")
    return name, known_count(name)


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
    config at ``.model.config`` (HF policy), ``.engine.backbone.config`` (PRM scorers); the
    nominal size comes from the object's ``name`` when it names a known model."""
    given = getattr(obj, "param_count", None)
    if isinstance(given, ParamCount):
        return _with_nominal(given, obj)
    for path in (("model", "config"), ("engine", "backbone", "config"), ("backbone", "config")):
        target = obj
        for attr in path:
            target = getattr(target, attr, None)
            if target is None:
                break
        if target is not None:
            try:
                return _with_nominal(count_parameters(target), obj)
            except (ValueError, TypeError):
                return None  # an architecture we do not count: FLOPs stay 0 rather than wrong
    return None


def _with_nominal(count: ParamCount, obj: Any) -> ParamCount:
    if count.nominal is not None:
        return count
    name = known_name(str(getattr(obj, "name", "") or ""))
    nominal = NOMINAL.get(name) if name else None
    return count if nominal is None else dataclasses.replace(count, nominal=int(nominal))


@dataclass(frozen=True)
class FlopCosts:
    """FLOPs per token of the policy and the PRM (``2 * N``); 0 when unknown or model-free."""

    policy_params: int = 0
    prm_params: int = 0

    @classmethod
    def of(cls, policy: Any, scorer: Any, convention: Convention = "nominal") -> FlopCosts:
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


def costs_for_specs(policy: str, prm: str, convention: Convention = "nominal") -> FlopCosts:
    """Costs from a run config's ``policy``/``prm`` specs via the known-config table (0 where a
    spec is unknown or a scorer is model-free) -- for records written without FLOPs."""
    def known(spec: str) -> int:
        name = known_name(spec)
        return known_count(name).pick(convention) if name else 0

    return FlopCosts(known(policy), known(prm) if ":" in prm else 0)


def pretrain_flops(params: int, tokens: float) -> float:
    """``6 * N * D`` (Kaplan et al.; Hoffmann et al.)."""
    return 6.0 * params * tokens

"""Which published model a run's policy or PRM is, read from its config, never from run paths.

A policy spec (``hf:Qwen/Qwen2.5-1.5B-Instruct``, ``vllm:/models/x``, ``openai:NAME@URL``) is
resolved by :func:`testtime.flops.known_name` (Hub ids, instruct suffixes, aliases); when the
name says nothing and the spec is a local directory, its ``config.json`` decides: first its
``_name_or_path``, then its architecture (hidden size, layers, heads, vocabulary, tied
embeddings) against the published configs of ``testtime.model_sizes`` (an architecture two
models share, such as Qwen2.5-1.5B and Qwen2.5-Math-1.5B, resolves to the first listed and says
so in ``source``). A PRM is its family (the spec's backend: ``skywork``, ``qwen_prm``, ...) and
size, or a known PRM name; served PRMs (``http://``) are unknown.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testtime.analysis.paper_data import EXTRA_SIZES
from testtime.flops import MOE, NOMINAL, known_name, pretrain_flops
from testtime.model_sizes import ALIASES, KNOWN_CONFIGS, PRETRAIN_TOKENS, SUFFIXES

#: Backend prefixes of policy specs (``BACKEND:MODEL``).
POLICY_BACKENDS = ("hf", "vllm", "llamacpp", "openai")
#: Architecture fields that identify a published config.
SHAPE_FIELDS = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "vocab_size",
                "tie_word_embeddings")
#: PRM names (lower case, suffixes removed) -> the paper's PRM name.
PRM_NAMES: dict[str, str] = {
    "skywork-o1-open-prm-qwen-2.5-1.5b": "Skywork-PRM-1.5B", "skywork-prm-1.5b": "Skywork-PRM-1.5B",
    "skywork-o1-open-prm-qwen-2.5-7b": "Skywork-PRM-7B", "skywork-prm-7b": "Skywork-PRM-7B",
    "qwen2.5-math-prm-7b": "Qwen2.5-Math-PRM-7B", "qwen2.5-math-prm-72b": "Qwen2.5-Math-PRM-72B",
    "math-shepherd-mistral-7b-prm": "Math-Shepherd-PRM-7B", "math-shepherd": "Math-Shepherd-PRM-7B",
    "math-shepherd-prm-7b": "Math-Shepherd-PRM-7B",
    "llama3.1-8b-prm-mistral-data": "RLHFlow-PRM-Mistral-8B",
    "rlhflow-prm-mistral-8b": "RLHFlow-PRM-Mistral-8B",
    "llama3.1-8b-prm-deepseek-data": "RLHFlow-PRM-Deepseek-8B",
    "rlhflow-prm-deepseek-8b": "RLHFlow-PRM-Deepseek-8B",
}
#: (PRM family backend, backbone) -> the paper's PRM name, for local checkpoints.
PRM_BY_FAMILY: dict[tuple[str, str], str] = {
    ("skywork", "Qwen2.5-Math-1.5B"): "Skywork-PRM-1.5B",
    ("skywork", "Qwen2.5-Math-7B"): "Skywork-PRM-7B",
    ("qwen_prm", "Qwen2.5-Math-7B"): "Qwen2.5-Math-PRM-7B",
    ("qwen_prm", "Qwen2.5-72B"): "Qwen2.5-Math-PRM-72B",
    ("math_shepherd", "Mistral-7B"): "Math-Shepherd-PRM-7B",
    ("rlhflow", "Llama-3.1-8B"): "RLHFlow-PRM-8B",
}
PRM_FAMILIES = ("skywork", "qwen_prm", "math_shepherd", "rlhflow")


@dataclass(frozen=True)
class ModelId:
    """A run's model as the comparison knows it."""

    spec: str
    name: str | None
    """Canonical name (``testtime.model_sizes`` key, a PRM's paper name); None: unknown."""
    params: float | None
    """Nominal size (the number in the name); None when unknown."""
    source: str
    """How it was recognised: ``name``, ``config.json _name_or_path``, ``config.json
    architecture`` (``... (shared with X)`` when ambiguous) or ``unknown``."""

    @property
    def label(self) -> str:
        return self.name or self.spec


def size_of(name: str) -> float | None:
    """Nominal size of a canonical or paper model name (None: unpublished, closed model)."""
    key = known_name(name) or name
    if key in MOE:
        return MOE[key][0]
    return NOMINAL.get(key) or EXTRA_SIZES.get(name)


def pretraining_flops(model: str) -> float | None:
    """``6 N D`` of a canonical or paper model name (None: size or token count unpublished)."""
    size, tokens = size_of(model), PRETRAIN_TOKENS.get(known_name(model) or model)
    return None if size is None or tokens is None else pretrain_flops(int(size), tokens)


def canonical(name: str) -> str:
    """A paper name in the comparison's canonical form (``DeepSeek-R1-Distill-7B`` ->
    ``DeepSeek-R1-Distill-Qwen-7B``; closed models keep their name)."""
    return known_name(name) or name


def _model_part(spec: str) -> str:
    head, sep, rest = spec.partition(":")
    if sep and head in (*POLICY_BACKENDS, *PRM_FAMILIES, "vllm-pooling", "judge"):
        spec = rest
        if head == "openai" or head == "vllm-pooling":
            spec = spec.split("@", 1)[0]
        if head in ("vllm-pooling", "judge"):
            spec = _model_part(spec)
    return spec


def _read_config(path: Path) -> dict[str, Any] | None:
    cfg = path / "config.json" if path.is_dir() else None
    if cfg is None or not cfg.exists():
        return None
    try:
        data = json.loads(cfg.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{cfg}: not valid JSON: {exc}") from None
    return data if isinstance(data, dict) else None


def _by_shape(config: dict[str, Any], among: tuple[str, ...] = ()) -> tuple[str | None, str]:
    """The published config with this architecture (the first of ``among`` that matches, when
    given: a PRM's possible backbones)."""
    matches = [name for name, known in KNOWN_CONFIGS.items()
               if all(config.get(f, False) == known.get(f, False) for f in SHAPE_FIELDS)]
    matches = [m for m in among if m in matches] + [m for m in matches if m not in among]
    if not matches:
        return None, "unknown"
    note = f" (shared with {', '.join(matches[1:])})" if len(matches) > 1 else ""
    return matches[0], f"config.json architecture{note}"


def _from_config(model: str, among: tuple[str, ...] = ()) -> tuple[str | None, str]:
    config = _read_config(Path(model))
    if config is None:
        return None, "unknown"
    hint = config.get("_name_or_path")
    if isinstance(hint, str) and hint and (name := known_name(hint)):
        return name, "config.json _name_or_path"
    return _by_shape(config, among)


def policy_id(spec: str) -> ModelId:
    """The published policy a run's ``--policy`` spec names (see the module docstring)."""
    model = _model_part(spec)
    name, source = known_name(model), "name"
    if name is None:
        name, source = _from_config(model)
    return ModelId(spec, name, None if name is None else size_of(name), source)


def _base(model: str) -> str:
    base = model.rstrip("/").split("/")[-1]
    for s in SUFFIXES:
        base = base.removesuffix(s)
    return base.lower()


def prm_id(spec: str) -> ModelId:
    """The published PRM a run's ``--prm`` spec names; model-free and served scorers are
    unknown (their spec is their label)."""
    family = spec.split(":", 1)[0]
    if family == "vllm-pooling":
        rest = spec.split(":", 1)[1]
        family = rest.split(":", 1)[0] if rest.split(":", 1)[0] in PRM_FAMILIES else ""
    model = _model_part(spec)
    name = PRM_NAMES.get(_base(model)) or PRM_NAMES.get(
        _base(ALIASES.get(model, model)))
    source = "name"
    if name is None and family in PRM_FAMILIES:
        backbone, source = known_name(model), "name"
        if backbone is None:
            backbone, source = _from_config(
                model, tuple(b for f, b in PRM_BY_FAMILY if f == family))
        name = PRM_BY_FAMILY.get((family, backbone or ""))
    if name is None:
        return ModelId(spec, None, None, "unknown")
    size = re.search(r"(\d+(?:\.\d+)?)B$", name)
    return ModelId(spec, name, float(size.group(1)) * 1e9 if size else None, source)


def dataset_id(name: str) -> str:
    """``math500`` / ``aime24`` / ``amc23`` for a dataset name or JSONL path (its file name),
    else the name's stem in lower case."""
    stem = Path(name).name.lower().removesuffix(".jsonl").removesuffix(".json")
    flat = stem.replace("-", "").replace("_", "")
    for key, forms in (("math500", ("math500",)), ("aime24", ("aime24", "aime2024")),
                       ("amc23", ("amc23", "amc2023"))):
        if flat in forms:
            return key
    return stem

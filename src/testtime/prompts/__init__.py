"""Prompt templates per model family, picked from the model name (overridable by name).

Families (first match wins, on the lower-cased model name or policy name):

* ``deepseek_r1``: ``deepseek-r1`` or ``r1-distill`` (checked first: the R1 distills are
  Qwen and Llama models by name);
* ``qwen``: ``qwen`` (Qwen2.5 and Qwen2.5-Math Instruct);
* ``llama3``: ``llama-3``, ``llama3`` or ``llama_3`` (Llama 3.x Instruct);
* ``default``: anything else, including the embedded SmolLM2 (a worked example keeps
  small models on format).
"""

from __future__ import annotations

import re

from testtime.prompts.base import PromptTemplate, RecommendedSampling, WorkedExample

#: (family, pattern on the lower-cased model name), in priority order.
_FAMILY_PATTERNS: tuple[tuple[str, str], ...] = (
    ("deepseek_r1", r"deepseek[-_]?r1|r1[-_]distill"),
    ("qwen", r"qwen"),
    ("llama3", r"llama[-_]?3"),
)


def _templates() -> dict[str, PromptTemplate]:
    from testtime.prompts import deepseek_r1, default, llama3, qwen

    return {t.name: t for t in (default.TEMPLATE, llama3.TEMPLATE, qwen.TEMPLATE,
                                deepseek_r1.TEMPLATE)}


def all_templates() -> list[PromptTemplate]:
    """Every shipped template."""
    return list(_templates().values())


def prompt_names() -> list[str]:
    """Names accepted as ``override`` (``--prompt``)."""
    return sorted(_templates())


def family_of(model_name: str) -> str:
    """The prompt family a model name belongs to (``default`` when none matches)."""
    name = model_name.lower()
    for family, pattern in _FAMILY_PATTERNS:
        if re.search(pattern, name):
            return family
    return "default"


def prompt_for_model(model_name: str, override: str | None = None) -> PromptTemplate:
    """The prompt template for a model: ``override`` by name, else chosen from the model name.

    ``model_name`` may be a bare model id or a policy name such as ``vllm:Qwen/Qwen2.5-1.5B``.
    """
    templates = _templates()
    if override is not None:
        key = override.strip().lower().replace("-", "_")
        if key not in templates:
            raise ValueError(f"unknown prompt {override!r}; known: {sorted(templates)}")
        return templates[key]
    return templates[family_of(model_name)]


__all__ = [
    "PromptTemplate",
    "RecommendedSampling",
    "WorkedExample",
    "family_of",
    "prompt_for_model",
    "prompt_names",
]

"""Prompt templates per model family, picked from the model name (overridable)."""

from __future__ import annotations

from testtime.prompts.base import PromptTemplate, WorkedExample


def prompt_for_model(model_name: str, override: str | None = None) -> PromptTemplate:
    """The prompt template for a model: ``override`` by name, else chosen from the model name."""
    from testtime.prompts.default import TEMPLATE as default

    templates = {"default": default}
    if override is not None:
        if override not in templates:
            raise ValueError(f"unknown prompt {override!r}; known: {sorted(templates)}")
        return templates[override]
    return default


__all__ = ["PromptTemplate", "WorkedExample", "prompt_for_model"]

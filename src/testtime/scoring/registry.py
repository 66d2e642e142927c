"""Build a step scorer from its spec string (``--prm``), importing heavy parts lazily.

Specs: ``self-certainty`` and ``confidence`` (model-free, from the policy's own token
statistics), ``FAMILY:PATH_OR_HUB_ID`` for a process reward model (see
``testtime.scoring.prm``).
"""

from __future__ import annotations

from typing import Any

from testtime.scoring.base import StepScorer

MODEL_FREE = ("self-certainty", "confidence")


def build_scorer(spec: str, options: dict[str, Any] | None = None) -> StepScorer:
    """The scorer named by ``spec``; ``options`` go to a PRM factory (device, dtype, ...)."""
    if spec in MODEL_FREE:
        from testtime.scoring.self_certainty import SelfCertaintyScorer

        return SelfCertaintyScorer(spec)  # type: ignore[arg-type]
    if ":" in spec:
        from testtime.scoring.prm import PRM_FAMILIES, load_prm

        family = spec.partition(":")[0]
        if family in PRM_FAMILIES:
            return load_prm(spec, **(options or {}))
    raise ValueError(
        f"unknown scorer {spec!r}: use one of {', '.join(MODEL_FREE)} or FAMILY:PATH "
        f"with FAMILY in math_shepherd, rlhflow, skywork, qwen_prm"
    )

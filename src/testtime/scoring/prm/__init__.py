"""Process reward models: one adapter per PRM family behind the ``StepScorer`` protocol.

Families are chosen as ``--prm FAMILY:PATH_OR_HUB_ID``. Each factory has the signature
``(path_or_id, device=None, dtype=None, max_batch_tokens=8192, trust_remote_code=False,
kv_cache_gb=None)`` and
returns a :class:`~testtime.scoring.prm.scorer.PRMScorer`. Family modules import torch and
transformers, so they are imported only when a factory is called.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from testtime.scoring.prm.scorer import PRMScorer

PRMFactory = Callable[..., "PRMScorer"]


def _lazy(module: str, factory: str) -> PRMFactory:
    def load(*args: Any, **kwargs: Any) -> PRMScorer:
        return getattr(importlib.import_module(f"testtime.scoring.prm.{module}"), factory)(
            *args, **kwargs
        )

    load.__name__ = factory
    load.__doc__ = f"Load a PRM with ``testtime.scoring.prm.{module}.{factory}`` (lazy import)."
    return load


PRM_FAMILIES: dict[str, PRMFactory] = {
    "math_shepherd": _lazy("math_shepherd", "load_math_shepherd"),
    "rlhflow": _lazy("rlhflow", "load_rlhflow"),
    "skywork": _lazy("skywork", "load_skywork"),
    "qwen_prm": _lazy("qwen_prm", "load_qwen_prm"),
}
"""Family name -> factory ``(path_or_id, device, dtype, max_batch_tokens, trust_remote_code,
kv_cache_gb)``."""


def parse_prm_spec(spec: str) -> tuple[str, str]:
    """Split ``"FAMILY:PATH_OR_HUB_ID"`` at the first colon and check the family."""
    family, sep, path = spec.partition(":")
    if not sep or not path:
        raise ValueError(f"PRM spec {spec!r} must look like FAMILY:PATH_OR_HUB_ID")
    if family not in PRM_FAMILIES:
        raise ValueError(f"unknown PRM family {family!r}; choose from {sorted(PRM_FAMILIES)}")
    return family, path


def load_prm(spec: str, **kwargs: Any) -> PRMScorer:
    """Load ``"FAMILY:PATH_OR_HUB_ID"``; ``kwargs`` go to the family's factory, except the
    placement options ``gpus``/``device_map``/``max_memory`` (``loader.load_placed``)."""
    from testtime.scoring.prm.loader import load_placed

    family, path = parse_prm_spec(spec)
    return load_placed(PRM_FAMILIES[family], path, **kwargs)


__all__ = ["PRM_FAMILIES", "PRMFactory", "load_prm", "parse_prm_spec"]

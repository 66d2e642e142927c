"""The placement plan: which GPUs each model gets, and how much of each (value types only).

``PlacementPlan.to_json()`` is what ``testtime plan --json`` prints; ``policy_options()`` and
``prm_options()`` are the engine options (``RunConfig.policy_options`` / ``prm_options``
keys) that load the models as planned.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Engine = Literal["vllm", "hf", "prm"]


@dataclass(frozen=True)
class GpuInfo:
    """One GPU: its CUDA index and total memory in GiB."""

    index: int
    total_gb: float

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"GPU index must be >= 0, got {self.index}")
        if not self.total_gb > 0:
            raise ValueError(f"GPU memory must be > 0 GiB, got {self.total_gb}")


def round_gb(value: float) -> float:
    return round(value, 2)


@dataclass(frozen=True)
class ModelPlacement:
    """Where one model (policy or PRM) runs. GiB throughout."""

    spec: str
    """The spec as given (``vllm:MODEL``, ``skywork:PATH``, ``confidence``, ...)."""
    engine: Engine | None
    """What loads it; None: no GPU (model-free scorer, remote server, llama.cpp)."""
    gpus: tuple[int, ...] = ()
    weights_gb: float = 0.0
    shares_gb: Mapping[int, float] = field(default_factory=dict)
    """GiB planned on each of ``gpus`` (vLLM: ``gpu_memory_utilization x total``)."""
    need_gb: float = 0.0
    """The least GiB it needs on each of its GPUs."""
    tensor_parallel_size: int | None = None
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None
    max_memory: Mapping[str, float] | None = None
    """accelerate's weight budget per device (``{"cuda:2": 68.0}``) when split over GPUs."""
    kv_cache_gb: float | None = None
    """The PRM's KV store budget."""

    @property
    def device_map(self) -> str | None:
        """``"auto"`` (accelerate, bounded by ``max_memory``) when split over several GPUs."""
        return "auto" if self.engine in ("hf", "prm") and len(self.gpus) > 1 else None

    @property
    def device(self) -> str | None:
        return f"cuda:{self.gpus[0]}" if self.engine in ("hf", "prm") and self.gpus else None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"spec": self.spec, "engine": self.engine,
                               "gpus": list(self.gpus), "weights_gb": round_gb(self.weights_gb),
                               "need_gb": round_gb(self.need_gb),
                               "planned_gb": {str(g): round_gb(v)
                                              for g, v in self.shares_gb.items()}}
        if self.engine == "vllm":
            out.update(tensor_parallel_size=self.tensor_parallel_size,
                       gpu_memory_utilization=self.gpu_memory_utilization,
                       max_model_len=self.max_model_len)
        elif self.engine in ("hf", "prm"):
            out.update(device=self.device, device_map=self.device_map,
                       max_memory=dict(self.max_memory) if self.max_memory else None)
            if self.engine == "hf":
                out["max_model_len"] = self.max_model_len
            else:
                out["kv_cache_gb"] = self.kv_cache_gb
        return out

    def options(self) -> dict[str, Any]:
        """Engine options (``RunConfig`` keys) that load this model as planned."""
        if not self.gpus:
            return {}
        opts: dict[str, Any] = {"gpus": self.gpus}
        if self.engine == "vllm":
            opts.update(tensor_parallel_size=self.tensor_parallel_size,
                        gpu_memory_utilization=self.gpu_memory_utilization,
                        max_model_len=self.max_model_len)
            return opts
        opts["device"] = self.device
        if self.device_map is not None:
            opts.update(device_map=self.device_map, max_memory=dict(self.max_memory or {}))
        # (an hf policy's context length only sizes its plan: transformers takes the model's)
        if self.engine == "prm" and self.kv_cache_gb is not None:
            opts["kv_cache_gb"] = self.kv_cache_gb
        return opts


@dataclass(frozen=True)
class PlacementPlan:
    """The GPUs, and where the policy and the PRM run on them."""

    gpus: tuple[GpuInfo, ...]
    policy: ModelPlacement
    prm: ModelPlacement

    def planned_gb(self, index: int) -> float:
        return sum(m.shares_gb.get(index, 0.0) for m in (self.policy, self.prm))

    def to_json(self) -> dict[str, Any]:
        """``{gpus: [{index, total_gb, planned_gb}], policy: {...}, prm: {...}}``."""
        return {"gpus": [{"index": g.index, "total_gb": round_gb(g.total_gb),
                          "planned_gb": round_gb(self.planned_gb(g.index))} for g in self.gpus],
                "policy": self.policy.to_json(), "prm": self.prm.to_json()}

    def policy_options(self) -> dict[str, Any]:
        return self.policy.options()

    def prm_options(self) -> dict[str, Any]:
        return self.prm.options()

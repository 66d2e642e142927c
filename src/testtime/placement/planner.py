"""Decide where the policy and the PRM run, from their ``config.json`` and the GPUs.

Layouts are tried in this order, the first that fits wins (the paper's layouts come first):

1. for each tensor-parallel degree ``t`` (vLLM: a power of two dividing the attention heads;
   ``hf:``: any number of GPUs), smallest first: the policy alone on GPUs ``0..t-1`` (vLLM's
   share 0.95, as the paper) and the PRM alone on the fewest following GPUs that hold it
   (split by accelerate's device map when it needs several);
2. the PRM beside the policy on its last GPU(s): the PRM's weights, activations, padded cache
   copy and KV store are planned first, vLLM's ``gpu_memory_utilization`` is what is left
   (at most the paper's 0.88), and it must still hold vLLM's need (``budget.vllm_need_gib``).

Options the user fixed (``gpus``, ``tensor_parallel_size``, ``gpu_memory_utilization``,
``max_model_len``, ``dtype``; the PRM's ``gpus``, ``dtype``, ``kv_cache_gb``,
``max_batch_tokens``) narrow the search; ``device="cpu"`` keeps that model off the GPUs. A layout that cannot fit raises :class:`PlacementError`: one line naming the model,
what it needs and what the GPUs have.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from testtime.placement import budget as B
from testtime.placement.budget import gib
from testtime.placement.plan import GpuInfo, ModelPlacement, PlacementPlan
from testtime.placement.shapes import ModelShape, PlacementError, model_shape

#: Policy backends that run on the planned GPUs; the others (llama.cpp, openai) need none.
GPU_POLICY_BACKENDS = ("vllm", "hf")
#: Kept off the PRM's KV store beside vLLM, so that vLLM's share rounds to the paper's 0.88
#: rather than 0.87 when the store takes all the paper leaves.
SHARE_MARGIN_GIB = 0.05


@dataclass(frozen=True)
class _Model:
    spec: str
    engine: str | None
    shape: ModelShape | None = None
    max_model_len: int | None = None
    gpus: tuple[int, ...] | None = None
    tp: int | None = None
    util: float | None = None
    kv_cache_gb: float | None = None
    batch_tokens: int = B.PRM_BATCH_TOKENS

    def prm_fixed(self, gpus: int, kv_store: bool) -> float:
        assert self.shape is not None
        return B.prm_fixed_gib(self.shape, gpus, kv_store, self.batch_tokens)


def detect_gpus() -> list[GpuInfo]:
    """The CUDA devices torch sees (none without torch or CUDA)."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [GpuInfo(i, B.gib(torch.cuda.get_device_properties(i).total_memory))
            for i in range(torch.cuda.device_count())]


def given_gpus(num_gpus: int, gpu_memory: float) -> list[GpuInfo]:
    """``num_gpus`` GPUs of ``gpu_memory`` GiB each (to plan for another machine)."""
    if num_gpus < 0:
        raise PlacementError(f"must be >= 0, got {num_gpus}", "--num-gpus")
    if not gpu_memory > 0:
        raise PlacementError(f"must be > 0 GiB, got {gpu_memory}", "--gpu-memory")
    return [GpuInfo(i, float(gpu_memory)) for i in range(num_gpus)]


def _policy_model(spec: str, opts: Mapping[str, Any]) -> _Model:
    backend, _, model = spec.partition(":")
    if backend not in GPU_POLICY_BACKENDS or not model or opts.get("device") == "cpu":
        return _Model(spec, None)
    shape = model_shape(model, opts.get("dtype"))
    length = opts.get("max_model_len") or B.default_max_model_len(model, shape)
    gpus = tuple(opts["gpus"]) if opts.get("gpus") else None
    return _Model(spec, backend, shape, int(length), gpus, opts.get("tensor_parallel_size"),
                  opts.get("gpu_memory_utilization"))


def _prm_model(spec: str, opts: Mapping[str, Any]) -> _Model:
    from testtime.scoring.prm import PRM_FAMILIES

    family, _, model = spec.partition(":")
    if family == "judge" and model.startswith("hf:"):
        family, model = "judge", model[3:]
    elif family not in PRM_FAMILIES or not model:
        return _Model(spec, None)  # model-free, remote or analysis-only: no GPU
    if opts.get("device") == "cpu":
        return _Model(spec, None)
    gpus = tuple(opts["gpus"]) if opts.get("gpus") else None
    return _Model(spec, "prm", model_shape(model, opts.get("dtype")), gpus=gpus,
                  kv_cache_gb=opts.get("kv_cache_gb"),
                  batch_tokens=int(opts.get("max_batch_tokens") or B.PRM_BATCH_TOKENS))


def _tp_degrees(m: _Model, count: int) -> list[int]:
    if m.gpus is not None:
        sizes = [m.tp or len(m.gpus)]
    elif m.tp is not None:
        sizes = [m.tp]
    else:
        sizes = list(range(1, count + 1))
    if m.engine != "vllm":
        return [s for s in sizes if s <= count]
    assert m.shape is not None
    # vLLM splits attention heads evenly across ranks; the paper runs 70B/72B with TP 2
    return [t for t in sizes if t <= count and t & (t - 1) == 0 and m.shape.heads % t == 0
            and (m.shape.kv_heads % t == 0 or t % m.shape.kv_heads == 0)]


def _policy_need(m: _Model, t: int) -> float:
    assert m.shape is not None and m.max_model_len is not None
    if m.engine == "vllm":
        return B.vllm_need_gib(m.shape, t, m.max_model_len)
    return B.hf_policy_need_gib(m.shape, t, m.max_model_len)


def _prm_shares(m: _Model, gpus: Sequence[GpuInfo], room: Mapping[int, float],
                sharing: bool) -> tuple[dict[int, float], float] | None:
    """The PRM's GiB per GPU and its KV store, or None when it does not fit ``room``."""
    assert m.shape is not None
    k = len(gpus)
    store = m.kv_cache_gb != 0
    fixed = m.prm_fixed(k, store)
    left = min(room[g.index] for g in gpus) - fixed
    if m.kv_cache_gb is not None:
        kv = float(m.kv_cache_gb)
    else:
        # beside vLLM, the store takes what the paper's 0.88 leaves, within [min, default]
        cap = min((1 - B.PAPER_UTIL_SHARED) * g.total_gb for g in gpus) - fixed \
            - SHARE_MARGIN_GIB if sharing else left
        kv = max(B.PRM_KV_STORE_MIN_GIB, min(B.PRM_KV_STORE_DEFAULT_GIB, cap * k))
        kv = math.floor(kv * 100) / 100
    if fixed + kv / k > min(room[g.index] for g in gpus) + 1e-9:
        return None
    return {g.index: fixed + kv / k for g in gpus}, kv


def _fit(pol: _Model, prm: _Model, gpus: Sequence[GpuInfo], t: int, prm_gpus: Sequence[int]
         ) -> tuple[ModelPlacement, ModelPlacement] | None:
    by_index = {g.index: g for g in gpus}
    pol_gpus = list(pol.gpus) if pol.gpus is not None else [g.index for g in gpus[:t]]
    need = _policy_need(pol, t)
    shared = set(pol_gpus) & set(prm_gpus)
    room = {g: by_index[g].total_gb * B.PAPER_UTIL_ALONE for g in prm_gpus}
    if shared:  # the PRM's room beside the policy: what the policy's need leaves
        for g in shared:
            room[g] = by_index[g].total_gb * B.PAPER_UTIL_ALONE - need
    beside_vllm = bool(shared) and pol.engine == "vllm"
    prm_plan = _prm_shares(prm, [by_index[g] for g in prm_gpus], room, beside_vllm) \
        if prm_gpus else ({}, None)
    if prm_plan is None:
        return None
    prm_shares, kv = prm_plan
    shares: dict[int, float] = {}
    util: float | None = None
    if pol.engine == "vllm":
        cap = B.PAPER_UTIL_SHARED if shared else B.PAPER_UTIL_ALONE
        util = pol.util or min(B.floor_util(1 - prm_shares.get(g, 0.0) / by_index[g].total_gb)
                               for g in pol_gpus)
        util = min(util, cap) if pol.util is None else util
        shares = {g: util * by_index[g].total_gb for g in pol_gpus}
    else:
        shares = {g: need for g in pol_gpus}
    for g in pol_gpus:
        have = shares[g] + prm_shares.get(g, 0.0)
        if shares[g] < need - 1e-9 or have > by_index[g].total_gb + 1e-9:
            return None
    assert pol.shape is not None
    policy = ModelPlacement(
        pol.spec, pol.engine, tuple(pol_gpus), B.gib(pol.shape.weights_bytes), shares,  # type: ignore[arg-type]
        need, tensor_parallel_size=t if pol.engine == "vllm" else None,
        gpu_memory_utilization=round(util, 2) if util is not None else None,
        max_model_len=pol.max_model_len,
        max_memory=_max_memory(pol.shape, pol_gpus, shares) if pol.engine == "hf" else None)
    return policy, _prm_placement(prm, prm_gpus, prm_shares, kv)


def _max_memory(shape: ModelShape, gpus: Sequence[int], shares: Mapping[int, float]
                ) -> dict[str, float] | None:
    """accelerate's weight budget per GPU: an even share plus one layer or embedding of
    slack (whole decoder layers are placed), within the GPU's planned share."""
    if len(gpus) < 2:
        return None
    layer = B.gib(shape.weights_bytes) / shape.layers
    embed = B.gib(shape.vocab * shape.hidden * shape.dtype_bytes)
    even = B.gib(shape.weights_bytes) / len(gpus) + max(layer, embed)
    return {f"cuda:{g}": round(min(even, shares[g]), 2) for g in gpus}


def _prm_placement(prm: _Model, gpus: Sequence[int], shares: Mapping[int, float],
                   kv: float | None) -> ModelPlacement:
    if prm.shape is None:
        return ModelPlacement(prm.spec, None)
    return ModelPlacement(prm.spec, "prm", tuple(gpus), B.gib(prm.shape.weights_bytes),
                          dict(shares), prm.prm_fixed(len(gpus), kv != 0),
                          max_memory=_max_memory(prm.shape, gpus, shares), kv_cache_gb=kv)


def _prm_candidates(prm: _Model, gpus: Sequence[GpuInfo], pol_gpus: list[int]
                    ) -> list[list[int]]:
    if prm.engine is None:
        return [[]]
    if prm.gpus is not None:
        return [list(prm.gpus)]
    rest = [g.index for g in gpus if g.index not in pol_gpus]
    apart = [rest[:k] for k in range(1, len(rest) + 1)]
    beside = [pol_gpus[-k:] for k in range(1, len(pol_gpus) + 1)]
    # split over the policy's last GPU and the free ones after it, before sharing them all
    return apart + beside + [pol_gpus[-1:] + rest[:k] for k in range(1, len(rest) + 1)]


def plan_placement(policy: str, prm: str, gpus: Sequence[GpuInfo] | None = None, *,
                   policy_options: Mapping[str, Any] | None = None,
                   prm_options: Mapping[str, Any] | None = None) -> PlacementPlan:
    """The plan for ``policy`` and ``prm`` on ``gpus`` (None: the GPUs torch finds).

    Reads each model's ``config.json`` only. Raises :class:`PlacementError` (a ``UserError``:
    one line) when a config cannot be read or no layout fits.
    """
    pol = _policy_model(policy, policy_options or {})
    rm = _prm_model(prm, prm_options or {})
    found = detect_gpus() if gpus is None else list(gpus)
    if pol.engine is None and rm.engine is None:
        return PlacementPlan(tuple(found), ModelPlacement(policy, None), ModelPlacement(prm, None))
    if not found:
        raise PlacementError("needs a GPU and there is none (give --num-gpus K --gpu-memory "
                             "GB to plan for another machine)", "--policy" if pol.engine else "--prm",
                             policy if pol.engine else prm)
    _check_indices(pol, rm, found)
    if pol.engine is None:
        for cand in _prm_candidates(rm, found, []):
            shares = _prm_shares(rm, [g for g in found if g.index in cand],
                                 {g.index: g.total_gb * B.PAPER_UTIL_ALONE for g in found}, False)
            if shares is not None:
                return PlacementPlan(tuple(found), ModelPlacement(policy, None),
                                     _prm_placement(rm, cand, *shares))
        raise _too_big(rm, found, "")
    degrees = _tp_degrees(pol, len(found))
    for t in degrees:
        pol_gpus = list(pol.gpus) if pol.gpus is not None else [g.index for g in found[:t]]
        for cand in _prm_candidates(rm, found, pol_gpus):
            fitted = _fit(pol, rm, found, t, cand)
            if fitted is not None:
                return PlacementPlan(tuple(found), *fitted)
    raise _infeasible(pol, rm, found, degrees)


def _check_indices(pol: _Model, prm: _Model, gpus: Sequence[GpuInfo]) -> None:
    known = {g.index for g in gpus}
    for m, option in ((pol, "--gpus"), (prm, "--prm-gpus")):
        bad = sorted(set(m.gpus or ()) - known)
        if bad:
            raise PlacementError(f"no GPU {bad[0]}; the GPUs are {sorted(known)}", option,
                                 ",".join(map(str, m.gpus or ())))


def _have(gpus: Sequence[GpuInfo]) -> str:
    sizes = sorted({round(g.total_gb, 1) for g in gpus})
    size = f"{sizes[0]:g} GiB" if len(sizes) == 1 else "/".join(f"{s:g}" for s in sizes) + " GiB"
    return f"the GPUs have {len(gpus)} x {size}"


def _too_big(m: _Model, gpus: Sequence[GpuInfo], beside: str) -> PlacementError:
    assert m.shape is not None
    need = m.prm_fixed(1, m.kv_cache_gb != 0) + B.PRM_KV_STORE_MIN_GIB
    return PlacementError(f"needs {need:.1f} GiB in all ({gib(m.shape.weights_bytes):.1f} GiB "
                          f"weights + activations, KV store and CUDA context){beside}; "
                          f"{_have(gpus)}", "--prm", m.spec)


def _infeasible(pol: _Model, prm: _Model, gpus: Sequence[GpuInfo], degrees: list[int]
                ) -> PlacementError:
    assert pol.shape is not None
    weights = gib(pol.shape.weights_bytes)
    fits = [t for t in degrees
            if _policy_need(pol, t) <= B.PAPER_UTIL_ALONE * min(g.total_gb for g in gpus[:t])]
    if not fits:
        t = max(degrees) if degrees else 1
        where = f"on each of {t} GPUs" if t > 1 else "on one GPU"
        how = f"{where} (tensor parallel {t})" if pol.engine == "vllm" else where
        return PlacementError(f"needs {_policy_need(pol, t):.1f} GiB {how}: {weights:.1f} "
                              f"GiB weights + KV cache for {pol.max_model_len} tokens + "
                              f"overhead; {_have(gpus)}", "--policy", pol.spec)
    t = fits[0]
    where = f"each of its {t} GPUs" if t > 1 else "its GPU"
    return _too_big(prm, gpus, f" beside {pol.spec} ({_policy_need(pol, t):.1f} GiB on {where})")

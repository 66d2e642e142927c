"""The one loader every PRM family goes through (``load_math_shepherd``, ``load_rlhflow``,
``load_skywork``, ``load_qwen_prm`` are this with their own encoder and head).

A family gives its input encoder (built from the checkpoint's tokenizer) and a function that
loads its backbone and scoring head; the rest is shared: device and dtype resolution, the
tokenizer, the batched :class:`ForwardEngine`, and the scorer's input-length limit (the
backbone's context, ``max_position_embeddings``), so an over-long path fails with a clear error
instead of being scored past what the model was trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from testtime.placement.loading import DeviceMap, MaxMemory, input_device, output_device
from testtime.scoring.prm.checkpoint import (
    DeviceLike,
    DevicePlacement,
    DtypeLike,
    active_placement,
    device_placement,
    load_causal_lm_parts,
    load_tokenizer,
    pad_id_of,
    resolve_device,
    resolve_dtype,
)
from testtime.scoring.prm.engine import DEFAULT_MAX_BATCH_TOKENS, ForwardEngine, TwoTokenHead
from testtime.scoring.prm.kv_store import GIB, PrefixKVStore, default_budget_bytes
from testtime.scoring.prm.scorer import PRMScorer, StepEncoder

PartsLoader = Callable[[str, torch.device, torch.dtype, Any, bool], tuple[nn.Module, nn.Module]]
"""``(path_or_id, device, dtype, encoder, trust_remote_code) -> (backbone, head)``."""


def context_length(config: Any) -> int | None:
    """The longest input a backbone was trained on (``max_position_embeddings``), if known."""
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def load_family(
    family: str,
    path_or_id: str,
    *,
    make_encoder: Callable[[Any], StepEncoder],
    load_parts: PartsLoader,
    device: DeviceLike = None,
    dtype: DtypeLike = None,
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    trust_remote_code: bool = False,
    kv_cache_gb: float | None = None,
    device_map: DeviceMap | None = None,
    max_memory: MaxMemory | None = None,
    offload_folder: str | None = None,
) -> PRMScorer:
    """Load one PRM: tokenizer -> encoder, backbone + head, batched engine, scorer.

    ``device_map`` (``"auto"`` or ``{module: device}``) with ``max_memory`` (``{"cuda:0": 30,
    "cpu": 60}`` GiB) splits the backbone over devices through accelerate (weights loaded
    straight onto their devices); without them the device map of an enclosing
    :func:`~testtime.scoring.prm.checkpoint.device_placement` applies, else everything goes
    on ``device``. Inputs go to the first layer's device, the head sits on the last layer's,
    and the KV store keeps each layer's keys/values on that layer's device.

    ``kv_cache_gb``: memory for the keys/values of scored prefixes, so a path that grew by a
    step only runs its new tokens (:mod:`testtime.scoring.prm.incremental`); None: the
    device's default (``kv_store.default_budget_bytes``), 0: off (every path is rescored from
    its first token). A backbone from remote code (``trust_remote_code``) is always rescored:
    its cache interface is not known.
    """
    if kv_cache_gb is not None and kv_cache_gb < 0:
        raise ValueError(f"kv_cache_gb must be >= 0, got {kv_cache_gb}")
    if device_map is None and max_memory:
        raise ValueError("max_memory needs a device_map (e.g. 'auto')")
    placement = DevicePlacement(device_map, max_memory, offload_folder) \
        if device_map is not None else active_placement()
    dev = resolve_device(device)
    tokenizer = load_tokenizer(path_or_id, trust_remote_code)
    encoder = make_encoder(tokenizer)
    with device_placement(placement):
        backbone, head = load_parts(path_or_id, dev, resolve_dtype(dtype, dev), encoder,
                                    trust_remote_code)
    first, last = input_device(backbone), output_device(backbone)
    engine = ForwardEngine(backbone, head.to(last), pad_token_id=pad_id_of(tokenizer),
                           max_batch_tokens=max_batch_tokens, device=first,
                           kv_store=kv_store_for(backbone, first, kv_cache_gb))
    return PRMScorer(f"{family}:{path_or_id}", encoder, engine,
                     max_input_tokens=context_length(getattr(backbone, "config", None)))


def load_placed(factory: Callable[..., PRMScorer], path_or_id: str, *,
                gpus: Sequence[int] | None = None, device_map: DeviceMap | None = None,
                max_memory: MaxMemory | None = None, **kwargs: Any) -> PRMScorer:
    """Call a family factory (``load_skywork``, ...) with the PRM placed by the engine options
    ``gpus`` / ``device_map`` / ``max_memory`` (``RunConfig.prm_options``; the placement plan's
    ``prm_options()``). One GPU: ``device`` defaults to it. Several: split over them
    (``device_map`` defaults to ``"auto"``, ``max_memory`` to each one's whole memory, so
    accelerate uses only those GPUs)."""
    if gpus and kwargs.get("device") is None:
        kwargs["device"] = f"cuda:{gpus[0]}"
    if gpus and len(gpus) > 1 and device_map is None:
        device_map = "auto"
    if device_map is not None and max_memory is None and gpus:
        max_memory = {f"cuda:{g}": torch.cuda.get_device_properties(g).total_memory / GIB
                      for g in gpus}
    if device_map is None and max_memory:
        raise ValueError("max_memory needs a device_map (e.g. 'auto') or several gpus")
    placement = DevicePlacement(device_map, max_memory) if device_map is not None else None
    with device_placement(placement):
        return factory(path_or_id, **kwargs)


def kv_store_for(backbone: nn.Module, device: torch.device, kv_cache_gb: float | None
                 ) -> PrefixKVStore | None:
    """The KV store of an engine (see :func:`load_family`), or None when reuse is off."""
    if kv_cache_gb == 0 or not type(backbone).__module__.startswith("transformers.models."):
        return None
    budget = default_budget_bytes(device) if kv_cache_gb is None else int(kv_cache_gb * GIB)
    return PrefixKVStore(max(budget, 1))


def two_token_parts(path_or_id: str, device: torch.device, dtype: torch.dtype, encoder: Any,
                    trust_remote_code: bool) -> tuple[nn.Module, nn.Module]:
    """A causal LM read at two vocabulary entries (``encoder.good_id`` / ``bad_id``): the
    decoder stack plus those two rows of its LM head (Math-Shepherd, RLHFlow)."""
    backbone, lm_head = load_causal_lm_parts(path_or_id, device=device, dtype=dtype,
                                             trust_remote_code=trust_remote_code)
    head = TwoTokenHead(lm_head, encoder.good_id, encoder.bad_id)
    del lm_head  # only the two rows are kept
    return backbone, head

"""The one loader every PRM family goes through (``load_math_shepherd``, ``load_rlhflow``,
``load_skywork``, ``load_qwen_prm`` are this with their own encoder and head).

A family gives its input encoder (built from the checkpoint's tokenizer) and a function that
loads its backbone and scoring head; the rest is shared: device and dtype resolution, the
tokenizer, the batched :class:`ForwardEngine`, and the scorer's input-length limit (the
backbone's context, ``max_position_embeddings``), so an over-long path fails with a clear error
instead of being scored past what the model was trained on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from testtime.scoring.prm.checkpoint import (
    DeviceLike,
    DtypeLike,
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
) -> PRMScorer:
    """Load one PRM: tokenizer -> encoder, backbone + head, batched engine, scorer.

    ``kv_cache_gb``: memory for the keys/values of scored prefixes, so a path that grew by a
    step only runs its new tokens (:mod:`testtime.scoring.prm.incremental`); None: the
    device's default (``kv_store.default_budget_bytes``), 0: off (every path is rescored from
    its first token). A backbone from remote code (``trust_remote_code``) is always rescored:
    its cache interface is not known.
    """
    if kv_cache_gb is not None and kv_cache_gb < 0:
        raise ValueError(f"kv_cache_gb must be >= 0, got {kv_cache_gb}")
    dev = resolve_device(device)
    tokenizer = load_tokenizer(path_or_id, trust_remote_code)
    encoder = make_encoder(tokenizer)
    backbone, head = load_parts(path_or_id, dev, resolve_dtype(dtype, dev), encoder,
                                trust_remote_code)
    engine = ForwardEngine(backbone, head.to(dev), pad_token_id=pad_id_of(tokenizer),
                           max_batch_tokens=max_batch_tokens, device=dev,
                           kv_store=kv_store_for(backbone, dev, kv_cache_gb))
    return PRMScorer(f"{family}:{path_or_id}", encoder, engine,
                     max_input_tokens=context_length(getattr(backbone, "config", None)))


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

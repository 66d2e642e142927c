"""KV-cache work of the transformers decode loop's refills: prefilling the rows that join a
running batch, and joining caches right-aligned (a row's tokens always end at the batch's last
column; columns left of its prompt are masked).

Caches are transformers ``DynamicCache`` objects; tensors are ``[batch, heads, tokens,
head_dim]`` per layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from testtime.policy.hf_rows import LoopRow

#: Most prompt tokens (rows x longest prompt) prefilled in one forward.
PREFILL_TOKENS = 32_768


def prefill(model: Any, rows: Sequence[LoopRow], pad_id: int, device: Any, cache_arg: str,
            keep_arg: bool) -> list[tuple[Any, Any, Any]]:
    """(cache, mask, ids) of every prompt but its last token, in order, in forwards of at
    most :data:`PREFILL_TOKENS` padded tokens (``rows`` come sorted by length). A one-token
    prompt gets only masked columns. ``cache_arg`` names the forward's cache argument;
    ``keep_arg``: the forward takes ``logits_to_keep``."""
    import torch
    from transformers import DynamicCache

    groups: list[list[LoopRow]] = [[]]
    for r in rows:
        if groups[-1] and (len(groups[-1]) + 1) * (len(r.prompt) - 1) > PREFILL_TOKENS:
            groups.append([])
        groups[-1].append(r)
    parts = []
    for group in groups:
        if not group:
            continue
        width = max(len(r.prompt) - 1 for r in group)
        ids = torch.full((len(group), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for j, r in enumerate(group):
            if len(r.prompt) > 1:
                ids[j, width - len(r.prompt) + 1:] = torch.tensor(list(r.prompt[:-1]))
                mask[j, width - len(r.prompt) + 1:] = 1
        ids, mask = ids.to(device), mask.to(device)
        cache = DynamicCache()
        if width:
            pos = (mask.cumsum(1) - 1).clamp(min=0)
            extra = {"logits_to_keep": 1} if keep_arg else {}
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos,
                        use_cache=True, **{cache_arg: cache}, **extra)
            cache = out.past_key_values
        parts.append((cache, mask, ids))
    return parts


def joined_cache(kv: list[list[Any]]) -> Any:
    """A ``DynamicCache`` of the rows of ``kv`` (per layer: keys and values parts, alternating,
    all of one width), stacked along the batch in the order given."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache()
    for layer, pieces in enumerate(kv):
        cache.update(torch.cat(pieces[0::2]), torch.cat(pieces[1::2]), layer)
    return cache


def cache_kv(cache: Any) -> list[tuple[Any, Any]]:
    """Keys and values ``[batch, heads, tokens, head_dim]`` of every layer of a transformers
    cache (``cache.layers`` in transformers 5, ``key_cache``/``value_cache`` in 4)."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))


def left_pad(x: Any, width: int, dim: int, value: int = 0) -> Any:
    """``x`` padded on the left of ``dim`` to ``width`` (no copy when it is that wide)."""
    import torch

    missing = width - x.shape[dim]
    if missing <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat((torch.full(shape, value, dtype=x.dtype, device=x.device), x), dim)

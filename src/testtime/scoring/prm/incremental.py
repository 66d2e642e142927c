"""Incremental PRM scoring: forward only what a path added since its prefix was scored.

For each request, :class:`~testtime.scoring.prm.kv_store.PrefixKVStore` gives the longest
already-scored prefix (its keys/values and step scores). The request's remaining tokens, up to
its last score position (later tokens, such as a chat template's closing ``<|im_end|>``, cannot
change a causal model's scores and are never run), go through the backbone on top of that
prefix's cache, and the grown prefix is stored for the next step. A request whose whole input
is stored costs no forward at all; identical requests in one call run once.

Rows of one batch have different cached lengths ``p_i`` and new lengths ``n_i``. They are laid
out as ``[p_i cached | padding to P | n_i new | padding to T]`` with an attention mask over the
``P + T`` keys and explicit position ids ``p_i + j``, so every real token sees exactly the
keys and positions of an unpadded forward of its own input. Scores therefore match full
rescoring up to float rounding (tests: 1e-5 in float32, 1e-2 in bfloat16, every family).

A model split over devices (an accelerate device map) takes its inputs on its first layer's
device (``engine.device``); each layer's stored keys/values stay on the device that computes
that layer, and the step scores are read where the last layer puts its hidden states.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from testtime.scoring.prm.kv_store import KVEntry, PrefixKVStore
from testtime.scoring.prm.request import EncodedRequest, EngineStats

#: Padded cached + new tokens per forward, as a multiple of the engine's ``max_batch_tokens``
#: (which bounds the new tokens): the cached prefixes of a batch are copied into one padded
#: tensor, ``rows x (P + T) x`` the model's KV bytes per token (28 KiB for a 1.5B Qwen2 in
#: bf16: 1.8 GB at 8 x 8192) ...
CONTEXT_FACTOR = 8
#: ... and at most this many bytes of it (the cache holds it about three times over while the
#: forward runs), which binds for large PRMs: 320 KiB a token for a 72B Qwen2 in bf16.
MAX_PADDED_KV_BYTES = 1 << 30


class Engine(Protocol):
    """What the incremental path uses of its :class:`~testtime.scoring.prm.engine.ForwardEngine`."""

    backbone: nn.Module
    head: nn.Module
    pad_token_id: int
    max_batch_tokens: int
    device: torch.device
    head_device: torch.device
    stats: EngineStats


@dataclass
class _Row:
    """One distinct request to forward: its cached prefix and what it adds."""

    request: EncodedRequest
    entry: KVEntry | None

    @property
    def k(self) -> int:
        """Steps whose scores the cached prefix already holds."""
        return len(self.entry.scores) if self.entry is not None else 0

    @property
    def past(self) -> int:
        return self.entry.tokens if self.entry is not None else 0

    @property
    def end(self) -> int:
        """Tokens the forward must reach: through the last score position."""
        return self.request.positions[-1] + 1

    @property
    def new(self) -> int:
        return self.end - self.past


def cache_kv(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Keys and values ``[batch, heads, tokens, head_dim]`` of every layer of a transformers
    cache (``cache.layers`` in transformers 5, ``key_cache``/``value_cache`` in 4)."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))


def device_runs(layers: Sequence[tuple[torch.Tensor, torch.Tensor]]
                ) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Consecutive layers grouped by the device their keys live on (one group on one device;
    a model split by a device map has one group per device it runs on)."""
    runs: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
    for kv in layers:
        if runs and runs[-1][0][0].device == kv[0].device:
            runs[-1].append(kv)
        else:
            runs.append([kv])
    return runs


def sliding_window(config: Any) -> int | None:
    """The attention window of a model that slides one (Mistral's ``sliding_window``; Qwen2
    with ``use_sliding_window``), else None."""
    window = getattr(config, "sliding_window", None)
    if not isinstance(window, int) or window <= 0:
        return None
    if getattr(config, "use_sliding_window", True) is False:
        return None  # Qwen2 keeps the size in its config but does not slide
    return window


def plan_rows(rows: Sequence[_Row], max_new_tokens: int, max_context_tokens: int,
              window: int | None = None) -> list[list[int]]:
    """Batches of row indices whose padded new tokens (``rows x max n_i``) fit
    ``max_new_tokens`` and padded context (``rows x (max p_i + max n_i)``) fits
    ``max_context_tokens``; rows are visited longest context first, so similar cached lengths
    share a batch. A row over either budget runs alone.

    ``window``: the model's sliding attention window. Padding moves a row's cached keys away
    from its new tokens in the padded layout, which a sliding-window mask would see; so a
    batch's padded width ``max p_i + max n_i`` stays within the window, and a row wider than
    the window runs alone (unpadded, so its mask is the one of a full forward).
    """
    order = sorted(range(len(rows)), key=lambda i: -(rows[i].past + rows[i].new))
    batches: list[list[int]] = []
    current: list[int] = []
    past = new = 0
    for i in order:
        p, n = max(past, rows[i].past), max(new, rows[i].new)
        size = len(current) + 1
        if current and (size * n > max_new_tokens or size * (p + n) > max_context_tokens
                        or (window is not None and p + n > window)):
            batches.append(current)
            current, p, n = [], rows[i].past, rows[i].new
        current.append(i)
        past, new = p, n
    if current:
        batches.append(current)
    return batches


class IncrementalForward:
    """The incremental path of a ``ForwardEngine`` (which holds the lock and the model)."""

    def __init__(self, engine: Engine, store: PrefixKVStore,
                 context_factor: int = CONTEXT_FACTOR) -> None:
        self.engine = engine
        self.store = store
        self.max_context_tokens = engine.max_batch_tokens * context_factor
        # transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warns).
        params = inspect.signature(engine.backbone.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self.window = sliding_window(getattr(engine.backbone, "config", None))

    def run(self, encoded: Sequence[EncodedRequest]) -> tuple[list[list[float]], list[int]]:
        """Step scores per request and the tokens computed for each (the rest came from the
        store or lie past the last score position). Call with the engine's lock held."""
        scores: list[list[float]] = [[] for _ in encoded]
        computed = [0] * len(encoded)
        rows: list[_Row] = []
        users: list[list[int]] = []  # request indices each row answers
        seen: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
        for i, req in enumerate(encoded):
            if not req.positions:
                continue
            key = (req.input_ids, req.positions)
            if key in seen:
                users[seen[key]].append(i)
                continue
            k, entry = self.store.lookup(req.input_ids, req.positions)
            if k == len(req.positions):
                scores[i] = list(entry.scores) if entry is not None else []
                continue
            seen[key] = len(rows)
            rows.append(_Row(req, entry))
            users.append([i])
        context = self.max_context_tokens
        stored = next((r.entry for r in rows if r.entry is not None), None)
        if stored is not None:  # KV bytes per token, known once something is stored
            context = min(context, MAX_PADDED_KV_BYTES * stored.tokens // stored.nbytes)
        for batch in plan_rows(rows, self.engine.max_batch_tokens, context, self.window):
            for j, row_scores in zip(batch, self._forward([rows[j] for j in batch]), strict=True):
                for n, i in enumerate(users[j]):
                    scores[i] = row_scores
                    computed[i] = rows[j].new if n == 0 else 0
        return scores, computed

    def _forward(self, rows: Sequence[_Row]) -> list[list[float]]:
        engine, dev = self.engine, self.engine.device
        past = [r.past for r in rows]
        new = [r.new for r in rows]
        width_p, width_t = max(past), max(new)
        count = len(rows)

        from transformers import DynamicCache

        cache = DynamicCache()
        template = next((r.entry.segments for r in rows if r.entry is not None), None)
        if template is not None:
            layer = 0
            for s, segment in enumerate(template):  # one padded copy per device's layers
                layers, _, heads, _, dim = segment.shape
                padded = segment.new_zeros((layers, 2, count, heads, width_p, dim))
                for i, r in enumerate(rows):
                    if r.entry is not None:
                        padded[:, :, i, :, : r.past] = r.entry.segments[s]
                for j in range(layers):
                    cache.update(padded[j, 0], padded[j, 1], layer + j)
                layer += layers
                del padded  # the cache holds its own copy; keep one, not two, in the forward
        else:
            width_p = 0

        ids = torch.full((count, width_t), engine.pad_token_id, dtype=torch.long)
        mask = torch.zeros((count, width_p + width_t), dtype=torch.long)
        score_rows: list[int] = []
        score_cols: list[int] = []
        for i, r in enumerate(rows):
            ids[i, : r.new] = torch.tensor(r.request.input_ids[r.past : r.end])
            mask[i, : r.past] = 1
            mask[i, width_p : width_p + r.new] = 1
            for pos in r.request.positions[r.k:]:
                score_rows.append(i)
                score_cols.append(pos - r.past)
        positions = torch.tensor(past)[:, None] + torch.arange(width_t)[None, :]

        out = engine.backbone(input_ids=ids.to(dev), attention_mask=mask.to(dev),
                              position_ids=positions.to(dev), use_cache=True,
                              **{self._cache_arg: cache})
        last = out.last_hidden_state  # on the device of the model's last layer
        hidden = last[torch.tensor(score_rows, device=last.device),
                      torch.tensor(score_cols, device=last.device)]
        new_scores = engine.head(hidden.to(engine.head_device)).float().cpu().tolist()

        # The model appended the new tokens' keys/values to ``cache`` in place, each layer's on
        # the device that computed it: one tensor per run of layers on one device.
        grown = [torch.stack([torch.stack((k[:, :, width_p:], v[:, :, width_p:]))
                              for k, v in run]) for run in device_runs(cache_kv(cache))]
        results: list[list[float]] = []
        start = 0
        for i, r in enumerate(rows):
            count_new = len(r.request.positions) - r.k
            row_scores = [*(r.entry.scores if r.entry else ()), *new_scores[start:start + count_new]]
            start += count_new
            tails = [g[:, :, i, :, : r.new] for g in grown]
            kv = tuple(torch.cat((old, tail), dim=3) for old, tail in
                       zip(r.entry.segments, tails, strict=True)) if r.entry is not None \
                else tuple(tail.clone() for tail in tails)
            self.store.insert(r.request.input_ids[: r.end],
                              KVEntry(kv if len(kv) > 1 else kv[0], tuple(row_scores),
                                      r.request.positions))
            results.append(row_scores)

        engine.stats.batches += 1
        engine.stats.sequences += count
        engine.stats.tokens += sum(new)
        engine.stats.padded_tokens += width_t * count
        return results

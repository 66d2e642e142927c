"""The transformers backend's decode loop: the model's forward, one token at a time, over a
batch that is refilled as rows finish (continuous batching).

``generate`` decodes a fixed batch until its longest row ends, tests its stop conditions on
the host after every token, and leaves per-token statistics to logits processors that run per
step. This loop keeps everything that changes per token on the device and talks to the host
once every ``sync_every`` tokens:

* sampling (per-row seeded, :func:`~testtime.policy.hf_logits.sample_rows`), the sampled
  token's log-prob, self-certainty and DeepConf confidence are batched tensor operations whose
  results go into per-row history buffers, read back once when a row finishes;
* a row stops on the device when it samples an end-of-sequence token, a token whose text holds
  a stop string, its own token limit, or (online DeepConf) a sliding-window mean confidence
  under the threshold; a stop string spread over several tokens is found on the host at the
  next sync (only rows that sampled a token that can end one are decoded), and the tokens a
  row made past it are dropped by :func:`~testtime.policy.completion.build_completion`;
* finished rows leave the batch at a sync and waiting rows (the call's own, then rows the
  caller's ``more`` hands over) take their places: their prompts, except the last token, are
  prefilled in one forward of their own, the caches are joined right-aligned (a row's tokens
  always end at the batch's last column; the columns left of its prompt are masked), and the
  last prompt token is the row's first decode input.

A row's draws depend only on its seed and its own step count, so it samples the same alone,
in any batch, and whenever it joins.

The row and settings types live in :mod:`~testtime.policy.hf_rows` (re-exported here), the
refill's prefill and cache joining in :mod:`~testtime.policy.hf_cache`, the stop tables in
:mod:`~testtime.policy.hf_stops`.
"""

from __future__ import annotations

import inspect
import math
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from testtime.policy.hf_cache import cache_kv, joined_cache, left_pad, prefill
from testtime.policy.hf_logits import sample_rows, token_statistics
from testtime.policy.hf_rows import DecodeSettings, LoopRow, RowResult

__all__ = ["REFILL_SHARE", "DecodeLoop", "DecodeSettings", "LoopRow", "RowResult"]

#: Refill once at least this share of the batch is free (each refill copies the caches once).
REFILL_SHARE = 0.125


class DecodeLoop:
    """Continuous-batching decode over ``model``'s forward (see the module docstring)."""

    def __init__(self, model: Any, pad_id: int, vocab_size: int, device: Any,
                 processors: Any = None) -> None:
        self.model = model
        self.pad_id = pad_id
        self.log_v = math.log(vocab_size)
        self.device = device
        self.processors = processors or None
        # transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warns).
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._keep_arg = "logits_to_keep" in params

    def run(self, rows: Sequence[LoopRow], settings: DecodeSettings,
            done: Callable[[int, RowResult], None],
            more: Callable[[int], list[LoopRow]] | None = None) -> None:
        """Sample every row (``rows``, then whatever ``more(n)`` returns when ``n`` slots are
        free) and call ``done(index, result)`` as each finishes; indices count rows in the
        order they arrived. Call under ``torch.inference_mode()``."""
        _Run(self, settings, done, more).go(rows)


class _Run:
    """The state of one :meth:`DecodeLoop.run`: per-row device tensors, the joined cache."""

    def __init__(self, loop: DecodeLoop, settings: DecodeSettings,
                 done: Callable[[int, RowResult], None],
                 more: Callable[[int], list[LoopRow]] | None) -> None:
        import torch

        self.torch = torch
        self.loop, self.s, self.done, self.more = loop, settings, done, more
        self.dev = loop.device
        self.waiting: deque[tuple[int, LoopRow]] = deque()
        self.arrived = 0
        self.index: list[int] = []  # per batch row: the row's arrival index
        self.live: list[bool] = []  # per batch row: still decoding (host's view at the last sync)
        self.ctx: list[int] = []  # per batch row: real tokens in the cache at the last sync
        self.cache: Any = None
        self.width = 0  # cache columns
        # Per batch row, on the device (set by _rows_state): next input token, its position,
        # sampler key, token limit, tokens made, still decoding, may have completed a
        # multi-token stop string, stopped on confidence, confidence window sum; histories of
        # tokens and of (log-prob, certainty, confidence); the attention mask and token ids of
        # the cache columns.
        self.tok: Any = None
        self.pos: Any = None
        self.keys: Any = None
        self.limits: Any = None
        self.steps: Any = None
        self.active: Any = None
        self.flag: Any = None
        self.cstop: Any = None
        self.wsum: Any = None
        self.hist_t: Any = None
        self.hist_f: Any = None
        self.rows: Any = None
        self.ones: Any = None
        self.mask: Any = None
        self.ids: Any = None

    # ---- the loop ----------------------------------------------------------------------
    def go(self, rows: Sequence[LoopRow]) -> None:
        self._arrive(rows)
        while True:
            self._refill()
            if not any(self.live):
                if not self.waiting:
                    return
                continue
            for _ in range(self.s.sync_every):
                self._step()
            self._sync()

    def _arrive(self, rows: Sequence[LoopRow]) -> None:
        for r in rows:
            if not r.prompt:
                raise ValueError("a decode row needs at least one prompt token")
            self.waiting.append((self.arrived, r))
            self.arrived += 1

    def _step(self) -> None:
        torch, s = self.torch, self.s
        self.mask = torch.cat((self.mask, self.ones), 1)
        out = self.loop.model(input_ids=self.tok[:, None], attention_mask=self.mask,
                              position_ids=self.pos[:, None], use_cache=True,
                              **{self.loop._cache_arg: self.cache})
        self.cache = out.past_key_values
        self.width += 1
        scores = out.logits[:, -1].float()
        if self.loop.processors is not None:
            self.ids = torch.cat((self.ids, self.tok[:, None]), 1)
            scores = self.loop.processors(self.ids, scores)
        logp, certainty, confidence = token_statistics(scores, self.loop.log_v)
        if s.temperature > 0:
            tok = sample_rows(scores, self.keys, self.steps, s.temperature, s.top_p, logp)
        else:
            tok = scores.argmax(dim=-1)
        lp = logp.gather(1, tok[:, None]).squeeze(1)
        self.hist_t.index_put_((self.rows, self.steps), tok)
        self.hist_f.index_put_((self.rows, self.steps),
                               torch.stack((lp, certainty, confidence), 1))
        n = self.steps + 1
        fin = s.stop_now[tok] | (n >= self.limits)
        cs = s.confidence_stop
        if cs is not None:
            w = cs.window
            self.wsum += confidence.double()
            old = self.hist_f[self.rows, (n - 1 - w).clamp(min=0), 2].double()
            self.wsum -= torch.where(n > w, old, torch.zeros_like(old))
            low = (n >= w) & (self.wsum < cs.threshold * w) & self.active
            self.cstop |= low
            fin |= low
        self.flag |= s.stop_maybe[tok] & self.active
        self.steps += self.active.long()
        self.active &= ~fin
        self.pos += 1
        self.tok = tok

    def _sync(self) -> None:
        """One transfer of the rows' states; hand over finished rows, host-check stop
        strings spread over tokens."""
        torch = self.torch
        state = torch.stack((self.active.long(), self.steps, self.flag.long(),
                             self.cstop.long())).tolist()
        active, steps, flag, cstop = state
        self.ctx = [c + self.s.sync_every for c in self.ctx]
        ended = [i for i, live in enumerate(self.live) if live and not active[i]]
        suspects = [i for i, live in enumerate(self.live) if live and active[i] and flag[i]]
        if suspects:
            toks = self.hist_t[torch.tensor(suspects, device=self.dev)].tolist()
            hit = [i for i, t in zip(suspects, toks, strict=True)
                   if self.s.stopped(t[: steps[i]])]
            if hit:
                self.active[torch.tensor(hit, device=self.dev)] = False
                ended += hit
            self.flag.zero_()
        if ended:
            idx = torch.tensor(ended, device=self.dev)
            toks, stats = self.hist_t[idx].tolist(), self.hist_f[idx].tolist()
            for j, i in enumerate(ended):
                n = steps[i]
                lp, ce, co = (list(col) for col in zip(*stats[j][:n], strict=True)) if n \
                    else ([], [], [])
                self.live[i] = False
                self.done(self.index[i], RowResult(toks[j][:n], lp, ce, co, bool(cstop[i])))

    # ---- refilling ---------------------------------------------------------------------
    def _refill(self) -> None:
        """At a sync: drop finished rows and take waiting ones once enough slots are free
        (each refill copies the caches once), or shrink once half the batch is finished."""
        live = sum(self.live)
        free = self.s.slots - live
        take: list[tuple[int, LoopRow]] = []
        if free > 0 and (live == 0 or free >= max(1, int(self.s.slots * REFILL_SHARE))):
            if self.more is not None and len(self.waiting) < free:
                self._arrive(self.more(free - len(self.waiting)))
            take = [self.waiting.popleft() for _ in range(min(free, len(self.waiting)))]
        dead = len(self.live) - live
        if not take and (live == 0 or dead * 2 < len(self.live)):
            return
        self._rebuild(take)

    def _rebuild(self, take: list[tuple[int, LoopRow]]) -> None:
        """The batch of the live rows plus ``take``: caches joined right-aligned."""
        torch = self.torch
        take = sorted(take, key=lambda t: len(t[1].prompt))  # similar widths prefill together
        keep = [i for i, live in enumerate(self.live) if live]
        new = [r for _, r in take]
        new_ctx = [len(r.prompt) - 1 for r in new]
        width = max([self.ctx[i] for i in keep] + new_ctx + [0])
        kv: list[list[Any]] = []  # per layer: keys and values parts, alternating
        masks, idsl = [], []
        if keep:
            ki = torch.tensor(keep, device=self.dev)
            lo = max(self.width - width, 0)
            kv = [[left_pad(k[ki][:, :, lo:], width, 2), left_pad(v[ki][:, :, lo:], width, 2)]
                  for k, v in cache_kv(self.cache)]
            masks.append(left_pad(self.mask[ki][:, lo:], width, 1))
            if self.loop.processors is not None:
                idsl.append(left_pad(self.ids[ki][:, lo:], width, 1, self.loop.pad_id))
        for cache, mask, ids in prefill(self.loop.model, new, self.loop.pad_id, self.dev,
                                         self.loop._cache_arg, self.loop._keep_arg):
            for layer, (k, v) in enumerate(cache_kv(cache)):
                if len(kv) <= layer:
                    kv.append([])
                kv[layer].extend((left_pad(k, width, 2), left_pad(v, width, 2)))
            masks.append(left_pad(mask, width, 1))
            idsl.append(left_pad(ids, width, 1, self.loop.pad_id))
        self.cache = joined_cache(kv)
        self.width = width
        self.mask = torch.cat(masks)
        if self.loop.processors is not None:
            self.ids = torch.cat(idsl)
        self._rows_state(keep, new)
        self.index = [self.index[i] for i in keep] + [i for i, _ in take]
        self.ctx = [self.ctx[i] for i in keep] + new_ctx
        self.live = [True] * len(self.index)

    def _rows_state(self, keep: list[int], new: list[LoopRow]) -> None:
        """Per-row device tensors of the rebuilt batch (kept rows first, then ``new``)."""
        torch, dev = self.torch, self.dev
        ki = torch.tensor(keep, device=dev, dtype=torch.long)
        longest = max([r.limit for r in new] + [self.hist_t.shape[1] - 1 if keep else 0]) + 1

        def join(name: str, fresh: list[Any], dtype: Any) -> Any:
            parts = [getattr(self, name)[ki]] if keep else []
            if fresh:
                parts.append(torch.tensor(fresh, dtype=dtype, device=dev))
            return torch.cat(parts)

        def grow(name: str, shape: tuple[int, ...], dtype: Any) -> Any:
            out = torch.zeros((len(keep) + len(new), longest, *shape), dtype=dtype, device=dev)
            if keep:
                old = getattr(self, name)
                out[: len(keep), : old.shape[1]] = old[ki]
            return out

        self.tok = join("tok", [r.prompt[-1] for r in new], torch.long)
        self.pos = join("pos", [len(r.prompt) - 1 for r in new], torch.long)
        self.keys = join("keys", [r.key for r in new], torch.long)
        self.limits = join("limits", [r.limit for r in new], torch.long)
        self.steps = join("steps", [0] * len(new), torch.long)
        self.active = join("active", [True] * len(new), torch.bool)
        self.flag = join("flag", [False] * len(new), torch.bool)
        self.cstop = join("cstop", [False] * len(new), torch.bool)
        self.wsum = join("wsum", [0.0] * len(new), torch.float64)
        self.hist_t = grow("hist_t", (), torch.long)
        self.hist_f = grow("hist_f", (3,), torch.float32)
        self.rows = torch.arange(len(keep) + len(new), device=dev)
        self.ones = torch.ones((len(keep) + len(new), 1), dtype=torch.long, device=dev)

"""Logits processors of the transformers backend: per-token statistics of the model's own
distribution, and per-row seeded sampling (so a row's samples never depend on its batch)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from testtime.confidence import TOP_K


class RowSampler:
    """Logits processor that samples every row with its own generator (temperature, top-p)
    and leaves only the drawn token, so ``generate`` (greedy) takes it.

    A row's draws depend only on its own seed and logits, never on the other rows of the
    batch: a request gives the same samples alone or batched with any others. Unseeded rows
    draw from generators seeded by torch's global generator.
    """

    def __init__(self, seeds: Sequence[int | None], temperature: float, top_p: float,
                 device: Any) -> None:
        import torch

        self.temperature = temperature
        self.top_p = top_p
        self.generators = []
        for s in seeds:
            g = torch.Generator(device=device)
            g.manual_seed(int(s) % 2**63 if s is not None
                          else int(torch.randint(0, 2**62, (1,)).item()))
            self.generators.append(g)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:  # the smallest set of most likely tokens holding top_p of the mass
            sorted_p, order = probs.sort(dim=-1, descending=True)
            before = sorted_p.cumsum(dim=-1) - sorted_p
            sorted_p = sorted_p.masked_fill(before >= self.top_p, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        out = torch.full_like(scores, float("-inf"))
        for row, g in enumerate(self.generators):
            token = torch.multinomial(probs[row], 1, generator=g)
            out[row, token] = 0.0
        return out


class TokenStats:
    """Logits processor that records, per step and row, the sampled token's log-prob, the
    self-certainty and DeepConf's token confidence (minus the mean top-20 log-prob)."""

    def __init__(self, vocab_size: int) -> None:
        self.log_v = math.log(vocab_size)
        self.logprobs: list[Any] = []
        self.certainty: list[Any] = []
        self.confidence: list[Any] = []
        self._prev: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self._prev is not None:  # the last column is the token sampled from _prev
            self.logprobs.append(self._prev.gather(1, input_ids[:, -1:]).squeeze(1))
        logp = torch.log_softmax(scores.float(), dim=-1)
        # KL(uniform || p) = -log V - mean_j log p_j, normalised by log V.
        self.certainty.append((-logp.mean(dim=-1) - self.log_v) / self.log_v)
        k = min(TOP_K, logp.shape[-1])
        self.confidence.append(-logp.topk(k, dim=-1).values.mean(dim=-1))
        self._prev = logp
        return scores

    def finish(self, last_tokens: Any) -> tuple[list[list[float]], list[list[float]],
                                                list[list[float]]]:
        """Per row: log-probs, self-certainties, token confidences."""
        import torch

        if self._prev is not None:
            self.logprobs.append(self._prev.gather(1, last_tokens[:, None]).squeeze(1))
        lp = torch.stack(self.logprobs, 1).tolist() if self.logprobs else []
        ce = torch.stack(self.certainty, 1).tolist() if self.certainty else []
        co = torch.stack(self.confidence, 1).tolist() if self.confidence else []
        return lp, ce, co

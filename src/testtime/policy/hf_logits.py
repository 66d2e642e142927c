"""Per-token statistics of the model's own distribution and per-row seeded sampling (so a
row's samples never depend on its batch) for the transformers backend: batched tensor
functions used by its decode loop, and logits processors for ``model.generate``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from testtime.confidence import TOP_K

#: SplitMix64 constants as signed 64-bit integers (torch has no uint64 arithmetic; signed
#: multiplication wraps the same way, and shifts are masked to be logical).
_GOLDEN = 0x9E3779B97F4A7C15 - 2**64
_MIX1 = 0xBF58476D1CE4E5B9 - 2**64
_MIX2 = 0x94D049BB133111EB - 2**64
#: Bits of a uniform draw (float32 holds 24 exactly).
_UNIFORM_BITS = 24


def _srl(x: Any, n: int) -> Any:
    """Logical right shift of an int64 tensor."""
    return (x >> n) & ((1 << (64 - n)) - 1)


def _splitmix(x: Any) -> Any:
    """SplitMix64's finaliser, elementwise on an int64 tensor: a counter-based hash, so a
    row's random stream is a pure function of (seed, step) whatever the batch holds."""
    z = x + _GOLDEN
    z = (z ^ _srl(z, 30)) * _MIX1
    z = (z ^ _srl(z, 27)) * _MIX2
    return z ^ _srl(z, 31)


def row_uniforms(keys: Any, step: Any) -> Any:
    """One uniform in (0, 1) per row key for decode step ``step`` (float32, same device).

    ``step`` is one int for every row or an int64 tensor of each row's own step: a row's draw
    is a function of its (key, step) pair alone, so rows at different steps (a batch refilled
    as rows finish) draw what they would draw alone."""
    if isinstance(step, int):
        salt: Any = (step * 0xBF58476D1CE4E5B9 + 1) % 2**64  # a distinct odd 64-bit salt per step
        salt = salt - 2**64 if salt >= 2**63 else salt
    else:  # the same salt in wrapping int64 arithmetic
        salt = step * (0xBF58476D1CE4E5B9 - 2**64) + 1
    z = _splitmix(_splitmix(keys) ^ salt)
    return (_srl(z, 64 - _UNIFORM_BITS).float() + 0.5) * 2.0 ** -_UNIFORM_BITS


def seed_keys(seeds: Sequence[int | None], device: Any) -> Any:
    """Per-row sampler keys (int64) of row seeds; unseeded rows draw one from torch's global
    generator."""
    import torch

    keys = [int(s) % 2**63 if s is not None
            else int(torch.randint(0, 2**62, (1,)).item()) for s in seeds]
    return torch.tensor(keys, dtype=torch.int64, device=device)


def sample_rows(scores: Any, keys: Any, step: Any, temperature: float, top_p: float,
                logp: Any = None) -> Any:
    """The token each row draws (int64, one per row): inverse-CDF sampling of the tempered,
    top-p truncated softmax of ``scores`` with the row's (key, step) uniform. ``logp``: the
    rows' log-softmax at T=1 when the caller has it (reused when ``temperature`` is 1)."""
    import torch

    if logp is not None and temperature == 1.0:
        probs = logp.exp()
    else:
        probs = torch.softmax(scores.float() / temperature, dim=-1)
    order = None
    if top_p < 1.0:  # the smallest set of most likely tokens holding top_p of the mass
        probs, order = probs.sort(dim=-1, descending=True)
        before = probs.cumsum(dim=-1) - probs
        probs = probs.masked_fill(before >= top_p, 0.0)
    cdf = probs.cumsum(dim=-1)
    u = row_uniforms(keys, step) * cdf[:, -1]  # float32 sums fall short of 1
    token = torch.searchsorted(cdf, u[:, None]).clamp_(max=cdf.shape[-1] - 1)
    # A zero-probability token can sit where the CDF is flat only if u lands exactly on
    # a step edge; searchsorted (left) returns the first index reaching u, which has p > 0.
    if order is not None:
        token = order.gather(1, token)
    return token.squeeze(1)


def token_statistics(scores: Any, log_v: float) -> tuple[Any, Any, Any]:
    """Per row: the log-softmax of ``scores`` (float32), the self-certainty
    ``KL(uniform || p) / log V`` and DeepConf's token confidence (minus the mean top-20
    log-prob), in a few batched tensor operations."""
    import torch

    logp = torch.log_softmax(scores.float(), dim=-1)
    # KL(uniform || p) = -log V - mean_j log p_j, normalised by log V.
    certainty = (-logp.mean(dim=-1) - log_v) / log_v
    k = min(TOP_K, logp.shape[-1])
    confidence = -logp.topk(k, dim=-1).values.mean(dim=-1)
    return logp, certainty, confidence


class RowSampler:
    """Logits processor that samples every row with its own seed (temperature, top-p) and
    leaves only the drawn token, so ``generate`` (greedy) takes it.

    A row's draw at step ``t`` is inverse-CDF sampling with a uniform that is a hash of
    (row seed, ``t``) alone, so a request gives the same samples alone or batched with any
    others. The whole batch is sampled in a few tensor operations, without a per-row loop (a
    loop of ``multinomial`` calls with per-row generators costs two kernel launches a row at
    every decode step: the host, not the GPU, then bounds a large batch). Unseeded rows get
    seeds drawn from torch's global generator.
    """

    def __init__(self, seeds: Sequence[int | None], temperature: float, top_p: float,
                 device: Any) -> None:
        self.temperature = temperature
        self.top_p = top_p
        self.keys = seed_keys(seeds, device)
        self.step = 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        token = sample_rows(scores, self.keys, self.step, self.temperature, self.top_p)
        self.step += 1
        return torch.full_like(scores, float("-inf")).scatter_(1, token[:, None], 0.0)


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
        if self._prev is not None:  # the last column is the token sampled from _prev
            self.logprobs.append(self._prev.gather(1, input_ids[:, -1:]).squeeze(1))
        logp, certainty, confidence = token_statistics(scores, self.log_v)
        self.certainty.append(certainty)
        self.confidence.append(confidence)
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

"""The contract types of the transformers decode loop (:mod:`testtime.policy.hf_decode`):
what a row to sample is, what a finished row hands back, and the settings one loop shares.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from testtime.types import ConfidenceStop

#: Default decode steps between two host syncs of the loop. From one run of the decode probe
#: (``python bench/bench_e2e.py --decode-probe``, docs/benchmarks.md "HF decode loop (issue
#: 24), one H100": a Qwen2.5-1.5B-shaped random model, 256 prompts, 64 new tokens, T=0.7):
#: 5,262 new tok/s with 8, 7,836 with 16, eager ``generate`` 5,343. A row decodes at most this
#: many tokens past a stop string spread over tokens (or past its end while others go on);
#: those tokens are dropped (:func:`~testtime.policy.completion.build_completion`), so the
#: choice changes speed and wasted forwards, never the completions.
SYNC_EVERY = 16


@dataclass(frozen=True)
class LoopRow:
    """One sequence to sample."""

    prompt: Sequence[int]
    """Prompt token ids (at least one)."""
    key: int
    """The row's sampler key (see :func:`~testtime.policy.hf_logits.seed_keys`)."""
    limit: int
    """Most new tokens."""


@dataclass(frozen=True)
class RowResult:
    """What a row made: its tokens (an end-of-sequence token included) and their statistics."""

    tokens: list[int]
    logprobs: list[float]
    certainties: list[float]
    confidences: list[float]
    confidence_stopped: bool
    """The row ended on a low sliding-window confidence (online DeepConf)."""


@dataclass(frozen=True)
class DecodeSettings:
    """The sampling settings shared by every row of one loop."""

    temperature: float
    top_p: float
    stop_now: Any
    """Bool tensor over the vocabulary: sampling this token ends the row (end-of-sequence
    tokens, tokens whose text holds a stop string)."""
    stop_maybe: Any
    """Bool tensor over the vocabulary: a token that may complete a stop string spread over
    several tokens (its text starts with a proper suffix of one); the host checks the row."""
    stopped: Callable[[list[int]], bool]
    """Host check: do these tokens' text hold a stop string?"""
    confidence_stop: ConfidenceStop | None = None
    """Online DeepConf: end a row once the mean confidence of its last ``window`` tokens falls
    under ``threshold`` (None: never)."""
    sync_every: int = SYNC_EVERY
    """Decode steps between two host syncs (see :data:`SYNC_EVERY`)."""
    slots: int = 32
    """Most rows decoded at once."""

"""What a PRM engine reads and counts: :class:`EncodedRequest` (a family's token ids and
score positions) and :class:`EngineStats` (re-exported by :mod:`~testtime.scoring.prm.engine`).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise


@dataclass(frozen=True)
class EncodedRequest:
    """One request in a PRM's own input format."""

    input_ids: tuple[int, ...]
    """Every token the PRM reads, special tokens included."""
    positions: tuple[int, ...]
    """Index into ``input_ids`` whose output scores step ``k``; one per step, increasing."""

    def __post_init__(self) -> None:
        n = len(self.input_ids)
        if any(not 0 <= p < n for p in self.positions):
            raise ValueError(f"score positions {self.positions} outside a {n}-token input")
        if any(b <= a for a, b in pairwise(self.positions)):
            raise ValueError(f"score positions must increase, got {self.positions}")


@dataclass
class EngineStats:
    """Cumulative counters, for tests and benchmarks."""

    calls: int = 0
    batches: int = 0
    sequences: int = 0
    tokens: int = 0
    """Real (unpadded) tokens run through the backbone."""
    padded_tokens: int = 0
    """Tokens including padding (``max_len x rows`` summed over batches)."""

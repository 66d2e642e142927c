"""The step-scorer protocol shared by process reward models and model-free scorers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from testtime.types import ScoreRequest


@runtime_checkable
class StepScorer(Protocol):
    """Scores every step of partial or complete solutions.

    Contract: ``score`` returns one list per request, in request order, holding exactly one
    float per step of that request (a request with no steps gets an empty list). Scores are
    probabilities in [0, 1] where higher means "more likely correct so far", so that the
    aggregation rules (min, last, mean, product) mean the same thing for every scorer.
    """

    name: str
    """Identifier stored in records (e.g. ``skywork:Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B``)."""

    async def score(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        """One score per step, per request."""
        ...

    def scored_tokens(self, requests: Sequence[ScoreRequest]) -> int:
        """Tokens the scorer processes for these requests (for compute accounting); 0 if free."""
        ...

    async def aclose(self) -> None:
        """Release resources."""
        ...

"""The step-scorer protocol shared by process reward models and model-free scorers.

A scorer answers a call the way a model API does: with its output and its usage.
``StepScorer.score`` returns a :class:`ScoreResult` holding one score per step of every request
and the tokens the scorer read for each request, so compute accounting never needs a second,
blocking call (tokenisation or HTTP) on the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, Self, runtime_checkable

from testtime.resources import AsyncResource
from testtime.retry import PermanentError
from testtime.types import ScoreRequest


class ScorerInputError(PermanentError, ValueError):
    """The scorer cannot score this input (its message is meant for the user, and is safe to
    send to a client); retrying the same input cannot help."""


class InputTooLong(ScorerInputError):
    """A request's input is longer than the scorer accepts (its model's context)."""


@dataclass(frozen=True)
class ScoreResult:
    """What one ``score`` call returns: scores and usage, one entry per request.

    ``scores[i]`` holds one float per step of request ``i``; ``tokens[i]`` is the number of
    input tokens the scorer's model read for request ``i`` (its whole input, as a scorer that
    rescores every path from its first token reads it; 0 for model-free scorers);
    ``cached[i] <= tokens[i]`` of them came from a cache of prefixes scored before instead of
    a forward (an in-process PRM's KV store), so ``tokens[i] - cached[i]`` were computed.
    """

    scores: list[list[float]]
    tokens: list[int] = field(default_factory=list)
    """Per request; empty means 0 for every request (model-free scorers)."""
    cached: list[int] = field(default_factory=list)
    unread: list[int] = field(default_factory=list)
    """Per request, the trailing steps the scorer could not read because the path ran past its
    context: their scores repeat the last step it read (see
    :meth:`testtime.scoring.prm.scorer.PRMScorer.encode`); 0 for a path read whole."""
    """Per request; empty means 0 for every request (nothing reused)."""

    def __post_init__(self) -> None:
        if not self.tokens:
            object.__setattr__(self, "tokens", [0] * len(self.scores))
        if not self.cached:
            object.__setattr__(self, "cached", [0] * len(self.scores))
        if not self.unread:
            object.__setattr__(self, "unread", [0] * len(self.scores))
        if len(self.tokens) != len(self.scores) or len(self.cached) != len(self.scores) \
                or len(self.unread) != len(self.scores):
            raise ValueError(f"ScoreResult: {len(self.tokens)} token counts, "
                             f"{len(self.cached)} cached counts and {len(self.unread)} unread "
                             f"counts for {len(self.scores)} requests")
        if any(u < 0 for u in self.unread):
            raise ValueError("ScoreResult: unread step counts must be >= 0")
        if any(not 0 <= c <= t for c, t in zip(self.cached, self.tokens, strict=True)):
            raise ValueError("ScoreResult: cached tokens must lie between 0 and the tokens read")

    @property
    def scored_tokens(self) -> int:
        """Tokens read for the whole call."""
        return sum(self.tokens)

    @property
    def cached_tokens(self) -> int:
        """Of :attr:`scored_tokens`, those taken from a cache rather than computed."""
        return sum(self.cached)

    def __len__(self) -> int:
        return len(self.scores)

    def part(self, start: int, stop: int) -> ScoreResult:
        """The result of requests ``start..stop-1`` (to split a merged call per caller)."""
        return ScoreResult(self.scores[start:stop], self.tokens[start:stop],
                           self.cached[start:stop], self.unread[start:stop])

    @staticmethod
    def concat(results: Sequence[ScoreResult]) -> ScoreResult:
        """Results of consecutive calls as one."""
        return ScoreResult([s for r in results for s in r.scores],
                           [t for r in results for t in r.tokens],
                           [c for r in results for c in r.cached],
                           [u for r in results for u in r.unread])

    def check(self, requests: Sequence[ScoreRequest], who: str) -> ScoreResult:
        """Raise ``ValueError`` naming ``who`` unless there is one score per step per request."""
        if len(self.scores) != len(requests):
            raise ValueError(f"scorer {who!r} returned {len(self.scores)} score lists for "
                             f"{len(requests)} requests")
        for i, (row, req) in enumerate(zip(self.scores, requests, strict=True)):
            if len(row) != len(req.steps):
                raise ValueError(f"scorer {who!r} returned {len(row)} scores for request {i} "
                                 f"of {len(req.steps)} steps")
        return self


@runtime_checkable
class StepScorer(Protocol):
    """Scores every step of partial or complete solutions.

    Contract: ``score`` returns a :class:`ScoreResult` with one list per request, in request
    order, holding exactly one float per step of that request (a request with no steps gets an
    empty list), and the tokens read per request. Scores are probabilities in [0, 1] where
    higher means "more likely correct so far", so that the aggregation rules (min, last, mean,
    product) mean the same thing for every scorer. A scorer is an async context manager:
    ``async with scorer:`` closes it (``aclose``) on exit.
    """

    name: str
    """Identifier stored in records (e.g. ``skywork:Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B``)."""

    async def score(self, requests: Sequence[ScoreRequest]) -> ScoreResult:
        """One score per step, per request, with the tokens read."""
        ...

    async def aclose(self) -> None:
        """Release resources."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...


class ScorerBase(AsyncResource):
    """Convenience base of the shipped scorers: the async context manager and a no-op close."""

    name: str

    async def aclose(self) -> None:
        return None


__all__ = ["InputTooLong", "ScoreResult", "ScorerBase", "ScorerInputError", "StepScorer"]

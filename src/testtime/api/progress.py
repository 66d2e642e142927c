"""Progress of one request's search, seen from the policy calls it makes.

The search methods know nothing of the service: each request's ``SearchContext`` gets a
:class:`ProgressPolicy` in place of the shared policy. It forwards every call unchanged (the
requests still reach the shared backend and its ``RequestBatcher``, so concurrent requests
share batches) and counts what came back. A streamed request polls :class:`Progress`.

``paths_finished`` is an estimate for display: a completion ends a path when it did not stop
at a step delimiter (EOS, length, confidence) or holds ``\\boxed``. The billed numbers are the
search's ``Compute``, never these counters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from testtime.policy.base import Policy
from testtime.types import BOXED, Completion, GenerationRequest


@dataclass
class Progress:
    """What a search has done so far."""

    rounds: int = 0
    """Policy calls answered (a step-level search makes one per depth)."""
    depth: int = 0
    """Deepest step reached (step-level methods; 1 for methods that sample whole paths)."""
    generations: int = 0
    """Sequences sampled."""
    paths_finished: int = 0
    """Sampled sequences that ended their path (estimate, see the module docstring)."""
    completion_tokens: int = 0
    prompt_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"depth": self.depth, "rounds": self.rounds, "generations": self.generations,
                "paths_finished": self.paths_finished,
                "completion_tokens": self.completion_tokens, "prompt_tokens": self.prompt_tokens}


def _ends_path(c: Completion) -> bool:
    return c.finish_reason != "stop" or BOXED in c.text


class ProgressPolicy:
    """A ``Policy`` that forwards to ``inner`` and counts into ``progress``.

    Attributes it does not define (``name``, ``count_tokens``, engine statistics, ...) are the
    inner policy's, so a search cannot tell the difference.
    """

    def __init__(self, inner: Policy, progress: Progress) -> None:
        self._inner = inner
        self.progress = progress

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        outs = await self._inner.generate(requests)
        p = self.progress
        p.rounds += 1
        for req, group in zip(requests, outs, strict=True):
            # a step request continues a prefix of k delimited steps: it reaches depth k + 1
            p.depth = max(p.depth, req.prefix.count("\n\n") + 1 if group else p.depth)
            p.generations += len(group)
            p.paths_finished += sum(_ends_path(c) for c in group)
            p.completion_tokens += sum(c.completion_tokens for c in group)
            p.prompt_tokens += sum(c.prompt_tokens for c in group)
        return outs

    def count_tokens(self, text: str) -> int:
        return self._inner.count_tokens(text)

    async def aclose(self) -> None:
        """The shared policy belongs to the engine: closing a request's view closes nothing."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

"""The policy protocol: the one thing search methods know about a language model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, Self, runtime_checkable

from testtime.retry import PermanentError
from testtime.types import Completion, GenerationRequest


class PromptTooLong(PermanentError, ValueError):
    """A request's prompt does not fit the policy's context (retrying cannot help)."""


@runtime_checkable
class Policy(Protocol):
    """A language model that continues partial solutions.

    Contract: ``generate`` returns one list per request, in request order, holding exactly
    ``request.params.n`` completions. Implementations batch internally; callers should pass
    every request they have at once and may call ``generate`` concurrently from many tasks
    (the backend groups concurrent calls into full batches). A policy is an async context
    manager: ``async with policy:`` closes it (``aclose``) on exit.
    """

    name: str
    """Human-readable model identifier stored in records."""

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        """Sample ``params.n`` continuations of each request."""
        ...

    def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` occupies (used for budgets and compute accounting)."""
        ...

    async def aclose(self) -> None:
        """Release resources (threads, servers, GPU memory)."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...

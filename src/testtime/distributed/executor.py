"""What the runner needs from something that searches problems away from the driver."""

from __future__ import annotations

from typing import Protocol

from testtime.search.base import SearchContext, SearchResult
from testtime.types import Problem


class SearchExecutor(Protocol):
    """Runs the search of one problem somewhere else and returns its result.

    The runner calls :meth:`start` once, when there is work, then :meth:`search` from many
    asyncio tasks at once (one per problem in flight), and keeps grading, selection and every
    write to the run directory to itself. ``search`` raises on failure like a local search
    method; the runner's retry policy decides whether to call it again (for a lost worker
    that means: on another worker). The executor's owner closes it.
    """

    async def start(self) -> None:
        """Acquire workers; raise with a clear message when none can be had."""
        ...

    async def search(self, problem: Problem, ctx: SearchContext | None = None) -> SearchResult:
        """The run's search method applied to ``problem`` on some worker (``ctx`` is unused:
        each worker owns its own policy, scorer and context)."""
        ...

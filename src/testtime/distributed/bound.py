"""One actor pool serving several run configs: the :class:`BoundExecutor` of a sweep cell.

A sweep runs many cells (method, budget, sampling) with the same models; rather than start a
pool per cell, :meth:`RayExecutor.bind <testtime.distributed.driver.RayExecutor.bind>` (which
checks that the models do match) wraps the one pool in a :class:`BoundExecutor` per cell. It
satisfies the runner's :class:`~testtime.distributed.executor.SearchExecutor` protocol, sends
each problem as a work unit carrying its own cell's search and sampling settings, and shares
the pool's start and statistics. Closing the pool stays its owner's business, so a bound
executor has no ``aclose``.
"""

from __future__ import annotations

from typing import Protocol

from testtime.config import RunConfig
from testtime.distributed.pool_types import ExecutorStats
from testtime.distributed.worker import WorkUnit
from testtime.search.base import SearchContext, SearchResult
from testtime.types import Problem


class UnitExecutor(Protocol):
    """What a bound executor needs from the pool it shares (a ``RayExecutor``)."""

    @property
    def stats(self) -> ExecutorStats: ...

    async def start(self) -> None: ...

    async def search_unit(self, unit: WorkUnit) -> SearchResult: ...


class BoundExecutor:
    """A :class:`RayExecutor`'s actors serving one more run config (see ``RayExecutor.bind``);
    closing is the owner's business, so it has no ``aclose``."""

    def __init__(self, base: UnitExecutor, config: RunConfig) -> None:
        self.base = base
        self.config = config

    @property
    def stats(self) -> ExecutorStats:
        return self.base.stats

    async def start(self) -> None:
        await self.base.start()

    async def search(self, problem: Problem, ctx: SearchContext | None = None) -> SearchResult:
        return await self.base.search_unit(
            WorkUnit(problem, self.config.search, self.config.sampling))

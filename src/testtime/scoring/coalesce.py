"""Coalesce concurrent ``score`` calls into as few scorer calls as possible.

Used by the PRM scorers (``prm/scorer.py``: concurrent search tasks share forwards), the PRM
service (``serve.py``: every HTTP request is a task on one event loop) and by
scorers that batch their own callers (``judge.py``). No FastAPI or uvicorn here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from testtime.scoring.base import StepScorer
from testtime.types import ScoreRequest

ScoreFn = Callable[[list[ScoreRequest]], Awaitable[list[list[float]]]]


class Coalescer:
    """Merges concurrent calls of an async batch function into as few calls as possible.

    The first caller runs at once; callers that arrive while a call is in flight queue up and
    the next lock holder runs all of them in one call. Results are split back per caller; an
    error in a merged call is raised in every caller of it. ``calls`` counts calls of ``fn``.
    Belongs to one event loop at a time (its lock is re-created when the loop changes).
    """

    def __init__(self, fn: ScoreFn) -> None:
        self.fn = fn
        self.calls = 0
        self._pending: list[tuple[list[ScoreRequest], asyncio.Future[list[list[float]]]]] = []
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _loop_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop, self._pending = asyncio.Lock(), loop, []
        return self._lock

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold the lock: waits for the call in flight, and no call starts until exit
        (callers that arrive meanwhile queue up), e.g. to close the model behind ``fn``."""
        async with self._loop_lock():
            yield

    async def __call__(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        if not requests:
            return []
        lock = self._loop_lock()
        future: asyncio.Future[list[list[float]]] = asyncio.get_running_loop().create_future()
        self._pending.append((list(requests), future))
        async with lock:
            if not future.done():
                group, self._pending = self._pending, []
                self.calls += 1
                work = asyncio.ensure_future(self.fn([r for reqs, _ in group for r in reqs]))
                work.add_done_callback(lambda task: _deliver(group, task))
                # A cancelled caller must not strand the others: the work goes on.
                await asyncio.wait({work})
        return await future


def _deliver(
    group: list[tuple[list[ScoreRequest], asyncio.Future[list[list[float]]]]],
    task: asyncio.Future[list[list[float]]],
) -> None:
    error: BaseException | None
    error = RuntimeError("scorer call was cancelled") if task.cancelled() else task.exception()
    results = task.result() if error is None else []
    if error is None and len(results) != sum(len(reqs) for reqs, _ in group):
        error = RuntimeError(f"scorer returned {len(results)} lists for "
                             f"{sum(len(reqs) for reqs, _ in group)} requests")
    offset = 0
    for reqs, future in group:
        start, offset = offset, offset + len(reqs)
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(results[start:offset])


class CoalescingScorer:
    """A ``StepScorer`` that coalesces concurrent ``score`` calls of another one."""

    def __init__(self, scorer: StepScorer) -> None:
        self.scorer = scorer
        self.name = scorer.name
        self.coalescer = Coalescer(lambda reqs: scorer.score(reqs))

    async def score(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        return await self.coalescer(requests)

    def scored_tokens(self, requests: Sequence[ScoreRequest]) -> int:
        return self.scorer.scored_tokens(requests)

    async def aclose(self) -> None:
        await self.scorer.aclose()

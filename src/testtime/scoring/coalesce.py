"""Coalesce concurrent ``score`` calls into as few scorer calls as possible.

Used by the PRM scorers (``prm/scorer.py``: concurrent search tasks share forwards), the PRM
service (``service/server.py``: every HTTP request is a task on one event loop) and by
scorers that batch their own callers (``judge.py``). No FastAPI or uvicorn here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from testtime.scoring.base import ScorerBase, ScoreResult, StepScorer
from testtime.types import ScoreRequest

log = logging.getLogger(__name__)

ScoreFn = Callable[[list[ScoreRequest]], Awaitable[ScoreResult]]
_Group = list[tuple[list[ScoreRequest], "asyncio.Future[ScoreResult]"]]


class Coalescer:
    """Merges concurrent calls of an async batch function into as few calls as possible.

    The first caller runs at once; callers that arrive while a call is in flight queue up and
    the next lock holder runs all of them in one call. Results are split back per caller. When
    a merged call fails, each of its callers is run again alone, so a bad request fails only
    its own caller (as the policy batcher does). ``calls`` counts calls of ``fn``. Belongs to
    one event loop at a time (its lock is re-created when the loop changes).
    """

    def __init__(self, fn: ScoreFn) -> None:
        self.fn = fn
        self.calls = 0
        self._pending: _Group = []
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

    async def __call__(self, requests: Sequence[ScoreRequest]) -> ScoreResult:
        if not requests:
            return ScoreResult([])
        lock = self._loop_lock()
        future: asyncio.Future[ScoreResult] = asyncio.get_running_loop().create_future()
        self._pending.append((list(requests), future))
        async with lock:
            if not future.done():
                group, self._pending = self._pending, []
                # A cancelled caller must not strand the others: the work goes on.
                work = asyncio.ensure_future(self._run(group))
                await asyncio.wait({work})
        return await future

    async def _call(self, requests: list[ScoreRequest]) -> ScoreResult:
        self.calls += 1
        result = await self.fn(requests)
        if len(result) != len(requests):
            raise RuntimeError(f"scorer returned {len(result)} lists for {len(requests)} "
                               f"requests")
        return result

    async def _run(self, group: _Group) -> None:
        try:
            result = await self._call([r for reqs, _ in group for r in reqs])
        except Exception as exc:  # noqa: BLE001  (delivered to the callers; see below)
            if len(group) == 1:
                _settle(group[0][1], error=exc)
                return
            # One bad request must not fail the others merged with it: run each caller alone.
            log.warning("merged scorer call of %d callers failed (%s); retrying each alone",
                        len(group), exc)
            for reqs, future in group:
                if future.done():
                    continue
                try:
                    _settle(future, result=await self._call(reqs))
                except Exception as own:  # noqa: BLE001  (delivered to its own caller)
                    _settle(future, error=own)
            return
        except BaseException as exc:  # cancelled: every caller learns it
            for _, future in group:
                _settle(future, error=RuntimeError(f"scorer call was cancelled ({exc!r})"))
            raise
        offset = 0
        for reqs, future in group:
            start, offset = offset, offset + len(reqs)
            _settle(future, result=result.part(start, offset))


def _settle(future: asyncio.Future[ScoreResult], *, result: ScoreResult | None = None,
            error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert result is not None
        future.set_result(result)


class CoalescingScorer(ScorerBase):
    """A ``StepScorer`` that coalesces concurrent ``score`` calls of another one."""

    def __init__(self, scorer: StepScorer) -> None:
        self.scorer = scorer
        self.name = scorer.name
        self.coalescer = Coalescer(lambda reqs: scorer.score(reqs))

    @property
    def param_count(self) -> object:
        """The wrapped scorer's model size (FLOPs accounting sees through the wrapper)."""
        from testtime.flops import params_of

        return params_of(self.scorer)

    async def score(self, requests: Sequence[ScoreRequest]) -> ScoreResult:
        return await self.coalescer(requests)

    async def aclose(self) -> None:
        await self.scorer.aclose()

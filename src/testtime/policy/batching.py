"""Group concurrent generation requests into full backend batches.

Search code runs one asyncio task per problem, awaiting ``generate`` with its step's requests.
``RequestBatcher`` collects everything submitted while the backend is busy (or within one
event-loop turn) and hands the backend batches of up to ``max_batch_seqs`` sequences sharing
one sampling configuration (most engines take one temperature/top-p/stop set per call).

``max_tokens`` is *not* part of that configuration: beam search asks for steps whose limit
depends on how many tokens each path has left, and splitting batches on it would fragment
them near the path limit. A batch runs with the largest limit of its rows and each backend
cuts every row at its own ``request.params.max_tokens`` (see ``row_limit``).

A backend with continuous batching (``streaming=True``) gets a :class:`RowStream` as a third
argument: it hands each row back as soon as it finishes (its task scores it and submits its
next step meanwhile) and takes more queued rows of the same configuration as slots free up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from testtime.timeline import TIMELINE
from testtime.types import Completion, GenerationRequest, SamplingParams

#: Signature of the blocking backend call: rows are (request, row seed) pairs, one per sampled
#: sequence (a request with n=4 contributes 4 rows); returns one completion per row.
#: A streaming backend (``RequestBatcher(..., streaming=True)``) takes a ``RowStream`` third.
BatchFn = Callable[..., list[Completion]]
Row = tuple[GenerationRequest, int | None]


class RowStream:
    """What a streaming backend call may do besides returning its rows' completions: take more
    queued rows and hand back finished ones early (called from the backend's worker thread, run
    on the event loop's). Rows are numbered in the order the call got them: ``0..n-1``, then
    the rows of each ``take``."""

    def __init__(self, batcher: RequestBatcher, loop: asyncio.AbstractEventLoop,
                 batch: list[tuple[_Pending, int]], params: SamplingParams) -> None:
        self._batcher, self._loop, self._batch, self._params = batcher, loop, batch, params

    def _on_loop(self, fn: Callable[[], Any]) -> Any:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def job() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001  (re-raised in the worker thread)
                fut.set_exception(exc)

        self._loop.call_soon_threadsafe(job)
        return fut.result()

    def take(self, limit: int) -> list[Row]:
        """Up to ``limit`` more queued rows sharing this call's sampling key (none once an
        older request with another key waits: the call then drains, so that key is served).
        Each row's own ``request.params.max_tokens`` is its limit."""
        return list(self._on_loop(lambda: self._batcher._take_more(
            self._batch, batch_key(self._params), limit)))

    def deliver(self, index: int, completion: Completion) -> None:
        """Row ``index`` is finished (its caller's result resolves once all its rows are)."""
        p, i = self._batch[index]
        self._loop.call_soon_threadsafe(self._batcher._store, p, i, completion)

    def fail(self, index: int, exc: BaseException) -> None:
        """Row ``index`` cannot run: its request fails with ``exc``."""
        p, _ = self._batch[index]
        self._loop.call_soon_threadsafe(self._batcher._fail, p, exc)


def batch_key(params: SamplingParams) -> tuple[float, float, tuple[str, ...]]:
    """Requests with equal keys can share one backend call (everything but n, seed and
    max_tokens, which backends apply per row)."""
    return (params.temperature, params.top_p, params.stop)


def row_limit(request: GenerationRequest, params: SamplingParams) -> int:
    """The token limit of one row: its own request's, never above the batch's."""
    return min(request.params.max_tokens, params.max_tokens)


# eq=False: pending entries are identities (hashed in dict.fromkeys, removed from the queue
# with list.remove); two equal requests are still two callers.
@dataclass(eq=False)
class _Pending:
    request: GenerationRequest
    future: asyncio.Future[list[Completion]]
    rows: list[Completion | None] = field(default_factory=list)
    handed: int = 0
    """Rows already given to a batch (rows are handed out in order)."""


@dataclass
class BatchStats:
    """Occupancy counters, for benchmarks and the runner's progress display."""

    calls: int = 0
    rows: int = 0
    max_rows: int = 0

    @property
    def mean_rows(self) -> float:
        return self.rows / self.calls if self.calls else 0.0


class RequestBatcher:
    """Coalesce concurrent requests into batches and run them one at a time in a thread.

    Contract: ``submit`` resolves to exactly ``request.params.n`` completions in row order.
    Rows of one request may be split across batches when it is larger than the batch.
    When a batch fails, its requests are retried one by one so that an exception reaches
    only the caller whose request causes it.
    """

    def __init__(self, fn: BatchFn, max_batch_seqs: int, streaming: bool = False) -> None:
        if max_batch_seqs < 1:
            raise ValueError(f"max_batch_seqs must be >= 1, got {max_batch_seqs}")
        self._fn = fn
        self._max = max_batch_seqs
        self._streaming = streaming
        self._queue: list[_Pending] = []
        self._worker: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        # One backend call at a time: models are not re-entrant and share one device.
        self._device_lock = threading.Lock()
        self.stats = BatchStats()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold the device once the call in flight (maybe a cancelled caller's rows) ends."""
        await asyncio.to_thread(self._device_lock.acquire)
        try:
            yield
        finally:
            self._device_lock.release()

    async def submit(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        loop = asyncio.get_running_loop()
        pending = [_Pending(r, loop.create_future()) for r in requests]
        self._queue.extend(pending)
        self._ensure_worker()
        assert self._wakeup is not None
        self._wakeup.set()
        return list(await asyncio.gather(*(p.future for p in pending)))

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            await self._loop()
        except BaseException as exc:
            # A bug here must not leave callers awaiting forever: fail everything queued.
            for p in self._queue:
                if not p.future.done():
                    p.future.set_exception(RuntimeError(f"request batcher failed: {exc!r}"))
            self._queue.clear()
            raise

    async def _loop(self) -> None:
        assert self._wakeup is not None
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            # Let every task that is ready this turn enqueue its requests before we cut a batch.
            await asyncio.sleep(0)
            batch, params = self._take_batch()
            if not batch:
                continue
            try:
                await self._dispatch(batch, params, stream=self._streaming)
            except Exception as exc:  # noqa: BLE001  (any backend error goes to its caller)
                # Rows already handed back (streaming) stay; the rest are retried or failed.
                batch = [(p, i) for p, i in batch if p.rows[i] is None and not p.future.done()]
                owners = list(dict.fromkeys(p for p, _ in batch))
                if len(owners) == 1:
                    if not owners[0].future.done():
                        owners[0].future.set_exception(exc)
                    self._drop(owners[0])
                    continue
                # Isolate the failure: rerun each request's rows on their own, so one bad
                # request (malformed prompt, too long, ...) fails only its own caller.
                for owner in owners:
                    part = [(p, i) for p, i in batch if p is owner]
                    try:
                        await self._dispatch(part, params)
                    except Exception as exc:  # noqa: BLE001  (forwarded to the one awaiting caller)
                        if not owner.future.done():
                            owner.future.set_exception(exc)
                        self._drop(owner)

    def _drop(self, owner: _Pending) -> None:
        """Forget a failed request's rows not yet handed to a batch."""
        if owner in self._queue:
            self._queue.remove(owner)

    async def _dispatch(self, batch: list[tuple[_Pending, int]], params: SamplingParams,
                        stream: bool = False) -> None:
        """Run ``batch`` (a streaming call appends the rows it takes to it)."""
        rows = [(p.request, row_seed(p.request.params.seed, i)) for p, i in batch]
        extra = (RowStream(self, asyncio.get_running_loop(), batch, params),) if stream else ()
        outs = await asyncio.to_thread(self._call, rows, params, *extra)
        for (p, i), out in zip(batch, outs, strict=False):  # a stream's taken rows: delivered
            self._store(p, i, out)

    def _store(self, p: _Pending, i: int, out: Completion) -> None:
        p.rows[i] = out
        if all(r is not None for r in p.rows) and not p.future.done():
            p.future.set_result([r for r in p.rows if r is not None])

    def _fail(self, p: _Pending, exc: BaseException) -> None:
        if not p.future.done():
            p.future.set_exception(exc)
        self._drop(p)

    def _prune(self) -> None:
        """Forget queued requests whose caller is gone (its future done: cancelled, e.g. a
        disconnected HTTP client of ``testtime serve tts``, or failed): their rows not yet
        handed to a batch are never decoded."""
        self._queue[:] = [p for p in self._queue if not p.future.done()]

    def _take_more(self, batch: list[tuple[_Pending, int]], key: tuple[Any, ...],
                   limit: int) -> list[Row]:
        """Up to ``limit`` queued rows with sampling key ``key``, appended to ``batch``
        (rows of callers already gone are dropped, see :meth:`_prune`)."""
        self._prune()
        taken: list[tuple[_Pending, int]] = []
        for p in list(self._queue):
            if batch_key(p.request.params) != key:
                if not taken and p is self._queue[0]:
                    return []  # an older request with another key: let the call drain
                continue
            if len(taken) >= limit:
                break
            n = p.request.params.n
            if not p.rows:
                p.rows = [None] * n
            take = range(p.handed, min(n, p.handed + limit - len(taken)))
            taken.extend((p, i) for i in take)
            p.handed += len(take)
            if p.handed == n:
                self._queue.remove(p)
        batch.extend(taken)
        return [(p.request, row_seed(p.request.params.seed, i)) for p, i in taken]

    def _call(self, rows: list[Row], params: SamplingParams, *stream: RowStream
              ) -> list[Completion]:
        with self._device_lock, TIMELINE.span("policy"):
            outs = self._fn(rows, params, *stream)
        if len(outs) != len(rows):
            raise RuntimeError(f"backend returned {len(outs)} completions for {len(rows)} rows")
        # Counted here, in the worker thread: once a stream has handed back every row, the
        # callers may be gone and the event loop closed before ``_dispatch`` resumes.
        served = len(stream[0]._batch) if stream else len(rows)
        self.stats.calls += 1
        self.stats.rows += served
        self.stats.max_rows = max(self.stats.max_rows, served)
        return outs

    def _take_batch(self) -> tuple[list[tuple[_Pending, int]], SamplingParams]:
        """Cut up to ``max_batch_seqs`` rows sharing the oldest live request's sampling key
        (rows of callers already gone are dropped, see :meth:`_prune`)."""
        self._prune()
        if not self._queue:
            return [], SamplingParams()
        head = self._queue[0].request.params
        key = batch_key(head)
        batch: list[tuple[_Pending, int]] = []
        for p in list(self._queue):
            if batch_key(p.request.params) != key:
                continue
            n = p.request.params.n
            if not p.rows:
                p.rows = [None] * n
            take = range(p.handed, min(n, p.handed + self._max - len(batch)))
            batch.extend((p, i) for i in take)
            p.handed += len(take)
            if p.handed == n:
                self._queue.remove(p)
            if len(batch) >= self._max:
                break
        limit = max(p.request.params.max_tokens for p, _ in batch)
        return batch, replace(head, max_tokens=limit)


def row_seed(seed: int | None, row: int) -> int | None:
    """The seed of row ``row`` of a request seeded with ``seed`` (None stays unseeded)."""
    return None if seed is None else seed * 1_000_003 + row


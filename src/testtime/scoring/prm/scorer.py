"""The :class:`~testtime.scoring.base.StepScorer` implementation shared by all PRM families.

A family supplies a :class:`StepEncoder` (its input format) and a :class:`ForwardEngine` (its
backbone and head); :class:`PRMScorer` adds the async interface: the blocking tokenise +
forward work runs in a worker thread, and ``score`` calls that arrive while the model is busy
are coalesced into the next forward so concurrent search tasks share batches.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

from testtime.scoring.coalesce import Coalescer
from testtime.scoring.prm.engine import EncodedRequest, ForwardEngine
from testtime.types import ScoreRequest

#: Encoded requests kept so that ``scored_tokens`` after ``score`` (or a re-scored beam) does
#: not tokenise again.
DEFAULT_CACHE_SIZE = 8192


class StepEncoder(Protocol):
    """Builds one PRM's input for a question and its steps."""

    def encode(self, question: str, steps: Sequence[str]) -> EncodedRequest:
        """Token ids plus one score position per step (``steps`` are raw ``Step.text``)."""
        ...


_CacheKey = tuple[str, tuple[str, ...]]


class PRMScorer:
    """A process reward model behind the ``StepScorer`` protocol.

    Contract: ``score`` returns one list per request in request order with one probability
    per step (``[]`` for a request without steps); concurrent calls are merged into one
    forward; an error in a merged forward is raised in every caller that was part of it.
    """

    def __init__(
        self,
        name: str,
        encoder: StepEncoder,
        engine: ForwardEngine,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self.name = name
        self.encoder = encoder
        self.engine = engine
        self._cache: OrderedDict[_CacheKey, EncodedRequest] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        # Encoding runs in the worker thread and, for scored_tokens, in the caller's thread.
        self._encode_lock = threading.Lock()
        # Calls that arrive while the model is busy are merged into its next forward.
        self._coalescer = Coalescer(lambda reqs: asyncio.to_thread(self.score_sync, reqs))
        self._closed = False

    def encode(self, request: ScoreRequest) -> EncodedRequest:
        """The PRM input for one request (cached by question and step texts)."""
        key = (request.question, tuple(step.text for step in request.steps))
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        with self._encode_lock:
            encoded = self.encoder.encode(key[0], key[1])
        if len(encoded.positions) != len(request.steps):
            raise RuntimeError(
                f"{self.name}: built {len(encoded.positions)} score positions "
                f"for {len(request.steps)} steps"
            )
        with self._cache_lock:
            self._cache[key] = encoded
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return encoded

    def scored_tokens(self, requests: Sequence[ScoreRequest]) -> int:
        """Unpadded input tokens the PRM runs for these requests (stepless ones cost nothing)."""
        return sum(len(self.encode(r).input_ids) for r in requests if r.steps)

    def score_sync(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        """Blocking version of :meth:`score` (no coalescing)."""
        self._check_open()
        encoded = [self.encode(r) if r.steps else EncodedRequest((), ()) for r in requests]
        return self.engine.run(encoded)

    async def score(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        """One probability per step, per request; the forward runs in a worker thread."""
        self._check_open()
        return await self._coalescer(requests)

    async def aclose(self) -> None:
        """Wait for the forward in flight, then drop the model; later calls raise."""
        async with self._coalescer.exclusive():
            self._closed = True
            await asyncio.to_thread(self.engine.close)
            with self._cache_lock:
                self._cache.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.name}: scorer is closed")

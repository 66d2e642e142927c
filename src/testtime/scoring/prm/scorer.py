"""The :class:`~testtime.scoring.base.StepScorer` implementation shared by all PRM families.

A family supplies a :class:`StepEncoder` (its input format) and a :class:`ForwardEngine` (its
backbone and head); :class:`PRMScorer` adds the async interface: the blocking tokenise +
forward work runs in a worker thread, and ``score`` calls that arrive while the model is busy
are coalesced into the next forward so concurrent search tasks share batches.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

from testtime.scoring.base import InputTooLong, ScorerBase, ScoreResult
from testtime.scoring.coalesce import Coalescer
from testtime.scoring.prm.engine import EncodedRequest, ForwardEngine
from testtime.types import ScoreRequest

log = logging.getLogger(__name__)

#: Encoded requests kept so that a re-scored beam (or the same path in a later call) is not
#: tokenised again.
DEFAULT_CACHE_SIZE = 8192


class StepEncoder(Protocol):
    """Builds one PRM's input for a question and its steps."""

    def encode(self, question: str, steps: Sequence[str]) -> EncodedRequest:
        """Token ids plus one score position per step (``steps`` are raw ``Step.text``)."""
        ...


_CacheKey = tuple[str, tuple[str, ...]]


class PRMScorer(ScorerBase):
    """A process reward model behind the ``StepScorer`` protocol.

    Contract: ``score`` returns one list per request in request order with one probability
    per step (``[]`` for a request without steps) and the unpadded input tokens of each
    request (stepless ones cost nothing), of which those the engine's KV store held are
    reported as cached; concurrent calls are merged into one forward, and
    when a merged forward fails each caller is run alone, so only a bad request's caller fails.
    """

    def __init__(
        self,
        name: str,
        encoder: StepEncoder,
        engine: ForwardEngine,
        cache_size: int = DEFAULT_CACHE_SIZE,
        max_input_tokens: int | None = None,
    ) -> None:
        self.name = name
        self.encoder = encoder
        self.engine = engine
        self.max_input_tokens = max_input_tokens
        """Longest input (tokens) this scorer accepts: the model's context, or a lower cap
        (``testtime serve prm --max-request-tokens``); None: no limit known."""
        self._cache: OrderedDict[_CacheKey, EncodedRequest] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        # Encoding runs in worker threads (one forward at a time, but closing may overlap).
        self._encode_lock = threading.Lock()
        # Calls that arrive while the model is busy are merged into its next forward.
        self._coalescer = Coalescer(lambda reqs: asyncio.to_thread(self.score_sync, reqs))
        self._closed = False

    def encode(self, request: ScoreRequest) -> EncodedRequest:
        """The PRM input for one request (cached by question and step texts).

        A path longer than :attr:`max_input_tokens` is cut to the longest prefix that fits
        and ends at a step's score position: the PRM is causal, so the steps in it are scored
        exactly as over the whole input, and the input carries fewer score positions than the
        request has steps (:meth:`score_sync` fills those in). Only a question too long for
        even the first step's score raises :class:`InputTooLong`."""
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
        limit = self.max_input_tokens
        if limit is not None and len(encoded.input_ids) > limit:
            fits = [p for p in encoded.positions if p < limit]
            if not fits:
                raise InputTooLong(
                    f"{self.name}: the question and first step are "
                    f"{encoded.positions[0] + 1} tokens, more than the {limit} this PRM "
                    f"accepts (its context)")
            log.warning("%s: a path of %d steps is %d tokens, more than the %d this PRM "
                        "reads (its context): its first %d steps are scored, the last %d "
                        "repeat the score of step %d (counted in compute.prm_unread_steps)",
                        self.name, len(request.steps), len(encoded.input_ids), limit,
                        len(fits), len(request.steps) - len(fits), len(fits))
            encoded = EncodedRequest(encoded.input_ids[:fits[-1] + 1], tuple(fits))
        with self._cache_lock:
            self._cache[key] = encoded
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return encoded

    def score_sync(self, requests: Sequence[ScoreRequest]) -> ScoreResult:
        """Blocking version of :meth:`score` (no coalescing). Steps past the PRM's context
        (see :meth:`encode`) take the score of the last step it read, and are counted in
        :attr:`ScoreResult.unread`."""
        self._check_open()
        encoded = [self.encode(r) if r.steps else EncodedRequest((), ()) for r in requests]
        scores, computed = self.engine.score(encoded)
        unread = [len(r.steps) - len(e.positions) for r, e in zip(requests, encoded, strict=True)]
        scores = [list(row) + [row[-1]] * k if k else list(row)
                  for row, k in zip(scores, unread, strict=True)]
        tokens = [len(e.input_ids) for e in encoded]
        return ScoreResult(scores, tokens, [t - c for t, c in zip(tokens, computed, strict=True)],
                           unread)

    async def score(self, requests: Sequence[ScoreRequest]) -> ScoreResult:
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

"""Score through a ``testtime serve prm`` service: ``--prm http://HOST:PORT`` (or https).

The client posts the requests to ``/v1/score`` with an async httpx client, splitting very
large calls into several bodies (sent concurrently) so each stays under the server's size
limit. Connection errors, 429 and 5xx answers are retried under :mod:`testtime.retry`; a 4xx
is reported at once with the server's message. The tokens the service read come back per
request with the scores, and ``/v1/info`` gives the served model's parameter count, so compute
accounting (tokens and FLOPs) matches the in-process scorer exactly.

The API key is taken from ``api_key``, else from the URL (``http://KEY@HOST:PORT``), else from
``$TESTTIME_PRM_API_KEY``; it is never part of the scorer's name or of error messages.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from typing import Any

from testtime.flops import ParamCount
from testtime.retry import RetryError, RetryPolicy, describe, retry_sync
from testtime.scoring.base import ScorerBase, ScoreResult
from testtime.scoring.service.http import (
    HTTP_RETRY,
    RETRY_STATUSES,
    LoopClient,
    RemoteScorerError,
    Timeouts,
    message_of,
    post_json,
    split_url,
)
from testtime.scoring.service.protocol import API_KEY_ENV, require, wire_request
from testtime.types import ScoreRequest

#: Client-side body budget: below the server's default limit (64 MiB) with room to spare.
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024

__all__ = ["RemoteScorer", "RemoteScorerError"]


class RemoteScorer(ScorerBase):
    """``StepScorer`` client of a ``testtime serve prm`` service.

    Contract: as ``StepScorer``; ``score`` raises :class:`RemoteScorerError` naming the URL
    when the service is down (after the retries) or rejects the input. ``param_count`` is the
    served model's (from ``/v1/info``), None for a model-free scorer or before ``connect``.
    """

    def __init__(self, url: str, *, api_key: str | None = None, name: str | None = None,
                 retry: RetryPolicy = HTTP_RETRY, timeouts: Timeouts | None = None,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.url, url_key = split_url(url)
        self._api_key = api_key or url_key or os.environ.get(API_KEY_ENV) or None
        self.name = name or f"remote:{self.url}"
        self.retry = retry
        self.timeouts = timeouts or Timeouts()
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be >= 1, got {max_body_bytes}")
        self.max_body_bytes = max_body_bytes
        self.param_count: ParamCount | None = None
        self.posts = 0
        """Bodies posted to ``/v1/score`` (for tests and logs)."""
        self._client = LoopClient(self.timeouts)

    @classmethod
    def connect(cls, url: str, **kwargs: Any) -> RemoteScorer:
        """A client named after the served scorer and billing its model's parameters, after
        checking the service answers (blocking: called while the run is being built)."""
        scorer = cls(url, **kwargs)
        info = scorer.info()
        scorer.name = str(info.get("name") or scorer.name)
        params = info.get("params")
        if isinstance(params, dict):
            scorer.param_count = ParamCount(int(params["total"]), int(params["non_embedding"]))
        return scorer

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def info(self) -> dict[str, Any]:
        """``GET /v1/info`` (blocking, retried like scoring)."""
        httpx = require("httpx")
        url = f"{self.url}/v1/info"

        def attempt() -> dict[str, Any]:
            response = httpx.get(url, headers=self.headers, timeout=self.timeouts.httpx())
            if response.status_code in RETRY_STATUSES:
                raise ConnectionError(f"HTTP {response.status_code}: {message_of(response)}")
            if response.status_code >= 400:
                raise RemoteScorerError(
                    f"{url} refused (HTTP {response.status_code}): {message_of(response)}")
            return dict(response.json())

        try:
            return retry_sync(attempt, self.retry, what=url, is_retryable=lambda e: isinstance(
                e, ConnectionError | httpx.TransportError))[0]
        except RetryError as exc:
            if isinstance(exc.last, RemoteScorerError):
                raise exc.last from None
            raise RemoteScorerError(
                f"scorer service at {self.url} is not reachable after {exc.attempts} attempts "
                f"(last error: {describe(exc.last)}); is it running?") from None

    def _bodies(self, requests: Sequence[ScoreRequest]) -> list[tuple[int, int, bytes]]:
        """``(start, end, body)`` chunks of the requests, each body within the byte budget."""
        encoded = [json.dumps(wire_request(r)).encode() for r in requests]
        out: list[tuple[int, int, bytes]] = []
        start, size = 0, 0
        for i, item in enumerate(encoded):
            if i > start and size + len(item) + 16 > self.max_body_bytes:
                out.append((start, i, b'{"requests":[' + b",".join(encoded[start:i]) + b"]}"))
                start, size = i, 0
            size += len(item) + 1
        out.append((start, len(encoded),
                    b'{"requests":[' + b",".join(encoded[start:]) + b"]}"))
        return out

    async def score(self, requests: Sequence[ScoreRequest]) -> ScoreResult:
        """One score per step, per request, and the tokens read, computed by the service."""
        if not requests:
            return ScoreResult([])
        client = self._client.get()
        bodies = self._bodies(requests)
        self.posts += len(bodies)
        answers = await asyncio.gather(*(
            post_json(client, f"{self.url}/v1/score", body, self.headers, self.retry)
            for _, _, body in bodies))
        parts = []
        for (start, end, _), answer in zip(bodies, answers, strict=True):
            parts.append(self._parse(requests[start:end], answer))
        return ScoreResult.concat(parts)

    def _parse(self, part: Sequence[ScoreRequest], answer: Any) -> ScoreResult:
        got = answer.get("scores") if isinstance(answer, dict) else None
        tokens = answer.get("tokens") if isinstance(answer, dict) else None
        if not isinstance(got, list) or len(got) != len(part) or not isinstance(tokens, list) \
                or len(tokens) != len(part):
            raise RemoteScorerError(f"{self.url}/v1/score: malformed answer for "
                                    f"{len(part)} requests: {str(answer)[:300]}")
        scores = []
        for req, row in zip(part, got, strict=True):
            if not isinstance(row, list) or len(row) != len(req.steps):
                raise RemoteScorerError(f"{self.url}/v1/score: {row!r} is not one score per "
                                        f"step of a {len(req.steps)}-step request")
            scores.append([float(x) for x in row])
        cached = answer.get("cached") or []  # older servers do not send it
        if not isinstance(cached, list) or len(cached) not in (0, len(part)):
            raise RemoteScorerError(f"{self.url}/v1/score: malformed 'cached' for "
                                    f"{len(part)} requests: {str(cached)[:300]}")
        unread = answer.get("unread") or []  # older servers do not send it
        if not isinstance(unread, list) or len(unread) not in (0, len(part)):
            raise RemoteScorerError(f"{self.url}/v1/score: malformed 'unread' for "
                                    f"{len(part)} requests: {str(unread)[:300]}")
        try:
            return ScoreResult(scores, [int(t) for t in tokens], [int(c) for c in cached],
                               [int(u) for u in unread])
        except (TypeError, ValueError) as exc:
            raise RemoteScorerError(f"{self.url}/v1/score: {exc}") from None

    async def aclose(self) -> None:
        """Close the HTTP connections (the service keeps running)."""
        await self._client.aclose()

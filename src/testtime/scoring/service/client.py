"""Score through a ``testtime serve prm`` service: ``--prm http://HOST:PORT`` (or https).

The client posts the requests to ``/v1/score`` with an async httpx client, splitting very
large calls into several bodies (sent concurrently) so each stays under the server's size
limit. Connection errors and 5xx answers are retried with exponential backoff a bounded
number of times; a 4xx is reported at once with the server's message. ``scored_tokens``
comes from the server's answer (per request), so compute accounting matches the in-process
scorer exactly.

The API key is taken from ``api_key``, else from the URL (``http://KEY@HOST:PORT``), else from
``$TESTTIME_PRM_API_KEY``; it is never part of the scorer's name or of error messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from testtime.scoring.serve import API_KEY_ENV, require
from testtime.types import ScoreRequest, Step

log = logging.getLogger(__name__)

#: Client-side body budget: below the server's default limit (64 MiB) with room to spare.
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
#: Token counts remembered per (question, steps), so ``scored_tokens`` after ``score`` is free.
TOKEN_CACHE_SIZE = 65536
_RETRY_STATUS = frozenset({500, 502, 503, 504})
_MAX_BACKOFF_S = 8.0


class RemoteScorerError(RuntimeError):
    """The scoring service is unreachable or rejected a request."""


@dataclass(frozen=True)
class RetryPolicy:
    """How connection errors and 5xx answers are retried."""

    max_retries: int = 4
    """Retries after the first attempt (so at most ``max_retries + 1`` attempts)."""
    backoff_s: float = 0.5
    """First wait; doubled each retry (with jitter), capped at 8 s."""
    timeout_s: float = 600.0
    """Read timeout of one attempt: a large batch on a busy PRM can take minutes."""
    connect_timeout_s: float = 10.0
    """Connect timeout of one attempt."""

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        for name in ("backoff_s", "timeout_s", "connect_timeout_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def delay(self, attempt: int) -> float:
        return min(_MAX_BACKOFF_S, self.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)

    def httpx_timeout(self) -> Any:
        import httpx

        return httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s)


class LoopClient:
    """One ``httpx.AsyncClient`` per event loop: a client is bound to the loop it first ran
    on, and ``asyncio.run`` makes a new loop each time."""

    def __init__(self, retry: RetryPolicy) -> None:
        self.retry = retry
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> Any:
        """The client of the running loop (made on first use)."""
        httpx = require("httpx")
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(timeout=self.retry.httpx_timeout())
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the client if it belongs to the running loop (another loop's is gone)."""
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()


def split_url(url: str) -> tuple[str, str | None]:
    """``(base URL without credentials or trailing slash, API key from the URL or None)``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"scorer URL {url!r} must look like http://HOST:PORT or https://HOST")
    key = parts.password or parts.username or None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", "")), key


def _retryable(exc: Exception) -> bool:
    import httpx

    # A read timeout is not retried: the server may still be computing, and a retry would
    # queue the same work again.
    return isinstance(exc, httpx.TransportError) and not isinstance(
        exc, httpx.ReadTimeout | httpx.WriteTimeout)


def _message(response: Any) -> str:
    try:
        body = response.json()
        return str(body.get("error") or body.get("detail") or body.get("message") or body)
    except ValueError:
        return response.text[:500]


async def post_json(client: Any, url: str, body: bytes | dict[str, Any], retry: RetryPolicy,
                    headers: dict[str, str] | None = None) -> Any:
    """POST JSON with bounded retries; the decoded answer, or :class:`RemoteScorerError`."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    heads = {"Content-Type": "application/json", **(headers or {})}
    last = ""
    for attempt in range(retry.max_retries + 1):
        if attempt:
            await asyncio.sleep(retry.delay(attempt - 1))
        try:
            response = await client.post(url, content=content, headers=heads)
        except Exception as exc:
            if not _retryable(exc):
                raise RemoteScorerError(f"{url}: {type(exc).__name__}: {exc}") from exc
            last = f"{type(exc).__name__}: {exc}"
            log.warning("%s: attempt %d failed (%s)", url, attempt + 1, last)
            continue
        if response.status_code in _RETRY_STATUS:
            last = f"HTTP {response.status_code}: {_message(response)}"
            log.warning("%s: attempt %d failed (%s)", url, attempt + 1, last)
            continue
        if response.status_code >= 400:
            raise RemoteScorerError(
                f"{url} rejected the request (HTTP {response.status_code}): {_message(response)}")
        try:
            return response.json()
        except ValueError as exc:
            raise RemoteScorerError(f"{url} answered with invalid JSON: {exc}") from exc
    raise RemoteScorerError(
        f"scorer service at {url} is not reachable after {retry.max_retries + 1} attempts "
        f"(last error: {last}); is it running?")


def wire_request(request: ScoreRequest) -> dict[str, Any]:
    """The JSON form of a request; steps without token statistics are plain strings."""
    return {"question": request.question, "steps": [_wire_step(s) for s in request.steps]}


def _wire_step(step: Step) -> str | dict[str, Any]:
    if (step.num_tokens == 0 and step.logprob_sum is None and step.certainty_sum is None
            and not step.truncated):
        return step.text
    return {"text": step.text, "num_tokens": step.num_tokens, "logprob_sum": step.logprob_sum,
            "certainty_sum": step.certainty_sum, "truncated": step.truncated}


def _key(request: ScoreRequest) -> tuple[str, tuple[str, ...]]:
    return request.question, tuple(s.text for s in request.steps)


class RemoteScorer:
    """``StepScorer`` client of a ``testtime serve prm`` service.

    Contract: as ``StepScorer``; ``score`` raises :class:`RemoteScorerError` naming the URL
    when the service is down (after the retries) or rejects the input.
    """

    def __init__(self, url: str, *, api_key: str | None = None, name: str | None = None,
                 retry: RetryPolicy | None = None,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.url, url_key = split_url(url)
        self._api_key = api_key or url_key or os.environ.get(API_KEY_ENV) or None
        self.name = name or f"remote:{self.url}"
        self.retry = retry or RetryPolicy()
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be >= 1, got {max_body_bytes}")
        self.max_body_bytes = max_body_bytes
        self.posts = 0
        """Bodies posted to ``/v1/score`` (for tests and logs)."""
        self._tokens: OrderedDict[tuple[str, tuple[str, ...]], int] = OrderedDict()
        self._client = LoopClient(self.retry)

    @classmethod
    def connect(cls, url: str, **kwargs: Any) -> RemoteScorer:
        """A client whose name is the served scorer's, after checking the service answers."""
        scorer = cls(url, **kwargs)
        info = scorer.info()
        scorer.name = str(info.get("name") or scorer.name)
        return scorer

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def info(self) -> dict[str, Any]:
        """``GET /v1/info`` (blocking, retried like scoring)."""
        httpx = require("httpx")

        url = f"{self.url}/v1/info"
        last = ""
        for attempt in range(self.retry.max_retries + 1):
            if attempt:
                time.sleep(self.retry.delay(attempt - 1))
            try:
                response = httpx.get(url, headers=self.headers, timeout=self.retry.httpx_timeout())
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code in _RETRY_STATUS:
                last = f"HTTP {response.status_code}: {_message(response)}"
                continue
            if response.status_code >= 400:
                raise RemoteScorerError(
                    f"{url} refused (HTTP {response.status_code}): {_message(response)}")
            return dict(response.json())
        raise RemoteScorerError(f"scorer service at {self.url} is not reachable after "
                                f"{self.retry.max_retries + 1} attempts (last error: {last})")

    def _http(self) -> Any:
        return self._client.get()

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

    async def score(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        """One score per step, per request, computed by the service."""
        if not requests:
            return []
        client = self._http()
        bodies = self._bodies(requests)
        self.posts += len(bodies)
        answers = await asyncio.gather(*(
            post_json(client, f"{self.url}/v1/score", body, self.retry, self.headers)
            for _, _, body in bodies))
        scores: list[list[float]] = []
        for (start, end, _), answer in zip(bodies, answers, strict=True):
            part = requests[start:end]
            got, tokens = answer.get("scores"), answer.get("tokens")
            if not isinstance(got, list) or len(got) != len(part) or not isinstance(tokens, list) \
                    or len(tokens) != len(part):
                raise RemoteScorerError(f"{self.url}/v1/score: malformed answer for "
                                        f"{len(part)} requests: {str(answer)[:300]}")
            for req, row, count in zip(part, got, tokens, strict=True):
                if not isinstance(row, list) or len(row) != len(req.steps):
                    raise RemoteScorerError(f"{self.url}/v1/score: {row!r} is not one score per "
                                            f"step of a {len(req.steps)}-step request")
                scores.append([float(x) for x in row])
                self._remember(req, int(count))
        return scores

    def _remember(self, request: ScoreRequest, tokens: int) -> None:
        key = _key(request)
        self._tokens[key] = tokens
        self._tokens.move_to_end(key)
        while len(self._tokens) > TOKEN_CACHE_SIZE:
            self._tokens.popitem(last=False)

    def scored_tokens(self, requests: Sequence[ScoreRequest]) -> int:
        """Tokens the service reported for these requests.

        Requests scored earlier are answered from memory; others are asked of ``/v1/tokens``
        with a blocking call (search methods always score first, so this is rare).
        """
        missing = [r for r in requests if _key(r) not in self._tokens]
        if missing:
            import httpx

            body = {"requests": [wire_request(r) for r in missing]}
            response = httpx.post(f"{self.url}/v1/tokens", json=body, headers=self.headers,
                                  timeout=self.retry.httpx_timeout())
            if response.status_code >= 400:
                raise RemoteScorerError(f"{self.url}/v1/tokens refused (HTTP "
                                        f"{response.status_code}): {_message(response)}")
            for req, count in zip(missing, response.json()["tokens"], strict=True):
                self._remember(req, int(count))
        return sum(self._tokens[_key(r)] for r in requests)

    async def aclose(self) -> None:
        """Close the HTTP connections (the service keeps running)."""
        await self._client.aclose()

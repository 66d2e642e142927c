"""HTTP plumbing of the scorer clients (``client.py``, ``vllm_pooling.py``).

One ``httpx.AsyncClient`` per event loop, URLs with an optional API key in them, and
``post_json``: a POST retried under the project's one retry mechanism
(:mod:`testtime.retry`) when the connection fails or the server answers 5xx/429, with the
server's own message when it refuses a request.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from testtime.retry import PermanentError, RetryError, RetryPolicy, describe, retry_async
from testtime.scoring.service.protocol import require

#: Statuses worth retrying: rate limiting, a busy server and server-side failures.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Retries of a failed POST: about 15 s of backoff in all before the call fails.
HTTP_RETRY = RetryPolicy(max_retries=4, base_delay_s=0.5, max_delay_s=8.0)


class RemoteScorerError(RuntimeError):
    """The scoring service is unreachable or rejected a request."""


class _Refused(PermanentError):
    """A 4xx answer (or an answer that is not JSON): retrying cannot help."""


class _Transient(RuntimeError):
    """A 5xx/429 answer: worth retrying."""


@dataclass(frozen=True)
class Timeouts:
    """Timeouts of one HTTP attempt."""

    read_s: float = 600.0
    """A large batch on a busy PRM can take minutes."""
    connect_s: float = 10.0

    def __post_init__(self) -> None:
        if self.read_s <= 0 or self.connect_s <= 0:
            raise ValueError(f"timeouts must be > 0, got {self}")

    def httpx(self) -> Any:
        return require("httpx").Timeout(self.read_s, connect=self.connect_s)


class LoopClient:
    """One ``httpx.AsyncClient`` per event loop: a client is bound to the loop it first ran
    on, and ``asyncio.run`` makes a new loop each time."""

    def __init__(self, timeouts: Timeouts) -> None:
        self.timeouts = timeouts
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> Any:
        """The client of the running loop (made on first use)."""
        httpx = require("httpx")
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(timeout=self.timeouts.httpx())
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


def message_of(response: Any) -> str:
    """The server's error message in an answer (its ``error``/``detail`` field or text)."""
    try:
        body = response.json()
        return str(body.get("error") or body.get("detail") or body.get("message") or body)
    except (ValueError, AttributeError):
        return str(response.text[:500])


def _retryable(exc: BaseException) -> bool:
    import httpx

    if isinstance(exc, _Transient):
        return True
    # A read timeout is not retried: the server may still be computing, and a retry would
    # queue the same work again.
    return isinstance(exc, httpx.TransportError) and not isinstance(
        exc, httpx.ReadTimeout | httpx.WriteTimeout)


async def request_json(client: Any, method: str, url: str, *, body: bytes | None = None,
                       headers: dict[str, str] | None = None,
                       retry: RetryPolicy = HTTP_RETRY) -> Any:
    """Send a request with bounded retries; the decoded answer, or
    :class:`RemoteScorerError` naming the URL."""
    heads = {"Content-Type": "application/json", **(headers or {})} if body is not None \
        else dict(headers or {})

    async def attempt() -> Any:
        response = await client.request(method, url, content=body, headers=heads)
        if response.status_code in RETRY_STATUSES:
            raise _Transient(f"HTTP {response.status_code}: {message_of(response)}")
        if response.status_code >= 400:
            raise _Refused(f"{url} rejected the request (HTTP {response.status_code}): "
                           f"{message_of(response)}")
        try:
            return response.json()
        except ValueError as exc:
            raise _Refused(f"{url} answered with invalid JSON: {exc}") from exc

    try:
        value, _ = await retry_async(attempt, retry, what=url, is_retryable=_retryable)
    except RetryError as exc:
        if isinstance(exc.last, _Refused):
            raise RemoteScorerError(str(exc.last)) from exc.last
        if exc.attempts == 1 and not _retryable(exc.last):
            raise RemoteScorerError(f"{url}: {describe(exc.last)}") from exc.last
        raise RemoteScorerError(
            f"the service at {url} is not reachable after {exc.attempts} attempts "
            f"(last error: {describe(exc.last)}); is it running?") from exc.last
    return value


async def post_json(client: Any, url: str, body: bytes | dict[str, Any],
                    headers: dict[str, str] | None = None,
                    retry: RetryPolicy = HTTP_RETRY) -> Any:
    """POST JSON (:func:`request_json`)."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await request_json(client, "POST", url, body=content, headers=headers, retry=retry)

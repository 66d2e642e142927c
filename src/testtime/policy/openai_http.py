"""HTTP side of the OpenAI-compatible backend: server checks, load spreading and retries.

:class:`ServerPool` talks to one or more servers for
:class:`~testtime.policy.openai.OpenAIPolicy`, which builds the request payloads and maps the
returned choices to completions. Its contract:

- :meth:`ServerPool.check` asks every server's ``/v1/models`` once, synchronously, and raises
  :class:`OpenAIServerError` naming the URL when a server is down, answers an error, or does
  not serve the model; it returns the extra request fields for the servers' family, and keeps
  what the servers report of the model (:attr:`ServerPool.served`: vLLM's ``max_model_len``
  and ``root``, the model it loaded behind a ``--served-model-name`` alias).
- :meth:`ServerPool.post` sends one ``/v1/completions`` request, with at most
  ``max_concurrency`` per server in flight, to the server with the fewest in flight; 429, 5xx,
  timeouts and connection errors are retried with exponential backoff and jitter (on another
  server when there is one), then fail with :class:`OpenAIServerError` naming the URL; other
  HTTP errors fail at once, a refusal because the request does not fit the model's context
  as :class:`ContextLengthError` (the caller ends that candidate, it does not fail).
- :meth:`ServerPool.stream` sends one ``/v1/completions`` request with ``stream: true`` and
  feeds each server-sent chunk to a reader, which may end the request early (the connection
  is closed, so the server stops generating); load spreading and retries as for ``post``
  (a retry starts over with a fresh reader).
- One ``httpx.AsyncClient`` is kept per event loop (a policy may be used from several loops);
  :meth:`ServerPool.aclose` closes the running loop's.

``httpx`` is imported only when a method needs it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from testtime.policy.openai_wire import (
    DONE,
    OpenAIServerError,
    Reader,
    ServedModel,
    context_error,
    sse_data,
)
from testtime.retry import RetryError, RetryPolicy, retry_async

log = logging.getLogger(__name__)

#: HTTP statuses worth retrying: rate limiting and server-side failures.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

#: Extra request fields per server family (``owned_by`` in ``/v1/models``). llama.cpp servers
#: default to top-k 40, min-p 0.05 and a repeat penalty; these make sampling plain
#: temperature + top-p as on the other backends. vLLM can keep the stop string in the text.
SERVER_EXTRAS: dict[str, dict[str, Any]] = {
    "llamacpp": {"top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0},
    "me": {"top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0},  # llama-cpp-python's server
    # (not skip_special_tokens=False: vLLM would then put the EOS text into the completion)
    "vllm": {"include_stop_str_in_output": True},
}


class _Transient(RuntimeError):
    """A failure worth retrying (connection, timeout, 408/429/5xx); the message names the URL."""


class ServerPool:
    """The servers behind one policy (see the module docstring for the contract).

    ``urls`` are base URLs ending in ``/v1`` (no trailing slash); ``transport`` (an ``httpx``
    transport) may be injected by tests; the other arguments are the fields of the same name
    of :class:`~testtime.policy.openai.OpenAIPolicyConfig`.
    """

    def __init__(self, urls: Sequence[str], *, model: str, headers: dict[str, str],
                 transport: Any = None, max_concurrency: int, timeout_s: float,
                 connect_timeout_s: float, max_retries: int, backoff_s: float,
                 max_backoff_s: float) -> None:
        self.urls = list(urls)
        self.model = model
        self._headers = headers
        self._transport = transport
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.retry = RetryPolicy(max_retries=max_retries, base_delay_s=backoff_s,
                                 max_delay_s=max_backoff_s)
        self._in_flight = dict.fromkeys(self.urls, 0)
        self._rr = itertools.count()
        self._clients: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self._slots: weakref.WeakKeyDictionary[Any, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary())
        self.retries = 0
        """Requests retried so far (for tests and progress displays)."""
        self.served: list[ServedModel] = []
        """What each server reported of the model (filled by :meth:`check`)."""

    def check(self, server_extras: dict[str, Any] | None = None) -> dict[str, Any]:
        """Check every server serves the model; return the request extras for its family
        (``server_extras`` when given, whatever the family)."""
        import httpx

        with httpx.Client(transport=self._transport, headers=self._headers,
                          timeout=self.connect_timeout_s) as sync:
            self.served = [self._check_one(sync, url) for url in self.urls]
        families = {s.family for s in self.served}
        if server_extras is not None:
            return dict(server_extras)
        if len(families) == 1:
            return dict(SERVER_EXTRAS.get(families.pop(), {}))
        log.warning("servers of different families %s: sending no extra fields", families)
        return {}

    @property
    def max_model_len(self) -> int | None:
        """The smallest context length the servers report, or None when none reports one."""
        lens = [s.max_model_len for s in self.served if s.max_model_len is not None]
        return min(lens) if lens else None

    @property
    def root(self) -> str | None:
        """The model the servers loaded (``root``), or None when none reports it."""
        roots = list(dict.fromkeys(s.root for s in self.served if s.root))
        if len(roots) > 1:
            log.warning("servers report different models behind %r: %s; using %s",
                        self.model, roots, roots[0])
        return roots[0] if roots else None

    def _check_one(self, sync: Any, url: str) -> ServedModel:
        """What the server at ``url`` says of the model; clear errors."""
        import httpx

        try:
            resp = sync.get(f"{url}/models")
        except httpx.HTTPError as exc:
            raise OpenAIServerError(f"cannot reach the OpenAI-compatible server at {url} "
                                    f"({type(exc).__name__}: {exc}); is it running?") from exc
        if resp.status_code != 200:
            raise OpenAIServerError(f"{url}/models answered HTTP {resp.status_code}: "
                                    f"{resp.text[:300]}")
        models = resp.json().get("data", [])
        match = [m for m in models if m.get("id") == self.model]
        if not match:
            raise OpenAIServerError(f"the server at {url} does not serve model "
                                    f"{self.model!r}; it serves "
                                    f"{[m.get('id') for m in models]}")
        entry = match[0]
        limit = entry.get("max_model_len")
        root = entry.get("root")
        return ServedModel(url, str(entry.get("owned_by", "")),
                           int(limit) if isinstance(limit, int) and limit > 0 else None,
                           str(root) if isinstance(root, str) and root else None)

    def _client(self) -> Any:
        import httpx

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            limits = httpx.Limits(max_connections=self.max_concurrency * len(self.urls))
            timeout = httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s)
            client = httpx.AsyncClient(headers=self._headers, timeout=timeout, limits=limits,
                                       transport=self._transport)
            self._clients[loop] = client
            self._slots[loop] = asyncio.Semaphore(self.max_concurrency * len(self.urls))
        return client

    def _pick(self, avoid: str | None) -> str:
        """The server with the fewest requests in flight (round-robin among equals)."""
        urls = [u for u in self.urls if u != avoid] or self.urls
        start = next(self._rr) % len(urls)
        rotated = urls[start:] + urls[:start]
        return min(rotated, key=lambda u: self._in_flight[u])

    async def post(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The JSON answer of ``/completions`` to ``payload``, retried as the contract says
        (under :mod:`testtime.retry`, the project's one retry mechanism)."""
        import httpx

        client = self._client()
        slots = self._slots[asyncio.get_running_loop()]
        failed: list[str] = []  # servers that failed this request: the next try avoids them

        async def attempt() -> dict[str, Any]:
            if failed:
                self.retries += 1
            async with slots:
                url = self._pick(failed[-1] if failed else None)
                self._in_flight[url] += 1
                try:
                    resp = await client.post(f"{url}/completions", json=payload)
                except (httpx.TimeoutException, httpx.TransportError) as exc:
                    failed.append(url)
                    raise _Transient(f"{url}: {type(exc).__name__}: {exc}") from exc
                finally:
                    self._in_flight[url] -= 1
            if resp.status_code == 200:
                return dict(resp.json())
            raise _refusal(url, resp.status_code, resp.text, failed)

        return await self._retrying(attempt, failed)

    async def stream(self, payload: dict[str, Any], new_reader: Callable[[], Reader]
                     ) -> Reader:
        """Stream ``payload`` (``stream: true`` is set here) into a reader from ``new_reader``
        until the server ends it or the reader's ``feed`` returns True; return that reader.

        Leaving early closes the connection, which makes vLLM abort the request. Retried as
        :meth:`post` is; each attempt gets a fresh reader (a seeded request replays).
        """
        import httpx

        client = self._client()
        slots = self._slots[asyncio.get_running_loop()]
        failed: list[str] = []
        body = {**payload, "stream": True}

        async def attempt() -> Reader:
            if failed:
                self.retries += 1
            reader = new_reader()
            async with slots:
                url = self._pick(failed[-1] if failed else None)
                self._in_flight[url] += 1
                try:
                    async with client.stream("POST", f"{url}/completions", json=body) as resp:
                        if resp.status_code != 200:
                            text = (await resp.aread()).decode(errors="replace")
                            raise _refusal(url, resp.status_code, text, failed)
                        async for line in resp.aiter_lines():
                            chunk = sse_data(line, url)
                            if chunk is None:
                                continue
                            if chunk is DONE or reader.feed(chunk):
                                break
                except (httpx.TimeoutException, httpx.TransportError) as exc:
                    failed.append(url)
                    raise _Transient(f"{url}: {type(exc).__name__}: {exc}") from exc
                finally:
                    self._in_flight[url] -= 1
            return reader

        return await self._retrying(attempt, failed)

    async def _retrying(self, attempt: Callable[[], Any], failed: list[str]) -> Any:
        """``attempt()`` under the retry policy; errors as the module docstring says."""
        try:
            return (await retry_async(attempt, self.retry, what="completion request",
                                      is_retryable=lambda e: isinstance(e, _Transient)))[0]
        except RetryError as exc:
            if isinstance(exc.last, OpenAIServerError):
                raise exc.last from None
            raise OpenAIServerError(f"{failed[-1]}/completions failed {exc.attempts} times; "
                                    f"last error: {exc.last}") from None

    async def aclose(self) -> None:
        """Close the client of the running event loop, if one was opened."""
        loop = asyncio.get_running_loop()
        client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()


def _refusal(url: str, status: int, text: str, failed: list[str]) -> Exception:
    """The exception for a non-200 answer: transient ones (retried) are noted in ``failed``."""
    last = f"HTTP {status}: {text[:300]}"
    if status in RETRY_STATUSES:
        failed.append(url)
        return _Transient(f"{url}: {last}")
    ctx = context_error(status, text, f"{url}/completions")
    if ctx is not None:
        return ctx
    return OpenAIServerError(f"{url}/completions refused the request: {last}")

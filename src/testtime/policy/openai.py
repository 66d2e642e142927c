"""OpenAI-compatible HTTP policy backend (vLLM, llama.cpp, SGLang, TGI servers, ...).

Prompts are rendered client-side with the model's HF chat template (``render_prompt``, as on
the in-process backends) and sent raw to ``/v1/completions``, so partial solutions continue
exactly where they stop. Each sampled row is one HTTP request (``n=1``, row ``i`` seeded
``seed + i`` like vLLM's children of an ``n``-row request), so results do not depend on how
requests are grouped; servers batch concurrent requests
themselves, and their prefix caches make the shared prompt of a request's rows cheap.

Robustness: a bounded number of requests is in flight per server; requests go to the server
with the fewest in flight; 429, 5xx, timeouts and connection errors are retried with
exponential backoff (on another server when there is one), then fail with an error naming the
URL. ``/v1/models`` is checked once at start, so a server that is down or serves another model
fails at once with a clear message.

Servers report the sampled token's log-probability and the top 20 (``logprobs=20``, DeepConf's
token confidence) but not the full distribution, so ``token_certainties`` stay empty:
self-certainty scoring needs an in-process backend.

This module holds the settings, the prompts and the mapping of returned choices onto
completions; the HTTP side (server checks, load spreading, retries) is
:class:`~testtime.policy.openai_http.ServerPool`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from testtime.confidence import token_confidence
from testtime.policy.completion import build_completion
from testtime.policy.hf import render_prompt, token_pieces
from testtime.policy.openai_http import (  # noqa: F401  (re-exported for callers)
    RETRY_STATUSES,
    SERVER_EXTRAS,
    OpenAIServerError,
    ServerPool,
)
from testtime.resources import AsyncResource
from testtime.types import Completion, GenerationRequest, SamplingParams


@dataclass(frozen=True)
class OpenAIPolicyConfig:
    """Client settings for an OpenAI-compatible completions server."""

    model: str
    """Model name as the server knows it (``/v1/models``)."""
    base_urls: tuple[str, ...] = ()
    """Server base URLs ending in ``/v1``; requests are spread over them."""
    tokenizer: str | None = None
    """HF tokenizer for the chat template and token counts (Hub id, directory, ``.gguf`` or
    ``default``); None uses ``model``."""
    api_key: str | None = None
    """Bearer token; None reads ``OPENAI_API_KEY`` (local servers need none)."""
    max_concurrency: int = 64
    """Requests in flight per server."""
    timeout_s: float = 600.0
    """Read timeout of one request (a long generation must fit in it)."""
    connect_timeout_s: float = 10.0
    """Timeout for opening a connection."""
    max_retries: int = 5
    """Retries of a failed request before giving up (attempts = max_retries + 1)."""
    backoff_s: float = 0.5
    """First retry delay; doubled at each retry, with jitter."""
    max_backoff_s: float = 30.0
    """Cap on one retry delay."""
    top_logprobs: int = 20
    """Top log-probabilities asked per token (``logprobs`` of the request): DeepConf's token
    confidence averages them (its 20); 0 asks for the sampled token's only."""
    server_extras: dict[str, Any] | None = None
    """Extra request fields; None picks them from the server family (``SERVER_EXTRAS``)."""
    trust_remote_code: bool = False
    """Allow the tokenizer repository to run its own code."""

    def __post_init__(self) -> None:
        if not self.base_urls:
            raise ValueError(f"openai:{self.model}: no server URL given")
        for url in self.base_urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"openai: base URL {url!r} must start with http:// or https://")
        if self.top_logprobs < 0:
            raise ValueError(f"openai.top_logprobs must be >= 0, got {self.top_logprobs}")
        for name in ("max_concurrency",):
            if getattr(self, name) < 1:
                raise ValueError(f"openai.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_retries < 0 or self.backoff_s < 0 or self.timeout_s <= 0:
            raise ValueError("openai: max_retries and backoff_s must be >= 0, timeout_s > 0")


class OpenAIPolicy(AsyncResource):
    """Policy served over HTTP by one or more OpenAI-compatible servers."""

    def __init__(self, config: OpenAIPolicyConfig, tokenizer: Any = None,
                 transport: Any = None) -> None:
        """``tokenizer`` and ``transport`` (an ``httpx`` transport) may be injected by tests."""
        from testtime.flops import known_param_count
        from testtime.policy.gguf_support import load_tokenizer

        self.config = config
        self.name = f"openai:{config.model}"
        self.urls = [u.rstrip("/") for u in config.base_urls]
        self.tokenizer = tokenizer or load_tokenizer(config.tokenizer or config.model,
                                                     config.trust_remote_code)
        # Servers tokenise with their own BOS; drop the template's so it is not doubled.
        bos = self.tokenizer.bos_token
        adds_bos = (self.tokenizer.bos_token_id is not None and self.tokenizer.bos_token_id
                    in self.tokenizer("x", add_special_tokens=True)["input_ids"])
        self._strip_bos = bos if bos and adds_bos else None
        key = config.api_key or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.param_count = known_param_count(config.model, config.tokenizer or "")
        self._servers = ServerPool(
            self.urls, model=config.model, headers=headers, transport=transport,
            max_concurrency=config.max_concurrency, timeout_s=config.timeout_s,
            connect_timeout_s=config.connect_timeout_s, max_retries=config.max_retries,
            backoff_s=config.backoff_s, max_backoff_s=config.max_backoff_s)
        self.extras = self._servers.check(config.server_extras)

    @property
    def retries(self) -> int:
        """Requests retried so far (for tests and progress displays)."""
        return self._servers.retries

    # -- protocol ------------------------------------------------------------------------------

    def render(self, request: GenerationRequest) -> str:
        text = render_prompt(self.tokenizer, request.messages, request.prefix,
                             request.rendering)
        if self._strip_bos and text.startswith(self._strip_bos):
            text = text[len(self._strip_bos) :]
        return text

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        jobs = []
        for r in requests:
            prompt = self.render(r)
            n_prompt = self.count_tokens(prompt) + (1 if self._strip_bos else 0)
            # Row i is seeded seed + i, as vLLM seeds the n children of one request: against
            # `vllm serve`, openai: samples exactly what vllm: samples in process.
            jobs.append([self._complete(prompt, n_prompt, r.params,
                                        None if r.params.seed is None else r.params.seed + i)
                         for i in range(r.params.n)])
        flat = await asyncio.gather(*(j for group in jobs for j in group))
        out, pos = [], 0
        for group in jobs:
            out.append(list(flat[pos : pos + len(group)]))
            pos += len(group)
        return out

    async def aclose(self) -> None:
        await self._servers.aclose()

    # -- requests and choices ------------------------------------------------------------------

    async def _complete(self, prompt: str, n_prompt: int, params: SamplingParams,
                        seed: int | None) -> Completion:
        payload: dict[str, Any] = {
            "model": self.config.model,
            "prompt": prompt,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p if params.temperature > 0 else 1.0,
            "n": 1,
            "logprobs": max(1, self.config.top_logprobs),
            **self.extras,
        }
        if params.stop:
            payload["stop"] = list(params.stop)
        if seed is not None:
            payload["seed"] = seed
        data = await self._servers.post(payload)
        return self._to_completion(data["choices"][0], n_prompt, params)

    def _to_completion(self, choice: dict[str, Any], n_prompt: int,
                       params: SamplingParams) -> Completion:
        """Map one choice onto the stop/finish contract of ``build_completion``."""
        text = str(choice.get("text") or "")
        lp = choice.get("logprobs") or {}
        tokens = [str(t) for t in (lp.get("tokens") or [])]
        logprobs = [float(x) if x is not None else 0.0 for x in (lp.get("token_logprobs") or [])]
        confidences = self._confidences(lp.get("top_logprobs"), len(tokens))
        pieces = _covering(tokens, text, params.stop) if len(logprobs) == len(tokens) else None
        if pieces is not None:
            logprobs, confidences = logprobs[: len(pieces)], confidences[: len(pieces)]
        else:  # no usable token list (or bytes-escaped pieces): re-tokenise the text
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            pieces = token_pieces(self.tokenizer, ids)
            logprobs = logprobs if len(logprobs) == len(pieces) else []
            confidences = confidences if len(confidences) == len(pieces) else []
        finish = choice.get("finish_reason")
        stop_reason = choice.get("stop_reason")
        joined = "".join(pieces)
        has_stop = any(s and s in joined for s in params.stop)
        if finish == "stop" and not has_stop and isinstance(stop_reason, str) and stop_reason:
            # The server cut the stop string off the text and its tokens: put it back.
            pieces, logprobs, confidences = [*pieces, stop_reason], [], []
            has_stop = True
        return build_completion(
            pieces,
            prompt_tokens=n_prompt,
            stop=params.stop,
            ended_with_eos=finish == "stop" and not has_stop,
            logprobs=logprobs,
            confidences=confidences,
        )

    def _confidences(self, top: Any, n: int) -> list[float]:
        """DeepConf token confidences from ``top_logprobs`` (one dict per token), or none
        when the server sent fewer than ``top_logprobs`` alternatives per token."""
        k = self.config.top_logprobs
        if not k or not isinstance(top, list) or len(top) != n:
            return []
        if not all(isinstance(d, dict) and len(d) >= k for d in top):
            return []
        return [token_confidence([float(v) for v in d.values()]) for d in top]


def _covering(tokens: list[str], text: str, stop: Sequence[str]) -> list[str] | None:
    """The server's token pieces that make up ``text``, or None when they do not match it.

    Pieces past ``text`` are kept only when they hold a stop string (the server cut it off);
    others (an end-of-turn token's text) are dropped.
    """
    joined = "".join(tokens)
    if not tokens or not joined.startswith(text):
        return None
    if any(s and s in joined[max(0, len(text) - len(s)) :] for s in stop):
        return tokens
    pos = 0
    for i, piece in enumerate(tokens):
        if pos == len(text):
            return tokens[:i]
        pos += len(piece)
    return tokens if pos == len(text) else None

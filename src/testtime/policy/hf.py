"""Hugging Face transformers policy backend (CPU and CUDA).

Loads a Hub id, a local directory or a GGUF file (converted once to safetensors), renders
requests with the model's chat template, and samples with its own decode loop over the model's
forward (:mod:`testtime.policy.hf_decode`: continuous batching, stop checks and per-token
statistics on the device, one host sync every few tokens) or, with ``decode="generate"``,
with ``model.generate`` and logits processors. Both record, per generated token, the
log-probability of the sampled token, the self-certainty of the full next-token distribution
and DeepConf's token confidence, without keeping the (batch x vocab x steps) logits in memory,
and sample each row with its own seed (the same tokens on both paths).

Loading and device placement live in :mod:`~testtime.policy.hf_load`, prompt rendering and
per-token text in :mod:`~testtime.policy.hf_text` (re-exported here), the stop tables in
:mod:`~testtime.policy.hf_stops`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from testtime.policy import hf_load
from testtime.policy.base import PromptTooLong
from testtime.policy.batching import RequestBatcher, RowStream, row_limit
from testtime.policy.completion import build_completion, first_stop_end
from testtime.policy.hf_decode import DecodeLoop
from testtime.policy.hf_logits import RowSampler, TokenStats, seed_keys
from testtime.policy.hf_rows import SYNC_EVERY, DecodeSettings, LoopRow, RowResult
from testtime.policy.hf_stops import stop_tables
from testtime.policy.hf_text import TEMPLATE_DATE, render_prompt, token_pieces
from testtime.policy.model_files import materialize, resolve
from testtime.resources import AsyncResource
from testtime.types import Completion, GenerationRequest, SamplingParams

# Rendering lives in hf_text; these names stay importable from here (other backends, tests).
__all__ = ["TEMPLATE_DATE", "HFPolicy", "HFPolicyConfig", "render_prompt", "token_pieces"]

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class HFPolicyConfig:
    """Engine settings for the transformers backend (per-request sampling lives elsewhere)."""

    model: str = "default"
    """Hub id, local directory, ``.gguf`` file, or ``default`` for the embedded SmolLM2."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """``auto`` is bfloat16 on CUDA and float32 on CPU."""
    max_batch_seqs: int = 32
    """Most sequences decoded at once (the decode loop's slots; rows of one ``generate``
    call)."""
    trust_remote_code: bool = False
    """Allow model repositories to run their own code (only when the user asks)."""
    decode: Literal["loop", "generate"] = "loop"
    """``loop``: the backend's own decode loop (continuous batching: finished rows are
    replaced by waiting ones; stop checks and statistics on the device). ``generate``:
    ``model.generate`` on fixed batches (the reference path; no online confidence stop)."""
    sync_every: int = SYNC_EVERY
    """Decode steps between two host syncs of the loop (finished rows leave the batch, stop
    strings spread over tokens are found, waiting rows join): more steps, fewer syncs, but a
    row may decode up to this many tokens past a multi-token stop string (they are dropped).
    The default, 16, was 49 % faster than 8 in the H100 decode probe (see
    :data:`~testtime.policy.hf_rows.SYNC_EVERY`)."""
    device_map: str | dict[str, Any] | None = None
    """Split the model over devices with an accelerate device map (``auto``, ``balanced``,
    ``sequential`` or ``{module: device}``), loaded layer by layer without a full copy in host
    RAM (:func:`testtime.placement.loading.load_causal_lm`); None: the whole model on
    ``device``."""
    max_memory: dict[str, Any] | None = None
    """Per-device memory caps for ``device_map`` (``{"cuda:0": 30, "cpu": 60}``, GiB)."""
    gpus: tuple[int, ...] | None = None
    """GPU indices the policy may use: one index places it on that GPU; several split it over
    them (``device_map`` ``auto`` unless given, ``max_memory`` limited to those GPUs)."""

    def __post_init__(self) -> None:
        if self.max_batch_seqs < 1:
            raise ValueError(f"max_batch_seqs must be >= 1, got {self.max_batch_seqs}")
        if self.sync_every < 1:
            raise ValueError(f"sync_every must be >= 1, got {self.sync_every}")
        if self.decode not in ("loop", "generate"):
            raise ValueError(f"decode must be 'loop' or 'generate', got {self.decode!r}")
        if self.gpus is not None and (not self.gpus or any(g < 0 for g in self.gpus)):
            raise ValueError(f"gpus must be GPU indices >= 0, got {self.gpus!r}")


class HFPolicy(AsyncResource):
    """Policy backed by a transformers causal LM; batches concurrent requests."""

    def __init__(self, config: HFPolicyConfig) -> None:
        self.config = config
        self.name = f"hf:{config.model}"
        source = materialize(resolve(config.model))
        device = hf_load.pick_device(config.device, config.gpus, config.device_map)
        dtype = hf_load.pick_dtype(config.dtype, device)
        self.tokenizer = hf_load.load_tokenizer(source.path, config.trust_remote_code)
        self.model, self.device = hf_load.load_model(
            source.path, dtype, device, device_map=config.device_map,
            max_memory=config.max_memory, gpus=config.gpus,
            trust_remote_code=config.trust_remote_code)
        self.eos_ids = hf_load.eos_ids(self.model, self.tokenizer)
        self.num_parameters = sum(p.numel() for p in self.model.parameters())
        self._loop = DecodeLoop(self.model, int(self.tokenizer.pad_token_id),
                                int(self.model.config.vocab_size), self.device,
                                hf_load.model_processors(self.model, self.tokenizer,
                                                         self.eos_ids, self.device))
        streaming = config.decode == "loop"
        self._batcher = RequestBatcher(self._generate_rows, config.max_batch_seqs,
                                       streaming=streaming)

    @property
    def batch_stats(self) -> Any:
        return self._batcher.stats

    def render(self, request: GenerationRequest) -> str:
        return render_prompt(self.tokenizer, request.messages, request.prefix,
                             request.rendering)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        return await self._batcher.submit(requests)

    async def aclose(self) -> None:
        self.model = None

    def _check_context(self, prompt_lens: Sequence[int]) -> None:
        """A prompt longer than the model's context is refused, not silently cut."""
        limit = getattr(self.model.config, "max_position_embeddings", None)
        longest = max(prompt_lens, default=0)
        if isinstance(limit, int) and longest >= limit:
            raise PromptTooLong(f"{self.name}: a prompt of {longest} tokens does not fit the "
                                f"model's context of {limit} tokens")

    def _generate_rows(self, rows: list[tuple[GenerationRequest, int | None]],
                       params: SamplingParams, stream: RowStream | None = None
                       ) -> list[Completion]:
        if self.config.decode == "generate":
            if params.confidence_stop is not None:
                raise ValueError("hf policy: confidence_stop needs decode='loop'")
            return self._generate_fixed(rows, params)
        return self._decode(rows, params, stream)

    def _decode(self, rows: list[tuple[GenerationRequest, int | None]], params: SamplingParams,
                stream: RowStream | None) -> list[Completion]:
        """Sample ``rows`` (and whatever ``stream`` hands over) with the decode loop."""
        import torch

        prompt_tokens: list[int] = []  # per row, in arrival order
        out: dict[int, Completion] = {}

        def loop_rows(batch: list[tuple[GenerationRequest, int | None]],
                      first: bool) -> list[LoopRow]:
            if not batch:
                return []
            enc = self.tokenizer([self.render(r) for r, _ in batch], add_special_tokens=False)
            ids = enc["input_ids"]
            if first:
                self._check_context([len(x) for x in ids])
            keys = seed_keys([seed for _, seed in batch], "cpu").tolist()
            made = []
            for (r, _), x, key in zip(batch, ids, keys, strict=True):
                index = len(prompt_tokens)
                prompt_tokens.append(len(x))
                limit = row_limit(r, params) if first else r.params.max_tokens
                try:
                    self._check_context([len(x)])
                except PromptTooLong as exc:
                    assert stream is not None  # a first batch was checked as a whole
                    stream.fail(index, exc)
                    x, limit = x[:1], 1  # one token, ignored: its caller has failed
                made.append(LoopRow(x, key, limit))
            return made

        def done(index: int, result: RowResult) -> None:
            out[index] = self._completion(result, prompt_tokens[index], params)
            if stream is not None:
                stream.deliver(index, out[index])

        more = None
        if stream is not None:
            def more(n: int) -> list[LoopRow]:
                return loop_rows(stream.take(n), first=False)

        first = loop_rows(rows, first=True)
        stop_now, stop_maybe = stop_tables(self.tokenizer, tuple(self.eos_ids), params.stop,
                                           int(self.model.config.vocab_size), self.device)
        settings = DecodeSettings(
            temperature=params.temperature, top_p=params.top_p, stop_now=stop_now,
            stop_maybe=stop_maybe, confidence_stop=params.confidence_stop,
            stopped=lambda ids: first_stop_end(str(self.tokenizer.decode(ids)), params.stop)
            is not None, sync_every=self.config.sync_every, slots=self.config.max_batch_seqs)
        with torch.inference_mode():
            self._loop.run(first, settings, done, more)
        return [out[i] for i in range(len(rows))]

    def _completion(self, result: RowResult, prompt_tokens: int,
                    params: SamplingParams) -> Completion:
        eos = set(self.eos_ids)
        ids = result.tokens
        end = next((j for j, t in enumerate(ids) if t in eos), None)
        body = ids if end is None else ids[:end]
        c = build_completion(token_pieces(self.tokenizer, body), prompt_tokens=prompt_tokens,
                             stop=params.stop, ended_with_eos=end is not None,
                             logprobs=result.logprobs, certainties=result.certainties,
                             confidences=result.confidences)
        if result.confidence_stopped and c.finish_reason == "length":
            c = replace(c, finish_reason="confidence")
        return c

    def _generate_fixed(
        self, rows: list[tuple[GenerationRequest, int | None]], params: SamplingParams
    ) -> list[Completion]:
        """The reference path: one ``model.generate`` call on a fixed batch."""
        import torch

        prompts = [self.render(r) for r, _ in rows]
        # The chat template already holds BOS where the model wants it.
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        prompt_lens = enc["attention_mask"].sum(1).tolist()
        self._check_context(prompt_lens)
        stats = TokenStats(self.model.config.vocab_size)
        processors: list[Any] = [stats]  # raw logits first: statistics of the T=1 distribution
        if params.temperature > 0:  # each row sampled with its own seed (see RowSampler)
            processors.append(RowSampler([s for _, s in rows], params.temperature,
                                          params.top_p, self.device))
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
            "do_sample": False,
            "logits_processor": processors,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.eos_ids,
            "temperature": None, "top_p": None, "top_k": None,
        }
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1] :]
        logprobs, certainties, confidences = stats.finish(new[:, -1])
        eos = set(self.eos_ids)
        results = []
        for i, ids in enumerate(new.tolist()):
            # Rows of one batch may have smaller limits than the batch's (see row_limit).
            ids = ids[: row_limit(rows[i][0], params)]
            end = next((j for j, t in enumerate(ids) if t in eos), None)
            body = ids if end is None else ids[:end]
            results.append(
                build_completion(
                    token_pieces(self.tokenizer, body),
                    prompt_tokens=int(prompt_lens[i]),
                    stop=params.stop,
                    ended_with_eos=end is not None,
                    logprobs=logprobs[i] if logprobs else (),
                    certainties=certainties[i] if certainties else (),
                    confidences=confidences[i] if confidences else (),
                )
            )
        return results

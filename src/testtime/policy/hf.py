"""Hugging Face transformers policy backend (CPU and CUDA).

Loads a Hub id, a local directory or a GGUF file (converted once to safetensors), renders
requests with the model's chat template, and samples with its own decode loop over the model's
forward (:mod:`testtime.policy.hf_decode`: continuous batching, stop checks and per-token
statistics on the device, one host sync every few tokens) or, with ``decode="generate"``,
with ``model.generate`` and logits processors. Both record, per generated token, the
log-probability of the sampled token, the self-certainty of the full next-token distribution
and DeepConf's token confidence, without keeping the (batch x vocab x steps) logits in memory,
and sample each row with its own seed (the same tokens on both paths).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from testtime.policy.base import PromptTooLong
from testtime.policy.batching import RequestBatcher, RowStream, row_limit
from testtime.policy.completion import _first_stop_end, build_completion
from testtime.policy.hf_decode import (
    DecodeLoop,
    DecodeSettings,
    LoopRow,
    RowResult,
    device_table,
    stop_token_ids,
)
from testtime.policy.hf_logits import RowSampler, TokenStats, seed_keys
from testtime.policy.model_files import materialize, resolve
from testtime.resources import AsyncResource
from testtime.types import (
    ChatMessage,
    Completion,
    GenerationRequest,
    PrefixRendering,
    SamplingParams,
)

log = logging.getLogger(__name__)

#: Tokens decoded together when recovering one token's text; enough context for byte-level
#: BPE and SentencePiece merges to render the same as in the full decode.
_DECODE_WINDOW = 6


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
    sync_every: int = 8
    """Decode steps between two host syncs of the loop (finished rows leave the batch, stop
    strings spread over tokens are found, waiting rows join): more steps, fewer syncs, but a
    row may decode up to this many tokens past a multi-token stop string (they are dropped)."""
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


#: Llama 3.1+ chat templates print "Today Date: {date_string}" in the system turn and default it
#: to the day the prompt is rendered; a fixed date (the template's own fallback) keeps prompts,
#: and so results, reproducible. Templates without the variable ignore it.
TEMPLATE_DATE = "26 Jul 2024"


def render_prompt(tokenizer: Any, messages: Sequence[ChatMessage], prefix: str,
                  rendering: PrefixRendering = "generation_prompt") -> str:
    """The prompt text of a chat and a partial answer (see :data:`PrefixRendering`).

    ``generation_prompt``: the template with an open assistant turn, then ``prefix`` verbatim.
    ``assistant_message`` (the paper's code, ``text_generation.py``): the template renders
    ``prefix`` as a final assistant message and its end-of-turn token (and the newline after
    it) is cut off; whitespace the template trimmed from the end of ``prefix`` is put back (the
    paper's code re-appends the blank line for Llama 3, whose template trims messages).
    Templates that render no end-of-turn token fall back to ``generation_prompt``.
    """
    chat = [{"role": m.role, "content": m.content} for m in messages]
    if not getattr(tokenizer, "chat_template", None):  # base models: a plain transcript
        text = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in chat)
        return text + "Assistant: " + prefix
    if rendering == "assistant_message":
        eos = getattr(tokenizer, "eos_token", None)
        text = str(tokenizer.apply_chat_template(
            [*chat, {"role": "assistant", "content": prefix}], tokenize=False,
            add_generation_prompt=False, date_string=TEMPLATE_DATE))
        for end in ((eos + "\n", eos) if eos else ()):
            if text.endswith(end):
                text = text[: -len(end)]
                tail = prefix[len(prefix.rstrip()):]
                if tail and not text.endswith(tail):
                    text = text.rstrip() + tail
                return text
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True,
                                         date_string=TEMPLATE_DATE)
    return str(text) + prefix


def token_pieces(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Text contributed by each token; the pieces concatenate to ``decode(ids)``."""
    if not ids:
        return []
    full = tokenizer.decode(ids)
    windows = [list(ids[max(0, i - _DECODE_WINDOW) : i + 1]) for i in range(len(ids))]
    with_tok = tokenizer.batch_decode(windows)
    without = tokenizer.batch_decode([w[:-1] for w in windows])
    pieces = [a.removeprefix(b) for a, b in zip(with_tok, without)]
    if "".join(pieces) == full:
        return pieces
    # Rare: a multi-byte character split across tokens. Exact but quadratic fallback: each
    # token gets the text its prefix decode adds, once that decode is complete.
    prefixes = tokenizer.batch_decode([list(ids[: i + 1]) for i in range(len(ids))])
    out, done = [], 0
    for text in prefixes:
        if text.endswith("\ufffd") or not text.startswith(full[:done]):
            out.append("")
            continue
        out.append(text[done:])
        done = len(text)
    out[-1] += full[sum(map(len, out)) :]
    return out


class HFPolicy(AsyncResource):
    """Policy backed by a transformers causal LM; batches concurrent requests."""

    def __init__(self, config: HFPolicyConfig) -> None:
        import torch
        from transformers import AutoTokenizer

        self.config = config
        self.name = f"hf:{config.model}"
        source = materialize(resolve(config.model))
        device = config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if config.gpus is not None and len(config.gpus) == 1 and config.device_map is None:
            device = f"cuda:{config.gpus[0]}"
        dtype = {"auto": torch.bfloat16 if device.startswith("cuda") else torch.float32,
                 "float32": torch.float32, "bfloat16": torch.bfloat16,
                 "float16": torch.float16}[config.dtype]
        self.tokenizer = AutoTokenizer.from_pretrained(
            source.path, trust_remote_code=config.trust_remote_code
        )
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model, self.device = self._load(source.path, dtype, device)
        self.model.eval()
        self.eos_ids = self._eos_ids()
        self.num_parameters = sum(p.numel() for p in self.model.parameters())
        self._loop = DecodeLoop(self.model, int(self.tokenizer.pad_token_id),
                                int(self.model.config.vocab_size), self.device,
                                self._model_processors())
        streaming = config.decode == "loop"
        self._batcher = RequestBatcher(self._generate_rows, config.max_batch_seqs,
                                       streaming=streaming)

    def _load(self, path: str, dtype: Any, device: str) -> tuple[Any, str]:
        """The model and the device its inputs go to. A device map (or several ``gpus``)
        loads through :func:`testtime.placement.loading.load_causal_lm`: layer by layer onto
        their devices, never a full copy in host RAM."""
        cfg = self.config
        split = cfg.device_map is not None or (cfg.gpus is not None and len(cfg.gpus) > 1)
        if not split:
            if cfg.max_memory:
                raise ValueError("hf policy: max_memory needs a device_map or several gpus")
            from transformers import AutoModelForCausalLM

            model: Any = AutoModelForCausalLM.from_pretrained(
                path, dtype=dtype, trust_remote_code=cfg.trust_remote_code)
            return model.to(device), device
        from testtime.placement.loading import input_device, load_causal_lm

        max_memory: Any = cfg.max_memory
        if max_memory is None and cfg.gpus is not None:
            import torch

            # Only the chosen GPUs get layers: accelerate places nothing on unlisted devices.
            max_memory = {f"cuda:{g}": torch.cuda.mem_get_info(g)[1] / 2**30 * 0.9
                          for g in cfg.gpus}
        model = load_causal_lm(path, dtype=dtype, device=device,
                               device_map=cfg.device_map or "auto", max_memory=max_memory,
                               trust_remote_code=cfg.trust_remote_code)
        return model, str(input_device(model))

    def _model_processors(self) -> Any:
        """The logits processors ``generate`` would build from the model's own generation
        config (``sequence_bias``, ``repetition_penalty``, ...) with sampling switched off (the
        loop samples itself), or None when there are none."""
        import copy

        gen = copy.deepcopy(self.model.generation_config)
        gen.do_sample = False
        gen.temperature = gen.top_p = gen.top_k = None
        gen.eos_token_id = self.eos_ids
        gen.pad_token_id = self.tokenizer.pad_token_id
        procs = self.model._get_logits_processor(
            generation_config=gen, input_ids_seq_length=0, encoder_input_ids=None,
            prefix_allowed_tokens_fn=None, logits_processor=None, device=self.device,
            model_kwargs={})
        return procs if len(procs) else None

    @property
    def batch_stats(self) -> Any:
        return self._batcher.stats

    def _eos_ids(self) -> list[int]:
        ids = set()
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        for e in gen_eos if isinstance(gen_eos, list) else [gen_eos]:
            if e is not None:
                ids.add(int(e))
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        # Chat models end a turn with their own token; generation must stop there too.
        for tok in ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>"):
            tid = self.tokenizer.convert_tokens_to_ids(tok)
            if isinstance(tid, int) and tid != self.tokenizer.unk_token_id and tid >= 0:
                ids.add(tid)
        return sorted(ids)

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
        stop_now, stop_maybe = self._stop_tables(params.stop)
        settings = DecodeSettings(
            temperature=params.temperature, top_p=params.top_p, stop_now=stop_now,
            stop_maybe=stop_maybe, confidence_stop=params.confidence_stop,
            stopped=lambda ids: _first_stop_end(str(self.tokenizer.decode(ids)), params.stop)
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

    def _stop_tables(self, stop: tuple[str, ...]) -> tuple[Any, Any]:
        """Device bool tables over the vocabulary: tokens that end a row at once (EOS, a stop
        string inside the token's text) and tokens that may complete a stop string spread over
        several tokens (text starting with a proper suffix of one)."""
        size = int(self.model.config.vocab_size)
        now, maybe = stop_token_ids(self.tokenizer, tuple(self.eos_ids), stop, size)
        return device_table(now, size, self.device), device_table(maybe, size, self.device)

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

"""llama.cpp policy backend: GGUF models in-process on the CPU, many sequences per forward pass.

Prompts are rendered with the Hugging Face tokenizer's chat template (``render_prompt``, as on
the transformers backend) and tokenised by llama.cpp; the token pieces of the output are
decoded by the same HF tokenizer, so both backends produce identical text from identical ids.

Batching uses llama.cpp's multi-sequence API (``llama_batch`` with ``n_seq_max`` sequences in
one unified KV cache): the prefix common to the prompts admitted together (a template's
instructions and worked example) is decoded once for all their rows, then each prompt's rest
once for its own rows; every step then decodes one token per running row in one
``llama_decode``. (The cache is cleared between calls: no prefix reuse across calls yet.)
Rows that finish free their sequence slot and KV cells at once, and waiting rows are admitted
mid-batch (continuous batching inside a call). When the KV cache runs short, the most recently
admitted rows are preempted and later resumed by recomputing their prefix, as vLLM does.

Sampling happens here, from the raw logits in numpy, so the backend also reports per-token
log-probabilities (T=1) and self-certainty exactly as the HF backend does. Each row draws from
its own ``numpy`` generator seeded with its row seed, so results do not depend on batching
(up to float rounding, which differs between batch shapes as on every backend).

This module holds the engine settings and the policy (loading, prompts, completions); the
decode loop itself (admission, prefix sharing, preemption, sampling) is
:class:`~testtime.policy.llama_batch.BatchDecoder`.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from testtime.policy.base import PromptTooLong
from testtime.policy.batching import RequestBatcher, row_limit
from testtime.policy.completion import build_completion
from testtime.policy.gguf_support import (  # noqa: F401  (re-exported for callers)
    CHAT_END_TOKENS,
    chat_end_ids,
    dequantized_gguf,
    gguf_tokenizer_source,
    load_tokenizer,
    sample_token,
    token_stats,
)
from testtime.policy.hf import render_prompt, token_pieces
from testtime.policy.llama_batch import BatchDecoder, Group, Row
from testtime.policy.model_files import resolve
from testtime.resources import AsyncResource
from testtime.types import Completion, GenerationRequest, SamplingParams

log = logging.getLogger(__name__)

#: llama.cpp's warning when a unified KV cache is larger than the trained context (harmless
#: here: every row is kept within the trained context by ``generate``).
_UNIFIED_CTX_WARNING = b"possible training context overflow"


@contextmanager
def quiet_context_warning(llama_cpp: Any, verbose: bool) -> Iterator[None]:
    """Route llama.cpp's log to its usual printer, minus the unified-KV context warning
    (logged at debug level instead), while a context is created."""
    if verbose:
        yield
        return
    from llama_cpp import _logger

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: Any) -> None:
        if _UNIFIED_CTX_WARNING in text:
            log.debug("llama.cpp: %s", text.decode("utf-8", "replace").strip())
        else:
            _logger.llama_log_callback(level, text, user_data)

    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    try:
        yield
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


@dataclass(frozen=True)
class LlamaCppPolicyConfig:
    """Engine settings for the llama.cpp backend (per-request sampling lives elsewhere)."""

    model: str = "default"
    """A ``.gguf`` file, or ``default`` for the embedded SmolLM2."""
    tokenizer: str | None = None
    """HF tokenizer (Hub id or directory) for the chat template and token texts; None takes
    it from the GGUF file (converted once and cached)."""
    max_batch_seqs: int = 32
    """Sequences decoded together (llama.cpp ``n_seq_max``)."""
    n_ctx: int = 16384
    """KV cache size in tokens, shared by all sequences of a batch (prompts count once)."""
    n_batch: int = 512
    """Most prompt tokens per ``llama_decode`` call."""
    n_threads: int | None = None
    """CPU threads; None uses every core."""
    trust_remote_code: bool = False
    """Allow the tokenizer repository to run its own code."""
    dequantize: bool = False
    """Run an F32 copy of the GGUF (written once, cached) with F32 attention: the numbers of
    the HF backend (logits agree to ~1e-5), so greedy outputs match it, at a speed cost."""
    verbose: bool = False
    """Show llama.cpp's own log output."""

    def __post_init__(self) -> None:
        for name in ("max_batch_seqs", "n_ctx", "n_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"llamacpp.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_batch_seqs > 256:  # LLAMA_MAX_SEQ
            raise ValueError(f"llamacpp.max_batch_seqs must be <= 256, got {self.max_batch_seqs}")
        if self.n_threads is not None and self.n_threads < 1:
            raise ValueError(f"llamacpp.n_threads must be >= 1, got {self.n_threads}")


class LlamaCppPolicy(AsyncResource):
    """Policy backed by llama.cpp (llama-cpp-python) on the CPU; batches concurrent requests."""

    def __init__(self, config: LlamaCppPolicyConfig) -> None:
        try:
            import llama_cpp
            from llama_cpp._internals import LlamaBatch, LlamaContext, LlamaModel
        except ImportError as exc:
            raise ImportError("the llamacpp backend needs llama-cpp-python: "
                              "pip install 'testtime[llamacpp]'") from exc
        self.config = config
        self.name = f"llamacpp:{config.model}"
        self._ll = llama_cpp
        logging.getLogger("llama-cpp-python").setLevel(
            logging.DEBUG if config.verbose else logging.ERROR)
        source = resolve(config.model)
        if source.gguf_file is None:
            raise ValueError(f"llamacpp:{config.model}: the llama.cpp backend needs a .gguf file")
        self.gguf_path = Path(source.path) / source.gguf_file
        self.tokenizer = (load_tokenizer(config.tokenizer, config.trust_remote_code)
                          if config.tokenizer else
                          load_tokenizer(str(self.gguf_path), config.trust_remote_code))
        llama_cpp.llama_backend_init()
        weights = dequantized_gguf(self.gguf_path) if config.dequantize else self.gguf_path
        self._model = LlamaModel(path_model=str(weights),
                                 params=llama_cpp.llama_model_default_params(),
                                 verbose=config.verbose)
        threads = config.n_threads or os.cpu_count() or 1
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx = config.n_ctx
        # The KV cache is unified (all rows share n_ctx cells), so llama.cpp compares n_ctx
        # with the trained context and warns; what matters is one row's length, which
        # generate() keeps within the trained context.
        trained = int(self._model.n_ctx_train())
        self.max_sequence = min(config.n_ctx, trained) if trained > 0 else config.n_ctx
        cp.n_batch = max(config.n_batch, config.max_batch_seqs)
        cp.n_ubatch = cp.n_batch
        cp.n_seq_max = config.max_batch_seqs
        cp.n_threads = cp.n_threads_batch = threads
        cp.kv_unified = True  # rows of a request share their prompt's KV cells
        cp.no_perf = True
        if config.dequantize:
            # An F16 KV cache, and the CPU flash-attention kernel (F16 inside), round the
            # attention enough to move logits by ~1e-2; without them they agree to ~1e-5.
            cp.type_k = cp.type_v = llama_cpp.GGML_TYPE_F32
            cp.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        with quiet_context_warning(llama_cpp, config.verbose):
            self._ctx = LlamaContext(model=self._model, params=cp, verbose=config.verbose)
        self.n_ctx = self._ctx.n_ctx()
        # llama.cpp may lower n_batch (to n_ctx); llama_decode asserts on larger batches.
        self.n_batch = int(llama_cpp.llama_n_batch(self._ctx.ctx))
        self._batch = LlamaBatch(n_tokens=self.n_batch, embd=0,
                                 n_seq_max=config.max_batch_seqs, verbose=config.verbose)
        self.n_vocab = self._model.n_vocab()
        self._log_v = math.log(self.n_vocab)
        vocab = self._model.vocab
        self.eos_ids = chat_end_ids(self.tokenizer) | {
            t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)}
        self.num_parameters = int(self._model.n_params())
        from testtime.flops import known_param_count

        self.param_count = known_param_count(config.model, self.gguf_path.name)
        self._decoder = BatchDecoder(
            llama_cpp, self._model, self._ctx, self._batch, n_ctx=self.n_ctx,
            n_batch=self.n_batch, max_seqs=config.max_batch_seqs, n_vocab=self.n_vocab,
            eos_ids=self.eos_ids, log_v=self._log_v)
        self._batcher = RequestBatcher(self._generate_rows, config.max_batch_seqs)

    @property
    def preemptions(self) -> int:
        """Rows preempted so far because the KV cache ran short (resumed by recomputation)."""
        return self._decoder.preemptions

    @property
    def batch_stats(self) -> Any:
        return self._batcher.stats

    def render(self, request: GenerationRequest) -> str:
        return render_prompt(self.tokenizer, request.messages, request.prefix,
                             request.rendering)

    def tokenize(self, text: str) -> list[int]:
        """llama.cpp token ids of ``text``; special tokens in the text are parsed, no BOS added
        (the chat template already holds BOS where the model wants it)."""
        return list(self._model.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        for r in requests:  # fail fast, for this caller only
            n = self.count_tokens(self.render(r))
            if n + 1 > self.max_sequence:
                raise PromptTooLong(
                    f"{self.name}: a prompt of {n} tokens does not fit the model's context of "
                    f"{self.max_sequence} tokens (the smaller of n_ctx and the trained context)")
        return await self._batcher.submit(requests)

    async def aclose(self) -> None:
        # Freeing the context under a batch still decoding (a cancelled caller's rows) crashes
        # llama.cpp: wait for the call in flight first.
        async with self._batcher.exclusive():
            for obj in (self._batch, self._ctx, self._model):
                obj.close()

    # -- generation ---------------------------------------------------------------------------

    def _generate_rows(
        self, rows: list[tuple[GenerationRequest, int | None]], params: SamplingParams
    ) -> list[Completion]:
        prompts: dict[str, list[int]] = {}
        groups: dict[str, Group] = {}
        states: list[Row] = []
        for i, (request, seed) in enumerate(rows):
            text = self.render(request)
            if text not in prompts:
                prompts[text] = self.tokenize(text)
                groups[text] = Group(prompts[text], [])
            rng = None
            if params.temperature > 0:
                rng = np.random.default_rng(seed)
            row = Row(i, prompts[text], rng, row_limit(request, params),
                      confidence_stop=request.params.confidence_stop)
            groups[text].rows.append(row)
            states.append(row)
        self._decoder.run(list(groups.values()), params)
        return [
            stopped_for_confidence(r.low_confidence, build_completion(
                token_pieces(self.tokenizer, r.ids),
                prompt_tokens=len(r.prompt),
                stop=params.stop,
                ended_with_eos=r.eos,
                logprobs=r.logprobs,
                certainties=r.certainties,
                confidences=r.confidences,
            ))
            for r in states
        ]


def stopped_for_confidence(low: bool, c: Completion) -> Completion:
    """``c`` with finish reason ``confidence`` when online DeepConf ended its row (the
    completion already holds exactly the tokens generated)."""
    return replace(c, finish_reason="confidence") if low and c.finish_reason == "length" else c

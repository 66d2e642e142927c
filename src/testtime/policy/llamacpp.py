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
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from testtime.policy.batching import RequestBatcher, row_limit
from testtime.policy.completion import boxed_step_end, build_completion
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
from testtime.policy.model_files import resolve
from testtime.types import Completion, GenerationRequest, SamplingParams

log = logging.getLogger(__name__)

#: KV cells kept free per admitted row so that admission does not preempt at once.
_ADMIT_MARGIN = 16


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


@dataclass
class _Segment:
    """KV cells shared by some rows; freed (for accounting) when the last of them ends."""

    length: int
    live: int


@dataclass
class _Row:
    """One sampled sequence while it is generated."""

    out: int
    prompt: list[int]
    rng: np.random.Generator | None
    max_tokens: int
    """This row's own limit (rows of one batch may have different ones)."""
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    certainties: list[float] = field(default_factory=list)
    text: bytearray = field(default_factory=bytearray)
    eos: bool = False
    done: bool = False
    seq: int = -1
    segments: list[_Segment] = field(default_factory=list)
    kv_own: int = 0
    """KV cells holding this row's generated tokens (beyond its prompt segments)."""


@dataclass
class _Group:
    """Rows waiting to start from the same tokens (a prompt, or a preempted row's prefix)."""

    tokens: list[int]
    rows: list[_Row]


#: One token to decode: (token id, position, sequence ids, whether its logits are needed).
_Item = tuple[int, int, Sequence[int], bool]


class LlamaCppPolicy:
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
        from testtime.policy.registry import known_param_count

        self.param_count = known_param_count(config.model, self.gguf_path.name)
        self._batcher = RequestBatcher(self._generate_rows, config.max_batch_seqs)
        self.preemptions = 0
        """Rows preempted so far because the KV cache ran short (resumed by recomputation)."""
        self._pieces: dict[int, bytes] = {}

    @property
    def batch_stats(self) -> Any:
        return self._batcher.stats

    def render(self, request: GenerationRequest) -> str:
        return render_prompt(self.tokenizer, request.messages, request.prefix)

    def tokenize(self, text: str) -> list[int]:
        """llama.cpp token ids of ``text``; special tokens in the text are parsed, no BOS added
        (the chat template already holds BOS where the model wants it)."""
        return list(self._model.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        for r in requests:  # fail fast, for this caller only
            n = self.count_tokens(self.render(r))
            if n + 1 > self.n_ctx:
                raise ValueError(f"a prompt of {n} tokens does not fit the llama.cpp context "
                                 f"(n_ctx={self.n_ctx}); raise n_ctx")
        return await self._batcher.submit(requests)

    async def aclose(self) -> None:
        for obj in (self._batch, self._ctx, self._model):
            obj.close()

    # -- generation ---------------------------------------------------------------------------

    def _generate_rows(
        self, rows: list[tuple[GenerationRequest, int | None]], params: SamplingParams
    ) -> list[Completion]:
        prompts: dict[str, list[int]] = {}
        groups: dict[str, _Group] = {}
        states: list[_Row] = []
        for i, (request, seed) in enumerate(rows):
            text = self.render(request)
            if text not in prompts:
                prompts[text] = self.tokenize(text)
                groups[text] = _Group(prompts[text], [])
            rng = None
            if params.temperature > 0:
                rng = np.random.default_rng(seed)
            row = _Row(i, prompts[text], rng, row_limit(request, params))
            groups[text].rows.append(row)
            states.append(row)
        self._run(list(groups.values()), params)
        return [
            build_completion(
                token_pieces(self.tokenizer, r.ids),
                prompt_tokens=len(r.prompt),
                stop=params.stop,
                end_at_boxed_step=params.end_at_boxed_step,
                ended_with_eos=r.eos,
                logprobs=r.logprobs,
                certainties=r.certainties,
            )
            for r in states
        ]

    def _run(self, waiting: list[_Group], params: SamplingParams) -> None:
        """Generate every row of ``waiting`` to completion (continuous batching)."""
        ll = self._ll
        mem = self._ctx.memory
        ll.llama_memory_clear(mem, True)
        free = list(range(self.config.max_batch_seqs - 1, -1, -1))
        running: list[_Row] = []
        used = 0  # KV cells held (shared prompt segments once, plus generated tokens)
        stops = [s.encode("utf-8") for s in params.stop if s]
        longest = max((len(s) for s in stops), default=0)

        def release(row: _Row) -> None:
            nonlocal used
            ll.llama_memory_seq_rm(mem, row.seq, -1, -1)
            free.append(row.seq)
            used -= row.kv_own
            for seg in row.segments:
                seg.live -= 1
                if seg.live == 0:
                    used -= seg.length
            row.seq, row.kv_own, row.segments = -1, 0, []

        def accept(row: _Row, logits: np.ndarray) -> None:
            tok = sample_token(logits, params, row.rng)
            lp, ce = token_stats(logits, tok, self._log_v)
            if tok in self.eos_ids:
                row.eos = row.done = True
                return
            row.ids.append(tok)
            row.logprobs.append(lp)
            row.certainties.append(ce)
            start = max(0, len(row.text) - longest)
            row.text += self._piece(tok)
            if (
                len(row.ids) >= row.max_tokens
                or any(s in row.text[start:] for s in stops)
                or (params.end_at_boxed_step and boxed_step_end(row.text) is not None)
            ):
                row.done = True

        while waiting or running:
            # Admit groups (or part of one) while sequence slots and KV cells last.
            admitted: list[_Group] = []
            budget = self.n_ctx - used
            while waiting and free:
                g = waiting[0]
                size = min(len(g.rows), len(free))
                need = len(g.tokens) + size * _ADMIT_MARGIN
                if (running or admitted) and need > budget:
                    break
                if len(g.tokens) + 1 > self.n_ctx:
                    raise ValueError(f"a prompt of {len(g.tokens)} tokens does not fit the "
                                     f"llama.cpp context (n_ctx={self.n_ctx}); raise n_ctx")
                part = _Group(g.tokens, g.rows[:size])
                g.rows = g.rows[size:]
                if not g.rows:
                    waiting.pop(0)
                for row in part.rows:
                    row.seq = free.pop()
                admitted.append(part)
                budget -= need
            if admitted:
                cells, first_logits = self._prefill(admitted)
                used += cells
                for part, logits in zip(admitted, first_logits, strict=True):
                    for row in part.rows:
                        accept(row, logits)
                        if row.done:
                            release(row)
                        else:
                            running.append(row)
            if not running:
                continue
            # Preempt the newest rows while the next step would overflow the KV cache.
            while used + len(running) > self.n_ctx and len(running) > 1:
                row = running.pop()
                release(row)
                waiting.insert(0, _Group(row.prompt + row.ids, [row]))
                self.preemptions += 1
                log.info("llama.cpp KV cache full: preempted a row at %d tokens", len(row.ids))
            items: list[_Item] = [(r.ids[-1], len(r.prompt) + len(r.ids) - 1, (r.seq,), True)
                                  for r in running]
            out = self._decode_items(items)
            used += len(running)
            for row, logits in zip(list(running), out, strict=True):
                row.kv_own += 1
                accept(row, logits)
                if row.done:
                    running.remove(row)
                    release(row)

    def _prefill(self, parts: list[_Group]) -> tuple[int, list[np.ndarray]]:
        """Decode the prompts of newly admitted groups: (KV cells taken, logits per group).

        The longest prefix common to all of them (the instructions and worked example of a
        prompt template) is decoded once for every row; each group then decodes its own rest
        with the sequence ids of its rows.
        """
        shared = 0
        if len(parts) > 1:
            first = parts[0].tokens
            shared = min(len(p.tokens) for p in parts) - 1  # each group keeps a token of its own
            for p in parts[1:]:
                shared = next((i for i, (a, b) in enumerate(zip(first, p.tokens[:shared]))
                               if a != b), min(shared, len(p.tokens)))
        items: list[_Item] = []
        if shared:
            seqs = [r.seq for p in parts for r in p.rows]
            seg = _Segment(shared, len(seqs))
            items += [(t, i, seqs, False) for i, t in enumerate(parts[0].tokens[:shared])]
            for p in parts:
                for r in p.rows:
                    r.segments.append(seg)
        for p in parts:
            seqs = [r.seq for r in p.rows]
            own = _Segment(len(p.tokens) - shared, len(seqs))
            for r in p.rows:
                r.segments.append(own)
            items += [(t, i, seqs, i == len(p.tokens) - 1)
                      for i, t in enumerate(p.tokens[shared:], start=shared)]
        return shared + sum(len(p.tokens) - shared for p in parts), self._decode_items(items)

    def _decode_items(self, items: list[_Item]) -> list[np.ndarray]:
        """Decode tokens in chunks of the batch size; logits of the flagged ones, in order."""
        b = self._batch.batch
        size = self.n_batch
        out: list[np.ndarray] = []
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            b.n_tokens = len(chunk)
            for j, (tok, pos, seqs, want) in enumerate(chunk):
                b.token[j] = tok
                b.pos[j] = pos
                b.n_seq_id[j] = len(seqs)
                for k, seq in enumerate(seqs):
                    b.seq_id[j][k] = seq
                b.logits[j] = want
            self._decode()
            out += [self._logits(j) for j, item in enumerate(chunk) if item[3]]
        return out

    def _piece(self, token: int) -> bytes:
        """The bytes llama.cpp renders a token as (special tokens included), cached."""
        piece = self._pieces.get(token)
        if piece is None:
            buf = ctypes.create_string_buffer(64)
            n = self._ll.llama_token_to_piece(self._model.vocab, token, buf, 64, 0, True)
            if n < 0:  # longer than the buffer: llama.cpp returns the size it needs
                buf = ctypes.create_string_buffer(-n)
                n = self._ll.llama_token_to_piece(self._model.vocab, token, buf, -n, 0, True)
            piece = self._pieces[token] = buf.raw[:n]
        return piece

    def _decode(self) -> None:
        ret = self._ll.llama_decode(self._ctx.ctx, self._batch.batch)
        if ret != 0:
            raise RuntimeError(f"llama_decode failed with code {ret} (1 = KV cache full: "
                               f"raise n_ctx={self.n_ctx} or lower max_batch_seqs)")

    def _logits(self, i: int) -> np.ndarray:
        ptr = self._ll.llama_get_logits_ith(self._ctx.ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

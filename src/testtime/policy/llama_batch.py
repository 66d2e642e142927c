"""The continuous-batching decode loop of the llama.cpp backend, on one llama.cpp context.

:class:`BatchDecoder` generates every :class:`Row` of the :class:`Group` s it is given to
completion, many sequences per ``llama_decode``; :class:`~testtime.policy.llamacpp.LlamaCppPolicy`
owns the model, context and batch it drives, and turns finished rows into completions.

Contract of :meth:`BatchDecoder.run`:

- The KV cache is cleared first (no prefix reuse across calls), then groups are admitted while
  sequence slots (``max_seqs``) and KV cells (``n_ctx``) last. The prefix common to the groups
  admitted together is decoded once for all their rows, each group's rest once for its rows.
- Every step decodes one token per running row; a row that finishes frees its sequence slot
  and KV cells at once, and waiting rows are admitted mid-batch.
- When the next step would overflow the KV cache, the most recently admitted rows are
  preempted (counted in :attr:`BatchDecoder.preemptions`) and later resumed by recomputing
  their prefix, as vLLM does.
- Tokens are sampled here from the raw logits (``sample_token``) with each row's own
  generator, and each row records per-token log-probabilities and self-certainty; a row ends
  on an end-of-turn id, its token limit, a stop string or (if asked) a boxed step end.
- A row with a ``ConfidenceStop`` (online DeepConf) also ends right after the first token
  whose mean DeepConf confidence over its last ``window`` tokens is below the threshold
  (checked once ``window`` tokens exist; ``Row.low_confidence``), unless that token ended it
  anyway; its slot and KV cells are freed at once.

Nothing here imports llama.cpp: the caller passes its ``llama_cpp`` module and objects in.
"""

from __future__ import annotations

import ctypes
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from testtime.policy.gguf_support import sample_token, token_stats
from testtime.types import ConfidenceStop, SamplingParams

log = logging.getLogger(__name__)

#: KV cells kept free per admitted row so that admission does not preempt at once.
_ADMIT_MARGIN = 16


@dataclass
class Segment:
    """KV cells shared by some rows; freed (for accounting) when the last of them ends."""

    length: int
    live: int


@dataclass
class Row:
    """One sampled sequence while it is generated."""

    out: int
    prompt: list[int]
    rng: np.random.Generator | None
    max_tokens: int
    """This row's own limit (rows of one batch may have different ones)."""
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    certainties: list[float] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)
    text: bytearray = field(default_factory=bytearray)
    eos: bool = False
    done: bool = False
    seq: int = -1
    segments: list[Segment] = field(default_factory=list)
    kv_own: int = 0
    """KV cells holding this row's generated tokens (beyond its prompt segments)."""
    confidence_stop: ConfidenceStop | None = None
    """Online DeepConf's stop for this row (None: never)."""
    window_sum: float = 0.0
    """Sum of the confidences of the row's last ``confidence_stop.window`` tokens."""
    low_confidence: bool = False
    """The row was ended by ``confidence_stop``."""

    def below_threshold(self) -> bool:
        """Track the sliding window after a new token; whether its mean is below the
        threshold (only once the window is full, as DeepConf's processor)."""
        stop = self.confidence_stop
        if stop is None:
            return False
        w, confs = stop.window, self.confidences
        self.window_sum += confs[-1] - (confs[-1 - w] if len(confs) > w else 0.0)
        if len(confs) % 256 == 0:  # re-sum now and then: no drift over long traces
            self.window_sum = math.fsum(confs[-w:])
        return len(confs) >= w and self.window_sum / w < stop.threshold


@dataclass
class Group:
    """Rows waiting to start from the same tokens (a prompt, or a preempted row's prefix)."""

    tokens: list[int]
    rows: list[Row]


#: One token to decode: (token id, position, sequence ids, whether its logits are needed).
Item = tuple[int, int, Sequence[int], bool]


class BatchDecoder:
    """Generates rows on one llama.cpp context (see the module docstring for the contract).

    ``ll`` is the ``llama_cpp`` module; ``model``, ``ctx`` and ``batch`` are its
    ``LlamaModel``, ``LlamaContext`` and ``LlamaBatch`` (owned and closed by the caller), with
    ``n_ctx`` KV cells, batches of ``n_batch`` tokens and ``max_seqs`` sequences. Not
    thread-safe: one :meth:`run` at a time (the policy's request batcher serialises them).
    """

    def __init__(self, ll: Any, model: Any, ctx: Any, batch: Any, *, n_ctx: int, n_batch: int,
                 max_seqs: int, n_vocab: int, eos_ids: set[int], log_v: float) -> None:
        self._ll = ll
        self._model = model
        self._ctx = ctx
        self._batch = batch
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.max_seqs = max_seqs
        self.n_vocab = n_vocab
        self.eos_ids = eos_ids
        self._log_v = log_v
        self.preemptions = 0
        """Rows preempted so far because the KV cache ran short (resumed by recomputation)."""
        self._pieces: dict[int, bytes] = {}

    def run(self, waiting: list[Group], params: SamplingParams) -> None:
        """Generate every row of ``waiting`` to completion (continuous batching)."""
        ll = self._ll
        mem = self._ctx.memory
        ll.llama_memory_clear(mem, True)
        free = list(range(self.max_seqs - 1, -1, -1))
        running: list[Row] = []
        used = 0  # KV cells held (shared prompt segments once, plus generated tokens)
        stops = [s.encode("utf-8") for s in params.stop if s]
        longest = max((len(s) for s in stops), default=0)

        def release(row: Row) -> None:
            nonlocal used
            ll.llama_memory_seq_rm(mem, row.seq, -1, -1)
            free.append(row.seq)
            used -= row.kv_own
            for seg in row.segments:
                seg.live -= 1
                if seg.live == 0:
                    used -= seg.length
            row.seq, row.kv_own, row.segments = -1, 0, []

        def accept(row: Row, logits: np.ndarray) -> None:
            tok = sample_token(logits, params, row.rng)
            lp, ce, co = token_stats(logits, tok, self._log_v)
            if tok in self.eos_ids:
                row.eos = row.done = True
                return
            row.ids.append(tok)
            row.logprobs.append(lp)
            row.certainties.append(ce)
            row.confidences.append(co)
            start = max(0, len(row.text) - longest)
            row.text += self.piece(tok)
            if len(row.ids) >= row.max_tokens or any(s in row.text[start:] for s in stops):
                row.done = True
            elif row.below_threshold():
                row.done = row.low_confidence = True

        while waiting or running:
            # Admit groups (or part of one) while sequence slots and KV cells last.
            admitted: list[Group] = []
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
                part = Group(g.tokens, g.rows[:size])
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
                waiting.insert(0, Group(row.prompt + row.ids, [row]))
                self.preemptions += 1
                log.info("llama.cpp KV cache full: preempted a row at %d tokens", len(row.ids))
            items: list[Item] = [(r.ids[-1], len(r.prompt) + len(r.ids) - 1, (r.seq,), True)
                                 for r in running]
            out = self._decode_items(items)
            used += len(running)
            for row, logits in zip(list(running), out, strict=True):
                row.kv_own += 1
                accept(row, logits)
                if row.done:
                    running.remove(row)
                    release(row)

    def _prefill(self, parts: list[Group]) -> tuple[int, list[np.ndarray]]:
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
        items: list[Item] = []
        if shared:
            seqs = [r.seq for p in parts for r in p.rows]
            seg = Segment(shared, len(seqs))
            items += [(t, i, seqs, False) for i, t in enumerate(parts[0].tokens[:shared])]
            for p in parts:
                for r in p.rows:
                    r.segments.append(seg)
        for p in parts:
            seqs = [r.seq for r in p.rows]
            own = Segment(len(p.tokens) - shared, len(seqs))
            for r in p.rows:
                r.segments.append(own)
            items += [(t, i, seqs, i == len(p.tokens) - 1)
                      for i, t in enumerate(p.tokens[shared:], start=shared)]
        return shared + sum(len(p.tokens) - shared for p in parts), self._decode_items(items)

    def _decode_items(self, items: list[Item]) -> list[np.ndarray]:
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

    def piece(self, token: int) -> bytes:
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

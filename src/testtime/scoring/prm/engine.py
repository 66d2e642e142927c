"""Batched forward machinery shared by every PRM family.

A family turns each (question, steps) request into an :class:`EncodedRequest`: the token ids
the PRM reads and the positions whose output scores each step. :class:`ForwardEngine` then

1. sorts the requests by length (longest first) and packs them into batches whose *padded*
   size ``max_len x rows`` stays within ``max_batch_tokens`` (so a batch of short requests
   holds many rows and a long request may run alone) instead of using a fixed batch size;
2. right-pads each batch (with an attention mask) and runs the backbone once under
   ``torch.inference_mode``;
3. gathers the hidden states of all scored positions with one tensor-indexing operation and
   applies the family's head (two-token softmax, value head or classifier) to just those rows,
   which avoids materialising vocabulary-sized logits for every token;
4. returns the scores in the original request order.

Right padding keeps position ids and causal attention of the real tokens identical to an
unpadded forward, so scores do not depend on batch composition (up to float rounding).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from itertools import chain

import torch
from torch import nn

from testtime.scoring.prm.incremental import IncrementalForward
from testtime.scoring.prm.kv_store import PrefixKVStore
from testtime.scoring.prm.request import EncodedRequest, EngineStats
from testtime.timeline import TIMELINE

#: Padded tokens per forward. On an H200 (bf16, sdpa, bench/bench_prm.py, 256 beam-search-like
#: requests) 8192 was the best of 4096-32768 for both Qwen2.5-1.5B and -7B shapes: the GPU is
#: already saturated (~310 / ~450 TFLOP/s) and larger budgets only add padding.
DEFAULT_MAX_BATCH_TOKENS = 8192


def plan_batches(lengths: Sequence[int], max_batch_tokens: int) -> list[list[int]]:
    """Group sequence indices into batches whose padded size fits ``max_batch_tokens``.

    Indices are visited longest first, so each batch's first member sets its padded length and
    later members only shrink; a batch is closed when one more row would exceed the budget. A
    sequence longer than the budget gets a batch of its own rather than being rejected.
    """
    if max_batch_tokens < 1:
        raise ValueError(f"max_batch_tokens must be >= 1, got {max_batch_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and lengths[current[0]] * (len(current) + 1) > max_batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


class ForwardEngine:
    """Runs a backbone + score head over encoded requests in token-budgeted batches.

    ``backbone(input_ids=..., attention_mask=...)`` must return an object with
    ``last_hidden_state`` (``[batch, seq, hidden]``, final norm applied); ``head`` maps
    ``[n, hidden]`` hidden states to ``[n]`` probabilities. ``run`` is blocking and serialised
    by a lock, so it can be called from worker threads. ``device`` is where inputs go (the
    first layer's device); a backbone split over devices (an accelerate device map) moves
    activations between its layers itself, and ``head`` must sit on its last layer's device.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        *,
        pad_token_id: int,
        max_batch_tokens: int,
        device: torch.device,
        kv_store: PrefixKVStore | None = None,
    ) -> None:
        if max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be >= 1, got {max_batch_tokens}")
        self.backbone = backbone.eval()
        self.head = head.eval()
        self.pad_token_id = pad_token_id
        self.max_batch_tokens = max_batch_tokens
        self.device = device
        params = list(self.head.parameters())
        self.head_device = params[0].device if params else device
        """Where the head's weights are (the last layer's device); hidden states go there."""
        self.stats = EngineStats()
        self._lock = threading.Lock()
        self.incremental: IncrementalForward | None = None
        """Set when ``kv_store`` is given: scoring reuses the keys/values of scored prefixes."""
        if kv_store is not None:
            self.incremental = IncrementalForward(self, kv_store)

    def run(self, encoded: Sequence[EncodedRequest]) -> list[list[float]]:
        """Step scores for each request, in request order (``[]`` for a request without steps)."""
        return self.score(encoded)[0]

    def score(self, encoded: Sequence[EncodedRequest]) -> tuple[list[list[float]], list[int]]:
        """Step scores for each request and the tokens the backbone computed for it: all of
        its input without a KV store; with one, only what no stored prefix held (0 for a
        request without steps, or one whose every step was scored before)."""
        results: list[list[float]] = [[] for _ in encoded]
        computed = [0] * len(encoded)
        todo = [i for i, e in enumerate(encoded) if e.positions]
        if not todo:
            return results, computed
        with self._lock, torch.inference_mode(), TIMELINE.span("prm"):
            self.stats.calls += 1
            if self.incremental is not None:
                return self.incremental.run(encoded)
            lengths = [len(encoded[i].input_ids) for i in todo]
            for batch in plan_batches(lengths, self.max_batch_tokens):
                rows = [encoded[todo[j]] for j in batch]
                for j, scores in zip(batch, self._forward(rows), strict=True):
                    results[todo[j]] = scores
                    computed[todo[j]] = len(encoded[todo[j]].input_ids)
        return results, computed

    def _forward(self, rows: Sequence[EncodedRequest]) -> list[list[float]]:
        lengths = torch.tensor([len(r.input_ids) for r in rows])
        max_len = int(lengths.max())
        # Build the padded batch and the gather indices with whole-tensor operations.
        attention_mask = torch.arange(max_len)[None, :] < lengths[:, None]
        input_ids = torch.full((len(rows), max_len), self.pad_token_id, dtype=torch.long)
        input_ids[attention_mask] = torch.tensor(
            list(chain.from_iterable(r.input_ids for r in rows))
        )
        counts = torch.tensor([len(r.positions) for r in rows])
        row_index = torch.repeat_interleave(torch.arange(len(rows)), counts)
        col_index = torch.tensor(list(chain.from_iterable(r.positions for r in rows)))

        out = self.backbone(
            input_ids=input_ids.to(self.device),
            attention_mask=attention_mask.to(self.device, dtype=torch.long),
            use_cache=False,
        )
        last = out.last_hidden_state  # on the device of the model's last layer
        hidden = last[row_index.to(last.device), col_index.to(last.device)]
        scores = self.head(hidden.to(self.head_device)).float().cpu()

        self.stats.batches += 1
        self.stats.sequences += len(rows)
        self.stats.tokens += int(lengths.sum())
        self.stats.padded_tokens += max_len * len(rows)
        return [s.tolist() for s in torch.split(scores, counts.tolist())]

    def close(self) -> None:
        """Drop the model so its memory can be reclaimed."""
        with self._lock:
            on_cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
            self.backbone = nn.Identity()
            self.head = nn.Identity()
            if self.incremental is not None:
                self.incremental.store.clear()
            if on_cuda:
                torch.cuda.empty_cache()


class TwoTokenHead(nn.Module):
    """P(good) from a softmax over the LM-head logits of a good and a bad token.

    Only the two rows of the output embedding are kept, so this equals
    ``softmax(lm_head(h)[[good, bad]])[0]`` without computing the other logits. Computed in
    float32 for a stable softmax.
    """

    def __init__(self, lm_head_weight: torch.Tensor, good_id: int, bad_id: int) -> None:
        super().__init__()
        rows = lm_head_weight.detach()[[good_id, bad_id]].float().clone()
        self.weight = nn.Parameter(rows, requires_grad=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = hidden.float() @ self.weight.T
        return torch.softmax(logits, dim=-1)[:, 0]


class ValueHead(nn.Module):
    """Sigmoid of a scalar linear head (Skywork's ``v_head.summary``), in float32."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.summary = nn.Linear(weight.shape[1], 1)
        self.summary.load_state_dict({"weight": weight.float(), "bias": bias.float()})
        self.summary.requires_grad_(False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.summary(hidden.float())).squeeze(-1)


class ClassifierHead(nn.Module):
    """``softmax(head(h))[positive]`` for a token-classification head module (float32)."""

    def __init__(self, head: nn.Module, positive_class: int) -> None:
        super().__init__()
        self.score = head.float().requires_grad_(False)
        self.positive_class = positive_class

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.score(hidden.float()).float(), dim=-1)[:, self.positive_class]

"""A bounded store of PRM key/value caches, keyed by the token prefix they were computed for.

Every PRM here is a causal decoder read at score positions, so the hidden state at a position,
and the key/value tensors of every token up to it, depend only on the tokens up to it. When a
path grows by a step, the PRM input of the longer path starts with the input of the shorter
one up to (and including) the shorter one's last score position; its keys and values can be
reused, and only the new step's tokens need a forward.

Entries are keyed by the exact token prefix (``input_ids[: positions[k] + 1]``), so reuse is
exact by construction: a family whose tokenisation of a longer path does not extend that of
the shorter one (a BPE merge across a step boundary) simply misses the store and is computed
in full. An entry also keeps the step scores up to its end, so the scores of a prefix are never
computed twice. Eviction is least recently used, under a byte budget of the tensors held.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

#: Default KV budget of an in-process PRM: enough for the paths of 64 problems in flight with
#: a 1.5B PRM (~28 KiB a token in bf16) on a GPU; a CPU run keeps less.
DEFAULT_KV_CACHE_GB_CUDA = 8.0
DEFAULT_KV_CACHE_GB_CPU = 1.0
GIB = 1 << 30


@dataclass(frozen=True)
class KVEntry:
    """The keys/values of one token prefix and the scores of its steps."""

    kv: torch.Tensor | tuple[torch.Tensor, ...]
    """``[layers, 2, kv_heads, tokens, head_dim]``: keys (``[:, 0]``) and values (``[:, 1]``);
    for a model split over devices, one such tensor per run of consecutive layers on one
    device, kept on that device (:attr:`segments`)."""
    scores: tuple[float, ...]
    """The score of every step whose position lies in the prefix, in order."""
    positions: tuple[int, ...]
    """Where those scores were read: the same tokens scored at other positions (a step whose
    own text holds a family's step tag) are a different prefix."""

    def __post_init__(self) -> None:
        if len(self.positions) != len(self.scores):
            raise ValueError(f"{len(self.scores)} scores for {len(self.positions)} positions")

    @property
    def segments(self) -> tuple[torch.Tensor, ...]:
        """The per-device layer runs, in layer order (one tensor on a single device)."""
        return self.kv if isinstance(self.kv, tuple) else (self.kv,)

    @property
    def tokens(self) -> int:
        return int(self.segments[0].shape[3])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.segments)


@dataclass
class StoreStats:
    """Cumulative counters, for tests and benchmarks."""

    lookups: int = 0
    hits: int = 0
    """Lookups that found a cached prefix (of any length)."""
    reused_tokens: int = 0
    """Tokens whose keys/values came from the store instead of a forward."""
    inserted: int = 0
    evicted: int = 0
    too_large: int = 0
    """Entries not stored because alone they exceed the budget."""


class PrefixKVStore:
    """LRU map from token prefixes to :class:`KVEntry`, holding at most ``budget_bytes``.

    Thread-safe; the tensors live on whatever devices the caller put them on (a model split
    over devices keeps each layer's keys/values on the device that computes that layer).
    """

    def __init__(self, budget_bytes: int) -> None:
        if budget_bytes < 1:
            raise ValueError(f"KV cache budget must be >= 1 byte, got {budget_bytes}")
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self.stats = StoreStats()
        self._entries: OrderedDict[tuple[int, ...], KVEntry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, input_ids: Sequence[int], positions: Sequence[int]
               ) -> tuple[int, KVEntry | None]:
        """The longest stored prefix of ``input_ids`` that ends right after a score position.

        Returns ``(k, entry)`` where ``entry`` covers ``input_ids[: positions[k - 1] + 1]`` and
        holds the scores of steps ``0..k-1``; ``(0, None)`` when nothing is stored.
        """
        ids = tuple(input_ids)
        with self._lock:
            self.stats.lookups += 1
            for k in range(len(positions), 0, -1):
                key = ids[: positions[k - 1] + 1]
                entry = self._entries.get(key)
                if entry is not None and entry.positions == tuple(positions[:k]):
                    self._entries.move_to_end(key)
                    self.stats.hits += 1
                    self.stats.reused_tokens += entry.tokens
                    return k, entry
        return 0, None

    def insert(self, prefix: Sequence[int], entry: KVEntry) -> None:
        """Store ``entry`` for ``prefix`` (its tokens), evicting the least recently used."""
        key = tuple(prefix)
        if entry.tokens != len(key):
            raise ValueError(f"a KV entry of {entry.tokens} tokens for a {len(key)}-token prefix")
        with self._lock:
            if entry.nbytes > self.budget_bytes:
                self.stats.too_large += 1
                return
            old = self._entries.pop(key, None)
            if old is not None:
                self.used_bytes -= old.nbytes
            self._entries[key] = entry
            self.used_bytes += entry.nbytes
            self.stats.inserted += 1
            while self.used_bytes > self.budget_bytes:
                _, dropped = self._entries.popitem(last=False)
                self.used_bytes -= dropped.nbytes
                self.stats.evicted += 1

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.used_bytes = 0


#: On a GPU the default budget is also at most this share of the memory free when the PRM
#: loads: the store grows after everything is loaded, and an in-process policy (vLLM takes
#: ``gpu_memory_utilization`` of the device) may leave little.
DEFAULT_FREE_SHARE_CUDA = 0.25


def default_budget_bytes(device: torch.device) -> int:
    """The default budget on ``device`` (see the constants above; a model split over GPUs
    counts its first one)."""
    if device.type != "cuda":
        return int(DEFAULT_KV_CACHE_GB_CPU * GIB)
    free, _ = torch.cuda.mem_get_info(device)
    return int(min(DEFAULT_KV_CACHE_GB_CUDA * GIB, DEFAULT_FREE_SHARE_CUDA * free))

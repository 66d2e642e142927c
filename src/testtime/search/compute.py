"""What a search spends: ``Compute`` (the counters every method fills through its
``SearchContext``) and the model prefix cache behind ``prefill_tokens``."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass
class Compute:
    """The same accounting for every method (sums over the whole search)."""

    policy_calls: int = 0
    """Generation requests sent to the policy (one per prompt, whatever its n)."""
    generations: int = 0
    """Sequences sampled (completions returned), lookahead roll-outs included."""
    prompt_tokens: int = 0
    """Prompt tokens billed: every completion pays its whole prompt (as an API bills), so a
    request of n samples counts its prompt n times and every expansion re-bills its path."""
    prefill_tokens: int = 0
    """Prompt tokens an engine with an ideal prefix cache computes: the part of each request's
    prompt that no earlier prompt or generated sequence of this problem's search already
    holds, once per request (its n samples share it). See :class:`PrefixCache`."""
    completion_tokens: int = 0
    scored_tokens: int = 0
    """Tokens the step scorer read (0 for model-free scorers): every scored path in full, as
    a scorer that rescores each path from its first token reads it (what ``prm_flops``
    bills)."""
    scored_cached_tokens: int = 0
    """Of ``scored_tokens``, those an in-process PRM took from its KV store of prefixes scored
    before (or that lie past the last step's score position) instead of computing them;
    ``scored_tokens - scored_cached_tokens`` went through the PRM."""
    scorer_calls: int = 0
    prm_truncated_paths: int = 0
    """Scored paths longer than the PRM's context: scored on the steps that fit (exactly, since
    a causal PRM's score of a step reads nothing after it); the rest repeat the last step read."""
    prm_unread_steps: int = 0
    """Steps of those paths past the PRM's context (scores copied from the last step read)."""
    nonfinite_scores: int = 0
    """Step scores the scorer returned as NaN or infinite (they rank lowest; see
    :func:`testtime.selection.finite`)."""
    cache: PrefixCache = field(default_factory=lambda: PrefixCache(), repr=False, compare=False)
    """What this problem's search has put in the (model) prefix cache."""

    def counters(self) -> dict[str, int]:
        """The counters (every field but the cache), as records store them."""
        return {k: v for k, v in vars(self).items() if k != "cache"}

    def add(self, other: Compute) -> None:
        for k, v in other.counters().items():
            setattr(self, k, getattr(self, k) + v)


class PrefixCache:
    """The texts an ideal, unbounded, token-granular prefix cache holds for one problem: every
    partial answer a request continued, and each of them followed by a generated sequence.

    A request's new prompt tokens are the tokens of its prefix beyond the longest held text it
    starts with (the chat head counts in full for the problem's first request only). Tokens of
    that remainder are counted by the policy's tokenizer on their own, which may differ by a
    token at the seam from the tokenisation in context.
    """

    def __init__(self) -> None:
        self.texts: set[str] = set()
        self.head_seen = False

    def new_tokens(self, prefix: str, prompt_tokens: int, count: Callable[[str], int]) -> int:
        """Tokens of a request's prompt (``prompt_tokens`` in all, continuing ``prefix``) that
        the cache does not hold; records the prefix."""
        if not self.head_seen:
            self.head_seen = True
            self.texts.add(prefix)
            return prompt_tokens
        held = max((len(t) for t in self.texts if prefix.startswith(t)), default=0)
        self.texts.add(prefix)
        rest = prefix[held:]
        return min(prompt_tokens, count(rest)) if rest else 0

    def generated(self, prefix: str, text: str) -> None:
        """A sequence was generated after ``prefix``: its KV entries are held too."""
        self.texts.add(prefix + text)


#: Every attempt's usage, failed ones included: the runner sets a fresh ``Compute`` here for
#: each problem's task, and ``SearchContext`` adds each call's usage to it as well as to the
#: attempt's own ``Compute`` (which a failing attempt takes with it).
ATTEMPTS: ContextVar[Compute | None] = ContextVar("testtime_attempts", default=None)


def spent(delta: Compute, compute: Compute) -> None:
    """Add one call's usage to the attempt's ``compute`` and to the problem's ledger."""
    compute.add(delta)
    ledger = ATTEMPTS.get()
    if ledger is not None and ledger is not compute:
        ledger.add(delta)


def difference(total: Compute, part: Compute) -> Compute:
    """``total - part``, counter by counter."""
    out = Compute()
    for k, v in total.counters().items():
        setattr(out, k, v - getattr(part, k))
    return out

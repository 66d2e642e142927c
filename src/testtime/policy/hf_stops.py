"""Stop conditions of the transformers decode loop as device tables over the vocabulary: the
tokens that end a row at once and the tokens after which the host must check the row's text
for a stop string spread over several tokens.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any


def stop_tables(tokenizer: Any, eos: tuple[int, ...], stop: tuple[str, ...], size: int,
                device: str) -> tuple[Any, Any]:
    """Device bool tables over a vocabulary of ``size``: tokens that end a row at once (EOS,
    a stop string inside the token's text) and tokens that may complete a stop string spread
    over several tokens (text starting with a proper suffix of one)."""
    now, maybe = stop_token_ids(tokenizer, eos, stop, size)
    return device_table(now, size, device), device_table(maybe, size, device)


@lru_cache(maxsize=8)
def stop_token_ids(tokenizer: Any, eos: tuple[int, ...], stop: tuple[str, ...],
                    vocab: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(ids that end a row at once, ids that may complete a multi-token stop string).

    A token's text is taken decoded on its own; where that differs in context (a
    SentencePiece word-start space), the context only adds a leading space, so a stop string
    inside the lone text is inside the contextual text too. Cached per tokenizer and stop set
    (decoding a 150k vocabulary takes a second). A stop string that spans tokens ends in a
    token whose text starts with a proper suffix of it: only such tokens send a row to the
    host check."""
    now, maybe = set(eos), set()
    if stop:
        n = min(vocab, len(tokenizer))
        texts = tokenizer.batch_decode([[i] for i in range(n)])
        suffixes = {s[k:] for s in stop if s for k in range(1, len(s))}
        for i, text in enumerate(texts):
            if any(s and s in text for s in stop):
                now.add(i)
            elif any(text.startswith(x) for x in suffixes):
                maybe.add(i)
    return tuple(sorted(now)), tuple(sorted(maybe))


@lru_cache(maxsize=16)
def device_table(ids: tuple[int, ...], size: int, device: str) -> Any:
    """A bool tensor of ``size`` on ``device``, true at ``ids``."""
    import torch

    table = torch.zeros(size, dtype=torch.bool)
    table[list(ids)] = True
    return table.to(device)

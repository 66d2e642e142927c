"""Backend-independent post-processing of sampled tokens into a ``Completion``.

Every backend produces, per sequence, the decoded text piece of each new token (pieces
concatenate to the decoded text) plus optional per-token statistics. This module applies the
stop-string contract identically for all of them: the text ends right after the first stop
string (kept), and the finish reason says why the sequence ended.
"""

from __future__ import annotations

from collections.abc import Sequence

from testtime.types import Completion, FinishReason


def build_completion(
    pieces: Sequence[str],
    *,
    prompt_tokens: int,
    stop: Sequence[str],
    ended_with_eos: bool,
    logprobs: Sequence[float] = (),
    certainties: Sequence[float] = (),
    confidences: Sequence[float] = (),
) -> Completion:
    """Cut the token pieces at the first stop string and classify the finish.

    ``pieces`` covers every generated token except a final end-of-sequence token, which
    ``ended_with_eos`` reports (it still counts as a completion token: it cost a forward pass).
    Tokens after the one that completed a stop string are dropped (batched backends may keep
    generating a row for a few tokens after it stopped).
    """
    text = "".join(pieces)
    cut = first_stop_end(text, stop)
    if cut is not None:
        # Keep tokens up to and including the one whose text completes the stop string.
        n, pos = 0, 0
        for piece in pieces:
            n += 1
            pos += len(piece)
            if pos >= cut:
                break
        return Completion(
            text=text[:cut],
            prompt_tokens=prompt_tokens,
            completion_tokens=n,
            finish_reason="stop",
            token_texts=tuple(pieces[:n]),
            token_logprobs=tuple(logprobs[:n]),
            token_certainties=tuple(certainties[:n]),
            token_confidences=tuple(confidences[:n]),
        )
    n = len(pieces) + (1 if ended_with_eos else 0)
    reason: FinishReason = "eos" if ended_with_eos else "length"
    return Completion(
        text=text,
        prompt_tokens=prompt_tokens,
        completion_tokens=n,
        finish_reason=reason,
        token_texts=tuple(pieces),
        token_logprobs=tuple(logprobs[: len(pieces)]),
        token_certainties=tuple(certainties[: len(pieces)]),
        token_confidences=tuple(confidences[: len(pieces)]),
    )


def first_stop_end(text: str, stop: Sequence[str]) -> int | None:
    """End index in ``text`` of the earliest-ending occurrence of any non-empty string of
    ``stop``, or None when none occurs (the backends' host check for stop strings)."""
    best: int | None = None
    for s in stop:
        if not s:
            continue
        i = text.find(s)
        if i >= 0 and (best is None or i + len(s) < best):
            best = i + len(s)
    return best

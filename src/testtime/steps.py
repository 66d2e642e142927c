"""Split generated text into reasoning steps and attribute token statistics to each step."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from testtime.types import STEP_DELIMITER, Completion, Step


def split_text(text: str, delimiter: str = STEP_DELIMITER) -> list[str]:
    """Split after each delimiter; pieces keep their delimiter and concatenate to ``text``.

    Runs of extra newlines stay attached to the step they follow, and blank pieces join a
    neighbour, so no step is blank (unless the whole text is).
    """
    out: list[str] = []
    start = 0
    while True:
        i = text.find(delimiter, start)
        if i < 0:
            break
        end = i + len(delimiter)
        while end < len(text) and text[end] == "\n":
            end += 1
        out.append(text[start:end])
        start = end
    if start < len(text):
        out.append(text[start:])
    # A blank piece (only whitespace, e.g. " \n\n") is no step: it joins the step before it
    # (the first joins the next), as the paper's code drops blank pieces of a solution.
    merged: list[str] = []
    for piece in out:
        if merged and (not piece.strip() or not merged[-1].strip()):
            merged[-1] += piece
        else:
            merged.append(piece)
    return merged


def completion_steps(
    completion: Completion,
    *,
    count_tokens: Callable[[str], int] | None = None,
    delimiter: str = STEP_DELIMITER,
    splitter: Callable[[str], list[str]] | None = None,
) -> list[Step]:
    """Steps of a completion with per-step token counts, log-prob and certainty sums.

    ``splitter`` (text -> pieces that concatenate to it; :mod:`testtime.step_splitters`)
    replaces the split at ``delimiter``.

    Token counts of the steps add up to ``completion.completion_tokens`` exactly (tokens cut
    after a stop string and a final EOS token are charged to the last step), so a search
    tree's totals equal the policy's reported cost. The last step is marked truncated when
    the completion hit its token limit.
    """
    texts = splitter(completion.text) if splitter else split_text(completion.text, delimiter)
    if not texts:
        texts = [completion.text] if completion.completion_tokens else []
    if not texts:
        return []
    confs: list[tuple[float, ...]] = [()] * len(texts)
    if completion.token_texts:
        counts, lp, ce, confs = _attribute(texts, completion)
    else:
        counter = count_tokens or (lambda s: max(1, len(s.split())))
        counts = [counter(t) for t in texts]
        lp = [None] * len(texts)
        ce = [None] * len(texts)
    # Reconcile with the backend's count (EOS, tokens after the stop, tokenizer merges).
    counts[-1] += completion.completion_tokens - sum(counts)
    if counts[-1] < 0:
        counts = _rebalance(counts)
    return [
        Step(
            text=t,
            num_tokens=c,
            logprob_sum=l,
            certainty_sum=e,
            truncated=(i == len(texts) - 1 and completion.finish_reason == "length"),
            token_confidences=k,
        )
        for i, (t, c, l, e, k) in enumerate(zip(texts, counts, lp, ce, confs))
    ]


def _attribute(
    texts: Sequence[str], completion: Completion
) -> tuple[list[int], list[float | None], list[float | None], list[tuple[float, ...]]]:
    """Assign each token to the step in which its text starts."""
    bounds, pos = [], 0
    for t in texts:
        pos += len(t)
        bounds.append(pos)
    counts = [0] * len(texts)
    lps: list[float | None] = [0.0 if completion.token_logprobs else None] * len(texts)
    ces: list[float | None] = [0.0 if completion.token_certainties else None] * len(texts)
    confs: list[list[float]] = [[] for _ in texts]
    step, start = 0, 0
    for i, piece in enumerate(completion.token_texts):
        while step < len(texts) - 1 and start >= bounds[step]:
            step += 1
        counts[step] += 1
        if completion.token_logprobs and i < len(completion.token_logprobs):
            lps[step] = (lps[step] or 0.0) + completion.token_logprobs[i]
        if completion.token_certainties and i < len(completion.token_certainties):
            ces[step] = (ces[step] or 0.0) + completion.token_certainties[i]
        if i < len(completion.token_confidences):
            confs[step].append(completion.token_confidences[i])
        start += len(piece)
    return counts, lps, ces, [tuple(c) for c in confs]


def _rebalance(counts: list[int]) -> list[int]:
    """Move a negative remainder on the last step back onto earlier steps."""
    deficit = -counts[-1]
    counts[-1] = 0
    for i in range(len(counts) - 2, -1, -1):
        take = min(deficit, counts[i])
        counts[i] -= take
        deficit -= take
    return counts


def join_steps(steps: Sequence[Step]) -> str:
    return "".join(s.text for s in steps)

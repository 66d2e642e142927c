"""A thinking budget for R1-style models (``--think-budget TOKENS``, ``SearchConfig.think_budget``).

Every full-sample request (no stop strings, a prefix that has not closed its thought) is run in
two phases:

1. the thought: the same request with ``max_tokens = min(budget, its limit)`` and the stop
   string ``</think>``;
2. the answer, for each sample that did not end (EOS) in phase 1: one request (its row's own
   seed) continuing ``prefix + thought``, where a thought cut by the budget gets
   ``"\\n</think>\\n\\n"`` appended (forced, not generated: it costs no completion token and
   is attached to the thought's last token text), with the tokens the sample has left.

The completion returned is the two phases joined (tokens, statistics and both prompts billed,
as two requests cost). Step requests (with stop strings) are left alone, so the budget applies
to Best-of-N, CoT, adaptive self-consistency and online DeepConf samples.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from testtime.types import Completion, GenerationRequest

#: Where an R1-style thought ends.
THINK_END = "</think>"
#: What a thought cut by the budget gets appended before the answer is generated.
FORCED_END = "\n</think>\n\n"

Generate = Callable[[Sequence[GenerationRequest]], Awaitable[list[list[Completion]]]]


def _budgeted(r: GenerationRequest) -> bool:
    return not r.params.stop and THINK_END not in r.prefix


def join(thought: Completion, answer: Completion | None, forced: bool) -> Completion:
    """The completion of both phases (``answer`` None: the thought ended the sample)."""
    texts = list(thought.token_texts)
    text = thought.text
    if forced:
        text += FORCED_END
        if texts:
            texts[-1] += FORCED_END
        else:
            texts = [FORCED_END]
    if answer is None:
        return replace(thought, text=text, token_texts=tuple(texts))
    return Completion(
        text=text + answer.text,
        prompt_tokens=thought.prompt_tokens + answer.prompt_tokens,
        completion_tokens=thought.completion_tokens + answer.completion_tokens,
        finish_reason=answer.finish_reason,
        token_texts=(*texts, *answer.token_texts),
        token_logprobs=thought.token_logprobs + answer.token_logprobs,
        token_certainties=thought.token_certainties + answer.token_certainties,
        token_confidences=thought.token_confidences + answer.token_confidences)


async def generate_with_budget(requests: Sequence[GenerationRequest], budget: int,
                               generate: Generate) -> list[list[Completion]]:
    """``generate(requests)`` with the thinking budget applied (module docstring)."""
    first = [replace(r, params=replace(r.params, max_tokens=min(budget, r.params.max_tokens),
                                       stop=(THINK_END,)))
             if _budgeted(r) else r for r in requests]
    outs = await generate(first)
    follow: list[GenerationRequest] = []
    where: list[tuple[int, int, bool]] = []
    for i, (r, group) in enumerate(zip(requests, outs, strict=True)):
        if not _budgeted(r):
            continue
        for j, c in enumerate(group):
            if c.finish_reason == "eos":
                continue
            forced = c.finish_reason != "stop"  # cut by the budget, not closed by the model
            left = r.params.max_tokens - c.completion_tokens
            if left < 1:
                continue
            seed = None if r.params.seed is None else r.params.seed * 1_000_003 + j
            follow.append(replace(r, prefix=r.prefix + c.text + (FORCED_END if forced else ""),
                                  params=replace(r.params, n=1, max_tokens=left, seed=seed)))
            where.append((i, j, forced))
    answers = await generate(follow) if follow else []
    result = [list(g) for g in outs]
    for (i, j, forced), [a] in zip(where, answers, strict=True):
        result[i][j] = join(outs[i][j], a, forced)
    return result

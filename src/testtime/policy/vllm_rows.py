"""Online DeepConf on the in-process vLLM backend: rows streamed and aborted at a low-confidence
window (``SamplingParams.confidence_stop``; :class:`testtime.types.ConfidenceStop`).

A request with a confidence stop runs each of its rows as its own vLLM request with ``n=1``
and seed ``seed + i`` (vLLM seeds row i of one request so, hence the same samples), streamed
in deltas (``RequestOutputKind.DELTA``). After each delta the row's DeepConf token confidences
(mean of the top-20 log-probabilities vLLM returns, as for every vLLM completion) are
extended; once ``window`` tokens exist and the mean of the last ``window`` is below the
threshold, the stream is closed and the request aborted, so vLLM frees its KV blocks at once.
The completion holds exactly the tokens received (``finish_reason="confidence"``); vLLM may
deliver a few tokens per delta, and the row is cut right after the first token that crossed.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from testtime.confidence import token_confidence
from testtime.types import Completion, SamplingParams

#: The in-process vLLM policy (:class:`testtime.policy.vllm.VLLMPolicy`; not imported here,
#: as that module imports this one).
VLLMPolicy = Any


def first_below(confs: list[float], start: int, threshold: float, window: int) -> int | None:
    """The first token index >= ``start`` whose last-``window`` mean is below ``threshold``
    (only once ``window`` tokens exist), or None."""
    for t in range(max(start, window - 1), len(confs)):
        if sum(confs[t + 1 - window:t + 1]) / window < threshold:
            return t
    return None


async def run_rows(policy: VLLMPolicy, ids: list[int], params: SamplingParams
                   ) -> list[Completion]:
    """The request's rows, each streamed and stopped on low confidence (module docstring)."""
    rows = [run_row(policy, ids, replace(params, n=1, seed=None if params.seed is None
                                         else params.seed + i))
            for i in range(params.n)]
    return list(await asyncio.gather(*rows))


async def run_row(policy: VLLMPolicy, ids: list[int], params: SamplingParams) -> Completion:
    from vllm.sampling_params import RequestOutputKind

    stop = params.confidence_stop
    assert stop is not None
    sp = policy.sampling_params(params)
    sp.output_kind = RequestOutputKind.DELTA
    request_id = f"tt-{next(policy._ids)}"
    tokens: list[int] = []
    logprobs: list[Any] = []
    confs: list[float] = []
    prompt: list[int] = list(ids)
    last: Any = None
    cut: int | None = None
    stream = policy.engine.generate(policy._engine_input(ids), sp, request_id)
    try:
        async for out in stream:
            o = out.outputs[0]
            prompt = list(out.prompt_token_ids or prompt)
            seen = len(confs)
            tokens += list(o.token_ids)
            logprobs += list(o.logprobs or [])
            confs += [token_confidence([x.logprob for x in lp.values()])
                      for lp in o.logprobs or []]
            last = o
            if out.finished:
                break
            cut = first_below(confs, seen, stop.threshold, stop.window)
            if cut is not None:
                break
    finally:
        if cut is not None:
            await stream.aclose()
            await policy.engine.abort(request_id)
    if last is None:
        raise RuntimeError(f"vLLM request {request_id} ended without an output")
    if cut is not None:
        tokens, logprobs = tokens[:cut + 1], logprobs[:cut + 1]
    full = SimpleNamespace(prompt_token_ids=prompt, outputs=[SimpleNamespace(
        index=0, token_ids=tokens, logprobs=logprobs,
        finish_reason=None if cut is not None else last.finish_reason,
        stop_reason=None if cut is not None else last.stop_reason)])
    [c] = policy._completions(full, params)
    return replace(c, finish_reason="confidence") if cut is not None else c

"""The in-process ``vllm:`` backend on the embedded SmolLM2, run by the vLLM venv's Python.

``python tests/vllm_inproc.py OUT_DIR`` (tests/test_vllm_real.py runs it) builds
``vllm:default`` once (the GGUF's safetensors copy, fp32, eager, 32-token KV blocks), then:
greedy requests (stop string, EOS, length), one seeded request alone and inside a batch of 8,
and a Best-of-N and a beam-search run over demo problems through the real runner. It writes
``OUT_DIR/inproc.json`` (completions, engine stats, the model directory) and the run
directories ``OUT_DIR/best_of_n``, ``OUT_DIR/beam_search``. The request builders are imported by
the test, so both venvs ask the same questions.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from dataclasses import replace
from typing import Any

from testtime.prompts import prompt_for_model
from testtime.types import Completion, ConfidenceStop, GenerationRequest, SamplingParams

PROMPT = prompt_for_model("smollm2")
QUESTIONS = ("What is 12 + 35?", "What is 7 times 8?", "Solve for x: 2x + 6 = 10.")
#: demo problems both runs search, and their budgets
RUN_LIMIT = 3
RUNS = {"best_of_n": {"n": 4}, "beam_search": {"n": 4, "beam_width": 2, "max_depth": 6}}


def req(question: str, prefix: str = "", **params: Any) -> GenerationRequest:
    return GenerationRequest(PROMPT.messages(question), prefix, SamplingParams(**params))


def greedy_requests() -> list[GenerationRequest]:
    """Greedy: to a step boundary, to EOS, cut by length, and continuing a prefix."""
    out = [req(q, temperature=0, max_tokens=40, stop=("\n\n",)) for q in QUESTIONS]
    out.append(req(QUESTIONS[0], temperature=0, max_tokens=120))
    out.append(req(QUESTIONS[1], temperature=0, max_tokens=6))
    out.append(req(QUESTIONS[2], "We subtract 6 from both sides.\n\n", temperature=0,
                   max_tokens=40, stop=("\n\n",)))
    return out


def seeded_request() -> GenerationRequest:
    return req(QUESTIONS[0], temperature=0.8, top_p=0.95, max_tokens=32, n=3, seed=11)


def other_requests() -> list[GenerationRequest]:
    return [req(f"What is {i} times {i + 3}?", temperature=0.8, top_p=0.95, max_tokens=32,
                seed=100 + i) for i in range(7)]


def dump(c: Completion) -> dict[str, Any]:
    return {"text": c.text, "finish_reason": c.finish_reason,
            "completion_tokens": c.completion_tokens, "prompt_tokens": c.prompt_tokens,
            "token_texts": list(c.token_texts), "token_logprobs": list(c.token_logprobs)}


async def main(out: Path) -> None:
    from testtime.config import DatasetConfig, RunConfig
    from testtime.policy.registry import build_policy
    from testtime.runner import run
    from testtime.search.base import SearchConfig

    started = time.perf_counter()
    policy = build_policy("vllm:default")
    result: dict[str, Any] = {"model": policy.config.model,  # type: ignore[attr-defined]
                              "load_s": time.perf_counter() - started}
    try:
        t = time.perf_counter()
        result["greedy"] = [[dump(c) for c in cs]
                            for cs in await policy.generate(greedy_requests())]
        [alone] = await policy.generate([seeded_request()])
        others = other_requests()
        batch = await policy.generate([*others[:4], seeded_request(), *others[4:]])
        result["seeded_alone"] = [dump(c) for c in alone]
        result["seeded_in_batch"] = [dump(c) for c in batch[4]]
        result["requests_s"] = time.perf_counter() - t
        # online DeepConf: the same seeded rows, stopped at a window of 4 below a threshold
        # just above the free row 0's 4th full window (tests/test_vllm_real.py checks the cut)
        free = [c.token_confidences for c in alone]
        means = [sum(free[0][t - 3:t + 1]) / 4 for t in range(3, len(free[0]))]
        stop = ConfidenceStop(means[3] + 1e-3, 4)
        seeded = seeded_request()
        [stopped] = await policy.generate([replace(seeded, params=replace(
            seeded.params, confidence_stop=stop))])
        result["confidence_stop"] = {"threshold": stop.threshold, "window": stop.window,
                                     "free": [list(f) for f in free],
                                     "stopped": [dump(c) for c in stopped]}
        for method, search in RUNS.items():
            cfg = RunConfig(dataset=DatasetConfig(name="demo", limit=RUN_LIMIT),
                            policy="vllm:default", prm="confidence",
                            search=SearchConfig(method=method, **search))
            t = time.perf_counter()
            await run(cfg, out / method, policy=policy, progress=False)
            result[f"{method}_s"] = time.perf_counter() - t
        result["engine_stats"] = policy.engine_stats()  # type: ignore[attr-defined]
    finally:
        await policy.aclose()
    (out / "inproc.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":  # vLLM's engine core is a spawned process: it re-imports this file
    asyncio.run(main(Path(sys.argv[1])))

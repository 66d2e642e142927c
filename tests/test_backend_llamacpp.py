"""The llama.cpp backend on the real embedded SmolLM2 (CPU, llama-cpp-python)."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from testtime.prompts import prompt_for_model
from testtime.types import GenerationRequest, SamplingParams

pytest.importorskip("llama_cpp")

from testtime.policy.llamacpp import (
    LlamaCppPolicy,
    LlamaCppPolicyConfig,
    sample_token,
    token_stats,
)

pytestmark = pytest.mark.slow

PROMPT = prompt_for_model("smollm2")


def req(problem: str, prefix: str = "", **params) -> GenerationRequest:  # type: ignore[no-untyped-def]
    return GenerationRequest(PROMPT.messages(problem), prefix, SamplingParams(**params))


@pytest.fixture(scope="module")
def policy() -> LlamaCppPolicy:
    return LlamaCppPolicy(LlamaCppPolicyConfig(max_batch_seqs=16, n_ctx=8192))


def test_token_ids_agree_with_the_hf_tokenizer(policy: LlamaCppPolicy) -> None:
    texts = [
        policy.render(req("What is $\\frac{1}{2} + 3^2$?", "Partial answer:\n\n")),
        "Ünïcödé 数学 \\boxed{\\frac{1}{2}}\n\nDone ✓  double  spaces\t",
        "<|im_start|>user\nspecial tokens inside text<|im_end|>",
    ]
    for text in texts:
        hf = policy.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert policy.tokenize(text) == hf
    assert {2, 0} <= policy.eos_ids  # <|im_end|> and <|endoftext|> end a turn


def test_greedy_is_deterministic_with_token_statistics(policy: LlamaCppPolicy) -> None:
    r = req("What is 7 + 5?", temperature=0, max_tokens=12)
    a, b = asyncio.run(policy.generate([r, r]))
    assert a[0].text == b[0].text
    c = a[0]
    assert c.completion_tokens <= 12
    if c.finish_reason == "length":
        assert c.completion_tokens == 12
    assert c.prompt_tokens == policy.count_tokens(policy.render(r))
    assert len(c.token_logprobs) == len(c.token_texts) == len(c.token_certainties) > 0
    assert "".join(c.token_texts) == c.text
    assert all(lp <= 1e-6 for lp in c.token_logprobs)
    assert all(ce >= 0 and math.isfinite(ce) for ce in c.token_certainties)
    assert max(c.token_logprobs) > math.log(0.2)  # greedy picks likely tokens


def test_stop_string_kept_prefix_continued_and_finish_reasons(policy: LlamaCppPolicy) -> None:
    prefix = "We need to add 7 and 5.\n\n"
    r = req("What is 7 + 5?", prefix, temperature=0.7, max_tokens=48, stop=("\n\n",), n=4,
            seed=3)
    [outs] = asyncio.run(policy.generate([r]))
    assert len(outs) == 4
    for c in outs:
        assert c.finish_reason in ("stop", "eos", "length")
        if c.finish_reason == "stop":
            assert c.text.endswith("\n\n") and c.text.count("\n\n") == 1
        if c.finish_reason == "length":
            assert c.completion_tokens == 48
        assert "".join(c.token_texts).startswith(c.text)
    assert policy.render(r).endswith("<|im_start|>assistant\n" + prefix)


def test_seeded_sampling_is_reproducible_and_per_row(policy: LlamaCppPolicy) -> None:
    r = req("What is 3 + 4?", temperature=1.0, max_tokens=16, n=3, seed=11)
    other = req("Name a prime number.", temperature=1.0, max_tokens=16, n=5, seed=2)
    [a] = asyncio.run(policy.generate([r]))
    [b] = asyncio.run(policy.generate([r]))
    assert [c.text for c in a] == [c.text for c in b]
    assert len({c.text for c in a}) > 1  # rows get different seeds
    # Each row has its own generator, so a row samples the same tokens in another batch,
    # until batch-dependent float rounding moves a draw across a boundary.
    [batched, _] = asyncio.run(policy.generate([r, other]))
    for x, y in zip(a, batched, strict=True):
        assert x.token_texts[:3] == y.token_texts[:3]


def test_kv_pressure_preempts_and_resumes_with_the_same_results(policy: LlamaCppPolicy) -> None:
    """A cache too small for every row at once gives the same greedy texts as a large one."""
    small = LlamaCppPolicy(LlamaCppPolicyConfig(max_batch_seqs=4, n_ctx=256))
    r = req("Write the numbers from 1 to 30, separated by commas.", temperature=0,
            max_tokens=60, n=4)
    [big] = asyncio.run(policy.generate([r]))
    [tight] = asyncio.run(small.generate([r]))
    assert small.preemptions > 0
    for a, b in zip(big, tight, strict=True):
        # Batched and recomputed prefixes round differently; compare the well-separated start.
        assert a.text[:40] == b.text[:40] and len(b.text) > 40
        assert a.prompt_tokens == b.prompt_tokens
        assert b.completion_tokens == len(b.token_logprobs) + (b.finish_reason == "eos")
    asyncio.run(small.aclose())


def test_oversized_prompt_is_a_clear_error() -> None:
    tiny = LlamaCppPolicy(LlamaCppPolicyConfig(max_batch_seqs=2, n_ctx=256))
    assert tiny.n_ctx == 256 and tiny.n_batch <= 256
    [[ok]] = asyncio.run(tiny.generate([req("What is 1 + 1?", max_tokens=4)]))
    assert ok.completion_tokens <= 4
    with pytest.raises(ValueError, match="does not fit the model.s context of 256 tokens"):
        asyncio.run(tiny.generate([req("What is 1 + 1? " * 40, max_tokens=4)]))


def test_sampling_helpers() -> None:
    logits = np.log(np.array([0.1, 0.6, 0.3], dtype=np.float32))
    lp, ce, co = token_stats(logits, 2, math.log(3))
    assert lp == pytest.approx(math.log(0.3), abs=1e-6)
    # DeepConf: minus the mean log-prob of the top 20 (here all 3) tokens
    assert co == pytest.approx(-np.mean(np.log([0.1, 0.6, 0.3])), abs=1e-6)
    kl = -math.log(3) - np.mean(np.log([0.1, 0.6, 0.3]))
    assert ce == pytest.approx(kl / math.log(3), abs=1e-6)
    greedy = SamplingParams(temperature=0)
    assert sample_token(logits, greedy, None) == 1
    # top-p 0.5 keeps only the most likely token; top-p 0.85 keeps tokens 1 and 2.
    rng = np.random.default_rng(0)
    assert {sample_token(logits, SamplingParams(temperature=1, top_p=0.5), rng)
            for _ in range(50)} == {1}
    seen = [sample_token(logits, SamplingParams(temperature=1, top_p=0.85), rng)
            for _ in range(400)]
    assert set(seen) == {1, 2} and 0.55 < seen.count(1) / 400 < 0.8


def test_confidence_stop_ends_a_row_with_what_it_generated(policy: LlamaCppPolicy) -> None:
    from testtime.types import ConfidenceStop

    free = req("What is 7 + 5?", temperature=0.7, max_tokens=40, seed=5, n=2)
    [full] = asyncio.run(policy.generate([free]))
    window = 4
    confs = full[0].token_confidences
    assert len(confs) >= 12
    means = [sum(confs[t + 1 - window:t + 1]) / window for t in range(window - 1, len(confs))]
    # just above the 4th full window's mean: the row stops at the first window below it
    s = means[3] + 1e-3
    stop = ConfidenceStop(s, window)
    stopped = req("What is 7 + 5?", temperature=0.7, max_tokens=40, seed=5, n=2,
                  confidence_stop=stop)
    rows, _ = asyncio.run(policy.generate([stopped, free]))
    first = next(i for i, m in enumerate(means) if m < s) + window - 1
    assert first <= window - 1 + 3
    c = rows[0]
    assert c.finish_reason == "confidence" and c.completion_tokens == first + 1
    # the tokens it made, and no more: a prefix of the same seeded row run without the stop
    assert c.token_texts == full[0].token_texts[:first + 1]
    assert c.token_confidences == pytest.approx(confs[:first + 1], abs=1e-4)
    assert c.text == "".join(full[0].token_texts[:first + 1])
    # a stop that is never reached changes nothing
    never = req("What is 7 + 5?", temperature=0.7, max_tokens=40, seed=5, n=2,
                confidence_stop=ConfidenceStop(-1.0, window))
    [again] = asyncio.run(policy.generate([never]))
    assert [x.text for x in again] == [x.text for x in full]

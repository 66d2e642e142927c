"""The transformers backend on the real embedded SmolLM2 (CPU)."""

from __future__ import annotations

import asyncio
import math

import pytest

from testtime.policy.hf import HFPolicy, render_prompt, token_pieces
from testtime.prompts import prompt_for_model
from testtime.types import GenerationRequest, SamplingParams

pytestmark = pytest.mark.slow

PROMPT = prompt_for_model("smollm2")


def req(problem: str, prefix: str = "", **params) -> GenerationRequest:  # type: ignore[no-untyped-def]
    return GenerationRequest(PROMPT.messages(problem), prefix, SamplingParams(**params))


def test_greedy_is_deterministic_and_respects_max_tokens(smollm2_policy: HFPolicy) -> None:
    r = req("What is 7 + 5?", temperature=0, max_tokens=12)
    a, b = asyncio.run(smollm2_policy.generate([r, r]))
    assert a[0].text == b[0].text
    c = a[0]
    assert c.completion_tokens <= 12
    if c.finish_reason == "length":
        assert c.completion_tokens == 12
    assert c.prompt_tokens == smollm2_policy.count_tokens(smollm2_policy.render(r))
    assert len(c.token_logprobs) == len(c.token_texts) == len(c.token_certainties)
    assert all(lp <= 1e-6 for lp in c.token_logprobs)
    assert all(ce >= 0 and math.isfinite(ce) for ce in c.token_certainties)
    # greedy picks the arg-max token: its probability is high on a simple prompt
    assert max(c.token_logprobs) > math.log(0.2)


def test_stop_string_kept_and_prefix_continued(smollm2_policy: HFPolicy) -> None:
    prefix = "We need to add 7 and 5.\n\n"
    r = req("What is 7 + 5?", prefix, temperature=0.7, max_tokens=48, stop=("\n\n",), n=4,
            seed=3)
    [outs] = asyncio.run(smollm2_policy.generate([r]))
    assert len(outs) == 4
    for c in outs:
        assert c.finish_reason in ("stop", "eos", "length")
        if c.finish_reason == "stop":
            assert c.text.endswith("\n\n") and c.text.count("\n\n") == 1
        assert "".join(c.token_texts).startswith(c.text)
    # the rendered prompt ends with the partial answer inside the open assistant turn
    rendered = smollm2_policy.render(r)
    assert rendered.endswith("<|im_start|>assistant\n" + prefix)


def test_seeded_sampling_is_reproducible(smollm2_policy: HFPolicy) -> None:
    r = req("What is 3 + 4?", temperature=1.0, max_tokens=16, n=3, seed=11)
    [a] = asyncio.run(smollm2_policy.generate([r]))
    [b] = asyncio.run(smollm2_policy.generate([r]))
    assert [c.text for c in a] == [c.text for c in b]


def test_token_pieces_concatenate_to_decode(smollm2_policy: HFPolicy) -> None:
    tok = smollm2_policy.tokenizer
    text = "Ünïcödé 数学 \\boxed{\\frac{1}{2}}\n\nDone ✓"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    pieces = token_pieces(tok, ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == tok.decode(ids)


def test_render_without_chat_template() -> None:
    class Plain:
        chat_template = None

    text = render_prompt(Plain(), PROMPT.messages("1+1?"), "Partial")
    assert text.endswith("Assistant: Partial") and "1+1?" in text


def test_rows_with_different_max_tokens_in_one_batch(smollm2_policy: HFPolicy) -> None:
    # One generate call runs at the largest limit; each row is cut at its own.
    calls = smollm2_policy.batch_stats.calls
    short = req("What is 9 * 8?", temperature=0, max_tokens=5)
    long = req("What is 9 * 8?", temperature=0, max_tokens=20)
    [a], [b] = asyncio.run(smollm2_policy.generate([short, long]))
    assert smollm2_policy.batch_stats.calls == calls + 1
    assert a.completion_tokens <= 5 and b.completion_tokens <= 20
    if b.completion_tokens > 5:
        assert a.finish_reason == "length" and a.completion_tokens == 5
        assert b.text.startswith(a.text) and a.token_texts == b.token_texts[:5]
        assert len(a.token_logprobs) == 5


def test_a_request_samples_the_same_alone_or_in_a_batch_of_eight(
    smollm2_policy: HFPolicy
) -> None:
    # Each row draws from its own seeded generator, so a problem's samples do not depend on
    # which problems share its batch (as --resume assumes when --concurrency changes).
    mine = req("What is 12 + 35?", temperature=0.8, top_p=0.95, max_tokens=24, n=2, seed=11)
    others = [req(f"What is {i} times {i + 2}?", temperature=0.8, top_p=0.95, max_tokens=24,
                  seed=100 + i) for i in range(6)]
    [alone] = asyncio.run(smollm2_policy.generate([mine]))
    together = asyncio.run(smollm2_policy.generate([*others[:3], mine, *others[3:]]))[3]
    assert [c.text for c in alone] == [c.text for c in together]
    for a, t in zip(alone, together, strict=True):
        assert list(a.token_logprobs) == pytest.approx(list(t.token_logprobs), abs=1e-4)
    assert alone[0].text != alone[1].text  # the rows of one request draw different samples
    again = asyncio.run(smollm2_policy.generate([mine]))[0]
    assert [c.text for c in again] == [c.text for c in alone]


def test_a_prompt_past_the_context_is_refused(smollm2_policy: HFPolicy) -> None:
    from testtime.policy.base import PromptTooLong

    limit = smollm2_policy.model.config.max_position_embeddings
    with pytest.raises(PromptTooLong, match=f"does not fit the model's context of {limit}"):
        asyncio.run(smollm2_policy.generate([req("x " * limit, max_tokens=4)]))

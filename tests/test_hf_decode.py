"""The transformers backend's decode loop (continuous batching) against ``generate`` on a tiny
random model: same tokens, statistics, seeds, stop strings; online DeepConf stopping."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from test_backend_vllm import tiny_tokenizer

from testtime.policy.hf import HFPolicy, HFPolicyConfig
from testtime.types import ChatMessage, ConfidenceStop, GenerationRequest, SamplingParams

#: A token of the byte-level vocabulary that generation_config's sequence_bias pushes up.
BIASED_BYTE = "q"


def build(root: Path, bias: float | None = None) -> Path:
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()  # one token per byte, ChatML template
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # sharper logits than init's: texts with structure, rare EOS
        model.lm_head.weight.mul_(40)
    if bias is not None:
        model.generation_config = GenerationConfig(
            eos_token_id=tok.eos_token_id,
            sequence_bias=[[[tok.convert_tokens_to_ids(BIASED_BYTE)], bias]])
    model.save_pretrained(root)
    tok.save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("tiny"))


def policy(path: Path, **kw: Any) -> HFPolicy:
    return HFPolicy(HFPolicyConfig(model=str(path), device="cpu", **kw))


def req(i: int, **params: Any) -> GenerationRequest:
    msgs = (ChatMessage("user", f"Problem {i}: what is {i} + {i * 7 % 5}?" + " pad" * (i % 3)),)
    return GenerationRequest(msgs, "Step 1" if i % 2 else "", SamplingParams(**params))


def run(p: HFPolicy, requests: list[GenerationRequest]) -> list[list[Any]]:
    return asyncio.run(p.generate(requests))


def same(a: Any, b: Any) -> None:
    assert a.text == b.text and a.token_texts == b.token_texts
    assert a.finish_reason == b.finish_reason and a.completion_tokens == b.completion_tokens
    for x, y in ((a.token_logprobs, b.token_logprobs),
                 (a.token_certainties, b.token_certainties),
                 (a.token_confidences, b.token_confidences)):
        assert list(x) == pytest.approx(list(y), abs=1e-4)


def two_byte_stop(texts: list[str]) -> str:
    """A two-character ASCII string from the middle of a text: two tokens of this vocabulary."""
    for text in texts:
        for i in range(len(text) // 3, len(text) - 1):
            pair = text[i:i + 2]
            if all(32 <= ord(c) < 127 for c in pair):
                return pair
    raise AssertionError(f"no ASCII pair in {texts!r}")


@pytest.mark.parametrize("params", [
    {"temperature": 0, "max_tokens": 20},
    {"temperature": 0.9, "top_p": 0.9, "max_tokens": 24, "seed": 5, "n": 2},
    {"temperature": 1.0, "max_tokens": 30, "seed": 9, "stop": ("\n\n",)},
])
def test_the_loop_makes_what_generate_makes(model_dir: Path, params: dict[str, Any]) -> None:
    if "stop" in params:  # a stop string of two tokens that the rows do write
        free = run(policy(model_dir), [req(i, **{**params, "stop": ()}) for i in range(5)])
        params = {**params, "stop": (*params["stop"], two_byte_stop([r[0].text for r in free]))}
    reqs = [req(i, **params) for i in range(5)]
    want = run(policy(model_dir, decode="generate", max_batch_seqs=8), reqs)
    got = run(policy(model_dir, max_batch_seqs=8, sync_every=3), reqs)
    for w, g in zip(want, got, strict=True):
        for a, b in zip(w, g, strict=True):
            same(a, b)
    if "stop" in params:  # the multi-byte stop strings were found and kept
        assert any(c.finish_reason == "stop" for r in got for c in r)


def test_a_row_samples_the_same_in_any_slot_and_refill(model_dir: Path) -> None:
    # Two slots for seven requests of different lengths: rows join as others finish, at
    # different decode steps of the batch, in one backend call that takes queued rows.
    reqs = [req(i, temperature=0.8, max_tokens=4 + 5 * (i % 3), seed=i, n=1 + i % 2)
            for i in range(7)]
    wide = run(policy(model_dir, max_batch_seqs=16), reqs)
    narrow_policy = policy(model_dir, max_batch_seqs=2, sync_every=2)
    narrow = run(narrow_policy, reqs)
    for w, n in zip(wide, narrow, strict=True):
        for a, b in zip(w, n, strict=True):
            same(a, b)
    assert narrow_policy.batch_stats.calls == 1  # one call served every queued row
    assert narrow_policy.batch_stats.rows == sum(r.params.n for r in reqs)
    alone = [run(narrow_policy, [r])[0] for r in reqs[:3]]
    for w, a in zip(wide, alone, strict=False):
        assert [c.text for c in w] == [c.text for c in a]


def test_rows_stop_at_their_own_limit(model_dir: Path) -> None:
    out = run(policy(model_dir), [req(1, temperature=0, max_tokens=3),
                                  req(1, temperature=0, max_tokens=11)])
    short, long = out[0][0], out[1][0]
    assert short.completion_tokens == 3 and short.finish_reason == "length"
    assert long.token_texts[:3] == short.token_texts


def test_generation_config_processors_apply_on_both_paths(tmp_path: Path) -> None:
    biased = build(tmp_path / "biased", bias=1e4)
    r = [req(2, temperature=0, max_tokens=12)]
    [[a]] = run(policy(biased, decode="generate"), r)
    [[b]] = run(policy(biased), r)
    same(a, b)
    assert a.text == BIASED_BYTE * 12  # the bias took effect


def test_online_deepconf_stops_right_after_the_first_low_window(model_dir: Path) -> None:
    p = policy(model_dir)
    window = 3
    [[full]] = run(p, [req(3, temperature=0, max_tokens=40)])
    conf = full.token_confidences
    means = [sum(conf[t - window + 1:t + 1]) / window for t in range(window - 1, len(conf))]
    # A threshold between the lowest window mean and the next higher one: the row must stop
    # right after the token that ends the lowest window.
    ordered = sorted(set(means))
    assert len(ordered) > 1
    threshold = (ordered[0] + ordered[1]) / 2
    stop_at = window - 1 + means.index(ordered[0])
    stop = ConfidenceStop(threshold=threshold, window=window)
    [[cut]] = run(p, [req(3, temperature=0, max_tokens=40, confidence_stop=stop)])
    assert cut.finish_reason == "confidence"
    assert cut.completion_tokens == stop_at + 1
    assert cut.token_texts == full.token_texts[: stop_at + 1]
    assert list(cut.token_confidences) == pytest.approx(list(conf[: stop_at + 1]), abs=1e-5)
    # A threshold under every window never stops the row.
    never = ConfidenceStop(threshold=ordered[0] - 1.0, window=window)
    [[kept]] = run(p, [req(3, temperature=0, max_tokens=40, confidence_stop=never)])
    same(kept, full)


def test_streamed_rows_of_another_sampling_key_wait_for_their_own_call(model_dir: Path) -> None:
    p = policy(model_dir, max_batch_seqs=2, sync_every=2)
    reqs = [req(0, temperature=0, max_tokens=6), req(1, temperature=0.5, max_tokens=6, seed=1),
            req(2, temperature=0, max_tokens=6)]
    out = run(p, reqs)
    assert [len(o) for o in out] == [1, 1, 1]
    assert p.batch_stats.calls == 2  # greedy rows together, the sampled row on its own

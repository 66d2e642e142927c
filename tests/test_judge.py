"""LLM-as-judge: exact P(Yes) on the HF backend (tiny random Llama) and the generic fallback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from test_prm_support import LLAMA3_PATTERN, LLAMA3_SPECIALS, LLAMA31_CHAT_TEMPLATE, _spread_
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from testtime.policy.hf import HFPolicy, HFPolicyConfig
from testtime.scoring.judge import (
    NO_SPELLINGS,
    QUESTION,
    YES_SPELLINGS,
    HFYesNoProbe,
    JudgeScorer,
    SampledYesNoProbe,
    judge_messages,
    step_chats,
)
from testtime.scoring.registry import build_scorer
from testtime.testing import ScriptedPolicy
from testtime.types import GenerationRequest, SamplingParams, ScoreRequest, Step


def _steps(*texts: str) -> tuple[Step, ...]:
    return tuple(Step(text=t) for t in texts)


REQUESTS = [
    ScoreRequest("What is 2+3?", _steps("Add the numbers.\n\n", "So 2+3 = 5.\n\n")),
    ScoreRequest("Compute 7*6.", _steps("We multiply 7 by 6 to get 42.\n\n")),
    ScoreRequest("What is 9/3?", ()),
    ScoreRequest("Find x if x-4 = 10.",
                 _steps("Add 4 to both sides.\n\n", "So x = 14.\n\n", "The answer is 14.")),
]


def build_judge_model(path: Path) -> Path:
    """A tiny random Llama 3.1-style chat model whose vocabulary has Yes/No as tokens."""
    corpus = [m.content for r in REQUESTS for chat in step_chats(r) for m in chat]
    corpus += ["Yes", "No", "yes no Yes No"] * 40
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), "isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus * 2, trainers.BpeTrainer(
        vocab_size=700, special_tokens=LLAMA3_SPECIALS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bos = "<|begin_of_text|>"
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))])
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token="<|eot_id|>")
    hf_tok.chat_template = LLAMA31_CHAT_TEMPLATE
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(hf_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=2048,
        tie_word_embeddings=False, bos_token_id=tok.token_to_id(bos),
        eos_token_id=tok.token_to_id("<|eot_id|>")))
    _spread_(model, 7)
    model.save_pretrained(path)
    hf_tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> HFPolicy:
    path = build_judge_model(tmp_path_factory.mktemp("judge_llama"))
    # Batches of 3 rows: the 6 step prompts need two forwards with left padding.
    return HFPolicy(HFPolicyConfig(model=str(path), device="cpu", max_batch_seqs=3))


def reference_p_yes(policy: HFPolicy, request: ScoreRequest) -> tuple[list[float], int]:
    """Model-card style: one unpadded forward per prompt, full softmax, Yes vs No mass."""
    tok, model = policy.tokenizer, policy.model

    def single(spellings: tuple[str, ...]) -> list[int]:
        ids = [tok.encode(s, add_special_tokens=False) for s in spellings]
        return sorted({i[0] for i in ids if len(i) == 1})

    yes, no = single(YES_SPELLINGS), single(NO_SPELLINGS)
    assert yes and no  # the test vocabulary has single-token answers
    out, tokens = [], 0
    for chat in step_chats(request):
        messages = [{"role": m.role, "content": m.content} for m in chat]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        tokens += len(ids)
        with torch.no_grad():
            probs = model(input_ids=torch.tensor([ids])).logits[0, -1].softmax(-1)
        out.append(float(probs[yes].sum() / (probs[yes].sum() + probs[no].sum())))
    return out, tokens


def test_prompt_names_question_previous_steps_and_step() -> None:
    system, user = judge_messages("What is 2+3?", ["Add them.\n\n"], "So 5.\n\n")
    assert system.role == "system" and "Yes or No" in system.content
    assert user.content == ("Problem:\nWhat is 2+3?\n\nPrevious steps:\nAdd them.\n\n"
                            f"Step to check:\nSo 5.\n\n{QUESTION}")
    assert "Previous steps" not in judge_messages("q", [], "s")[1].content


def test_hf_judge_matches_reference_in_one_batched_call(policy: HFPolicy) -> None:
    judge = build_scorer("judge", policy=policy)
    assert isinstance(judge, JudgeScorer) and isinstance(judge.probe, HFYesNoProbe)
    assert judge.name == policy.name.replace("hf:", "judge:hf:", 1)
    result = asyncio.run(judge.score(REQUESTS))
    got = result.scores
    assert judge.probe.forwards == 2  # 6 prompts, batch size 3: all steps in one call
    for g, used, request in zip(got, result.tokens, REQUESTS, strict=True):
        want, tokens = reference_p_yes(policy, request)
        assert used == tokens  # the judge's prompt tokens, reported with its scores
        assert g == pytest.approx(want, abs=1e-5)
    assert all(0.0 < p < 1.0 for row in got for p in row)
    assert len({round(p, 6) for row in got for p in row}) > 3  # scores differ per step
    # A judge bills its model's parameters for the tokens it reads.
    from testtime.flops import FlopCosts

    assert FlopCosts.of(policy, judge).prm_params == FlopCosts.of(policy, None).policy_params > 0


def test_concurrent_judge_calls_are_coalesced(policy: HFPolicy) -> None:
    probe = HFYesNoProbe(policy, batch_size=64)
    judge = JudgeScorer(policy, probe)

    async def many() -> list[list[list[float]]]:
        return [r.scores for r in await asyncio.gather(*(judge.score([r]) for r in REQUESTS))]

    got = asyncio.run(many())
    assert probe.forwards == 2  # the first call, then everyone who queued meanwhile
    for (g,), request in zip(got, REQUESTS, strict=True):
        assert g == pytest.approx(reference_p_yes(policy, request)[0], abs=1e-5)


def test_sampled_probe_on_any_policy() -> None:
    def script(problem: str, prefix: str, i: int, params: SamplingParams) -> str:
        step = problem.split("Step to check:\n")[1]
        return "Yes" if "= 5" in step or "14" in step else "No"

    policy = ScriptedPolicy(script, logprob=-0.5)
    judge = build_scorer("judge", policy=policy)
    assert isinstance(judge, JudgeScorer) and isinstance(judge.probe, SampledYesNoProbe)
    result = asyncio.run(judge.score(REQUESTS))
    q = pytest.approx(0.6065306597, abs=1e-9)  # exp(-0.5) on the greedy answer
    n = pytest.approx(1 - 0.6065306597, abs=1e-9)
    assert result.scores == [[n, q], [n], [], [n, q, q]]
    assert policy.batches == [6]  # every step in one generation batch
    request: GenerationRequest = policy.calls[0]
    assert request.params.max_tokens == 1 and request.params.temperature == 0.0
    assert result.tokens[0] > 0 and result.tokens[2] == 0  # no steps, no judge prompt


def test_registry_judge_specs() -> None:
    with pytest.raises(ValueError, match="judge:hf:PATH"):
        build_scorer("judge")
    with pytest.raises(ValueError, match="judge:hf:PATH_OR_HUB_ID"):
        build_scorer("judge:vllm:model")

"""The paper's settings by default: sampling per model family, DeepSeek-R1-Distill's prompt
rendering, Best-of-N and CoT to EOS, vote grouping by the paper's answer strings, and the two
prompt-token counts (billed and prefix-cached)."""

from __future__ import annotations

import asyncio

import pytest

from testtime.cli.common import sampling_and_path
from testtime.config import RunConfig
from testtime.grading import Grader
from testtime.policy.hf import render_prompt
from testtime.prompts.base import PromptTemplate
from testtime.record_builder import build_record
from testtime.search import get_method
from testtime.search.base import (
    Candidate,
    Compute,
    SamplingConfig,
    SearchConfig,
    SearchContext,
    SearchResult,
)
from testtime.testing import RuleScorer, ScriptedPolicy
from testtime.types import ChatMessage, Problem, Step

R1 = "hf:deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
QWEN = "hf:Qwen/Qwen2.5-Math-7B-Instruct"


def test_sampling_defaults_follow_the_paper_per_family() -> None:
    assert RunConfig(policy=QWEN).sampling == SamplingConfig(0.7, 1.0, 0, greedy_cot=True)
    assert RunConfig(policy=R1).sampling == SamplingConfig(0.6, 0.95, 0, greedy_cot=False)
    assert RunConfig(policy=R1, sampling=SamplingConfig(temperature=0.2)).sampling \
        .temperature == 0.2  # given settings win
    sampling, path = sampling_and_path(R1, None, None, None, 3, None)
    assert (sampling.temperature, sampling.top_p, sampling.seed, path) == (0.6, 0.95, 3, 32768)
    sampling, path = sampling_and_path(R1, None, 0.3, None, 0, 1000)
    assert (sampling.temperature, sampling.top_p, path) == (0.3, 0.95, 1000)  # overridable
    sampling, path = sampling_and_path(QWEN, None, None, None, 0, None)
    assert (sampling.temperature, sampling.top_p, sampling.greedy_cot, path) == (
        0.7, 1.0, True, 8192)
    assert sampling_and_path("llamacpp:default", None, None, None, 0, None)[1] == 256


@pytest.mark.parametrize(("greedy_cot", "temperature"), [(True, 0.0), (False, 0.6)])
def test_cot_is_greedy_except_for_r1_distill(greedy_cot: bool, temperature: float) -> None:
    policy = ScriptedPolicy(lambda *a: "So \\boxed{3}")
    ctx = SearchContext(policy, RuleScorer(lambda *a: 0.5), PromptTemplate("plain"),
                        SearchConfig(method="cot"),
                        SamplingConfig(temperature=0.6, top_p=0.95, greedy_cot=greedy_cot))
    asyncio.run(get_method("cot")(Problem("p", "1+2?", "3"), ctx))
    [request] = policy.calls
    assert request.params.temperature == temperature and request.params.n == 1
    assert request.params.stop == ()  # to EOS or the path limit


def test_best_of_n_samples_run_to_eos_and_keep_every_step() -> None:
    # 50 steps, then two answers: no depth cut, no stop after the first \\boxed; the answer is
    # the last \\boxed, as the paper's code reads it.
    text = "".join(f"Step {i}.\n\n" for i in range(50)) + "First \\boxed{1}.\n\n" \
        + "No, \\boxed{3}."
    policy = ScriptedPolicy(lambda *a: text)
    ctx = SearchContext(policy, RuleScorer(lambda *a: 0.5), PromptTemplate("plain"),
                        SearchConfig(n=2, max_depth=40), SamplingConfig())
    result = asyncio.run(get_method("best_of_n")(Problem("p", "1+2?", "3"), ctx))
    assert [len(c.steps) for c in result.candidates] == [52, 52]
    assert all(c.text == text for c in result.candidates)
    assert policy.calls[0].params.stop == () and policy.calls[0].params.max_tokens == 8192


R1_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}<｜User｜>{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}{% set c = m['content'] %}"
    "{% if '</think>' in c %}{% set c = c.split('</think>')[-1] %}{% endif %}"
    "<｜Assistant｜>{{ c }}<｜end▁of▁sentence｜>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<｜Assistant｜><think>\n{% endif %}")


def qwen_vocab() -> object:
    from test_prm_support import qwen_vocab_dir
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(qwen_vocab_dir()))


def test_r1_distill_turn_is_rendered_as_the_papers_code_does() -> None:
    tok = qwen_vocab()
    tok.chat_template = R1_TEMPLATE  # type: ignore[attr-defined]
    tok.eos_token = "<｜end▁of▁sentence｜>"  # type: ignore[attr-defined]
    msgs = (ChatMessage("user", "What is 1+2?"),)
    # testtime's own rendering opens the turn with the template's generation prompt...
    assert render_prompt(tok, msgs, "", "generation_prompt").endswith("<｜Assistant｜><think>\n")
    # ...the paper's renders the partial answer as an assistant message: no forced <think>,
    # and a partial answer with </think> keeps only what follows it
    paper = render_prompt(tok, msgs, "", "assistant_message")
    assert paper.endswith("<｜Assistant｜>") and "<think>" not in paper
    cut = render_prompt(tok, msgs, "<think>\nhmm\n</think>\n\nStep 1.\n\n", "assistant_message")
    assert cut.endswith("<｜Assistant｜>\n\nStep 1.\n\n")


def test_other_templates_render_the_same_both_ways_on_the_real_qwen_vocab() -> None:
    from test_prm_support import QWEN25_CHAT_TEMPLATE

    tok = qwen_vocab()
    tok.chat_template = QWEN25_CHAT_TEMPLATE  # type: ignore[attr-defined]
    msgs = (ChatMessage("system", "Please reason step by step."),
            ChatMessage("user", "What is 1+2?"))
    for prefix in ("", "Step 1: add.\n\n", "Step 1: add.\n\nStep 2: 3.\n\n"):
        a = render_prompt(tok, msgs, prefix, "generation_prompt")
        assert render_prompt(tok, msgs, prefix, "assistant_message") == a
        assert a.endswith("<|im_start|>assistant\n" + prefix)


def result_of(texts: list[str]) -> SearchResult:
    return SearchResult([Candidate([Step(t)], [0.5], "eos", origin=i)
                         for i, t in enumerate(texts)], Compute(), independent_prefixes=True,
                        budget=len(texts))


@pytest.mark.parametrize(("grouping", "majority"), [("string", None), ("equivalence", "5")])
def test_paths_without_an_answer_vote_in_the_papers_grouping(grouping: str,
                                                             majority: str | None) -> None:
    # three paths without an answer, two with 5: the paper's code votes "" and loses the
    # problem; with equivalence classes the unanswered paths abstain
    texts = ["I do not know.", "Hmm.", "No idea.", "So \\boxed{5}.", "It is \\boxed{5}."]
    cfg = RunConfig(prm="rule", search=SearchConfig(n=5, answer_grouping=grouping))  # type: ignore[arg-type]
    with Grader() as grader:
        rec = asyncio.run(build_record(Problem("p", "2+3?", "5"), result_of(texts), cfg, grader))
    assert rec.predictions["5"]["majority"].answer == majority


def test_string_grouping_keeps_apart_what_math_verify_would_merge() -> None:
    texts = ["\\boxed{0.5}", "\\boxed{\\frac{1}{2}}", "\\boxed{1/2}", "\\boxed{0.5}",
             "\\boxed{0.5}"]
    with Grader() as grader:
        by_string = asyncio.run(build_record(
            Problem("p", "half?", "\\frac{1}{2}"), result_of(texts),
            RunConfig(prm="rule", search=SearchConfig(n=5)), grader))
        by_class = asyncio.run(build_record(
            Problem("p", "half?", "\\frac{1}{2}"), result_of(texts),
            RunConfig(prm="rule", search=SearchConfig(n=5, answer_grouping="equivalence")),
            grader))
    # "\\frac{1}{2}" and "1/2" normalise to one string, "0.5" to another
    assert [c.group for c in by_string.candidates] == [0, 1, 1, 0, 0]
    assert len({c.group for c in by_class.candidates}) == 1
    assert all(c.correct for c in by_string.candidates)


def test_billed_and_prefix_cached_prompt_tokens() -> None:
    from testtime.testing import fake_tokens, tree_policy

    tree = {"": ["A.\n\n", "B.\n\n"], "A.\n\n": ["\\boxed{3}"], "B.\n\n": ["\\boxed{4}"]}
    for method in ("best_of_n", "beam_search"):
        policy = tree_policy(tree)
        ctx = SearchContext(policy, RuleScorer(lambda *a: 0.5), PromptTemplate("plain"),
                            SearchConfig(method=method, n=4, beam_width=2), SamplingConfig())
        result = asyncio.run(get_method(method)(Problem("p", "What is 1 + 2?", "3"), ctx))
        c = result.compute
        head = sum(len(fake_tokens(m.content)) for m in policy.calls[0].messages)
        # An ideal prefix cache computes the chat head once: every later prompt continues a
        # step the policy generated itself. Billed, every sample pays its whole prompt.
        assert c.prefill_tokens == head
        if method == "best_of_n":  # one request of 4 samples
            assert c.prompt_tokens == 4 * head
        else:  # 4 root samples, then 2 x 2 expansions re-billing a one-step path
            assert c.prompt_tokens == 4 * head + 4 * (head + 1)

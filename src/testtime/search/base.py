"""What every search method receives and returns.

A search method is an async function of one problem and a ``SearchContext``; it only talks to
the ``Policy`` and ``StepScorer`` protocols. Many problems run concurrently (one task each), and
the backends batch their requests, so a method awaits whole steps, never single sequences.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from testtime.policy.base import Policy
from testtime.prompts.base import PromptTemplate
from testtime.scoring.base import StepScorer
from testtime.search.compute import Compute, PrefixCache, spent  # noqa: F401  (re-exported)
from testtime.search.result_types import (  # noqa: F401  (re-exported)
    Candidate,
    NodeStatus,
    SearchResult,
    TreeNode,
)
from testtime.steps import completion_steps
from testtime.types import (
    PAPER_PATH_TOKENS,
    ChatMessage,
    Completion,
    GenerationRequest,
    Problem,
    SamplingParams,
    ScoreRequest,
    Step,
)

if TYPE_CHECKING:
    from testtime.grading import Grader

Semantics = Literal["paper", "sal"]
"""Whose search decisions to reproduce: ``paper`` (Liu et al. 2025's code,
``RyanLiu112/compute-optimal-tts``) or ``sal`` (``huggingface/search-and-learn``)."""
StopCriterion = Literal["beta", "dirichlet"]
"""Adaptive self-consistency's stopping rule (Aggarwal et al. 2023)."""
AnswerGrouping = Literal["string", "equivalence"]
"""How votes group answers: ``string`` (the paper's code: the normalised answer string, and a
path without an answer votes for the empty answer) or ``equivalence`` (Math-Verify classes;
paths without an answer abstain)."""
StepSplitterName = Literal["blank_lines", "min_length", "thinking"]
"""How text is split into steps (:mod:`testtime.step_splitters`)."""


@dataclass(frozen=True)
class SearchConfig:
    """Search settings, apart from engine settings and per-request sampling."""

    method: str = "best_of_n"
    """Registered search method name (``cot``, ``best_of_n``, ``beam_search``, ``dvts``,
    ``particle_filtering``, ``adaptive_sc``, ``deepconf``, ``rebase``, ``adaptive``)."""
    n: int = 4
    """Budget N: generations (Best-of-N samples; samples at a beam search's root; DVTS
    subtrees x M). Methods differ in how many final paths they return for it."""
    beam_width: int = 4
    """M for beam search and DVTS; ``n`` must be divisible by it."""
    max_depth: int = 40
    """Most steps in a path (the paper's ``tree_max_depth``; search-and-learn's iterations)."""
    max_step_tokens: int = 2048
    """Token limit of one step (step-level methods; the paper's ``max_new_tokens`` there)."""
    max_path_tokens: int = PAPER_PATH_TOKENS
    """Token limit of a whole path (a Best-of-N/CoT sample's ``max_new_tokens``)."""
    lookahead: int = 0
    """Greedy steps rolled out before scoring a candidate step (search-and-learn's DVTS)."""
    semantics: Semantics = "paper"
    """Whose decisions beam search, DVTS, Best-of-N and CoT reproduce (README, "Fidelity to
    the paper")."""
    answer_grouping: AnswerGrouping = "string"
    """How majority and vote rules group answers (:data:`AnswerGrouping`)."""
    filter_duplicates: bool = False
    """search-and-learn beam search only: drop active beams whose whole text repeats an
    earlier one (its recipes turn this on; its default is off)."""
    pf_temperature: float = 1.0
    """Particle filtering: softmax temperature of the resampling weights ``logit(score) / T``
    (Puri et al.'s default 1.0)."""
    pf_resample_finished: bool = False
    """Particle filtering: finished particles take part in resampling (the authors' run
    script); by default they are kept and only unfinished ones are resampled."""
    sc_threshold: float = 0.95
    """Adaptive self-consistency: stop once P(leading answer is the majority) reaches it
    (Aggarwal et al.'s 0.95)."""
    sc_criterion: StopCriterion = "beta"
    """Adaptive self-consistency: ``beta`` (the paper's default) or ``dirichlet``."""
    sc_round: int = 1
    """Adaptive self-consistency: samples drawn between checks (the paper checks after each)."""
    step_splitter: StepSplitterName = "blank_lines"
    """How text becomes steps for PRM scoring and the step searches
    (:mod:`testtime.step_splitters`): ``blank_lines`` (the paper), ``min_length``,
    ``thinking`` (long-CoT traces)."""
    step_min_chars: int = 400
    """``min_length`` / ``thinking`` splitters: a step shorter than this (characters) is
    merged with the next piece."""
    think_budget: int | None = None
    """R1-style models: tokens the thought may use; a sample still thinking there is
    continued by a second request with ``"\n</think>\n\n"`` appended (None: no budget)."""
    dc_warmup: int = 16
    """Online DeepConf: warm-up traces N_init that set the threshold (the paper's 16)."""
    dc_eta: float = 10.0
    """Online DeepConf: percent of warm-up traces kept; threshold = the (100 - eta)th
    percentile of their lowest group confidences (10: DeepConf-low, 90: DeepConf-high)."""
    dc_window: int = 2048
    """Online DeepConf: group-confidence window in tokens (the paper's 2048)."""
    dc_consensus: float = 0.95
    """Online DeepConf: stop sampling once the confidence-weighted vote's top answer holds
    this share of the vote weight (the paper's tau = 0.95)."""
    dc_round: int = 1
    """Online DeepConf: traces generated between consensus checks (the paper: 1)."""
    rebase_temperature: float = 0.2
    """REBASE: softmax temperature of the expansion weights ``exp(score / T)``."""

    def __post_init__(self) -> None:
        for name in ("n", "beam_width", "max_depth", "max_step_tokens", "max_path_tokens",
                     "sc_round", "step_min_chars", "dc_warmup", "dc_window", "dc_round"):
            if getattr(self, name) < 1:
                raise ValueError(f"search.{name} must be >= 1, got {getattr(self, name)}")
        if not self.pf_temperature > 0:
            raise ValueError(f"search.pf_temperature must be > 0, got {self.pf_temperature}")
        if self.step_splitter not in ("blank_lines", "min_length", "thinking"):
            raise ValueError("search.step_splitter must be blank_lines, min_length or "
                             f"thinking, got {self.step_splitter!r}")
        if self.think_budget is not None and self.think_budget < 1:
            raise ValueError(f"search.think_budget must be >= 1, got {self.think_budget}")
        if not 0 < self.dc_eta <= 100:
            raise ValueError(f"search.dc_eta must be in (0, 100], got {self.dc_eta}")
        if not 0 < self.dc_consensus <= 1:
            raise ValueError(f"search.dc_consensus must be in (0, 1], got {self.dc_consensus}")
        if not self.rebase_temperature > 0:
            raise ValueError(f"search.rebase_temperature must be > 0, got "
                             f"{self.rebase_temperature}")
        if not 0 < self.sc_threshold <= 1:
            raise ValueError(f"search.sc_threshold must be in (0, 1], got {self.sc_threshold}")
        if self.sc_criterion not in ("beta", "dirichlet"):
            raise ValueError(f"search.sc_criterion must be beta or dirichlet, got "
                             f"{self.sc_criterion!r}")
        if self.lookahead < 0:
            raise ValueError(f"search.lookahead must be >= 0, got {self.lookahead}")
        if self.semantics not in ("paper", "sal"):
            raise ValueError(f"search.semantics must be paper or sal, got {self.semantics!r}")
        if self.answer_grouping not in ("string", "equivalence"):
            raise ValueError("search.answer_grouping must be string or equivalence, got "
                             f"{self.answer_grouping!r}")
        if self.lookahead and not (self.semantics == "sal" and self.method == "dvts"):
            raise ValueError(
                "search.lookahead: only search-and-learn's DVTS scores look-ahead roll-outs "
                "(--semantics sal --method dvts); the paper's code has none, and "
                "search-and-learn's beam search generates them without using them")


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling settings applied to every policy request of a run."""

    temperature: float = 0.7
    """Sampling temperature (the paper's 0.7; DeepSeek-R1-Distill 0.6)."""
    top_p: float = 1.0
    """Nucleus mass (the paper's 1.0; DeepSeek-R1-Distill 0.95)."""
    seed: int = 0
    """Base seed; each problem and request derives its own from it."""
    greedy_cot: bool = True
    """CoT decodes greedily (the paper; DeepSeek-R1-Distill's CoT samples with the settings
    above, as its authors advise against greedy decoding)."""

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ValueError(f"sampling.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"sampling.top_p must be in (0, 1], got {self.top_p}")


@dataclass
class SearchContext:
    """Everything a method may use; it counts every call it makes in ``compute``."""

    policy: Policy
    scorer: StepScorer
    prompt: PromptTemplate
    search: SearchConfig
    sampling: SamplingConfig
    grader: Grader | None = None
    """Answer equivalence for methods that decide on agreement (adaptive solvers)."""

    async def answer_groups(self, problem: Problem, texts: Sequence[str]) -> list[int | None]:
        """Answer-group id of each solution text (equal ids: equivalent final answers; None:
        no answer). No reference answer is used."""
        from testtime.answers import group_answers

        if self.grader is None:
            raise RuntimeError("this search method compares answers and needs a grader in "
                               "its SearchContext")
        return (await group_answers(texts, self.grader))[1]

    def messages(self, problem: Problem) -> tuple[ChatMessage, ...]:
        return self.prompt.messages(problem.problem)

    def params(self, *, n: int, max_tokens: int, stop: Sequence[str] = (), seed: int,
               greedy: bool = False) -> SamplingParams:
        return SamplingParams(
            n=n,
            temperature=0.0 if greedy else self.sampling.temperature,
            top_p=1.0 if greedy else self.sampling.top_p,
            max_tokens=max_tokens,
            stop=tuple(stop),
            seed=seed,
        )

    def request(self, problem: Problem, prefix: str, params: SamplingParams) -> GenerationRequest:
        """A request continuing ``prefix``, rendered as the run's semantics does (the paper's
        code renders the partial answer as an assistant message)."""
        rendering = "assistant_message" if self.search.semantics == "paper" else \
            "generation_prompt"
        return GenerationRequest(self.messages(problem), prefix, params, rendering)

    async def generate(
        self, requests: Sequence[GenerationRequest], compute: Compute
    ) -> list[list[Completion]]:
        """The policy's completions, every call counted in ``compute``; with a thinking
        budget, full samples run as thought + answer (:mod:`testtime.search.think_budget`;
        a sample is one generation, both of its requests are billed)."""
        if self.search.think_budget is None:
            return await self._counted(requests, compute, True)
        from testtime.search.think_budget import generate_with_budget

        calls = 0

        async def phase(rs: Sequence[GenerationRequest]) -> list[list[Completion]]:
            nonlocal calls
            calls += 1
            return await self._counted(rs, compute, calls == 1)

        return await generate_with_budget(requests, self.search.think_budget, phase)

    async def _counted(self, requests: Sequence[GenerationRequest], compute: Compute,
                       new_samples: bool) -> list[list[Completion]]:
        outs = await self.policy.generate(requests)
        delta = Compute(policy_calls=len(requests))
        for req, group in zip(requests, outs, strict=True):
            delta.generations += len(group) if new_samples else 0
            delta.prompt_tokens += sum(c.prompt_tokens for c in group)
            delta.completion_tokens += sum(c.completion_tokens for c in group)
            if group:
                delta.prefill_tokens += compute.cache.new_tokens(
                    req.prefix, group[0].prompt_tokens, self.policy.count_tokens)
            for c in group:
                compute.cache.generated(req.prefix, c.text)
        spent(delta, compute)
        return outs

    async def score(self, requests: Sequence[ScoreRequest], compute: Compute) -> list[list[float]]:
        """One score per step per request; the scorer's usage is added to ``compute``.

        Raises ``ValueError`` naming the scorer when it breaks its contract (a wrong number of
        lists or of scores). Non-finite scores are kept (as NaN) and counted: every ranking and
        selection rule treats them as the lowest score.
        """
        if not requests:
            return []
        result = (await self.scorer.score(requests)).check(requests, self.scorer.name)
        delta = Compute(scorer_calls=len(requests), scored_tokens=result.scored_tokens,
                        scored_cached_tokens=result.cached_tokens,
                        prm_truncated_paths=sum(1 for u in result.unread if u),
                        prm_unread_steps=sum(result.unread))
        out = []
        for row in result.scores:
            clean = [float(x) if math.isfinite(x) else math.nan for x in row]
            delta.nonfinite_scores += sum(math.isnan(x) for x in clean)
            out.append(clean)
        spent(delta, compute)
        return out

    def steps_of(self, completion: Completion) -> list[Step]:
        """The completion's steps under the run's step splitter."""
        from testtime.step_splitters import get_splitter

        splitter = get_splitter(self.search.step_splitter, self.search.step_min_chars)
        return completion_steps(completion, count_tokens=self.policy.count_tokens,
                                splitter=splitter)


def problem_seed(base: int, problem_id: str) -> int:
    """A per-problem seed that does not depend on which other problems run."""
    import hashlib

    digest = hashlib.sha256(f"{base}:{problem_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


SearchFn = Callable[[Problem, SearchContext], Awaitable[SearchResult]]

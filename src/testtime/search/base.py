"""What every search method receives and returns.

A search method is an async function of one problem and a ``SearchContext``; it only talks to
the ``Policy`` and ``StepScorer`` protocols. Many problems run concurrently (one task each), and
the backends batch their requests, so a method awaits whole steps, never single sequences.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from testtime.policy.base import Policy
from testtime.prompts.base import PromptTemplate
from testtime.scoring.base import StepScorer
from testtime.steps import completion_steps
from testtime.types import (
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

NodeStatus = Literal["kept", "pruned", "finished", "active", "lookahead"]
"""``lookahead``: a greedy roll-out step used only to score its parent, never part of a path."""


@dataclass(frozen=True)
class SearchConfig:
    """Search settings, apart from engine settings and per-request sampling."""

    method: str = "best_of_n"
    """Registered search method name (``cot``, ``best_of_n``, ``beam_search``, ``dvts``)."""
    n: int = 4
    """Budget: number of final paths (generations) every method returns."""
    beam_width: int = 4
    """M for beam search and DVTS; ``n`` must be divisible by it."""
    max_depth: int = 40
    """Most steps in a path."""
    max_step_tokens: int = 2048
    """Token limit of one step (step-level methods)."""
    max_path_tokens: int = 8192
    """Token limit of a whole path."""
    lookahead: int = 0
    """Greedy steps rolled out before scoring a candidate step (Snell et al.)."""

    def __post_init__(self) -> None:
        for name in ("n", "beam_width", "max_depth", "max_step_tokens", "max_path_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"search.{name} must be >= 1, got {getattr(self, name)}")
        if self.lookahead < 0:
            raise ValueError(f"search.lookahead must be >= 0, got {self.lookahead}")


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling settings applied to every policy request of a run."""

    temperature: float = 0.8
    """Sampling temperature (CoT is always greedy)."""
    top_p: float = 1.0
    """Nucleus mass."""
    seed: int = 0
    """Base seed; each problem and request derives its own from it."""

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ValueError(f"sampling.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"sampling.top_p must be in (0, 1], got {self.top_p}")


@dataclass
class Compute:
    """The same accounting for every method (sums over the whole search)."""

    policy_calls: int = 0
    """Generation requests sent to the policy (one per prompt, whatever its n)."""
    generations: int = 0
    """Sequences sampled (completions returned), lookahead roll-outs included."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    scored_tokens: int = 0
    """Tokens processed by the step scorer (0 for model-free scorers)."""
    scorer_calls: int = 0
    nonfinite_scores: int = 0
    """Step scores the scorer returned as NaN or infinite (they rank lowest; see
    :func:`testtime.selection.finite`)."""

    def add(self, other: Compute) -> None:
        for k, v in vars(other).items():
            setattr(self, k, getattr(self, k) + v)


@dataclass
class TreeNode:
    """One step in a search tree; ``parent`` is -1 for first steps."""

    id: int
    parent: int
    depth: int
    step: Step
    score: float | None = None
    status: NodeStatus = "active"


@dataclass
class Candidate:
    """A final path: its steps, their scores and how it ended."""

    steps: list[Step]
    scores: list[float]
    finish_reason: str
    node_ids: list[int] = field(default_factory=list)
    origin: int = 0
    """Independent unit the path came from (DVTS subtree; sample index for Best-of-N); the
    record's ``CandidateRecord.origin``. (``CandidateRecord.group`` is the answer class.)"""

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.steps)


@dataclass
class SearchResult:
    candidates: list[Candidate]
    compute: Compute
    tree: list[TreeNode] = field(default_factory=list)
    independent_prefixes: bool = False
    """True when any prefix of ``candidates`` is a valid smaller-budget run (Best-of-N, DVTS)."""
    prefix_unit: int = 1
    """Prefixes are valid only at multiples of this many candidates (DVTS: the beam width)."""
    info: dict[str, Any] = field(default_factory=dict)
    """What the method decided, stored in the record's ``info`` (JSON-serialisable)."""
    extra_predictions: dict[str, str] = field(default_factory=dict)
    """Extra prediction names -> the selection rule whose pick they repeat (the adaptive
    solver's own pick is ``adaptive`` -> its strategy's rule)."""


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
               greedy: bool = False, end_at_boxed_step: bool = False) -> SamplingParams:
        return SamplingParams(
            n=n,
            temperature=0.0 if greedy else self.sampling.temperature,
            top_p=1.0 if greedy else self.sampling.top_p,
            max_tokens=max_tokens,
            stop=tuple(stop),
            seed=seed,
            end_at_boxed_step=end_at_boxed_step,
        )

    async def generate(
        self, requests: Sequence[GenerationRequest], compute: Compute
    ) -> list[list[Completion]]:
        outs = await self.policy.generate(requests)
        compute.policy_calls += len(requests)
        for group in outs:
            compute.generations += len(group)
            compute.prompt_tokens += sum(c.prompt_tokens for c in group)
            compute.completion_tokens += sum(c.completion_tokens for c in group)
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
        compute.scorer_calls += len(requests)
        compute.scored_tokens += result.scored_tokens
        out = []
        for row in result.scores:
            clean = [float(x) if math.isfinite(x) else math.nan for x in row]
            compute.nonfinite_scores += sum(math.isnan(x) for x in clean)
            out.append(clean)
        return out

    def steps_of(self, completion: Completion) -> list[Step]:
        return completion_steps(completion, count_tokens=self.policy.count_tokens)


def problem_seed(base: int, problem_id: str) -> int:
    """A per-problem seed that does not depend on which other problems run."""
    import hashlib

    digest = hashlib.sha256(f"{base}:{problem_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


SearchFn = Callable[[Problem, SearchContext], Awaitable[SearchResult]]

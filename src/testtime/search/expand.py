"""What every step-level search shares: step requests, seeds, steps and the search tree.

A *step* is the text up to and including a blank line: a step request stops at ``"\\n\\n"``
(kept in the text) with ``max_tokens = min(max_step_tokens, tokens left in the path)``, and
each sampled continuation becomes exactly one step and one tree node, so the tree's token
total equals the policy's reported completion tokens (samples a search discards are nodes too,
status ``dropped``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from testtime.search.base import (
    Compute,
    NodeStatus,
    SearchContext,
    TreeNode,
    problem_seed,
)
from testtime.step_splitters import THINK_END
from testtime.types import BOXED, STEP_DELIMITER, Completion, GenerationRequest, Problem, Step

#: Stop strings of every step-level request.
STEP_STOP = (STEP_DELIMITER,)


def request_seed(ctx: SearchContext, problem: Problem, *parts: int | str) -> int:
    """Seed of one request, from the problem's seed and its place in the search.

    ``parts`` name the place (subtree, node, attempt, ...), never anything about other
    problems or the budget, so a problem's search is the same whichever problems run beside
    it, and a DVTS subtree draws the same seeds whatever the number of subtrees.
    """
    base = problem_seed(ctx.sampling.seed, problem.id)
    return problem_seed(base, "/".join(str(p) for p in parts))


@dataclass
class SearchState:
    """One problem's search: what it has spent and every node it has made."""

    problem: Problem
    ctx: SearchContext
    compute: Compute = field(default_factory=Compute)
    tree: list[TreeNode] = field(default_factory=list)

    def add_node(self, parent: int, depth: int, step: Step, status: NodeStatus) -> int:
        node = TreeNode(len(self.tree), parent, depth, step, None, status)
        self.tree.append(node)
        return node.id

    def set_status(self, node: int, status: NodeStatus) -> None:
        if node >= 0:
            self.tree[node].status = status

    def step_request(self, prefix: str, used_tokens: int, n: int, seed: int,
                     *, last: bool = False) -> GenerationRequest:
        """``n`` next steps after ``prefix`` (a path of ``used_tokens`` tokens); ``last``
        drops the stop string (search-and-learn's final iteration runs to EOS)."""
        ctx = self.ctx
        stop = STEP_STOP + ((THINK_END,) if ctx.search.step_splitter == "thinking" else ())
        params = ctx.params(n=n, max_tokens=step_tokens(ctx, used_tokens),
                            stop=() if last else stop, seed=seed)
        return ctx.request(self.problem, prefix, params)

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        """The steps of ``requests``; under the ``min_length`` and ``thinking`` splitters a
        step that stopped at a blank line shorter than ``step_min_chars`` (no ``\\boxed``,
        no ``</think>``) is continued, one request per row and round, until it is long
        enough or ends (the continuations are billed, not counted as new generations). A step
        search cannot see the next paragraph before it is generated, so ``thinking`` steps
        end at a blank line past the minimum length or at ``</think>``, not at a marker."""
        outs = await self.ctx.generate(requests, self.compute)
        if self.ctx.search.step_splitter == "blank_lines":
            return outs
        return await self._grow(requests, [list(g) for g in outs])

    async def _grow(self, requests: Sequence[GenerationRequest],
                    outs: list[list[Completion]]) -> list[list[Completion]]:
        from testtime.search.think_budget import join

        least = self.ctx.search.step_min_chars
        while True:
            todo = [(i, j) for i, r in enumerate(requests) if STEP_DELIMITER in r.params.stop
                    for j, c in enumerate(outs[i])
                    if c.finish_reason == "stop" and len(c.text) < least and BOXED not in c.text
                    and THINK_END not in c.text
                    and r.params.max_tokens > c.completion_tokens]
            if not todo:
                return outs
            more = [replace(requests[i], prefix=requests[i].prefix + outs[i][j].text,
                            params=replace(requests[i].params, n=1, seed=row_seed(
                                requests[i].params.seed, j, outs[i][j].completion_tokens),
                                max_tokens=requests[i].params.max_tokens
                                - outs[i][j].completion_tokens))
                    for i, j in todo]
            got = await self.ctx._counted(more, self.compute, False)
            for (i, j), [c] in zip(todo, got, strict=True):
                outs[i][j] = join(outs[i][j], c, False)

    async def last_scores(self, paths: Sequence[Sequence[Step]]) -> list[list[float]]:
        """Every step score of each path (one scorer call for all of them)."""
        from testtime.types import ScoreRequest

        requests = [ScoreRequest(self.problem.problem, tuple(p)) for p in paths]
        return await self.ctx.score(requests, self.compute)


def as_step(ctx: SearchContext, completion: Completion, text: str | None = None) -> Step:
    """The one step a stop-at-blank-line completion is, carrying all of its tokens; ``text``
    replaces its text (the paper's code stores the step stripped, plus one blank line)."""
    steps = ctx.steps_of(completion)
    lps = [s.logprob_sum for s in steps if s.logprob_sum is not None]
    ces = [s.certainty_sum for s in steps if s.certainty_sum is not None]
    return Step(
        text=completion.text if text is None else text,
        num_tokens=completion.completion_tokens,
        logprob_sum=sum(lps) if lps else None,
        certainty_sum=sum(ces) if ces else None,
        truncated=completion.finish_reason == "length",
        token_confidences=tuple(x for s in steps for x in s.token_confidences),
    )


@dataclass
class Path:
    """A partial or final path of a search that grows paths one step at a time (particle
    filtering's particles, REBASE's nodes): its steps, their scores, its tree nodes."""

    steps: list[Step] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    nodes: list[int] = field(default_factory=list)
    tokens: int = 0
    end: str = ""
    """Why it finished (``boxed``, ``eos``, ``depth``, ``length``); empty while it runs."""

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.steps)

    def copy(self) -> Path:
        return Path(list(self.steps), list(self.scores), list(self.nodes), self.tokens,
                    self.end)


def path_end(ctx: SearchContext, path: Path, finish_reason: str, depth: int) -> str:
    """Why ``path``, just grown by a step at ``depth``, ends: its step holds the boxed answer,
    the policy ended it, it reached the path's token limit or the last depth; "" if not."""
    if BOXED in path.steps[-1].text:
        return "boxed"
    if finish_reason == "eos":
        return "eos"
    if finish_reason == "length" or path.tokens >= ctx.search.max_path_tokens:
        return "length"
    return "depth" if depth + 1 >= ctx.search.max_depth else ""


def row_seed(seed: int | None, row: int, done: int) -> int | None:
    """Seed of the continuation of row ``row`` after ``done`` tokens (None stays None)."""
    return None if seed is None else problem_seed(seed, f"grow/{row}/{done}")


def step_tokens(ctx: SearchContext, used: int) -> int:
    """``max_tokens`` of the next step of a path that has used ``used`` tokens (>= 1)."""
    return max(1, min(ctx.search.max_step_tokens, ctx.search.max_path_tokens - used))

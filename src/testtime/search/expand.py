"""Step-level machinery shared by beam search and DVTS: expand, look ahead, score, terminate.

A *step* is the text up to and including a blank line: every expansion is one request per
partial path with ``stop=("\\n\\n",)`` and ``max_tokens = min(max_step_tokens, tokens left in
the path)``, and each sampled continuation becomes exactly one step (one tree node), so the
tree's token total equals the policy's reported completion tokens.

A path ends (``end_reason``) at a step containing ``\\boxed`` ("boxed"), at the model's EOS
("eos"), at a token limit ("length": the step was cut by its or the path's limit, or the path
has no tokens left) or at ``max_depth`` steps ("depth"). "boxed" and "eos" are *natural* ends;
the others are cut-offs. Every call here handles all paths of one problem at once: one
``ctx.generate`` per expansion (and per lookahead round), one ``ctx.score`` per depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from testtime.search.base import (
    Compute,
    NodeStatus,
    SearchContext,
    TreeNode,
    problem_seed,
)
from testtime.selection import finite
from testtime.types import (
    BOXED,
    STEP_DELIMITER,
    Completion,
    FinishReason,
    GenerationRequest,
    Problem,
    ScoreRequest,
    Step,
)

#: Stop strings of every step-level request.
STEP_STOP = (STEP_DELIMITER,)
#: End reasons of paths that completed on their own (the rest were cut off by a limit).
NATURAL_ENDS = frozenset({"boxed", "eos"})


def request_seed(ctx: SearchContext, problem: Problem, *parts: int | str) -> int:
    """Seed of one request, from the problem's seed and its place in the search.

    ``parts`` name the place (subtree, depth, beam, ...), never anything about other problems
    or the budget, so a problem's search is the same whichever problems run beside it, and a
    DVTS subtree draws the same seeds whatever the number of subtrees.
    """
    base = problem_seed(ctx.sampling.seed, problem.id)
    return problem_seed(base, "/".join(str(p) for p in parts))


@dataclass
class Beam:
    """A (partial or ended) path: its steps, their scores and its tree nodes."""

    steps: list[Step]
    scores: list[float]
    node_ids: list[int]
    tokens: int
    """Completion tokens of the path's own steps (lookahead excluded)."""
    end: str | None = None
    """Why the path ended (see module doc); None while it can still be expanded."""
    rank: float = 0.0
    """What the search ranks it by: the last step's score, or with lookahead the score of
    the last rolled-out step."""
    lookahead: list[Step] = field(default_factory=list)
    lookahead_ids: list[int] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.steps)

    @property
    def natural(self) -> bool:
        return self.end in NATURAL_ENDS


@dataclass
class Expansion:
    """Ask for ``n`` next steps of ``parent`` (None = the empty path)."""

    parent: Beam | None
    n: int
    seed: int


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

    def set_status(self, beam: Beam, status: NodeStatus) -> None:
        self.tree[beam.node_ids[-1]].status = status


def as_step(ctx: SearchContext, completion: Completion) -> Step:
    """The one step a stop-at-blank-line completion is, carrying all of its tokens.

    ``steps_of`` may split a completion in two (runs of newlines, a stop string inside a
    longer token); a step-level search asked for one step, so the pieces are merged back.
    """
    steps = ctx.steps_of(completion)
    if len(steps) == 1:
        return steps[0]
    lps = [s.logprob_sum for s in steps if s.logprob_sum is not None]
    ces = [s.certainty_sum for s in steps if s.certainty_sum is not None]
    return Step(
        text=completion.text,
        num_tokens=completion.completion_tokens,
        logprob_sum=sum(lps) if lps else None,
        certainty_sum=sum(ces) if ces else None,
        truncated=completion.finish_reason == "length",
    )


def end_reason(step: Step, finish: FinishReason, depth: int, tokens: int,
               ctx: SearchContext) -> str | None:
    """Why a path whose newest step is ``step`` (its ``depth``-th, 1-based) ends, or None."""
    if BOXED in step.text:
        return "boxed"
    if finish == "eos":
        return "eos"
    if finish == "length" or tokens >= ctx.search.max_path_tokens:
        return "length"
    if depth >= ctx.search.max_depth:
        return "depth"
    return None


def step_tokens(ctx: SearchContext, used: int) -> int:
    """``max_tokens`` of the next step of a path that has used ``used`` tokens (>= 1)."""
    return max(1, min(ctx.search.max_step_tokens, ctx.search.max_path_tokens - used))


async def expand(state: SearchState, expansions: Sequence[Expansion]) -> list[list[Beam]]:
    """Sample the next steps of many paths in one policy call; children come back "active"."""
    ctx = state.ctx
    messages = ctx.messages(state.problem)
    requests = [
        GenerationRequest(
            messages,
            e.parent.text if e.parent else "",
            ctx.params(n=e.n, max_tokens=step_tokens(ctx, e.parent.tokens if e.parent else 0),
                       stop=STEP_STOP, seed=e.seed),
        )
        for e in expansions
    ]
    outs = await ctx.generate(requests, state.compute)
    children: list[list[Beam]] = []
    for e, group in zip(expansions, outs, strict=True):
        base = e.parent or Beam([], [], [], 0)
        kids = []
        for c in group:
            step = as_step(ctx, c)
            depth = len(base.steps)
            node = state.add_node(base.node_ids[-1] if base.node_ids else -1, depth, step,
                                  "active")
            tokens = base.tokens + step.num_tokens
            kids.append(Beam(
                steps=[*base.steps, step], scores=[*base.scores, 0.0],
                node_ids=[*base.node_ids, node], tokens=tokens,
                end=end_reason(step, c.finish_reason, depth + 1, tokens, ctx),
            ))
        children.append(kids)
    return children


async def look_ahead(state: SearchState, beams: Sequence[Beam], k: int,
                     seed_of: Sequence[int]) -> None:
    """Roll out up to ``k`` greedy steps after each partial beam (Snell et al.).

    One policy call per round for all beams still rolling. A roll-out stops early where a
    path would end (boxed, EOS, token or depth limit). Roll-out steps become tree nodes with
    status "lookahead" chained below the beam's newest node; they are never part of the path,
    but their tokens are spent like any other (``state.compute`` counts them).
    """
    ctx = state.ctx
    messages = ctx.messages(state.problem)
    rolling = [i for i, b in enumerate(beams) if b.end is None]
    for r in range(k):
        rolling = [i for i in rolling if len(beams[i].steps) + r < ctx.search.max_depth]
        if not rolling:
            return
        requests = []
        for i in rolling:
            b = beams[i]
            used = b.tokens + sum(s.num_tokens for s in b.lookahead)
            requests.append(GenerationRequest(
                messages, b.text + "".join(s.text for s in b.lookahead),
                ctx.params(n=1, max_tokens=step_tokens(ctx, used), stop=STEP_STOP,
                           seed=problem_seed(seed_of[i], f"lookahead/{r}"), greedy=True),
            ))
        outs = await ctx.generate(requests, state.compute)
        still = []
        for i, [c] in zip(rolling, outs, strict=True):
            b = beams[i]
            step = as_step(ctx, c)
            parent = (b.lookahead_ids or b.node_ids)[-1]
            depth = len(b.steps) + len(b.lookahead)
            b.lookahead.append(step)
            b.lookahead_ids.append(state.add_node(parent, depth, step, "lookahead"))
            used = b.tokens + sum(s.num_tokens for s in b.lookahead)
            if end_reason(step, c.finish_reason, depth + 1, used, ctx) is None:
                still.append(i)
        rolling = still


async def score(state: SearchState, beams: Sequence[Beam]) -> None:
    """Score every beam's steps (plus its lookahead) in one scorer call.

    A beam's ``scores`` become the scorer's scores of its whole path (as search-and-learn
    keeps ``all_scores``), its newest node gets its own step's score, lookahead nodes theirs,
    and ``rank`` is the score of the last scored step: the newest step's own score, or the
    last lookahead step's.
    """
    requests = [ScoreRequest(state.problem.problem, tuple(b.steps + b.lookahead)) for b in beams]
    results = await state.ctx.score(requests, state.compute)
    for b, req, sc in zip(beams, requests, results, strict=True):
        if len(sc) != len(req.steps):
            raise ValueError(
                f"scorer {state.ctx.scorer.name!r} returned {len(sc)} scores for a path of "
                f"{len(req.steps)} steps (problem {state.problem.id})"
            )
        own = len(b.steps)
        b.scores = list(sc[:own])
        b.rank = sc[-1]
        state.tree[b.node_ids[-1]].score = sc[own - 1]
        for node, s in zip(b.lookahead_ids, sc[own:], strict=True):
            state.tree[node].score = s


def ranked(beams: Sequence[Beam]) -> list[Beam]:
    """Beams by ``rank``, best first; equal ranks keep their order (the first wins), and a
    non-finite rank is the lowest."""
    return sorted(beams, key=lambda b: -finite(b.rank))


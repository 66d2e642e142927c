"""The paper's tree search, decision for decision: ``SearchTree.beam_search`` of
compute-optimal-tts (``src/reason/guided_search/tree.py``) with its environment's expansion
rules (``src/envs/base_env.py``, ``src/envs/MATH/env.py``). Beam search and DVTS are both it:

* a tree of width N and beam size K = N/M samples N steps at the root and M at every kept
  node (``max_actions // beam_size``);
* children: each sample is stripped and given one blank line (``raw.strip() + "\\n\\n"``); a
  sample cut by the token limit, or repeating the text of an earlier sibling, is dropped; a
  sample that did not end on the blank line ended at EOS. A node whose samples are all
  dropped samples again, up to three attempts, then ends (``no_step``); the root gets one more
  attempt that keeps every sample (duplicates collapse into the first, with the last's flags);
* a child's value is the PRM's score of its own (last) step given the path; ties keep the
  child with the higher parent value, then heap order (reproduced with the same heap calls);
* each round scans the kept nodes best first: a node that has ended joins the end nodes (the
  scan stops once K have), the others offer their best ``k = K - ends`` children; the best
  ``k`` offers (``k`` as the last unended node left it) are kept and advanced: a kept node
  whose step holds ``\\boxed``, ended at EOS or reached ``max_depth`` steps ends (it joins the
  end nodes in the next scan), the others are expanded. Ended children compete for the slots;
* the tree stops once K paths have ended, or after ``max_depth + 1`` rounds, and returns its
  end nodes (at most K) in the order they ended, each with its reward history (the values of
  its steps).

Not from the paper's code (it has no limit but the model's context): a path that has used
``max_path_tokens`` ends (``length``). Many trees (DVTS subtrees, and through the backends'
batchers many problems) advance in lockstep, one policy call per expansion attempt and one
scorer call per round for all of them.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

from testtime.search.base import Candidate
from testtime.search.expand import SearchState, as_step, request_seed
from testtime.selection import finite
from testtime.types import BOXED, STEP_DELIMITER, Completion, Step

#: Expansion attempts of a node other than the root (``base_env.py``: ``max_try``).
NODE_ATTEMPTS = 3


@dataclass(eq=False)
class Node:
    """A node of the tree: the path to it, its value and, once expanded, its children."""

    tree_id: int
    """Its node in the record's tree (-1: the root)."""
    steps: list[Step]
    values: list[float]
    """Reward history: the value of each step of the path when it was a child."""
    tokens: int = 0
    """Completion tokens of the path's own steps."""
    value: float = 0.0
    parent_value: float = 0.0
    eos_end: bool = False
    """Its step ended at EOS (not on the blank line)."""
    ended: bool = False
    end: str = ""
    """Why it ended: ``boxed``, ``eos``, ``depth``, ``length`` or ``no_step``."""
    children: list[Node] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.steps)

    def __lt__(self, other: Node) -> bool:
        # The paper's LanguageNode compares initial values: fully tied heap entries fall back
        # to this, which is False both ways, so their order is the heap's (reproduced).
        return finite(self.value) < finite(other.value)


class Tree:
    """One ``SearchTree.beam_search``: width ``width`` (samples at the root), beam size
    ``keep``; ``index`` names it in seeds and in ``Candidate.origin``."""

    def __init__(self, index: int, width: int, keep: int) -> None:
        if keep < 1 or width < keep or width % keep:
            raise ValueError(f"tree width {width} must be a positive multiple of {keep}")
        self.index = index
        self.width = width
        self.keep = keep
        self.per_node = width // keep
        self.root = Node(-1, [], [])
        self.end_nodes: list[Node] = []
        self.top: list[tuple[float, float, float, Node]] = [(-0.0, -0.0, -0.0, self.root)]
        self.k = keep
        self.done = False

    def select(self) -> list[Node]:
        """One round's scan; returns the nodes kept this round (to advance)."""
        heap: list[tuple[float, float, float, Node]] = []
        for *_, node in self.top:
            if node.ended:
                self.end_nodes.append(node)
                if len(self.end_nodes) == self.keep:
                    break
            elif len(self.end_nodes) < self.keep:
                self.k = self.keep - len(self.end_nodes)
                best = sorted(node.children, key=lambda c: finite(c.value), reverse=True)
                for c in best[: self.k]:
                    v = finite(c.value)
                    heapq.heappush(heap, (-v, -v, -finite(c.parent_value), c))
        self.top = heapq.nsmallest(self.k, heap)
        return [node for *_, node in self.top]

    def finished(self) -> bool:
        return len(self.end_nodes) == self.keep


def end_of(state: SearchState, node: Node) -> str:
    """Why a kept node ends now (``""``: it is expanded)."""
    search = state.ctx.search
    if BOXED in node.steps[-1].text:
        return "boxed"
    if node.eos_end:
        return "eos"
    if len(node.steps) >= search.max_depth:
        return "depth"
    if node.tokens >= search.max_path_tokens:
        return "length"
    return ""


def _children(state: SearchState, parent: Node, group: Sequence[Completion],
              force: bool) -> list[Node]:
    """The kept children of one expansion attempt (see the module docstring); every sample
    becomes a tree node, the dropped ones with status ``dropped``."""
    kids: dict[str, Node] = {}
    depth = len(parent.steps)
    for c in group:
        act = c.text.strip() + STEP_DELIMITER
        step = as_step(state.ctx, c, act)
        node_id = state.add_node(parent.tree_id, depth, step, "active")
        eos_end = not c.text.endswith(STEP_DELIMITER)
        if act in kids and force:  # a dict keyed by the step: first place, last flags
            state.set_status(node_id, "dropped")
            kids[act].eos_end = eos_end
        elif force or (act not in kids and c.finish_reason != "length"):
            kids[act] = Node(node_id, [*parent.steps, step], list(parent.values),
                             parent.tokens + step.num_tokens, eos_end=eos_end)
        else:
            state.set_status(node_id, "dropped")
    return list(kids.values())


async def expand(state: SearchState, trees: Sequence[Tree],
                 nodes: Sequence[Node]) -> None:
    """Expand ``nodes`` (each of the tree at the same position) with their trees' sample
    counts, retrying as the module docstring says, then score every new child at once."""
    owner = dict(zip(map(id, nodes), trees, strict=True))
    pending = [(n, 0) for n in nodes]
    while pending:
        requests = []
        for node, attempt in pending:
            tree = owner[id(node)]
            n = tree.width if node is tree.root else tree.per_node
            seed = request_seed(state.ctx, state.problem, tree.index, node.tree_id, attempt)
            requests.append(state.step_request(node.text, node.tokens, n, seed))
        groups = await state.generate(requests)
        retry = []
        for (node, attempt), group in zip(pending, groups, strict=True):
            is_root = node is owner[id(node)].root
            node.children = _children(state, node, group, force=is_root and attempt == 1)
            if node.children:
                continue
            if (is_root and attempt == 0) or (not is_root and attempt + 1 < NODE_ATTEMPTS):
                retry.append((node, attempt + 1))
            else:  # the root's forced attempt always keeps something
                node.ended, node.end = True, "no_step"
        pending = retry
    kids = [c for node in nodes for c in node.children]
    scores = await state.last_scores([c.steps for c in kids])
    parents = {id(c): node for node in nodes for c in node.children}
    for c, row in zip(kids, scores, strict=True):
        c.value = row[-1]
        c.values = [*c.values, c.value]
        c.parent_value = parents[id(c)].value
        state.tree[c.tree_id].score = c.value


async def run_trees(state: SearchState, trees: Sequence[Tree]) -> None:
    """Run every tree to its end, in lockstep rounds."""
    await expand(state, trees, [t.root for t in trees])
    for _ in range(state.ctx.search.max_depth + 1):
        live = [t for t in trees if not t.done]
        if not live:
            return
        grow_trees: list[Tree] = []
        grow: list[Node] = []
        for t in live:
            kept = t.select()
            for node in kept:
                state.set_status(node.tree_id, "kept")
                node.end = end_of(state, node)
                if node.end:
                    node.ended = True
                else:
                    grow_trees.append(t)
                    grow.append(node)
        if grow:
            await expand(state, grow_trees, grow)
        for t in live:
            t.done = t.finished()


def candidates(state: SearchState, tree: Tree) -> list[Candidate]:
    """A tree's end nodes in the order they ended; the other children were pruned."""
    for node in tree.end_nodes:
        state.set_status(node.tree_id, "finished")
    for t in state.tree:
        if t.status == "active":
            t.status = "pruned"
    return [Candidate(list(n.steps), list(n.values), n.end,
                      [s for s in _ids(state, n)], origin=tree.index)
            for n in tree.end_nodes]


def _ids(state: SearchState, node: Node) -> list[int]:
    out, i = [], node.tree_id
    while i >= 0:
        out.append(i)
        i = state.tree[i].parent
    return out[::-1]

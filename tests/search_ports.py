"""Ports of the reference implementations' search loops, used as oracles by the fidelity
tests (never imported by ``testtime``): compute-optimal-tts' ``SearchTree.beam_search`` with
its environment's expansion rules, and search-and-learn's ``beam_search`` and ``dvts``.

Each is written as sequential, single-problem code over two callbacks, so they share nothing
with testtime's batched implementation but the decisions they are meant to make:

* ``gen(prefix, n, last=False) -> [(raw_text, finish)]``: the next ``n`` samples after the
  partial answer ``prefix`` (finish: ``"stop"`` on the blank line, ``"eos"``, ``"length"``;
  ``last``: without the blank-line stop);
* ``score(steps) -> [float]``: the PRM's score of every step of a path.
"""

from __future__ import annotations

import copy
import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

Gen = Callable[..., list[tuple[str, str]]]
Score = Callable[[list[str]], list[float]]
SEP = "\n\n"


# --- compute-optimal-tts (the paper) -------------------------------------------------------


@dataclass(eq=False)
class SeedNode:
    acts: list[str]
    values: list[float]
    value: float = 0.0
    parent_value: float = 0.0
    eos_end: bool = False
    terminated: bool = False
    end: str = ""
    children: list[SeedNode] = field(default_factory=list)

    def __lt__(self, other: SeedNode) -> bool:  # LanguageNode compares initial values
        return self.value < other.value


def _make_children(node: SeedNode, raws: list[tuple[str, str]], force: bool) -> list[SeedNode]:
    kids: dict[str, SeedNode] = {}
    for raw, finish in raws:
        act = raw.strip() + SEP
        eos_end = not raw.endswith(SEP)
        if force:
            if act in kids:
                kids[act].eos_end = eos_end
            else:
                kids[act] = SeedNode([*node.acts, act], list(node.values), eos_end=eos_end)
        elif act not in kids and finish != "length":  # vLLM's "stop": delimiter or EOS
            kids[act] = SeedNode([*node.acts, act], list(node.values), eos_end=eos_end)
    return list(kids.values())


def _expand(node: SeedNode, n: int, is_root: bool, gen: Gen, score: Score) -> None:
    kids: list[SeedNode] = []
    for attempt in range(1 if is_root else 3):
        kids = _make_children(node, gen("".join(node.acts), n), force=False)
        if kids:
            break
    if not kids:
        if not is_root:
            node.terminated, node.end = True, "no_step"
            return
        kids = _make_children(node, gen("".join(node.acts), n), force=True)
    for c in kids:
        c.value = score(c.acts)[-1]
        c.values = [*c.values, c.value]
        c.parent_value = node.value
    node.children = kids


def seed_beam_search(gen: Gen, score: Score, width: int, beam_size: int,
                     max_depth: int) -> list[SeedNode]:
    """``SearchTree.beam_search`` (non-``direct_io``): end nodes in the order they ended."""
    per_node = width // beam_size
    root = SeedNode([], [])
    _expand(root, width, True, gen, score)
    end_nodes: list[SeedNode] = []
    top: list[tuple[float, float, float, SeedNode]] = [(-0.0, -0.0, -0.0, root)]
    k = beam_size
    for _ in range(max_depth + 1):
        cur, heap = top, []
        for _, _, _, node in cur:
            if node.terminated:
                end_nodes.append(node)
                if len(end_nodes) == beam_size:
                    break
            elif len(end_nodes) < beam_size:
                k = beam_size - len(end_nodes)
                best = sorted(node.children, key=lambda c: c.value, reverse=True)[:k]
                for c in best:
                    heapq.heappush(heap, (-c.value, -c.value, -c.parent_value, c))
        top = heapq.nsmallest(k, heap)
        for _, _, _, node in top:
            if "\\boxed" in node.acts[-1]:
                node.terminated, node.end = True, "boxed"
            elif node.eos_end:
                node.terminated, node.end = True, "eos"
            elif len(node.acts) >= max_depth:
                node.terminated, node.end = True, "depth"
            else:
                _expand(node, per_node, False, gen, score)
        if len(end_nodes) == beam_size:
            break
    return end_nodes


# --- search-and-learn ------------------------------------------------------------------------


@dataclass
class SalBeam:
    text: str = ""
    steps: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    completed: bool = False
    pruned: bool = False


def sal_beam_search(gen: Gen, score: Score, n: int, beam_width: int, iterations: int,
                    filter_duplicates: bool = False) -> list[SalBeam]:
    """``sal.search.beam_search._beam_search`` with ``sort_completed=False``."""
    active = [SalBeam() for _ in range(n)]
    completed: list[SalBeam] = []
    for i in range(iterations):
        active = [b for b in active if not b.pruned]
        if len(active) != n:
            repeats = n // len(active) + 1
            active = [copy.deepcopy(b) for b in (active * repeats)[:n]]
        last = i == iterations - 1
        for b in active:
            [(text, finish)] = gen(b.text, 1, last=last)
            b.text += text
            b.steps.append(text)
            if finish in ("eos", "length") or text == "":
                b.completed = True
                completed.append(b)
        for b in active:
            b.scores = score(b.steps)
        agg = [b.scores[-1] for b in active if not b.completed]
        active = [b for b in active if not b.completed]
        if not active:
            break
        if filter_duplicates:
            first: dict[str, int] = {}
            for j, b in enumerate(active):
                first.setdefault(b.text, j)
            active = [active[j] for j in first.values()]
            agg = [agg[j] for j in first.values()]
        order = sorted(range(len(agg)), key=lambda j: agg[j])  # np.argsort, stable
        top = set(order[-(n // beam_width):])
        for j, b in enumerate(active):
            if j not in top:
                b.pruned = True
    completed = completed[:n]
    if len(completed) != n:
        repeats = n // len(completed) + 1
        completed = [copy.deepcopy(b) for b in (completed * repeats)[:n]]
    return completed


@dataclass
class SalSubtree:
    text: str = ""
    steps: list[str] = field(default_factory=list)
    pruned: bool = False
    siblings: list[tuple[list[str], list[float]]] = field(default_factory=list)


def sal_dvts(gen: Gen, score: Score, n: int, beam_width: int,
             iterations: int) -> list[tuple[list[str], list[float]]]:
    """``sal.search.diverse_verifier_tree_search._dvts`` without look-ahead: the M siblings of
    every subtree's last expansion, as (steps, step scores)."""
    subs = [SalSubtree() for _ in range(n // beam_width)]
    for i in range(iterations):
        live = [s for s in subs if not s.pruned]
        if not live:
            break
        last = i == iterations - 1
        for s in live:
            cands = [gen(s.text, 1, last=last)[0] for _ in range(beam_width)]
            scores = [score([*s.steps, text]) for text, _ in cands]
            best = max(range(beam_width), key=lambda j: (scores[j][-1], -j))
            s.siblings = [([*s.steps, text], sc) for (text, _), sc in zip(cands, scores)]
            text, finish = cands[best]
            s.steps.append(text)
            s.text += text
            if text == "" or finish in ("eos", "length"):
                s.pruned = True
        for s in live:
            if "boxed{" in s.text:
                s.pruned = True
    return [sib for s in subs for sib in s.siblings]

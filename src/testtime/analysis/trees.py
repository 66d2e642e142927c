"""Draw a record's search tree as inline SVG (no scripts; hover titles carry the step text).

Layout: depth downwards; leaves get consecutive columns in depth-first order and a parent sits
above the mean of its children. Node colour is the status (every ``NodeStatus``: kept, pruned, finished, active, lookahead,
dropped) and
the label is the PRM score. Trees larger than ``MAX_NODES`` are cut breadth-first (noted).
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from testtime.records import NodeRecord, ProblemRecord

MAX_NODES = 300
#: One colour per ``NodeStatus`` (tests check that none is missing): ``dropped`` are the paper's
#: cut or duplicate steps, ``lookahead`` rollouts that only scored their parent.
COLORS = {"kept": "#4c72b0", "pruned": "#b0b0b0", "finished": "#2ca02c", "active": "#ff7f0e",
          "lookahead": "#c5b0d5", "dropped": "#e07070"}
DX, DY, R, PAD = 34, 46, 11, 20
#: Preferred methods for the report's trees: those whose trees branch.
TREE_METHODS = ("beam_search", "particle_filtering", "dvts", "best_of_n")


def layout(nodes: Sequence[NodeRecord]) -> dict[int, tuple[float, int]]:
    """Node id -> (column, depth)."""
    ids = {n.id for n in nodes}
    children: dict[int, list[int]] = defaultdict(list)
    for n in nodes:
        children[n.parent if n.parent in ids else -1].append(n.id)
    pos: dict[int, tuple[float, int]] = {}
    depth = {n.id: n.depth for n in nodes}
    col = 0

    def place(node: int) -> float:
        nonlocal col
        kids = children.get(node, [])
        if not kids:
            x = float(col)
            col += 1
        else:
            xs = [place(k) for k in kids]
            x = sum(xs) / len(xs)
        pos[node] = (x, depth[node])
        return x

    stack_roots = children.get(-1, [])
    for root in stack_roots:
        place(root)
    return pos


def tree_svg(rec: ProblemRecord) -> str:
    """The SVG of ``rec.tree`` (an empty note when it has none)."""
    nodes = sorted(rec.tree, key=lambda n: (n.depth, n.id))
    if not nodes:
        return "<p>(no tree)</p>"
    cut = len(nodes) > MAX_NODES
    nodes = nodes[:MAX_NODES]
    pos = layout(nodes)
    width = int(max(x for x, _ in pos.values()) * DX + 2 * PAD + 2 * R)
    height = int(max(d for _, d in pos.values()) * DY + 2 * PAD + 2 * R)

    def xy(i: int) -> tuple[float, float]:
        x, d = pos[i]
        return PAD + R + x * DX, PAD + R + d * DY

    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
              'class="search-tree" font-family="sans-serif" font-size="8">')]
    ids = {n.id for n in nodes}
    for n in nodes:
        if n.parent in ids:
            (x0, y0), (x1, y1) = xy(n.parent), xy(n.id)
            parts.append(f'<line x1="{x0:.0f}" y1="{y0:.0f}" x2="{x1:.0f}" y2="{y1:.0f}" '
                         'stroke="#999"/>')
    for n in nodes:
        x, y = xy(n.id)
        score = "" if n.score is None else f"{n.score:.2f}"
        title = html.escape(f"#{n.id} {n.status} score={score or '-'} tokens={n.tokens}\n"
                            f"{n.text[:400]}")
        parts.append(f'<g class="node"><title>{title}</title><circle cx="{x:.0f}" '
                     f'cy="{y:.0f}" r="{R}" fill="{COLORS[n.status]}"/>'
                     f'<text x="{x:.0f}" y="{y + 3:.0f}" text-anchor="middle" fill="white">'
                     f"{score.removeprefix('0')}</text></g>")
    parts.append("</svg>")
    note = f"<p>showing the first {MAX_NODES} of {len(rec.tree)} nodes</p>" if cut else ""
    return "".join(parts) + note


def pick_tree_records(records: Sequence[tuple[Any, ProblemRecord]], k: int,
                      ids: Sequence[str] | None = None) -> list[tuple[Any, ProblemRecord]]:
    """Records to draw: those of ``ids`` (one per id and method), else ``k`` with trees from
    the most tree-like method present (beam search, DVTS, Best-of-N, then any)."""
    with_tree = [(i, r) for i, r in records if r.tree]
    if ids is not None:
        seen: set[tuple[str, str]] = set()
        out = []
        for i, r in with_tree:
            if r.id in ids and (r.id, r.method) not in seen:
                seen.add((r.id, r.method))
                out.append((i, r))
        return out
    for method in (*TREE_METHODS, None):
        chosen = [(i, r) for i, r in with_tree if method is None or r.method == method]
        if chosen:
            return sorted(chosen, key=lambda ir: ir[1].id)[:k]
    return []

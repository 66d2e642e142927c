"""The report's "Against the paper" section: Tables 5, 3, 2 and 4 filled from the runs (each
cell: your value with its 95% bootstrap interval, the paper's, the difference) and the figures
of :mod:`testtime.analysis.paper_figures`, as HTML with the PNGs inlined."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from testtime.analysis import paper_data as pd
from testtime.analysis.paper_cell import Cell
from testtime.analysis.paper_compare import Comparison
from testtime.analysis.paper_figures import (
    RowsView,
    plot_by_flops,
    plot_by_size,
    plot_methods,
    plot_optimal_methods,
)

INTRO = (
    "Your runs beside Liu et al. 2025 (<i>Can 1B LLM Surpass 405B LLM?</i>). Runs are matched "
    "by dataset, policy and PRM as read from their configs, by method and by N. Each cell: your "
    "accuracy with its 95% bootstrap interval over problems, the paper's value and the "
    "difference (yours - paper, in points); <b>bold</b> where the paper's value lies inside "
    "your interval. Assumed settings (the issue does not state them): the paper's majority, "
    f"Best-of-N and compute-optimal numbers are at N={pd.PAPER_N}; Table 2 is Best-of-N "
    "voting at that N (its policy is not matched). A run at another N or on fewer problems is "
    "marked with its N and problem count. Compute-optimal = the best method x rule (over every "
    "PRM the policy ran with) at that budget, chosen on all problems (in-sample, as the "
    "paper's best setting).")


def _acc(c: Cell) -> list[str]:
    if c.value is None:
        yours = "-"
    else:
        yours = f"{c.value:.1f} [{c.ci_low:.1f}, {c.ci_high:.1f}]"
        if c.paper is not None and not c.same_setting:
            yours += f" (N={c.n}, {c.problems} problems)"
    paper = "-" if c.paper is None else f"{c.paper:.1f}"
    diff = "-" if c.diff is None else f"{c.diff:+.1f}"
    return [yours, paper, diff]


def _flops(c: Cell) -> list[str]:
    yours = "-" if c.value is None else f"{c.value:.3g}"
    paper = "-" if c.paper is None else f"{c.paper:.3g}"
    ratio = "-" if c.ratio is None else f"{c.ratio:.2f}x"
    return [yours, paper, ratio]


def pivot(cells: Sequence[Cell], title: str) -> str:
    """One HTML table: a row per ``Cell.row``, three sub-columns per ``Cell.column``."""
    if not cells:
        return ""
    rows = list(dict.fromkeys(c.row for c in cells))
    cols = list(dict.fromkeys(c.column for c in cells))
    by = {(c.row, c.column): c for c in cells}
    sub = ("yours", "paper", "ratio") if cells[0].unit == "flops" else (
        "yours [95% CI]", "paper", "diff")
    head = ('<tr><th class="l" rowspan="2"></th>'
            + "".join(f'<th colspan="3">{html.escape(c)}</th>' for c in cols) + "</tr><tr>"
            + "".join(f"<th>{s}</th>" for _ in cols for s in sub) + "</tr>")
    body = []
    for r in rows:
        tds = [f'<td class="l">{html.escape(r)}</td>']
        for col in cols:
            c = by.get((r, col))
            texts = ["", "", ""] if c is None else (
                _flops(c) if c.unit == "flops" else _acc(c))
            bold = c is not None and c.within_ci
            tip = (c.note or c.strategy or "") if c else ""
            note = f' title="{html.escape(tip)}"' if tip else ""
            tds += [f"<td{note}>{'<b>' if bold and i == 0 else ''}{html.escape(t)}"
                    f"{'</b>' if bold and i == 0 else ''}</td>" for i, t in enumerate(texts)]
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f'<h3>{html.escape(title)}</h3><table class="paper">{head}{"".join(body)}</table>'


def _choices(cells: Sequence[Cell]) -> str:
    picked = [f"{c.row}: {c.strategy} (N={c.n})" for c in cells if c.strategy]
    if not picked:
        return ""
    return ('<p class="note">compute-optimal choices: '
            + "; ".join(html.escape(p) for p in picked) + "</p>")


def paper_section(cmp: Comparison, keys: Sequence[RowsView], out: Path,
                  img: Callable[[Path, str], str]) -> str:
    """The section's HTML; writes its PNGs into ``out`` (``img`` inlines one)."""
    parts = ["<h2>Against the paper (Liu et al. 2025)</h2>"]
    if not cmp.matches_paper:
        return parts[0] + ('<p class="note">No run is on a paper dataset (MATH-500, AIME24) or '
                           "of a paper policy: nothing to compare.</p>")
    parts.append(f'<p class="note">{INTRO}</p>')
    mine = sorted({k.dataset for k in keys})
    figures: list[tuple[str, Callable[[Path], bool]]] = []
    for ds in dict.fromkeys([pd.MATH500, *mine, pd.AIME24]):
        figures.append((f"paper_size_{ds}.png", partial(plot_by_size, cmp, ds)))
    figures.append(("paper_flops.png", partial(plot_by_flops, cmp)))
    for ds in dict.fromkeys([pd.MATH500, *mine]):
        figures.append((f"paper_methods_{ds}.png", partial(plot_methods, cmp, ds)))
    for ds in mine:
        figures.append((f"paper_optimal_{ds}.png", partial(plot_optimal_methods, keys, ds)))
    for ds in dict.fromkeys([pd.MATH500, *mine]):
        label = pd.DATASET_LABELS.get(ds, ds)
        t5 = cmp.table("Table 5", ds)
        parts.append(pivot(t5, f"Table 5 layout ({label}): CoT, majority, compute-optimal"))
        parts.append(_choices([c for c in t5 if c.method == pd.OPTIMAL]))
    t3 = cmp.table("Table 3")
    parts.append(pivot(t3, "Table 3 layout: small policies with compute-optimal TTS vs "
                           "large models with CoT"))
    parts.append(pivot(cmp.table("Table 2"), "Table 2 layout (Best-of-N voting rules, by PRM)"))
    parts.append(pivot(cmp.table("Table 4"), "Table 4 layout: FLOPs over MATH-500 "
                                             "(inference: policy + PRM; pre-training: 6ND)"))
    parts.append("<h3>Figures</h3>")
    for name, make in figures:
        if make(out / name):
            parts.append(img(out / name, name))
    return "\n".join(p for p in parts if p)

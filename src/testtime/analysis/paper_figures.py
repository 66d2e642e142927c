"""The paper's figures drawn from the user's runs, with the published numbers as reference
markers (hollow, grey-edged; a model the user did not run is labelled ``(paper)``):

* ``paper_size_<dataset>.png``: accuracy against policy size: small policies with
  compute-optimal TTS (circles) and CoT (squares); closed models of unknown size as lines;
* ``paper_flops.png``: MATH-500 accuracy against FLOPs over the benchmark, inference only and
  inference + pre-training (``6 N D``), the user's TTS and CoT points beside Table 4's models;
* ``paper_methods_<dataset>.png``: CoT vs majority vs compute-optimal per policy (bars with
  95% bootstrap intervals; the paper's Table 5 as markers);
* ``paper_optimal_<dataset>.png``: the compute-optimal method per PRM (rows), policy (columns,
  by size) and difficulty bin (panels).

Each function returns False (and writes nothing) when it has nothing to draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from testtime.analysis import paper_data as pd
from testtime.analysis.optimal import Row
from testtime.analysis.paper_compare import Comparison, KeyView, PolicyResult
from testtime.analysis.paper_models import (
    canonical,
    policy_id,
    pretraining_flops,
    prm_id,
    size_of,
)

PAPER_STYLE: dict[str, Any] = {"facecolor": "none", "linewidths": 1.5, "zorder": 3}
TTS_COLOR, COT_COLOR, MAJ_COLOR = "tab:red", "tab:blue", "tab:gray"


class RowsView(KeyView, Protocol):
    """A ``KeyView`` with the compute-optimal table's rows."""

    @property
    def rows(self) -> list[Row]: ...


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mine(cmp: Comparison, ds: str) -> dict[str, PolicyResult]:
    return {r.model.label: r for r in cmp.policies if r.dataset == ds}


def _save(fig: Any, path: Path) -> bool:
    fig.tight_layout()
    fig.savefig(path)
    _plt().close(fig)
    return True


def _err(p: Any) -> list[list[float]]:
    acc = 100 * p.accuracy
    return [[acc - 100 * p.ci_low], [100 * p.ci_high - acc]]


def plot_by_size(cmp: Comparison, ds: str, path: Path) -> bool:
    """Accuracy against policy size on ``ds``: the user's points and the paper's."""
    mine = _mine(cmp, ds)
    paper = [(canonical(v.model), v.method, v.value) for v in pd.values("Table 3", ds)]
    paper += [(canonical(v.model), pd.COT, v.value) for v in pd.values("Table 5", ds, pd.COT)]
    if not paper and not any(r.model.params for r in mine.values()):
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    for res in mine.values():
        if res.model.params is None:
            continue
        for p, color, marker in ((res.optimal, TTS_COLOR, "o"), (res.cot, COT_COLOR, "s")):
            if p is not None:
                ax.errorbar([res.model.params], [100 * p.accuracy], yerr=_err(p), fmt=marker,
                            color=color, markersize=8, capsize=3, zorder=4)
        if (top := res.optimal or res.cot) is not None:  # one label per policy
            ax.annotate(res.model.label, (res.model.params, 100 * top.accuracy), fontsize=7,
                        fontweight="bold", xytext=(-6, 6), textcoords="offset points",
                        ha="right")
    seen: set[tuple[str, str]] = set()
    for model, method, value in paper:
        if (model, method) in seen:
            continue
        seen.add((model, method))
        size = size_of(model)
        tag = "" if model in mine else " (paper)"
        if size is None:  # a closed model: a reference line
            ax.axhline(value, color="0.6", linestyle=":", linewidth=1)
            ax.text(1.01, value, f"{model} CoT{tag}", transform=ax.get_yaxis_transform(),
                    fontsize=6, va="center", color="0.3")
            continue
        color = TTS_COLOR if method == pd.OPTIMAL else COT_COLOR
        ax.scatter([size], [value], marker="o" if method == pd.OPTIMAL else "s",
                   edgecolors=color, s=60, **PAPER_STYLE)
        ax.annotate(f"{model}{tag}", (size, value), fontsize=6, color="0.35",
                    xytext=(4, -8), textcoords="offset points")
    ax.scatter([], [], marker="o", color=TTS_COLOR, label="yours: compute-optimal TTS")
    ax.scatter([], [], marker="s", color=COT_COLOR, label="yours: CoT")
    ax.scatter([], [], marker="o", edgecolors="0.4", label="paper (hollow)", **PAPER_STYLE)
    ax.set_xscale("log")
    ax.set_xlabel("policy parameters (nominal)")
    ax.set_ylabel(f"accuracy on {pd.DATASET_LABELS.get(ds, ds)} (%)")
    ax.set_ylim(0, 102)
    ax.set_title("small policies with TTS vs larger policies with CoT", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def _flops_points(cmp: Comparison) -> list[tuple[str, str, float, float, float | None]]:
    """(label, method, accuracy %, inference FLOPs over MATH-500, pre-training FLOPs)."""
    size = pd.BENCHMARK_SIZE[pd.MATH500]
    out = []
    for res in _mine(cmp, pd.MATH500).values():
        for p, m in ((res.optimal, pd.OPTIMAL), (res.cot, pd.COT)):
            if p is not None and p.flops > 0:
                out.append((res.model.label, m, 100 * p.accuracy, p.flops * size,
                            pretraining_flops(res.model.label)))
    return out


def plot_by_flops(cmp: Comparison, path: Path) -> bool:
    """MATH-500 accuracy against inference and inference + pre-training FLOPs."""
    acc = {(canonical(v.model), v.method): v.value for v in pd.values("Table 3", pd.MATH500)}
    paper: list[tuple[str, str, float, float, float | None]] = []
    for v in pd.values("Table 4", pd.MATH500):
        if v.method == "pretraining":
            continue
        model = canonical(v.model)
        method = pd.OPTIMAL if v.method == "tts_inference" else pd.COT
        pretrain = next(w.value for w in pd.values("Table 4", pd.MATH500, "pretraining")
                        if w.model == v.model)
        paper.append((model, method, acc[(model, method)], v.value, pretrain))
    mine = _flops_points(cmp)
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=100, sharey=True)
    for ax, total in zip(axes, (False, True), strict=True):
        for points, hollow in ((paper, True), (mine, False)):
            for label, method, a, inf, pre in points:
                if total and pre is None:
                    continue
                x = inf + (pre or 0.0) if total else inf
                color = TTS_COLOR if method == pd.OPTIMAL else COT_COLOR
                style = ({"edgecolors": color, **PAPER_STYLE} if hollow else {"color": color})
                ax.scatter([x], [a], marker="o" if method == pd.OPTIMAL else "s", s=60, **style)
                run = {lbl for lbl, *_ in mine}
                tag = " (paper)" if hollow and label not in run else ""
                ax.annotate(f"{label}{' TTS' if method == pd.OPTIMAL else ' CoT'}{tag}", (x, a),
                            fontsize=6, xytext=(4, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("inference + pre-training FLOPs (6ND)" if total else
                      "inference FLOPs over MATH-500 (500 problems)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy on MATH-500 (%)")
    axes[0].set_ylim(0, 102)
    if not mine:
        axes[0].set_title("no MATH-500 runs with known FLOPs: paper points only", fontsize=9)
    fig.suptitle("TTS (circles) vs CoT (squares); hollow = paper (Table 4)", fontsize=10)
    return _save(fig, path)


def plot_methods(cmp: Comparison, ds: str, path: Path) -> bool:
    """CoT, majority and compute-optimal per policy (bars) with the paper's Table 5 markers."""
    mine = _mine(cmp, ds)
    paper = {(canonical(v.model), v.method): v.value for v in pd.values("Table 5", ds)}
    for v in pd.values("Table 3", ds):  # AIME24 has only Table 3 (models of known size)
        if (canonical(v.model), v.method) not in paper and size_of(v.model):
            paper[(canonical(v.model), v.method)] = v.value
    models = list(dict.fromkeys([*mine, *(m for m, _ in paper)]))
    if not models:
        return False
    models.sort(key=lambda m: (size_of(m) or 0.0, m))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * len(models) + 2), 4.5), dpi=100)
    methods = ((pd.COT, "CoT", COT_COLOR), (pd.MAJORITY, "majority", MAJ_COLOR),
               (pd.OPTIMAL, "compute-optimal", TTS_COLOR))
    for j, (m, label, color) in enumerate(methods):
        off = (j - 1) * 0.27
        for i, model in enumerate(models):
            res = mine.get(model)
            p = getattr(res, "optimal" if m == pd.OPTIMAL else m, None) if res else None
            if p is not None:
                ax.bar(i + off, 100 * p.accuracy, 0.25, color=color, yerr=_err(p), capsize=2,
                       label=label if i == 0 or model == next(iter(mine)) else None)
            if (model, m) in paper:
                ax.scatter([i + off], [paper[(model, m)]], marker="D", s=28, edgecolors="black",
                           **PAPER_STYLE)
    if paper:
        ax.scatter([], [], marker="D", edgecolors="black", label="paper (Tables 5 and 3)",
                   **PAPER_STYLE)
    ax.set_xlim(-0.6, len(models) - 0.4)
    ax.set_xticks(range(len(models)),
                  [m if m in mine else f"{m}\n(paper)" for m in models], fontsize=7, rotation=30)
    ax.set_ylabel(f"accuracy on {pd.DATASET_LABELS.get(ds, ds)} (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"CoT vs majority vs compute-optimal (N={pd.PAPER_N} in the paper)", fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=True))
    ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="upper left")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def plot_optimal_methods(keys: Sequence[RowsView], ds: str, path: Path) -> bool:
    """The compute-optimal method per PRM x policy (by size) x difficulty bin at the largest
    budget (absolute bins; one ``all`` panel when difficulty is unknown)."""
    kas = [k for k in keys if k.dataset == ds and k.rows]
    if not kas:
        return False
    scheme = "absolute" if any(r.scheme == "absolute" for k in kas for r in k.rows) else "all"
    cells: dict[tuple[str, str, str], str] = {}
    for k in kas:
        rows = [r for r in k.rows if r.scheme == scheme]
        if not rows:
            continue
        top = max(r.budget for r in rows)
        for r in rows:
            if r.budget == top:
                cells[(prm_id(k.key[1]).label, policy_id(k.key[0]).label, r.bin)] = \
                    f"{r.strategy.label}\nN={top}"
    prms = sorted({c[0] for c in cells})
    pols = sorted({c[1] for c in cells}, key=lambda m: (size_of(m) or 0.0, m))
    bins = [b for b in ("easy", "medium", "hard", "all") if any(c[2] == b for c in cells)]
    methods = sorted({v.split("/")[0].split("\n")[0] for v in cells.values()})
    plt = _plt()
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(bins), figsize=(3.4 * len(bins) + 1, 1.1 * len(prms) + 1.8),
                             dpi=100, squeeze=False)
    for ax, b in zip(axes[0], bins, strict=True):
        for i, prm in enumerate(prms):
            for j, pol in enumerate(pols):
                text = cells.get((prm, pol, b))
                if text is None:
                    continue
                color = cmap(methods.index(text.split("/")[0].split("\n")[0]) % 10)
                ax.add_patch(plt.Rectangle((j, i), 1, 1, color=color, alpha=0.35))
                ax.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=6)
        ax.set_xlim(0, len(pols))
        ax.set_ylim(0, len(prms))
        ax.set_xticks([j + 0.5 for j in range(len(pols))], pols, fontsize=7, rotation=20)
        ax.set_yticks([i + 0.5 for i in range(len(prms))], prms, fontsize=7)
        ax.set_title(f"{b} problems", fontsize=9)
    fig.suptitle(f"compute-optimal method per PRM, policy size and difficulty "
                 f"({pd.DATASET_LABELS.get(ds, ds)}, {scheme} bins)", fontsize=10)
    return _save(fig, path)

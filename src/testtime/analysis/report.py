"""``testtime report``: PNG plots and one self-contained HTML page.

The page (``index.html``) inlines every plot as a base64 PNG and every search tree as SVG, and
uses no script, stylesheet or font from outside, so it opens offline. The PNGs are also
written next to it. Per (policy, PRM): accuracy vs generations and vs FLOPs (one line per
method with its best rule, 95% bootstrap bands, majority voting, the cross-validated
compute-optimal curve), accuracy per difficulty bin, the compute-optimal tables, the
efficiency gains, and the search trees of chosen problems. Before them, the comparison with
the paper (``paper_report.py``): Tables 2-5 filled from the runs beside the published numbers,
and the paper's figures with its points as reference markers.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from testtime.analysis.analyze import Analysis, KeyAnalysis, preferred_scheme, write_analysis
from testtime.analysis.curves import Axis, Curve
from testtime.analysis.paper_compare import compare_with_paper
from testtime.analysis.paper_report import paper_section
from testtime.analysis.runs import MAJORITY_BON
from testtime.analysis.trees import pick_tree_records, tree_svg

PAGE_FILE = "index.html"
STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;
padding:3px 8px;text-align:right}th{background:#eee}td.l,th.l{text-align:left}
img{max-width:100%;border:1px solid #ddd;margin:.5em 0}h2{border-bottom:2px solid #444}
table.paper td{white-space:nowrap}
.tree{overflow-x:auto;border:1px solid #ddd;margin:.5em 0}.note{color:#666;font-size:13px}"""


def _plot_curves(ka: KeyAnalysis, axis: Axis, path: Path) -> bool:
    """Accuracy against ``axis``; False (no file) when that axis is unknown (all zero)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: list[tuple[Curve, dict[str, object]]] = [
        (c, {}) for c in ka.per_method.values()]
    if MAJORITY_BON in ka.curves:
        lines.append((ka.curves[MAJORITY_BON], {"color": "black", "linestyle": ":"}))
    scheme = preferred_scheme(ka)
    if scheme in ka.optimal:
        lines.append((ka.optimal[scheme], {"color": "red", "linewidth": 2.5}))
    xs = [p.x(axis) for c, _ in lines for p in c.points]
    if not xs or max(xs) <= 0:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for c, style in lines:
        pts = [p for p in c.points if p.x(axis) > 0]
        x = [p.x(axis) for p in pts]
        (line,) = ax.plot(x, [p.accuracy for p in pts], marker="o", label=c.label,
                          **style)  # type: ignore[arg-type]
        ax.fill_between(x, [p.ci_low for p in pts], [p.ci_high for p in pts],
                        color=line.get_color(), alpha=0.12)
    ax.set_xscale("log", base=2 if axis == "generations" else 10)
    ax.set_xlabel({"generations": "generations per problem (N)", "flops": "FLOPs per problem",
                   "policy_tokens": "policy tokens per problem (prompts billed per sample)",
                   "prefill_tokens": "policy tokens per problem (with prefix caching)"}[axis])
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{ka.key[0]} + {ka.key[1]}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _plot_bins(ka: KeyAnalysis, path: Path) -> bool:
    """CV accuracy of the optimal choice vs majority per absolute bin at the largest budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in ka.rows if r.scheme == "absolute"]
    if not rows:
        return False
    top = max(r.budget for r in rows)
    rows = [r for r in rows if r.budget == top]
    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=100)
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r.cv_accuracy for r in rows], 0.4,
           label="compute-optimal (CV)", color="tab:red")
    ax.bar([i + 0.2 for i in x], [r.majority_accuracy or 0.0 for r in rows], 0.4,
           label="Best-of-N majority", color="tab:gray")
    ax.set_xticks(list(x), [f"{r.bin}\n({r.problems})" for r in rows])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title(f"by difficulty at N={top}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _table(header: list[str], rows: list[list[str]], cls: str) -> str:
    head = "".join(f'<th class="l">{html.escape(h)}</th>' if i == 0 else
                   f"<th>{html.escape(h)}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="l">{html.escape(c)}</td>' if i == 0 else
                                    f"<td>{html.escape(c)}</td>" for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


def _section(ka: KeyAnalysis, i: int, out: Path) -> str:
    on = f" on {html.escape(ka.dataset)}" if ka.dataset else ""
    parts = [f"<h2>{html.escape(ka.key[0])} + {html.escape(ka.key[1])}{on}</h2>",
             f"<p>{len(ka.problems)} problems answered by every strategy.</p>"]
    for name, make in ((f"acc_generations_{i}.png", lambda p: _plot_curves(ka, "generations", p)),
                       (f"acc_flops_{i}.png", lambda p: _plot_curves(ka, "flops", p)),
                       (f"acc_tokens_{i}.png", lambda p: _plot_curves(ka, "policy_tokens", p)),
                       (f"acc_prefill_{i}.png", lambda p: _plot_curves(ka, "prefill_tokens", p)),
                       (f"acc_bins_{i}.png", lambda p: _plot_bins(ka, p))):
        if make(out / name):
            parts.append(_img(out / name, name))
        elif "flops" in name:
            parts.append('<p class="note">FLOPs unknown for these models (fake or unlisted '
                         "models): no FLOPs plot.</p>")
    for scheme in ("absolute", "quantile", "all"):
        rows = [r for r in ka.rows if r.scheme == scheme]
        if not rows:
            continue
        parts.append(f"<h3>Compute-optimal strategy ({scheme} bins, two-fold CV)</h3>")
        parts.append(_table(
            ["bin", "N", "problems", "strategy", "CV accuracy", "in-sample", "fold choices",
             "majority", "CV FLOPs"],
            [[r.bin, str(r.budget), str(r.problems), r.strategy.label, f"{r.cv_accuracy:.1%}",
              f"{r.in_sample_accuracy:.1%}", " | ".join(r.fold_choices),
              "-" if r.majority_accuracy is None else f"{r.majority_accuracy:.1%}",
              f"{r.cv_flops:.3g}"] for r in rows], "optimal"))
    if ka.gains:
        parts.append("<h3>Efficiency gain over majority voting</h3>")
        parts.append(_table(
            ["bins", "axis", "majority peak", "at compute", "optimal reaches it at", "gain"],
            [[s, g.axis, f"{g.peak_accuracy:.1%}", f"{g.majority_compute:.4g}",
              "never" if g.optimal_compute is None else f"{g.optimal_compute:.4g}",
              "-" if g.gain is None else f"{g.gain:.2f}x"]
             for s, gs in ka.gains.items() for g in gs], "gains"))
    return "\n".join(parts)


def write_report(a: Analysis, out: Path, trees: int = 3,
                 problem_ids: list[str] | None = None) -> Path:
    """Write PNGs, ``analysis.json``, ``optimal_table.json`` and ``index.html`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_analysis(a, out)
    runs = _table(["run", "dataset", "method", "N", "policy", "PRM", "seed", "records",
                   "errors"],
                  [[r.path.name, Path(r.config.dataset.name).name, r.config.search.method,
                    str(r.config.search.n),
                    r.config.policy, r.config.prm, str(r.config.sampling.seed), str(r.records),
                    str(r.errors)] for r in a.results.runs], "runs")
    sections = [paper_section(compare_with_paper(a.keys, a.by_dataset), a.keys, out, _img)]
    sections += [_section(ka, i, out) for i, ka in enumerate(a.keys)]
    tree_parts = []
    for info, rec in pick_tree_records(a.results.records, trees, problem_ids):
        tree_parts.append(
            f"<h3>{html.escape(rec.id)}: {html.escape(rec.method)} N={rec.n} "
            f"({html.escape(info.path.name)})</h3><p>{html.escape(rec.problem[:300])}</p>"
            f'<div class="tree">{tree_svg(rec)}</div>')
    page = (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>testtime report</title>"
        f"<style>{STYLE}</style></head><body><h1>Compute-optimal test-time scaling</h1>"
        f"<h2>Runs</h2>{runs}{''.join(sections)}<h2>Search trees</h2>"
        '<p class="note">Nodes are steps (colour: status; label: PRM score); hover for the '
        "step text.</p>"
        f"{''.join(tree_parts) or '<p>No records with trees.</p>'}</body></html>")
    path = out / PAGE_FILE
    path.write_text(page)
    return path

"""Aggregate per-problem records into ``summary.json`` and the table ``testtime run`` prints."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from testtime.records import ProblemRecord
from testtime.selection import DEEPCONF_RULES, ORACLE, RULES

if TYPE_CHECKING:
    from rich.table import Table

    from testtime.config import RunConfig

SUMMARY_VERSION = 1
COMPUTE_FIELDS = ("policy_calls", "generations", "prompt_tokens", "completion_tokens",
                  "scored_tokens", "scored_cached_tokens", "prm_truncated_paths",
                  "prm_unread_steps", "nonfinite_scores", "policy_flops", "prm_flops")
#: Scorers that are not process reward models: their "prm_*" rules read other step scores.
MODEL_FREE_SCORERS = frozenset({"self-certainty", "confidence", "oracle"})


def scorer_note(scorer: str) -> str:
    """What the ``prm_*`` rules aggregated, for tables and ``summary.json``."""
    if scorer in ("self-certainty", "confidence"):
        return (f"prm_* rules use {scorer} step scores from the policy's own token "
                f"statistics (no PRM)")
    if scorer == "oracle":
        return "prm_* rules use the outcome oracle (reference answers: an upper bound, no PRM)"
    if scorer.startswith("judge"):
        return f"prm_* rules use LLM-as-judge step scores ({scorer})"
    return f"prm_* rules use step scores of the PRM {scorer}"


def summarize(
    config: RunConfig,
    records: Sequence[ProblemRecord],
    *,
    total: int,
    wall_time_s: float,
    computed: int,
    batch_stats: Any = None,
    engine_stats: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Accuracy per budget and rule (failed problems count as wrong), per level, and totals."""
    ok = [r for r in records if r.error is None]
    denom = len(records) or 1
    # records written before a rule existed (a resumed older run) lack it: leave it out
    confident = any(c.confidence for r in ok for c in r.candidates)
    rules = [rule for rule in RULES
             if all(rule in preds for r in ok for preds in r.predictions.values())
             and (confident or rule not in DEEPCONF_RULES)]  # else: the majority vote again
    accuracy: dict[str, dict[str, float]] = {}
    for b in sorted({b for r in ok for b in r.predictions}, key=int):
        accuracy[b] = {
            rule: sum(r.predictions[b][rule].correct for r in ok if b in r.predictions) / denom
            for rule in rules
        }
    full = str(config.search.n) if config.search.method != "cot" else "1"
    by_level: dict[str, dict[str, float]] = {}
    levels: dict[int, list[ProblemRecord]] = defaultdict(list)
    for r in records:
        if r.level is not None:
            levels[r.level].append(r)
    for level, recs in sorted(levels.items()):
        by_level[str(level)] = {
            "problems": len(recs),
            **{rule: sum(_correct(r, full, rule) for r in recs) / len(recs) for rule in rules},
        }
    totals = {f: sum(getattr(r.compute, f) for r in records) for f in COMPUTE_FIELDS}
    out: dict[str, Any] = {
        "schema_version": SUMMARY_VERSION,
        "dataset": config.dataset.name,
        "method": config.search.method,
        "n": int(full),
        "policy": config.policy,
        "prm": config.prm,
        "scores_from": scorer_note(config.prm),
        "problems": total,
        "completed": len(ok),
        "errors": len(records) - len(ok),
        "first_error": next((r.error for r in records if r.error), None),
        "missing": total - len(records),
        "accuracy": accuracy,
        "accuracy_by_level": by_level,
        "compute": totals,
        "compute_per_problem": {f: v / denom for f, v in totals.items()},
        "wall_time_s": round(wall_time_s, 3),
        "computed_this_session": computed,
        "labels": {ORACLE: "oracle pass@N: an upper bound for analysis, not a method"},
    }
    stats = batch_stats
    if stats is not None and stats.calls:
        out["policy_batches"] = {"calls": stats.calls, "mean_rows": round(stats.mean_rows, 2),
                                 "max_rows": stats.max_rows}
    if engine_stats:
        out["policy_engine"] = engine_stats  # e.g. vLLM's prefix-cache hit rate
    return out


def _correct(r: ProblemRecord, budget: str, rule: str) -> bool:
    return r.error is None and budget in r.predictions and r.predictions[budget][rule].correct


def summary_tables(summary: dict[str, Any]) -> list[Table]:
    """Rich tables: accuracy per rule and budget, accuracy per level, compute and time."""
    from testtime.tables import column, table

    acc = summary["accuracy"]
    t = table(f"{summary['method']} on {summary['dataset']} "
              f"({summary['completed']}/{summary['problems']} problems, "
              f"{summary['errors']} errors)",
              caption=summary.get("scores_from") or scorer_note(summary["prm"]))
    column(t, "selection rule")
    for b in acc:
        column(t, f"N={b}", numeric=True)
    for rule in RULES:
        if not all(rule in acc[b] for b in acc):
            continue
        label = "oracle pass@N (upper bound)" if rule == ORACLE else rule
        t.add_row(label, *(f"{acc[b][rule]:.1%}" for b in acc))
    tables = [t]
    if summary["accuracy_by_level"]:
        lv = table(f"accuracy by level at N={summary['n']}")
        column(lv, "level")
        column(lv, "problems", numeric=True)
        for rule in ("majority", "prm_last_max", "prm_min_vote", ORACLE):
            column(lv, rule, numeric=True)
        for level, row in summary["accuracy_by_level"].items():
            lv.add_row(level, str(row["problems"]),
                       *(f"{row[r]:.0%}" for r in ("majority", "prm_last_max", "prm_min_vote",
                                                   ORACLE)))
        tables.append(lv)
    c = table("compute")
    column(c, "total")
    column(c, "value", numeric=True)
    for k, v in summary["compute"].items():
        c.add_row(k, f"{v:.3g}" if k.endswith("flops") else f"{v:,}")
    c.add_row("wall time", f"{summary['wall_time_s']:.1f} s")
    tables.append(c)
    return tables

"""Which run directories may be pooled as seeds of one strategy.

``analyze`` averages the runs of one (policy, PRM, method, beam width, thinking budget) as
repeated seeds (runs with different thinking budgets are different strategies). That
is only sound when everything that shapes the outcome agrees: the dataset and its selection,
the prompt, the sampling settings and the search settings. The seed, the data directory, the
budget N (budgets below N come from prefixes), engine options and concurrency may differ.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from testtime.config import RunConfig

MAY_DIFFER = frozenset({
    "version", "dataset.data_dir", "sampling.seed", "search.n", "policy_options",
    "prm_options", "max_concurrent_problems",
})
"""Config fields (dotted) that never make two runs incomparable."""


WIDTH_METHODS = ("beam_search", "dvts")
"""Methods whose beam width is part of the strategy (and of the pooling group)."""


class IncomparableRuns(ValueError):
    """Runs that ``analyze`` would pool as seeds differ in a setting that shapes results."""

    names_config_fields = True
    """The message names ``config.json`` fields (the CLI keeps them, not option names)."""


def settings(cfg: RunConfig) -> dict[str, Any]:
    """The config flattened to dotted fields, minus those in :data:`MAY_DIFFER`.

    A dataset named by a file path is compared by its file name: the same file may sit in
    different places on different machines."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and prefix not in ("policy_options", "prm_options"):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif prefix not in MAY_DIFFER:
            flat[prefix] = value

    walk("", cfg.model_dump(mode="json"))
    name = flat.get("dataset.name")
    if isinstance(name, str) and ("/" in name or name.endswith(".jsonl")):
        flat["dataset.name"] = PurePath(name).name
    return flat


def check_comparable(runs: list[tuple[str, RunConfig]]) -> None:
    """Raise :class:`IncomparableRuns` naming the runs and the differing fields when runs of
    one (policy, PRM, method, beam width, thinking budget) group disagree on a setting that
    shapes results.

    ``runs`` pairs a label (the run directory) with its config."""
    groups: dict[tuple[str, str, str, int | None, int | None],
                 list[tuple[str, RunConfig]]] = {}
    for label, cfg in runs:
        s = cfg.search
        width = s.beam_width if s.method in WIDTH_METHODS else None
        groups.setdefault((cfg.policy, cfg.prm, s.method, width, s.think_budget),
                          []).append((label, cfg))
    for (policy, prm, method, *_), members in groups.items():
        first_label, first = members[0]
        base = settings(first)
        for label, cfg in members[1:]:
            other = settings(cfg)
            diff = sorted(k for k in base.keys() | other.keys() if base.get(k) != other.get(k))
            if diff:
                shown = ", ".join(f"{k} ({base.get(k)!r} vs {other.get(k)!r})"
                                  for k in diff[:6])
                more = f" and {len(diff) - 6} more" if len(diff) > 6 else ""
                raise IncomparableRuns(
                    f"{first_label} and {label} ({method}, policy {policy}, PRM {prm}) differ "
                    f"in {shown}{more}; analyze pools such runs as seeds of one strategy, so "
                    f"analyze them separately (only seeds, data paths, N and engine options "
                    f"may differ)")

"""``testtime sweep``: a grid of runs (methods x N x PRMs x policies x seeds) in one directory.

Every cell that needs its own samples is a normal run directory written by
``testtime.runner.run`` under ``OUT/<method>-n<N>[-m<M>][-t<T>]-<policy>-<prm>-seed<S>/`` (T:
a thinking budget of the ``think_budgets`` axis). Methods
whose records hold every power-of-two budget from prefixes (Best-of-N, DVTS: ``prefix_methods``)
run only at the largest N of the grid; each smaller power-of-two N is a *derived* cell that
points at that run and reads its records at ``budget = N``. CoT ignores N and runs once.
``OUT/sweep.json`` lists the grid and every cell (``run_dir``, ``budget``, ``derived``,
``status``) and is rewritten after each cell, so ``testtime analyze OUT`` finds the runs.

Resuming is cell by cell: a cell whose directory holds the same config with every problem
done is skipped without loading a model; an unfinished one is resumed (``--resume``
semantics of the runner, which refuses a changed config naming the fields). Each policy is
loaded once and shared by its cells; each (policy, PRM) group is built by
``compose.build_run``. Tests inject fakes through ``policy_factory`` / ``scorer_factory``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from testtime.analysis.runs import SWEEP_FILE, WIDTH_METHODS
from testtime.analysis.sweep_exec import PolicyFactory, ScorerFactory, run_locally, run_on_ray
from testtime.config import RunConfig, config_diff
from testtime.search.base import SamplingConfig
from testtime.store import RecordStore, dump_json

if TYPE_CHECKING:
    from testtime.distributed import RayOptions


class PairOptions(BaseModel):
    """The engine options of one (policy, PRM) pair of a sweep."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: str
    prm: str
    policy_options: dict[str, Any] = Field(default_factory=dict)
    prm_options: dict[str, Any] = Field(default_factory=dict)


class SweepGrid(BaseModel):
    """The grid; ``base`` supplies everything a cell does not vary (dataset, limits, ...)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base: RunConfig = RunConfig()
    """Template config; its method, n, policy, prm and seed are replaced per cell."""
    methods: tuple[str, ...] = ("best_of_n", "beam_search", "dvts")
    """Registered search method names."""
    ns: tuple[int, ...] = (4, 16, 64, 256)
    """Budgets N."""
    prms: tuple[str, ...] = ("self-certainty",)
    """Scorer specs."""
    policies: tuple[str, ...] = ("default",)
    """Policy specs."""
    seeds: tuple[int, ...] = (0,)
    """Sampling seeds."""
    think_budgets: tuple[int, ...] = ()
    """Thinking budgets (R1-style models), a grid axis: each cell as ``run --think-budget``,
    its directory named ``-t<T>``; empty: ``base.search.think_budget`` for every cell."""
    prefix_methods: tuple[str, ...] = ("best_of_n", "dvts", "adaptive_sc")
    """Methods whose smaller power-of-two budgets are valid prefixes of the largest run."""
    max_path_tokens_by_policy: dict[str, int] = Field(default_factory=dict)
    """Per-policy override of ``base.search.max_path_tokens``."""
    sampling_by_policy: dict[str, SamplingConfig] = Field(default_factory=dict)
    """Per-policy sampling (the family's recommended settings); the cell's seed replaces the
    seed in it."""
    engine_options: tuple[PairOptions, ...] = ()
    """Per (policy, PRM) pair: the engine and placement settings of both (the user's, completed
    by that pair's placement plan); a pair not listed uses ``base``'s."""

    @model_validator(mode="after")
    def _check(self) -> SweepGrid:
        from testtime.search import METHODS

        for field in ("methods", "ns", "prms", "policies", "seeds"):
            if not getattr(self, field):
                raise ValueError(f"sweep.{field} must not be empty")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"sweep.methods: unknown {unknown}; known: {sorted(METHODS)}")
        if any(n < 1 for n in self.ns):
            raise ValueError(f"sweep.ns must be >= 1, got {self.ns}")
        if any(t < 1 for t in self.think_budgets):
            raise ValueError(f"sweep.think_budgets must be >= 1, got {self.think_budgets}")
        return self


@dataclass
class Cell:
    method: str
    n: int
    policy: str
    prm: str
    seed: int
    run_dir: str
    """Relative to the sweep directory; for a derived cell, the run it reads."""
    budget: int
    derived: bool
    config: RunConfig
    status: str = "pending"

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "n": self.n, "policy": self.policy, "prm": self.prm,
                "seed": self.seed, "run_dir": self.run_dir, "budget": self.budget,
                "derived": self.derived, "status": self.status,
                "think_budget": self.config.search.think_budget}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.rstrip("/").split("/")[-1]).strip("_")[:40] or "x"


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def cell_config(grid: SweepGrid, method: str, n: int, policy: str, prm: str,
                seed: int, think_budget: int | None = None) -> RunConfig:
    d = grid.base.model_dump(mode="json")
    d["search"].update(method=method, n=n)
    if grid.think_budgets:
        d["search"]["think_budget"] = think_budget
    if policy in grid.max_path_tokens_by_policy:
        d["search"]["max_path_tokens"] = grid.max_path_tokens_by_policy[policy]
    if policy in grid.sampling_by_policy:
        d["sampling"] = dataclasses.asdict(grid.sampling_by_policy[policy])
    d["sampling"]["seed"] = seed
    d.update(policy=policy, prm=prm)
    for pair in grid.engine_options:
        if (pair.policy, pair.prm) == (policy, prm):
            d.update(policy_options=pair.policy_options, prm_options=pair.prm_options)
    return RunConfig.model_validate(d)


def plan(grid: SweepGrid) -> list[Cell]:
    """Every cell of the grid, run cells before the derived cells that read them."""
    cells: list[Cell] = []
    for policy in grid.policies:
        for prm in grid.prms:
            for seed in grid.seeds:
                for method in grid.methods:
                    for think in grid.think_budgets or (None,):
                        cells += _method_cells(grid, method, policy, prm, seed, think)
    return cells


def _method_cells(grid: SweepGrid, method: str, policy: str, prm: str, seed: int,
                  think: int | None) -> list[Cell]:
    def make(n: int, budget: int, derived: bool, run_n: int) -> Cell:
        cfg = cell_config(grid, method, run_n, policy, prm, seed, think)
        name = f"{method}-n{run_n}"
        if method in WIDTH_METHODS:
            name += f"-m{cfg.search.beam_width}"
        if think is not None:
            name += f"-t{think}"
        name += f"-{_slug(policy)}-{_slug(prm)}-seed{seed}"
        return Cell(method, n, policy, prm, seed, name, budget, derived, cfg)

    if method == "cot":
        return [make(1, 1, False, 1)]
    ns = sorted(set(grid.ns))
    if method not in grid.prefix_methods:
        return [make(n, n, False, n) for n in ns]
    top = max(ns)
    out = [make(top, top, False, top)]
    for n in ns[:-1]:
        ok = _is_pow2(n) and _is_pow2(top)  # records hold power-of-two prefix budgets only
        out.append(make(n, n, True, top) if ok else make(n, n, False, n))
    return out


def cell_done(cell: Cell, root: Path) -> bool:
    """The cell's directory holds this exact config and every problem finished."""
    from testtime.runner import CONFIG_FILE, RESULTS_FILE, problems_of

    run_dir = root / cell.run_dir
    cfg_path = run_dir / CONFIG_FILE
    if not cfg_path.exists():
        return False
    saved = json.loads(cfg_path.read_text())
    if config_diff(saved, json.loads(cell.config.model_dump_json())):
        return False  # the runner will name the differing fields when resumed
    ids = {p.id for p in problems_of(cell.config)}
    return ids <= RecordStore(run_dir / RESULTS_FILE).done_ids()


async def run_sweep(
    grid: SweepGrid,
    out: Path,
    *,
    policy_factory: PolicyFactory | None = None,
    scorer_factory: ScorerFactory | None = None,
    progress: bool = True,
    log: Callable[[str], None] = lambda _: None,
    ray: RayOptions | None = None,
    executor_kwargs: dict[str, Any] | None = None,
) -> list[Cell]:
    """Run every unfinished cell of ``grid`` into ``out``; returns the cells with status.

    Locally, each policy is loaded once (one in memory at a time) and each of its (policy,
    PRM) groups is built by :func:`testtime.compose.build_run`, so scorers get the policy
    (``judge``) and the problems (``oracle``) exactly as in ``testtime run``. With ``ray``,
    cells run on Ray actors instead: one actor pool per (policy, PRM) pair, shared by its
    cells (``RayExecutor.bind``), one pool at a time; ``executor_kwargs`` go to
    ``RayExecutor`` (picklable model factories, in tests).
    """
    cells = plan(grid)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / SWEEP_FILE

    def save() -> None:
        dump_json(manifest, {"grid": grid.model_dump(mode="json"),
                             "cells": [c.to_json() for c in cells]})

    save()
    todo: dict[str, dict[str, list[Cell]]] = {}
    for cell in cells:
        if cell.derived:
            continue
        if cell_done(cell, out):
            cell.status = "done (skipped)"
            log(f"skip {cell.run_dir}: already done")
            continue
        todo.setdefault(cell.policy, {}).setdefault(cell.prm, []).append(cell)

    async def run_cells(group: list[Cell], **engines: Any) -> None:
        from testtime.runner import run

        for cell in group:
            run_dir = out / cell.run_dir
            resume = (run_dir / "config.json").exists()
            log(f"{'resume' if resume else 'run'} {cell.run_dir}")
            outcome = await run(cell.config, run_dir, resume=resume, progress=progress,
                                **engines)
            cell.status = "done" if outcome.summary["missing"] == 0 and \
                outcome.summary["errors"] == 0 else "incomplete"
            save()

    if ray is not None:
        await run_on_ray(todo, ray, executor_kwargs or {}, run_cells)
    else:
        await run_locally(todo, policy_factory, scorer_factory, run_cells)
    by_dir = {c.run_dir: c.status for c in cells if not c.derived}
    for c in cells:
        if c.derived:
            c.status = f"derived: {by_dir[c.run_dir]}"
    save()
    return cells

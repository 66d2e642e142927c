"""How ``testtime sweep`` runs its cells: in this process (one policy loaded at a time, each
(policy, PRM) group built by :func:`testtime.compose.build_run`) or on Ray actor pools."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from testtime.config import RunConfig
from testtime.policy.base import Policy
from testtime.scoring.base import StepScorer

if TYPE_CHECKING:
    from testtime.distributed import RayOptions

PolicyFactory = Callable[[str], Policy]
ScorerFactory = Callable[[str], StepScorer]
Cells = dict[str, dict[str, list[Any]]]
"""policy -> PRM -> the ``sweep.Cell`` objects left to run (typed loosely: the sweep module
imports this one)."""


async def run_locally(todo: Cells,
                       policy_factory: PolicyFactory | None,
                       scorer_factory: ScorerFactory | None, run_cells: Any) -> None:
    from testtime.compose import build_run
    from testtime.runner import problems_of

    for groups in todo.values():
        first = next(iter(groups.values()))[0].config
        async with _build_policy(first, policy_factory) as policy:  # one policy at a time
            for prm_spec, group in groups.items():
                config = group[0].config
                scorer = scorer_factory(prm_spec) if scorer_factory is not None else None
                try:
                    async with build_run(config, problems_of(config), policy=policy,
                                         scorer=scorer) as built:
                        await run_cells(group, built=built)
                finally:
                    if scorer is not None:
                        await scorer.aclose()


async def run_on_ray(todo: Cells, ray: RayOptions,
                      executor_kwargs: dict[str, Any], run_cells: Any) -> None:
    from testtime.distributed import RayExecutor

    for groups in todo.values():
        for group in groups.values():  # one actor pool (set of engines) at a time
            pool = RayExecutor(group[0].config, ray, **executor_kwargs)
            try:
                for cell in group:
                    await run_cells([cell], executor=pool.bind(cell.config))
            finally:
                await pool.aclose()


def _build_policy(config: RunConfig, factory: PolicyFactory | None) -> Policy:
    """The policy of a group of cells, owned (and closed) by the sweep."""
    from testtime.compose import check_config

    check_config(config, policy=factory is None, scorer=False)
    if factory is not None:
        return factory(config.policy)
    from testtime.policy.registry import build_policy

    return build_policy(config.policy, config.policy_options)

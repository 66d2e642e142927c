"""The body of one Ray actor: a policy engine and a step scorer searching work units.

``SearchWorker`` is a plain class (no Ray import) that the driver turns into an actor with
``ray.remote``. It builds its policy and scorer once, from picklable factories, then serves
``search`` calls concurrently on the actor's event loop, so the units in flight on one actor
share the policy's batches exactly as problems do in a local run.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from testtime.config import RunConfig
from testtime.policy.base import Policy
from testtime.prompts import prompt_for_model
from testtime.scoring.base import StepScorer
from testtime.search import get_method
from testtime.search.base import SamplingConfig, SearchConfig, SearchContext, SearchResult
from testtime.types import Problem

PolicyFactory = Callable[[RunConfig], Policy]
"""Builds the actor's policy from the run config; must be picklable (a module-level function
or a ``functools.partial`` of one), because it is shipped to every actor."""
ScorerFactory = Callable[[RunConfig, Policy], StepScorer]
"""Builds the actor's step scorer from the run config and the actor's policy (a ``judge``
scores with it); picklable like :data:`PolicyFactory`."""


def registry_policy(config: RunConfig) -> Policy:
    """The policy ``config.policy`` names (the default factory: what a local run loads)."""
    from testtime.policy.registry import build_policy

    return build_policy(config.policy, config.policy_options)


def registry_scorer(config: RunConfig, policy: Policy) -> StepScorer:
    """The scorer ``config.prm`` names (the default factory: what a local run loads). The
    ``oracle`` gets each unit's reference when the unit arrives (see ``SearchWorker.search``)."""
    from testtime.scoring.registry import build_scorer

    return build_scorer(config.prm, config.prm_options, policy=policy)


@dataclass(frozen=True)
class WorkUnit:
    """The smallest piece of work handed out: one problem under one method cell.

    A lost actor loses only the units it holds; each is retried on another actor.
    """

    problem: Problem
    search: SearchConfig
    """Method and budget of the cell (a run has one; a sweep may send several)."""
    sampling: SamplingConfig | None = None
    """The cell's sampling (seed, temperature); None: the actor's run config's."""


class SearchWorker:
    """Owns one policy engine and one scorer; runs search methods on work units."""

    def __init__(
        self,
        config: RunConfig,
        policy_factory: PolicyFactory = registry_policy,
        scorer_factory: ScorerFactory = registry_scorer,
    ) -> None:
        self.config = config
        self.policy = policy_factory(config)
        self.scorer = scorer_factory(config, self.policy)
        self.ctx = SearchContext(
            policy=self.policy,
            scorer=self.scorer,
            prompt=prompt_for_model(self.policy.name, config.prompt),
            search=config.search,
            sampling=config.sampling,
        )
        self.units_done = 0

    async def ready(self) -> dict[str, Any]:
        """Where this actor runs (answered once the models are loaded)."""
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "gpus": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            "policy": self.policy.name,
        }

    async def search(self, unit: WorkUnit) -> SearchResult:
        """Search one unit; errors propagate to the driver, which decides about retries."""
        ctx = self.ctx
        if unit.search != ctx.search:
            ctx = replace(ctx, search=unit.search)
        if unit.sampling is not None and unit.sampling != ctx.sampling:
            ctx = replace(ctx, sampling=unit.sampling)
        register = getattr(self.scorer, "add_problems", None)
        if register is not None:  # the oracle scorer grades steps against the reference
            register([unit.problem])
        result = await get_method(unit.search.method)(unit.problem, ctx)
        self.units_done += 1
        return result

    async def shutdown(self) -> int:
        """Release the engines before the actor is killed; returns the units it searched."""
        await self.policy.aclose()
        await self.scorer.aclose()
        return self.units_done

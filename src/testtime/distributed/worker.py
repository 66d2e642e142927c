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
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from testtime.compose import BuiltRun, build_run
from testtime.config import RunConfig
from testtime.policy.base import Policy
from testtime.scoring.base import StepScorer
from testtime.search.base import SamplingConfig, SearchConfig, SearchResult
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


def plan_for_actor(config: RunConfig, gpu_fraction: float) -> RunConfig:
    """``config`` with its engine options completed by a placement plan for the GPUs this actor
    sees (Ray sets ``CUDA_VISIBLE_DEVICES``); options the user gave win, as in a local run.

    An actor holding a fraction ``f < 1`` of a GPU (``--gpus-per-actor 0.5``: two actors on one
    GPU) plans for ``f`` of each GPU's memory, and vLLM's ``gpu_memory_utilization``, a share
    of the whole GPU, is scaled by ``f``: two actors' engines then fit side by side. Without a
    GPU the config is returned unchanged."""
    from testtime.placement import detect_gpus, plan_placement
    from testtime.placement.plan import GpuInfo

    gpus = detect_gpus()
    if not gpus:
        return config
    fraction = min(gpu_fraction, 1.0) if gpu_fraction > 0 else 1.0
    given = dict(config.policy_options)
    if "gpu_memory_utilization" in given:  # the user's share is of the whole GPU
        given["gpu_memory_utilization"] = min(1.0, given["gpu_memory_utilization"] / fraction)
    plan = plan_placement(config.policy, config.prm,
                          [GpuInfo(g.index, g.total_gb * fraction) for g in gpus],
                          policy_options=given, prm_options=config.prm_options)
    policy_options = {**plan.policy_options(), **config.policy_options}
    if "gpu_memory_utilization" in plan.policy_options() and \
            "gpu_memory_utilization" not in config.policy_options:
        policy_options["gpu_memory_utilization"] = round(
            plan.policy_options()["gpu_memory_utilization"] * fraction, 4)
    return config.model_copy(update={
        "policy_options": policy_options,
        "prm_options": {**plan.prm_options(), **config.prm_options}})


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
    """Owns one policy engine and one scorer; runs search methods on work units.

    The engines are built by :func:`testtime.compose.build_run` (as in a local run) when the
    actor first answers :meth:`ready`; factories other than the registry's (tests) inject
    theirs. :meth:`shutdown` closes them.
    """

    def __init__(
        self,
        config: RunConfig,
        policy_factory: PolicyFactory = registry_policy,
        scorer_factory: ScorerFactory = registry_scorer,
        gpu_fraction: float = 1.0,
    ) -> None:
        self.config = config
        self.gpu_fraction = gpu_fraction
        """The share of each of its GPUs this actor holds (Ray's ``num_gpus`` below 1)."""
        self.policy_factory = policy_factory
        self.scorer_factory = scorer_factory
        self.built: BuiltRun | None = None
        self._stack = AsyncExitStack()
        self.units_done = 0

    async def _build(self) -> BuiltRun:
        if self.built is None:
            if self.policy_factory is registry_policy:  # registry engines: placed by a plan
                self.config = plan_for_actor(self.config, self.gpu_fraction)
            policy = scorer = None
            if self.policy_factory is not registry_policy:
                policy = self.policy_factory(self.config)
                self._stack.push_async_callback(policy.aclose)
            if self.scorer_factory is not registry_scorer:
                if policy is None:  # a custom scorer with the registry's policy
                    policy = registry_policy(self.config)
                    self._stack.push_async_callback(policy.aclose)
                scorer = self.scorer_factory(self.config, policy)
                self._stack.push_async_callback(scorer.aclose)
            self.built = await self._stack.enter_async_context(
                build_run(self.config, policy=policy, scorer=scorer))
        return self.built

    async def ready(self) -> dict[str, Any]:
        """Where this actor runs (answered once the models are loaded)."""
        built = await self._build()
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "gpus": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            "policy": built.policy.name,
        }

    async def search(self, unit: WorkUnit) -> SearchResult:
        """Search one unit; errors propagate to the driver, which decides about retries."""
        built = await self._build()
        config = self.config.model_copy(update={
            "search": unit.search, "sampling": unit.sampling or self.config.sampling})
        if config != built.config:
            built = built.for_config(config)
        register = getattr(built.scorer, "add_problems", None)
        if register is not None:  # the oracle scorer grades steps against the reference
            register([unit.problem])
        result = await built.method(unit.problem, built.ctx)
        self.units_done += 1
        return result

    async def shutdown(self) -> int:
        """Release the engines before the actor is killed; returns the units it searched."""
        self.built = None
        await self._stack.aclose()
        return self.units_done

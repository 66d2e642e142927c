"""The Ray driver: a pool of :class:`SearchWorker` actors behind the runner's executor protocol.

The runner stays the only writer: it hands each problem to :meth:`RayExecutor.search` (one
work unit), gets the :class:`SearchResult` back, grades it, applies the selection rules and
appends the record. The executor's job is placement and loss:

- ``start`` connects to Ray (or starts a local one), creates the actors (one per GPU group by
  default) and returns once at least one has loaded its models; the rest join as they do.
- ``search`` sends the unit to the least busy live actor (at most ``cap`` units in flight per
  actor, so a lost actor loses few units). When the actor dies, the unit fails with
  :class:`ActorLostError`; the runner's retry policy sends it again, to another actor, and a
  replacement actor is started (up to ``max_replacements`` in all). An error raised by the
  search itself is re-raised as the original exception, so retries treat both alike.
- ``aclose`` releases the engines, kills the actors and stops the Ray it started.

Ray is imported only when ``start`` runs (through ``import_ray``): without ``--ray`` nothing
imports it. The pool's value types, errors and sizing live in :mod:`.pool_types`, the
per-sweep-cell view of a pool in :mod:`.bound`; both are re-exported here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, Self

from testtime.config import RunConfig
from testtime.distributed.bound import BoundExecutor
from testtime.distributed.pool_types import (  # noqa: F401  (re-exported for callers)
    SUMMARY_CHARS,
    ActorLostError,
    ActorSlot,
    ExecutorError,
    ExecutorStats,
    PoolPlan,
    RayOptions,
    import_ray,
    ray_error_summary,
)
from testtime.distributed.worker import (
    PolicyFactory,
    ScorerFactory,
    SearchWorker,
    WorkUnit,
    registry_policy,
    registry_scorer,
)
from testtime.retry import PermanentError, describe
from testtime.search.base import SearchContext, SearchResult
from testtime.types import Problem

log = logging.getLogger(__name__)

#: Seconds an actor may take to release its engines when the pool closes.
SHUTDOWN_TIMEOUT_S = 10.0


async def _resolved(ref: Awaitable[Any]) -> Any:
    return await ref


class RayExecutor:
    """A pool of :class:`SearchWorker` actors; see the module docstring for the contract.

    ``policy_factory``/``scorer_factory`` build each actor's engines from the run config and
    must be picklable (they travel to every actor); the defaults load what ``config`` names.
    Use as an async context manager, or call :meth:`aclose`.
    """

    def __init__(
        self,
        config: RunConfig,
        options: RayOptions | None = None,
        *,
        policy_factory: PolicyFactory = registry_policy,
        scorer_factory: ScorerFactory = registry_scorer,
    ) -> None:
        self.config = config
        self.options = options or RayOptions()
        self._gpu_fraction = 1.0
        """Each actor's share of its GPUs (``--gpus-per-actor`` below 1), set at start."""
        self.policy_factory = policy_factory
        self.scorer_factory = scorer_factory
        self.stats = ExecutorStats()
        self.slots: list[ActorSlot] = []
        self.cap = 1
        """Most units in flight on one actor (set by :meth:`start`)."""
        self._ray: Any = None
        self._actor_cls: Any = None
        self._owns_ray = False
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._cond: asyncio.Condition | None = None
        self._watchers: set[asyncio.Task[None]] = set()
        self._failures: list[str] = []
        self._max_replacements = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def live_actors(self) -> list[ActorSlot]:
        """Actors that loaded their models and have not been lost."""
        return [s for s in self.slots if s.ready and s.alive]

    async def start(self) -> None:
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if not self._started:
                await self._start()
                self._started = True

    async def _start(self) -> None:
        ray = import_ray()
        opts = self.options
        if not ray.is_initialized():
            where = opts.address or "a new local Ray (or $RAY_ADDRESS)"
            try:
                ray.init(address=opts.address, runtime_env=opts.runtime_env)
            except Exception as exc:  # bad address, no cluster, port clash: say where
                raise ExecutorError(f"cannot start or join Ray at {where}: {describe(exc)}") \
                    from exc
            self._owns_ray = True
        self._ray = ray
        cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
        plan = opts.plan(cluster_gpus, self.config.max_concurrent_problems)
        n, gpus = plan.actors, plan.gpus_per_actor
        self._gpu_fraction = gpus if 0 < gpus < 1 else 1.0
        self.cap, self._max_replacements = plan.cap, plan.max_replacements
        actor_options: dict[str, Any] = {"num_cpus": opts.cpus_per_actor, "num_gpus": gpus,
                                         "max_restarts": 0}
        if opts.runtime_env is not None:
            actor_options["runtime_env"] = opts.runtime_env
        self._actor_cls = ray.remote(SearchWorker).options(**actor_options)
        self._cond = asyncio.Condition()
        log.info("starting %d Ray actors (%g GPU, %g CPU each; cluster has %g GPUs)", n, gpus,
                 opts.cpus_per_actor, cluster_gpus)
        for _ in range(n):
            self._spawn()
        async with self._cond:
            await self._cond.wait_for(lambda: bool(self.live_actors())
                                      or not any(s.alive for s in self.slots))
        if not self.live_actors():
            raise ExecutorError(
                f"no Ray actor could start ({len(self._failures)} failed); first error: "
                f"{self._failures[0] if self._failures else 'unknown'}"
            )

    def _spawn(self) -> None:
        name = f"worker-{len(self.slots)}"
        handle = self._actor_cls.remote(self.config, self.policy_factory, self.scorer_factory,
                                        self._gpu_fraction)
        slot = ActorSlot(name, handle)
        self.slots.append(slot)
        task = asyncio.get_running_loop().create_task(self._watch_start(slot))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _watch_start(self, slot: ActorSlot) -> None:
        assert self._cond is not None
        try:
            slot.info = await asyncio.wait_for(_resolved(slot.handle.ready.remote()),
                                               self.options.actor_start_timeout_s)
            slot.ready = True
            self.stats.actors_ready += 1
            log.info("%s ready: %s", slot.name, slot.info)
        except (TimeoutError, self._ray.exceptions.RayError) as exc:
            # failed to load its models (RayActorError), not placeable, or timed out
            reason = (f"not ready within {self.options.actor_start_timeout_s:g} s"
                      if isinstance(exc, TimeoutError) else ray_error_summary(exc))
            self._failures.append(f"{slot.name}: {reason}")
            self.stats.start_failures += 1
            slot.alive = False
            log.error("%s failed to start: %s", slot.name, reason)
            self._kill(slot)
        async with self._cond:
            self._cond.notify_all()

    def bind(self, config: RunConfig) -> BoundExecutor:
        """These actors serving another run config, a sweep cell: the same models (policy,
        PRM, prompt and their options) under another method, budget or sampling."""
        fixed = ("policy", "policy_options", "prm", "prm_options", "prompt")
        mine, theirs = self.config.model_dump(), config.model_dump()
        differ = [f for f in fixed if mine[f] != theirs[f]]
        if differ:
            raise ValueError(f"cannot share Ray actors across runs that differ in "
                             f"{', '.join(differ)}; use one executor per policy/PRM pair")
        return BoundExecutor(self, config)

    async def search(self, problem: Problem, ctx: SearchContext | None = None) -> SearchResult:
        return await self.search_unit(WorkUnit(problem, self.config.search))

    async def search_unit(self, unit: WorkUnit) -> SearchResult:
        """Search one unit on the least busy live actor (see the module docstring)."""
        await self.start()
        ray = self._ray
        problem = unit.problem
        slot = await self._acquire()
        try:
            return await slot.handle.search.remote(unit)
        except ray.exceptions.RayTaskError as exc:
            # The search raised in the actor: surface the original exception (retry policy,
            # error record) rather than Ray's wrapper with its remote traceback.
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise RuntimeError(ray_error_summary(exc)) from None
        except ray.exceptions.ActorUnavailableError as exc:  # transient: the actor may recover
            raise ActorLostError(f"{slot.name} unavailable: {ray_error_summary(exc)}") from None
        except ray.exceptions.RayActorError as exc:
            self.stats.units_lost += 1
            self._lose(slot, exc)
            raise ActorLostError(
                f"{slot.name} was lost holding problem {problem.id}: {ray_error_summary(exc)}"
            ) from None
        finally:
            assert self._cond is not None
            async with self._cond:
                slot.in_flight -= 1
                self._cond.notify_all()

    async def _acquire(self) -> ActorSlot:
        """Reserve a unit slot on the least busy live actor, waiting while all are full."""
        assert self._cond is not None
        async with self._cond:
            while True:
                free = [s for s in self.live_actors() if s.in_flight < self.cap]
                if free:
                    slot = min(free, key=lambda s: s.in_flight)
                    slot.in_flight += 1
                    self.stats.units_sent += 1
                    return slot
                if not any(s.alive for s in self.slots):
                    raise PermanentError(
                        f"no Ray actor is left ({self.stats.actors_lost} lost, "
                        f"{self.stats.start_failures} failed to start, replacement budget "
                        f"{self._max_replacements} used up); resume the run to finish it"
                    )
                await self._cond.wait()

    def _lose(self, slot: ActorSlot, exc: BaseException) -> None:
        if not slot.alive:
            return  # every unit it held reports the same death
        slot.alive = False
        self.stats.actors_lost += 1
        log.warning("%s lost (%s); %d unit(s) in flight are retried elsewhere", slot.name,
                    ray_error_summary(exc), slot.in_flight)
        if self.stats.replacements < self._max_replacements:
            self.stats.replacements += 1
            self._spawn()

    def _kill(self, slot: ActorSlot) -> None:
        try:
            self._ray.kill(slot.handle)
        except (ValueError, self._ray.exceptions.RayError) as exc:  # gone with its node
            log.debug("killing %s: %s", slot.name, describe(exc))

    async def aclose(self) -> None:
        """Release every actor's engines, kill the actors, stop a Ray this pool started."""
        for task in list(self._watchers):
            task.cancel()
        if self._ray is None:
            return
        live = self.live_actors()
        calls = [asyncio.wait_for(_resolved(s.handle.shutdown.remote()), SHUTDOWN_TIMEOUT_S)
                 for s in live]
        for slot, outcome in zip(live, await asyncio.gather(*calls, return_exceptions=True),
                                 strict=True):
            if isinstance(outcome, BaseException):
                log.warning("%s did not shut down cleanly: %s", slot.name,
                            ray_error_summary(outcome))
        for slot in self.slots:
            self._kill(slot)
            slot.alive = False
        if self._owns_ray:
            self._ray.shutdown()
            self._owns_ray = False
        self._ray = None
        self._started = False


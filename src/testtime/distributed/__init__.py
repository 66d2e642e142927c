"""Distributed runs: problems spread over Ray actors, results written by the one driver.

``testtime run --ray [ADDRESS]`` builds a :class:`RayExecutor` and hands it to the runner.
Each actor (:class:`SearchWorker`) owns a policy engine and a step scorer, loaded once from
picklable factories; the driver sends it work units (one problem under the run's method
cell) and gets search results back, which the runner grades and appends as in a local run,
so a distributed run writes the same records. Losing an actor loses only the units it held;
they are retried on other actors and a replacement actor is started.

Importing this package does not import Ray; :meth:`RayExecutor.start` does.
"""

from testtime.distributed.driver import (
    ActorLostError,
    ActorSlot,
    ExecutorError,
    ExecutorStats,
    RayExecutor,
    RayOptions,
    import_ray,
)
from testtime.distributed.executor import SearchExecutor
from testtime.distributed.worker import (
    PolicyFactory,
    ScorerFactory,
    SearchWorker,
    WorkUnit,
    registry_policy,
    registry_scorer,
)

__all__ = [
    "ActorLostError",
    "ActorSlot",
    "ExecutorError",
    "ExecutorStats",
    "PolicyFactory",
    "RayExecutor",
    "RayOptions",
    "ScorerFactory",
    "SearchExecutor",
    "SearchWorker",
    "WorkUnit",
    "import_ray",
    "registry_policy",
    "registry_scorer",
]

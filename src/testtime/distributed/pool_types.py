"""Value types, errors and Ray helpers of the Ray actor pool (the driver's :class:`RayExecutor`).

What the driver (:mod:`testtime.distributed.driver`) needs besides the pool itself:

- :class:`RayOptions`, where and how many actors to run (validated on construction, no I/O),
  and the :class:`PoolPlan` they resolve to on a given cluster (a pure function of both);
- :class:`ExecutorStats`, what happened to the pool during a run, and :class:`ActorSlot`,
  what the driver knows about one actor;
- the errors callers catch: :class:`ExecutorError` (the pool cannot start) and
  :class:`ActorLostError` (a unit's actor died; the unit can be retried elsewhere);
- :func:`import_ray` (the only place Ray is imported, and only when called) and
  :func:`ray_error_summary` (the informative line of a Ray error).

Importing this module does not import Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

#: Length of a Ray error as the driver quotes it in logs and error records.
SUMMARY_CHARS = 160


class ExecutorError(RuntimeError):
    """The pool cannot start: Ray is missing or unreachable, or no actor could load its models."""


class ActorLostError(RuntimeError):
    """The actor holding a unit died (or its node did); the unit can be retried elsewhere."""


@dataclass(frozen=True)
class RayOptions:
    """Where and how many actors to run. Validates on construction; no I/O."""

    address: str | None = None
    """Ray address: None starts a local Ray (or joins ``$RAY_ADDRESS``); ``auto`` joins the
    cluster this machine belongs to; ``HOST:PORT`` or ``ray://HOST:10001`` a remote head."""
    actors: int | None = None
    """Number of actors; None: one per ``gpus_per_actor`` GPUs of the cluster, else 1."""
    gpus_per_actor: float | None = None
    """GPUs reserved per actor (fractions share a GPU); None: 1 when the cluster has GPUs."""
    cpus_per_actor: float = 1.0
    """CPUs reserved per actor."""
    max_in_flight_per_actor: int | None = None
    """Units one actor holds at once; None: the run's concurrency divided by the actors."""
    max_replacements: int | None = None
    """Actors started to replace lost ones, over the whole run; None: twice the actors."""
    actor_start_timeout_s: float = 900.0
    """Longest wait for an actor to be placed and load its models before it is given up."""
    runtime_env: dict[str, Any] | None = None
    """Ray runtime environment for the actors (e.g. to ship this package to a cluster)."""

    def __post_init__(self) -> None:
        if self.actors is not None and self.actors < 1:
            raise ValueError(f"--ray-actors must be >= 1, got {self.actors}")
        if self.gpus_per_actor is not None and self.gpus_per_actor < 0:
            raise ValueError(f"--gpus-per-actor must be >= 0, got {self.gpus_per_actor}")
        if self.cpus_per_actor < 0:
            raise ValueError(f"cpus_per_actor must be >= 0, got {self.cpus_per_actor}")
        if self.max_in_flight_per_actor is not None and self.max_in_flight_per_actor < 1:
            raise ValueError("max_in_flight_per_actor must be >= 1")
        if self.max_replacements is not None and self.max_replacements < 0:
            raise ValueError("max_replacements must be >= 0")
        if not self.actor_start_timeout_s > 0:
            raise ValueError("actor_start_timeout_s must be > 0")

    def plan(self, cluster_gpus: float, max_concurrent_problems: int) -> PoolPlan:
        """These options resolved on a cluster with ``cluster_gpus`` GPUs, for a run that
        keeps ``max_concurrent_problems`` problems in flight (the defaults above)."""
        gpus = self.gpus_per_actor if self.gpus_per_actor is not None else (
            1.0 if cluster_gpus >= 1 else 0.0)
        if self.actors is not None:
            n = self.actors
        elif gpus > 0:
            n = max(1, int(cluster_gpus // gpus))
        else:
            n = 1
        cap = self.max_in_flight_per_actor or max(1, math.ceil(max_concurrent_problems / n))
        replacements = self.max_replacements if self.max_replacements is not None else 2 * n
        return PoolPlan(n, gpus, cap, replacements)


@dataclass(frozen=True)
class PoolPlan:
    """What :meth:`RayOptions.plan` resolved: the pool the driver starts."""

    actors: int
    gpus_per_actor: float
    cap: int
    """Most units in flight on one actor."""
    max_replacements: int
    """Actors started to replace lost ones, over the whole run."""


@dataclass
class ExecutorStats:
    """What happened to the pool during a run (for logs, reports and tests)."""

    actors_ready: int = 0
    start_failures: int = 0
    actors_lost: int = 0
    replacements: int = 0
    units_sent: int = 0
    units_lost: int = 0
    """Units whose actor died while holding them (each was retried per the retry policy)."""


@dataclass
class ActorSlot:
    """One actor of the pool and what the driver knows about it."""

    name: str
    handle: Any
    ready: bool = False
    alive: bool = True
    in_flight: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    """What the actor reported once ready: pid, host, GPUs, policy."""


def import_ray() -> Any:
    """The ``ray`` module, or :class:`ExecutorError` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ExecutorError(
            "--ray needs Ray, an optional extra: pip install 'testtime[ray]'"
        ) from exc
    return ray


def ray_error_summary(exc: BaseException) -> str:
    """The informative part of a Ray error: its last line (they carry remote tracebacks),
    cut to :data:`SUMMARY_CHARS` (they go on with troubleshooting advice)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    if len(text) > SUMMARY_CHARS:
        text = text[: SUMMARY_CHARS - 3].rstrip() + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

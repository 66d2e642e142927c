"""What ``testtime run`` needs besides its options: the retry policy and Ray executor, the
bare ``--ray`` flag, awaiting a job under an executor, and printing a summary."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from testtime.cli.common import RAY_LOCAL, fail, show
from testtime.config import RunConfig

T = TypeVar("T")


def print_summary(summary: dict[str, Any], summary_tables: Any) -> None:
    show(*summary_tables(summary))
    if "adaptive" in summary:
        from testtime.analysis.adaptive_summary import adaptive_table

        show(adaptive_table(summary["adaptive"]))


def fill_ray_flag(argv: list[str]) -> list[str]:
    """``--ray`` given without a value (last, or before another option) -> ``--ray local``."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg == "--":  # everything after it is an argument
            return out + argv[i + 1 :]
        if arg == "--ray" and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            out.append(RAY_LOCAL)
    return out


def retry_and_executor(
    cfg: RunConfig, ray: str | None, ray_actors: int | None, gpus_per_actor: float | None,
    max_retries: int,
) -> tuple[Any, Any]:
    """The retry policy and, with ``--ray``, the Ray executor (Ray is imported only later,
    when the executor starts)."""
    from testtime.retry import RetryPolicy

    if max_retries < 0:
        fail(f"--max-retries {max_retries}: must be >= 0")
    retry = RetryPolicy(max_retries=max_retries)
    if ray is None:
        if ray_actors is not None or gpus_per_actor is not None:
            fail("--ray-actors/--gpus-per-actor only apply with --ray")
        return retry, None
    from testtime.distributed import RayExecutor, RayOptions

    options = RayOptions(address=None if ray == RAY_LOCAL else ray, actors=ray_actors,
                         gpus_per_actor=gpus_per_actor)
    return retry, RayExecutor(cfg, options)


def planned_options(policy: str, prm: str, engine: Any, *, plan: bool = True
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The policy's and the scorer's options: what the user gave (``engine``, an
    :class:`testtime.cli.engine_cli.EngineArgs`), completed by the placement plan on the GPUs
    this machine has (:func:`testtime.placement.plan_placement`; the same plan `testtime plan`
    prints). Settings the user gave win over the plan's. A layout that cannot fit is a
    one-line user error here, before anything loads. Without a GPU, or with nothing to place
    (llama.cpp, a served policy and a model-free or served scorer), there is no plan; nor with
    ``plan=False`` (``--ray``: each actor plans for the GPUs Ray gives it, see
    :func:`testtime.distributed.worker.plan_for_actor`)."""
    from testtime.policy.registry import check_policy_spec, parse_policy_spec
    from testtime.scoring.registry import scorer_settings

    check_policy_spec(policy)  # names a bad spec before the options are read
    policy_options, prm_options = engine.policy_options(), engine.prm_options(prm)
    on_gpu = parse_policy_spec(policy)[0] in ("hf", "vllm") or "gpus" in scorer_settings(prm)
    cpu = policy_options.get("device") == "cpu" and prm_options.get("device") in (None, "cpu")
    if not plan or not on_gpu or cpu:
        return policy_options, prm_options
    from testtime.placement import detect_gpus, plan_placement

    gpus = detect_gpus()
    if not gpus:
        return policy_options, prm_options
    plan = plan_placement(policy, prm, gpus, policy_options=policy_options,
                          prm_options=prm_options)
    return ({**plan.policy_options(), **policy_options},
            {**plan.prm_options(), **prm_options})


async def run_with(executor: Any, job: Coroutine[Any, Any, T]) -> T:
    """Await ``job`` while the executor (if any) is open; close it whatever happens."""
    if executor is None:
        return await job
    async with executor:
        return await job

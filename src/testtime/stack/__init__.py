"""``testtime serve stack``: the policy (``vllm serve``) and the PRM service as child processes.

:func:`build_stack` turns the models and their settings (the placement plan's options,
overridden by the user's; the same dicts ``run`` takes) into two :class:`ServerSpec`
(``stack/servers.py``); :func:`serve_stack` starts them, waits until both answer, hands the
``testtime run`` line to ``on_ready`` and serves until ``stop`` is set, then stops both
(``stack/supervisor.py``: process groups, SIGTERM then SIGKILL, no process left). A server that
exits or does not answer in time raises :class:`ServerFailed` with the tail of its log, after
the other one was stopped.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from testtime.stack.servers import (
    DEFAULT_CPU_KV_CACHE_GIB,
    DEFAULT_POLICY_PORT,
    DEFAULT_PRM_PORT,
    StackServers,
    free_port,
    prm_server,
    run_line,
    vllm_prm_server,
    vllm_server,
)
from testtime.stack.supervisor import (
    DEFAULT_GRACE_S,
    ServerFailed,
    ServerSpec,
    Supervisor,
    group_members,
)

#: Seconds both servers get to answer (vLLM imports, loads weights and profiles memory;
#: a 72B model from a cold disk takes minutes).
DEFAULT_START_TIMEOUT_S = 1200.0
PrmEngine = Literal["testtime", "vllm"]
#: Scorer specs that need no server of their own.
_NO_SERVER = ("self-certainty", "confidence", "oracle", "judge")


def policy_model(spec: str) -> str:
    """What ``vllm serve`` loads for ``--policy``: ``MODEL`` or ``vllm:MODEL`` (Hub id or
    directory); ``default`` and ``.gguf`` files as the safetensors copy ``vllm:`` runs."""
    backend, sep, rest = spec.partition(":")
    if sep and backend == "vllm":
        spec = rest
    elif sep and backend in ("hf", "llamacpp", "openai"):
        raise ValueError(f"the stack serves the policy with vLLM: give MODEL or vllm:MODEL, "
                         f"not {spec!r}")
    from testtime.policy.model_files import EMBEDDED_NAME, materialize, resolve

    if spec in ("default", EMBEDDED_NAME) or spec.endswith(".gguf"):
        return materialize(resolve(spec)).path
    return spec


def plan_options(model: str, prm: str, policy_options: Mapping[str, Any],
                 prm_options: Mapping[str, Any], *, num_gpus: int | None = None,
                 gpu_memory: float | None = None,
                 prm_engine: PrmEngine = "testtime") -> tuple[dict[str, Any], dict[str, Any], bool]:
    """The placement plan's options for the policy and the PRM (the user's options are its
    constraints), and whether there is no GPU (the policy then runs on vLLM's CPU build and
    the PRM on the CPU). ``num_gpus``/``gpu_memory`` plan for another machine's GPUs. A layout
    that cannot fit raises ``PlacementError`` (one line) before anything starts.

    A PRM on vLLM's pooling runner takes the plan's GPUs and, on each, the planned GiB as its
    ``gpu_memory_utilization`` (tensor parallel over them when there are several)."""
    from testtime.errors import UserError
    from testtime.placement import detect_gpus, given_gpus, plan_placement

    if (num_gpus is None) != (gpu_memory is None):
        raise UserError("give --num-gpus and --gpu-memory together", "--num-gpus",
                        str(num_gpus))
    gpus = given_gpus(num_gpus, gpu_memory) if num_gpus is not None and gpu_memory is not None \
        else detect_gpus()
    if not gpus:
        return {}, {}, True
    plan = plan_placement(f"vllm:{model}", prm, gpus, policy_options=policy_options,
                          prm_options=prm_options)
    if prm_engine != "vllm" or not plan.prm.gpus:
        return plan.policy_options(), plan.prm_options(), False
    totals = {g.index: g.total_gb for g in gpus}
    util = min(plan.prm.shares_gb[g] / totals[g] for g in plan.prm.gpus)
    return plan.policy_options(), {
        "gpus": plan.prm.gpus, "tensor_parallel_size": len(plan.prm.gpus),
        "gpu_memory_utilization": math.floor(util * 100) / 100}, False


def build_stack(policy: str, prm: str, policy_options: Mapping[str, Any],
                prm_options: Mapping[str, Any], *, on_cpu: bool, host: str = "127.0.0.1",
                policy_port: int = DEFAULT_POLICY_PORT, prm_port: int = DEFAULT_PRM_PORT,
                prm_engine: PrmEngine = "testtime", vllm: str | None = None,
                cpu_kv_cache_gib: float = DEFAULT_CPU_KV_CACHE_GIB) -> StackServers:
    """The two servers and the ``testtime run`` line. ``policy_options``/``prm_options`` are
    ``RunConfig``'s (placement plan merged with the user's options); a port 0 is replaced by a
    free one. Raises ``ValueError`` for a spec or setting the stack cannot serve."""
    from testtime.errors import check_model_source
    from testtime.scoring.registry import check_scorer_options, check_scorer_spec

    if prm in _NO_SERVER or prm.startswith(("http://", "https://", "vllm-pooling:")):
        raise ValueError(f"--prm {prm} needs no PRM server: pass it to `testtime run` as it is")
    check_scorer_spec(prm)  # a missing model fails here, in one line, before anything starts
    model = policy_model(policy)
    check_model_source(model, "--policy", policy)
    policy_port = policy_port or free_port(host)
    prm_port = prm_port or free_port(host)
    if policy_port == prm_port:
        raise ValueError(f"the policy and the PRM cannot both listen on port {prm_port}")
    policy_server = vllm_server("policy", model, policy_options, host=host, port=policy_port,
                                on_cpu=on_cpu, vllm=vllm, cpu_kv_cache_gib=cpu_kv_cache_gib)
    if prm_engine == "vllm":
        scorer, prm_spec = vllm_prm_server(prm, prm_options, host=host, port=prm_port,
                                           on_cpu=on_cpu, vllm=vllm,
                                           cpu_kv_cache_gib=cpu_kv_cache_gib)
    else:
        check_scorer_options(prm, dict(prm_options))  # what `serve prm` would refuse at start
        scorer = prm_server(prm, prm_options, host=host, port=prm_port)
        prm_spec = scorer.url
    extra = ["--trust-remote-code"] if policy_options.get("trust_remote_code") else []
    return StackServers(policy_server, scorer, run_line(model, policy_server.url, prm_spec,
                                                        extra))


def serve_stack(servers: StackServers, log_dir: Path, *, stop: threading.Event,
                on_ready: Callable[[StackServers, dict[str, int]], None],
                start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
                grace_s: float = DEFAULT_GRACE_S) -> bool:
    """Run both servers until ``stop`` is set: True when they served and were stopped, False
    when ``stop`` came before they answered. ``on_ready(servers, pids)`` runs once both
    answer. A server failure raises :class:`ServerFailed` (both stopped by then)."""
    with Supervisor([servers.policy, servers.prm], log_dir, grace_s=grace_s) as supervisor:
        supervisor.start()
        if not supervisor.wait_ready(start_timeout_s, stop):
            return False
        on_ready(servers, supervisor.pids)
        supervisor.watch(stop)
    return True


__all__ = ["DEFAULT_CPU_KV_CACHE_GIB", "DEFAULT_GRACE_S", "DEFAULT_START_TIMEOUT_S",
           "ServerFailed", "ServerSpec", "StackServers", "Supervisor", "build_stack",
           "group_members", "plan_options", "policy_model", "serve_stack"]

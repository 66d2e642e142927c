"""``testtime serve stack``: the paper's step 1 (policy on ``vllm serve``, PRM on ``testtime serve
prm``) in one command; the logic lives in :mod:`testtime.stack`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from testtime.cli import engine_cli as opt
from testtime.cli.common import err_console, fail, is_loopback, user_errors
from testtime.stack import DEFAULT_CPU_KV_CACHE_GIB, DEFAULT_GRACE_S, DEFAULT_START_TIMEOUT_S


def stack(
    policy: Annotated[str, typer.Option(help="The policy vLLM serves: MODEL or vllm:MODEL "
                                             "(Hub id or directory; default: the embedded "
                                             "SmolLM2's safetensors copy)")],
    prm: Annotated[str, typer.Option(help="The PRM: FAMILY:PATH (math_shepherd, rlhflow, "
                                          "skywork, qwen_prm), judge:hf:PATH")],
    host: Annotated[str, typer.Option(help="Interface both servers bind (0.0.0.0 exposes "
                                           "them to the network)")] = "127.0.0.1",
    policy_port: Annotated[int, typer.Option(help="Port of vllm serve (0: a free one)")]
    = 8000,
    prm_port: Annotated[int, typer.Option(help="Port of the PRM service (0: a free one)")]
    = 8001,
    prm_engine: Annotated[str, typer.Option(
        help="testtime (`testtime serve prm`, transformers) or vllm (vLLM's pooling runner; "
             "qwen_prm, math_shepherd, rlhflow)")] = "testtime",
    log_dir: Annotated[Path, typer.Option(help="Where policy.log and prm.log go")]
    = Path("stack-logs"),
    vllm: Annotated[str | None, typer.Option(
        help="vLLM to run: its `vllm` executable, or a Python with vLLM installed "
             "[default: vllm on PATH]")] = None,
    start_timeout: Annotated[float, typer.Option(
        help="Seconds both servers get to answer")] = DEFAULT_START_TIMEOUT_S,
    grace: Annotated[float, typer.Option(
        help="Seconds between SIGTERM and SIGKILL when stopping")] = DEFAULT_GRACE_S,
    cpu_kv_cache_gb: Annotated[float, typer.Option(
        help="vLLM's CPU build (no GPU): GiB of KV cache (VLLM_CPU_KVCACHE_SPACE)", min=0.1)]
    = DEFAULT_CPU_KV_CACHE_GIB,
    gpus: opt.Gpus = None,
    tensor_parallel_size: opt.TensorParallel = None,
    gpu_memory_utilization: opt.GpuMemoryUtilization = None,
    max_model_len: opt.MaxModelLen = None,
    dtype: opt.Dtype = None,
    max_batch_seqs: opt.MaxBatchSeqs = None,
    engine_arg: opt.EngineArg = None,
    prm_device: opt.PrmDevice = None,
    prm_dtype: opt.PrmDtype = None,
    prm_gpus: opt.PrmGpus = None,
    prm_device_map: opt.PrmDeviceMap = None,
    prm_max_memory: opt.PrmMaxMemory = None,
    prm_kv_cache_gb: opt.PrmKvCacheGb = None,
    prm_max_batch_tokens: opt.PrmMaxBatchTokens = None,
    prm_arg: opt.PrmArg = None,
    trust_remote_code: opt.TrustRemoteCode = False,
    num_gpus: opt.NumGpus = None,
    gpu_memory: opt.GpuMemory = None,
) -> None:
    """Start the policy (`vllm serve`) and the PRM service on their GPUs, wait until both
    answer, print the `testtime run` line that uses them; Ctrl-C or SIGTERM stops both.

    Placement (GPUs, tensor parallel, memory share, context length, the PRM's device map)
    comes from the placement plan (`testtime plan`); an option given here overrides it."""
    import shlex
    import signal
    import threading

    from testtime.cli.engine_cli import EngineArgs
    from testtime.stack import (
        ServerFailed,
        build_stack,
        plan_options,
        policy_model,
        serve_stack,
    )

    if prm_engine not in ("testtime", "vllm"):
        fail(f"--prm-engine {prm_engine}: use testtime or vllm")
    with user_errors():
        given = EngineArgs.of(locals())  # the engine options above
        policy_opts, prm_opts = given.policy_options(), given.prm_options(prm)
        model = policy_model(policy)
        planned_policy, planned_prm, on_cpu = plan_options(
            model, prm, policy_opts, prm_opts, num_gpus=num_gpus, gpu_memory=gpu_memory,
            prm_engine=prm_engine)  # type: ignore[arg-type]
        servers = build_stack(model, prm, {**planned_policy, **policy_opts},
                              {**planned_prm, **prm_opts}, on_cpu=on_cpu, host=host,
                              policy_port=policy_port, prm_port=prm_port,
                              prm_engine=prm_engine,  # type: ignore[arg-type]
                              vllm=vllm, cpu_kv_cache_gib=cpu_kv_cache_gb)
    if not is_loopback(host):
        err_console.print(f"[yellow]warning:[/yellow] serving on {host}: anyone who can reach "
                          f"these ports can use the models")

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, on_signal) for s in handled}

    def ready(ready_servers: Any, pids: dict[str, int]) -> None:
        for server in (ready_servers.policy, ready_servers.prm):
            err_console.print(f"{server.name}: {server.url} (pid {pids[server.name]}, log "
                              f"{log_dir / (server.name + '.log')})", highlight=False,
                              soft_wrap=True)
        # Plain print, flushed: scripts and tests read the run line from stdout.
        print(ready_servers.run_line, flush=True)
        err_console.print("serving; Ctrl-C stops both servers")

    err_console.print(f"starting the policy and the PRM (logs in {log_dir})", highlight=False)
    for server in (servers.policy, servers.prm):
        env = "".join(f"{k}={v} " for k, v in server.env.items())
        err_console.print(f"{server.name}: {env}{shlex.join(server.argv)}", markup=False,
                          highlight=False, soft_wrap=True)
    try:
        served = serve_stack(servers, log_dir, stop=stop, on_ready=ready,
                             start_timeout_s=start_timeout, grace_s=grace)
    except ServerFailed as exc:
        err_console.print(f"[red]error:[/red] {exc.name} server {exc.reason} (log: {exc.log}); "
                          f"both servers stopped", soft_wrap=True, highlight=False)
        err_console.print(exc.tail, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    err_console.print("stopped both servers" if served else
                      "stopped before both servers answered")
    if not served:
        raise typer.Exit(130)

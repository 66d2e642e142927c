"""The two servers of ``testtime serve stack``: their command lines, environments and probes.

The policy runs in ``vllm serve`` (OpenAI-compatible; ready when ``/health`` and
``/v1/models`` answer); the PRM in ``testtime serve prm`` (ready when ``/health`` answers) or,
with ``prm_engine="vllm"``, in vLLM's pooling runner (:mod:`testtime.scoring.service.
vllm_recipes`). Settings come as the option dicts ``run`` uses (``RunConfig.policy_options`` /
``prm_options``, :mod:`testtime.engine_options`): the placement plan's, overridden by what the
user gave. Placement keys become the environment: ``gpus`` -> ``CUDA_VISIBLE_DEVICES`` (device
indices inside the server are renumbered to match), and on a machine without GPUs the policy
runs on vLLM's CPU build (eager, 32-token KV blocks, ``VLLM_CPU_KVCACHE_SPACE``). No I/O here
but reading the PRM's tokenizer for the pooling flags.
"""

from __future__ import annotations

import re
import shlex
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from testtime.scoring.service.vllm_recipes import (
    PLACEMENT_KEYS,
    serve_args,
    serve_argv,
    vllm_launcher,
)
from testtime.stack.supervisor import ServerSpec

#: Ports when none are given: vLLM's default for the policy, the next one for the PRM.
DEFAULT_POLICY_PORT = 8000
DEFAULT_PRM_PORT = 8001
#: KV cache GiB of vLLM's CPU build when none is given (``VLLMPolicyConfig.cpu_kv_cache_gib``).
DEFAULT_CPU_KV_CACHE_GIB = 4.0
#: PRM option -> ``testtime serve prm`` flag (``engine_kwargs``-style keys go as --prm-arg).
_SERVE_PRM_FLAGS = {"device": "--device", "dtype": "--dtype", "gpus": "--gpus",
                    "device_map": "--device-map", "max_memory": "--max-memory",
                    "kv_cache_gb": "--kv-cache-gb", "max_batch_tokens": "--max-batch-tokens"}
#: Policy options ``vllm serve`` has no flag for (they belong to in-process HF backends).
_NOT_VLLM = ("device", "device_map", "max_memory")
#: Settings that place a vLLM server on GPUs (refused where there is none).
_GPU_ONLY = ("gpus", "gpu_memory_utilization")
#: PRM options of testtime's engine that vLLM's pooling runner has no flag for.
_NOT_VLLM_PRM = ("kv_cache_gb", "max_batch_tokens")


@dataclass(frozen=True)
class StackServers:
    """The policy's and the PRM's server, and the ``testtime run`` line that uses them."""

    policy: ServerSpec
    prm: ServerSpec
    run_line: str


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (another process may take it before the server does;
    the server then fails at start and is reported like any other start failure)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _url_host(host: str) -> str:
    """The host to put in a client URL for a server bound to ``host``."""
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _renumber(device: Any, order: Mapping[int, int]) -> Any:
    """A device (``cuda:N``, or ``N`` as device maps write it) as the server sees it under
    ``CUDA_VISIBLE_DEVICES`` (``order``: physical index -> visible index); ``cpu``, ``cuda``,
    ``disk``, ``auto`` unchanged."""
    if isinstance(device, bool):
        return device
    if isinstance(device, int):
        physical: int | None = device
    else:
        m = re.fullmatch(r"cuda:(\d+)", str(device))
        physical = int(m.group(1)) if m else None
    if physical is None:
        return device
    if physical not in order:
        raise ValueError(f"device {device} is not among the server's GPUs {sorted(order)}")
    return order[physical] if isinstance(device, int) else f"cuda:{order[physical]}"


def gpu_env(options: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """(environment, options as the server sees them): ``gpus`` -> ``CUDA_VISIBLE_DEVICES``,
    device names in ``device``/``device_map`` values/``max_memory`` keys renumbered."""
    gpus = options.get("gpus")
    opts = dict(options)
    if not gpus:
        return {}, opts
    order = {g: i for i, g in enumerate(gpus)}
    opts["gpus"] = tuple(range(len(gpus)))
    if opts.get("device") is not None:
        opts["device"] = _renumber(opts["device"], order)
    if isinstance(opts.get("device_map"), dict):  # {module: device}
        opts["device_map"] = {k: _renumber(v, order) for k, v in opts["device_map"].items()}
    if isinstance(opts.get("max_memory"), dict):
        opts["max_memory"] = {_renumber(k, order): v for k, v in opts["max_memory"].items()}
    return {"CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in gpus)}, opts


def vllm_server(name: str, model: str, options: Mapping[str, Any], *, host: str, port: int,
                on_cpu: bool, vllm: str | None = None, runner_args: Sequence[str] = (),
                cpu_kv_cache_gib: float = DEFAULT_CPU_KV_CACHE_GIB) -> ServerSpec:
    """``vllm serve MODEL`` with engine settings (``tensor_parallel_size``,
    ``gpu_memory_utilization``, ``max_model_len``, ``dtype``, pass-through keys) as flags;
    ``runner_args`` (a pooling PRM's) right after the model."""
    wrong = sorted(k for k in _NOT_VLLM if options.get(k) is not None)
    if wrong:
        raise ValueError(f"the {name} runs in vLLM, which takes no {wrong} (its placement is "
                         f"GPUs, tensor parallel and memory share)")
    if on_cpu:
        gpu_only = sorted(k for k in _GPU_ONLY if options.get(k) is not None)
        if gpu_only:  # on the CPU build a memory share would mean a share of the RAM
            raise ValueError(f"no GPU here, so the {name} runs on vLLM's CPU build, which "
                             f"takes no {gpu_only} (its KV cache is --cpu-kv-cache-gb)")
    env, opts = gpu_env(options)
    settings = {k: v for k, v in opts.items() if k not in PLACEMENT_KEYS}
    if on_cpu:
        from testtime.policy.vllm import CPU_ENGINE_DEFAULTS

        settings = {**CPU_ENGINE_DEFAULTS, **settings}
        env["VLLM_CPU_KVCACHE_SPACE"] = f"{cpu_kv_cache_gib:g}"
    argv = serve_argv(model, host=host, port=port, settings=settings, runner_args=runner_args,
                      launcher=vllm_launcher(vllm))
    base = f"http://{_url_host(host)}:{port}"
    return ServerSpec(name, tuple(argv), (f"{base}/health", f"{base}/v1/models"),
                      f"{base}/v1", env)


def prm_server(spec: str, options: Mapping[str, Any], *, host: str, port: int) -> ServerSpec:
    """``testtime serve prm --prm SPEC`` with the PRM's settings as its flags (keys without a
    flag of their own go as ``--prm-arg KEY=VALUE``; the service validates them)."""
    import json

    env, opts = gpu_env(options)
    argv = [sys.executable, "-m", "testtime.cli", "serve", "prm", "--prm", spec,
            "--host", host, "--port", str(port)]
    for key, value in opts.items():
        if value is None or value is False:
            continue
        if key == "trust_remote_code":
            argv.append("--trust-remote-code")
        elif key == "gpus":
            argv += ["--gpus", ",".join(str(g) for g in value)]
        elif key == "max_memory":
            argv += ["--max-memory", ",".join(f"{d}={g:g}" for d, g in value.items())]
        elif key in _SERVE_PRM_FLAGS:
            argv += [_SERVE_PRM_FLAGS[key],
                     json.dumps(value) if isinstance(value, dict) else str(value)]
        else:
            argv += ["--prm-arg", f"{key}={json.dumps(value)}"]
    base = f"http://{_url_host(host)}:{port}"
    return ServerSpec("prm", tuple(argv), (f"{base}/health",), base, env)


def vllm_prm_server(spec: str, options: Mapping[str, Any], *, host: str, port: int,
                    on_cpu: bool, vllm: str | None = None,
                    cpu_kv_cache_gib: float = DEFAULT_CPU_KV_CACHE_GIB) -> tuple[ServerSpec, str]:
    """``vllm serve`` with the pooling runner for ``FAMILY:MODEL`` (the flags of
    :func:`~testtime.scoring.service.vllm_recipes.serve_args`), and the ``--prm`` spec that
    scores with it."""
    from testtime.scoring.prm.checkpoint import load_tokenizer
    from testtime.scoring.service.vllm_pooling import pooling_families

    family, sep, model = spec.partition(":")
    families = pooling_families()
    if not sep or family not in families:
        raise ValueError(f"--prm-engine vllm serves FAMILY:MODEL with FAMILY in "
                         f"{sorted(families)}, not {spec!r}")
    if family == "skywork":
        raise ValueError("vLLM cannot load Skywork's v_head: write a checkpoint it can serve "
                         "with `testtime serve vllm-prm --prm skywork:MODEL --export DIR`, then "
                         "use --prm skywork:DIR (or --prm-engine testtime)")
    wrong = sorted(k for k in _NOT_VLLM_PRM if options.get(k) is not None)
    if wrong:
        raise ValueError(f"--prm-engine vllm: {wrong} are settings of testtime's PRM engine; "
                         f"vLLM's pooling runner takes GPUs, dtype, tensor_parallel_size, "
                         f"gpu_memory_utilization, max_model_len and its own engine arguments")
    trust = bool(options.get("trust_remote_code"))
    encoder = families[family].make_encoder(load_tokenizer(model, trust_remote_code=trust))
    server = vllm_server("prm", model, options, host=host, port=port, on_cpu=on_cpu,
                         vllm=vllm, runner_args=serve_args(family, encoder),
                         cpu_kv_cache_gib=cpu_kv_cache_gib)
    base = server.url.removesuffix("/v1")
    return server, f"vllm-pooling:{family}:{model}@{base}"


def run_line(model: str, policy_url: str, prm_spec: str,
             extra: Sequence[str] = ()) -> str:
    """The ``testtime run`` command that uses the stack (shell-quoted)."""
    return shlex.join(["testtime", "run", "--policy", f"openai:{model}@{policy_url}",
                       "--prm", prm_spec, *extra])

"""Engine and placement settings: one definition of each, shared by every command.

A run's models are configured in three separate layers (as vLLM keeps ``LLM`` apart from
``SamplingParams``): *engine* settings (dtype, context length, batch sizes, trust-remote-code),
*placement* settings (which GPUs, tensor parallel, memory share, device map) and per-request
sampling. This module owns the first two for the policy and the PRM apart: their names (the
keys of ``RunConfig.policy_options`` / ``RunConfig.prm_options`` and the ``vllm serve`` flag
names users of this field know), their allowed values, and the parser of the validated
``--engine-arg`` / ``--prm-arg KEY=VALUE`` pass-through. Validation only; no I/O, no torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: Weight / activation dtypes every in-process engine accepts (``auto``: bfloat16 on a GPU,
#: float32 on the CPU, where bfloat16 matmuls are slow).
DTYPES = ("auto", "float32", "bfloat16", "float16")

#: Settings of the policy engine that the CLI sets by name; a backend that has no such setting
#: refuses them (never drops them silently): see :func:`check_backend_options`.
POLICY_SETTINGS: dict[str, str] = {
    "device": "--device",
    "dtype": "--dtype",
    "max_batch_seqs": "--max-batch-seqs",
    "trust_remote_code": "--trust-remote-code",
    "tensor_parallel_size": "--tensor-parallel-size",
    "gpu_memory_utilization": "--gpu-memory-utilization",
    "max_model_len": "--max-model-len",
    "gpus": "--gpus",
    "device_map": "--device-map",
    "max_memory": "--max-memory",
}
#: The PRM's (in-process PRMs and judges; served scorers take the subset that applies).
PRM_SETTINGS: dict[str, str] = {
    "device": "--prm-device",
    "dtype": "--prm-dtype",
    "trust_remote_code": "--trust-remote-code",
    "max_batch_tokens": "--prm-max-batch-tokens",
    "kv_cache_gb": "--prm-kv-cache-gb",
    "gpus": "--prm-gpus",
    "device_map": "--prm-device-map",
    "max_memory": "--prm-max-memory",
}


def parse_gpus(text: str | Sequence[int] | None, option: str = "--gpus") -> tuple[int, ...] | None:
    """``"0,1"`` -> ``(0, 1)``: distinct non-negative GPU indices, in the given order."""
    from testtime.errors import UserError

    if text is None:
        return None
    items: Iterable[Any] = text.split(",") if isinstance(text, str) else text
    try:
        gpus = tuple(int(str(g).strip()) for g in items if str(g).strip())
    except ValueError:
        raise UserError("expected comma-separated GPU indices, e.g. 0,1", option,
                        str(text)) from None
    if not gpus or any(g < 0 for g in gpus) or len(set(gpus)) != len(gpus):
        raise UserError("expected distinct non-negative GPU indices, e.g. 0,1", option,
                        str(text))
    return gpus


def parse_value(text: str) -> Any:
    """A pass-through value: JSON when it parses (``4``, ``0.5``, ``true``, ``{"a": 1}``),
    else the string itself (``eager``, ``/path``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_key_values(items: Iterable[str] | None, option: str) -> dict[str, Any]:
    """``["enforce_eager=true", "block_size=32"]`` -> ``{"enforce_eager": True, ...}``.

    Keys may be written with dashes (``--engine-arg max-num-batched-tokens=4096``). A repeated
    key or an item without ``=`` is a :class:`UserError` naming ``option``.
    """
    from testtime.errors import UserError

    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UserError("expected KEY=VALUE", option, item)
        if key in out:
            raise UserError(f"{key} given twice", option, item)
        out[key] = parse_value(value.strip())
    return out


def parse_max_memory(text: str | Mapping[str, Any] | None, option: str) -> dict[str, float] | None:
    """``"cuda:0=30,cpu=60"`` (GiB) -> ``{"cuda:0": 30.0, "cpu": 60.0}``: the most memory each
    device may hold of a model split by a device map (accelerate's ``max_memory``)."""
    from testtime.errors import UserError

    if text is None:
        return None
    pairs = text.items() if isinstance(text, Mapping) else \
        (p.partition("=")[::2] for p in text.split(",") if p.strip())
    out: dict[str, float] = {}
    for device, gib in pairs:
        device = str(device).strip()
        device = f"cuda:{device}" if device.isdigit() else device
        try:
            value = float(gib)
        except (TypeError, ValueError):
            raise UserError("expected DEVICE=GiB pairs, e.g. cuda:0=30,cpu=60", option,
                            str(text)) from None
        if not (device == "cpu" or device == "disk" or device.startswith("cuda:")) or value <= 0:
            raise UserError("expected DEVICE=GiB pairs with DEVICE cuda:N, cpu or disk and "
                            "GiB > 0", option, str(text))
        out[device] = value
    if not out:
        raise UserError("no DEVICE=GiB pair", option, str(text))
    return out


def check_dtype(dtype: str | None, option: str) -> str | None:
    """``dtype`` lower-cased when it is one of :data:`DTYPES`, else a :class:`UserError`."""
    from testtime.errors import UserError

    if dtype is None:
        return None
    if dtype.lower() not in DTYPES:
        raise UserError(f"unknown dtype; use one of {', '.join(DTYPES)}", option, dtype)
    return dtype.lower()


def merge_settings(named: Mapping[str, Any], passthrough: Mapping[str, Any],
                   option: str) -> dict[str, Any]:
    """Named settings (``None`` = not given) plus the ``KEY=VALUE`` pass-through; a key given
    both ways is a :class:`UserError` (which one would win is not for us to guess)."""
    from testtime.errors import UserError

    out = {k: v for k, v in named.items() if v is not None}
    for key, value in passthrough.items():
        if key in out:
            raise UserError(f"{key} is also set by its own option; give it once", option,
                            f"{key}={value}")
        out[key] = value
    return out


def option_name(key: str, settings: Mapping[str, str], passthrough: str) -> str:
    """How the user set ``key``: its own option, or the pass-through (``--engine-arg key=``)."""
    return settings.get(key, f"{passthrough} {key}=...")

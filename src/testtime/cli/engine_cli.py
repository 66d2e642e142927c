"""The engine and placement options of ``run``, ``sweep`` (and ``serve``): declared once.

Each option is an ``Annotated`` alias, so every command spells it, helps it and defaults it
the same way; :class:`EngineArgs` turns the values a command received into the policy's and
the PRM's option dicts (``RunConfig.policy_options`` / ``prm_options``), validating the
``KEY=VALUE`` pass-through. Names follow ``vllm serve`` (``--tensor-parallel-size``,
``--gpu-memory-utilization``, ``--max-model-len``), which users of this field know.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from testtime.engine_options import (
    DTYPES,
    check_dtype,
    merge_settings,
    parse_gpus,
    parse_key_values,
    parse_max_memory,
)

KV_CACHE_HELP = ("GiB an in-process PRM keeps for the keys/values of scored prefixes, so a "
                 "path grown by a step runs only its new tokens (same scores; 0: rescore "
                 "every path in full) [default: 8 on a GPU (at most a quarter of its free "
                 "memory), 1 on the CPU]")
_DTYPE_HELP = ", ".join(DTYPES)

Device = Annotated[str | None, typer.Option(
    help="Policy device for in-process backends that take one (hf): cpu, cuda, cuda:N "
         "[default: CUDA when available]")]
Dtype = Annotated[str | None, typer.Option(help=f"Policy dtype: {_DTYPE_HELP}")]
MaxBatchSeqs = Annotated[int | None, typer.Option(help="Sequences per policy batch")]
TensorParallel = Annotated[int | None, typer.Option(
    help="vllm: GPUs the policy is sharded over [default: from the placement plan]")]
GpuMemoryUtilization = Annotated[float | None, typer.Option(
    help="vllm: share of each GPU's memory the policy engine takes [default: from the "
         "placement plan: what the PRM leaves]")]
MaxModelLen = Annotated[int | None, typer.Option(
    help="vllm: the policy's context length [default: the model's]")]
Gpus = Annotated[str | None, typer.Option(
    help="GPU indices of the policy, e.g. 0,1 [default: from the placement plan]")]
DeviceMap = Annotated[str | None, typer.Option(
    help="hf: split the policy over devices with accelerate ('auto', or JSON "
         "{module: device}) [default: from the placement plan]")]
MaxMemory = Annotated[str | None, typer.Option(
    help="hf: GiB per device of a split policy, e.g. cuda:0=70,cuda:1=70")]
EngineArg = Annotated[list[str] | None, typer.Option(
    "--engine-arg", metavar="KEY=VALUE",
    help="Any other setting of the policy backend (vllm: any AsyncEngineArgs field, e.g. "
         "enforce_eager=true); repeatable; an unknown key fails naming the valid ones")]
PrmDevice = Annotated[str | None, typer.Option(
    help="PRM device: cpu, cuda, cuda:N [default: --device, else CUDA when available]")]
PrmDtype = Annotated[str | None, typer.Option(help=f"PRM dtype: {_DTYPE_HELP} [default: "
                                                   f"--dtype]")]
PrmGpus = Annotated[str | None, typer.Option(
    help="GPU indices of the PRM, e.g. 2,3 (split over them by a device map) [default: from "
         "the placement plan]")]
PrmDeviceMap = Annotated[str | None, typer.Option(
    help="Split the PRM over devices with accelerate ('auto', or JSON {module: device})")]
PrmMaxMemory = Annotated[str | None, typer.Option(
    help="GiB per device of a split PRM, e.g. cuda:0=30,cpu=60")]
PrmKvCacheGb = Annotated[float | None, typer.Option(help=KV_CACHE_HELP, min=0.0)]
PrmMaxBatchTokens = Annotated[int | None, typer.Option(help="Padded tokens per PRM forward")]
PrmArg = Annotated[list[str] | None, typer.Option(
    "--prm-arg", metavar="KEY=VALUE",
    help="Any other setting of the scorer (e.g. api_key=..., tokenizer=...); repeatable; an "
         "unknown key fails naming the valid ones")]
TrustRemoteCode = Annotated[bool, typer.Option(
    help="Let model repositories run their own code (policy and PRM)")]
NumGpus = Annotated[int | None, typer.Option(
    help="Plan for K GPUs instead of the ones found (with --gpu-memory)")]
GpuMemory = Annotated[float | None, typer.Option(
    help="GiB per GPU to plan for (with --num-gpus) [default: the GPUs' own]")]


def parse_device_map(text: str | None, option: str) -> Any:
    from testtime.engine_options import parse_value
    from testtime.errors import UserError

    if text is None:
        return None
    value = parse_value(text)
    if value != "auto" and not isinstance(value, dict):
        raise UserError("expected 'auto' or a JSON object {module: device}", option, text)
    return value


@dataclass
class EngineArgs:
    """The engine and placement options one command received (``None``: not given)."""

    device: str | None = None
    dtype: str | None = None
    max_batch_seqs: int | None = None
    tensor_parallel_size: int | None = None
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None
    gpus: str | None = None
    device_map: str | None = None
    max_memory: str | None = None
    engine_arg: list[str] | None = None
    prm_device: str | None = None
    prm_dtype: str | None = None
    prm_gpus: str | None = None
    prm_device_map: str | None = None
    prm_max_memory: str | None = None
    prm_kv_cache_gb: float | None = None
    prm_max_batch_tokens: int | None = None
    prm_arg: list[str] | None = None
    trust_remote_code: bool = False

    @classmethod
    def of(cls, params: Mapping[str, Any]) -> EngineArgs:
        """The engine options among a command's parameters (``locals()`` of a command that
        declares the options above under their own names)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names})

    def policy_options(self) -> dict[str, Any]:
        """``RunConfig.policy_options``: the named settings given, plus ``--engine-arg``.

        Which backend takes which setting is checked when the config is checked
        (:func:`testtime.policy.registry.check_policy_options`), before anything loads."""
        from testtime.errors import UserError

        if self.tensor_parallel_size is not None and self.tensor_parallel_size < 1:
            raise UserError("must be >= 1", "--tensor-parallel-size",
                            str(self.tensor_parallel_size))
        if self.gpu_memory_utilization is not None and \
                not 0 < self.gpu_memory_utilization <= 1:
            raise UserError("must be in (0, 1]", "--gpu-memory-utilization",
                            str(self.gpu_memory_utilization))
        if self.max_model_len is not None and self.max_model_len < 1:
            raise UserError("must be >= 1", "--max-model-len", str(self.max_model_len))
        named = {
            "device": self.device, "dtype": check_dtype(self.dtype, "--dtype"),
            "max_batch_seqs": self.max_batch_seqs,
            "tensor_parallel_size": self.tensor_parallel_size,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "max_model_len": self.max_model_len,
            "gpus": parse_gpus(self.gpus, "--gpus"),
            "device_map": parse_device_map(self.device_map, "--device-map"),
            "max_memory": parse_max_memory(self.max_memory, "--max-memory"),
            "trust_remote_code": True if self.trust_remote_code else None,
        }
        return merge_settings(named, parse_key_values(self.engine_arg, "--engine-arg"),
                              "--engine-arg")

    def prm_options(self, spec: str) -> dict[str, Any]:
        """``RunConfig.prm_options`` of the scorer ``spec``: its own settings as given (a
        setting the scorer does not take is refused when the config is checked), plus
        ``--prm-arg``; ``--device``, ``--dtype`` and ``--trust-remote-code`` are inherited
        from the policy's options where the scorer takes them (a model-free scorer does not)."""
        from testtime.scoring.registry import scorer_settings

        takes = scorer_settings(spec)
        named = {
            "device": self.prm_device,
            "dtype": check_dtype(self.prm_dtype, "--prm-dtype"),
            "gpus": parse_gpus(self.prm_gpus, "--prm-gpus"),
            "device_map": parse_device_map(self.prm_device_map, "--prm-device-map"),
            "max_memory": parse_max_memory(self.prm_max_memory, "--prm-max-memory"),
            "kv_cache_gb": self.prm_kv_cache_gb,
            "max_batch_tokens": self.prm_max_batch_tokens,
        }
        inherited = {"device": self.device, "dtype": check_dtype(self.dtype, "--dtype"),
                     "trust_remote_code": True if self.trust_remote_code else None}
        for key, value in inherited.items():
            if named.get(key) is None and value is not None and key in takes:
                named[key] = value
        return merge_settings(named, parse_key_values(self.prm_arg, "--prm-arg"), "--prm-arg")

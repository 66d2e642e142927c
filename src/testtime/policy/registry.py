"""Build a policy from its spec string (``--policy``), importing each backend lazily.

Spec syntax (``BACKEND:MODEL``; the backend prefix is required except for ``default``):

* ``default``: the embedded SmolLM2 on the CPU, on llama.cpp when llama-cpp-python is
  installed (2-2.5x faster, same greedy texts: see :func:`default_backend`), else transformers;
* ``hf:PATH_OR_HUB_ID``: transformers (Hub id, local directory, ``.gguf`` file, ``default``);
* ``llamacpp:FILE.gguf``: llama.cpp on the CPU (``llamacpp:default`` = the embedded SmolLM2);
* ``openai:MODEL@URL[,URL...]``: an OpenAI-compatible server's ``/v1/completions`` (requests
  are spread over the URLs); ``openai:MODEL`` takes the URLs from ``options["base_urls"]``;
* ``vllm:HUB_ID_OR_PATH``: vLLM in-process (GPU, or vLLM's CPU build).

``options`` are the engine settings of the run (``RunConfig.policy_options``, named in
:mod:`testtime.engine_options`): each backend takes the fields of its config class and refuses
any other setting with a one-line error naming the option (nothing is dropped silently);
:func:`check_policy_options` runs that check before anything loads.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from testtime.errors import UserError
from testtime.policy.base import Policy
from testtime.policy.default_policy import (  # noqa: F401 (re-exported)
    DEFAULT_BACKEND,
    default_backend,
    recorded_spec,
)

_OPENAI_SPEC = re.compile(r"^(?P<model>[^@]+)@(?P<urls>https?://\S+)$")


@dataclass(frozen=True)
class PolicyBackend:
    """One entry of :data:`POLICY_BACKENDS`."""

    name: str
    """The ``BACKEND`` part of a spec."""
    summary: str
    """One line for ``--help`` and error messages."""
    example: str
    """A complete example spec."""
    factory: Callable[[str, dict[str, Any]], Policy]
    """``factory(model, options)``; imports the backend's heavy modules only when called."""
    config: str
    """``module:Class`` of the backend's engine-settings dataclass (checked before loading)."""
    certainty: bool
    """Its completions carry per-token self-certainty (``--prm self-certainty`` reads it);
    every backend reports DeepConf's top-20 confidence (``--prm confidence``)."""
    cpu_only: bool = False
    """CPU only: ``--device cpu`` is what it does anyway; another device is refused."""


def _fields(backend: PolicyBackend) -> set[str]:
    import importlib

    module, _, name = backend.config.partition(":")
    return {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), name))}


def _refuse(backend: str, key: str, value: Any, valid: set[str]) -> UserError:
    """The one-line error for a setting ``backend`` does not have."""
    from testtime.engine_options import POLICY_SETTINGS

    option = POLICY_SETTINGS.get(key)
    if option is None:
        return UserError(f"not a setting of the {backend} policy backend; valid: "
                         f"{', '.join(sorted(valid))}", "--engine-arg", f"{key}={value}")
    others = [b.name for b in POLICY_BACKENDS.values() if b.name != backend and key in _fields(b)]
    hint = f" (it applies to: {', '.join(others)})" if others else ""
    return UserError(f"the {backend} policy backend has no such setting{hint}", option,
                     str(value))


def config_from_options(cls: type, backend: str, base: dict[str, Any],
                        options: dict[str, Any]) -> Any:
    """Instantiate the dataclass ``cls`` from ``base`` plus the user's ``options``.

    A setting ``cls`` lacks is refused with a :class:`UserError` naming the CLI option that
    set it and the backends that have it (an unknown ``--engine-arg`` key: the valid ones), so
    no option is dropped silently. ``--device cpu`` is accepted by CPU-only backends.
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = dict(base)
    spec = POLICY_BACKENDS.get(backend)
    for key, value in options.items():
        if key in fields:
            kwargs[key] = value
        elif key == "device" and spec is not None and spec.cpu_only and value == "cpu":
            continue  # what the backend does anyway
        else:
            raise _refuse(backend, key, value, fields - set(base))
    return cls(**kwargs)


def _hf_config(model: str, options: dict[str, Any]) -> Any:
    from testtime.policy.hf import HFPolicyConfig

    return config_from_options(HFPolicyConfig, "hf", {"model": model}, options)


def _hf(model: str, options: dict[str, Any]) -> Policy:
    from testtime.policy.hf import HFPolicy

    return HFPolicy(_hf_config(model, options))


def _llamacpp_config(model: str, options: dict[str, Any]) -> Any:
    from testtime.policy.llamacpp import LlamaCppPolicyConfig

    base: dict[str, Any] = {"model": model}
    if model == "default" and "dequantize" not in options:
        # The embedded model runs on the F32 copy so that results match the hf backend.
        base["dequantize"] = True
    return config_from_options(LlamaCppPolicyConfig, "llamacpp", base, options)


def _llamacpp(model: str, options: dict[str, Any]) -> Policy:
    from testtime.policy.llamacpp import LlamaCppPolicy

    return LlamaCppPolicy(_llamacpp_config(model, options))


def _openai_config(model: str, options: dict[str, Any]) -> Any:
    from testtime.policy.openai import OpenAIPolicyConfig

    opts = dict(options)
    m = _OPENAI_SPEC.match(model)
    problem = ("give the server URLs in the spec or in the base_urls option, not both"
               if m and "base_urls" in opts else "expected MODEL@http://HOST:PORT/v1[,...]"
               if not m and "@" in model else f"no server URL; use openai:{model}@URL/v1"
               if not m and "base_urls" not in opts else None)
    if problem:
        raise UserError(problem, "--policy", f"openai:{model}")
    if m:
        model = m["model"]
        opts["base_urls"] = tuple(u for u in m["urls"].split(",") if u)
    if isinstance(opts.get("base_urls"), str):
        opts["base_urls"] = tuple(u for u in opts["base_urls"].split(",") if u)
    elif "base_urls" in opts:
        opts["base_urls"] = tuple(opts["base_urls"])
    return config_from_options(OpenAIPolicyConfig, "openai", {"model": model}, opts)


def _openai(model: str, options: dict[str, Any]) -> Policy:
    from testtime.policy.openai import OpenAIPolicy

    return OpenAIPolicy(_openai_config(model, options))


def _vllm_engine_fields() -> set[str] | None:
    """``AsyncEngineArgs`` field names, or None when vLLM is not installed here."""
    try:
        from vllm.engine.arg_utils import AsyncEngineArgs
    except ImportError:
        return None
    return {f.name for f in dataclasses.fields(AsyncEngineArgs)}


def _vllm_config(model: str, options: dict[str, Any]) -> Any:
    """vLLM's settings: named ones to ``VLLMPolicyConfig``, the rest of ``--engine-arg`` to
    ``engine_kwargs`` (checked against ``AsyncEngineArgs`` where vLLM is installed).

    ``gpus`` is honoured, not passed: an in-process engine shards over the first
    ``tensor_parallel_size`` visible GPUs, so the policy's GPUs must be ``0..tp-1`` (other
    GPUs: start the process with ``CUDA_VISIBLE_DEVICES``, or serve the policy with
    ``testtime serve stack``)."""
    from testtime.engine_options import POLICY_SETTINGS
    from testtime.policy.vllm import VLLMPolicyConfig

    opts = dict(options)
    base: dict[str, Any] = {"model": model}
    if model == "default" or model.endswith(".gguf"):
        base["name"] = f"vllm:{model}"
        if model == "default":
            base["dtype"] = "float32"  # the embedded model's safetensors copy is fp32
    gpus = opts.pop("gpus", None)
    if gpus is not None:
        tp = int(opts.get("tensor_parallel_size", len(gpus)))
        if tuple(gpus) != tuple(range(tp)):
            raise UserError(f"an in-process vLLM engine runs on GPUs 0..{tp - 1} (tensor "
                            f"parallel {tp}); for other GPUs set CUDA_VISIBLE_DEVICES or use "
                            f"`testtime serve stack`", "--gpus",
                            ",".join(str(g) for g in gpus))
        opts["tensor_parallel_size"] = tp
    fields = {f.name for f in dataclasses.fields(VLLMPolicyConfig)} | set(POLICY_SETTINGS)
    extra = {k: opts.pop(k) for k in list(opts) if k not in fields}
    if extra:
        valid = _vllm_engine_fields()
        unknown = sorted(set(extra) - valid) if valid is not None else []
        if unknown:
            raise UserError("not an AsyncEngineArgs field of the installed vLLM (e.g. "
                            "enforce_eager, block_size, max_num_batched_tokens, "
                            "swap_space)", "--engine-arg", unknown[0])
        opts["engine_kwargs"] = {**opts.get("engine_kwargs", {}), **extra}
    return config_from_options(VLLMPolicyConfig, "vllm", base, opts)


def _vllm(model: str, options: dict[str, Any]) -> Policy:
    from testtime.policy.model_files import materialize, resolve
    from testtime.policy.vllm import VLLMPolicy

    cfg = _vllm_config(model, options)
    if model == "default" or model.endswith(".gguf"):  # vLLM cannot read the GGUF: it runs
        # the safetensors copy (fp32, as the hf backend)
        cfg = dataclasses.replace(cfg, model=materialize(resolve(model)).path)
    return VLLMPolicy(cfg)


POLICY_BACKENDS: dict[str, PolicyBackend] = {
    b.name: b
    for b in (
        PolicyBackend("hf", "transformers on CPU or CUDA", "hf:Qwen/Qwen2.5-1.5B-Instruct", _hf,
                      "testtime.policy.hf:HFPolicyConfig", certainty=True),
        PolicyBackend("llamacpp", "llama.cpp in-process on the CPU (GGUF files)",
                      "llamacpp:model.Q4_K_M.gguf", _llamacpp,
                      "testtime.policy.llamacpp:LlamaCppPolicyConfig", certainty=True,
                      cpu_only=True),
        PolicyBackend("openai", "an OpenAI-compatible server's /v1/completions",
                      "openai:Qwen/Qwen2.5-1.5B-Instruct@http://127.0.0.1:8000/v1", _openai,
                      "testtime.policy.openai:OpenAIPolicyConfig", certainty=False),
        PolicyBackend("vllm", "vLLM in-process (GPU; vLLM's CPU build on the CPU)",
                      "vllm:Qwen/Qwen2.5-1.5B-Instruct", _vllm,
                      "testtime.policy.vllm:VLLMPolicyConfig", certainty=False),
    )
}
#: Each backend's pure settings check: ``(model, options) -> config`` (no loading).
_CONFIGURE: dict[str, Callable[[str, dict[str, Any]], Any]] = {
    "hf": _hf_config, "llamacpp": _llamacpp_config, "openai": _openai_config,
    "vllm": _vllm_config,
}


def parse_policy_spec(spec: str) -> tuple[str, str]:
    """Split a spec into ``(backend, model)``; ``default`` maps to the embedded model."""
    spec = spec.strip()
    if spec == "default":
        return default_backend(), "default"
    backend, sep, model = spec.partition(":")
    if not sep or backend not in POLICY_BACKENDS:
        examples = "; ".join(b.example for b in POLICY_BACKENDS.values())
        raise ValueError(
            f"invalid policy spec {spec!r}: expected 'default' or BACKEND:MODEL with BACKEND in "
            f"{', '.join(POLICY_BACKENDS)} (e.g. {examples})"
        )
    if not model:
        raise ValueError(f"invalid policy spec {spec!r}: the model after '{backend}:' is empty")
    return backend, model


def build_policy(spec: str, options: dict[str, Any] | None = None) -> Policy:
    """The policy named by ``spec`` (see the module docstring), configured by ``options``."""
    backend, model = parse_policy_spec(spec)
    return POLICY_BACKENDS[backend].factory(model, dict(options or {}))


def check_policy_spec(spec: str) -> None:
    """Check ``--policy`` before anything loads: a known backend, a model that exists (local
    path) or can be fetched (Hub id; in the cache when offline). Raises ``UserError``."""
    from testtime.errors import UserError, check_model_source

    try:
        backend, model = parse_policy_spec(spec)
    except ValueError as exc:
        raise UserError(str(exc), "--policy") from None
    if backend == "hf" or backend in ("vllm", "llamacpp") and model != "default":
        check_model_source(model, "--policy", spec)
    elif backend == "openai" and "@" in model and not _OPENAI_SPEC.match(model):
        raise UserError("expected MODEL@http://HOST:PORT/v1[,http://...]", "--policy", spec)


def check_policy_options(spec: str, options: dict[str, Any] | None) -> None:
    """Check the engine settings of ``spec`` without loading anything: every setting is one
    the backend has, with a valid value. Raises :class:`UserError` naming the option."""
    backend, model = parse_policy_spec(spec)
    try:
        _CONFIGURE[backend](model, dict(options or {}))
    except UserError:
        raise
    except (TypeError, ValueError) as exc:  # a config class's own validation
        raise UserError(str(exc), "--policy", spec) from None


def backend_has_certainty(spec: str) -> bool:
    """Whether the policy of ``spec`` reports per-token self-certainty (see
    :attr:`PolicyBackend.certainty`)."""
    return POLICY_BACKENDS[parse_policy_spec(spec)[0]].certainty

"""Build a policy from its spec string (``--policy``), importing each backend lazily.

Spec syntax (``BACKEND:MODEL``; the backend prefix is required except for ``default``):

* ``default``: the embedded SmolLM2 on the CPU, on llama.cpp when llama-cpp-python is
  installed (2-2.5x faster, same greedy texts: see :func:`default_backend`), else transformers;
* ``hf:PATH_OR_HUB_ID``: transformers (a Hub id, a local directory, a ``.gguf`` file, or
  ``default``);
* ``llamacpp:FILE.gguf``: llama.cpp in-process on the CPU (``llamacpp:default`` = the embedded
  SmolLM2);
* ``openai:MODEL@URL[,URL...]``: an OpenAI-compatible server's ``/v1/completions`` (requests
  are spread over the URLs); ``openai:MODEL`` takes the URLs from ``options["base_urls"]``;
* ``vllm:HUB_ID_OR_PATH``: vLLM in-process on the GPU.

``options`` are the engine settings of the run (``RunConfig.policy_options``): each backend
takes the fields of its config class and rejects unknown names, except the generic CLI settings
in :data:`PORTABLE_OPTIONS`, which backends without such a setting ignore (with a log line).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from testtime.policy.base import Policy

log = logging.getLogger(__name__)

#: The backend of ``--policy default`` when llama-cpp-python is not installed.
DEFAULT_BACKEND = "hf"


def default_backend() -> str:
    """The backend ``--policy default`` runs the embedded SmolLM2 on: ``llamacpp`` when the
    optional extra is installed (on its F32 copy: the HF backend's logits to ~1e-5, so the
    same greedy texts, 1.8-2.5x faster on two cores; docs/benchmarks.md), else ``hf``."""
    import importlib.util

    return "llamacpp" if importlib.util.find_spec("llama_cpp") is not None else DEFAULT_BACKEND

#: Settings the CLI passes whatever the backend; a backend without them ignores them.
PORTABLE_OPTIONS = frozenset({"device", "dtype", "max_batch_seqs", "trust_remote_code"})

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


def config_from_options(cls: type, backend: str, base: dict[str, Any],
                        options: dict[str, Any]) -> Any:
    """Instantiate the dataclass ``cls`` from ``base`` plus the user's ``options``.

    Unknown option names raise ``ValueError`` naming the backend and its valid fields;
    portable CLI settings (:data:`PORTABLE_OPTIONS`) that ``cls`` lacks are dropped.
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = dict(base)
    for key, value in options.items():
        if key in fields:
            kwargs[key] = value
        elif key in PORTABLE_OPTIONS:
            log.info("policy backend %s ignores option %s=%r", backend, key, value)
        else:
            raise ValueError(
                f"policy option {key!r} is not valid for backend {backend!r}; "
                f"valid: {', '.join(sorted(fields - set(base)))}"
            )
    return cls(**kwargs)


def _hf(model: str, options: dict[str, Any]) -> Policy:
    from testtime.policy.hf import HFPolicy, HFPolicyConfig

    return HFPolicy(config_from_options(HFPolicyConfig, "hf", {"model": model}, options))


def _llamacpp(model: str, options: dict[str, Any]) -> Policy:
    from testtime.policy.llamacpp import LlamaCppPolicy, LlamaCppPolicyConfig

    base: dict[str, Any] = {"model": model}
    if model == "default" and "dequantize" not in options:
        # The embedded model runs on the F32 copy so that results match the hf backend.
        base["dequantize"] = True
    cfg = config_from_options(LlamaCppPolicyConfig, "llamacpp", base, options)
    return LlamaCppPolicy(cfg)


def _openai(model: str, options: dict[str, Any]) -> Policy:
    from testtime.policy.openai import OpenAIPolicy, OpenAIPolicyConfig

    opts = dict(options)
    m = _OPENAI_SPEC.match(model)
    if m:
        if "base_urls" in opts:
            raise ValueError(f"openai:{model}: give the server URLs in the spec or in the "
                             f"base_urls option, not both")
        model = m["model"]
        opts["base_urls"] = tuple(u for u in m["urls"].split(",") if u)
    elif "@" in model:
        raise ValueError(f"openai:{model}: expected MODEL@http://HOST:PORT/v1[,http://...]")
    elif "base_urls" not in opts:
        raise ValueError(f"openai:{model}: no server URL; use openai:{model}@http://HOST:PORT/v1")
    if isinstance(opts.get("base_urls"), str):
        opts["base_urls"] = tuple(u for u in opts["base_urls"].split(",") if u)
    elif "base_urls" in opts:
        opts["base_urls"] = tuple(opts["base_urls"])
    cfg = config_from_options(OpenAIPolicyConfig, "openai", {"model": model}, opts)
    return OpenAIPolicy(cfg)


def _vllm(model: str, options: dict[str, Any]) -> Policy:
    from testtime.policy.vllm import VLLMPolicy, VLLMPolicyConfig

    base: dict[str, Any] = {"model": model}
    if model == "default" or model.endswith(".gguf"):
        # vLLM cannot read the GGUF: it runs the safetensors copy (fp32, as the hf backend).
        from testtime.policy.model_files import materialize, resolve

        base = {"model": materialize(resolve(model)).path, "name": f"vllm:{model}"}
        if model == "default":
            base["dtype"] = "float32"
    return VLLMPolicy(config_from_options(VLLMPolicyConfig, "vllm", base, options))


POLICY_BACKENDS: dict[str, PolicyBackend] = {
    b.name: b
    for b in (
        PolicyBackend("hf", "transformers on CPU or CUDA", "hf:Qwen/Qwen2.5-1.5B-Instruct", _hf),
        PolicyBackend("llamacpp", "llama.cpp in-process on the CPU (GGUF files)",
                      "llamacpp:model.Q4_K_M.gguf", _llamacpp),
        PolicyBackend("openai", "an OpenAI-compatible server's /v1/completions",
                      "openai:Qwen/Qwen2.5-1.5B-Instruct@http://127.0.0.1:8000/v1", _openai),
        PolicyBackend("vllm", "vLLM in-process on the GPU", "vllm:Qwen/Qwen2.5-1.5B-Instruct",
                      _vllm),
    )
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

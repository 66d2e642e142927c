"""Which backend ``--policy default`` (the embedded SmolLM2) runs on, and the name a run's
config records for it. No imports of any backend."""

from __future__ import annotations

#: The backend of ``--policy default`` when llama-cpp-python is not installed.
DEFAULT_BACKEND = "hf"


def default_backend() -> str:
    """The backend ``--policy default`` runs the embedded SmolLM2 on: ``llamacpp`` when the
    optional extra is installed (on its F32 copy: the HF backend's logits to ~1e-5, so the
    same greedy texts, 1.8-2.5x faster on two cores; docs/benchmarks.md), else ``hf``."""
    import importlib.util

    return "llamacpp" if importlib.util.find_spec("llama_cpp") is not None else DEFAULT_BACKEND


def recorded_spec(policy: str) -> str:
    """The policy spec a config records: bare ``default`` becomes ``BACKEND:default`` with the
    backend it runs on, so that a saved config reproduces the run and ``run``, ``sweep`` and
    ``serve tts`` name the embedded model alike (analyses key results by this name)."""
    return f"{default_backend()}:default" if policy == "default" else policy

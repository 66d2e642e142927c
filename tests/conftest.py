"""Shared fixtures: the benchmark data directory and the embedded model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Tests never use the Hugging Face Hub: fail at once instead of waiting on network timeouts.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``TESTTIME_DATA_DIR`` or ``<repo>/../shared/datasets``."""
    d = Path(os.environ.get("TESTTIME_DATA_DIR", REPO.parent / "shared" / "datasets"))
    if not (d / "math500.jsonl").exists():
        pytest.skip(f"benchmark data not found in {d}")
    return d


@pytest.fixture(scope="session")
def smollm2_policy():  # type: ignore[no-untyped-def]
    """The embedded SmolLM2 on the HF backend, loaded once per test session."""
    from testtime.policy.hf import HFPolicy, HFPolicyConfig

    return HFPolicy(HFPolicyConfig(max_batch_seqs=32))

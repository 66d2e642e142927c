"""Value types of grading: the verdict on one pair (:class:`GradeResult`, :data:`GradeReason`)
and the limits of a grader (:class:`GraderConfig`).

Shared by the :class:`~testtime.grading.verify.Grader` API and the worker client that runs
Math-Verify for it (:mod:`testtime.grading.worker_client`); no I/O, no heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GradeReason = Literal[
    "exact",
    "normalized",
    "equivalent",
    "not_equivalent",
    "no_answer",
    "too_long",
    "unparseable",
    "timeout",
    "error",
]
"""Why a grade came out as it did: ``exact``/``normalized``/``equivalent`` are correct (string
match, match after cleaning, Math-Verify); the rest are wrong."""


@dataclass(frozen=True)
class GradeResult:
    """The verdict on one (predicted, reference) pair."""

    correct: bool
    reason: GradeReason
    detail: str = ""
    """Human-readable context (which side failed to parse, the time limit, ...)."""


@dataclass(frozen=True)
class GraderConfig:
    """Limits of a :class:`~testtime.grading.Grader`. Validated on construction; no I/O."""

    timeout_s: float = 5.0
    """Wall-clock limit for one Math-Verify check; past it the check is graded wrong."""
    kill_grace_s: float = 1.0
    """Extra time the parent waits for a check stuck in C code before killing the worker."""
    startup_timeout_s: float = 120.0
    """Longest wait for a new worker to import Math-Verify and report ready."""
    max_answer_chars: int = 1000
    """Longer predictions (or references) are graded wrong without parsing (``too_long``)."""
    worker_memory_mb: int = 4096
    """Address-space limit of the worker process (0: none), so huge powers fail fast."""
    cache_size: int = 100_000
    """How many Math-Verify verdicts to remember, keyed by the cleaned pair (0: no cache)."""
    string_match: bool = True
    """Settle pairs whose cleaned strings match (or are both integers) without Math-Verify;
    False sends every pair to Math-Verify (slower; for testing Math-Verify itself)."""

    def __post_init__(self) -> None:
        for name in ("timeout_s", "kill_grace_s", "startup_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"GraderConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("max_answer_chars", "worker_memory_mb", "cache_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"GraderConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_answer_chars == 0:
            raise ValueError("GraderConfig.max_answer_chars must be > 0")

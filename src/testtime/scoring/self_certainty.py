"""Model-free step scores from the policy's own token statistics (no extra model, no compute).

``self-certainty`` follows Kang et al. 2025 ("Scalable Best-of-N Selection for Large Language
Models via Self-Certainty"): the mean over a step's tokens of KL(uniform || p), here normalised
by log|V| (the backend reports it per token) and mapped monotonically into [0, 1) with
``1 - exp(-c)`` so that the PRM aggregation rules apply; ranking by it equals ranking by
Kang et al.'s score. ``confidence`` is the geometric-mean probability of the sampled tokens,
``exp(mean log p)``, available from any backend that reports log-probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from testtime.scoring.base import ScorerBase, ScoreResult, ScorerInputError
from testtime.types import ScoreRequest, Step


class MissingTokenStats(ScorerInputError):
    """The steps carry no token statistics (the backend did not report them)."""


class SelfCertaintyScorer(ScorerBase):
    """Scores steps from per-token statistics carried by the steps themselves."""

    def __init__(self, kind: Literal["self-certainty", "confidence"] = "self-certainty") -> None:
        self.kind = kind
        self.name = kind

    def score_step(self, step: Step) -> float:
        if step.num_tokens <= 0:
            return 0.0
        if self.kind == "self-certainty":
            if step.certainty_sum is None:
                raise MissingTokenStats(
                    "self-certainty needs per-token certainty from the policy backend; "
                    "use --prm confidence or a PRM with this backend"
                )
            return 1.0 - math.exp(-max(0.0, step.certainty_sum / step.num_tokens))
        if step.logprob_sum is None:
            raise MissingTokenStats("confidence needs token log-probabilities from the backend")
        return math.exp(min(0.0, step.logprob_sum / step.num_tokens))

    async def score(self, requests: Sequence[ScoreRequest]) -> ScoreResult:
        # The statistics were computed during generation: no tokens are read again.
        return ScoreResult([[self.score_step(s) for s in r.steps] for r in requests])

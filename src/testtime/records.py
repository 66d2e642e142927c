"""The versioned per-problem record (``ProblemRecord``) of ``results.jsonl``; the store that
reads and appends it is :mod:`testtime.store`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

SCHEMA_VERSION = 3


class StepRecord(BaseModel):
    text: str
    tokens: int
    score: float | None = None
    truncated: bool = False
    logprob_sum: float | None = None
    certainty_sum: float | None = None


class CandidateRecord(BaseModel):
    index: int
    text: str
    steps: list[StepRecord]
    answer: str | None
    """Extracted final answer (None when none could be extracted)."""
    correct: bool
    group: int | None
    """Answer group: candidates with equivalent answers share it."""
    finish_reason: str
    completion_tokens: int
    origin: int = 0
    """Independent unit it came from (sample index; DVTS subtree)."""
    confidence: dict[str, float] | None = None
    """DeepConf trace metrics of the path's token confidences (``lowest``, ``bottom10``,
    ``tail``, ``mean``; :mod:`testtime.confidence`); None when the backend reported none."""
    voted: bool = True
    """The selection rules saw this path (False: online DeepConf set it aside: stopped for
    low confidence or below its threshold; kept for the record only)."""


class PredictionRecord(BaseModel):
    answer: str | None
    correct: bool
    index: int | None
    """Candidate whose answer the rule picked."""


class ComputeRecord(BaseModel):
    policy_calls: int = 0
    generations: int = 0
    prompt_tokens: int = 0
    """Billed: every completion pays its whole prompt."""
    prefill_tokens: int = 0
    """What an engine with an ideal prefix cache computes (``search.base.PrefixCache``)."""
    completion_tokens: int = 0
    scored_tokens: int = 0
    """Every scored path in full, as a scorer that rescores from the first token reads it."""
    scored_cached_tokens: int = 0
    """Of ``scored_tokens``, those the PRM's KV store held (not computed again)."""
    scorer_calls: int = 0
    prm_truncated_paths: int = 0
    """Scored paths longer than the PRM's context, scored on the steps that fit."""
    prm_unread_steps: int = 0
    """Steps of those paths past the PRM's context (their scores repeat the last step read)."""
    nonfinite_scores: int = 0
    """Step scores the scorer returned as NaN or infinite (stored as null; they rank lowest)."""
    policy_flops: float = 0.0
    """``2 * N_policy * (prompt + completion tokens)``; 0 when the policy has no known size."""
    prm_flops: float = 0.0
    """``2 * N_prm * scored_tokens``; 0 for model-free scorers (see ``testtime.flops``)."""


class NodeRecord(BaseModel):
    id: int
    parent: int
    depth: int
    text: str
    tokens: int
    score: float | None
    status: Literal["kept", "pruned", "finished", "active", "lookahead", "dropped"]


class ProblemRecord(BaseModel):
    """Everything known about one problem after search, grading and selection."""

    schema_version: int = SCHEMA_VERSION
    id: str
    problem: str
    reference: str
    level: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    method: str
    n: int
    """The budget N (generations: Best-of-N samples, beam-search root samples, DVTS
    subtrees x M); methods return different numbers of final paths for it."""
    paths: int = 0
    """Final paths (candidates) the method returned for budget ``n``."""
    semantics: str = "paper"
    """Whose search decisions were reproduced (``paper`` or ``sal``)."""
    scorer: str = ""
    """The step scorer (``--prm``) whose scores the ``prm_*`` rules used: a PRM, or a
    model-free scorer such as ``self-certainty`` (then the rules are not PRM rules at all)."""
    candidates: list[CandidateRecord] = Field(default_factory=list)
    predictions: dict[str, dict[str, PredictionRecord]] = Field(default_factory=dict)
    """Budget (generations, as a string: JSON keys) -> rule -> prediction over the paths that
    budget has (a prefix of whole independent units, or all of them at ``n``)."""
    compute: ComputeRecord = Field(default_factory=ComputeRecord)
    """What the problem cost, every attempt included (failed ones too)."""
    failed_compute: ComputeRecord | None = None
    """The part of ``compute`` spent by attempts that failed (None: none failed)."""
    tree: list[NodeRecord] = Field(default_factory=list)
    info: dict[str, Any] = Field(default_factory=dict)
    """What the search method decided (the adaptive solver: ``info["adaptive"]``)."""
    wall_time_s: float = 0.0
    attempts: int = 1
    """Times the search was started in the invocation that wrote this record (1: no retry)."""
    error: str | None = None
    """Set when the problem failed; such records count as wrong and are retried on resume."""

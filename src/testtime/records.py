"""The versioned per-problem record and the crash-safe JSONL store it lives in.

``results.jsonl`` holds one ``ProblemRecord`` per line. Each record is written with a single
``write`` of one complete line followed by ``fsync``, so a crash leaves at most one torn last
line; ``RecordStore`` drops it on open and a resumed run recomputes that problem.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2


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
    scorer_calls: int = 0
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
    tree: list[NodeRecord] = Field(default_factory=list)
    info: dict[str, Any] = Field(default_factory=dict)
    """What the search method decided (the adaptive solver: ``info["adaptive"]``)."""
    wall_time_s: float = 0.0
    attempts: int = 1
    """Times the search was started in the invocation that wrote this record (1: no retry)."""
    error: str | None = None
    """Set when the problem failed; such records count as wrong and are retried on resume."""


class RecordStore:
    """Append-only JSONL of records, keyed by problem id."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, ProblemRecord] = {}
        if path.exists():
            self._load()

    def _load(self) -> None:
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        # A complete file ends with "\n", so the last element is empty; anything else there
        # is a line torn by a crash mid-write.
        tail = lines.pop()
        if tail:
            log.warning("%s: dropping a torn last line (%d bytes)", self.path, len(tail))
        good = len(raw) - len(tail)
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = ProblemRecord.model_validate_json(line)
            except ValueError as exc:
                if lineno == len(lines):  # a complete but corrupt last line: also torn
                    log.warning("%s:%d: dropping an unreadable last line", self.path, lineno)
                    good -= len(line) + 1
                    break
                raise ValueError(f"{self.path}:{lineno}: not a valid record: {exc}") from exc
            if rec.schema_version > SCHEMA_VERSION:  # older ones read with defaults
                raise ValueError(
                    f"{self.path}:{lineno}: record schema {rec.schema_version}, "
                    f"this version reads {SCHEMA_VERSION}"
                )
            # Later lines win: a retried failed problem is appended after its error record.
            self.records[rec.id] = rec
        if good != len(raw):
            with open(self.path, "r+b") as f:
                f.truncate(good)

    def done_ids(self) -> set[str]:
        """Problems finished without error."""
        return {k for k, r in self.records.items() if r.error is None}

    def append(self, record: ProblemRecord) -> None:
        data = (record.model_dump_json() + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:  # os.write may write less than asked for large records
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        self.records[record.id] = record

    def __iter__(self) -> Iterator[ProblemRecord]:
        return iter(self.records.values())


def read_records(path: Path) -> list[ProblemRecord]:
    """Records of a finished or partial run (latest record per id)."""
    return list(RecordStore(path))


def dump_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename), so readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)

"""The values a search method builds and returns: tree nodes, final paths and the result
(re-exported by :mod:`testtime.search.base`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from testtime.search.compute import Compute
from testtime.types import Step

NodeStatus = Literal["kept", "pruned", "finished", "active", "lookahead", "dropped"]
"""``lookahead``: a greedy roll-out step used only to score its parent, never part of a path;
``dropped``: a sampled step the search discarded unscored (cut by the token limit, or a
duplicate of a sibling, as the paper's code does)."""


@dataclass
class TreeNode:
    """One step in a search tree; ``parent`` is -1 for first steps."""

    id: int
    parent: int
    depth: int
    step: Step
    score: float | None = None
    status: NodeStatus = "active"


@dataclass
class Candidate:
    """A final path: its steps, their scores and how it ended."""

    steps: list[Step]
    scores: list[float]
    finish_reason: str
    node_ids: list[int] = field(default_factory=list)
    origin: int = 0
    """Independent unit the path came from (DVTS subtree; sample index for Best-of-N); the
    record's ``CandidateRecord.origin``. (``CandidateRecord.group`` is the answer class.)"""
    voted: bool = True
    """The path takes part in the selection rules; False for a path online DeepConf set
    aside (stopped for low confidence, or below its threshold), kept in the record only."""

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.steps)


@dataclass
class SearchResult:
    candidates: list[Candidate]
    compute: Compute
    tree: list[TreeNode] = field(default_factory=list)
    independent_prefixes: bool = False
    """True when any prefix of whole units (see ``prefix_unit``) is a valid smaller-budget run
    (Best-of-N, DVTS)."""
    prefix_unit: int = 1
    """Candidates per independent unit (a Best-of-N sample: 1; a paper DVTS subtree: 1; a
    search-and-learn DVTS subtree: M)."""
    budget: int = 0
    """The budget N the result was searched with (0: the number of candidates)."""
    unit_budget: int = 1
    """Budget of one independent unit (Best-of-N: 1; DVTS: M)."""
    info: dict[str, Any] = field(default_factory=dict)
    """What the method decided, stored in the record's ``info`` (JSON-serialisable)."""
    extra_predictions: dict[str, str] = field(default_factory=dict)
    """Extra prediction names -> the selection rule whose pick they repeat (the adaptive
    solver's own pick is ``adaptive`` -> its strategy's rule)."""

"""One cell of a paper table: the run's value beside the published one, with the difference
(accuracy, in points), the ratio (FLOPs), whether the paper's value lies inside the run's
bootstrap interval and whether the run's setting (N, problem count) is the paper's."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from testtime.analysis import paper_data as pd


@dataclass
class Cell:
    """One cell of a paper table: the run's value (None: not run) beside the paper's."""

    table: str
    dataset: str
    row: str
    column: str
    method: str
    unit: pd.Unit = "accuracy"
    policy: str | None = None
    """The run's policy (canonical name); None for a paper-only cell."""
    prm: str | None = None
    value: float | None = None
    """Percent (accuracy) or FLOPs over the benchmark."""
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    problems: int = 0
    strategy: str | None = None
    """The compute-optimal choice (``method/rule`` with its PRM)."""
    flops: float | None = None
    """Mean FLOPs per problem of the run's setting (accuracy cells)."""
    paper: float | None = None
    paper_n: int | None = None
    note: str = ""

    @property
    def diff(self) -> float | None:
        if self.value is None or self.paper is None or self.unit != "accuracy":
            return None
        return round(self.value - self.paper, 4)

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.paper or self.unit != "flops":
            return None
        return self.value / self.paper

    @property
    def within_ci(self) -> bool | None:
        if self.paper is None or self.ci_low is None or self.ci_high is None:
            return None
        return self.ci_low <= self.paper <= self.ci_high

    @property
    def same_setting(self) -> bool | None:
        """N and the problem count match the paper's (None: nothing to compare)."""
        if self.paper is None or self.value is None:
            return None
        full = self.problems >= pd.BENCHMARK_SIZE.get(self.dataset, 0)
        return full and (self.paper_n is None or self.n == self.paper_n)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "diff": self.diff, "ratio": self.ratio,
                "within_ci": self.within_ci, "same_setting": self.same_setting}

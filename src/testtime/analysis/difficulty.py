"""Problem difficulty from the policy's own pass@1, in the two binnings of the papers.

* ``absolute`` (Liu et al. 2025): easy if pass@1 >= 50%, medium if 10% <= pass@1 < 50%,
  hard if pass@1 < 10% (each bin includes its lower bound).
* ``quantile`` (Snell et al. 2024): five bins of (near) equal size by pass@1, ``q1`` the
  easiest. Problems with equal pass@1 always share a bin: a problem's bin is
  ``floor(mean_rank * k / n)`` where ``mean_rank`` is its 0-based rank by decreasing pass@1,
  averaged over ties.
* ``all``: one bin, for tables without difficulty.

pass@1 is estimated from the policy's Best-of-N samples (fraction of correct candidates).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: (name, lower bound inclusive), easiest first.
ABSOLUTE_BINS: tuple[tuple[str, float], ...] = (("easy", 0.5), ("medium", 0.1), ("hard", 0.0))
DEFAULT_QUANTILES = 5
ALL = "all"


@dataclass(frozen=True)
class Binning:
    """An assignment of problems to difficulty bins, easiest bin first."""

    scheme: str
    bins: tuple[str, ...]
    assignment: dict[str, str]
    """problem id -> bin."""
    bounds: dict[str, tuple[float, float]]
    """bin -> (lowest, highest) pass@1 it covers, for placing a new problem online."""

    def members(self, name: str) -> list[str]:
        return sorted(p for p, b in self.assignment.items() if b == name)

    def bin_of(self, pass1: float) -> str:
        """Bin of a new problem with estimated pass@1 (the nearest bin's range; ties to the
        harder bin, the cautious side)."""
        best, dist = self.bins[-1], float("inf")
        for name in self.bins:
            lo, hi = self.bounds[name]
            d = 0.0 if lo <= pass1 <= hi else min(abs(pass1 - lo), abs(pass1 - hi))
            if d <= dist:
                best, dist = name, d
        return best

    def to_json(self) -> dict[str, object]:
        return {"scheme": self.scheme, "bins": list(self.bins),
                "bounds": {k: list(v) for k, v in self.bounds.items()}}


def absolute_bin(pass1: float) -> str:
    """Liu et al.'s bin of one problem."""
    if not 0.0 <= pass1 <= 1.0:
        raise ValueError(f"pass@1 must be in [0, 1], got {pass1}")
    return next(name for name, lo in ABSOLUTE_BINS if pass1 >= lo)


def absolute_binning(pass1: Mapping[str, float]) -> Binning:
    assignment = {pid: absolute_bin(p) for pid, p in pass1.items()}
    bounds, hi = {}, 1.0
    for name, lo in ABSOLUTE_BINS:
        bounds[name] = (lo, hi)
        hi = lo
    return Binning("absolute", tuple(n for n, _ in ABSOLUTE_BINS), assignment, bounds)


def quantile_binning(pass1: Mapping[str, float], k: int = DEFAULT_QUANTILES) -> Binning:
    """Snell et al.'s ``k`` quantile bins (``q1`` easiest); ties share a bin."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    names = tuple(f"q{i + 1}" for i in range(k))
    order = sorted(pass1, key=lambda pid: (-pass1[pid], pid))
    n = len(order)
    assignment: dict[str, str] = {}
    i = 0
    while i < n:
        j = i
        while j + 1 < n and pass1[order[j + 1]] == pass1[order[i]]:
            j += 1
        mean_rank = (i + j) / 2
        name = names[min(k - 1, int(mean_rank * k / n))]
        for pid in order[i : j + 1]:
            assignment[pid] = name
        i = j + 1
    bounds = {}
    for name in names:
        vals = [pass1[p] for p, b in assignment.items() if b == name]
        if vals:
            bounds[name] = (min(vals), max(vals))
    used = tuple(nm for nm in names if nm in bounds)
    return Binning("quantile", used, assignment, bounds)


def all_binning(ids: list[str]) -> Binning:
    return Binning(ALL, (ALL,), dict.fromkeys(ids, ALL), {ALL: (0.0, 1.0)})


def binnings_for(pass1: Mapping[str, float] | None, ids: list[str]) -> list[Binning]:
    """``all`` always; ``absolute`` and ``quantile`` when pass@1 is known for every problem."""
    out = [all_binning(ids)]
    if pass1 and all(p in pass1 for p in ids):
        sub = {p: pass1[p] for p in ids}
        out += [absolute_binning(sub), quantile_binning(sub)]
    return out

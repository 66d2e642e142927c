"""Difficulty bins on synthetic pass@1 values with known answers."""

from __future__ import annotations

import pytest

from testtime.analysis.difficulty import (
    absolute_bin,
    absolute_binning,
    binnings_for,
    quantile_binning,
)


@pytest.mark.parametrize(("p", "name"), [
    (1.0, "easy"), (0.5, "easy"), (0.49, "medium"), (0.1, "medium"), (0.099, "hard"),
    (0.0, "hard"),
])
def test_absolute_bins_and_boundaries(p: float, name: str) -> None:
    assert absolute_bin(p) == name


def test_absolute_bin_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="pass@1"):
        absolute_bin(1.5)


def test_absolute_binning_members_and_online_placement() -> None:
    b = absolute_binning({"a": 0.9, "b": 0.3, "c": 0.05, "d": 0.5})
    assert b.members("easy") == ["a", "d"] and b.members("hard") == ["c"]
    assert b.bins == ("easy", "medium", "hard")
    assert b.bin_of(0.75) == "easy" and b.bin_of(0.2) == "medium" and b.bin_of(0.0) == "hard"


def test_quantile_bins_equal_sizes_easiest_first() -> None:
    pass1 = {f"p{i}": i / 10 for i in range(10)}  # p9 easiest
    b = quantile_binning(pass1)
    assert b.bins == ("q1", "q2", "q3", "q4", "q5")
    assert b.members("q1") == ["p8", "p9"]
    assert b.members("q5") == ["p0", "p1"]
    assert all(len(b.members(q)) == 2 for q in b.bins)
    assert b.bounds["q1"] == (0.8, 0.9)
    assert b.bin_of(0.85) == "q1" and b.bin_of(0.0) == "q5"


def test_quantile_ties_share_a_bin() -> None:
    # Four problems never solved: ranks 6..9 (mean 7.5) -> all in q4 (floor(7.5*5/10) = 3).
    pass1 = {"a": 1.0, "b": 0.9, "c": 0.8, "d": 0.7, "e": 0.6, "f": 0.5,
             "g": 0.0, "h": 0.0, "i": 0.0, "j": 0.0}
    b = quantile_binning(pass1)
    assert b.members("q4") == ["g", "h", "i", "j"]
    assert "q5" not in b.bins  # an empty bin is not reported
    assert b.members("q1") == ["a", "b"]


def test_binnings_need_pass1_for_every_problem() -> None:
    assert [b.scheme for b in binnings_for(None, ["a"])] == ["all"]
    assert [b.scheme for b in binnings_for({"a": 0.2}, ["a", "b"])] == ["all"]
    schemes = [b.scheme for b in binnings_for({"a": 0.2, "b": 0.9}, ["a", "b"])]
    assert schemes == ["all", "absolute", "quantile"]

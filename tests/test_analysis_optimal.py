"""The cross-validated compute-optimal table, curves and efficiency gain on synthetic results
whose answers are known by construction."""

from __future__ import annotations

import pytest

from testtime.analysis.curves import (
    Curve,
    Point,
    bootstrap_ci,
    cv_curve,
    efficiency_gain,
    envelope,
    first_reach,
    strategy_curves,
)
from testtime.analysis.difficulty import Binning, all_binning
from testtime.analysis.optimal import cross_validate, fold_assignment
from testtime.analysis.runs import MAJORITY_BON, Outcome, Results, Strategy

KEY = ("pol", "prm")
A = Strategy("beam_search", "prm_last_max", 4)
B = MAJORITY_BON


def results(table: dict[Strategy, dict[int, dict[str, float]]]) -> Results:
    """Outcomes with FLOPs = 100 x budget (x2 for beam search, so ties favour Best-of-N)."""
    res = Results()
    res.outcomes[KEY] = {
        s: {b: {p: Outcome(c, b, 10.0 * b, 0.0, 100.0 * b * (2 if s.method != "best_of_n"
                                                              else 1))
                for p, c in by_p.items()} for b, by_p in by_b.items()}
        for s, by_b in table.items()}
    return res


def two_bins(easy: list[str], hard: list[str]) -> Binning:
    return Binning("absolute", ("easy", "hard"),
                   {**dict.fromkeys(easy, "easy"), **dict.fromkeys(hard, "hard")},
                   {"easy": (0.5, 1.0), "hard": (0.0, 0.5)})


def test_folds_split_each_bin_evenly_and_deterministically() -> None:
    b = two_bins([f"e{i}" for i in range(5)], [f"h{i}" for i in range(4)])
    f = fold_assignment(b, seed=3)
    assert f == fold_assignment(b, seed=3)
    assert sorted(f[p] for p in b.members("easy")) == [0, 0, 0, 1, 1]
    assert sorted(f[p] for p in b.members("hard")) == [0, 0, 1, 1]


def test_table_picks_the_best_strategy_per_bin() -> None:
    easy, hard = ["e1", "e2", "e3", "e4"], ["h1", "h2", "h3", "h4"]
    # A: right on every easy problem, wrong on hard; B: half the easy ones, every hard one.
    res = results({
        A: {4: {**dict.fromkeys(easy, 1.0), **dict.fromkeys(hard, 0.0)}},
        B: {4: {"e1": 1.0, "e2": 0.0, "e3": 1.0, "e4": 0.0, **dict.fromkeys(hard, 1.0)}},
    })
    rows, curve = cross_validate(res, KEY, two_bins(easy, hard))
    by_bin = {r.bin: r for r in rows}
    assert by_bin["easy"].strategy == A and by_bin["easy"].cv_accuracy == 1.0
    assert by_bin["hard"].strategy == B and by_bin["hard"].cv_accuracy == 1.0
    assert by_bin["easy"].majority_accuracy == 0.5
    # the difficulty-aware curve is right everywhere; each fixed strategy is not
    assert curve[0].accuracy == 1.0
    assert curve[0].flops == pytest.approx((4 * 800 + 4 * 400) / 8)


def test_cross_validation_is_not_fooled_by_overfitting() -> None:
    ids = [f"p{i}" for i in range(8)]
    binning = all_binning(ids)
    folds = fold_assignment(binning)
    # A is right exactly on fold 0, B exactly on fold 1: each fold picks the strategy that
    # is wrong on the other fold, so the honest accuracy is 0 although in-sample it is 0.5.
    res = results({A: {4: {p: float(folds[p] == 0) for p in ids}},
                   B: {4: {p: float(folds[p] == 1) for p in ids}}})
    [row], _ = cross_validate(res, KEY, binning)
    assert row.in_sample_accuracy == 0.5
    assert row.cv_accuracy == 0.0
    assert set(row.fold_choices) == {A.label, B.label}
    # ties in-sample go to the cheaper strategy (Best-of-N has half the FLOPs here)
    assert row.strategy == B


def test_single_problem_bin_falls_back_to_the_global_fold_choice() -> None:
    easy, hard = ["e1", "e2", "e3", "e4"], ["h1"]
    res = results({A: {4: {**dict.fromkeys(easy, 1.0), "h1": 0.0}},
                   B: {4: {**dict.fromkeys(easy, 0.0), "h1": 1.0}}})
    rows, _ = cross_validate(res, KEY, two_bins(easy, hard))
    hard_row = next(r for r in rows if r.bin == "hard")
    assert hard_row.fallback and hard_row.fold_choices == (A.label, A.label)
    assert hard_row.cv_accuracy == 0.0 and hard_row.in_sample_accuracy == 1.0


def test_strategies_missing_a_budget_do_not_compete_there() -> None:
    ids = ["a", "b"]
    res = results({A: {4: dict.fromkeys(ids, 1.0)},
                   B: {1: dict.fromkeys(ids, 0.0), 4: dict.fromkeys(ids, 0.0)}})
    rows, curve = cross_validate(res, KEY, all_binning(ids))
    assert [(r.budget, r.strategy) for r in rows] == [(1, B), (4, A)]
    assert [p.budget for p in curve] == [1, 4]


def test_bootstrap_interval_brackets_the_mean_and_is_seeded() -> None:
    vals = [1.0] * 30 + [0.0] * 70
    lo, hi = bootstrap_ci(vals, n_boot=2000, seed=1)
    assert lo < 0.3 < hi and 0.15 < lo and hi < 0.45
    assert bootstrap_ci(vals, n_boot=2000, seed=1) == (lo, hi)
    assert bootstrap_ci([1.0, 1.0]) == (1.0, 1.0)


def curve(label: str, pts: list[tuple[float, float]]) -> Curve:
    return Curve(label, [Point(int(x), x, 0.0, 100.0 * x, y, y, y, 10) for x, y in pts])


def test_efficiency_gain_by_linear_interpolation() -> None:
    majority = curve("maj", [(1, 0.2), (2, 0.4), (4, 0.5), (8, 0.6), (16, 0.6), (32, 0.55)])
    optimal = curve("opt", [(1, 0.3), (2, 0.5), (4, 0.7)])
    g = efficiency_gain(majority, optimal)
    assert g.peak_accuracy == 0.6 and g.majority_compute == 8  # the first maximum
    assert g.optimal_compute == pytest.approx(3.0)  # 2 + (0.6 - 0.5) / (0.7 - 0.5) * 2
    assert g.gain == pytest.approx(8 / 3)
    assert efficiency_gain(majority, optimal, "flops").gain == pytest.approx(8 / 3)
    never = efficiency_gain(majority, curve("low", [(1, 0.1), (64, 0.5)]))
    assert never.gain is None and never.optimal_compute is None
    at_once = efficiency_gain(majority, curve("high", [(2, 0.9), (4, 0.95)]))
    assert at_once.optimal_compute == 2 and at_once.gain == 4.0  # no extrapolation below


def test_first_reach_handles_unsorted_points() -> None:
    assert first_reach([(4, 0.8), (1, 0.0), (2, 0.4)], 0.6) == pytest.approx(3.0)
    assert first_reach([], 0.5) is None


def test_strategy_curves_envelope_and_cv_curve() -> None:
    ids = ["a", "b", "c", "d"]
    res = results({A: {4: dict.fromkeys(ids, 1.0)},
                   B: {1: {"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0},
                       4: {"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0}}})
    curves = strategy_curves(res, KEY, n_boot=200)
    assert [p.accuracy for p in curves[B].points] == [0.25, 0.25]
    assert curves[A].points[0].flops == 800.0 and curves[B].points[1].policy_tokens == 40.0
    env = envelope(curves)
    assert [(p.budget, p.accuracy) for p in env.points] == [(1, 0.25), (4, 1.0)]
    _, pts = cross_validate(res, KEY, all_binning(ids))
    cv = cv_curve(pts, "cv", n_boot=200)
    assert [p.accuracy for p in cv.points] == [0.25, 1.0]
    assert cv.points[1].ci_low == cv.points[1].ci_high == 1.0


def test_ties_within_a_standard_error_go_to_less_compute_then_majority() -> None:
    from testtime.analysis.optimal import MIN_BIN_PROBLEMS, pick

    ids = [f"p{i}" for i in range(6)]
    dc = Strategy("best_of_n", "deepconf_lowest_10_wvote")
    # every strategy wrong everywhere (a 6-problem sweep): the majority vote, not a DeepConf
    # rule that happens to sort first
    res = results({dc: {4: dict.fromkeys(ids, 0.0)}, B: {4: dict.fromkeys(ids, 0.0)},
                   A: {4: dict.fromkeys(ids, 0.0)}})
    [row], _ = cross_validate(res, KEY, all_binning(ids))
    assert row.strategy == B and set(row.fold_choices) == {B.label}
    assert row.few_problems and len(ids) < MIN_BIN_PROBLEMS
    # 4/6 vs 3/6: within one standard error (sqrt(2/3 * 1/3 / 6) = 0.19) of the best, so the
    # cheaper Best-of-N majority wins over the pricier beam search
    res = results({A: {4: {p: float(i < 4) for i, p in enumerate(ids)}},
                   B: {4: {p: float(i < 3) for i, p in enumerate(ids)}}})
    assert pick({s: v[4] for s, v in res.outcomes[KEY].items()}, ids) == B
    # 6/6 vs 5/6: the best is exact (standard error 0), so the better one wins
    res = results({A: {4: dict.fromkeys(ids, 1.0)},
                   B: {4: {p: float(i < 5) for i, p in enumerate(ids)}}})
    assert pick({s: v[4] for s, v in res.outcomes[KEY].items()}, ids) == A
    many = [f"q{i}" for i in range(MIN_BIN_PROBLEMS)]
    [row], _ = cross_validate(results({B: {4: dict.fromkeys(many, 1.0)}}), KEY,
                              all_binning(many))
    assert not row.few_problems

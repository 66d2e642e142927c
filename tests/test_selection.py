"""Selection rules against hand-computed answers on fixed score tables.

Scores are dyadic fractions, so sums and products below are exact in floating point and ties
are real ties.
"""

from __future__ import annotations

import pytest

from testtime.selection import AGGREGATIONS, RULES, Choice, Scored, budgets, select, select_all

#: group, step scores, correct. Aggregates (min, last, avg, prod):
#: c0 (.25, .25, .5, .1875)  c1 (.5, .75, .625, .375)  c2 (.5, .5, .5, .25)
#: c3 (.625, .625, .625, .625)
TABLE = [
    Scored(0, (0.75, 0.25), False),
    Scored(1, (0.5, 0.75), True),
    Scored(0, (0.5, 0.5), False),
    Scored(2, (0.625,), True),
]

EXPECTED = {
    "majority": 0,  # group 0 has two votes
    "prm_min_max": 3,  # .625 is the highest minimum
    "prm_min_vote": 0,  # g0 .25+.5=.75 > g2 .625 > g1 .5
    "prm_last_max": 1,  # .75
    "prm_last_vote": 0,  # g0 .25+.5=.75 ties g1 .75: g0 appears first
    "prm_avg_max": 1,  # c1 and c3 tie at .625: the first wins
    "prm_avg_vote": 0,  # g0 .5+.5=1.0
    "prm_prod_max": 3,  # .625
    "prm_prod_vote": 3,  # g2 .625 > g0 .1875+.25=.4375 > g1 .375
    "oracle": 1,  # the first correct candidate
    # DeepConf rules with no token confidences (TABLE has none) fall back to majority; their
    # hand-computed tables with confidences are in test_deepconf.py.
    **{rule: 0 for rule in RULES if rule.startswith("deepconf_")},
}


@pytest.mark.parametrize("rule", RULES)
def test_rules_match_hand_computed_table(rule: str) -> None:
    choice = select(rule, TABLE)
    assert choice == Choice(EXPECTED[rule], TABLE[EXPECTED[rule]].correct)


def test_every_rule_is_covered() -> None:
    assert set(EXPECTED) == set(RULES)


def test_aggregations() -> None:
    s = (0.5, 0.25, 1.0)
    assert [AGGREGATIONS[a](s) for a in ("min", "last", "avg", "prod")] == [
        0.25, 1.0, 1.75 / 3, 0.125]
    # a path without steps ranks below every probability (the paper's -1.0)
    assert all(fn(()) == -1.0 for fn in AGGREGATIONS.values())


def test_majority_tie_goes_to_the_group_seen_first() -> None:
    cands = [Scored(1, (0.5,), False), Scored(0, (0.5,), True), Scored(0, (0.5,), True),
             Scored(1, (0.5,), False)]
    assert select("majority", cands) == Choice(0, False)
    # the same votes in another order: group 0 now comes first
    assert select("majority", cands[1:] + cands[:1]) == Choice(0, True)


def test_candidates_without_answer_do_not_vote() -> None:
    cands = [Scored(None, (1.0,), False), Scored(None, (1.0,), False), Scored(4, (0.25,), True)]
    for rule in ("majority", "prm_last_vote", "prm_min_vote"):
        assert select(rule, cands) == Choice(2, True)
    # Max rules pick the best-scored path even when no answer was extracted from it.
    assert select("prm_last_max", cands) == Choice(0, False)


def test_all_answers_empty_and_no_candidates() -> None:
    empty = [Scored(None, (0.5,), False), Scored(None, (0.75,), False)]
    assert select("majority", empty) == Choice(None, False)
    assert select("prm_prod_vote", empty) == Choice(None, False)
    assert select("prm_prod_max", empty) == Choice(1, False)
    for rule in RULES:
        assert select(rule, []) == Choice(None, False)


def test_oracle_without_correct_candidate() -> None:
    assert select("oracle", [Scored(0, (1.0,), False)]) == Choice(None, False)


def test_unknown_rule_is_named() -> None:
    for bad in ("prm_median_max", "prm_min_best", "best"):
        with pytest.raises(ValueError, match=bad):
            select(bad, TABLE)


def test_budgets() -> None:
    assert budgets(8, True) == [1, 2, 4, 8]
    assert budgets(6, True) == [1, 2, 4, 6]
    assert budgets(1, True) == [1]
    assert budgets(8, False) == [8]
    # DVTS: prefixes are valid only at whole subtrees of M candidates
    assert budgets(8, True, unit=2) == [2, 4, 8]
    assert budgets(12, True, unit=4) == [4, 8, 12]
    assert budgets(4, True, unit=4) == [4]
    assert budgets(8, False, unit=4) == [8]
    with pytest.raises(ValueError, match="multiple of the prefix unit 4"):
        budgets(6, True, unit=4)


def test_select_all_uses_prefixes() -> None:
    out = select_all(TABLE, [1, 2, 4], rules=("majority", "prm_last_max", "oracle"))
    assert out[1] == {"majority": Choice(0, False), "prm_last_max": Choice(0, False),
                      "oracle": Choice(None, False)}
    # with two candidates: groups 0 and 1 tie at one vote, the first wins
    assert out[2]["majority"] == Choice(0, False)
    assert out[2]["prm_last_max"] == Choice(1, True)
    assert out[4]["oracle"] == Choice(1, True)

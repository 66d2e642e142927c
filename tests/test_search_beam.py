"""Beam search, worked by hand on scripted trees, in both semantics (the property test in
``test_fidelity.py`` checks the same decisions on random trees against ports of the loops).

Trees map a prefix to its samples (sample i takes entry i mod len); the scorer gives a step the
score its stripped text has in a table (0.5 otherwise); ``max_step_tokens`` cuts long steps.
"""

from __future__ import annotations

import asyncio

import pytest

from testtime.prompts.base import PromptTemplate
from testtime.scoring.base import ScoreResult
from testtime.search.base import SamplingConfig, SearchConfig, SearchContext, SearchResult
from testtime.search.beam_search import beam_search
from testtime.testing import RuleScorer, ScriptedPolicy, text_scorer, tree_policy
from testtime.types import Problem

PROBLEM = Problem("q1", "What is 1 + 2?", "3")
PLAIN = PromptTemplate("plain")
CUT = "w w w w w w w w w"  # 9 tokens: cut by a 5-token step limit ("length")


def search(policy: ScriptedPolicy, scorer: RuleScorer, **kw) -> SearchResult:  # type: ignore[no-untyped-def]
    cfg = SearchConfig(**{"method": "beam_search", "n": 4, "beam_width": 2,
                          "max_step_tokens": 5, **kw})
    ctx = SearchContext(policy, scorer, PLAIN, cfg, SamplingConfig(seed=1))
    return asyncio.run(beam_search(PROBLEM, ctx))


def asked(policy: ScriptedPolicy) -> list[tuple[str, int]]:
    return [(r.prefix, r.params.n) for r in policy.calls]


def assert_tokens_add_up(result: SearchResult) -> None:
    assert result.compute.completion_tokens == sum(n.step.num_tokens for n in result.tree)
    assert result.compute.generations == len(result.tree)


# --- paper (compute-optimal-tts) ---------------------------------------------------------------


def test_ended_children_compete_for_the_beam_and_k_paths_come_back() -> None:
    # N=4, M=2, so K=2. Round 0 keeps A2 (boxed, 0.9) and A4 (0.8): the ended child takes a
    # slot. A2 ends; A4 draws M=2 children. Round 1: A2 joins the end nodes, so A4 offers
    # only k = 2 - 1 = 1 child (B2, 0.7, boxed), which ends. Two paths, in the order they
    # ended; the earlier testtime kept four and ran until four paths had ended.
    tree = {"": ["A1.\n\n", "A2 \\boxed{1}.\n\n", "A3.\n\n", "A4.\n\n"],
            "A4.\n\n": ["B1.\n\n", "B2 \\boxed{2}.\n\n"]}
    scores = {"A1.": 0.5, "A2 \\boxed{1}.": 0.9, "A3.": 0.4, "A4.": 0.8, "B1.": 0.3,
              "B2 \\boxed{2}.": 0.7}
    policy = tree_policy(tree)
    result = search(policy, text_scorer(scores))
    assert [c.text for c in result.candidates] == ["A2 \\boxed{1}.\n\n",
                                                   "A4.\n\nB2 \\boxed{2}.\n\n"]
    assert [c.scores for c in result.candidates] == [[0.9], [0.8, 0.7]]
    assert [c.finish_reason for c in result.candidates] == ["boxed", "boxed"]
    assert asked(policy) == [("", 4), ("A4.\n\n", 2)]
    assert result.budget == 4 and not result.independent_prefixes
    assert_tokens_add_up(result)


def test_duplicate_and_cut_siblings_are_dropped_and_steps_normalised() -> None:
    # " A.\n\n" strips to the first sample's "A.\n\n" (dropped as a duplicate); the cut sample
    # is dropped; C and A are kept. Every sample stays in the tree (status "dropped").
    tree = {"": ["A.\n\n", " A.\n\n", CUT, "C.\n\n"], "A.\n\n": ["\\boxed{3}"],
            "C.\n\n": ["\\boxed{4}"]}
    result = search(tree_policy(tree), text_scorer({"A.": 0.6, "C.": 0.4}), max_depth=3)
    root = [n for n in result.tree if n.parent == -1]
    assert [(n.step.text, n.status) for n in root] == [
        ("A.\n\n", "kept"), ("A.\n\n", "dropped"), ("w w w w w\n\n", "dropped"),
        ("C.\n\n", "kept")]
    assert root[2].step.truncated and root[2].step.num_tokens == 5
    # each kept node drew 2 samples of the same EOS-ended step: one child each
    assert [c.text for c in result.candidates] == ["A.\n\n\\boxed{3}\n\n",
                                                   "C.\n\n\\boxed{4}\n\n"]
    assert_tokens_add_up(result)


def test_a_root_of_only_cut_samples_gets_one_forced_attempt() -> None:
    policy = tree_policy({"": [CUT]})
    result = search(policy, text_scorer({}), max_depth=1)
    assert asked(policy) == [("", 4), ("", 4)]  # the second keeps everything
    # The forced samples collapse into one step (the same text); it did not end on the blank
    # line, so the paper's code takes it as an EOS end.
    [c] = result.candidates
    assert c.text == "w w w w w\n\n" and c.finish_reason == "eos"


def test_a_node_without_a_valid_step_tries_three_times_then_ends() -> None:
    policy = tree_policy({"": ["A.\n\n"], "A.\n\n": [CUT]})
    result = search(policy, text_scorer({}), n=2, beam_width=2, max_depth=5)
    assert asked(policy) == [("", 2)] + [("A.\n\n", 2)] * 3
    [c] = result.candidates
    assert (c.text, c.finish_reason) == ("A.\n\n", "no_step")


def test_depth_ends_a_path_after_max_depth_steps() -> None:
    result = search(tree_policy({}, default="More.\n\n"), text_scorer({}), n=2,
                    beam_width=2, max_depth=3)
    [c] = result.candidates
    assert c.text == "More.\n\n" * 3 and c.finish_reason == "depth"


def test_rejects_budget_not_divisible_by_width() -> None:
    with pytest.raises(ValueError, match="multiple of beam_width=4"):
        search(tree_policy({}), text_scorer({}), n=6, beam_width=4)


def test_scorer_with_wrong_number_of_scores_is_named() -> None:
    class Short(RuleScorer):
        async def score(self, requests):  # type: ignore[no-untyped-def,override]
            return ScoreResult([[0.5] for _ in requests])

    tree = {"": ["A.\n\n"], "A.\n\n": ["B.\n\n"]}
    with pytest.raises(ValueError, match="scorer 'short' returned 1 scores for request 0 of 2 "
                                         "steps"):
        search(tree_policy(tree), Short(lambda q, b, s: 0.5, name="short"), n=2,
               beam_width=1)


def test_lookahead_is_refused_where_the_reference_code_has_none() -> None:
    for semantics in ("paper", "sal"):
        with pytest.raises(ValueError, match="search.lookahead"):
            SearchConfig(method="beam_search", lookahead=1, semantics=semantics)  # type: ignore[arg-type]
    SearchConfig(method="dvts", lookahead=1, semantics="sal")


# --- sal (search-and-learn) --------------------------------------------------------------------


def test_sal_sets_completed_beams_aside_and_copies_survivors_back_to_n() -> None:
    # Iteration 0: four fresh beams; B ends at EOS (completed before pruning, whatever its
    # score); of A, C, D the N/M=2 best survive (C, D). Iteration 1: [C, D, C, D], one sample
    # each; all four end at EOS. The first four completed beams come back.
    tree = {"": ["A.\n\n", "B \\boxed{1}", "C.\n\n", "D.\n\n"]}
    policy = tree_policy(tree)
    result = search(policy, text_scorer({"A.": 0.5, "C.": 0.9, "D.": 0.7,
                                         "B \\boxed{1}": 0.2}), semantics="sal", max_depth=3)
    assert [c.text for c in result.candidates] == [
        "B \\boxed{1}", "C.\n\n\\boxed{0}", "D.\n\n\\boxed{0}", "C.\n\n\\boxed{0}"]
    assert asked(policy) == [("", 1)] * 4 + [("C.\n\n", 1), ("D.\n\n", 1)] * 2
    assert len(result.candidates) == 4 and result.budget == 4
    assert_tokens_add_up(result)


def test_sal_does_not_stop_at_boxed_and_runs_the_last_iteration_to_eos() -> None:
    tree = {"": ["X \\boxed{1}.\n\n"], "X \\boxed{1}.\n\n": ["Y.\n\n"]}
    policy = tree_policy(tree)
    result = search(policy, text_scorer({}), n=2, beam_width=2, semantics="sal",
                    max_depth=3)
    assert {c.text for c in result.candidates} == {"X \\boxed{1}.\n\nY.\n\n\\boxed{0}"}
    last = [r for r in policy.calls if r.prefix.endswith("Y.\n\n")]
    assert last and all(r.params.stop == () for r in last)  # no stop in the last iteration

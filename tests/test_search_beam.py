"""Beam search on scripted trees whose right outcome is known exactly."""

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


def search(policy: ScriptedPolicy, scorer: RuleScorer, **kw) -> SearchResult:  # type: ignore[no-untyped-def]
    cfg = SearchConfig(**{"method": "beam_search", "n": 4, "beam_width": 2, **kw})
    ctx = SearchContext(policy, scorer, PLAIN, cfg, SamplingConfig(seed=1))
    return asyncio.run(beam_search(PROBLEM, ctx))


def statuses(result: SearchResult) -> dict[str, str]:
    return {"".join(n.step.text.strip()): n.status for n in result.tree}


def assert_tokens_add_up(result: SearchResult) -> None:
    assert result.compute.completion_tokens == sum(n.step.num_tokens for n in result.tree)
    assert result.compute.generations == len(result.tree)


def test_keeps_the_best_n_over_m_beams_at_every_depth() -> None:
    tree = {
        "": ["A.\n\n", "B.\n\n", "C.\n\n", "D.\n\n"],
        "B.\n\n": ["B1.\n\n", "B2.\n\n"],
        "C.\n\n": ["C1.\n\n", "C2.\n\n"],
        "C.\n\nC1.\n\n": ["C1a \\boxed{3}", "C1b \\boxed{4}"],
        "B.\n\nB2.\n\n": ["B2a \\boxed{5}", "B2b \\boxed{6}"],
    }
    scores = {"A.": 0.4, "B.": 0.9, "C.": 0.7, "D.": 0.1, "B1.": 0.3, "B2.": 0.5, "C1.": 0.8,
              "C2.": 0.2, "C1a \\boxed{3}": 0.95, "C1b \\boxed{4}": 0.6,
              "B2a \\boxed{5}": 0.7, "B2b \\boxed{6}": 0.65}
    policy = tree_policy(tree)
    result = search(policy, text_scorer(scores))
    assert statuses(result) == {
        "A.": "pruned", "B.": "kept", "C.": "kept", "D.": "pruned",
        "B1.": "pruned", "B2.": "kept", "C1.": "kept", "C2.": "pruned",
        "C1a \\boxed{3}": "finished", "C1b \\boxed{4}": "finished",
        "B2a \\boxed{5}": "finished", "B2b \\boxed{6}": "finished",
    }
    # one policy call per depth: N first steps in one request, then M per kept beam (best first)
    calls = [[(r.prefix, r.params.n) for r in call] for call in policy.generate_calls]
    assert calls == [
        [("", 4)],
        [("B.\n\n", 2), ("C.\n\n", 2)],
        [("C.\n\nC1.\n\n", 2), ("B.\n\nB2.\n\n", 2)],
    ]
    assert all(r.params.stop == ("\n\n",) and r.params.temperature == 0.8
               for call in policy.generate_calls for r in call)
    # exactly N paths, best last-step score first, each with the scores of its whole path
    assert [c.text for c in result.candidates] == [
        "C.\n\nC1.\n\nC1a \\boxed{3}", "B.\n\nB2.\n\nB2a \\boxed{5}",
        "B.\n\nB2.\n\nB2b \\boxed{6}", "C.\n\nC1.\n\nC1b \\boxed{4}"]
    assert result.candidates[0].scores == [0.7, 0.8, 0.95]
    assert all(c.finish_reason == "boxed" and c.origin == 0 for c in result.candidates)
    assert not result.independent_prefixes
    # every node is in the tree with its parent; node ids of a path follow the parent links
    for c in result.candidates:
        parents = [result.tree[i].parent for i in c.node_ids]
        assert parents == [-1, *c.node_ids[:-1]]
        assert [result.tree[i].depth for i in c.node_ids] == [0, 1, 2]
    # one scorer call per depth; the scorer saw whole paths
    assert result.compute.scorer_calls == 12 and result.compute.policy_calls == 5
    assert_tokens_add_up(result)


def test_stops_once_n_paths_finished() -> None:
    tree = {
        "": ["X \\boxed{1}", "Y \\boxed{1}", "P.\n\n", "Q.\n\n"],
        "P.\n\n": ["P1 \\boxed{1}", "P2.\n\n"],
        "Q.\n\n": ["Q1 \\boxed{1}", "Q2.\n\n"],
    }
    policy = tree_policy(tree, default="Never asked.\n\n")
    result = search(policy, text_scorer({}))
    assert len(policy.generate_calls) == 2
    s = statuses(result)
    # the partial children of the last depth are never expanded
    assert s["P2."] == s["Q2."] == "pruned"
    assert sorted(c.text for c in result.candidates) == [
        "P.\n\nP1 \\boxed{1}", "Q.\n\nQ1 \\boxed{1}", "X \\boxed{1}", "Y \\boxed{1}"]


def test_more_than_n_finished_returns_the_best_n() -> None:
    tree = {
        "": ["Done \\boxed{1}", "P.\n\n", "Q.\n\n", "R.\n\n"],
        "P.\n\n": ["P1 \\boxed{2}", "P2 \\boxed{3}"],
        "Q.\n\n": ["Q1 \\boxed{4}", "Q2 \\boxed{5}"],
    }
    scores = {"Done \\boxed{1}": 0.3, "P.": 0.9, "Q.": 0.8, "R.": 0.1, "P1 \\boxed{2}": 0.7,
              "P2 \\boxed{3}": 0.6, "Q1 \\boxed{4}": 0.2, "Q2 \\boxed{5}": 0.5}
    result = search(tree_policy(tree), text_scorer(scores))
    # five paths finished; the one scored 0.2 is left out, the rest come best first
    assert [c.text for c in result.candidates] == [
        "P.\n\nP1 \\boxed{2}", "P.\n\nP2 \\boxed{3}", "Q.\n\nQ2 \\boxed{5}", "Done \\boxed{1}"]
    assert statuses(result)["Q1 \\boxed{4}"] == "finished"
    assert statuses(result)["R."] == "pruned"


def test_fills_with_cut_paths_when_too_few_finish() -> None:
    tree = {"": ["Done \\boxed{7}", "S1.\n\n", "S2.\n\n", "S3.\n\n"]}
    scores = {"S1.": 0.9, "S2.": 0.8, "S3.": 0.1, "More.": 0.4}
    policy = tree_policy(tree, default="More.\n\n")
    result = search(policy, text_scorer(scores), max_depth=2)
    assert len(result.candidates) == 4
    assert [c.finish_reason for c in result.candidates] == ["boxed", "depth", "depth", "depth"]
    assert result.candidates[0].text == "Done \\boxed{7}"
    # only S1 and S2 were kept, so all cut paths extend them
    assert all(c.text.startswith(("S1.", "S2.")) and len(c.steps) == 2
               for c in result.candidates[1:])
    assert max(n.depth for n in result.tree) == 1
    assert_tokens_add_up(result)


def test_token_limits_cut_steps_and_paths() -> None:
    # fake tokens are words with their trailing whitespace
    tree = {"": ["One two.\n\n"], "One two.\n\n": ["Three four five six.\n\n"]}
    policy = tree_policy(tree)
    result = search(policy, text_scorer({}), n=2, beam_width=2, max_step_tokens=3,
                    max_path_tokens=4)
    # first step: min(3, 4) tokens; second: min(3, 4 - 2) = 2 tokens
    assert [[r.params.max_tokens for r in call] for call in policy.generate_calls] == [[3], [2]]
    [c, _] = result.candidates
    assert c.text == "One two.\n\nThree four "
    assert c.finish_reason == "length"
    assert [s.truncated for s in c.steps] == [False, True]
    assert [s.num_tokens for s in c.steps] == [2, 2]
    assert_tokens_add_up(result)


def test_step_limit_ends_a_path_as_length() -> None:
    tree = {"": ["Long step with many words.\n\n", "Short.\n\n"], "Short.\n\n": ["The end."]}
    result = search(tree_policy(tree), text_scorer({"Long step with": 0.9, "Short.": 0.1}),
                    n=2, beam_width=1, max_step_tokens=3)
    # the natural end (EOS) ranks first although the cut path scored higher
    assert [(c.text, c.finish_reason) for c in result.candidates] == [
        ("Short.\n\nThe end.", "eos"), ("Long step with ", "length")]
    assert result.candidates[1].steps[0].truncated
    assert statuses(result)["Long step with"] == "finished"


def test_lookahead_ranks_by_the_rolled_out_step_and_is_paid_for() -> None:
    tree = {
        "": ["Shiny.\n\n", "Plain.\n\n"],
        "Shiny.\n\n": ["Oops.\n\n", "Shiny2.\n\n"],
        "Plain.\n\n": ["Solid.\n\n", "Plain2.\n\n"],
        "Plain.\n\nSolid.\n\n": ["\\boxed{3}"],
        "Plain.\n\nPlain2.\n\n": ["\\boxed{3}"],
        "Shiny.\n\nOops.\n\n": ["\\boxed{9}"],
        "Shiny.\n\nShiny2.\n\n": ["\\boxed{9}"],
    }
    scores = {"Shiny.": 0.9, "Plain.": 0.6, "Oops.": 0.1, "Solid.": 0.95, "Shiny2.": 0.5,
              "Plain2.": 0.5}
    plain = search(tree_policy(tree), text_scorer(scores), n=2, beam_width=2)
    assert statuses(plain)["Shiny."] == "kept" and statuses(plain)["Plain."] == "pruned"
    assert all(c.text.startswith("Shiny.") for c in plain.candidates)

    policy = tree_policy(tree)
    scorer = text_scorer(scores)
    ahead = search(policy, scorer, n=2, beam_width=2, lookahead=1)
    # Shiny's greedy continuation (entry 0) scores 0.1, Plain's 0.95: Plain is kept
    first = [n for n in ahead.tree if n.depth == 0 and n.status != "lookahead"]
    assert {n.step.text.strip(): n.status for n in first} == {"Shiny.": "pruned",
                                                             "Plain.": "kept"}
    assert all(c.text.startswith("Plain.") for c in ahead.candidates)
    # node scores are the steps' own scores; the lookahead nodes carry theirs
    assert {n.step.text.strip(): n.score for n in first} == {"Shiny.": 0.9, "Plain.": 0.6}
    look = [n for n in ahead.tree if n.status == "lookahead"]
    assert sorted((ahead.tree[n.parent].step.text.strip(), n.step.text.strip(), n.score)
                  for n in look) == [("Plain.", "Solid.", 0.95), ("Plain2.", "\\boxed{3}", 0.5),
                                     ("Shiny.", "Oops.", 0.1), ("Solid.", "\\boxed{3}", 0.5)]
    # roll-outs are greedy single steps, issued in one call per round for all beams
    greedy = [call for call in policy.generate_calls if call[0].params.temperature == 0]
    assert [len(call) for call in greedy] == [2, 2]
    assert all(r.params.n == 1 and r.params.stop == ("\n\n",) for c in greedy for r in c)
    # lookahead steps never enter a path, but their tokens are counted
    lookahead_ids = {n.id for n in look}
    assert all(not lookahead_ids & set(c.node_ids) for c in ahead.candidates)
    lookahead_tokens = sum(n.step.num_tokens for n in look)
    assert lookahead_tokens > 0
    assert ahead.compute.completion_tokens == sum(n.step.num_tokens for n in ahead.tree)
    # per depth: 2 sampled children (+ 2 roll-outs while there is a choice to make)
    assert ahead.compute.generations == (2 + 2) + (2 + 2) + 2
    # both runs sample paths of the same token lengths: the difference is the lookahead
    assert ahead.compute.completion_tokens == (plain.compute.completion_tokens
                                               + lookahead_tokens)
    # the scorer saw each candidate followed by its roll-out
    assert ("Shiny.\n\n", "Oops.\n\n") in [tuple(s.text for s in r.steps)
                                           for r in scorer.requests]


def test_lookahead_stops_at_a_finished_roll_out() -> None:
    tree = {"": ["A.\n\n", "B.\n\n"], "A.\n\n": ["\\boxed{1}"], "B.\n\n": ["B1.\n\n"]}
    policy = tree_policy(tree, default="More.\n\n")
    result = search(policy, text_scorer({"A.": 0.2}), n=2, beam_width=2, lookahead=3,
                    max_depth=3)
    first_round = [n for n in result.tree if n.status == "lookahead" and n.depth == 1]
    assert len(first_round) == 2
    # A's roll-out ended at \boxed after one step; B's went on to the depth limit
    chains = {}
    for n in result.tree:
        if n.status == "lookahead":
            root = n
            while result.tree[root.parent].status == "lookahead":
                root = result.tree[root.parent]
            chains.setdefault(result.tree[root.parent].step.text, []).append(n.step.text)
    assert chains["A.\n\n"] == ["\\boxed{1}"]
    assert chains["B.\n\n"] == ["B1.\n\n", "More.\n\n"]


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

"""The outcome oracle: 1.0 for every step of a path whose final answer is right, else 0.0."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from testtime.grading import Grader
from testtime.scoring.oracle import OracleScorer
from testtime.scoring.registry import build_scorer
from testtime.types import Problem, ScoreRequest, Step

PROBLEMS = [
    Problem(id="a", problem="What is 2+3?", answer="5"),
    Problem(id="b", problem="What is half of one?", answer="\\frac{1}{2}"),
]


def path(question: str, *steps: str) -> ScoreRequest:
    return ScoreRequest(question, tuple(Step(text=s) for s in steps))


@pytest.fixture(scope="module")
def grader() -> Iterator[Grader]:
    with Grader() as g:
        yield g


def test_scores_every_step_by_the_final_answer(grader: Grader) -> None:
    oracle = OracleScorer(grader=grader)
    oracle.add_problems(PROBLEMS)
    requests = [
        path("What is 2+3?", "Add.\n\n", "The answer is $\\boxed{5}$."),
        path("What is 2+3?", "Add.\n\n", "Wrong: $\\boxed{6}$."),
        path("What is 2+3?", "A partial path without an answer yet.\n\n"),
        path("What is 2+3?"),
        path("What is half of one?", "One half is $\\boxed{0.5}$."),  # Math-Verify equivalence
    ]
    result = asyncio.run(oracle.score(requests))
    assert result.scores == [[1.0, 1.0], [0.0, 0.0], [0.0], [], [1.0]]
    assert result.tokens == [0] * 5  # no model reads anything
    assert oracle.name == "oracle:outcome"  # labelled as an oracle in records


def test_needs_a_reference_for_every_question() -> None:
    oracle = OracleScorer({"What is 2+3?": "5"})
    with pytest.raises(KeyError, match="no reference answer for question 'Unknown"):
        asyncio.run(oracle.score([path("Unknown question", "x")]))
    with pytest.raises(ValueError, match="two references"):
        oracle.add_references({"What is 2+3?": "6"})
    oracle.add_references({"What is 2+3?": "5"})  # the same reference again is fine
    asyncio.run(oracle.aclose())


def test_registry_fills_references_from_the_runs_problems() -> None:
    oracle = build_scorer("oracle", problems=PROBLEMS)
    assert isinstance(oracle, OracleScorer)
    assert oracle.references == {"What is 2+3?": "5", "What is half of one?": "\\frac{1}{2}"}
    # Equal strings are settled without starting Math-Verify's worker.
    assert asyncio.run(oracle.score([path("What is 2+3?", "\\boxed{5}")])).scores == [[1.0]]
    asyncio.run(oracle.aclose())

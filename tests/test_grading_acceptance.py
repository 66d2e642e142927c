"""Acceptance: every MATH-500, AIME24 and AMC23 reference answer grades correct against itself.

The data directory comes from ``TESTTIME_DATA_DIR`` (default ``<repo>/../shared/datasets``); the
tests skip, saying so, only when that directory does not exist.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from testtime.grading import Grader, GraderConfig, extract_answer
from testtime.grading.extract import answer_key, clean_for_parse
from testtime.grading.verify import GradeResult

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("TESTTIME_DATA_DIR", REPO.parent / "shared" / "datasets"))
DATASETS = {"math500": 500, "aime24": 30, "amc23": 40}

pytestmark = pytest.mark.skipif(
    not DATA_DIR.is_dir(),
    reason=f"benchmark data directory {DATA_DIR} does not exist (set TESTTIME_DATA_DIR)",
)


def _answers() -> list[tuple[str, str]]:
    """(problem id, reference answer) for all three datasets, checking the expected sizes."""
    answers: list[tuple[str, str]] = []
    for name, size in DATASETS.items():
        path = DATA_DIR / f"{name}.jsonl"
        with path.open(encoding="utf-8") as lines:
            rows = [json.loads(line) for line in lines if line.strip()]
        assert len(rows) == size, f"{path}: expected {size} problems, found {len(rows)}"
        answers.extend((str(row["id"]), str(row["answer"])) for row in rows)
    return answers


@pytest.fixture(scope="module")
def answers() -> list[tuple[str, str]]:
    return _answers()


@pytest.fixture(scope="module")
def grader() -> Iterator[Grader]:
    with Grader(GraderConfig(timeout_s=10.0)) as shared:
        yield shared


def _failures(
    ids: list[str], refs: list[str], preds: list[str | None], results: list[GradeResult]
) -> str:
    rows = [
        f"{pid}: pred={pred!r} ref={ref!r} -> {res}"
        for pid, ref, pred, res in zip(ids, refs, preds, results, strict=True)
        if not res.correct
    ]
    return f"{len(rows)} wrong:\n" + "\n".join(rows[:40])


def test_boxed_reference_extracts_and_grades_correct(answers, grader) -> None:
    ids, refs = [pid for pid, _ in answers], [ref for _, ref in answers]
    preds = [extract_answer(f"The final answer is $\\boxed{{{ref}}}$.") for ref in refs]
    assert all(pred is not None for pred in preds)
    results = grader.grade_many(list(zip(preds, refs, strict=True)))
    assert len(results) == 570
    assert sum(r.correct for r in results) == 570, _failures(ids, refs, preds, results)


def test_math_verify_parses_and_accepts_every_reference(answers) -> None:
    """With string matching off, Math-Verify itself must find each reference equal to itself."""
    ids, refs = [pid for pid, _ in answers], [ref for _, ref in answers]
    with Grader(GraderConfig(timeout_s=10.0, string_match=False)) as strict:
        results = strict.grade_many([(ref, ref) for ref in refs])
    assert sum(r.correct for r in results) == 570, _failures(ids, refs, refs, results)
    assert {r.reason for r in results} == {"equivalent"}


def test_wrong_answers_grade_wrong(answers, grader) -> None:
    """Guards against a vacuous grader: off-by-one integers and other problems' answers fail."""
    integers = [ref for _, ref in answers if ref.strip().lstrip("-").isdigit()]
    assert len(integers) > 200
    off_by_one = [(str(int(ref) + 1), ref) for ref in integers]  # settled without Math-Verify
    as_expression = [(f"{ref} + 1", ref) for ref in integers[::5]]  # needs Math-Verify
    others = sorted({ref for _, ref in answers if ref not in integers})
    keys = {ref: answer_key(clean_for_parse(ref)) for ref in others}
    swapped = [
        (others[i], others[(i + 7) % len(others)])
        for i in range(0, len(others), 3)
        if keys[others[i]] != keys[others[(i + 7) % len(others)]]
    ]
    assert len(swapped) > 40
    pairs = off_by_one + as_expression + swapped
    results = grader.grade_many(pairs)
    wrongly_correct = [pair for pair, res in zip(pairs, results, strict=True) if res.correct]
    assert not wrongly_correct, wrongly_correct

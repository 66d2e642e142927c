"""Extract, group and grade the answers of a problem's candidates."""

from __future__ import annotations

from collections.abc import Sequence

from testtime.grading import Grader, clean_answer, extract_answer
from testtime.grading.extract import answer_key

#: Above this many distinct answer strings, groups are formed by string key only (the pairwise
#: equivalence checks grow quadratically).
MAX_PAIRWISE_GROUPS = 32


async def grade_and_group(
    texts: Sequence[str], reference: str, grader: Grader
) -> tuple[list[str | None], list[bool], list[int | None]]:
    """Extracted answers, correctness against ``reference``, and answer-group ids.

    Two answers share a group when their normalised strings are equal or Math-Verify finds
    them equivalent (checked between group representatives, in one batch with the grading).
    """
    answers = [extract_answer(t) for t in texts]
    keys: dict[str, int] = {}
    reps: list[str] = []
    groups: list[int | None] = []
    for a in answers:
        if a is None:
            groups.append(None)
            continue
        k = answer_key(clean_answer(a))
        if k not in keys:
            keys[k] = len(reps)
            reps.append(a)
        groups.append(keys[k])
    pairs: list[tuple[str | None, str]] = [(a, reference) for a in answers]
    merge: list[tuple[int, int]] = []
    if 1 < len(reps) <= MAX_PAIRWISE_GROUPS:
        merge = [(i, j) for i in range(len(reps)) for j in range(i + 1, len(reps))]
        pairs += [(reps[i], reps[j]) for i, j in merge]
    results = await grader.agrade_many(pairs)
    correct = [r.correct for r in results[: len(answers)]]
    parent = list(range(len(reps)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for (i, j), r in zip(merge, results[len(answers) :], strict=True):
        if r.correct:
            parent[find(j)] = find(i)
    return answers, correct, [None if g is None else find(g) for g in groups]

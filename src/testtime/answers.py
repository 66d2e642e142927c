"""Extract, group and grade the answers of a problem's candidates."""

from __future__ import annotations

from collections.abc import Sequence

from testtime.grading import Grader, clean_answer, extract_answer
from testtime.grading.extract import answer_key

#: Above this many distinct answer strings, groups are formed by string key only (the pairwise
#: equivalence checks grow quadratically).
MAX_PAIRWISE_GROUPS = 32


def _string_groups(answers: Sequence[str | None]) -> tuple[list[str], list[int | None]]:
    """Representatives and group ids by normalised answer string (None: no answer)."""
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
    return reps, groups


def _merge_pairs(reps: Sequence[str]) -> list[tuple[int, int]]:
    if not 1 < len(reps) <= MAX_PAIRWISE_GROUPS:
        return []
    return [(i, j) for i in range(len(reps)) for j in range(i + 1, len(reps))]


def _union(n: int, merge: Sequence[tuple[int, int]], equal: Sequence[bool]) -> list[int]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for (i, j), same in zip(merge, equal, strict=True):
        if same:
            parent[find(j)] = find(i)
    return [find(i) for i in range(n)]


async def _grouped(texts: Sequence[str], grader: Grader, reference: str | None
                   ) -> tuple[list[str | None], list[bool], list[int | None]]:
    answers = [extract_answer(t) for t in texts]
    reps, groups = _string_groups(answers)
    merge = _merge_pairs(reps)
    pairs: list[tuple[str | None, str]] = []
    if reference is not None:
        pairs += [(a, reference) for a in answers]
    pairs += [(reps[i], reps[j]) for i, j in merge]
    results = await grader.agrade_many(pairs) if pairs else []
    graded = len(answers) if reference is not None else 0
    correct = [r.correct for r in results[:graded]]
    root = _union(len(reps), merge, [r.correct for r in results[graded:]])
    return answers, correct, [None if g is None else root[g] for g in groups]


async def group_answers(texts: Sequence[str], grader: Grader
                        ) -> tuple[list[str | None], list[int | None]]:
    """Extracted answers and answer-group ids (no reference answer is looked at).

    Two answers share a group when their normalised strings are equal or Math-Verify finds
    them equivalent (checked between group representatives, in one batch).
    """
    answers, _, groups = await _grouped(texts, grader, None)
    return answers, groups


async def grade_and_group(
    texts: Sequence[str], reference: str, grader: Grader, grouping: str = "equivalence"
) -> tuple[list[str | None], list[bool], list[int | None]]:
    """Extracted answers, correctness against ``reference``, and answer-group ids.

    ``grouping="equivalence"``: as :func:`group_answers` (grading and grouping share one
    Math-Verify batch; a text without an answer has group None and abstains). ``"string"``:
    the paper's code's groups, by its normalised answer string
    (:func:`testtime.grading.seed_answer.seed_answer_key`); a text without one gets the group
    of the empty answer, which votes like any other. Answers and correctness are ours either
    way (extraction of ``testtime.grading``, Math-Verify against the reference).
    """
    if grouping == "equivalence":
        return await _grouped(texts, grader, reference)
    if grouping != "string":
        raise ValueError(f"unknown answer grouping {grouping!r}")
    from testtime.grading.seed_answer import seed_answer_key

    answers = [extract_answer(t) for t in texts]
    results = await grader.agrade_many([(a, reference) for a in answers]) if texts else []
    keys: dict[str, int] = {}
    groups: list[int | None] = [keys.setdefault(seed_answer_key(t), len(keys)) for t in texts]
    return answers, [r.correct for r in results], groups

"""Outcome oracle for analysis (``--prm oracle``): scores steps by the final answer's truth.

Every step of a path scores 1.0 when the answer extracted from the whole path (the
concatenated step texts) is graded correct against the question's reference answer, else
0.0, so a path with no final answer yet (a partial beam) scores 0.0. It looks at the
references, so it is an upper bound for analysis ("how good could a verifier be?"), never a
default and never a fair comparison; its name says so.

The references come from the problems being run: the runner passes them to
:func:`~testtime.scoring.registry.build_scorer` (``problems=...``) or calls
:meth:`OracleScorer.add_problems`. A question without a reference is an error, not a guess.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from testtime.grading import Grader, extract_answer
from testtime.scoring.base import ScorerBase, ScoreResult
from testtime.types import Problem, ScoreRequest

ORACLE_NAME = "oracle:outcome"


class OracleScorer(ScorerBase):
    """Step scores 1.0/0.0 from grading each path's final answer against its reference.

    Contract: as ``StepScorer``; ``score`` raises ``KeyError`` for a question it has no
    reference for, and ``ValueError`` when one question was registered with two different
    references. It reads no tokens (no model runs; grading is not counted as compute).
    """

    def __init__(self, references: Mapping[str, str] | None = None,
                 grader: Grader | None = None) -> None:
        self.name = ORACLE_NAME
        self.references: dict[str, str] = {}
        self._grader = grader
        self._own_grader = grader is None
        self.add_references(references or {})

    def add_references(self, references: Mapping[str, str]) -> None:
        """Register ``{question text: reference answer}``."""
        for question, answer in references.items():
            known = self.references.get(question)
            if known is not None and known != answer:
                raise ValueError(f"oracle: question {question[:80]!r} has two references: "
                                 f"{known!r} and {answer!r}")
            self.references[question] = answer

    def add_problems(self, problems: Iterable[Problem]) -> None:
        """Register the reference of every problem (keyed by ``problem.problem``)."""
        self.add_references({p.problem: p.answer for p in problems})

    @property
    def grader(self) -> Grader:
        if self._grader is None:
            self._grader = Grader()
        return self._grader

    def reference(self, question: str) -> str:
        try:
            return self.references[question]
        except KeyError:
            raise KeyError(f"oracle has no reference answer for question {question[:80]!r}; "
                           f"the runner must register the problems (build_scorer(..., "
                           f"problems=...) or OracleScorer.add_problems)") from None

    async def score(self, requests: Sequence[ScoreRequest]) -> ScoreResult:
        """1.0 for every step of a path whose extracted answer is correct, else 0.0."""
        todo = [r for r in requests if r.steps]
        pairs = [(extract_answer("".join(s.text for s in r.steps)), self.reference(r.question))
                 for r in todo]
        verdicts = iter(await self.grader.agrade_many(pairs) if pairs else [])
        out: list[list[float]] = []
        for request in requests:
            if not request.steps:
                out.append([])
                continue
            value = 1.0 if next(verdicts).correct else 0.0
            out.append([value] * len(request.steps))
        return ScoreResult(out)

    async def aclose(self) -> None:
        """Stop the grader's worker if this scorer started it."""
        if self._own_grader and self._grader is not None:
            self._grader.close()
            self._grader = None

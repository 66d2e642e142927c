"""Answer grading: extract a final answer from solution text and decide if it is correct.

>>> from testtime.grading import Grader, extract_answer
>>> answer = extract_answer("... so the answer is \\\\boxed{\\\\dfrac{1}{2}}.")
>>> with Grader() as grader:
...     grader.grade(answer, "0.5").correct
True
"""

from testtime.grading.extract import (
    AnswerSource,
    clean_answer,
    clean_for_parse,
    extract_answer,
    extract_answer_with_source,
)
from testtime.grading.verify import (
    Grader,
    GraderConfig,
    GradeReason,
    GradeResult,
    default_grader,
    grade,
    grade_many,
)

__all__ = [
    "AnswerSource",
    "GradeReason",
    "GradeResult",
    "Grader",
    "GraderConfig",
    "clean_answer",
    "clean_for_parse",
    "default_grader",
    "extract_answer",
    "extract_answer_with_source",
    "grade",
    "grade_many",
]

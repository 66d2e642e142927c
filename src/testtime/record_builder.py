"""Turn a search result into a ``ProblemRecord``: grade, group, select at every budget."""

from __future__ import annotations

import re
from typing import Any

from testtime.answers import grade_and_group
from testtime.confidence import trace_confidence
from testtime.config import RunConfig
from testtime.grading import Grader
from testtime.records import (
    CandidateRecord,
    ComputeRecord,
    NodeRecord,
    PredictionRecord,
    ProblemRecord,
    StepRecord,
)
from testtime.retry import RetryError, describe
from testtime.search.base import SearchResult
from testtime.selection import RULES, Scored, prefix_counts, select_all
from testtime.types import Problem

#: Code points UTF-8 cannot encode: lone surrogates (a server's JSON may hold "\\ud800").
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


async def build_record(
    problem: Problem, result: SearchResult, config: RunConfig, grader: Grader
) -> ProblemRecord:
    """Grade the candidates, group their answers and apply every rule at every budget."""
    texts = [c.text for c in result.candidates]
    answers, correct, groups = await grade_and_group(texts, problem.answer, grader,
                                                     config.search.answer_grouping)
    confidences = [trace_confidence([x for s in c.steps for x in s.token_confidences])
                   for c in result.candidates]
    scored = [Scored(g, tuple(c.scores), ok, conf, c.voted)
              for c, g, ok, conf in zip(result.candidates, groups, correct, confidences,
                                        strict=True)]
    n = result.budget or len(result.candidates)
    choices = select_all(scored, prefix_counts(
        n, [c.origin for c in result.candidates], result.independent_prefixes,
        result.unit_budget), (*RULES, *(r for r in dict.fromkeys(
            result.extra_predictions.values()) if r not in RULES)))
    predictions = {
        str(b): {
            rule: PredictionRecord(
                answer=None if ch.index is None else answers[ch.index],
                correct=ch.correct, index=ch.index,
            )
            for rule, ch in rules.items() if rule in RULES
        }
        for b, rules in choices.items()
    }
    for b, preds in predictions.items():
        for name, rule in result.extra_predictions.items():
            ch = choices[int(b)][rule]
            preds[name] = PredictionRecord(answer=None if ch.index is None else answers[ch.index],
                                           correct=ch.correct, index=ch.index)
    candidates = [
        CandidateRecord(
            index=i, text=c.text, answer=answers[i], correct=correct[i], group=groups[i],
            finish_reason=c.finish_reason, origin=c.origin, confidence=confidences[i],
            voted=c.voted,
            completion_tokens=sum(s.num_tokens for s in c.steps),
            steps=[StepRecord(text=s.text, tokens=s.num_tokens, score=sc,
                              truncated=s.truncated, logprob_sum=s.logprob_sum,
                              certainty_sum=s.certainty_sum)
                   for s, sc in zip(c.steps, c.scores, strict=True)],
        )
        for i, c in enumerate(result.candidates)
    ]
    tree = [NodeRecord(id=t.id, parent=t.parent, depth=t.depth, text=t.step.text,
                       tokens=t.step.num_tokens, score=t.score, status=t.status)
            for t in result.tree]
    return ProblemRecord(
        id=problem.id, problem=problem.problem, reference=problem.answer, level=problem.level,
        metadata=problem.metadata, method=config.search.method, n=n,
        paths=len(result.candidates), semantics=config.search.semantics, scorer=config.prm,
        candidates=candidates, predictions=predictions, info=result.info,
        compute=ComputeRecord(**result.compute.counters()), tree=tree,
    )


def error_record(problem: Problem, config: RunConfig, exc: BaseException) -> ProblemRecord:
    """The record of a failed problem: counts as wrong, retried on ``--resume``."""
    cause = exc.last if isinstance(exc, RetryError) else exc
    error = describe(cause)
    if isinstance(exc, RetryError) and exc.attempts > 1:
        error += f" (after {exc.attempts} attempts)"
    return ProblemRecord(
        id=problem.id, problem=problem.problem, reference=problem.answer,
        level=problem.level, metadata=problem.metadata,
        method=config.search.method, n=config.search.n, scorer=config.prm,
        semantics=config.search.semantics, error=error,
    )


def encodable(record: ProblemRecord) -> ProblemRecord:
    """``record`` with lone surrogates (which UTF-8 cannot encode) replaced by U+FFFD."""

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return _SURROGATE_RE.sub("\ufffd", value)
        if isinstance(value, dict):
            return {clean(k): clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return ProblemRecord.model_validate(clean(record.model_dump()))

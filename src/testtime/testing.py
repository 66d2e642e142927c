"""Scripted fakes for exact tests of search logic: a policy that follows a script and a
rule-based step scorer. Both implement the real protocols, so search methods, the runner and
the records run unchanged on them.

Tokens of the fake policy are words with their trailing whitespace (leading whitespace is a token),
which makes every token count in a test computable by hand.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence

from testtime.policy.batching import RequestBatcher
from testtime.policy.completion import build_completion
from testtime.resources import AsyncResource
from testtime.scoring.base import ScorerBase, ScoreResult
from testtime.types import (
    ChatMessage,
    Completion,
    ConfidenceStop,
    GenerationRequest,
    SamplingParams,
    ScoreRequest,
    Step,
)

_TOKEN_RE = re.compile(r"\n\n|\S+\s*|\s+")

#: script(problem_text, prefix, sample_index, params) -> the rest of the solution from prefix
Script = Callable[[str, str, int, SamplingParams], str]


def fake_tokens(text: str) -> list[str]:
    """Split text into fake tokens; the pieces concatenate back to ``text``."""
    return _TOKEN_RE.findall(text)


def tree_script(tree: Mapping[str, Sequence[str]], default: str = "\\boxed{0}") -> Script:
    """A script from a table ``prefix -> continuations``; sample i takes entry i mod len.

    Greedy requests (temperature 0) always take entry 0. Unknown prefixes give ``default``.
    """

    def script(problem: str, prefix: str, i: int, params: SamplingParams) -> str:
        options = tree.get(prefix)
        if not options:
            return default
        return options[0 if params.temperature == 0 else i % len(options)]

    return script


def problem_text(messages: tuple[ChatMessage, ...]) -> str:
    """The problem statement inside a request's messages: the last user turn with the
    prompt template (any of the shipped ones) taken off, else that turn as it is."""
    from testtime.prompts import all_templates

    for template in all_templates():
        problem = template.problem_of(messages)
        if problem is not None and problem != messages[-1].content:
            return problem
    return messages[-1].content


class ScriptedPolicy(AsyncResource):
    """Deterministic policy: continuation = ``script(problem, prefix, index, params)``.

    The sample index counts the samples already drawn for the same (problem, prefix), so
    asking twice for a prefix walks further down its list of continuations, as a sampler
    would give new samples. Stop strings and max_tokens are applied as a real backend does.
    Requests go through the real ``RequestBatcher``; ``batches`` records each batch's size.
    """

    def __init__(self, script: Script, name: str = "scripted", max_batch_seqs: int = 64,
                 logprob: float = -0.5, certainty: float = 0.5,
                 confidence: Callable[[str], float] | None = None,
                 token_confidences: Callable[[str], Sequence[float]] | None = None) -> None:
        self.script = script
        self.name = name
        self.logprob = logprob
        self.certainty = certainty
        self.confidence = confidence
        """``sample text -> DeepConf token confidence`` of its every token (None: none)."""
        self.token_confidences = token_confidences
        """``sample text -> DeepConf confidence of each of its tokens`` (wins over
        ``confidence``); with it the policy honours ``SamplingParams.confidence_stop``
        exactly as a backend does (:func:`confidence_cut`)."""
        self.calls: list[GenerationRequest] = []
        self.generate_calls: list[list[GenerationRequest]] = []
        """The requests of each ``generate`` call, call by call."""
        self.batches: list[int] = []
        self._drawn: dict[tuple[str, str], int] = {}
        self._batcher = RequestBatcher(self._rows, max_batch_seqs)

    def count_tokens(self, text: str) -> int:
        return len(fake_tokens(text))

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        self.calls.extend(requests)
        self.generate_calls.append(list(requests))
        return await self._batcher.submit(requests)

    async def aclose(self) -> None:
        return None

    def _rows(
        self, rows: list[tuple[GenerationRequest, int | None]], params: SamplingParams
    ) -> list[Completion]:
        self.batches.append(len(rows))
        out = []
        for req, _ in rows:
            problem = problem_text(req.messages)
            key = (problem, req.prefix)
            index = self._drawn.get(key, 0)
            self._drawn[key] = index + 1
            text = self.script(problem, req.prefix, index, req.params)
            pieces = fake_tokens(text)
            prompt = sum(len(fake_tokens(m.content)) for m in req.messages)
            prompt += len(fake_tokens(req.prefix))
            eos = len(pieces) <= req.params.max_tokens
            pieces = pieces[: req.params.max_tokens]
            out.append(
                build_completion(
                    pieces,
                    prompt_tokens=prompt,
                    stop=req.params.stop,
                    ended_with_eos=eos,
                    logprobs=[self.logprob] * len(pieces),
                    certainties=[self.certainty] * len(pieces),
                    confidences=self._confidences(text, len(pieces)),
                )
            )
            out[-1] = confidence_cut(out[-1], req.params.confidence_stop)
        return out

    def _confidences(self, text: str, n: int) -> list[float]:
        if self.token_confidences is not None:
            values = list(self.token_confidences(text))[:n]
            if len(values) < n:
                raise ValueError(f"scripted token confidences: {len(values)} for {n} tokens")
            return values
        return [] if self.confidence is None else [self.confidence(text)] * n


def confidence_cut(c: Completion, stop: ConfidenceStop | None) -> Completion:
    """``c`` as a backend honouring ``stop`` returns it: cut right after the first token
    whose mean confidence over the last ``stop.window`` tokens is below ``stop.threshold``
    (checked once ``window`` tokens exist), ``finish_reason="confidence"``; unchanged when
    no such token comes before the row ended anyway (at its last token the natural reason
    is kept)."""
    if stop is None or not c.token_confidences:
        return c
    confs, w = c.token_confidences, stop.window
    for t in range(w - 1, len(confs)):
        if math.fsum(confs[t + 1 - w:t + 1]) / w < stop.threshold:
            if t + 1 >= len(c.token_texts):
                return c
            k = t + 1
            return Completion(
                text="".join(c.token_texts[:k]), prompt_tokens=c.prompt_tokens,
                completion_tokens=k, finish_reason="confidence",
                token_texts=c.token_texts[:k], token_logprobs=c.token_logprobs[:k],
                token_certainties=c.token_certainties[:k], token_confidences=confs[:k])
    return c


class RuleScorer(ScorerBase):
    """Step scorer from a rule ``(question, steps so far, step) -> score``.

    The tokens of a request are the fake tokens of question plus steps, like a PRM's input.
    """

    def __init__(self, rule: Callable[[str, Sequence[Step], Step], float],
                 name: str = "rule") -> None:
        self.rule = rule
        self.name = name
        self.requests: list[ScoreRequest] = []

    async def score(self, requests: Sequence[ScoreRequest]) -> ScoreResult:
        self.requests.extend(requests)
        return ScoreResult(
            [[self.rule(r.question, r.steps[:i], s) for i, s in enumerate(r.steps)]
             for r in requests],
            [scored_tokens(r) for r in requests],
        )


def scored_tokens(request: ScoreRequest) -> int:
    """The fake tokens of a request's question and steps (what :class:`RuleScorer` reads)."""
    return len(fake_tokens(request.question)) + sum(len(fake_tokens(s.text))
                                                    for s in request.steps)


def tree_policy(tree: Mapping[str, Sequence[str]], default: str = "\\boxed{0}") -> ScriptedPolicy:
    """A :class:`ScriptedPolicy` following :func:`tree_script`."""
    return ScriptedPolicy(tree_script(tree, default))


def text_scorer(table: Mapping[str, float], default: float = 0.5) -> RuleScorer:
    """A :class:`RuleScorer` giving a step the score its stripped text has in ``table``."""

    def rule(question: str, before: Sequence[Step], step: Step) -> float:
        return table.get(step.text.strip(), default)

    return RuleScorer(rule)


def keyword_rule(scores: Mapping[str, float], default: float = 0.5) -> Callable[
    [str, Sequence[Step], Step], float
]:
    """A rule giving a step the score of the first keyword it contains."""

    def rule(question: str, before: Sequence[Step], step: Step) -> float:
        for word, value in scores.items():
            if word in step.text:
                return value
        return default

    return rule

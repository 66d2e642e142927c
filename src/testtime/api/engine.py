"""One engine for every client: the policy and scorer are built once (``compose.build_run``)
and each request is a problem search on them, as a run's problems are.

Concurrent requests are concurrent asyncio tasks awaiting the same policy and scorer, so
their requests meet in the backend's ``RequestBatcher`` and the scorer's coalescer exactly
as a run's problems do. A request's settings (method, N, M, semantics, seed, sampling) give
it its own ``RunConfig`` on the same engines (``BuiltRun.for_config``); its record is built
by ``record_builder.build_record`` and its answer picked by ``selection``, so the extracted
answer, votes and selection rules are those of ``testtime run`` for the same problem and
seed. A request has no reference answer: pairs against it are settled as "not graded"
without Math-Verify (:class:`_NoReferenceGrader`), which changes no answer group (groups are
formed from the candidates' own answers) and no rule but ``oracle`` (refused).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from testtime.api.options import ADAPTIVE_RULE, Resolved, ServiceConfig, problem_id
from testtime.api.progress import Progress, ProgressPolicy
from testtime.compose import BuiltRun, build_run
from testtime.config import RunConfig
from testtime.grading import Grader
from testtime.grading.grade_types import GradeResult
from testtime.policy.base import Policy
from testtime.record_builder import build_record
from testtime.records import CandidateRecord, ComputeRecord, ProblemRecord
from testtime.scoring.base import StepScorer
from testtime.search.compute import ATTEMPTS, Compute
from testtime.selection import Scored, select
from testtime.types import Problem

#: The reference of a request's problem: a string object compared by identity, so no real
#: answer (not even an empty one) is ever mistaken for it.
NO_REFERENCE = "\x00no reference"
#: Per-request configs kept with their bound search function (the adaptive solver reads its
#: table when bound): distinct settings beyond this many are rebound.
CONFIG_CACHE = 128


class _NoReferenceGrader:
    """Forwards to a ``Grader``, settling pairs against :data:`NO_REFERENCE` as not graded."""

    def __init__(self, grader: Grader) -> None:
        self._grader = grader

    async def agrade_many(self, pairs: Iterable[tuple[str | None, str]]) -> list[GradeResult]:
        pairs = list(pairs)
        todo = [i for i, (_, ref) in enumerate(pairs) if ref is not NO_REFERENCE]
        out = [GradeResult(False, "no_answer", "no reference answer")] * len(pairs)
        for i, r in zip(todo, await self._grader.agrade_many([pairs[i] for i in todo])
                        if todo else [], strict=True):
            out[i] = r
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grader, name)


@dataclass
class Outcome:
    """A finished search: its record, the picked candidates and what they cost."""

    record: ProblemRecord
    picks: list[int | None]
    """Candidate indices, best first (distinct answers); ``[None]``: no candidate answered."""
    rule: str
    method: str
    wall_s: float

    @property
    def compute(self) -> ComputeRecord:
        return self.record.compute

    def votes(self) -> list[dict[str, Any]]:
        """Candidates per answer group, most first (first seen first among equals)."""
        counts = Counter(c.group for c in self.record.candidates if c.group is not None)
        first: dict[int, CandidateRecord] = {}
        for c in self.record.candidates:
            if c.group is not None:
                first.setdefault(c.group, c)
        return [{"answer": first[g].answer, "votes": k}
                for g, k in sorted(counts.items(), key=lambda x: (-x[1], first[x[0]].index))]


class TTSEngine:
    """The service's engines and the searches running on them."""

    def __init__(self, built: BuiltRun, grader: Grader, service: ServiceConfig) -> None:
        self.built, self.grader, self.service = built, grader, service
        self._configs: OrderedDict[str, BuiltRun] = OrderedDict()
        self.in_flight = 0
        """Searches running now (the app refuses more than ``service.max_in_flight``)."""
        self.started = self.finished = self.cancelled = self.failed = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    @classmethod
    @asynccontextmanager
    async def open(cls, config: RunConfig, service: ServiceConfig, *,
                   policy: Policy | None = None,
                   scorer: StepScorer | None = None) -> AsyncIterator[TTSEngine]:
        """Build policy, scorer and grader for ``config`` (the service's base run config);
        close what was built on exit (injected engines belong to the caller)."""
        with Grader() as grader:
            async with build_run(config, policy=policy, scorer=scorer, grader=grader) as built:
                engine = cls(built, grader, service)
                try:
                    yield engine
                finally:  # no search outlives the engines it runs on
                    await engine.cancel_all()

    async def cancel_all(self) -> None:
        """Cancel every running search and wait for them to end."""
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def base_config(self) -> RunConfig:
        return self.built.config

    def built_for(self, config: RunConfig) -> BuiltRun:
        """The shared engines bound to a request's config (cached by its settings)."""
        key = config.model_dump_json()
        b = self._configs.get(key)
        if b is None:
            b = self.built if config == self.built.config else self.built.for_config(config)
            self._configs[key] = b
            if len(self._configs) > CONFIG_CACHE:
                self._configs.popitem(last=False)
        else:
            self._configs.move_to_end(key)
        return b

    async def search(self, text: str, resolved: Resolved, choices: int,
                     progress: Progress | None = None) -> Outcome:
        """Search ``text`` as the problem ``problem_id(text)`` of a run with
        ``resolved.config``; pick ``choices`` distinct answers with ``resolved.rule``.
        Run it in its own task: the usage ledger is a context variable of the task."""
        t0 = time.perf_counter()
        config = resolved.config
        b = self.built_for(config)
        problem = Problem(id=problem_id(text), problem=text, answer=NO_REFERENCE)
        ctx = dataclasses.replace(b.ctx, policy=ProgressPolicy(b.policy, progress or Progress()),
                                  grader=self.grader)
        ledger = Compute()  # every policy/scorer call of this search, as the runner bills it
        ATTEMPTS.set(ledger)
        self.in_flight += 1
        self.started += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            result = await b.method(problem, ctx)
            record = await build_record(problem, result, config,
                                        _NoReferenceGrader(self.grader))  # type: ignore[arg-type]
        except BaseException as exc:
            if isinstance(exc, Exception):
                self.failed += 1
            else:  # cancelled: the client went away or the request timed out
                self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1
            self._tasks.discard(task)  # type: ignore[arg-type]
        used = ledger if ledger.generations or ledger.scorer_calls else result.compute
        record.compute = ComputeRecord(**used.counters())
        b.costs.fill(record.compute)
        record.wall_time_s = time.perf_counter() - t0
        self.finished += 1
        rest_rule = result.extra_predictions.get(resolved.rule, resolved.rule)
        picks = ranked_picks(record, resolved.rule, rest_rule, choices)
        return Outcome(record, picks, resolved.rule, resolved.method, record.wall_time_s)


def _scored(record: ProblemRecord) -> list[Scored]:
    return [Scored(c.group, tuple(s.score if s.score is not None else float("nan")
                                  for s in c.steps), False, c.confidence)
            for c in record.candidates]


def ranked_picks(record: ProblemRecord, rule: str, rest_rule: str, k: int) -> list[int | None]:
    """The rule's pick at the record's budget (what ``testtime run`` records), then up to
    ``k - 1`` more with other answers: the rule applied again to the candidates whose answer
    group (None: no answer) was not picked yet."""
    pred = record.predictions.get(str(record.n), {}).get(rule)
    scored = _scored(record)
    first = pred.index if pred is not None else select(rule, scored).index
    picks: list[int | None] = [first]
    if first is None:
        return picks
    used = {record.candidates[first].group}
    while len(picks) < k:
        left = [i for i, c in enumerate(record.candidates) if c.group not in used]
        if not left:
            break
        ch = select(rest_rule if rule == ADAPTIVE_RULE else rule, [scored[i] for i in left])
        if ch.index is None:
            break
        picks.append(left[ch.index])
        used.add(record.candidates[left[ch.index]].group)
    return picks


def candidate_view(record: ProblemRecord, indices: Sequence[int] | None = None
                   ) -> list[dict[str, Any]]:
    """Candidates as the ``tts.candidates`` extension lists them."""
    cands = record.candidates if indices is None else [record.candidates[i] for i in indices]
    return [{"index": c.index, "text": c.text, "answer": c.answer, "group": c.group,
             "finish_reason": c.finish_reason, "completion_tokens": c.completion_tokens,
             "origin": c.origin, "scores": [s.score for s in c.steps],
             "confidence": c.confidence} for c in cands]

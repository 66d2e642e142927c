"""Run a search method over a dataset into a resumable run directory.

Data flow: problems are loaded and validated first (a bad line fails before any model loads);
then every unfinished problem becomes an asyncio task; tasks await the policy and the scorer,
whose backends batch requests across all tasks; each finished problem is graded, its selection
rules applied at every budget, and its record appended atomically to ``results.jsonl``. The
summary is recomputed from all records at the end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testtime.answers import grade_and_group
from testtime.config import RunConfig, config_diff
from testtime.datasets import DatasetSpec, load_problems
from testtime.flops import FlopCosts, costs_for_specs
from testtime.grading import Grader
from testtime.policy.base import Policy
from testtime.prompts import prompt_for_model
from testtime.records import (
    CandidateRecord,
    ComputeRecord,
    NodeRecord,
    PredictionRecord,
    ProblemRecord,
    RecordStore,
    StepRecord,
    dump_json,
)
from testtime.retry import RetryError, RetryPolicy, describe, retry_async
from testtime.scoring.base import StepScorer
from testtime.search import get_method
from testtime.search.base import SearchContext, SearchFn, SearchResult
from testtime.selection import Scored, budgets, select_all
from testtime.summary import summarize
from testtime.types import Problem

if TYPE_CHECKING:
    from testtime.distributed.executor import SearchExecutor

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"
#: Code points UTF-8 cannot encode: lone surrogates (a server's JSON may hold "\\ud800").
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked (exists, or its config differs)."""


@dataclass
class RunOutcome:
    out_dir: Path
    summary: dict[str, Any]
    computed: int
    """Problems computed in this invocation (the rest came from an earlier one)."""


def prepare_run_dir(
    out_dir: Path, config: RunConfig, resume: bool, overwrite: bool, ids: set[str]
) -> None:
    """Create the directory and ``config.json``, or check it matches on resume.

    Without ``--resume`` an existing directory is accepted only when it holds this exact
    config with every problem done (the summary is then recomputed, nothing is rerun).
    """
    cfg_path = out_dir / CONFIG_FILE
    current = json.loads(config.model_dump_json())
    if cfg_path.exists():
        if overwrite:
            for name in (RESULTS_FILE, SUMMARY_FILE):
                (out_dir / name).unlink(missing_ok=True)
        elif not resume:
            saved = json.loads(cfg_path.read_text())
            store = RecordStore(out_dir / RESULTS_FILE)
            if not config_diff(saved, current) and ids <= store.done_ids():
                return
            raise RunDirError(
                f"{out_dir} already holds a run; add --resume to finish it or --overwrite "
                f"to start again"
            )
        else:
            saved = json.loads(cfg_path.read_text())
            diff = config_diff(saved, current)
            if diff:
                raise RunDirError(
                    f"{cfg_path}: cannot resume, the config differs in: " + "; ".join(diff)
                )
            return
    out_dir.mkdir(parents=True, exist_ok=True)
    dump_json(cfg_path, current)


def problems_of(config: RunConfig) -> list[Problem]:
    d = config.dataset
    return load_problems(
        DatasetSpec(d.name, data_dir=d.data_dir, problem_field=d.problem_field,
                    answer_field=d.answer_field, limit=d.limit, ids=d.ids)
    )


async def run(
    config: RunConfig,
    out_dir: Path,
    *,
    policy: Policy | None = None,
    scorer: StepScorer | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    retry: RetryPolicy | None = None,
    executor: SearchExecutor | None = None,
) -> RunOutcome:
    """Run (or finish) the configured search; injected ``policy``/``scorer`` skip loading.

    ``retry`` bounds the attempts per problem (default :class:`RetryPolicy`). An ``executor``
    (e.g. :class:`testtime.distributed.RayExecutor`) runs each problem's search elsewhere;
    grading, selection and every write stay here.
    """
    problems = problems_of(config)  # validate the data before loading any model
    prepare_run_dir(out_dir, config, resume, overwrite, {p.id for p in problems})
    store = RecordStore(out_dir / RESULTS_FILE)
    done = store.done_ids()
    todo = [p for p in problems if p.id not in done]
    start = time.perf_counter()
    method: SearchFn | None = None
    ctx: SearchContext | None = None
    if todo and executor is not None:
        await executor.start()  # fails fast (no cluster, no actor could load its models)
        method = executor.search
    elif todo:
        if policy is None:
            from testtime.policy.registry import build_policy

            policy = build_policy(config.policy, config.policy_options)
        if scorer is None:
            from testtime.scoring.registry import build_scorer

            # The judge runs on the policy; the outcome oracle needs the references.
            scorer = build_scorer(config.prm, config.prm_options, policy=policy,
                                  problems=problems)
        ctx = SearchContext(
            policy=policy,
            scorer=scorer,
            prompt=prompt_for_model(policy.name, config.prompt),
            search=config.search,
            sampling=config.sampling,
        )
    if todo:
        with Grader() as grader:
            await _run_problems(todo, ctx, config, store, grader, progress, len(problems),
                                method=method, retry=retry or RetryPolicy(),
                                costs=flop_costs(config, policy, scorer))
    wall = time.perf_counter() - start
    records = [store.records[p.id] for p in problems if p.id in store.records]
    summary = summarize(config, records, total=len(problems), wall_time_s=wall,
                        computed=len(todo), policy=policy)
    dump_json(out_dir / SUMMARY_FILE, summary)
    return RunOutcome(out_dir, summary, len(todo))


async def _run_problems(
    todo: list[Problem],
    ctx: SearchContext | None,
    config: RunConfig,
    store: RecordStore,
    grader: Grader,
    show: bool,
    total: int,
    *,
    method: SearchFn | None,
    retry: RetryPolicy,
    costs: FlopCosts,
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    search = method or get_method(config.search.method)
    sem = asyncio.Semaphore(config.max_concurrent_problems)
    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("{task.fields[info]}"), disable=not show,
    )
    tokens = 0

    async def one(problem: Problem) -> None:
        nonlocal tokens
        async with sem:
            t0 = time.perf_counter()
            attempts = 1
            try:
                result, attempts = await retry_async(
                    lambda: search(problem, ctx), retry,  # type: ignore[arg-type]
                    what=f"problem {problem.id}")
                record = await build_record(problem, result, config, grader)
            except Exception as exc:  # noqa: BLE001  (recorded; the run goes on, --resume retries)
                log.error("problem %s failed: %s", problem.id, exc)
                record = error_record(problem, config, exc)
                attempts = exc.attempts if isinstance(exc, RetryError) else attempts
            record.attempts = attempts
            record.wall_time_s = time.perf_counter() - t0
            costs.fill(record.compute)
            try:
                store.append(record)
            except ValueError as exc:  # text UTF-8 cannot encode (lone surrogates from a backend)
                log.warning("problem %s: record not encodable (%s); replacing bad characters",
                            problem.id, exc)
                store.append(encodable(record))
            tokens += record.compute.completion_tokens
            bar.update(task, advance=1, info=f"{tokens} tokens")

    with bar:
        task = bar.add_task(config.search.method, total=total, completed=total - len(todo),
                            info="")
        await asyncio.gather(*(one(p) for p in todo))


def flop_costs(config: RunConfig, policy: Policy | None, scorer: StepScorer | None) -> FlopCosts:
    """FLOPs per token of policy and PRM: from the loaded models, else from the specs."""
    if policy is not None:
        return FlopCosts.of(policy, scorer)
    return costs_for_specs(config.policy, config.prm)


def error_record(problem: Problem, config: RunConfig, exc: BaseException) -> ProblemRecord:
    """The record of a failed problem: counts as wrong, retried on ``--resume``."""
    cause = exc.last if isinstance(exc, RetryError) else exc
    error = describe(cause)
    if isinstance(exc, RetryError) and exc.attempts > 1:
        error += f" (after {exc.attempts} attempts)"
    return ProblemRecord(
        id=problem.id, problem=problem.problem, reference=problem.answer,
        level=problem.level, metadata=problem.metadata,
        method=config.search.method, n=config.search.n, error=error,
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


async def build_record(
    problem: Problem, result: SearchResult, config: RunConfig, grader: Grader
) -> ProblemRecord:
    """Grade the candidates, group their answers and apply every rule at every budget."""
    texts = [c.text for c in result.candidates]
    answers, correct, groups = await grade_and_group(texts, problem.answer, grader)
    scored = [Scored(g, tuple(c.scores), ok)
              for c, g, ok in zip(result.candidates, groups, correct, strict=True)]
    n = len(result.candidates)
    choices = select_all(scored, budgets(n, result.independent_prefixes, result.prefix_unit))
    predictions = {
        str(b): {
            rule: PredictionRecord(
                answer=None if ch.index is None else answers[ch.index],
                correct=ch.correct, index=ch.index,
            )
            for rule, ch in rules.items()
        }
        for b, rules in choices.items()
    }
    candidates = [
        CandidateRecord(
            index=i, text=c.text, answer=answers[i], correct=correct[i], group=groups[i],
            finish_reason=c.finish_reason, origin=c.group,
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
        candidates=candidates, predictions=predictions,
        compute=ComputeRecord(**vars(result.compute)), tree=tree,
    )

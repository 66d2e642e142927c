"""Run a search method over a dataset into a resumable run directory.

Data flow: problems are loaded and validated first (a bad line fails before any model loads),
then the config's names are checked (``compose.check_config``: before any model loads too);
``compose.build_run`` builds policy, scorer and search context; every unfinished problem
becomes an asyncio task; tasks await the policy and the scorer, whose backends batch requests
across all tasks; each finished problem is graded, its selection rules applied at every
budget, and its record appended atomically to ``results.jsonl``. The summary is recomputed
from all records at the end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testtime.compose import BuiltRun, build_run, check_config
from testtime.config import RunConfig
from testtime.datasets import DatasetSpec, load_problems
from testtime.flops import FlopCosts, costs_for_specs
from testtime.grading import Grader
from testtime.policy.base import Policy
from testtime.record_builder import build_record, encodable, error_record
from testtime.records import ComputeRecord, ProblemRecord
from testtime.retry import RetryError, RetryPolicy, retry_async
from testtime.rundir import (  # noqa: F401  (re-exported: the run directory's names)
    CONFIG_FILE,
    RESULTS_FILE,
    SUMMARY_FILE,
    RunDirError,
    prepare_run_dir,
)
from testtime.scoring.base import StepScorer
from testtime.search import method_summary
from testtime.search.base import SearchResult
from testtime.search.compute import ATTEMPTS, Compute, difference
from testtime.store import RecordStore, RunLock, dump_json
from testtime.summary import summarize
from testtime.timeline import TIMELINE
from testtime.types import Problem

if TYPE_CHECKING:
    from testtime.distributed.executor import SearchExecutor

log = logging.getLogger(__name__)

#: One problem's search: ``(problem) -> result``.
Searcher = Callable[[Problem], Awaitable[SearchResult]]


@dataclass
class RunOutcome:
    out_dir: Path
    summary: dict[str, Any]
    computed: int
    """Problems computed in this invocation (the rest came from an earlier one)."""


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
    built: BuiltRun | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    retry: RetryPolicy | None = None,
    executor: SearchExecutor | None = None,
) -> RunOutcome:
    """Run (or finish) the configured search.

    Engines: ``built`` (a sweep's shared engines, for this config), else an injected
    ``policy``/``scorer`` (not closed here), else built from the config and closed at the end.
    ``retry`` bounds the attempts per problem (default :class:`RetryPolicy`). An ``executor``
    (e.g. :class:`testtime.distributed.RayExecutor`) runs each problem's search elsewhere;
    grading, selection and every write stay here.
    """
    problems = problems_of(config)  # validate the data before loading any model
    # and the names (specs of engines built here are checked by build_run, before loading)
    check_config(config, policy=False, scorer=False)
    with RunLock(out_dir):  # one writer per run directory
        return await _run_locked(config, out_dir, problems, policy=policy, scorer=scorer,
                                 built=built, resume=resume, overwrite=overwrite,
                                 progress=progress, retry=retry, executor=executor)


async def _run_locked(config: RunConfig, out_dir: Path, problems: list[Problem], *,
                      policy: Policy | None, scorer: StepScorer | None,
                      built: BuiltRun | None, resume: bool, overwrite: bool, progress: bool,
                      retry: RetryPolicy | None, executor: SearchExecutor | None) -> RunOutcome:
    prepare_run_dir(out_dir, config, resume, overwrite, {p.id for p in problems})
    store = RecordStore(out_dir / RESULTS_FILE, writer=True)
    todo = [p for p in problems if p.id not in store.done_ids()]
    start, mark = time.perf_counter(), TIMELINE.mark()
    batch_stats = engine_stats = None
    work_end: float | None = None
    with Grader() as grader:
        if todo and executor is not None:
            await executor.start()  # fails fast (no cluster, no actor could load its models)
            search: Searcher = lambda p: executor.search(p, None)
            await _run_problems(todo, search, config, store, grader, progress, len(problems),
                                retry=retry or RetryPolicy(),
                                costs=costs_for_specs(config.policy, config.prm))
        elif todo and built is not None:
            batch_stats, engine_stats = await _run_built(
                built.for_config(config) if built.config != config else built, todo, config,
                store, grader, progress, len(problems), retry)
        elif todo:
            async with build_run(config, problems, policy=policy, scorer=scorer,
                                 grader=grader) as b:
                TIMELINE.add("load", start, time.perf_counter())  # building policy and scorer
                batch_stats, engine_stats = await _run_built(b, todo, config, store, grader,
                                                             progress, len(problems), retry)
                # before the engines close: vLLM's engine process takes ~5 s to stop
                work_end = time.perf_counter()
    end = time.perf_counter()
    work_end = end if work_end is None else work_end
    wall = work_end - start
    records = [store.records[p.id] for p in problems if p.id in store.records]
    summary = summarize(config, records, total=len(problems), wall_time_s=wall,
                        computed=len(todo), batch_stats=batch_stats,
                        engine_stats=engine_stats)
    if todo:  # where this invocation's wall went (engines of other processes not seen)
        summary["timeline"] = TIMELINE.split(start, work_end, mark)
        summary["close_s"] = round(end - work_end, 3)  # closing the engines, outside the wall
    own = method_summary(config, records) if records else None
    if own is not None:
        summary[config.search.method] = own
    dump_json(out_dir / SUMMARY_FILE, summary)
    return RunOutcome(out_dir, summary, len(todo))


async def _run_built(b: BuiltRun, todo: list[Problem], config: RunConfig, store: RecordStore,
                     grader: Grader, progress: bool, total: int,
                     retry: RetryPolicy | None) -> Any:
    ctx = b.ctx if b.ctx.grader is grader else _with_grader(b, grader)
    await _run_problems(todo, lambda p: b.method(p, ctx), config, store, grader, progress,
                        total, retry=retry or RetryPolicy(), costs=b.costs)
    return getattr(b.policy, "batch_stats", None), _engine_stats(b.policy)


def _engine_stats(policy: Any) -> dict[str, float] | None:
    """The policy engine's own counters (vLLM: prefix-cache hits), where it keeps any."""
    stats = getattr(policy, "engine_stats", None)
    return stats() if callable(stats) else None


def _with_grader(b: BuiltRun, grader: Grader) -> Any:
    import dataclasses

    return dataclasses.replace(b.ctx, grader=grader)


async def _run_problems(
    todo: list[Problem],
    search: Searcher,
    config: RunConfig,
    store: RecordStore,
    grader: Grader,
    show: bool,
    total: int,
    *,
    retry: RetryPolicy,
    costs: FlopCosts,
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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
            ledger = Compute()  # every attempt's usage (this task's context only)
            ATTEMPTS.set(ledger)
            succeeded: Compute | None = None
            try:
                result, attempts = await retry_async(
                    lambda: search(problem), retry, what=f"problem {problem.id}")
                succeeded = result.compute
                with TIMELINE.span("grading"):
                    record = await build_record(problem, result, config, grader)
            except Exception as exc:  # noqa: BLE001  (recorded; the run goes on, --resume retries)
                log.error("problem %s failed: %s", problem.id, exc)
                record = error_record(problem, config, exc)
                attempts = exc.attempts if isinstance(exc, RetryError) else attempts
            _account(record, ledger, succeeded, costs)
            record.attempts = attempts
            record.wall_time_s = time.perf_counter() - t0
            _append(store, record)
            tokens += record.compute.completion_tokens
            bar.update(task, advance=1, info=f"{tokens} tokens")

    with bar:
        task = bar.add_task(config.search.method, total=total, completed=total - len(todo),
                            info="")
        await asyncio.gather(*(one(p) for p in todo))


def _account(record: ProblemRecord, ledger: Compute, succeeded: Compute | None,
             costs: FlopCosts) -> None:
    """``record.compute``: every attempt (the ledger; a remote search that reports only its
    successful attempt counts that); ``failed_compute``: what failed attempts spent."""
    total = ledger if ledger.generations or ledger.scorer_calls or succeeded is None \
        else succeeded
    failed = difference(total, succeeded) if succeeded is not None else total
    record.compute = ComputeRecord(**total.counters())
    costs.fill(record.compute)
    if any(failed.counters().values()):
        record.failed_compute = ComputeRecord(**failed.counters())
        costs.fill(record.failed_compute)


def _append(store: RecordStore, record: ProblemRecord) -> None:
    try:
        store.append(record)
    except ValueError as exc:  # text UTF-8 cannot encode (lone surrogates from a backend)
        log.warning("problem %s: record not encodable (%s); replacing bad characters",
                    record.id, exc)
        store.append(encodable(record))

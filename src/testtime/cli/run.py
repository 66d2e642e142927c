"""``testtime run`` (and its alias ``testtime adaptive``) and ``testtime summary``.

``adaptive`` is ``run --strategy optimal``: the same function with the same options, so no
option can be dropped between them.
"""

from __future__ import annotations

import asyncio
import functools
import re
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from testtime.cli import engine_cli as eo
from testtime.cli import search_options as so
from testtime.cli.common import (
    DEFAULT_PATH_TOKENS,
    EMBEDDED_PATH_TOKENS,
    console,
    fail,
    print_json,
    sampling_and_path,
    user_errors,
)
from testtime.cli.execution import planned_options, print_summary, retry_and_executor, run_with
from testtime.config import AdaptiveSettings, DatasetConfig, RunConfig
from testtime.search.base import SearchConfig

T = TypeVar("T")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.split("/")[-1]).strip("_")[:40] or "x"


def default_out_dir(cfg: RunConfig) -> Path:
    s = cfg.search
    name = f"{_slug(cfg.dataset.name)}-{s.method}-n{s.n}"
    if s.method in ("beam_search", "dvts"):
        name += f"-m{s.beam_width}"
    name += f"-{_slug(cfg.policy)}-{_slug(cfg.prm)}-seed{cfg.sampling.seed}"
    if s.semantics != "paper":
        name += f"-{s.semantics}"
    return Path("runs") / name


def run(
    dataset: Annotated[str, typer.Option(help="demo, demo-N, math500, aime24, amc23 or a "
                                              "JSONL path")] = "demo",
    data_dir: Annotated[str | None, typer.Option(
        envvar="TESTTIME_DATA_DIR", help="Directory of the benchmark JSONL files "
                                         "(else the Hugging Face Hub)")] = None,
    problem_field: Annotated[str, typer.Option(help="JSONL field of the problem")] = "problem",
    answer_field: Annotated[str, typer.Option(help="JSONL field of the answer")] = "answer",
    limit: Annotated[int | None, typer.Option(help="Only the first K problems")] = None,
    ids: Annotated[str | None, typer.Option(help="Comma-separated problem ids")] = None,
    method: Annotated[str, typer.Option(
        help="cot, best_of_n, beam_search, dvts, particle_filtering, adaptive_sc, deepconf, "
             "rebase")]
    = "best_of_n",
    n: Annotated[int, typer.Option(help="Budget N: final paths per problem")] = 4,
    beam_width: Annotated[int, typer.Option(help="M for beam search / DVTS")] = 4,
    max_depth: Annotated[int, typer.Option(help="Most steps per path")] = 40,
    max_step_tokens: Annotated[int, typer.Option(help="Token limit per step")] = 2048,
    max_path_tokens: Annotated[int | None, typer.Option(
        help=f"Token limit per path [default: {DEFAULT_PATH_TOKENS}; 32768 for "
             f"DeepSeek-R1-Distill; {EMBEDDED_PATH_TOKENS} for the embedded model]")] = None,
    lookahead: Annotated[int, typer.Option(
        help="Greedy roll-out steps scored with each candidate (--semantics sal, DVTS)")] = 0,
    semantics: Annotated[str, typer.Option(
        help="Whose search decisions to reproduce: paper (Liu et al.'s code) or sal "
             "(search-and-learn); see the README's fidelity table")] = "paper",
    answer_grouping: Annotated[str, typer.Option(
        help="How votes group answers: string (the paper's normalised answer strings) or "
             "equivalence (Math-Verify classes)")] = "string",
    filter_duplicates: Annotated[bool, typer.Option(
        help="search-and-learn beam search: drop beams whose text repeats another's")]
    = False,
    pf_temperature: Annotated[float, typer.Option(
        help="particle_filtering: softmax temperature of logit(PRM score)")] = 1.0,
    pf_resample_finished: Annotated[bool, typer.Option(
        help="particle_filtering: finished particles take part in resampling")] = False,
    sc_threshold: Annotated[float, typer.Option(
        help="adaptive_sc: stop once P(leading answer is the majority) reaches it")] = 0.95,
    sc_criterion: Annotated[str, typer.Option(help="adaptive_sc: beta or dirichlet")] = "beta",
    sc_round: Annotated[int, typer.Option(help="adaptive_sc: samples between checks")] = 1,
    step_splitter: so.StepSplitter = "blank_lines",
    step_min_chars: so.StepMinChars = 400,
    think_budget: so.ThinkBudget = None,
    dc_warmup: so.DcWarmup = 16,
    dc_eta: so.DcEta = 10.0,
    dc_window: so.DcWindow = 2048,
    dc_consensus: so.DcConsensus = 0.95,
    dc_round: so.DcRound = 1,
    rebase_temperature: so.RebaseTemperature = 0.2,
    temperature: Annotated[float | None, typer.Option(
        help="Sampling temperature [default: the paper's 0.7; 0.6 for DeepSeek-R1-Distill]")]
    = None,
    top_p: Annotated[float | None, typer.Option(
        help="Nucleus sampling mass [default: 1.0; 0.95 for DeepSeek-R1-Distill]")] = None,
    seed: Annotated[int, typer.Option(help="Base random seed")] = 0,
    policy: Annotated[str, typer.Option(help="BACKEND:MODEL, e.g. hf:Qwen/Qwen2.5-1.5B-Instruct"
                                             " (default: embedded SmolLM2 on CPU)")] = "default",
    prm: Annotated[str | None, typer.Option(
        help="self-certainty, confidence, or FAMILY:PATH (math_shepherd, rlhflow, skywork, "
             "qwen_prm), http://HOST:PORT, vllm-pooling:... [default: self-certainty; "
             "confidence for vllm and openai policies, which report top-20 log-probs only]")]
    = None,
    prompt: Annotated[str | None, typer.Option(help="Prompt template name "
                                                       "(default: from the model name)")] = None,
    device: eo.Device = None,
    dtype: eo.Dtype = None,
    max_batch_seqs: eo.MaxBatchSeqs = None,
    tensor_parallel_size: eo.TensorParallel = None,
    gpu_memory_utilization: eo.GpuMemoryUtilization = None,
    max_model_len: eo.MaxModelLen = None,
    gpus: eo.Gpus = None,
    device_map: eo.DeviceMap = None,
    max_memory: eo.MaxMemory = None,
    engine_arg: eo.EngineArg = None,
    prm_device: eo.PrmDevice = None,
    prm_dtype: eo.PrmDtype = None,
    prm_gpus: eo.PrmGpus = None,
    prm_device_map: eo.PrmDeviceMap = None,
    prm_max_memory: eo.PrmMaxMemory = None,
    prm_kv_cache_gb: eo.PrmKvCacheGb = None,
    prm_max_batch_tokens: eo.PrmMaxBatchTokens = None,
    prm_arg: eo.PrmArg = None,
    concurrency: Annotated[int, typer.Option(help="Problems in flight at once")] = 64,
    out: Annotated[Path | None, typer.Option(help="Run directory [default: runs/<name>]")]
    = None,
    resume: Annotated[bool, typer.Option(help="Finish an interrupted run in --out")] = False,
    overwrite: Annotated[bool, typer.Option(help="Discard results already in --out")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
    trust_remote_code: eo.TrustRemoteCode = False,
    ray: Annotated[str | None, typer.Option(
        "--ray", metavar="[ADDRESS]",
        help="Spread problems over Ray actors. Alone: a local Ray (or $RAY_ADDRESS); 'auto': "
             "the cluster this machine is in; or HOST:PORT, ray://HOST:10001")] = None,
    ray_actors: Annotated[int | None, typer.Option(
        help="Ray actors, each with its own policy and PRM [default: one per GPU group of "
             "the cluster, else 1]")] = None,
    gpus_per_actor: Annotated[float | None, typer.Option(
        help="GPUs per Ray actor (0.5: two actors share a GPU) [default: 1 when the cluster "
             "has GPUs, else 0]")] = None,
    max_retries: Annotated[int, typer.Option(
        help="Retries of a failing problem (backend error, lost actor) before it is recorded "
             "with its error")] = 2,
    strategy: Annotated[str, typer.Option(
        help="fixed: --method at --n; optimal: per problem, what --table says for its "
             "difficulty at --budget (the adaptive solver; `testtime adaptive` is this)")]
    = "fixed",
    table: Annotated[Path | None, typer.Option(
        help="optimal_table.json from `testtime analyze` (--strategy optimal)")] = None,
    budget: Annotated[int | None, typer.Option(
        help="Mean generations per problem (--strategy optimal)")] = None,
    pilot: Annotated[int, typer.Option(help="Pilot samples per problem (--strategy optimal)")]
    = 4,
    scheme: Annotated[str, typer.Option(
        help="Binning of the table: absolute, quantile or all (--strategy optimal)")]
    = "absolute",
    escalation: Annotated[int, typer.Option(
        help="Budget multiplier when a pilot is uncertain (--strategy optimal)")] = 2,
    cap: Annotated[bool, typer.Option(
        help="Keep the mean spend within --budget: escalations are paid for by early stops "
             "(--strategy optimal)")] = True,
    compare: Annotated[list[Path] | None, typer.Option(
        help="Fixed-method runs on the same problems to compare with (--strategy optimal)")]
    = None,
) -> None:
    """Search every problem of a dataset, grade the answers and summarise accuracy."""
    from testtime.runner import run as run_async
    from testtime.summary import summary_tables

    with user_errors():
        if strategy not in ("fixed", "optimal"):
            fail(f"--strategy {strategy}: expected fixed or optimal")
        adaptive = None
        if strategy == "optimal":
            if table is None or budget is None:
                fail("--strategy optimal needs --table and --budget")
            method, n = "adaptive", budget
            adaptive = AdaptiveSettings(table=str(table), budget=budget, pilot=pilot,
                                        scheme=scheme,  # type: ignore[arg-type]
                                        escalation=escalation, cap=cap,
                                        compare=tuple(str(p) for p in compare or ()))
        elif table is not None or budget is not None or compare:
            fail("--table, --budget and --compare apply with --strategy optimal")
        engine = eo.EngineArgs.of(locals())  # the engine options above
        from testtime.policy.registry import recorded_spec

        policy = recorded_spec(policy)
        if prm is None:
            from testtime.scoring.registry import default_scorer

            prm = default_scorer(policy)
        policy_options, prm_options = planned_options(policy, prm, engine, plan=ray is None)
        sampling, path = sampling_and_path(policy, prompt, temperature, top_p, seed,
                                           max_path_tokens)
        cfg = RunConfig(
            dataset=DatasetConfig(name=dataset, data_dir=data_dir, problem_field=problem_field,
                                  answer_field=answer_field, limit=limit,
                                  ids=tuple(i.strip() for i in ids.split(",")) if ids else None),
            policy=policy, policy_options=policy_options, prm=prm, prm_options=prm_options,
            prompt=prompt,
            search=SearchConfig(method=method, n=n, beam_width=beam_width, max_depth=max_depth,
                                max_step_tokens=max_step_tokens, max_path_tokens=path,
                                lookahead=lookahead, semantics=semantics,  # type: ignore[arg-type]
                                answer_grouping=answer_grouping,  # type: ignore[arg-type]
                                filter_duplicates=filter_duplicates,
                                pf_temperature=pf_temperature,
                                pf_resample_finished=pf_resample_finished,
                                sc_threshold=sc_threshold,
                                sc_criterion=sc_criterion,  # type: ignore[arg-type]
                                sc_round=sc_round, **so.search_fields(
                                    step_splitter=step_splitter, step_min_chars=step_min_chars,
                                    think_budget=think_budget, dc_warmup=dc_warmup,
                                    dc_eta=dc_eta, dc_window=dc_window,
                                    dc_consensus=dc_consensus, dc_round=dc_round,
                                    rebase_temperature=rebase_temperature)),
            sampling=sampling,
            max_concurrent_problems=concurrency, adaptive=adaptive,
        )
        from testtime.compose import check_config

        check_config(cfg)  # every name and model path, before anything loads
        out_dir = out or (Path("runs/adaptive") if adaptive else default_out_dir(cfg))
        retry, executor = retry_and_executor(cfg, ray, ray_actors, gpus_per_actor, max_retries)
        try:
            with user_errors(strict=True):  # a bug inside a backend keeps its traceback
                outcome = asyncio.run(run_with(executor, run_async(
                    cfg, out_dir, resume=resume, overwrite=overwrite, progress=progress,
                    retry=retry, executor=executor)))
        except KeyboardInterrupt:
            console.print(f"\n[yellow]interrupted[/yellow]: finished problems are saved in "
                          f"{out_dir}; run the same command with --resume to complete it")
            raise typer.Exit(130) from None
    failed = _all_failed(outcome.summary)
    if as_json:
        print_json(outcome.summary)
        if failed:
            raise typer.Exit(1)
        return
    print_summary(outcome.summary, summary_tables)
    if executor is not None:
        st = executor.stats
        console.print(f"ray: {st.actors_ready} actors ran {st.units_sent} units; "
                      f"{st.actors_lost} lost ({st.units_lost} units retried), "
                      f"{st.replacements} replaced")
    console.print(f"results: {out_dir}/results.jsonl, summary: {out_dir}/summary.json")
    if failed:
        fail(f"every problem failed ({outcome.summary['errors']} error records in "
             f"{out_dir}/results.jsonl); the first error: {failed}", code=1)


def _all_failed(summary: dict[str, Any]) -> str | None:
    """The first error of a run whose every problem failed (then the command exits 1: a
    script must not read 0 % accuracy from a run that never ran), else None."""
    problems, errors = summary.get("problems", 0), summary.get("errors", 0)
    if not problems or errors < problems:
        return None
    return str(summary.get("first_error") or "see the records' error field")


@functools.wraps(run)
def adaptive(**kwargs: Any) -> None:
    """Solve problems adaptively with a compute-optimal table: `run --strategy optimal`."""
    kwargs["strategy"] = "optimal"
    run(**kwargs)


adaptive.__doc__ = ("Solve problems adaptively with a compute-optimal table (pilot, bin, "
                    "escalate): the same as `testtime run --strategy optimal`.")

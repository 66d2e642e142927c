"""CLI commands of the compute analysis: ``flops``, ``sweep``, ``analyze``, ``report``
(registered by ``testtime.cli``; heavy imports are lazy). The adaptive solver is
``testtime run --strategy optimal`` (``cli/run.py``)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from testtime.cli import engine_cli as eo
from testtime.cli import search_options as so
from testtime.cli.common import (
    DEFAULT_PATH_TOKENS,
    RAY_LOCAL,
    console,
    fail,
    print_json,
    sampling_and_path,
    show,
    user_errors,
)


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _ints(text: str, name: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in _csv(text))
    except ValueError:
        fail(f"--{name} {text}: takes comma-separated integers")


def flops(
    small: Annotated[str, typer.Option(help="Small policy: known name or config.json path")],
    large: Annotated[str, typer.Option(help="Large model (CoT): known name or config.json")],
    n: Annotated[int, typer.Option(help="Generations of the small model per problem")] = 256,
    method: Annotated[str, typer.Option(help="Test-time method (label; tokens from --run-dir)")]
    = "best_of_n",
    prm: Annotated[str | None, typer.Option(help="PRM: known name or config.json")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Take token counts from this run")]
    = None,
    prompt_tokens: Annotated[float, typer.Option(help="Prompt tokens per generation")] = 150.0,
    completion_tokens: Annotated[float | None, typer.Option(
        help="Completion tokens per generation [default: 500, or the run's mean]")] = None,
    scored_tokens: Annotated[float | None, typer.Option(
        help="PRM tokens per problem [default: every generation read once]")] = None,
    large_completion_tokens: Annotated[float | None, typer.Option(
        help="CoT length of the large model [default: the small model's]")] = None,
    params: Annotated[str, typer.Option(
        help="nominal (the size in the name, as the paper), non_embedding (Kaplan), total or "
             "active (mixture of experts)")] = "nominal",
    prm_flops: Annotated[bool, typer.Option(
        help="Count the PRM's FLOPs on the small side")] = True,
    problems: Annotated[float, typer.Option(
        help="Problems the totals cover (Table 4 counts MATH-500: 500)")] = 1.0,
    pretrain: Annotated[bool, typer.Option(help="Add 6ND pre-training FLOPs")] = False,
    small_pretrain_tokens: Annotated[float | None, typer.Option(help="D of the small model")]
    = None,
    large_pretrain_tokens: Annotated[float | None, typer.Option(help="D of the large model")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Compare a small model with test-time scaling and a large model with CoT in FLOPs."""
    from testtime.analysis.flops_compare import compare, tokens_from_averages, tokens_from_run
    from testtime.flops import CONVENTIONS
    from testtime.tables import column, table

    if params not in CONVENTIONS:
        fail(f"--params {params}: must be one of {', '.join(CONVENTIONS)}")
    if not problems > 0:
        fail(f"--problems {problems}: must be > 0")
    with user_errors():
        if run_dir is not None:
            use, per_gen = tokens_from_run(run_dir, n)
            prompt_per_gen = use.prompt / n
            if completion_tokens is not None:
                per_gen = completion_tokens
        else:
            per_gen = 500.0 if completion_tokens is None else completion_tokens
            use = tokens_from_averages(n, prompt_tokens, per_gen, scored_tokens)
            prompt_per_gen = prompt_tokens
        sides = compare(small, n, method, large, use, prm=prm, large_prompt=prompt_per_gen,
                        large_completion=large_completion_tokens or per_gen,
                        convention=params, pretrain=pretrain,  # type: ignore[arg-type]
                        small_pretrain_tokens=small_pretrain_tokens,
                        large_pretrain_tokens=large_pretrain_tokens, include_prm=prm_flops,
                        problems=problems)
    if as_json:
        print_json([{**vars(s), "tokens": vars(s.tokens), "total_flops": s.total_flops}
                    for s in sides])
        return
    per = "per problem" if problems == 1 else f"over {problems:g} problems"
    prm_note = "" if prm_flops else ", PRM not counted"
    t = table(f"inference FLOPs {per} ({params.replace('_', '-')} parameters, 2N per "
              f"token{prm_note})")
    for col in ("setting", "params", "policy tokens", "PRM tokens", "inference FLOPs",
                "pre-training FLOPs", "total"):
        column(t, col, numeric=col != "setting")
    for s in sides:
        t.add_row(s.label, f"{s.params / 1e9:.2f}B", f"{s.tokens.prompt + s.tokens.completion:,.0f}",
                  f"{s.tokens.scored:,.0f}", f"{s.inference_flops:.3e}",
                  "-" if s.pretrain_flops is None else f"{s.pretrain_flops:.3e}",
                  "-" if s.total_flops is None else f"{s.total_flops:.3e}")
    show(t)
    ratio = sides[1].inference_flops / sides[0].inference_flops if sides[0].inference_flops \
        else float("inf")
    console.print(f"large / small inference FLOPs: {ratio:.3g}x")


def sweep(
    methods: Annotated[str, typer.Option(help="Comma-separated registered methods")]
    = "best_of_n,beam_search,dvts",
    ns: Annotated[str, typer.Option(help="Comma-separated budgets N")] = "4,16,64,256",
    prms: Annotated[str | None, typer.Option(
        help="Comma-separated scorer specs [default: self-certainty; confidence when a vllm "
             "or openai policy is among --policies]")] = None,
    policies: Annotated[str, typer.Option(help="Comma-separated policy specs")] = "default",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds")] = "0",
    dataset: Annotated[str, typer.Option(help="demo, demo-N, math500, ... or a JSONL path")]
    = "demo",
    data_dir: Annotated[str | None, typer.Option(envvar="TESTTIME_DATA_DIR")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first K problems")] = None,
    beam_width: Annotated[int, typer.Option(help="M for beam search / DVTS")] = 4,
    max_depth: Annotated[int, typer.Option(help="Most steps per path")] = 40,
    max_path_tokens: Annotated[int | None, typer.Option(
        help="Token limit per path [default: by policy, as `run`]")] = None,
    temperature: Annotated[float | None, typer.Option(
        help="Sampling temperature [default: by policy, as `run`]")] = None,
    top_p: Annotated[float | None, typer.Option(
        help="Nucleus sampling mass [default: by policy, as `run`]")] = None,
    semantics: Annotated[str, typer.Option(help="paper or sal (as `run`)")] = "paper",
    answer_grouping: Annotated[str, typer.Option(help="string or equivalence (as `run`)")]
    = "string",
    step_splitter: so.StepSplitter = "blank_lines",
    step_min_chars: so.StepMinChars = 400,
    think_budget: Annotated[str | None, typer.Option(
        help="R1-style models: comma-separated thinking budgets in tokens, a grid axis (each "
             "cell as `run --think-budget`; analyses tell them apart as strategies)")] = None,
    dc_warmup: so.DcWarmup = 16,
    dc_eta: so.DcEta = 10.0,
    dc_window: so.DcWindow = 2048,
    dc_consensus: so.DcConsensus = 0.95,
    dc_round: so.DcRound = 1,
    rebase_temperature: so.RebaseTemperature = 0.2,
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
    trust_remote_code: eo.TrustRemoteCode = False,
    concurrency: Annotated[int, typer.Option(help="Problems in flight at once")] = 64,
    out: Annotated[Path | None, typer.Option(help="Sweep directory")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars")] = True,
    ray: Annotated[str | None, typer.Option(
        "--ray", metavar="[ADDRESS]",
        help="Run the cells on Ray actors (as `testtime run --ray`): one actor pool per "
             "policy/PRM pair, shared by its cells")] = None,
    ray_actors: Annotated[int | None, typer.Option(help="Ray actors per pool")] = None,
    gpus_per_actor: Annotated[float | None, typer.Option(help="GPUs per Ray actor")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the cells as JSON")] = False,
) -> None:
    """Run a grid of methods x N x PRMs x policies x seeds, reusing prefix samples, resumable."""
    from testtime.analysis.sweep import PairOptions, SweepGrid, run_sweep
    from testtime.cli.execution import planned_options
    from testtime.config import DatasetConfig, RunConfig
    from testtime.search.base import SearchConfig

    engine = eo.EngineArgs.of(locals())  # the engine options above
    with user_errors():
        from testtime.policy.registry import recorded_spec

        # named as `run` records them, so that analyze pools a sweep with runs of one model
        specs = tuple(recorded_spec(p) for p in _csv(policies))
        if prms is None:
            from testtime.scoring.registry import PORTABLE_SCORER, default_scorer

            defaults = {default_scorer(p) for p in specs}
            prms = defaults.pop() if len(defaults) == 1 else PORTABLE_SCORER
        per_policy = {p: sampling_and_path(p, None, temperature, top_p, 0, max_path_tokens)
                      for p in specs}
        pairs = tuple(PairOptions(policy=p, prm=r, **dict(zip(
            ("policy_options", "prm_options"), planned_options(p, r, engine, plan=ray is None),
            strict=True)))
            for p in specs for r in _csv(prms))
        grid = SweepGrid(
            base=RunConfig(
                dataset=DatasetConfig(name=dataset, data_dir=data_dir, limit=limit),
                search=SearchConfig(beam_width=beam_width, max_depth=max_depth,
                                    max_path_tokens=max_path_tokens or DEFAULT_PATH_TOKENS,
                                    semantics=semantics,  # type: ignore[arg-type]
                                    answer_grouping=answer_grouping,  # type: ignore[arg-type]
                                    **so.search_fields(
                                        step_splitter=step_splitter,
                                        step_min_chars=step_min_chars, think_budget=None,
                                        dc_warmup=dc_warmup, dc_eta=dc_eta, dc_window=dc_window,
                                        dc_consensus=dc_consensus, dc_round=dc_round,
                                        rebase_temperature=rebase_temperature)),
                max_concurrent_problems=concurrency),
            methods=_csv(methods), ns=_ints(ns, "ns"), prms=_csv(prms),
            policies=specs, seeds=_ints(seeds, "seeds"),
            think_budgets=_ints(think_budget, "think-budget") if think_budget else (),
            max_path_tokens_by_policy={p: path for p, (_, path) in per_policy.items()},
            sampling_by_policy={p: sampling for p, (sampling, _) in per_policy.items()},
            engine_options=pairs,
        )
        ray_options = None
        if ray is not None:
            from testtime.distributed import RayOptions

            ray_options = RayOptions(address=None if ray == RAY_LOCAL else ray,
                                     actors=ray_actors, gpus_per_actor=gpus_per_actor)
        elif ray_actors is not None or gpus_per_actor is not None:
            fail("--ray-actors/--gpus-per-actor only apply with --ray")
        out_dir = out or Path("runs") / f"sweep-{Path(dataset).stem}"
        try:
            with user_errors(strict=True):  # a bug inside a backend keeps its traceback
                cells = asyncio.run(run_sweep(grid, out_dir, progress=progress,
                                              log=(lambda _: None) if as_json else
                                              console.print, ray=ray_options))
        except KeyboardInterrupt:
            console.print(f"\n[yellow]interrupted[/yellow]: rerun the same command to resume "
                          f"{out_dir}")
            raise typer.Exit(130) from None
    if as_json:
        print_json({"sweep": str(out_dir), "cells": [c.to_json() for c in cells]})
        return
    for c in cells:
        console.print(f"{c.status:>16}  {c.method} N={c.n} {c.policy} {c.prm} seed={c.seed}"
                      f"  -> {c.run_dir}" + (f" @ budget {c.budget}" if c.derived else ""))
    console.print(f"sweep: {out_dir}/sweep.json; analyse with: testtime analyze {out_dir}")


def analyze(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run or sweep directories")],
    out: Annotated[Path, typer.Option(help="Where analysis.json and optimal_table.json go")]
    = Path("analysis"),
    boot: Annotated[int, typer.Option(help="Bootstrap resamples")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the folds and the bootstrap")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print analysis.json instead of "
                                                         "the tables")] = False,
) -> None:
    """Difficulty bins, the cross-validated compute-optimal table, curves and gains, and the
    paper's Tables 2-5 beside your runs (``--json``: ``paper_comparison.cells``, each with
    ``value``, ``paper``, ``diff`` in points and the bootstrap ``ci_low``/``ci_high``).
    Runs of several datasets are analysed per dataset."""
    from testtime.analysis.analyze import analysis_tables, write_analysis
    from testtime.analysis.analyze import analyze as run_analysis

    with user_errors():
        a = run_analysis(run_dirs, boot, seed)
    written = write_analysis(a, out)
    if as_json:
        print_json(json.loads((out / "analysis.json").read_text()))
        return
    show(*analysis_tables(a))
    for p in written:
        console.print(f"wrote {p}")


def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run or sweep directories")],
    out: Annotated[Path, typer.Option(help="Report directory")] = Path("report"),
    trees: Annotated[int, typer.Option(help="Search trees to draw")] = 3,
    problems: Annotated[str | None, typer.Option(help="Draw the trees of these ids")] = None,
    boot: Annotated[int, typer.Option(help="Bootstrap resamples")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the folds and the bootstrap")] = 0,
) -> None:
    """Write PNG plots and one self-contained HTML page (opens offline): the paper's tables
    and figures from your runs beside its published numbers, then one section per (policy,
    PRM, dataset)."""
    from testtime.analysis.analyze import analyze as run_analysis
    from testtime.analysis.report import write_report

    with user_errors():
        a = run_analysis(run_dirs, boot, seed)
        page = write_report(a, out, trees, list(_csv(problems)) if problems else None)
    console.print(f"report: {page}")

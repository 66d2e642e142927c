"""The ``testtime`` command line: a thin layer over the library (logic lives in the runner)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from testtime.config import DatasetConfig, RunConfig
from testtime.search.base import SamplingConfig, SearchConfig

app = typer.Typer(
    help="Compute-optimal test-time scaling of language models on math reasoning.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
T = TypeVar("T")

#: Path limit for the embedded default: SmolLM2-135M answers in well under 200 tokens and
#: otherwise rambles; real models get the paper's 8192.
EMBEDDED_PATH_TOKENS = 256
DEFAULT_PATH_TOKENS = 8192


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.split("/")[-1]).strip("_")[:40] or "x"


def is_embedded(policy: str) -> bool:
    """Whether a policy spec names the embedded SmolLM2 (``default`` or ``BACKEND:default``)."""
    return policy == "default" or policy.endswith(":default")


def default_out_dir(cfg: RunConfig) -> Path:
    s = cfg.search
    name = f"{_slug(cfg.dataset.name)}-{s.method}-n{s.n}"
    if s.method in ("beam_search", "dvts"):
        name += f"-m{s.beam_width}"
    name += f"-{_slug(cfg.policy)}-{_slug(cfg.prm)}-seed{cfg.sampling.seed}"
    return Path("runs") / name


@app.command()
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
    method: Annotated[str, typer.Option(help="cot, best_of_n, beam_search, dvts")] = "best_of_n",
    n: Annotated[int, typer.Option(help="Budget N: final paths per problem")] = 4,
    beam_width: Annotated[int, typer.Option(help="M for beam search / DVTS")] = 4,
    max_depth: Annotated[int, typer.Option(help="Most steps per path")] = 40,
    max_step_tokens: Annotated[int, typer.Option(help="Token limit per step")] = 2048,
    max_path_tokens: Annotated[int | None, typer.Option(
        help=f"Token limit per path [default: {DEFAULT_PATH_TOKENS}; "
             f"{EMBEDDED_PATH_TOKENS} for the embedded model]")] = None,
    lookahead: Annotated[int, typer.Option(help="Greedy lookahead steps before scoring")] = 0,
    temperature: Annotated[float, typer.Option(help="Sampling temperature")] = 0.8,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass")] = 1.0,
    seed: Annotated[int, typer.Option(help="Base random seed")] = 0,
    policy: Annotated[str, typer.Option(help="BACKEND:MODEL, e.g. hf:Qwen/Qwen2.5-1.5B-Instruct"
                                             " (default: embedded SmolLM2 on CPU)")] = "default",
    prm: Annotated[str, typer.Option(help="self-certainty, confidence, or FAMILY:PATH "
                                          "(math_shepherd, rlhflow, skywork, qwen_prm)")]
    = "self-certainty",
    prompt: Annotated[str | None, typer.Option(help="Prompt template name "
                                                       "(default: from the model name)")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, float32, bfloat16")] = None,
    max_batch_seqs: Annotated[int | None, typer.Option(help="Sequences per policy batch")]
    = None,
    concurrency: Annotated[int, typer.Option(help="Problems in flight at once")] = 64,
    out: Annotated[Path | None, typer.Option(help="Run directory [default: runs/<name>]")]
    = None,
    resume: Annotated[bool, typer.Option(help="Finish an interrupted run in --out")] = False,
    overwrite: Annotated[bool, typer.Option(help="Discard results already in --out")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
    trust_remote_code: Annotated[bool, typer.Option(help="Let model repos run their code")]
    = False,
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
             "difficulty at --budget (the adaptive solver, as `testtime adaptive`)")] = "fixed",
    table: Annotated[Path | None, typer.Option(
        help="optimal_table.json from `testtime analyze` (--strategy optimal)")] = None,
    budget: Annotated[int | None, typer.Option(
        help="Mean generations per problem (--strategy optimal)")] = None,
    pilot: Annotated[int, typer.Option(help="Pilot samples per problem (--strategy optimal)")]
    = 4,
    compare: Annotated[list[Path] | None, typer.Option(
        help="Fixed-method runs to compare with (--strategy optimal)")] = None,
) -> None:
    """Search every problem of a dataset, grade the answers and summarise accuracy."""
    if strategy not in ("fixed", "optimal"):
        raise typer.BadParameter("expected fixed or optimal", param_hint="--strategy")
    if strategy == "optimal":
        if table is None or budget is None:
            raise typer.BadParameter("--strategy optimal needs --table and --budget")
        from testtime.cli_analysis import adaptive

        adaptive(table=table, budget=budget, pilot=pilot, dataset=dataset, data_dir=data_dir,
                 limit=limit, policy=policy, prm=prm, beam_width=beam_width,
                 max_path_tokens=max_path_tokens, temperature=temperature, seed=seed,
                 device=device, concurrency=concurrency, compare=compare,
                 out=out or Path("runs/adaptive"), resume=resume)
        return
    if table is not None or budget is not None:
        raise typer.BadParameter("--table and --budget apply with --strategy optimal")
    from testtime.runner import RunDirError
    from testtime.runner import run as run_async
    from testtime.summary import summary_tables

    engine = {k: v for k, v in {"device": device, "dtype": dtype,
                                    "max_batch_seqs": max_batch_seqs}.items() if v is not None}
    if trust_remote_code:
        engine["trust_remote_code"] = True
    if policy == "default":
        # Record the backend actually used, so the saved config reproduces this run.
        from testtime.policy.registry import default_backend

        policy = f"{default_backend()}:default"
    path_tokens = max_path_tokens or (
        EMBEDDED_PATH_TOKENS if is_embedded(policy) else DEFAULT_PATH_TOKENS)
    try:
        cfg = RunConfig(
            dataset=DatasetConfig(name=dataset, data_dir=data_dir, problem_field=problem_field,
                                  answer_field=answer_field, limit=limit,
                                  ids=tuple(i.strip() for i in ids.split(",")) if ids else None),
            policy=policy, policy_options=engine, prm=prm,
            prm_options={k: v for k, v in engine.items() if k in ("device", "dtype")},
            prompt=prompt,
            search=SearchConfig(method=method, n=n, beam_width=beam_width, max_depth=max_depth,
                                max_step_tokens=max_step_tokens, max_path_tokens=path_tokens,
                                lookahead=lookahead),
            sampling=SamplingConfig(temperature=temperature, top_p=top_p, seed=seed),
            max_concurrent_problems=concurrency,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    out_dir = out or default_out_dir(cfg)
    retry, executor = _retry_and_executor(cfg, ray, ray_actors, gpus_per_actor, max_retries)
    try:
        outcome = asyncio.run(_run_with(executor, run_async(
            cfg, out_dir, resume=resume, overwrite=overwrite, progress=progress, retry=retry,
            executor=executor)))
    except RunDirError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except _input_errors(executor) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print(f"\n[yellow]interrupted[/yellow]: finished problems are saved in "
                      f"{out_dir}; run the same command with --resume to complete it")
        raise typer.Exit(130) from None
    for rendered in summary_tables(outcome.summary):
        console.print(rendered)
    if executor is not None:
        st = executor.stats
        console.print(f"ray: {st.actors_ready} actors ran {st.units_sent} units; "
                      f"{st.actors_lost} lost ({st.units_lost} units retried), "
                      f"{st.replacements} replaced")
    console.print(f"results: {out_dir}/results.jsonl, summary: {out_dir}/summary.json")


#: What a bare ``--ray`` stands for (typer options cannot take an optional value, so ``main``
#: fills it in): a local Ray, or the cluster ``$RAY_ADDRESS`` names.
RAY_LOCAL = "local"


def fill_ray_flag(argv: list[str]) -> list[str]:
    """``--ray`` given without a value (last, or before another option) -> ``--ray local``."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg == "--":  # everything after it is an argument
            return out + argv[i + 1 :]
        if arg == "--ray" and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            out.append(RAY_LOCAL)
    return out


def _retry_and_executor(
    cfg: RunConfig, ray: str | None, ray_actors: int | None, gpus_per_actor: float | None,
    max_retries: int,
) -> tuple[Any, Any]:
    """The retry policy and, with ``--ray``, the Ray executor (Ray is imported only later,
    when the executor starts)."""
    from testtime.retry import RetryPolicy

    try:
        retry = RetryPolicy(max_retries=max_retries)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--max-retries") from None
    if ray is None:
        if ray_actors is not None or gpus_per_actor is not None:
            raise typer.BadParameter("only applies with --ray",
                                     param_hint="--ray-actors/--gpus-per-actor")
        return retry, None
    from testtime.distributed import RayExecutor, RayOptions

    try:
        options = RayOptions(address=None if ray == RAY_LOCAL else ray, actors=ray_actors,
                             gpus_per_actor=gpus_per_actor)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return retry, RayExecutor(cfg, options)


def _input_errors(executor: Any) -> tuple[type[Exception], ...]:
    """Errors the user can fix (bad data, no Ray cluster): printed without a traceback."""
    if executor is None:
        return (ValueError, FileNotFoundError)
    from testtime.distributed import ExecutorError

    return (ValueError, FileNotFoundError, ExecutorError)


async def _run_with(executor: Any, job: Coroutine[Any, Any, T]) -> T:
    """Await ``job`` while the executor (if any) is open; close it whatever happens."""
    if executor is None:
        return await job
    async with executor:
        return await job


@app.command()
def summary(run_dir: Path) -> None:
    """Print the summary of an existing run directory."""
    from testtime.summary import summary_tables

    path = run_dir / "summary.json"
    if not path.exists():
        console.print(f"[red]error:[/red] {path} does not exist (run with --resume first)")
        raise typer.Exit(2)
    for table in summary_tables(json.loads(path.read_text())):
        console.print(table)


# Sub-apps live in their own modules: serve (PRM service) and the analysis commands (flops,
# sweep, analyze, report, adaptive).
from testtime.cli_analysis import register as _register_analysis
from testtime.cli_serve import serve_app

app.add_typer(serve_app, name="serve")
_register_analysis(app)


def main() -> None:
    logging.basicConfig(level=os.environ.get("TESTTIME_LOG", "WARNING"))
    sys.argv[1:] = fill_ray_flag(sys.argv[1:])
    app()


if __name__ == "__main__":
    main()

"""``testtime serve tts``: test-time scaling as an OpenAI-compatible service
(:mod:`testtime.api`). Registered in ``cli/__init__.py`` as ``serve_app.command("tts")``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from testtime.cli import engine_cli as eo
from testtime.cli.common import (
    fail,
    open_service_socket,
    sampling_and_path,
    user_errors,
)
from testtime.cli.execution import planned_options


def tts(
    policy: Annotated[str, typer.Option(help="BACKEND:MODEL, as for `testtime run` "
                                             "(default: the embedded SmolLM2)")] = "default",
    prm: Annotated[str | None, typer.Option(
        help="Step scorer, as for `testtime run --prm` [default: as `run`: self-certainty; "
             "confidence for vllm and openai policies]")] = None,
    prompt: Annotated[str | None, typer.Option(help="Prompt template name (default: from "
                                                       "the model name)")] = None,
    table: Annotated[Path | None, typer.Option(
        help="optimal_table.json (`testtime analyze`) for requests with method 'optimal'")]
    = None,
    host: Annotated[str, typer.Option(help="Interface to bind (0.0.0.0 exposes the service "
                                           "to the network)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port; 0 picks a free one")] = 8000,
    api_key: Annotated[str | None, typer.Option(
        envvar="TESTTIME_TTS_API_KEY", help="Require 'Authorization: Bearer KEY' on /v1/*")]
    = None,
    method: Annotated[str, typer.Option(help="Default method of a request")] = "best_of_n",
    n: Annotated[int, typer.Option(help="Default budget N")] = 4,
    beam_width: Annotated[int, typer.Option(help="Default M (beam search, DVTS)")] = 4,
    rule: Annotated[str, typer.Option(help="Default selection rule")] = "majority",
    semantics: Annotated[str, typer.Option(help="Default semantics: paper or sal")] = "paper",
    seed: Annotated[int, typer.Option(help="Default base seed")] = 0,
    budget: Annotated[int, typer.Option(help="Default budget of method 'optimal'")] = 4,
    pilot: Annotated[int, typer.Option(help="Pilot samples of method 'optimal'")] = 4,
    max_n: Annotated[int, typer.Option(help="Largest n / budget a request may ask for")] = 64,
    max_path_tokens: Annotated[int | None, typer.Option(
        help="Token limit per path: the default and the largest max_tokens [default: as "
             "`testtime run`: 256 for the embedded model, else 8192]")] = None,
    max_step_tokens: Annotated[int, typer.Option(help="Token limit per step")] = 2048,
    max_depth: Annotated[int, typer.Option(help="Most steps per path")] = 40,
    temperature: Annotated[float | None, typer.Option(
        help="Default temperature [default: the model family's, as `testtime run`]")] = None,
    top_p: Annotated[float | None, typer.Option(help="Default top-p")] = None,
    max_in_flight: Annotated[int, typer.Option(
        help="Searches at once; more requests get 429 with Retry-After")] = 32,
    request_timeout: Annotated[float, typer.Option(
        help="Seconds a search may take before it is cancelled (504)")] = 600.0,
    max_request_bytes: Annotated[int, typer.Option(help="Largest request body")] = 1 << 20,
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
) -> None:
    """Serve test-time scaling over an OpenAI-compatible API: POST /v1/chat/completions and
    /v1/completions, GET /v1/models, GET /health. The method and budget are chosen per request
    (a `tts` object in the body, or a model name such as tts/beam_search/n8)."""
    from testtime.api.options import ServiceConfig
    from testtime.api.server import run_server
    from testtime.compose import check_config
    from testtime.config import RunConfig
    from testtime.policy.registry import recorded_spec
    from testtime.search.base import SearchConfig

    api_key = api_key or None  # an empty $TESTTIME_TTS_API_KEY means no key
    with user_errors():
        policy = recorded_spec(policy)  # as `testtime run` records it
        if table is not None and not table.is_file():
            fail(f"--table {table}: no such file")
        sampling, path = sampling_and_path(policy, prompt, temperature, top_p, seed,
                                           max_path_tokens)
        if prm is None:
            from testtime.scoring.registry import default_scorer

            prm = default_scorer(policy)
        engine = eo.EngineArgs.of(locals())  # the engine options above
        policy_options, prm_options = planned_options(policy, prm, engine)
        config = RunConfig(
            policy=policy, policy_options=policy_options, prm=prm, prompt=prompt,
            prm_options=prm_options,
            search=SearchConfig(method=method if method != "optimal" else "best_of_n", n=n,
                                beam_width=beam_width, max_depth=max_depth,
                                max_step_tokens=max_step_tokens, max_path_tokens=path,
                                semantics=semantics),  # type: ignore[arg-type]
            sampling=sampling)
        service = ServiceConfig(
            host=host, port=port, api_key=api_key, method=method, n=n, beam_width=beam_width,
            rule=rule, semantics=semantics, seed=seed, budget=budget,  # type: ignore[arg-type]
            pilot=pilot, table=None if table is None else str(table), max_n=max_n,
            max_path_tokens=path, max_in_flight=max_in_flight,
            request_timeout_s=request_timeout, max_request_bytes=max_request_bytes)
        check_config(config)  # every name and model path, before anything loads
        if table is not None:  # the table must have this policy + PRM: fail now, not per request
            from testtime.analysis.adaptive import load_plan
            from testtime.config import AdaptiveSettings

            load_plan(config.model_copy(update={"adaptive": AdaptiveSettings(
                table=str(table), budget=budget, pilot=min(pilot, budget))}))
    sock = open_service_socket(service.host, service.port, api_key, "run searches")

    def ready(url: str) -> None:
        # Plain print, flushed: scripts and tests read the bound address from stdout.
        print(f"serving test-time scaling ({config.policy} + {config.prm}) on {url}/v1",
              flush=True)

    run_server(config, service, on_ready=ready, sock=sock)


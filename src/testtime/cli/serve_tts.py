"""``testtime serve tts``: test-time scaling as an OpenAI-compatible service
(:mod:`testtime.api`). Registered in ``cli/__init__.py`` as ``serve_app.command("tts")``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from testtime.cli.common import KV_CACHE_HELP, err_console, fail, sampling_and_path, user_errors


def tts(
    policy: Annotated[str, typer.Option(help="BACKEND:MODEL, as for `testtime run` "
                                             "(default: the embedded SmolLM2)")] = "default",
    prm: Annotated[str, typer.Option(help="Step scorer, as for `testtime run --prm`")]
    = "self-certainty",
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
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, float32, bfloat16")] = None,
    max_batch_seqs: Annotated[int | None, typer.Option(help="Sequences per policy batch")]
    = None,
    prm_kv_cache_gb: Annotated[float | None, typer.Option(help=KV_CACHE_HELP, min=0.0)] = None,
    trust_remote_code: Annotated[bool, typer.Option(help="Let model repos run their code")]
    = False,
    engine_arg: Annotated[list[str] | None, typer.Option(
        "--engine-arg", metavar="KEY=VALUE",
        help="Any other policy engine setting (e.g. n_threads=1 for llama.cpp); repeatable")]
    = None,
) -> None:
    """Serve test-time scaling over an OpenAI-compatible API: POST /v1/chat/completions and
    /v1/completions, GET /v1/models, GET /health. The method and budget are chosen per request
    (a `tts` object in the body, or a model name such as tts/beam_search/n8)."""
    from testtime.api.options import ServiceConfig
    from testtime.api.server import run_server
    from testtime.cli.common import is_loopback
    from testtime.compose import check_config
    from testtime.config import RunConfig
    from testtime.policy.registry import default_backend
    from testtime.scoring.service.server import bind_socket
    from testtime.search.base import SearchConfig

    api_key = api_key or None  # an empty $TESTTIME_TTS_API_KEY means no key
    with user_errors():
        if policy == "default":
            policy = f"{default_backend()}:default"  # as `testtime run` records it
        if table is not None and not table.is_file():
            fail(f"--table {table}: no such file")
        sampling, path = sampling_and_path(policy, prompt, temperature, top_p, seed,
                                           max_path_tokens)
        engine: dict[str, Any] = {k: v for k, v in {
            "device": device, "dtype": dtype, "max_batch_seqs": max_batch_seqs}.items()
            if v is not None}
        if trust_remote_code:
            engine["trust_remote_code"] = True
        engine.update(_key_values(engine_arg or []))
        config = RunConfig(
            policy=policy, policy_options=engine, prm=prm, prompt=prompt,
            prm_options={**{k: v for k, v in engine.items() if k in ("device", "dtype")},
                         **({} if prm_kv_cache_gb is None else {"kv_cache_gb": prm_kv_cache_gb})},
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
    if not is_loopback(host) and api_key is None:
        err_console.print(f"[yellow]warning:[/yellow] serving on {host} without --api-key: "
                          f"anyone who can reach this port can run searches")
    try:  # bind before loading a model, so a busy port fails fast
        sock = bind_socket(service.host, service.port)
    except OSError as exc:
        fail(f"--port {port}: {exc}")

    def ready(url: str) -> None:
        # Plain print, flushed: scripts and tests read the bound address from stdout.
        print(f"serving test-time scaling ({config.policy} + {config.prm}) on {url}/v1",
              flush=True)

    run_server(config, service, on_ready=ready, sock=sock)


def _key_values(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values read as JSON where they parse (numbers, booleans)."""
    import json

    from testtime.cli.common import fail

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"--engine-arg {item}: expected KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out

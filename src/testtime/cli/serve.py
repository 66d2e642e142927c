"""``testtime serve``: run a step scorer as an HTTP service (``testtime.scoring.service``)."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

import typer

from testtime.cli.common import KV_CACHE_HELP, err_console, fail, user_errors
from testtime.scoring.service.protocol import (
    API_KEY_ENV,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_STEPS,
)
from testtime.scoring.service.server import (
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_SCORE_TIMEOUT_S,
    ServeConfig,
)

serve_app = typer.Typer(help="Serve models over HTTP.", no_args_is_help=True,
                        add_completion=False)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@serve_app.command("prm")
def prm(
    prm: Annotated[str, typer.Option(help="Scorer spec, as for `testtime run --prm`: FAMILY:PATH "
                                          "(math_shepherd, rlhflow, skywork, qwen_prm), "
                                          "judge:hf:PATH, vllm-pooling:MODEL@URL, ...")],
    host: Annotated[str, typer.Option(help="Interface to bind (0.0.0.0 exposes the service "
                                           "to the network)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port; 0 picks a free one")] = 8000,
    api_key: Annotated[str | None, typer.Option(
        envvar=API_KEY_ENV, help="Require 'Authorization: Bearer KEY' on /v1/*")] = None,
    max_request_bytes: Annotated[int, typer.Option(help="Largest accepted request body")]
    = DEFAULT_MAX_REQUEST_BYTES,
    max_steps: Annotated[int, typer.Option(help="Most steps in one scored request")]
    = DEFAULT_MAX_STEPS,
    max_request_tokens: Annotated[int | None, typer.Option(
        help="Most input tokens of one scored path [default and upper bound: the model's "
             "context]")] = None,
    max_concurrent: Annotated[int, typer.Option(
        help="Requests scored at once; more are answered 503 (clients retry)")]
    = DEFAULT_MAX_CONCURRENT,
    score_timeout: Annotated[float, typer.Option(
        help="Seconds a request may take to be scored before it is answered 504")]
    = DEFAULT_SCORE_TIMEOUT_S,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, float32, bfloat16")] = None,
    max_batch_tokens: Annotated[int | None, typer.Option(
        help="Padded tokens per PRM forward")] = None,
    kv_cache_gb: Annotated[float | None, typer.Option(
        help=KV_CACHE_HELP, min=0.0)] = None,
    trust_remote_code: Annotated[bool, typer.Option(help="Let model repos run their code")]
    = False,
) -> None:
    """Serve a step scorer: POST /v1/score, GET /v1/info, GET /health."""
    from testtime.scoring.registry import build_scorer, check_scorer_spec
    from testtime.scoring.service.server import bind_socket, run_server

    api_key = api_key or None  # an empty $TESTTIME_PRM_API_KEY means no key
    with user_errors():
        config = ServeConfig(host=host, port=port, api_key=api_key,
                             max_request_bytes=max_request_bytes, max_steps=max_steps,
                             max_request_tokens=max_request_tokens,
                             max_concurrent=max_concurrent, score_timeout_s=score_timeout)
        check_scorer_spec(prm)
    if not _is_loopback(host) and api_key is None:
        err_console.print(f"[yellow]warning:[/yellow] serving on {host} without --api-key: "
                          f"anyone who can reach this port can use the scorer")
    options: dict[str, Any] = {"device": device, "dtype": dtype,
                               "max_batch_tokens": max_batch_tokens, "kv_cache_gb": kv_cache_gb}
    if trust_remote_code:
        options["trust_remote_code"] = True
    try:  # bind before loading a model, so a busy port fails fast
        sock = bind_socket(config.host, config.port)
    except OSError as exc:
        fail(f"--port {port}: {exc}")
    try:
        scorer = build_scorer(prm, {k: v for k, v in options.items() if v is not None})
    except (ValueError, FileNotFoundError, OSError) as exc:
        sock.close()
        fail(f"--prm {prm}: {exc}")

    def ready(url: str) -> None:
        # Plain print, flushed: scripts and tests read the bound address from stdout.
        print(f"serving {scorer.name} on {url}", flush=True)

    run_server(scorer, config, on_ready=ready, sock=sock)


@serve_app.command("vllm-prm")
def vllm_prm(
    prm: Annotated[str, typer.Option(help="FAMILY:MODEL (qwen_prm, math_shepherd, rlhflow, "
                                          "skywork), MODEL a Hub id or directory")],
    host: Annotated[str, typer.Option(help="Interface vLLM binds")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port vLLM listens on")] = 8000,
    export: Annotated[str | None, typer.Option(
        help="skywork only: write the checkpoint vLLM can load (v_head -> score) here")] = None,
) -> None:
    """Print the `vllm serve` command that serves a PRM through vLLM's pooling API, and the
    --prm spec that scores with it."""
    from testtime.scoring.prm.checkpoint import load_tokenizer
    from testtime.scoring.service.vllm_pooling import pooling_families
    from testtime.scoring.service.vllm_recipes import export_skywork, serve_command

    with user_errors():
        family, sep, model = prm.partition(":")
        families = pooling_families()
        if not sep or family not in families:
            fail(f"--prm {prm}: expected FAMILY:MODEL with FAMILY in {sorted(families)}")
        if family == "skywork":
            if export is None:
                fail("--prm skywork:...: vLLM cannot load Skywork's v_head; add --export DIR "
                     "to write a checkpoint it can serve")
            model = str(export_skywork(model, export))
            err_console.print(f"wrote {model}")
        elif export is not None:
            fail(f"--export applies to skywork only, not {family}")
        encoder = families[family].make_encoder(load_tokenizer(model))
        print(serve_command(family, model, encoder, host=host, port=port))
        print(f"# then: testtime run --prm vllm-pooling:{family}:{model}@http://{host}:{port}")

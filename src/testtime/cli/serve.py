"""``testtime serve``: run a step scorer as an HTTP service (see ``testtime.scoring.serve``).

Registered in ``testtime.cli`` with ``app.add_typer(serve_app, name="serve")``.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

import typer
from rich.console import Console

from testtime.scoring.serve import (
    API_KEY_ENV,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_STEPS,
    ServeConfig,
)

serve_app = typer.Typer(help="Serve models over HTTP.", no_args_is_help=True,
                        add_completion=False)
console = Console(stderr=True)


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
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, float32, bfloat16")] = None,
    max_batch_tokens: Annotated[int | None, typer.Option(
        help="Padded tokens per PRM forward")] = None,
    trust_remote_code: Annotated[bool, typer.Option(help="Let model repos run their code")]
    = False,
) -> None:
    """Serve a step scorer: POST /v1/score, GET /v1/info, GET /health."""
    from testtime.scoring.registry import build_scorer
    from testtime.scoring.serve import bind_socket, run_server

    api_key = api_key or None  # an empty $TESTTIME_PRM_API_KEY means no key
    try:
        config = ServeConfig(host=host, port=port, api_key=api_key,
                             max_request_bytes=max_request_bytes, max_steps=max_steps)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if not _is_loopback(host) and api_key is None:
        console.print(f"[yellow]warning:[/yellow] serving on {host} without --api-key: anyone "
                      f"who can reach this port can use the scorer")
    options: dict[str, Any] = {"device": device, "dtype": dtype,
                               "max_batch_tokens": max_batch_tokens}
    if trust_remote_code:
        options["trust_remote_code"] = True
    try:  # bind before loading a model, so a busy port fails fast
        sock = bind_socket(config.host, config.port)
    except OSError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    try:
        scorer = build_scorer(prm, {k: v for k, v in options.items() if v is not None})
    except (ValueError, FileNotFoundError, OSError) as exc:
        sock.close()
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None

    def ready(url: str) -> None:
        # Plain print, flushed: scripts and tests read the bound address from stdout.
        print(f"serving {scorer.name} on {url}", flush=True)

    run_server(scorer, config, on_ready=ready, sock=sock)

"""``testtime serve``: run a step scorer as an HTTP service (``testtime.scoring.service``)."""

from __future__ import annotations

from typing import Annotated

import typer

from testtime.cli import engine_cli as opt
from testtime.cli import serve_stack
from testtime.cli.common import (
    KV_CACHE_HELP,
    err_console,
    fail,
    open_service_socket,
    user_errors,
)
from testtime.engine_options import DTYPES
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
    dtype: Annotated[str | None, typer.Option(help=f"{', '.join(DTYPES)}")] = None,
    gpus: Annotated[str | None, typer.Option(
        help="GPU indices the PRM is split over, e.g. 0,1 (a device map over them)")] = None,
    device_map: Annotated[str | None, typer.Option(
        help="Split the PRM over devices with accelerate ('auto', or JSON {module: device})")]
    = None,
    max_memory: Annotated[str | None, typer.Option(
        help="GiB per device of a split PRM, e.g. cuda:0=30,cuda:1=30,cpu=60")] = None,
    max_batch_tokens: Annotated[int | None, typer.Option(
        help="Padded tokens per PRM forward")] = None,
    kv_cache_gb: Annotated[float | None, typer.Option(
        help=KV_CACHE_HELP, min=0.0)] = None,
    trust_remote_code: Annotated[bool, typer.Option(help="Let model repos run their code")]
    = False,
    prm_arg: Annotated[list[str] | None, typer.Option(
        "--prm-arg", metavar="KEY=VALUE",
        help="Any other setting of the scorer; repeatable; an unknown key fails naming the "
             "valid ones")] = None,
) -> None:
    """Serve a step scorer: POST /v1/score, GET /v1/info, GET /health."""
    from testtime.cli.engine_cli import parse_device_map
    from testtime.engine_options import (
        check_dtype,
        merge_settings,
        parse_gpus,
        parse_key_values,
        parse_max_memory,
    )
    from testtime.scoring.registry import build_scorer, check_scorer_options, check_scorer_spec
    from testtime.scoring.service.server import run_server

    api_key = api_key or None  # an empty $TESTTIME_PRM_API_KEY means no key
    with user_errors():
        config = ServeConfig(host=host, port=port, api_key=api_key,
                             max_request_bytes=max_request_bytes, max_steps=max_steps,
                             max_request_tokens=max_request_tokens,
                             max_concurrent=max_concurrent, score_timeout_s=score_timeout)
        check_scorer_spec(prm)
        named = {"device": device, "dtype": check_dtype(dtype, "--dtype"),
                 "gpus": parse_gpus(gpus, "--gpus"),
                 "device_map": parse_device_map(device_map, "--device-map"),
                 "max_memory": parse_max_memory(max_memory, "--max-memory"),
                 "max_batch_tokens": max_batch_tokens, "kv_cache_gb": kv_cache_gb,
                 "trust_remote_code": True if trust_remote_code else None}
        options = merge_settings(named, parse_key_values(prm_arg, "--prm-arg"), "--prm-arg")
        check_scorer_options(prm, options)
    sock = open_service_socket(config.host, config.port, api_key, "use the scorer")
    try:
        scorer = build_scorer(prm, options)
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
    gpus: Annotated[str | None, typer.Option(
        help="GPU indices of the PRM, e.g. 2,3 (CUDA_VISIBLE_DEVICES)")] = None,
    tensor_parallel_size: Annotated[int | None, typer.Option(
        help="GPUs the PRM is sharded over")] = None,
    gpu_memory_utilization: Annotated[float | None, typer.Option(
        help="Share of each GPU's memory the PRM's engine takes (lower it where the policy "
             "shares the GPU)")] = None,
    max_model_len: Annotated[int | None, typer.Option(
        help="The PRM's context length [default: the model's]")] = None,
    dtype: Annotated[str | None, typer.Option(help=f"{', '.join(DTYPES)}")] = None,
    engine_arg: opt.EngineArg = None,
    trust_remote_code: opt.TrustRemoteCode = False,
) -> None:
    """Print the `vllm serve` command that serves a PRM through vLLM's pooling API (with its
    GPUs, tensor parallel, memory share and context), and the --prm spec that scores with it."""
    from testtime.cli.engine_cli import EngineArgs
    from testtime.scoring.prm.checkpoint import load_tokenizer
    from testtime.scoring.service.vllm_pooling import pooling_families
    from testtime.scoring.service.vllm_recipes import export_skywork, serve_command
    from testtime.stack.servers import gpu_env

    with user_errors():
        family, sep, model = prm.partition(":")
        families = pooling_families()
        if not sep or family not in families:
            fail(f"--prm {prm}: expected FAMILY:MODEL with FAMILY in {sorted(families)}")
        options = EngineArgs(
            dtype=dtype, tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
            gpus=gpus, engine_arg=engine_arg, trust_remote_code=trust_remote_code,
        ).policy_options()
        env, settings = gpu_env(options)
        settings.pop("gpus", None)  # CUDA_VISIBLE_DEVICES places it
        if family == "skywork":
            if export is None:
                fail("--prm skywork:...: vLLM cannot load Skywork's v_head; add --export DIR "
                     "to write a checkpoint it can serve")
            model = str(export_skywork(model, export))
            err_console.print(f"wrote {model}")
        elif export is not None:
            fail(f"--export applies to skywork only, not {family}")
        encoder = families[family].make_encoder(
            load_tokenizer(model, trust_remote_code=trust_remote_code))
        prefix = "".join(f"{k}={v} " for k, v in env.items())
        print(prefix + serve_command(family, model, encoder, host=host, port=port,
                                     settings=settings))
        print(f"# then: testtime run --prm vllm-pooling:{family}:{model}@http://{host}:{port}")


serve_app.command("stack")(serve_stack.stack)

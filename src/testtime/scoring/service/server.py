"""Serve any step scorer over HTTP, with dynamic batching (``testtime serve prm``).

Endpoints (JSON):

* ``POST /v1/score`` ``{"requests": [{"question": str, "steps": [str | step, ...]}, ...]}`` ->
  ``{"scores": [[float, ...], ...], "scored_tokens": int, "tokens": [int, ...]}``. A step is a
  string, or an object ``{"text", "num_tokens", "logprob_sum", "certainty_sum", "truncated"}``
  for scorers that read the policy's token statistics. ``tokens`` is ``scored_tokens`` per
  request (the client needs it per request for compute accounting).
* ``POST /v1/tokens`` (same body) -> ``{"tokens": [int, ...], "scored_tokens": int}`` without
  scoring.
* ``GET /health`` -> ``{"status": "ok"}`` (never needs the API key).
* ``GET /v1/info`` -> ``{"name": scorer name, "max_request_bytes": int, "max_steps": int}``.

Dynamic batching: every HTTP request is an asyncio task on one event loop, so requests from
many clients overlap; :class:`Coalescer` merges all ``score`` calls that arrive while the
scorer is busy into its next call (the PRM engine then packs them into token-budgeted
forwards). Bad input gets a 4xx with a message naming the field; a failing scorer gets a 5xx;
neither stops the server. FastAPI and uvicorn are the ``serve`` extra, imported lazily.
"""

# No ``from __future__ import annotations``: FastAPI reads the handlers' annotations (the
# locally imported ``Request``) at runtime.
import asyncio
import hmac
import math
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Self

from testtime.scoring.base import StepScorer
from testtime.scoring.coalesce import (  # noqa: F401  (re-exported)
    Coalescer,
    CoalescingScorer,
    ScoreFn,
)
from testtime.types import ScoreRequest, Step

#: Environment variable holding the API key, read by both ``serve prm`` and the client.
API_KEY_ENV = "TESTTIME_PRM_API_KEY"
#: Largest accepted body. A beam-search step of 256 paths of 8k tokens is ~8 MB of JSON.
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
#: Most steps in one request (search methods stop at ``max_depth``, 40 by default).
DEFAULT_MAX_STEPS = 1024
_MAX_ERRORS_SHOWN = 5


@dataclass(frozen=True)
class ServeConfig:
    """Settings of the HTTP scorer service (validated here; binding happens in ``run_server``)."""

    host: str = "127.0.0.1"
    """Interface to bind; the loopback default keeps the service private to this machine."""
    port: int = 8000
    """TCP port; 0 picks a free one (the bound address is printed)."""
    api_key: str | None = None
    """When set, ``/v1/*`` need ``Authorization: Bearer <key>``."""
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    """Larger bodies get 413 before they are parsed."""
    max_steps: int = DEFAULT_MAX_STEPS
    """Requests with more steps get 413."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.max_request_bytes < 1:
            raise ValueError(f"max_request_bytes must be >= 1, got {self.max_request_bytes}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key must not be empty")


def require(module: str) -> Any:
    """Import a module of the ``serve`` extra, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"{module} is needed to serve or reach a scorer over HTTP: "
                                  f"pip install 'testtime[serve]'") from None


class BadRequest(ValueError):
    """A client error: ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _wire_models() -> Any:
    """Pydantic models of the request body (built lazily with the rest of the server)."""
    from pydantic import BaseModel, ConfigDict, Field

    class WireStep(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        text: str
        num_tokens: int = Field(default=0, ge=0)
        logprob_sum: float | None = None
        certainty_sum: float | None = None
        truncated: bool = False

    class WireRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        question: str
        steps: list[str | WireStep]

    class ScoreBody(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        requests: list[WireRequest]

    return ScoreBody


def parse_score_body(raw: bytes, config: ServeConfig) -> list[ScoreRequest]:
    """Validate a ``/v1/score`` body into score requests, or raise :class:`BadRequest`."""
    from pydantic import ValidationError

    if not raw.strip():
        raise BadRequest(400, 'empty body: expected JSON {"requests": [{"question": ..., '
                              '"steps": [...]}]}')
    body_model = _wire_models()
    try:
        body = body_model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise BadRequest(400, f"invalid JSON: {errors[0]['msg']}") from None
        shown = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in errors[:_MAX_ERRORS_SHOWN]
        )
        more = f" (+{len(errors) - _MAX_ERRORS_SHOWN} more)" if len(errors) > _MAX_ERRORS_SHOWN else ""
        raise BadRequest(422, f"invalid request: {shown}{more}") from None
    out: list[ScoreRequest] = []
    for i, req in enumerate(body.requests):
        if len(req.steps) > config.max_steps:
            raise BadRequest(413, f"requests.{i}.steps: {len(req.steps)} steps exceed the "
                                  f"limit of {config.max_steps} (--max-steps)")
        steps = tuple(
            Step(text=s) if isinstance(s, str) else Step(
                text=s.text, num_tokens=s.num_tokens, logprob_sum=s.logprob_sum,
                certainty_sum=s.certainty_sum, truncated=s.truncated)
            for s in req.steps
        )
        out.append(ScoreRequest(req.question, steps))
    return out


def check_scores(scores: list[list[float]], requests: Sequence[ScoreRequest]) -> None:
    """The scorer kept its contract: shapes match and every score is a finite number."""
    if len(scores) != len(requests):
        raise RuntimeError(f"scorer returned {len(scores)} lists for {len(requests)} requests")
    for i, (row, req) in enumerate(zip(scores, requests, strict=True)):
        if len(row) != len(req.steps):
            raise RuntimeError(f"scorer returned {len(row)} scores for request {i} "
                               f"with {len(req.steps)} steps")
        if not all(isinstance(x, int | float) and math.isfinite(x) for x in row):
            raise RuntimeError(f"scorer returned a non-finite score for request {i}: {row}")


def create_app(scorer: StepScorer, config: ServeConfig, *, close_scorer: bool = True) -> Any:
    """The FastAPI application serving ``scorer`` (closed on shutdown if ``close_scorer``)."""
    from contextlib import asynccontextmanager

    require("fastapi")
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    batcher = scorer if isinstance(scorer, CoalescingScorer) else CoalescingScorer(scorer)

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        yield
        if close_scorer:
            await scorer.aclose()

    app = FastAPI(title="testtime step scorer", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.scorer = batcher

    def error(status: int, message: str) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def authorised(request: Request) -> bool:
        if config.api_key is None:
            return True
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), config.api_key.encode())

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > config.max_request_bytes:
            raise BadRequest(413, f"body of {declared} bytes exceeds the limit of "
                                  f"{config.max_request_bytes} (--max-request-bytes)")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > config.max_request_bytes:
                raise BadRequest(413, f"body exceeds the limit of {config.max_request_bytes} "
                                      f"bytes (--max-request-bytes)")
            chunks.append(chunk)
        return b"".join(chunks)

    async def parsed(request: Request) -> list[ScoreRequest]:
        return parse_score_body(await read_body(request), config)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/info")
    async def info(request: Request) -> Any:
        if not authorised(request):
            return error(401, "missing or wrong API key (Authorization: Bearer <key>)")
        return {"name": scorer.name, "max_request_bytes": config.max_request_bytes,
                "max_steps": config.max_steps}

    @app.post("/v1/score")
    async def score(request: Request) -> Any:
        if not authorised(request):
            return error(401, "missing or wrong API key (Authorization: Bearer <key>)")
        try:
            requests = await parsed(request)
            scores = await batcher.score(requests)
            check_scores(scores, requests)
            tokens = await asyncio.to_thread(_tokens_per_request, batcher, requests)
        except BadRequest as exc:
            return error(exc.status, str(exc))
        except (ValueError, KeyError) as exc:  # the scorer rejects this input
            return error(422, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001 - answered as 500; the server keeps serving
            return error(500, f"scorer failed: {type(exc).__name__}: {exc}")
        return {"scores": scores, "scored_tokens": sum(tokens), "tokens": tokens}

    @app.post("/v1/tokens")
    async def tokens(request: Request) -> Any:
        if not authorised(request):
            return error(401, "missing or wrong API key (Authorization: Bearer <key>)")
        try:
            requests = await parsed(request)
            counts = await asyncio.to_thread(_tokens_per_request, batcher, requests)
        except BadRequest as exc:
            return error(exc.status, str(exc))
        except (ValueError, KeyError) as exc:
            return error(422, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001
            return error(500, f"scorer failed: {type(exc).__name__}: {exc}")
        return {"tokens": counts, "scored_tokens": sum(counts)}

    return app


def _tokens_per_request(scorer: StepScorer, requests: Sequence[ScoreRequest]) -> list[int]:
    return [int(scorer.scored_tokens([r])) for r in requests]


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot bind {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)  # connections queue here until uvicorn accepts them
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _uvicorn_server(app: Any) -> Any:
    uvicorn = require("uvicorn")
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                         lifespan="on", ws="none"))


def run_server(scorer: StepScorer, config: ServeConfig,
               on_ready: Callable[[str], None] | None = None,
               sock: socket.socket | None = None) -> None:
    """Bind (unless ``sock`` is bound already), call ``on_ready(url)``, and serve until
    interrupted; closes the scorer at exit."""
    sock = sock if sock is not None else bind_socket(config.host, config.port)
    server = _uvicorn_server(create_app(scorer, config))
    if on_ready is not None:
        on_ready(url_of(sock))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


class BackgroundServer:
    """Serves a scorer from a daemon thread (tests, notebooks); use as a context manager.

    The scorer then belongs to the server thread's event loop: do not also call it directly.
    """

    def __init__(self, scorer: StepScorer, config: ServeConfig | None = None,
                 *, close_scorer: bool = False, start_timeout_s: float = 30.0) -> None:
        self.config = config or ServeConfig(port=0)
        self.app = create_app(scorer, self.config, close_scorer=close_scorer)
        self._sock = bind_socket(self.config.host, self.config.port)
        self.url = url_of(self._sock)
        self._server = _uvicorn_server(self.app)
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()
        waited = 0.0
        while not self._server.started:
            if not self._thread.is_alive() or waited > start_timeout_s:
                self.stop()
                raise RuntimeError(f"scorer server on {self.url} did not start")
            threading.Event().wait(0.01)
            waited += 0.01

    @property
    def scorer(self) -> CoalescingScorer:
        return self.app.state.scorer  # type: ignore[no-any-return]

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

"""Serve any step scorer over HTTP, with dynamic batching (``testtime serve prm``).

Endpoints and bodies: :mod:`testtime.scoring.service.protocol`.

Dynamic batching: every HTTP request is an asyncio task on one event loop, so requests from
many clients overlap; :class:`~testtime.scoring.coalesce.Coalescer` merges all ``score`` calls
that arrive while the scorer is busy into its next call (the PRM engine then packs them into
token-budgeted forwards); when a merged call fails, each request is scored alone, so a bad
request fails only itself.

Limits, each answered with a status and a message naming it: body size (413), steps per
request (413), tokens per request (413: never past the model's context, as the scorer reports
it in ``max_input_tokens``), requests in flight (503, ``Retry-After``; clients retry), scoring
time (504). A failing scorer gets a 500 whose body carries an error id, never the exception
text (that goes to the server log). FastAPI and uvicorn are the ``serve`` extra.
"""

# No ``from __future__ import annotations``: FastAPI reads the handlers' annotations (the
# locally imported ``Request``) at runtime.
import asyncio
import hmac
import logging
import math
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from testtime.flops import params_of
from testtime.scoring.base import InputTooLong, ScoreResult, ScorerInputError, StepScorer
from testtime.scoring.coalesce import CoalescingScorer
from testtime.scoring.service.protocol import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_STEPS,
    BadRequest,
    parse_score_body,
    require,
)
from testtime.serving import ThreadedServer, bind_socket, url_of, uvicorn_server
from testtime.types import ScoreRequest

log = logging.getLogger(__name__)

#: Requests scored (or queued to be) at once; more are refused with 503 until one finishes.
DEFAULT_MAX_CONCURRENT = 256
#: Longest a request may take to be scored (queueing included).
DEFAULT_SCORE_TIMEOUT_S = 600.0
#: Seconds a refused client is told to wait before retrying.
RETRY_AFTER_S = 1


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
    max_request_tokens: int | None = None
    """Most input tokens of one scored path; None: the scorer's own limit (its model's
    context). A larger value is lowered to that limit."""
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    """HTTP requests being scored at once; more get 503 with ``Retry-After``."""
    score_timeout_s: float = DEFAULT_SCORE_TIMEOUT_S
    """A request not scored within this time gets 504."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        for name in ("max_request_bytes", "max_steps", "max_concurrent"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_request_tokens is not None and self.max_request_tokens < 1:
            raise ValueError(f"max_request_tokens must be >= 1, got {self.max_request_tokens}")
        if not self.score_timeout_s > 0:
            raise ValueError(f"score_timeout_s must be > 0, got {self.score_timeout_s}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key must not be empty")


def token_limit(scorer: StepScorer, config: ServeConfig) -> int | None:
    """The tokens one request may hold: the smaller of the configured cap and the scorer's
    ``max_input_tokens`` (its model's context), or None when neither is known."""
    own = getattr(scorer, "max_input_tokens", None)
    limits = [x for x in (own, config.max_request_tokens) if x is not None]
    return min(limits) if limits else None


def check_scores(result: ScoreResult, requests: Sequence[ScoreRequest]) -> None:
    """The scorer kept its contract: shapes match and every score is a finite number."""
    result.check(requests, "served scorer")
    for i, row in enumerate(result.scores):
        if not all(isinstance(x, int | float) and math.isfinite(x) for x in row):
            raise RuntimeError(f"scorer returned a non-finite score for request {i}: {row}")


def _info(scorer: StepScorer, config: ServeConfig, limit: int | None) -> dict[str, Any]:
    params = params_of(scorer)
    return {"name": scorer.name,
            "params": None if params is None else {"total": params.total,
                                                   "non_embedding": params.non_embedding},
            "max_input_tokens": limit, "max_request_bytes": config.max_request_bytes,
            "max_steps": config.max_steps}


def create_app(scorer: StepScorer, config: ServeConfig, *, close_scorer: bool = True) -> Any:
    """The FastAPI application serving ``scorer`` (closed on shutdown if ``close_scorer``)."""
    from contextlib import asynccontextmanager

    require("fastapi")
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    limit = token_limit(scorer, config)
    if limit is not None and hasattr(scorer, "max_input_tokens"):
        scorer.max_input_tokens = limit  # type: ignore[attr-defined]  # the scorer enforces it
    batcher = scorer if isinstance(scorer, CoalescingScorer) else CoalescingScorer(scorer)
    in_flight = 0

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
        if status == 503:
            headers = {"Retry-After": str(RETRY_AFTER_S)}
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

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/info")
    async def info(request: Request) -> Any:
        if not authorised(request):
            return error(401, "missing or wrong API key (Authorization: Bearer <key>)")
        return _info(scorer, config, limit)

    @app.post("/v1/score")
    async def score(request: Request) -> Any:
        nonlocal in_flight
        if not authorised(request):
            return error(401, "missing or wrong API key (Authorization: Bearer <key>)")
        if in_flight >= config.max_concurrent:
            return error(503, f"busy: {in_flight} requests in flight (--max-concurrent "
                              f"{config.max_concurrent}); retry later")
        in_flight += 1
        try:
            requests = parse_score_body(await read_body(request), config.max_steps)
            result = await asyncio.wait_for(batcher.score(requests), config.score_timeout_s)
            check_scores(result, requests)
        except BadRequest as exc:
            return error(exc.status, str(exc))
        except InputTooLong as exc:
            return error(413, str(exc))
        except ScorerInputError as exc:  # our own message about this input
            return error(422, str(exc))
        except TimeoutError:
            return error(504, f"scoring took longer than {config.score_timeout_s:g} s "
                              f"(--score-timeout)")
        except Exception:
            ref = uuid.uuid4().hex[:12]
            log.exception("scoring failed (error id %s)", ref)
            return error(500, f"the scorer failed on this request (error id {ref}; the "
                              f"server log has the details)")
        finally:
            in_flight -= 1
        return {"scores": result.scores, "tokens": result.tokens,
                "scored_tokens": result.scored_tokens, "cached": result.cached,
                "unread": result.unread}

    return app


def run_server(scorer: StepScorer, config: ServeConfig,
               on_ready: Callable[[str], None] | None = None,
               sock: socket.socket | None = None) -> None:
    """Bind (unless ``sock`` is bound already), call ``on_ready(url)``, and serve until
    interrupted; closes the scorer at exit."""
    sock = sock if sock is not None else bind_socket(config.host, config.port)
    server = uvicorn_server(create_app(scorer, config))
    if on_ready is not None:
        on_ready(url_of(sock))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


class BackgroundServer(ThreadedServer):
    """Serves a scorer from a daemon thread (tests, notebooks); use as a context manager.

    The scorer then belongs to the server thread's event loop: do not also call it directly.
    """

    def __init__(self, scorer: StepScorer, config: ServeConfig | None = None,
                 *, close_scorer: bool = False, start_timeout_s: float = 30.0) -> None:
        self.config = config or ServeConfig(port=0)
        super().__init__(create_app(scorer, self.config, close_scorer=close_scorer),
                         self.config.host, self.config.port, what="scorer server",
                         start_timeout_s=start_timeout_s, stop_timeout_s=10.0)

    @property
    def scorer(self) -> CoalescingScorer:
        return self.app.state.scorer  # type: ignore[no-any-return]

"""The FastAPI application of ``testtime serve tts``: routes, authentication and limits.

Every search runs as its own asyncio task on the one engine (:class:`TTSEngine`), so requests
from many clients overlap in the backend's batches. Order of checks on a search request:
API key (401) -> searches in flight (429 + ``Retry-After``) -> body size (413) -> JSON
(400) -> fields (422, naming the field) -> search, within the request timeout (504). A
client that disconnects, streamed or not, cancels its search task. A failing search is a
500 with an error id (the details go to the log), never the service's end.
"""

# No ``from __future__ import annotations``: FastAPI reads the handlers' annotations (the
# locally imported ``Request``) at runtime.
import asyncio
import hmac
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from testtime.api.engine import Outcome, TTSEngine
from testtime.api.options import RequestError, ServiceConfig, request_config
from testtime.api.progress import Progress
from testtime.api.responses import completion_body, error_body, new_id
from testtime.api.schemas import parse_body
from testtime.api.streaming import search_error, sse_events
from testtime.config import RunConfig
from testtime.policy.base import Policy
from testtime.scoring.base import StepScorer
from testtime.scoring.service.protocol import require
from testtime.search import METHODS
from testtime.selection import RULES

#: Seconds a client refused for load is told to wait.
RETRY_AFTER_S = 1
#: How often a non-streamed request checks whether its client is still there.
DISCONNECT_POLL_S = 0.25


def create_app(config: RunConfig, service: ServiceConfig, *, policy: Policy | None = None,
               scorer: StepScorer | None = None) -> Any:
    """The application; its engine is built on the server's event loop at startup (from
    ``config``, the run config ``testtime run`` would build with the service's options) and
    closed at shutdown."""
    require("fastapi")
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException

    admitted = 0  # searches accepted and not yet answered (checked and counted without await)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with TTSEngine.open(config, service, policy=policy, scorer=scorer) as engine:
            app.state.engine = engine
            app.state.loop = asyncio.get_running_loop()  # BackgroundService.call runs here
            yield

    app = FastAPI(title="testtime test-time scaling", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)

    def error(exc: RequestError, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(error_body(str(exc), exc.type, exc.param, exc.code),
                            status_code=exc.status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error(RequestError(exc.status_code, str(exc.detail), None, "not_found"
                                  if exc.status_code == 404 else None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(RequestError(422, str(exc), None, "invalid_value"))

    def check_key(request: Request) -> None:
        if service.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if not (scheme.lower() == "bearer" and hmac.compare_digest(
                token.strip().encode(), service.api_key.encode())):
            raise RequestError(401, "missing or wrong API key (Authorization: Bearer <key>)",
                               None, "invalid_api_key", "authentication_error")

    async def read_body(request: Request) -> bytes:
        limit = service.max_request_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestError(413, f"body of {declared} bytes exceeds the limit of {limit} "
                                    f"(--max-request-bytes)", None, "body_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"body exceeds the limit of {limit} bytes "
                                        f"(--max-request-bytes)", None, "body_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    @app.get("/health")
    async def health(request: Request) -> Any:
        engine: TTSEngine = request.app.state.engine
        return {"status": "ok", "in_flight": engine.in_flight, "started": engine.started,
                "finished": engine.finished, "cancelled": engine.cancelled,
                "failed": engine.failed}

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        try:
            check_key(request)
        except RequestError as exc:
            return error(exc)
        engine: TTSEngine = request.app.state.engine
        base = engine.base_config
        about = {"policy": base.policy, "prm": base.prm, "defaults": service.defaults(),
                 "methods": [*(m for m in METHODS if m != "adaptive"), "optimal"],
                 "rules": [r for r in RULES if r != "oracle"],
                 "shorthand": "tts/METHOD[/nN][/mM][/bB][/seedS][/RULE]"}
        now = int(time.time())
        ids = ["tts", *(f"tts/{m}" for m in about["methods"])]
        return {"object": "list",
                "data": [{"id": i, "object": "model", "created": now, "owned_by": "testtime",
                          **({"tts": about} if i == "tts" else {})} for i in ids]}

    async def handle(request: Request, kind: Literal["chat", "text"]) -> Any:
        nonlocal admitted
        engine: TTSEngine = request.app.state.engine
        try:
            check_key(request)
            if admitted >= service.max_in_flight:
                raise RequestError(429, f"busy: {admitted} searches in flight "
                                        f"(--max-in-flight {service.max_in_flight}); retry "
                                        f"later", None, "rate_limit_exceeded", "rate_limit_error")
        except RequestError as exc:
            return error(exc, {"Retry-After": str(RETRY_AFTER_S)} if exc.status == 429 else None)
        admitted += 1
        task: asyncio.Task[Outcome] | None = None
        try:
            ask = parse_body(await read_body(request), kind, service.max_problem_chars)
            resolved = request_config(engine.base_config, service, ask.options, seed=ask.seed,
                                      temperature=ask.temperature, top_p=ask.top_p,
                                      max_tokens=ask.max_tokens, choices=ask.choices)
            progress = Progress()
            # The timeout lives in the task itself, so a search ends however its client
            # behaves (even a stream that is never read); its end frees the admission.
            task = asyncio.create_task(asyncio.wait_for(
                engine.search(ask.problem, resolved, ask.choices, progress),
                service.request_timeout_s))
            task.add_done_callback(_finished)
            rid = new_id(ask)
            if ask.stream:
                return StreamingResponse(
                    sse_events(request, task, progress, ask, rid, engine, service),
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            outcome = await _await_search(request, task)
            if outcome is None:  # the client left; nobody reads this
                return error(RequestError(499, "client closed the request", None,
                                          "client_closed"))
            return completion_body(outcome, ask, rid, engine.base_config.prm,
                                   engine.base_config.policy)
        except RequestError as exc:
            return error(exc)
        except Exception as exc:  # noqa: BLE001  (answered; the service goes on)
            return error(search_error(exc))
        finally:
            if task is None:
                admitted -= 1

    def _finished(task: "asyncio.Task[Outcome]") -> None:
        nonlocal admitted
        admitted -= 1
        if not task.cancelled():
            task.exception()  # retrieved: whoever awaits it reports it; no stray log line

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        return await handle(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await handle(request, "text")

    return app


async def _await_search(request: Any, task: "asyncio.Task[Outcome]") -> Outcome | None:
    """The task's outcome (its exception raised); None when the client disconnected first,
    in which case the task is cancelled."""
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                return None
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

"""Server-sent events of a streamed request, in OpenAI's chunk format.

Order: an opening chunk (the assistant role), a progress chunk every
``progress_interval_s`` while the search runs (no text; ``tts.progress``: depth, rounds,
samples and paths finished, tokens so far), then each picked answer's text with its finish
reason, a last chunk with ``usage`` and the ``tts`` extension, and ``data: [DONE]``. A failed
search sends one ``{"error": {...}}`` event (what the ``openai`` client raises as an
``APIError``) and ``[DONE]``. However the stream ends (done, client gone, cancelled), the
search task is cancelled if it still runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from testtime.api.options import RequestError, ServiceConfig
from testtime.api.progress import Progress
from testtime.api.responses import answer_chunks, error_body, first_chunk, progress_chunk
from testtime.api.schemas import Ask
from testtime.policy.base import PromptTooLong

if TYPE_CHECKING:
    from testtime.api.engine import Outcome, TTSEngine

log = logging.getLogger(__name__)

DONE = "data: [DONE]\n\n"


def event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def search_error(exc: BaseException) -> RequestError:
    """The answer to a search that raised: timeouts 504, prompts past the model's context
    400, anything else 500 with an error id (the traceback goes to the log)."""
    if isinstance(exc, TimeoutError):
        return RequestError(504, "the search took longer than the request timeout "
                                 "(--request-timeout)", None, "timeout", "timeout_error")
    if isinstance(exc, PromptTooLong):
        return RequestError(400, str(exc), "messages", "context_length_exceeded")
    ref = uuid.uuid4().hex[:12]
    log.error("search failed (error id %s)", ref, exc_info=exc)
    return RequestError(500, f"the search failed (error id {ref}; the server log has the "
                             f"details)", None, "search_failed", "server_error")


async def sse_events(request: Any, task: asyncio.Task[Outcome], progress: Progress, ask: Ask,
                     rid: str, engine: TTSEngine, service: ServiceConfig) -> AsyncIterator[str]:
    """The event stream of one search (``task``)."""
    start = time.monotonic()
    try:
        yield event(first_chunk(ask, rid))
        while True:
            done, _ = await asyncio.wait({task}, timeout=service.progress_interval_s)
            if done:
                break
            if await request.is_disconnected():
                return
            yield event(progress_chunk(ask, rid, progress, time.monotonic() - start))
        try:
            outcome = task.result()
        except Exception as exc:  # noqa: BLE001  (reported in the stream)
            err = search_error(exc)
            yield event(error_body(str(err), err.type, err.param, err.code))
            yield DONE
            return
        cfg = engine.base_config
        for chunk in answer_chunks(outcome, ask, rid, cfg.prm, cfg.policy):
            yield event(chunk)
        yield DONE
    finally:
        if not task.done():
            task.cancel()

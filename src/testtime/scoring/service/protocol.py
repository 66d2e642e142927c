"""The wire format of ``testtime serve prm``, shared by the server and its client.

``POST /v1/score`` takes ``{"requests": [{"question": str, "steps": [str | step, ...]}, ...]}``
where a step is a string, or an object ``{"text", "num_tokens", "logprob_sum",
"certainty_sum", "truncated"}`` for scorers that read the policy's token statistics. It answers
``{"scores": [[float, ...], ...], "tokens": [int, ...], "scored_tokens": int, "cached":
[int, ...]}``: ``tokens`` is what the scorer read per request and ``cached`` how many of those
its KV store held (optional, 0 when absent), so a client bills exactly what the in-process
scorer would; ``"unread": [int, ...]`` (optional) the trailing steps of each path past the
PRM's context, whose scores repeat the last step it read.
``GET /v1/info`` answers ``{"name", "params": {"total", "non_embedding"} | null,
"max_input_tokens", "max_request_bytes", "max_steps"}``; ``GET /health`` ``{"status": "ok"}``.
Errors answer ``{"error": message}`` with a 4xx naming the field or limit, or a 5xx whose
message never carries internal exception text.
"""

from __future__ import annotations

import importlib
from typing import Any

from testtime.types import ScoreRequest, Step

#: Environment variable holding the API key, read by both ``serve prm`` and the client.
API_KEY_ENV = "TESTTIME_PRM_API_KEY"
#: Largest accepted body. A beam-search step of 256 paths of 8k tokens is ~8 MB of JSON.
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
#: Most steps in one request (search methods stop at ``max_depth``, 40 by default).
DEFAULT_MAX_STEPS = 1024
#: Validation errors listed in one 422 answer.
MAX_ERRORS_SHOWN = 5


def require(module: str) -> Any:
    """Import a module of the ``serve`` extra, or say how to install it."""
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


def wire_request(request: ScoreRequest) -> dict[str, Any]:
    """The JSON form of a request; steps without token statistics are plain strings."""
    return {"question": request.question, "steps": [_wire_step(s) for s in request.steps]}


def _wire_step(step: Step) -> str | dict[str, Any]:
    if (step.num_tokens == 0 and step.logprob_sum is None and step.certainty_sum is None
            and not step.truncated):
        return step.text
    return {"text": step.text, "num_tokens": step.num_tokens, "logprob_sum": step.logprob_sum,
            "certainty_sum": step.certainty_sum, "truncated": step.truncated}


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


def parse_score_body(raw: bytes, max_steps: int) -> list[ScoreRequest]:
    """Validate a ``/v1/score`` body into score requests, or raise :class:`BadRequest`."""
    from pydantic import ValidationError

    if not raw.strip():
        raise BadRequest(400, 'empty body: expected JSON {"requests": [{"question": ..., '
                              '"steps": [...]}]}')
    try:
        body = _wire_models().model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise BadRequest(400, f"invalid JSON: {errors[0]['msg']}") from None
        shown = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in errors[:MAX_ERRORS_SHOWN]
        )
        more = (f" (+{len(errors) - MAX_ERRORS_SHOWN} more)"
                if len(errors) > MAX_ERRORS_SHOWN else "")
        raise BadRequest(422, f"invalid request: {shown}{more}") from None
    out: list[ScoreRequest] = []
    for i, req in enumerate(body.requests):
        if len(req.steps) > max_steps:
            raise BadRequest(413, f"requests.{i}.steps: {len(req.steps)} steps exceed the "
                                  f"limit of {max_steps} (--max-steps)")
        steps = tuple(
            Step(text=s) if isinstance(s, str) else Step(
                text=s.text, num_tokens=s.num_tokens, logprob_sum=s.logprob_sum,
                certainty_sum=s.certainty_sum, truncated=s.truncated)
            for s in req.steps
        )
        out.append(ScoreRequest(req.question, steps))
    return out

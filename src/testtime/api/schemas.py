"""Request bodies of the OpenAI-compatible endpoints (pydantic), and what a request asks for.

Only the fields the service reads are declared; other OpenAI fields (``user``,
``stream_options``, ``logprobs``, ...) are accepted and ignored, so the official client works
unchanged. :func:`parse_body` turns raw bytes into a :class:`Ask` or raises
:class:`~testtime.api.options.RequestError`: 400 for a body that is not a JSON object, 422
naming the first invalid field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from testtime.api.options import RequestError, TTSOptions, tts_field


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None
    """A string, or OpenAI content parts (``{"type": "text", "text": ...}``)."""

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    n: int = 1
    """Choices returned: the best ``n`` distinct answers (at most the search's budget)."""
    stream: bool = False
    seed: int | None = None
    temperature: float | None = Field(default=None, ge=0.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = None
    """Token limit of one path (``max_path_tokens``)."""
    tts: dict[str, Any] | None = None


class ChatBody(_Common):
    messages: list[MessageIn] = Field(min_length=1)
    max_completion_tokens: int | None = None


class CompletionBody(_Common):
    prompt: str | list[str]


@dataclass(frozen=True)
class Ask:
    """What a request asks for, whichever endpoint it came through."""

    kind: Literal["chat", "text"]
    model: str
    problem: str
    choices: int
    stream: bool
    seed: int | None
    temperature: float | None
    top_p: float | None
    max_tokens: int | None
    options: TTSOptions


def _field_error(exc: ValidationError) -> RequestError:
    err = exc.errors()[0]
    param = ".".join(str(x) for x in err["loc"]) or None
    what = "is required" if err["type"] == "missing" else err["msg"]
    return RequestError(422, f"{param}: {what}", param,
                        "missing_field" if err["type"] == "missing" else "invalid_value")


def parse_body(raw: bytes, kind: Literal["chat", "text"], max_problem_chars: int) -> Ask:
    """The request in ``raw``; raises :class:`RequestError` (400 bad JSON, 422 bad field)."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(400, f"the body is not valid JSON: {exc}", None,
                           "invalid_json") from None
    if not isinstance(data, dict):
        raise RequestError(400, f"the body must be a JSON object, not {type(data).__name__}",
                           None, "invalid_json")
    try:
        body: ChatBody | CompletionBody = (ChatBody if kind == "chat" else CompletionBody
                                           ).model_validate(data)
    except ValidationError as exc:
        raise _field_error(exc) from None
    if isinstance(body, ChatBody):
        users = [m for m in body.messages if m.role == "user"]
        if not users:
            raise RequestError(422, "messages: no message with role 'user' (its content is "
                                    "the problem)", "messages", "missing_field")
        problem, param = users[-1].text(), "messages"
        limit = body.max_tokens if body.max_tokens is not None else body.max_completion_tokens
    else:
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            raise RequestError(422, f"prompt: one prompt per request, got {len(prompts)}",
                               "prompt", "invalid_value")
        problem, param, limit = prompts[0], "prompt", body.max_tokens
    if not problem.strip():
        raise RequestError(422, f"{param}: the problem text is empty", param, "invalid_value")
    if len(problem) > max_problem_chars:
        raise RequestError(422, f"{param}: the problem has {len(problem)} characters (limit "
                                f"{max_problem_chars})", param, "invalid_value")
    return Ask(kind, body.model, problem, body.n, body.stream, body.seed, body.temperature,
               body.top_p, limit, tts_field(body.model, body.tts))

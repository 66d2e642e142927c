"""What OpenAI-compatible servers say, read: ``/v1/models`` entries, refusals, streamed lines.

* :class:`ServedModel`: one server's ``/v1/models`` entry for the model (vLLM adds
  ``max_model_len`` and ``root``, the model it loaded behind a ``--served-model-name``).
* :func:`context_error`: whether an HTTP refusal says the request does not fit the model's
  context (in the words of vLLM, OpenAI and llama.cpp), as a :class:`ContextLengthError`
  holding the limit and the prompt length when the message states them.
* :func:`sse_data`: one server-sent ``data:`` line of a streamed completion.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar


class OpenAIServerError(RuntimeError):
    """A server failed, refused the request, or could not be reached (the message names it)."""


class ContextLengthError(OpenAIServerError):
    """The server refused a request because prompt + ``max_tokens`` exceed its context.

    ``limit`` and ``prompt_tokens`` are the context length and the prompt's token count when
    the message states them (vLLM's and OpenAI's do), else None.
    """

    def __init__(self, message: str, limit: int | None, prompt_tokens: int | None) -> None:
        super().__init__(message)
        self.limit = limit
        self.prompt_tokens = prompt_tokens


#: Messages of context-length refusals: vLLM ("max_tokens=8192 cannot be greater than
#: max_model_len=1024", "This model's maximum context length is 1024 tokens. However, you
#: requested ...", "The prompt (total length 1100) is too long to fit into the model", "Input
#: prompt (1100 tokens) is too long"), OpenAI (``context_length_exceeded``), llama.cpp ("the
#: request exceeds the available context size").
CONTEXT_ERROR = re.compile(
    r"max_model_len|maximum context length|context_length_exceeded|max_total_tokens"
    r"|(prompt|input)\b.{0,60}\btoo long|exceeds? (the )?(available |maximum )?context",
    re.IGNORECASE | re.DOTALL)
#: Where those messages state the limit and the prompt's length.
_LIMIT = re.compile(r"max_model_len=(?:max_total_tokens=)?(\d+)|maximum context length is (\d+)"
                    r"|context length (\d+)")
_PROMPT = re.compile(r"(\d+) in the messages|request has (\d+) input tokens"
                     r"|prompt contains (?:at least )?(\d+) (?:input )?tokens|total length (\d+)"
                     r"|input prompt \((\d+) tokens\)", re.IGNORECASE)
#: Statuses a context-length refusal comes with (vLLM and OpenAI: 400).
_CONTEXT_STATUSES = frozenset({400, 413, 422})


def _first_int(pattern: re.Pattern[str], text: str) -> int | None:
    m = pattern.search(text)
    return None if m is None else int(next(g for g in m.groups() if g is not None))


def context_error(status: int, text: str, where: str) -> ContextLengthError | None:
    """A :class:`ContextLengthError` when ``status``/``text`` is a context-length refusal."""
    if status not in _CONTEXT_STATUSES or not CONTEXT_ERROR.search(text):
        return None
    return ContextLengthError(f"{where} refused the request as too long for the model's "
                              f"context: HTTP {status}: {text[:300]}",
                              _first_int(_LIMIT, text), _first_int(_PROMPT, text))


@dataclass(frozen=True)
class ServedModel:
    """What one server's ``/v1/models`` says of the model."""

    url: str
    """The server's base URL."""
    family: str
    """``owned_by`` (``vllm``, ``llamacpp``, ...)."""
    max_model_len: int | None
    """Context length (prompt + completion) the server enforces, when it says (vLLM)."""
    root: str | None
    """The model the server loaded (a path on the server or a Hub id), when it says (vLLM)."""


class StreamReader(Protocol):
    """Consumes the chunks of one streamed completion."""

    def feed(self, chunk: dict[str, Any]) -> bool:
        """Take one chunk; True ends the request now (the rest is not read)."""
        ...


Reader = TypeVar("Reader", bound=StreamReader)


#: What :func:`sse_data` returns for the stream's ``[DONE]`` line.
DONE: dict[str, Any] = {}


def sse_data(line: str, url: str) -> dict[str, Any] | None:
    """The JSON of one server-sent ``data:`` line (``DONE`` for ``[DONE]``), None for other
    lines; an error the server streams instead of a chunk raises."""
    if not line.startswith("data:"):
        return None
    data = line[len("data:"):].strip()
    if data == "[DONE]":
        return DONE
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError:
        chunk = None
    if not isinstance(chunk, dict):
        raise OpenAIServerError(f"{url}/completions streamed {data[:300]!r}, not a JSON object")
    err = chunk.get("error")
    if err is not None or chunk.get("object") == "error":
        # vLLM streams a failure as one data line: {"error": {...}} (older: {"object": "error"})
        detail = json.dumps(err if err is not None else chunk)[:300]
        ctx = context_error(400, detail, f"{url}/completions")
        raise ctx or OpenAIServerError(f"{url}/completions failed while streaming: {detail}")
    return chunk

"""OpenAI-format bodies: completions, stream chunks, errors, and the ``tts`` extension.

``usage`` bills the whole search: ``prompt_tokens`` and ``completion_tokens`` are the
record's compute (every sample drawn, every prompt billed per sample, as ``testtime run``
records them), not the one path returned.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from testtime.api.engine import Outcome, candidate_view
from testtime.api.progress import Progress
from testtime.api.schemas import Ask


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def new_id(ask: Ask) -> str:
    return ("chatcmpl-" if ask.kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]


def usage(outcome: Outcome) -> dict[str, int]:
    c = outcome.compute
    return {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
            "total_tokens": c.prompt_tokens + c.completion_tokens}


def tts_extension(outcome: Outcome, ask: Ask, prm: str, policy: str) -> dict[str, Any]:
    """The ``tts`` object of a response: what was searched, picked and spent."""
    r, c = outcome.record, outcome.compute
    pick = outcome.picks[0]
    cfg_search = {"method": outcome.method, "search_method": r.method, "n": r.n,
                  "paths": r.paths, "semantics": r.semantics, "rule": outcome.rule}
    out: dict[str, Any] = {
        **cfg_search,
        "problem_id": r.id,
        "answer": None if pick is None else r.candidates[pick].answer,
        "answers": [None if i is None else r.candidates[i].answer for i in outcome.picks],
        "selected": outcome.picks,
        "votes": outcome.votes(),
        "policy": policy,
        "prm": prm,
        "prm_tokens": c.scored_tokens,
        "prm_cached_tokens": c.scored_cached_tokens,
        "policy_flops": c.policy_flops,
        "prm_flops": c.prm_flops,
        "compute": c.model_dump(),
        "wall_time_s": round(outcome.wall_s, 4),
        "info": r.info,
    }
    if ask.options.return_candidates:
        out["candidates"] = candidate_view(r)
    if ask.options.return_tree:
        out["tree"] = [t.model_dump() for t in r.tree]
    return out


def _choice_text(outcome: Outcome, i: int | None) -> tuple[str, str]:
    """(text, finish_reason) of a pick; no pick (no candidate answered): the first path."""
    cands = outcome.record.candidates
    if not cands:
        return "", "stop"
    c = cands[0] if i is None else cands[i]
    return c.text, "length" if c.finish_reason == "length" else "stop"


def completion_body(outcome: Outcome, ask: Ask, rid: str, prm: str,
                    policy: str) -> dict[str, Any]:
    """A ``chat.completion`` or ``text_completion`` with one choice per pick."""
    choices = []
    for k, i in enumerate(outcome.picks):
        text, finish = _choice_text(outcome, i)
        choice: dict[str, Any] = {"index": k, "finish_reason": finish, "logprobs": None}
        if ask.kind == "chat":
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choices.append(choice)
    return {"id": rid, "object": "chat.completion" if ask.kind == "chat" else "text_completion",
            "created": int(time.time()), "model": ask.model, "choices": choices,
            "usage": usage(outcome), "system_fingerprint": None,
            "tts": tts_extension(outcome, ask, prm, policy)}


def _chunk(ask: Ask, rid: str, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"id": rid,
            "object": "chat.completion.chunk" if ask.kind == "chat" else "text_completion",
            "created": int(time.time()), "model": ask.model, "system_fingerprint": None,
            "choices": choices, **extra}


def _delta(ask: Ask, index: int, text: str | None, finish: str | None,
           role: bool = False) -> dict[str, Any]:
    if ask.kind == "chat":
        delta: dict[str, Any] = {} if text is None else {"content": text}
        if role:
            delta["role"] = "assistant"
        return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
    return {"index": index, "text": text or "", "finish_reason": finish, "logprobs": None}


def first_chunk(ask: Ask, rid: str) -> dict[str, Any]:
    """The opening chunk (the assistant role, no text yet)."""
    return _chunk(ask, rid, [_delta(ask, 0, "", None, role=True)])


def progress_chunk(ask: Ask, rid: str, progress: Progress, elapsed_s: float) -> dict[str, Any]:
    """A chunk without text whose ``tts.progress`` says how far the search is."""
    return _chunk(ask, rid, [_delta(ask, 0, None, None)],
                  tts={"progress": {**progress.as_dict(), "elapsed_s": round(elapsed_s, 3)}})


def answer_chunks(outcome: Outcome, ask: Ask, rid: str, prm: str,
                  policy: str) -> list[dict[str, Any]]:
    """Each pick's text with its finish reason, then a chunk with ``usage`` and ``tts``."""
    out = []
    for k, i in enumerate(outcome.picks):
        text, finish = _choice_text(outcome, i)
        out.append(_chunk(ask, rid, [_delta(ask, k, text, finish, role=k > 0)]))
    out.append(_chunk(ask, rid, [], usage=usage(outcome),
                      tts=tts_extension(outcome, ask, prm, policy)))
    return out

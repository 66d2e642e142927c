"""What OpenAI-compatible servers answer, as completions: plain choices and streamed rows.

:func:`to_completion` maps one ``/v1/completions`` choice (text, token pieces, their
log-probabilities and top-k alternatives, finish and stop reasons, in the shapes vLLM,
llama.cpp and others send) onto the stop/finish contract of ``build_completion``.

Online DeepConf: :class:`RowStream` is the reader
:meth:`~testtime.policy.openai_http.ServerPool.stream` feeds with the server-sent chunks of one
request (``n=1``, ``logprobs=k``). It gathers the text, the token pieces, their log-probabilities
and top-k alternatives, computes each token's DeepConf confidence as it arrives, and asks to end
the stream right after the first token whose group confidence (the mean over the row's last
``window`` tokens, checked once ``window`` tokens exist) is strictly below the threshold
(:class:`~testtime.types.ConfidenceStop`). :meth:`RowStream.choice` then gives what was received
as one plain choice, so it is mapped exactly as a plain answer is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from testtime.confidence import token_confidence
from testtime.policy.completion import build_completion
from testtime.policy.hf import token_pieces
from testtime.types import Completion, ConfidenceStop, SamplingParams


def to_completion(choice: dict[str, Any], n_prompt: int, params: SamplingParams,
                  tokenizer: Any, k: int) -> Completion:
    """Map one ``/v1/completions`` choice onto the stop/finish contract of
    ``build_completion`` (``tokenizer`` re-tokenises a text without a usable token list;
    ``k``: the top log-probabilities asked per token)."""
    text = str(choice.get("text") or "")
    lp = choice.get("logprobs") or {}
    tokens = [str(t) for t in (lp.get("tokens") or [])]
    logprobs = [float(x) if x is not None else 0.0 for x in (lp.get("token_logprobs") or [])]
    confidences = confidences_of(lp.get("top_logprobs"), len(tokens), k)
    pieces = covering(tokens, text, params.stop) if len(logprobs) == len(tokens) else None
    if pieces is not None:
        logprobs, confidences = logprobs[: len(pieces)], confidences[: len(pieces)]
    else:  # no usable token list (or bytes-escaped pieces): re-tokenise the text
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        pieces = token_pieces(tokenizer, ids)
        logprobs = logprobs if len(logprobs) == len(pieces) else []
        confidences = confidences if len(confidences) == len(pieces) else []
    finish = choice.get("finish_reason")
    stop_reason = choice.get("stop_reason")
    joined = "".join(pieces)
    has_stop = any(s and s in joined for s in params.stop)
    if finish == "stop" and not has_stop and isinstance(stop_reason, str) and stop_reason:
        # The server cut the stop string off the text and its tokens: put it back.
        pieces, logprobs, confidences = [*pieces, stop_reason], [], []
        has_stop = True
    return build_completion(
        pieces,
        prompt_tokens=n_prompt,
        stop=params.stop,
        ended_with_eos=finish == "stop" and not has_stop,
        logprobs=logprobs,
        confidences=confidences,
    )


def token_confidence_of(top: Any, k: int) -> float | None:
    """DeepConf confidence of one token from its ``top_logprobs`` dict, or None when the
    server sent too few alternatives (fewer than half of the ``k`` asked).

    vLLM keys the alternatives by their decoded text, so tokens that decode alike (byte
    pieces of one character all decode to ``""``) collapse into one entry: a token may come
    with 19 of 20 (seen on vLLM 0.32). The mean of those is DeepConf's to a small error; a
    server that honours far fewer than ``k`` gives no confidence rather than another one.
    """
    if not k or not isinstance(top, dict) or 2 * len(top) < k:
        return None
    return token_confidence([float(v) for v in top.values()])


def confidences_of(top: Any, n: int, k: int) -> list[float]:
    """DeepConf token confidences from ``top_logprobs`` (one dict per token), or none
    when some token came without enough alternatives (:func:`token_confidence_of`)."""
    if not isinstance(top, list) or len(top) != n:
        return []
    out = [token_confidence_of(d, k) for d in top]
    return [] if any(c is None for c in out) else [c for c in out if c is not None]


def empty_completion(n_prompt: int) -> Completion:
    """A row that got no tokens because the context is full: ``length``, zero tokens."""
    return build_completion([], prompt_tokens=n_prompt, stop=(), ended_with_eos=False)


def covering(tokens: list[str], text: str, stop: Sequence[str]) -> list[str] | None:
    """The server's token pieces that make up ``text``, or None when they do not match it.

    Pieces past ``text`` are kept only when they hold a stop string (the server cut it off);
    others (an end-of-turn token's text) are dropped.
    """
    joined = "".join(tokens)
    if not tokens or not joined.startswith(text):
        return None
    if any(s and s in joined[max(0, len(text) - len(s)) :] for s in stop):
        return tokens
    pos = 0
    for i, piece in enumerate(tokens):
        if pos == len(text):
            return tokens[:i]
        pos += len(piece)
    return tokens if pos == len(text) else None


class RowStream:
    """Collects one streamed row; ``feed`` returns True when the row must stop now."""

    def __init__(self, stop: ConfidenceStop, k: int) -> None:
        """``k``: the top log-probabilities asked per token (a token confidence needs them)."""
        self.stop = stop
        self.k = k
        self.text: list[str] = []
        self.tokens: list[str] = []
        self.logprobs: list[float | None] = []
        self.top: list[dict[str, float]] = []
        self.confidences: list[float] = []
        self.finish_reason: str | None = None
        self.stop_reason: Any = None
        self.stopped = False
        """The row was ended on low confidence (not by the server)."""
        self.missing_top = False
        """Some token came with too few alternatives: the row cannot be checked."""
        self._window_sum = 0.0

    def feed(self, chunk: dict[str, Any]) -> bool:
        for ch in chunk.get("choices") or ():  # a usage-only chunk has none
            lp = ch.get("logprobs") or {}
            tokens = lp.get("tokens") or []
            token_lps = lp.get("token_logprobs") or []
            tops = lp.get("top_logprobs") or []
            text = str(ch.get("text") or "")
            last = len(tokens) - 1
            final = ch.get("finish_reason") is not None
            for i, token in enumerate(tokens):
                self.tokens.append(str(token))
                self.logprobs.append(token_lps[i] if i < len(token_lps) else None)
                top = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
                self.top.append(top)
                # the server ended the row at its own last token: nothing left to stop
                if self._below(top) and not (final and i == last):
                    self.stopped = True
                    # a chunk of several tokens: its text runs past this one
                    self.text.append(text if i == last else "".join(map(str, tokens[: i + 1])))
                    return True
            self.text.append(text)
            if final:
                self.finish_reason = str(ch.get("finish_reason"))
                self.stop_reason = ch.get("stop_reason")
        return False

    def _below(self, top: dict[str, float]) -> bool:
        """Take the next token's confidence; whether its group confidence is below the
        threshold (never once a token lacked its top-k)."""
        confidence = None if self.missing_top else token_confidence_of(top, self.k)
        if confidence is None:
            self.missing_top = True
            return False
        self.confidences.append(confidence)
        window = self.stop.window
        self._window_sum += self.confidences[-1]
        if len(self.confidences) > window:
            self._window_sum -= self.confidences[-window - 1]
        return (len(self.confidences) >= window
                and self._window_sum / window < self.stop.threshold)

    def choice(self) -> dict[str, Any]:
        """What was received, as one non-streamed ``/v1/completions`` choice (a row stopped
        here finishes as ``length``: the caller marks it ``confidence``)."""
        text = "".join(self.text)
        if self.stopped and "".join(self.tokens).startswith(text):
            # vLLM holds back text that may start a stop string; the tokens are what came
            text = "".join(self.tokens)
        return {
            "text": text,
            "finish_reason": "length" if self.stopped else self.finish_reason,
            "stop_reason": None if self.stopped else self.stop_reason,
            "logprobs": {"tokens": self.tokens, "token_logprobs": self.logprobs,
                         "top_logprobs": self.top},
        }

"""Text of the transformers-tokenizer backends: a chat and a partial answer rendered as one
prompt with the model's chat template, and the text each generated token contributes.

Shared by every backend that renders prompts client-side with a Hugging Face tokenizer
(``hf``, ``vllm``, ``llamacpp``, ``openai``); :mod:`testtime.policy.hf` re-exports both names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from testtime.types import ChatMessage, PrefixRendering

#: Tokens decoded together when recovering one token's text; enough context for byte-level
#: BPE and SentencePiece merges to render the same as in the full decode.
_DECODE_WINDOW = 6


#: Llama 3.1+ chat templates print "Today Date: {date_string}" in the system turn and default it
#: to the day the prompt is rendered; a fixed date (the template's own fallback) keeps prompts,
#: and so results, reproducible. Templates without the variable ignore it.
TEMPLATE_DATE = "26 Jul 2024"


def render_prompt(tokenizer: Any, messages: Sequence[ChatMessage], prefix: str,
                  rendering: PrefixRendering = "generation_prompt") -> str:
    """The prompt text of a chat and a partial answer (see :data:`PrefixRendering`).

    ``generation_prompt``: the template with an open assistant turn, then ``prefix`` verbatim.
    ``assistant_message`` (the paper's code, ``text_generation.py``): the template renders
    ``prefix`` as a final assistant message and its end-of-turn token (and the newline after
    it) is cut off; whitespace the template trimmed from the end of ``prefix`` is put back (the
    paper's code re-appends the blank line for Llama 3, whose template trims messages).
    Templates that render no end-of-turn token fall back to ``generation_prompt``.
    """
    chat = [{"role": m.role, "content": m.content} for m in messages]
    if not getattr(tokenizer, "chat_template", None):  # base models: a plain transcript
        text = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in chat)
        return text + "Assistant: " + prefix
    if rendering == "assistant_message":
        eos = getattr(tokenizer, "eos_token", None)
        text = str(tokenizer.apply_chat_template(
            [*chat, {"role": "assistant", "content": prefix}], tokenize=False,
            add_generation_prompt=False, date_string=TEMPLATE_DATE))
        for end in ((eos + "\n", eos) if eos else ()):
            if text.endswith(end):
                text = text[: -len(end)]
                tail = prefix[len(prefix.rstrip()):]
                if tail and not text.endswith(tail):
                    text = text.rstrip() + tail
                return text
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True,
                                         date_string=TEMPLATE_DATE)
    return str(text) + prefix


def token_pieces(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Text contributed by each token; the pieces concatenate to ``decode(ids)``."""
    if not ids:
        return []
    full = tokenizer.decode(ids)
    windows = [list(ids[max(0, i - _DECODE_WINDOW) : i + 1]) for i in range(len(ids))]
    with_tok = tokenizer.batch_decode(windows)
    without = tokenizer.batch_decode([w[:-1] for w in windows])
    pieces = [a.removeprefix(b) for a, b in zip(with_tok, without)]
    if "".join(pieces) == full:
        return pieces
    # Rare: a multi-byte character split across tokens. Exact but quadratic fallback: each
    # token gets the text its prefix decode adds, once that decode is complete.
    prefixes = tokenizer.batch_decode([list(ids[: i + 1]) for i in range(len(ids))])
    out, done = [], 0
    for text in prefixes:
        if text.endswith("\ufffd") or not text.startswith(full[:done]):
            out.append("")
            continue
        out.append(text[done:])
        done = len(text)
    out[-1] += full[sum(map(len, out)) :]
    return out

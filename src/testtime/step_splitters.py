"""Step splitters: how a solution's text becomes the steps a PRM scores and searches rank.

One splitter per run (``SearchConfig.step_splitter``, ``--step-splitter``):

* ``blank_lines`` (default; the paper's ``"\\n\\n"`` split, :func:`testtime.steps.split_text`):
  every blank-line-separated piece is a step.
* ``min_length``: the blank-line pieces, each step growing by the next piece until it holds at
  least ``min_chars`` characters (a short last piece joins the step before it).
* ``thinking`` (long-CoT / R1-style traces): inside the thought (the text up to and including
  ``</think>``), a new step starts only at a blank-line piece that opens with a reasoning
  marker (:data:`THINK_MARKERS`: "Wait", "Alternatively", "Let me verify", "Hmm",
  "But wait", ...) and only once the current step holds ``min_chars`` characters; a step
  still shorter than that at the end of the thought joins the one before it. The text after
  ``</think>`` (the written answer) is the final step. A text without ``</think>`` is all
  thought.

Every splitter returns pieces that concatenate to the text, so token attribution
(:func:`testtime.steps.completion_steps`) stays exact.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from testtime.steps import split_text

#: Where an R1-style model's thought ends.
THINK_END = "</think>"
#: Paragraph openings that mark a new line of reasoning in thinking traces (as thinkbooster's
#: step detector and the long-CoT literature use them).
THINK_MARKERS: tuple[str, ...] = (
    "Wait", "But wait", "Alternatively", "Let me verify", "Let me check", "Let me double-check",
    "Hmm", "Hold on", "Actually", "On second thought", "Another approach", "Let me try",
    "Let me think again", "Let me re-examine", "Let me recheck", "Now", "So the answer",
    "Therefore", "To verify", "Double-check", "Okay, so", "First", "Next", "Then",
)
_MARKER_RE = re.compile(r"\s*(?:" + "|".join(re.escape(m) for m in THINK_MARKERS) + r")\b")
#: The splitter names ``SearchConfig.step_splitter`` accepts.
SPLITTERS = ("blank_lines", "min_length", "thinking")

Splitter = Callable[[str], list[str]]


def merge_short(pieces: list[str], min_chars: int) -> list[str]:
    """Grow each step by the next piece until it has ``min_chars`` characters; a short last
    step joins the one before it."""
    out: list[str] = []
    for piece in pieces:
        if out and len(out[-1]) < min_chars:
            out[-1] += piece
        else:
            out.append(piece)
    if len(out) > 1 and len(out[-1]) < min_chars:
        last = out.pop()
        out[-1] += last
    return out


def split_thinking(text: str, min_chars: int) -> list[str]:
    """The ``thinking`` splitter (see the module docstring)."""
    end = text.find(THINK_END)
    if end < 0:
        thought, answer = text, ""
    else:
        cut = end + len(THINK_END)
        while cut < len(text) and text[cut] in " \n":
            cut += 1
        thought, answer = text[:cut], text[cut:]
    steps: list[str] = []
    for piece in split_text(thought):
        if steps and (len(steps[-1]) < min_chars or not _MARKER_RE.match(piece)):
            steps[-1] += piece
        else:
            steps.append(piece)
    if len(steps) > 1 and len(steps[-1]) < min_chars:
        last = steps.pop()
        steps[-1] += last
    if answer.strip() or (answer and not steps):
        steps.append(answer)
    elif answer:
        steps[-1] += answer
    return steps


def get_splitter(name: str = "blank_lines", min_chars: int = 400) -> Splitter:
    """The splitter called ``name`` (one of :data:`SPLITTERS`)."""
    if min_chars < 1:
        raise ValueError(f"step splitter min_chars must be >= 1, got {min_chars}")
    if name == "blank_lines":
        return split_text
    if name == "min_length":
        return lambda text: merge_short(split_text(text), min_chars)
    if name == "thinking":
        return lambda text: split_thinking(text, min_chars)
    raise ValueError(f"unknown step splitter {name!r}; known: {', '.join(SPLITTERS)}")

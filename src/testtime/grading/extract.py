"""Pull the final answer out of a model's solution text.

Contract: :func:`extract_answer` never raises and runs in time linear in the input length, for any
``str`` (100k characters, 10k levels of nested braces, control characters, unclosed boxes). It
returns the answer as a LaTeX/plain string, or ``None`` when the text contains nothing that looks
like an answer. Rules, first that applies wins:

1. ``boxed``: the content of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` (braces matched,
   ``\\{`` and ``\\}`` are literal), or ``\\boxed 5``. A box nested in a box counts as later.
2. ``phrase``: the last "final answer is X", "answer: X", "the answer is X" (Llama's
   "Therefore, the final answer is: $X$. I hope it is correct." included) or "#### X".
3. ``last_number``: the last number in the text.
"""

from __future__ import annotations

import re
from typing import Literal

AnswerSource = Literal["boxed", "phrase", "last_number"]
"""Which rule of :func:`extract_answer_with_source` produced the answer."""

#: Longest answer taken from a phrase rule; a real final answer is far shorter.
MAX_PHRASE_ANSWER_CHARS = 300

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# A backslash escapes the next character (so ``\{``, ``\}`` and ``\\`` are not braces).
_BRACE_TOKEN_RE = re.compile(r"\\.|[{}]", re.DOTALL)
_UNBRACED_BOX_ARG_RE = re.compile(r"[ \t]+([^\s${}]+)")
# The answer itself sits in a lookahead so that a later phrase on the same line still matches.
# Possessive quantifiers (*+, ++) and (?<!\s) guards keep every pattern here linear: without
# them "answer" followed by 100k spaces backtracks for minutes.
_TAIL = rf"[^\n]{{1,{MAX_PHRASE_ANSWER_CHARS}}}"
_PHRASE_RE = re.compile(
    r"(?:final\s++answer\s++is\s*+:?|(?<![A-Za-z])answer\s*+(?:is)?\s*+(?:\*\*)?\s*+:"
    r"|(?<![A-Za-z])answer\s++is)"
    rf"(?:\*\*)?[ \t]*+(?=(?P<ans>{_TAIL}))|^[ \t]*+####[ \t]*+(?=(?P<hash>{_TAIL}))",
    re.IGNORECASE | re.MULTILINE,
)
# A minus sign right after a word or bracket is subtraction ("x-5", "2023-2024"), not a sign.
_NUMBER_RE = re.compile(r"(?:(?<![\w)\]}])-)?(?:\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)")
_NUMBER_THEN_WORDS_RE = re.compile(r"(-?[\d.,/]*\d)\s+[A-Za-z]")
_SENTENCE_END_RE = re.compile(r"\.(?:\s|$)|(?<!\s)\s++I hope\b|;")
_WRAPPER_RE = re.compile(r"^\\(?:text|textbf|textrm|mathrm|mbox)\s*\{")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def extract_answer(text: str) -> str | None:
    """The final answer in ``text`` (see the module docstring for the rules), or ``None``."""
    return extract_answer_with_source(text)[0]


def extract_answer_with_source(text: str) -> tuple[str | None, AnswerSource | None]:
    """Like :func:`extract_answer`, also naming the rule that matched (``None`` if none did)."""
    if not isinstance(text, str) or not text:
        return None, None
    text = _CONTROL_RE.sub(" ", text)
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed, "boxed"
    phrase = _last_phrase(text)
    if phrase is not None:
        return phrase, "phrase"
    numbers = None
    for numbers in _NUMBER_RE.finditer(text):
        pass
    if numbers is not None:
        return numbers.group(0), "last_number"
    return None, None


def match_braces(text: str) -> dict[int, int]:
    """Map each ``{`` index in ``text`` to the index of its matching ``}`` (unmatched: absent).

    One pass with an explicit stack, so depth costs nothing and the total is linear.
    """
    stack: list[int] = []
    pairs: dict[int, int] = {}
    for token in _BRACE_TOKEN_RE.finditer(text):
        char = token.group(0)
        if char == "{":
            stack.append(token.start())
        elif char == "}" and stack:
            pairs[stack.pop()] = token.start()
    return pairs


def _last_boxed(text: str) -> str | None:
    starts = [m.end() for m in _BOX_RE.finditer(text)]
    if not starts:
        return None
    pairs = match_braces(text)
    for after in reversed(starts):
        pos = after
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        if pos < len(text) and text[pos] == "{":
            close = pairs.get(pos)
            content = clean_answer(text[pos + 1 : close]) if close is not None else ""
        else:
            arg = _UNBRACED_BOX_ARG_RE.match(text, after)
            content = clean_answer(arg.group(1)) if arg else ""
        if content:
            return content
    return None


def _last_phrase(text: str) -> str | None:
    last = None
    for last in _PHRASE_RE.finditer(text):
        pass
    if last is None:
        return None
    tail = last.group("ans") if last.group("ans") is not None else last.group("hash")
    answer = clean_answer(_trim_tail(tail.strip().strip("*").strip()))
    return answer or None


def _trim_tail(tail: str) -> str:
    """Cut a phrase answer at its math delimiters, or else at the end of its sentence."""
    for opener, closer in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if tail.startswith(opener):
            close_at = tail.find(closer, len(opener))
            return tail[len(opener) : close_at] if close_at != -1 else tail[len(opener) :]
    sentence_end = _SENTENCE_END_RE.search(tail)
    tail = tail[: sentence_end.start()] if sentence_end else tail
    # "the answer is 3.5 since ..." / "answer: 12 apples": keep the number, drop the words.
    number_then_words = _NUMBER_THEN_WORDS_RE.match(tail)
    return number_then_words.group(1) if number_then_words else tail


def clean_answer(answer: str) -> str:
    """Strip what surrounds an answer but is not part of it.

    Removes outer whitespace, ``$...$`` / ``\\(...\\)`` / ``\\[...\\]`` delimiters, a trailing
    period or comma, Markdown bold, and one ``\\text{...}``-like wrapper spanning the whole answer.
    """
    answer = answer.strip()
    for _ in range(3):  # wrappers can stack, e.g. "$\text{Evelyn}$."
        before = answer
        answer = answer.rstrip(" .,;").strip()
        if answer.startswith("**") and answer.endswith("**") and len(answer) > 4:
            answer = answer[2:-2].strip()
        for opener, closer in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if (
                len(answer) >= len(opener) + len(closer)
                and answer.startswith(opener)
                and answer.endswith(closer)
                and not answer.endswith("\\" + closer)
            ):
                answer = answer[len(opener) : -len(closer)].strip()
                break
        wrapper = _WRAPPER_RE.match(answer)
        if wrapper and answer.endswith("}"):
            open_at = wrapper.end() - 1
            if match_braces(answer).get(open_at) == len(answer) - 1:
                answer = answer[open_at + 1 : -1].strip()
        if answer == before:
            break
    return answer


# --- cleaning for grading -------------------------------------------------------------------
# Possessive quantifiers and (?<!\s) guards keep cleaning linear in the input length.
_ANY_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_DFRAC_RE = re.compile(r"\\[dt]frac(?![A-Za-z])")
_EMPTY_SET_RE = re.compile(r"\\varnothing(?![A-Za-z])|\\\{\s*+\\\}")
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right)(?:\.|(?![A-Za-z]))")
_THOUSANDS_SEP_RE = re.compile(r",\s*+\\!\s*+|\{,\}")  # "10,\!080", "10{,}080"
_SPACING_RE = re.compile(r"(?<!\\)\\[!,;: ]|~")
_DEGREE_RE = re.compile(r"\^\s*+\{?\s*+\\circ\s*+\}?|°|\\degree(?![A-Za-z])")
_UNIT_TEXT_RE = re.compile(
    r"(?<=\S)\s*+\\(?:text|mbox|mathrm|textrm|textnormal)\s*+\{\s*+[A-Za-z][A-Za-z .]*+\}"
    r"(?:\s*+\^\s*+\{?\d\}?)?\s*+$"
)
_UNIT_WORD_RE = re.compile(
    r"(?<=[\d}])\s*+(?:degrees?|cents?|dollars?|units?|cm|inches|inch|feet|ft|meters?|miles?"
    r"|hours?|minutes?|seconds?|days?)(?:\^\d)?\s*+$"
)
_PERCENT_RE = re.compile(r"(?<!\s)\s*+(?:\\%|%|\\text\{\s*+percent\s*+\})\s*+$")
_CURRENCY_RE = re.compile(r"^\\?\$\s*")
_VAR_PREFIX_RE = re.compile(r"^[A-Za-z](?:_\{?[A-Za-z0-9]++\}?)?\s*+(?:=|\\in(?![A-Za-z]))\s*+")
_THOUSANDS_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_BASE_RE = re.compile(r"([0-9A-Z]++)_\{?\d++\}?")  # "1011_2", "4210_{5}", "A4_{11}"
_CHOICE_RE = re.compile(r"\(([A-Z])\)")
_SCIENTIFIC_RE = re.compile(r"(-?\d++(?:\.\d++)?)[eE]([+-]?\d++)")
_WHITESPACE_RE = re.compile(r"\s+")
_FRAC_SHORT_RE = re.compile(r"\\frac(\d)(\d)|\\frac\{([^{}]*)\}(\d)|\\frac(\d)\{")
_SQRT_SHORT_RE = re.compile(r"\\sqrt(\d)")
_WORD_RE = re.compile(r"[A-Za-z]{2,}")


def clean_for_parse(answer: str) -> str:
    """Remove what a human grader ignores, keeping the result valid LaTeX for Math-Verify.

    Drops delimiters and wrappers, ``\\left``/``\\right``, spacing commands, degree signs,
    trailing units and percent signs, a leading currency sign, an ``x =`` / ``x \\in`` prefix,
    thousands separators and base subscripts; turns ``(C)`` into ``C`` and ``1e-5`` into
    ``1\\times 10^{-5}``; ``\\dfrac`` becomes ``\\frac`` and ``\\varnothing`` ``\\emptyset``.
    """
    answer = clean_answer(_ANY_CONTROL_RE.sub(" ", answer))
    answer = _DFRAC_RE.sub(r"\\frac", answer)
    answer = _EMPTY_SET_RE.sub(r"\\emptyset", answer)
    answer = _LEFT_RIGHT_RE.sub("", answer)
    answer = _THOUSANDS_SEP_RE.sub(",", answer)
    answer = _SPACING_RE.sub(" ", answer)
    answer = _DEGREE_RE.sub("", answer)
    for _ in range(3):  # "5 \text{ cm}^2", then a percent sign before it, ...
        before = answer
        for pattern in (_UNIT_TEXT_RE, _UNIT_WORD_RE, _PERCENT_RE):
            answer = pattern.sub("", answer)
        if answer == before:
            break
    answer = clean_answer(_CURRENCY_RE.sub("", clean_answer(answer)))
    prefix = _VAR_PREFIX_RE.match(answer)
    if prefix and "=" not in answer[prefix.end() :] and prefix.end() < len(answer):
        answer = answer[prefix.end() :]
    if _THOUSANDS_RE.fullmatch(answer):
        return answer.replace(",", "")
    base = _BASE_RE.fullmatch(answer)
    if base and any(char.isdigit() for char in base.group(1)):
        return base.group(1)
    choice = _CHOICE_RE.fullmatch(answer)
    if choice:
        return choice.group(1)
    scientific = _SCIENTIFIC_RE.fullmatch(answer)
    if scientific:
        return f"{scientific.group(1)}\\times 10^{{{scientific.group(2)}}}"
    return answer


def answer_key(cleaned: str) -> str:
    """A string key for cleaned answers: equal keys mean equal answers.

    No whitespace, ``\\frac12``/``\\sqrt2`` shorthands spelled out, words compared case-blind.
    """
    key = _WHITESPACE_RE.sub("", cleaned)
    key = _FRAC_SHORT_RE.sub(_spell_out_frac, key)
    key = _SQRT_SHORT_RE.sub(r"\\sqrt{\1}", key)
    return key.lower() if _WORD_RE.fullmatch(key) else key


def _spell_out_frac(match: re.Match[str]) -> str:
    if match.group(1) is not None:
        return f"\\frac{{{match.group(1)}}}{{{match.group(2)}}}"
    if match.group(3) is not None:
        return f"\\frac{{{match.group(3)}}}{{{match.group(4)}}}"
    return f"\\frac{{{match.group(5)}}}{{"

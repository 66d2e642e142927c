"""The answer key the paper's code votes with (``--answer-grouping string``).

compute-optimal-tts groups answers for majority and PRM-vote rules by the string its
``extract_answer(text, "math")`` returns: Qwen2.5-Math's evaluation rules (the last ``boxed``
with brace matching, else "the answer is"/"final answer is", else the last number), then its
normaliser ``strip_string`` (LaTeX spellings unified, units and ``\\text{}`` removed, ``a/b`` as
``\\frac{a}{b}``, ...). This module re-implements those rules so that votes group exactly as
there, quirks included: the unit list holds single letters (``a``, ``t``, ``h``, ``c``, ...),
removed wherever they stand alone, and its entries are regular expressions as written (``.``
matches any character). A path whose text yields no answer gets the key ``""``, which votes
like any other answer. Correctness is not judged here (Math-Verify does that).
"""

from __future__ import annotations

import re

#: Unit words of MathQA that the normaliser removes (each also with a trailing "s"), in the
#: order it tries them.
_UNITS: tuple[str, ...] = (
    "east", "degree", "mph", "kmph", "ft", "m sqaure", " m east", "sq m", "deg", "mile",
    "q .", "monkey", "prime", "ratio", "profit of rs", "rd", "o", "gm", "p . m", "lb", "tile",
    "per", "dm", "lt", "gain", "ab", "way", "west", "a .", "b .", "c .", "d .", "e .", "f .",
    "g .", "h .", "t", "a", "h", "no change", "men", "soldier", "pie", "bc", "excess", "st",
    "inches", "noon", "percent", "by", "gal", "kmh", "c", "acre", "rise", "a . m", "th",
    "π r 2", "sq", "mark", "l", "toy", "coin", "sq . m", "gallon", "° f", "profit", "minw",
    "yr", "women", "feet", "am", "pm", "hr", "cu cm", "square", "v â € ™", "are", "rupee",
    "rounds", "cubic", "cc", "mtr", "s", "ohm", "number", "kmph", "day", "hour", "minute",
    "min", "second", "man", "woman", "sec", "cube", "mt", "sq inch", "mp", "∏ cm ³",
    "hectare", "more", "sec", "unit", "cu . m", "cm 2", "rs .", "rs", "kg", "g", "month",
    "km", "m", "cm", "mm", "apple", "liter", "loss", "yard", "pure", "year", "increase",
    "decrease", "d", "less", "Surface", "litre", "pi sq m", "s .", "metre", "meter", "inch",
)
UNITS: tuple[str, ...] = (*_UNITS, *(u + "s" for u in _UNITS))
_UNIT_RES = tuple(re.compile(r"(^|\W)" + u + r"($|\W)") for u in UNITS)
#: Prefixes a normalised answer loses ("x=5" -> "5", "x\\in[0,1]" -> "[0,1]").
_VARIABLE_PREFIXES = ("x=", "y=", "z=", "x\\in", "y\\in", "z\\in", "x\\to", "y\\to", "z\\to")
_LAST_NUMBER = re.compile(r"-?\d*\.?\d+")
#: Longest answer span normalised: some of the rules backtrack quadratically (a 100k-digit
#: "answer" would take hours); a longer span is its own key, unnormalised (it equals nothing
#: a real solution writes anyway).
MAX_NORMALIZED_CHARS = 2000


def seed_answer_key(text: str) -> str:
    """The normalised answer string of a solution text ("" when it has none)."""
    text = text.replace("\u043a\u0438", "")  # the PRM step tag "ки"
    found = _extract(text)
    if found is None:
        return ""
    found = re.sub(r"\n\s*", "", found)
    for edge, at_start in ((":", True), (".", False), ("/", False)):
        if found and (found[0] if at_start else found[-1]) == edge:
            found = found[1:] if at_start else found[:-1]
    return normalize(found) if len(found) <= MAX_NORMALIZED_CHARS else found


def _extract(text: str) -> str | None:
    """The raw answer span (None: ``boxed`` ends the text, which yields "" unnormalised)."""
    if "final answer is $" in text and "$. I hope" in text:
        return text.split("final answer is $", 1)[1].split("$. I hope", 1)[0].strip()
    if "boxed" in text:
        after = text.split("boxed")[-1]
        if not after:
            return None
        if after[0] != "{":
            return after.split("$")[0].strip()
        depth, out = 1, []
        for ch in after[1:]:
            depth += {"{": 1, "}": -1}.get(ch, 0)
            if depth == 0:
                break
            out.append(ch)
        return "".join(out)
    for cue in ("he answer is", "final answer is"):
        if cue in text:
            return text.split(cue)[-1].strip()
    if "答案是" in text:
        return text.split("答案是")[1].strip().split("\n\n")[0].strip()
    numbers = _LAST_NUMBER.findall(text.replace(",", ""))
    return numbers[-1] if numbers else ""


def _word_number(text: str) -> str:
    from word2number import w2n

    try:
        return str(w2n.word_to_num(text))
    except Exception:  # noqa: BLE001  (not a number in words: the text stays as it is)
        return text


def normalize(s: str) -> str:
    """Qwen2.5-Math's ``strip_string`` for MATH (units removed), rule by rule."""
    s = str(s).strip().replace("\n", "").rstrip(".").replace("\\!", "")
    s = re.sub(r"\\begin\{array\}\{.*?\}", r"\\begin{pmatrix}", s)
    s = re.sub(r"\\end\{array\}", r"\\end{pmatrix}", s).replace("bmatrix", "pmatrix")
    for old, new in (("tfrac", "frac"), ("dfrac", "frac"), ("\\neq", "\\ne"),
                     ("\\leq", "\\le"), ("\\geq", "\\ge"), ("\\left", ""), ("\\right", ""),
                     ("\\{", "{"), ("\\}", "}")):
        s = s.replace(old, new)
    no_text_unit = re.sub(r"\\text{.*?}$", "", s).strip()
    if no_text_unit not in ("", s):
        s = no_text_unit
    for _ in range(2):
        for unit in _UNIT_RES:
            removed = unit.sub(r"\1\2", s)
            if removed != "":
                s = removed
    for old in ("^{\\circ}", "^\\circ", "\\$", "$", "\\(", "\\)"):
        s = s.replace(old, "")
    s = _word_number(s)
    s = re.sub(r"\\text\{(.*?)\}", r"\1", s)
    for key in _VARIABLE_PREFIXES:
        s = s.replace(key, "")
    s = s.replace("\\emptyset", "{}").replace("(-\\infty,\\infty)", "\\mathbb{R}")
    s = s.replace("\\%", "").replace("%", "").replace(" .", " 0.").replace("{.", "{0.")
    if _wrapped_alnum(s):  # as written, never true: a bracketed string is not alphanumeric
        s = s[1:-1]
    s = s.replace("infinity", "\\infty")
    if "\\infty" not in s:
        s = s.replace("inf", "\\infty")
    s = s.replace("+\\inity", "\\infty").replace("and", "").replace("\\mathbf", "")
    s = re.sub(r"\\mbox{.*?}", "", s)
    if "j" in s and "i" not in s:
        s = s.replace("j", "i")
    s = re.sub(r"(\d+)\.0*([^\d])", r"\1\2", s)
    s = re.sub(r"(\d+)\.0*$", r"\1", s)
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        s = sides[1]
    s = re.sub(r"\\sqrt(\w+)", r"\\sqrt{\1}", s).replace(" ", "")
    return _slash_fraction(_fix_fracs(s))


def _wrapped_alnum(s: str) -> bool:
    return any(s.startswith(a) and s.endswith(b) and s.isalnum()
               for a, b in (("{", "}"), ("(", ")"), ("[", "]")))


def _fix_fracs(s: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1{72}`` -> ``\\frac{1}{72}``; a ``\\frac``
    with fewer than two characters after it leaves the whole string unchanged."""
    head, *rest = s.split("\\frac")
    out = [head]
    for part in rest:
        out.append("\\frac")
        if part.startswith("{"):
            out.append(part)
            continue
        if len(part) < 2:
            return s
        a, b, tail = part[0], part[1], part[2:]
        out.append("{" + a + "}" + (b + tail if b == "{" else "{" + b + "}" + tail))
    return "".join(out)


def _slash_fraction(s: str) -> str:
    """``a/b`` of two integers (or square roots) -> ``\\frac{a}{b}``, only when the string is
    exactly that."""
    parts = s.split("/")
    if len(parts) != 2:
        return s
    a, b = parts
    try:
        a2 = a if "sqrt" in a else str(int(a))
        b2 = b if "sqrt" in b else str(int(b))
    except ValueError:
        return s
    if s != f"{a2}/{b2}":
        return s
    return "\\frac{" + a2 + "}{" + b2 + "}"

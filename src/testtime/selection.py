"""Post-hoc selection rules: pick one final answer from stored candidates.

The rules of Liu et al. 2025 (Table 2): majority vote; PRM-{Min, Last, Avg, Prod} aggregation of
step scores, each with Max (answer of the best-scored path) and Vote (answers weighted by the
summed path scores, i.e. weighted Best-of-N). ``oracle`` (pass@N) is an upper bound for analysis
and never a method. Rules only see answer groups (equivalent answers share a group id), path
scores and correctness flags, so they are exact and cheap; grouping is done once by the caller.

Ties are broken towards the candidate (or group) that appears first, which makes results
independent of dict ordering and stable when more candidates are appended.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


def finite(x: float | None) -> float:
    """``x``, or ``-inf`` when it is None, NaN or infinite: a scorer's non-finite (or missing)
    score ranks below every real one, whatever the order of the candidates."""
    return x if x is not None and math.isfinite(x) else -math.inf


#: The score of a path without steps (the paper's code: -1.0, below every probability).
EMPTY_PATH_SCORE = -1.0


def _agg(fn: Callable[[Sequence[float]], float]) -> Callable[[Sequence[float]], float]:
    """An aggregation that is ``-inf`` for a path with any non-finite step score and
    :data:`EMPTY_PATH_SCORE` for a path without steps."""
    def agg(s: Sequence[float]) -> float:
        if not s:
            return EMPTY_PATH_SCORE
        vals = [finite(x) for x in s]
        return -math.inf if -math.inf in vals else fn(vals)
    return agg


AGGREGATIONS: dict[str, Callable[[Sequence[float]], float]] = {
    "min": _agg(min),
    "last": _agg(lambda s: s[-1]),
    "avg": _agg(lambda s: sum(s) / len(s)),
    "prod": _agg(math.prod),
}

#: DeepConf's offline rules (Fu et al. 2025): keep the paths whose trace confidence (lowest
#: group or tail; :mod:`testtime.confidence`) is in the top ``eta`` % (10: DeepConf-low, 90:
#: DeepConf-high), then a plain (``vote``) or confidence-weighted (``wvote``) majority vote.
#: ``deepconf_{lowest,bottom10,tail,mean}_{ETA}_{vote,wvote}`` all parse; these are listed.
DEEPCONF_RULES: tuple[str, ...] = tuple(
    f"deepconf_{metric}_{eta}_{vote}" for metric in ("lowest", "tail") for eta in (10, 90)
    for vote in ("wvote", "vote"))

#: Rule names in display order; ``oracle`` last because it is not a real method.
RULES: tuple[str, ...] = (
    "majority",
    *(f"prm_{agg}_{sel}" for agg in AGGREGATIONS for sel in ("max", "vote")),
    *DEEPCONF_RULES,
    "oracle",
)
ORACLE = "oracle"


@dataclass(frozen=True)
class Scored:
    """What a rule knows about one candidate."""

    group: int | None
    """Answer group (equal ids = equivalent answers); None when no answer was extracted."""
    step_scores: tuple[float, ...]
    correct: bool
    confidence: Mapping[str, float] | None = None
    """DeepConf trace metrics of the path (None: the backend reported no token confidences)."""
    voted: bool = True
    """False: the method set the path aside (online DeepConf stopped it or filtered it out);
    no rule, ``oracle`` included, sees it."""


@dataclass(frozen=True)
class Choice:
    """A rule's pick: the candidate index whose answer it selects, or None (no answer)."""

    index: int | None
    correct: bool


def select(rule: str, cands: Sequence[Scored]) -> Choice:
    """Apply one rule to candidates (in stored order); paths not ``voted`` take no part."""
    if not all(c.voted for c in cands):
        keep = [i for i, c in enumerate(cands) if c.voted]
        choice = select(rule, [cands[i] for i in keep])
        return Choice(None if choice.index is None else keep[choice.index], choice.correct)
    if rule == ORACLE:
        return Choice(next((i for i, c in enumerate(cands) if c.correct), None),
                      any(c.correct for c in cands))
    if rule == "majority":
        return _vote(cands, [1.0] * len(cands))
    if rule.startswith("deepconf_"):
        return _deepconf(rule, cands)
    try:
        _, agg, sel = rule.split("_")
        fn = AGGREGATIONS[agg]
    except (ValueError, KeyError):
        raise ValueError(f"unknown selection rule {rule!r}; known: {', '.join(RULES)}") from None
    scores = [fn(c.step_scores) for c in cands]
    if sel == "max":
        if not cands:
            return Choice(None, False)
        best = max(range(len(cands)), key=lambda i: (scores[i], -i))
        return Choice(best, cands[best].correct)
    if sel == "vote":  # a path without a finite score adds nothing to its answer's weight
        return _vote(cands, [x if math.isfinite(x) else 0.0 for x in scores])
    raise ValueError(f"unknown selection rule {rule!r}; known: {', '.join(RULES)}")


def _vote(cands: Sequence[Scored], weights: Sequence[float]) -> Choice:
    """Sum weights per answer group; candidates without an answer do not vote."""
    totals: dict[int, float] = {}
    first: dict[int, int] = {}
    for i, (c, w) in enumerate(zip(cands, weights, strict=True)):
        if c.group is None:
            continue
        totals[c.group] = totals.get(c.group, 0.0) + w
        first.setdefault(c.group, i)
    if not totals:
        return Choice(None, False)
    group = max(totals, key=lambda g: (totals[g], -first[g]))
    i = first[group]
    return Choice(i, cands[i].correct)


def _deepconf(rule: str, cands: Sequence[Scored]) -> Choice:
    """Filter by trace confidence, then vote (see :data:`DEEPCONF_RULES`). Without
    confidences for every candidate the filter cannot rank them: a plain majority vote."""
    try:
        _, metric, eta_text, how = rule.split("_")
        eta = float(eta_text)
    except ValueError:
        raise ValueError(f"unknown selection rule {rule!r}; known: {', '.join(RULES)}") from None
    if how not in ("vote", "wvote") or not 0 < eta <= 100:
        raise ValueError(f"unknown selection rule {rule!r}; known: {', '.join(RULES)}")
    # as DeepConf, only paths with an answer take part in the filter and the vote
    answered = [i for i, c in enumerate(cands) if c.group is not None]
    confs = [cands[i].confidence.get(metric) if cands[i].confidence else None
             for i in answered]
    if any(x is None or not math.isfinite(x) for x in confs):
        return _vote(cands, [1.0] * len(cands))
    if not answered:
        return Choice(None, False)
    values = [float(x) for x in confs]  # type: ignore[arg-type]
    cut = percentile(values, 100.0 - eta)
    keep = [i for i, x in zip(answered, values, strict=True) if x >= cut]
    weights = [float(cands[i].confidence[metric]) if how == "wvote" else 1.0  # type: ignore[index]
               for i in keep]
    choice = _vote([cands[i] for i in keep], weights)
    return Choice(None if choice.index is None else keep[choice.index], choice.correct)


def percentile(values: Sequence[float], q: float) -> float:
    """``numpy.percentile(values, q)`` (linear interpolation), as DeepConf's filter uses."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def budgets(n: int, independent_prefixes: bool, unit: int = 1) -> list[int]:
    """Budgets one run answers: ``unit`` times every power of two below ``n`` (from prefixes)
    and ``n``. ``unit`` is the budget of the smallest valid prefix (DVTS: one subtree's M)."""
    if unit < 1 or n % unit:
        raise ValueError(f"budget {n} is not a positive multiple of the prefix unit {unit}")
    if not independent_prefixes:
        return [n]
    out, b = [], unit
    while b < n:
        out.append(b)
        b *= 2
    return [*out, n]


def prefix_counts(budget: int, origins: Sequence[int], independent_prefixes: bool,
                  unit_budget: int = 1) -> dict[int, int]:
    """Budget -> how many leading candidates answer it.

    Without independent prefixes only ``budget`` is answered, by every candidate. With them,
    a candidate's ``origin`` is its independent unit (a sample, a subtree) and the units come
    in order: budget ``u * unit_budget`` is answered by the candidates of the first ``u``
    units, for ``u`` the powers of two below the number of units, and ``budget`` by all.
    """
    if not independent_prefixes:
        return {budget: len(origins)}
    units = list(dict.fromkeys(origins))
    if any(a > b for a, b in itertools.pairwise(origins)):
        raise ValueError("candidates of independent units must come unit by unit")
    out = {}
    for b in budgets(budget, True, unit_budget):
        u = b // unit_budget
        out[b] = sum(1 for o in origins if o in set(units[:u])) if u < len(units) \
            else len(origins)
    return out


def select_all(
    cands: Sequence[Scored], counts: dict[int, int] | Sequence[int],
    rules: Sequence[str] = RULES,
) -> dict[int, dict[str, Choice]]:
    """Every rule at every budget; budget ``b`` uses the first ``counts[b]`` candidates (a
    plain list of budgets means ``counts[b] = b``)."""
    if not isinstance(counts, dict):
        counts = {b: b for b in counts}
    return {b: {r: select(r, cands[:k]) for r in rules} for b, k in counts.items()}

"""A small model with test-time scaling against a large model with CoT, in FLOPs (Liu et al.
2025, Table 4).

Per problem (times ``problems``: Table 4 counts a whole benchmark): the small side spends
``2 * N_small * (prompt + completion tokens)`` on the policy and, unless ``include_prm`` is off,
``2 * N_prm * scored_tokens`` on the PRM; the large side one CoT,
``2 * N_large * (prompt + completion tokens)``. Optionally both add pre-training ``6 * N * D``.
``N`` follows the parameter convention (default: nominal sizes, as the paper; a mixture of
experts such as DeepSeek-R1 is named with its total and active sizes).
Token counts come from a run directory (mean per problem, scaled to budget ``n`` when the run's
records hold it as a prefix budget) or from given per-generation averages; without a run the
PRM is assumed to read every generation (question and solution) once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from testtime.flops import (
    PRETRAIN_TOKENS,
    Convention,
    ParamCount,
    pretrain_flops,
    resolve_params,
)


@dataclass(frozen=True)
class TokenUse:
    """Tokens per problem (all generations together)."""

    prompt: float
    completion: float
    scored: float


@dataclass
class Side:
    label: str
    model: str
    params: int
    tokens: TokenUse
    inference_flops: float
    pretrain_flops: float | None

    @property
    def total_flops(self) -> float | None:
        return None if self.pretrain_flops is None else self.inference_flops + \
            self.pretrain_flops


def tokens_from_run(run_dir: Path, n: int) -> tuple[TokenUse, float]:
    """Mean tokens per problem of a run at budget ``n``, and the mean completion tokens per
    generation (for the large model's default answer length)."""
    from testtime.store import read_records

    recs = [r for r in read_records(run_dir / "results.jsonl") if r.error is None]
    if not recs:
        raise ValueError(f"{run_dir}: no finished records")
    run_n = recs[0].n
    if n > run_n or (n < run_n and str(n) not in recs[0].predictions):
        raise ValueError(f"{run_dir}: budget {n} is not available (run N={run_n}, budgets "
                         f"{sorted(map(int, recs[0].predictions))})")
    scale = n / run_n
    k = len(recs)
    use = TokenUse(scale * sum(r.compute.prompt_tokens for r in recs) / k,
                   scale * sum(r.compute.completion_tokens for r in recs) / k,
                   scale * sum(r.compute.scored_tokens for r in recs) / k)
    per_gen = sum(c.completion_tokens for r in recs for c in r.candidates) / max(
        1, sum(len(r.candidates) for r in recs))
    return use, per_gen


def tokens_from_averages(n: int, prompt: float, completion: float,
                         scored: float | None = None) -> TokenUse:
    """``n`` generations of the given average sizes; ``scored`` defaults to reading every
    generation with its question once."""
    return TokenUse(n * prompt, n * completion,
                    n * (prompt + completion) if scored is None else scored)


def _name(name: str, count: ParamCount) -> str:
    if count.active is not None:  # a mixture of experts: say which size the FLOPs used
        return f"{name} ({count.total / 1e9:.0f}B total, {count.active / 1e9:.0f}B active)"
    return name


def compare(small: str, n: int, method: str, large: str, tokens: TokenUse, *,
            prm: str | None = None, large_prompt: float, large_completion: float,
            convention: Convention = "nominal", pretrain: bool = False,
            small_pretrain_tokens: float | None = None,
            large_pretrain_tokens: float | None = None, include_prm: bool = True,
            problems: float = 1.0) -> list[Side]:
    """The two sides of the comparison (small + TTS first), over ``problems`` problems."""
    s_name, s_params = resolve_params(small)
    l_name, l_params = resolve_params(large)
    prm_params = resolve_params(prm)[1].pick(convention) if prm and include_prm else 0
    sp, lp = s_params.pick(convention), l_params.pick(convention)
    tokens = TokenUse(problems * tokens.prompt, problems * tokens.completion,
                      problems * tokens.scored)
    small_inf = 2.0 * sp * (tokens.prompt + tokens.completion) + 2.0 * prm_params * tokens.scored
    large_tok = TokenUse(problems * large_prompt, problems * large_completion, 0.0)
    large_inf = 2.0 * lp * (large_tok.prompt + large_tok.completion)

    def pre(name: str, params: int, given: float | None) -> float | None:
        if not pretrain:
            return None
        d = given if given is not None else PRETRAIN_TOKENS.get(name)
        return None if d is None else pretrain_flops(params, d)

    return [
        Side(f"{_name(s_name, s_params)} + {method} (N={n})" + (f" + {prm}" if prm else ""),
             s_name, sp, tokens, small_inf, pre(s_name, sp, small_pretrain_tokens)),
        Side(f"{_name(l_name, l_params)} CoT", l_name, lp, large_tok, large_inf,
             pre(l_name, lp, large_pretrain_tokens)),
    ]

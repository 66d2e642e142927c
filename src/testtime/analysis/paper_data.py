"""The published numbers of Liu et al. 2025 ("Can 1B LLM Surpass 405B LLM? Rethinking
Compute-Optimal Test-Time Scaling"), as typed data: every value with its table.

Accuracies are percent (as printed), FLOPs are totals over the benchmark (Table 4 counts the
500 MATH-500 problems). ``model`` and ``prm`` are the paper's names; they are resolved to the
same canonical names as the user's runs by :mod:`testtime.analysis.paper_models`.

The settings a value was measured under, where the issue's list does not state them, are the
assumptions :data:`PAPER_N` and :data:`TABLE2_METHOD` (stated in the report and in
docs/reproducing.md): the comparison marks a cell whose run used another budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Unit = Literal["accuracy", "flops"]

MATH500 = "math500"
AIME24 = "aime24"
DATASET_LABELS: dict[str, str] = {MATH500: "MATH-500", AIME24: "AIME24", "amc23": "AMC23"}
#: Problems in each benchmark (Table 4's totals are over all of them).
BENCHMARK_SIZE: dict[str, int] = {MATH500: 500, AIME24: 30, "amc23": 40}

PAPER_N = 256
"""Assumed budget (generations) of the paper's majority, Best-of-N and compute-optimal
numbers: the largest budget of its scaling plots (4 ... 256)."""
TABLE2_METHOD = "best_of_n"
"""Assumed method of Table 2 (voting rules over one set of samples: Best-of-N)."""

#: Method names of the comparison (``compute_optimal``: best method x rule at the budget).
COT, MAJORITY, OPTIMAL = "cot", "majority", "compute_optimal"
TABLE2_RULES = ("majority", "prm_min_max", "prm_min_vote", "prm_last_max", "prm_last_vote",
                "prm_avg_max", "prm_avg_vote")
RULE_LABELS: dict[str, str] = {
    "majority": "Majority Vote", "prm_min_max": "PRM-Min-Max", "prm_min_vote": "PRM-Min-Vote",
    "prm_last_max": "PRM-Last-Max", "prm_last_vote": "PRM-Last-Vote",
    "prm_avg_max": "PRM-Avg-Max", "prm_avg_vote": "PRM-Avg-Vote"}


@dataclass(frozen=True)
class PaperValue:
    """One published number."""

    table: str
    """Where it is printed: ``Table 2`` ... ``Table 5``."""
    dataset: str
    """``math500`` or ``aime24``."""
    model: str
    """The policy (or, for Table 4, the model whose FLOPs are given), as the paper names it."""
    method: str
    """``cot``, ``majority``, ``compute_optimal``, a selection rule (Table 2), or Table 4's
    ``tts_inference`` / ``cot_inference`` / ``pretraining``."""
    value: float
    unit: Unit = "accuracy"
    prm: str | None = None
    """The PRM of a Table 2 column."""


def _acc(table: str, dataset: str, model: str, method: str, value: float,
         prm: str | None = None) -> PaperValue:
    return PaperValue(table, dataset, model, method, value, "accuracy", prm)


_TABLE5 = {  # policy: (CoT, majority, compute-optimal) on MATH-500
    "Llama-3.2-1B": (26.0, 39.0, 66.2), "Llama-3.2-3B": (41.4, 58.4, 78.2),
    "Llama-3.1-8B": (49.8, 66.4, 80.6), "Qwen2.5-0.5B": (31.6, 47.2, 76.4),
    "Qwen2.5-1.5B": (54.4, 68.4, 85.6), "Qwen2.5-3B": (64.0, 77.0, 87.6),
    "Qwen2.5-7B": (76.8, 83.6, 91.0), "Qwen2.5-14B": (80.2, 85.6, 91.0),
    "Qwen2.5-32B": (82.4, 87.0, 90.6), "Qwen2.5-72B": (83.8, 87.2, 91.8),
}
_TABLE3_SMALL = {  # compute-optimal TTS: (MATH-500, AIME24)
    "Llama-3.2-1B": (66.2, 16.7), "Llama-3.2-3B": (75.6, 30.0), "Qwen2.5-0.5B": (76.4, 10.0),
    "Qwen2.5-1.5B": (81.8, 20.0), "DeepSeek-R1-Distill-1.5B": (91.6, 63.3),
    "DeepSeek-R1-Distill-7B": (95.2, 83.3),
}
_TABLE3_LARGE = {  # CoT: (MATH-500, AIME24)
    "GPT-4o": (74.6, 9.3), "o1-preview": (85.5, 44.6), "o1-mini": (90.0, 63.6),
    "o1": (94.8, 79.2), "Llama-3.1-70B": (65.2, 16.7), "Llama-3.1-405B": (71.4, 23.3),
    "QwQ-32B-Preview": (90.6, 50.0), "DeepSeek-R1": (97.3, 79.8),
}
_TABLE2 = {  # rule: (Skywork-PRM-7B, Qwen2.5-Math-PRM-7B) on MATH-500
    "majority": (86.8, 87.6), "prm_min_max": (83.0, 87.4), "prm_min_vote": (86.6, 87.6),
    "prm_last_max": (84.4, 87.6), "prm_last_vote": (87.0, 87.6),
    "prm_avg_max": (85.8, 87.8), "prm_avg_vote": (86.8, 87.6),
}
TABLE2_PRMS = ("Skywork-PRM-7B", "Qwen2.5-Math-PRM-7B")
#: Table 4 pairs: (small policy with TTS, large model with CoT).
TABLE4_PAIRS = (("Llama-3.2-3B", "Llama-3.1-405B"), ("DeepSeek-R1-Distill-7B", "DeepSeek-R1"))
_TABLE4 = {  # model: (inference FLOPs on MATH-500, pre-training FLOPs)
    "Llama-3.2-3B": ("tts_inference", 3.07e17, 1.62e23),
    "Llama-3.1-405B": ("cot_inference", 4.25e17, 3.65e25),
    "DeepSeek-R1-Distill-7B": ("tts_inference", 8.15e17, 7.56e23),
    "DeepSeek-R1": ("cot_inference", 4.03e18, 5.96e25),
}


def _build() -> tuple[PaperValue, ...]:
    out: list[PaperValue] = []
    for model, vals in _TABLE5.items():
        out += [_acc("Table 5", MATH500, model, m, v)
                for m, v in zip((COT, MAJORITY, OPTIMAL), vals, strict=True)]
    for table_rows, method in ((_TABLE3_SMALL, OPTIMAL), (_TABLE3_LARGE, COT)):
        for model, pair in table_rows.items():
            out += [_acc("Table 3", ds, model, method, v)
                    for ds, v in zip((MATH500, AIME24), pair, strict=True)]
    for rule, pair in _TABLE2.items():
        out += [_acc("Table 2", MATH500, "", rule, v, prm)
                for prm, v in zip(TABLE2_PRMS, pair, strict=True)]
    for model, (method, inference, pretrain) in _TABLE4.items():
        out += [PaperValue("Table 4", MATH500, model, method, inference, "flops"),
                PaperValue("Table 4", MATH500, model, "pretraining", pretrain, "flops")]
    return tuple(out)


PAPER_VALUES: tuple[PaperValue, ...] = _build()
"""Every published number the comparison uses."""

#: Sizes of the paper's models that ``testtime.model_sizes`` does not list (closed models have
#: none: they are drawn as horizontal reference lines).
EXTRA_SIZES: dict[str, float] = {"QwQ-32B-Preview": 32e9}


def values(table: str, dataset: str | None = None, method: str | None = None) -> list[PaperValue]:
    """The published values of ``table`` (optionally one dataset / method)."""
    return [v for v in PAPER_VALUES if v.table == table
            and (dataset is None or v.dataset == dataset)
            and (method is None or v.method == method)]

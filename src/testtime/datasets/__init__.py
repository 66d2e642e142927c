"""Benchmark datasets: the generated ``demo`` set, MATH-500, AIME 2024, AMC 2023 and any JSONL.

Use :func:`load_problems` with a :class:`DatasetSpec`; it validates the whole source first and
raises :class:`DatasetError` (naming file, line and field) on bad data. Heavy dependencies
(``datasets`` for the Hugging Face Hub) are imported only when a loader needs them.
"""

from testtime.datasets.base import (
    DATA_DIR_ENV,
    MAX_PROBLEM_CHARS,
    DatasetError,
    DatasetSpec,
    available_datasets,
    load_problems,
    register_dataset,
)
from testtime.datasets.demo import generate_demo
from testtime.datasets.jsonl import read_jsonl

__all__ = [
    "DATA_DIR_ENV",
    "MAX_PROBLEM_CHARS",
    "DatasetError",
    "DatasetSpec",
    "available_datasets",
    "generate_demo",
    "load_problems",
    "read_jsonl",
    "register_dataset",
]

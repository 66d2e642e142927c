"""MATH-500: the 500-problem test subset of MATH used by PRM800K (Lightman et al., 2023).

Read from ``<data dir>/math500.jsonl`` when a data dir is configured, otherwise from the Hub
dataset ``HuggingFaceH4/MATH-500`` (split ``test``; fields ``problem``, ``solution``,
``answer``, ``subject``, ``level`` (int 1-5), ``unique_id``). Both give the same problems:
id = MATH path (``test/precalculus/807.json``, the Hub's ``unique_id``), level 1-5, and
metadata ``subject`` and ``solution``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from testtime.datasets.base import DatasetError, DatasetSpec, hub_rows, local_benchmark_path
from testtime.datasets.jsonl import build_problem, check_unique_ids, read_jsonl
from testtime.types import Problem

LOCAL_FILE = "math500.jsonl"
HUB_DATASET = "HuggingFaceH4/MATH-500"
HUB_SPLIT = "test"
HUB_ID_FIELD = "unique_id"


def from_hub_rows(rows: list[Mapping[str, Any]]) -> list[Problem]:
    """Normalise Hub rows into the local file's shape (``unique_id`` becomes the id)."""
    problems: list[Problem] = []
    wheres: list[str] = []
    for index, row in enumerate(rows):
        where = f"{HUB_DATASET} row {index}"
        record = dict(row)
        if HUB_ID_FIELD not in record:
            raise DatasetError(f"{where}: field '{HUB_ID_FIELD}' is missing")
        record["id"] = record.pop(HUB_ID_FIELD)
        problems.append(build_problem(record, where))
        wheres.append(where)
    check_unique_ids(problems, wheres, HUB_ID_FIELD)
    return problems


def load(spec: DatasetSpec) -> list[Problem]:
    """All 500 problems, from the data dir when configured, else from the Hub."""
    path = local_benchmark_path(spec, LOCAL_FILE)
    if path is not None:
        return read_jsonl(path)
    return from_hub_rows(hub_rows(HUB_DATASET, HUB_SPLIT, LOCAL_FILE))

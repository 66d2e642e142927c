"""AIME 2024: the 30 problems of AIME 2024 I and II (integer answers 0-999).

Read from ``<data dir>/aime24.jsonl`` when a data dir is configured, otherwise from the Hub
dataset ``AI-MO/aimo-validation-aime`` (split ``train``: 90 problems of AIME 2022-2024 with
fields ``id`` (int), ``problem``, ``solution``, ``answer`` (string, sometimes zero-padded) and
``url`` (AoPS wiki page)), keeping the rows whose url is a 2024 problem. Both give ids
``aime24/00``..``aime24/29`` in contest order (I 1-15, then II 1-15) and metadata ``source``
(the AoPS url) and ``solution``.
"""

from __future__ import annotations

import re

from testtime.datasets.base import DatasetSpec, contest_problems, hub_rows, local_benchmark_path
from testtime.datasets.jsonl import read_jsonl
from testtime.types import Problem

LOCAL_FILE = "aime24.jsonl"
HUB_DATASET = "AI-MO/aimo-validation-aime"
HUB_SPLIT = "train"
ID_PREFIX = "aime24"
#: e.g. https://artofproblemsolving.com/wiki/index.php/2024_AIME_II_Problems/Problem_7
URL_RE = re.compile(r"/2024_AIME_(I|II)_Problems/Problem_(\d+)\b")


def load(spec: DatasetSpec) -> list[Problem]:
    """All 30 problems, from the data dir when configured, else from the Hub."""
    path = local_benchmark_path(spec, LOCAL_FILE)
    if path is not None:
        return read_jsonl(path)
    rows = hub_rows(HUB_DATASET, HUB_SPLIT, LOCAL_FILE)
    return contest_problems(rows, dataset=HUB_DATASET, url_re=URL_RE, id_prefix=ID_PREFIX)

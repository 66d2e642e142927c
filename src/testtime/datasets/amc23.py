"""AMC 2023: the 40 problems of AMC 12 2023 A and B that have a numeric answer.

Read from ``<data dir>/amc23.jsonl`` when a data dir is configured, otherwise from the Hub
dataset ``AI-MO/aimo-validation-amc`` (split ``train``: 83 problems of AMC 12 2022-2023 with
fields ``id`` (int), ``problem``, ``answer`` (float) and ``url`` (AoPS wiki page)), keeping the
rows whose url is a 2023 problem. Both give ids ``amc23/00``..``amc23/39`` in contest order
(12A, then 12B, by problem number), integer answers written without ``.0``, and metadata
``source`` (the AoPS url).
"""

from __future__ import annotations

import re

from testtime.datasets.base import DatasetSpec, contest_problems, hub_rows, local_benchmark_path
from testtime.datasets.jsonl import read_jsonl
from testtime.types import Problem

LOCAL_FILE = "amc23.jsonl"
HUB_DATASET = "AI-MO/aimo-validation-amc"
HUB_SPLIT = "train"
ID_PREFIX = "amc23"
#: e.g. https://artofproblemsolving.com/wiki/index.php/2023_AMC_12B_Problems/Problem_24
URL_RE = re.compile(r"/2023_AMC_12(A|B)_Problems/Problem_(\d+)\b")


def load(spec: DatasetSpec) -> list[Problem]:
    """All 40 problems, from the data dir when configured, else from the Hub."""
    path = local_benchmark_path(spec, LOCAL_FILE)
    if path is not None:
        return read_jsonl(path)
    rows = hub_rows(HUB_DATASET, HUB_SPLIT, LOCAL_FILE)
    return contest_problems(rows, dataset=HUB_DATASET, url_re=URL_RE, id_prefix=ID_PREFIX)

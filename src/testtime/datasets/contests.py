"""The contest benchmarks: AIME 2024 and AMC 2023, one table row each.

Each is read from ``<data dir>/<file>`` when a data dir is configured, otherwise from an AI-MO
validation dataset on the Hugging Face Hub, keeping the rows whose AoPS url is a problem of
that year. Both give ids ``<prefix>/00``, ``/01``... in contest order and metadata ``source``
(the AoPS url).

* ``aime24``: the 30 problems of AIME 2024 I and II (integer answers 0-999). Hub dataset
  ``AI-MO/aimo-validation-aime`` (split ``train``: 90 problems of AIME 2022-2024, fields ``id``
  (int), ``problem``, ``solution``, ``answer`` (string, sometimes zero-padded), ``url``).
* ``amc23``: the 40 problems of AMC 12 2023 A and B that have a numeric answer. Hub dataset
  ``AI-MO/aimo-validation-amc`` (split ``train``: 83 problems of AMC 12 2022-2023, fields ``id``
  (int), ``problem``, ``answer`` (float), ``url``); integer answers are written without ``.0``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from testtime.datasets.base import DatasetError, DatasetSpec, hub_rows, local_benchmark_path
from testtime.datasets.jsonl import build_problem, read_jsonl
from testtime.types import Problem


@dataclass(frozen=True)
class Contest:
    """Where one contest's problems come from."""

    local_file: str
    hub_dataset: str
    hub_split: str
    id_prefix: str
    url_re: re.Pattern[str]
    """Matches the AoPS url of a problem of this contest (groups: exam, problem number)."""


CONTESTS: dict[str, Contest] = {
    # e.g. https://artofproblemsolving.com/wiki/index.php/2024_AIME_II_Problems/Problem_7
    "aime24": Contest("aime24.jsonl", "AI-MO/aimo-validation-aime", "train", "aime24",
                      re.compile(r"/2024_AIME_(I|II)_Problems/Problem_(\d+)\b")),
    # e.g. https://artofproblemsolving.com/wiki/index.php/2023_AMC_12B_Problems/Problem_24
    "amc23": Contest("amc23.jsonl", "AI-MO/aimo-validation-amc", "train", "amc23",
                     re.compile(r"/2023_AMC_12(A|B)_Problems/Problem_(\d+)\b")),
}


def load_contest(name: str, spec: DatasetSpec) -> list[Problem]:
    """All problems of contest ``name``, from the data dir when configured, else the Hub."""
    c = CONTESTS[name]
    path = local_benchmark_path(spec, c.local_file)
    if path is not None:
        return read_jsonl(path)
    rows = hub_rows(c.hub_dataset, c.hub_split, c.local_file)
    return contest_problems(rows, dataset=c.hub_dataset, url_re=c.url_re, id_prefix=c.id_prefix)


def load_aime24(spec: DatasetSpec) -> list[Problem]:
    """The 30 problems of AIME 2024."""
    return load_contest("aime24", spec)


def load_amc23(spec: DatasetSpec) -> list[Problem]:
    """The 40 problems of AMC 12 2023."""
    return load_contest("amc23", spec)


def contest_problems(
    rows: list[dict[str, Any]],
    *,
    dataset: str,
    url_re: re.Pattern[str],
    id_prefix: str,
) -> list[Problem]:
    """Normalise AI-MO validation rows (``id``, ``problem``, ``answer``, ``url``, ...) of one
    contest year into the shape of the local files.

    Keeps the rows whose ``url`` matches ``url_re`` (groups: exam such as ``I``/``A``, problem
    number), sorts them by (exam, number) as the local files are, and numbers them
    ``<id_prefix>/00``, ``/01``...; ``url`` becomes metadata ``source``, the Hub's own integer
    ``id`` is dropped, integer answers lose zero padding (``"023"`` -> ``"23"``) and numeric
    answers (AMC stores floats) become exact strings.
    """
    keyed: list[tuple[tuple[str, int], int, dict[str, Any]]] = []
    for index, row in enumerate(rows):
        url = row.get("url")
        if not isinstance(url, str):
            got = "missing" if "url" not in row else f"not a string ({type(url).__name__})"
            raise DatasetError(f"{dataset} row {index}: field 'url' is {got}")
        match = url_re.search(url)
        if match:
            keyed.append(((match.group(1), int(match.group(2))), index, row))
    if not keyed:
        raise DatasetError(f"{dataset}: no row has a 'url' matching {url_re.pattern!r}")
    keyed.sort(key=lambda item: item[0])
    for (key, index, _), (next_key, next_index, _) in pairwise(keyed):
        if key == next_key:
            raise DatasetError(
                f"{dataset} row {next_index}: field 'url' names the same problem as row {index}"
            )
    problems = []
    for number, (_, index, row) in enumerate(keyed):
        record = {k: v for k, v in row.items() if k not in ("id", "url")}
        record["id"] = f"{id_prefix}/{number:02d}"
        record["source"] = row["url"]
        answer = record.get("answer")
        if isinstance(answer, str) and answer.strip().isdigit():
            record["answer"] = str(int(answer))
        problems.append(build_problem(record, f"{dataset} row {index}"))
    return problems

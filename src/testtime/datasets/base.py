"""Dataset registry, loading API and errors.

``load_problems(spec)`` turns a name (``demo``, ``demo-N``, ``math500``, ``aime24``, ``amc23``)
or a path to a ``.jsonl`` file into a validated list of :class:`~testtime.types.Problem`.
Every loader reads and validates its whole source up front, so a bad file fails with a
:class:`DatasetError` naming the file, line and field before any model is loaded.

Loaders are registered by dotted ``"module:function"`` strings and imported on first use, so
importing this package never pulls in heavy libraries such as ``datasets``.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testtime.types import Problem

#: Environment variable naming the directory that holds ``math500.jsonl`` & co.
DATA_DIR_ENV = "TESTTIME_DATA_DIR"

#: Longest accepted problem statement. Real benchmarks stay under 5k characters; anything
#: far beyond that is a wrong field or a corrupt file, and would blow the context window.
MAX_PROBLEM_CHARS = 100_000

#: ``demo-N``: the generated demo set with N problems.
DEMO_SIZED_RE = re.compile(r"demo-(\d+)")

Loader = Callable[["DatasetSpec"], list[Problem]]
"""Reads and validates a whole dataset (before ``ids``/``limit`` selection)."""


class DatasetError(ValueError):
    """A dataset could not be loaded or is malformed.

    The message names the source and position at fault: ``"<file>:<line>: field '<f>' ..."``
    for JSONL files, ``"<hub dataset> row <i>: field '<f>' ..."`` for Hugging Face Hub rows.
    """


@dataclass(frozen=True)
class DatasetSpec:
    """Which problems to load. Validates its values; does no I/O."""

    name_or_path: str
    """A registered name (``demo``, ``demo-N``, ``math500``, ``aime24``, ``amc23``) or a path to a
    ``.jsonl`` file with one JSON object per line."""
    data_dir: str | None = None
    """Directory holding ``math500.jsonl``, ``aime24.jsonl`` and ``amc23.jsonl``. When None, the
    ``TESTTIME_DATA_DIR`` environment variable is used; when that is unset too, the named
    benchmarks are fetched from the Hugging Face Hub."""
    problem_field: str = "problem"
    """JSONL field holding the problem statement (generic ``.jsonl`` files only)."""
    answer_field: str = "answer"
    """JSONL field holding the reference answer (generic ``.jsonl`` files only)."""
    id_field: str = "id"
    """JSONL field holding the problem id; when a line lacks it the id is ``line-N``."""
    limit: int | None = None
    """Keep only the first ``limit`` problems (applied after ``ids`` selection)."""
    ids: tuple[str, ...] | None = None
    """Keep only problems with these ids (in dataset order); an unknown id is an error."""

    def __post_init__(self) -> None:
        if not isinstance(self.name_or_path, str) or not self.name_or_path.strip():
            raise ValueError("DatasetSpec.name_or_path must be a non-empty string")
        if self.data_dir is not None and (
            not isinstance(self.data_dir, str) or not self.data_dir.strip()
        ):
            raise ValueError("DatasetSpec.data_dir must be None or a non-empty string")
        fields = {"problem_field": self.problem_field, "answer_field": self.answer_field,
                  "id_field": self.id_field}
        for attr, value in fields.items():
            if not isinstance(value, str) or not value:
                raise ValueError(f"DatasetSpec.{attr} must be a non-empty string, got {value!r}")
        if len(set(fields.values())) != len(fields):
            raise ValueError(f"DatasetSpec field names must be distinct, got {fields}")
        if self.limit is not None and (
            isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1
        ):
            raise ValueError(
                f"DatasetSpec.limit must be None or an integer >= 1, got {self.limit!r}"
            )
        if self.ids is not None:
            # A bare string would silently become a tuple of characters.
            if isinstance(self.ids, str) or not isinstance(self.ids, (tuple, list)):
                raise ValueError(f"DatasetSpec.ids must be a tuple of strings, got {self.ids!r}")
            ids = tuple(self.ids)
            if not ids:
                raise ValueError("DatasetSpec.ids must not be empty (use None to keep all)")
            bad = [i for i in ids if not isinstance(i, str) or not i]
            if bad:
                raise ValueError(f"DatasetSpec.ids must be non-empty strings, got {bad!r}")
            dups = sorted({i for i in ids if ids.count(i) > 1})
            if dups:
                raise ValueError(f"DatasetSpec.ids repeats {dups!r}")
            object.__setattr__(self, "ids", ids)

    @property
    def resolved_data_dir(self) -> str | None:
        """``data_dir``, else ``$TESTTIME_DATA_DIR`` when set and non-empty, else None."""
        return self.data_dir or os.environ.get(DATA_DIR_ENV) or None

    @property
    def uses_custom_fields(self) -> bool:
        """True when any field name differs from the defaults."""
        return (self.problem_field, self.answer_field, self.id_field) != (
            "problem", "answer", "id")


_REGISTRY: dict[str, str | Loader] = {
    "demo": "testtime.datasets.demo:load",
    "math500": "testtime.datasets.math500:load",
    "aime24": "testtime.datasets.contests:load_aime24",
    "amc23": "testtime.datasets.contests:load_amc23",
}
#: Loader of any ``.jsonl`` path (resolved lazily like the registered ones).
_JSONL_LOADER = "testtime.datasets.jsonl:load"


def register_dataset(name: str, loader: str | Loader) -> None:
    """Register ``loader`` (a callable or a lazy ``"module:function"`` string) under ``name``."""
    if not name or name.lower().endswith(".jsonl") or DEMO_SIZED_RE.fullmatch(name):
        raise ValueError(f"invalid dataset name {name!r}")
    _REGISTRY[name] = loader


def available_datasets() -> tuple[str, ...]:
    """Registered dataset names (``demo-N`` and ``.jsonl`` paths are accepted as well)."""
    return tuple(sorted(_REGISTRY))


def _resolve(target: str | Loader) -> Loader:
    if callable(target):
        return target
    module_name, _, func_name = target.partition(":")
    loader: Loader = getattr(importlib.import_module(module_name), func_name)
    return loader


def _loader_for(name: str) -> Loader:
    if name in _REGISTRY:
        return _resolve(_REGISTRY[name])
    if DEMO_SIZED_RE.fullmatch(name):
        return _resolve(_REGISTRY["demo"])
    if name.lower().endswith(".jsonl"):
        return _resolve(_JSONL_LOADER)
    raise DatasetError(
        f"unknown dataset {name!r}: expected one of {', '.join(available_datasets())}, "
        "demo-N (N problems), or a path to a .jsonl file"
    )


def load_problems(spec: DatasetSpec) -> list[Problem]:
    """Load, validate and select the problems ``spec`` names.

    Contract: the whole source is validated (see :class:`DatasetError`); ids are unique; the
    result keeps dataset order, holds only ``spec.ids`` when given (every one must exist), and
    at most ``spec.limit`` problems (the first ones after id selection).
    """
    name = spec.name_or_path.strip()
    if spec.uses_custom_fields and not name.lower().endswith(".jsonl"):
        raise DatasetError(
            f"{name}: --problem-field/--answer-field/--id-field apply only to .jsonl files"
        )
    problems = _loader_for(name)(spec)
    if not problems:
        raise DatasetError(f"{name}: dataset has no problems")
    seen: set[str] = set()
    for p in problems:
        # Loaders already report duplicates with line numbers; this guards registered ones.
        if p.id in seen:
            raise DatasetError(f"{name}: field '{spec.id_field}' value {p.id!r} is not unique")
        seen.add(p.id)
    if spec.ids is not None:
        unknown = [i for i in spec.ids if i not in seen]
        if unknown:
            sample = ", ".join(repr(p.id) for p in problems[:3])
            raise DatasetError(
                f"{name}: --ids names {len(unknown)} id(s) not found in field "
                f"'{spec.id_field}': {', '.join(map(repr, unknown))} (ids look like {sample})"
            )
        wanted = set(spec.ids)
        problems = [p for p in problems if p.id in wanted]
    if spec.limit is not None:
        problems = problems[: spec.limit]
    return problems


def local_benchmark_path(spec: DatasetSpec, filename: str) -> Path | None:
    """``<data dir>/<filename>`` when a data dir is configured (it must exist), else None."""
    data_dir = spec.resolved_data_dir
    if data_dir is None:
        return None
    path = Path(data_dir).expanduser() / filename
    if not path.is_file():
        origin = "--data-dir" if spec.data_dir else f"${DATA_DIR_ENV}"
        raise DatasetError(f"{path}: file not found (data dir {data_dir!r} from {origin})")
    return path


def hub_rows(dataset: str, split: str, local_name: str) -> list[dict[str, Any]]:
    """All rows of ``dataset``'s ``split`` from the Hugging Face Hub, as plain dicts.

    ``datasets`` is imported here, on first use, because it is slow to import and only this
    path needs it. ``local_name`` is the file a data dir would provide instead (for the error).
    """
    hint = f"or put {local_name} in a directory given by --data-dir or ${DATA_DIR_ENV}"
    try:
        import datasets as hf_datasets
    except ImportError as exc:
        raise DatasetError(
            f"{dataset}: loading from the Hugging Face Hub needs the 'datasets' package; "
            f"install it {hint}"
        ) from exc
    try:
        rows = hf_datasets.load_dataset(dataset, split=split)
    except Exception as exc:  # network, auth, renamed split...: re-raised with the remedy
        raise DatasetError(
            f"{dataset}: could not load split {split!r} from the Hugging Face Hub "
            f"({type(exc).__name__}: {exc}); check your connection {hint}"
        ) from exc
    return [dict(row) for row in rows]

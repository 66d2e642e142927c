"""Generic JSONL loader and the record validation shared by every file and Hub loader.

A JSONL dataset has one JSON object per line; blank lines are skipped. The problem, answer and
id fields are chosen by the :class:`~testtime.datasets.base.DatasetSpec`; every other field
goes into ``Problem.metadata`` unchanged, except a usable ``level`` which becomes
``Problem.level``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from testtime.datasets.base import MAX_PROBLEM_CHARS, DatasetError, DatasetSpec
from testtime.types import Problem

#: MATH writes levels as "Level 3"; other sets use plain integers.
_LEVEL_TEXT_RE = re.compile(r"\s*(?:level\s*)?([1-5])\s*", re.IGNORECASE)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def parse_level(value: Any) -> int | None:
    """Difficulty 1-5 from an int (``3``) or MATH-style text (``"Level 3"``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 1 <= value <= 5 else None
    if isinstance(value, str):
        match = _LEVEL_TEXT_RE.fullmatch(value)
        return int(match.group(1)) if match else None
    return None


def answer_text(value: Any, where: str, field: str) -> str:
    """The reference answer as a string; integers and finite floats are accepted and written
    exactly (``27.0`` -> ``"27"``), because some sets (AMC on the Hub) store numbers."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        raise DatasetError(f"{where}: field '{field}' must be a non-empty string, got ''")
    raise DatasetError(
        f"{where}: field '{field}' must be a non-empty string or a number, got {_type_name(value)}"
    )


def build_problem(
    record: Mapping[str, Any],
    where: str,
    *,
    problem_field: str = "problem",
    answer_field: str = "answer",
    id_field: str = "id",
    default_id: str | None = None,
) -> Problem:
    """Validate one record and turn it into a Problem.

    ``where`` prefixes every error (``"data.jsonl:17"``, ``"AI-MO/aimo-validation-amc row 3"``).
    A missing id field falls back to ``default_id`` (an error when that is None too).
    """
    for required in (problem_field, answer_field):
        if required not in record:
            raise DatasetError(f"{where}: field '{required}' is missing")
    text = record[problem_field]
    if not isinstance(text, str) or not text.strip():
        got = "''" if isinstance(text, str) else _type_name(text)
        raise DatasetError(
            f"{where}: field '{problem_field}' must be a non-empty string, got {got}"
        )
    if len(text) > MAX_PROBLEM_CHARS:
        raise DatasetError(
            f"{where}: field '{problem_field}' has {len(text)} characters, over the "
            f"{MAX_PROBLEM_CHARS}-character limit (wrong field or corrupt file?)"
        )
    answer = answer_text(record[answer_field], where, answer_field)
    if id_field in record:
        raw_id = record[id_field]
        if isinstance(raw_id, int) and not isinstance(raw_id, bool):
            pid = str(raw_id)
        elif isinstance(raw_id, str) and raw_id.strip():
            pid = raw_id.strip()
        else:
            got = "''" if isinstance(raw_id, str) else _type_name(raw_id)
            raise DatasetError(
                f"{where}: field '{id_field}' must be a non-empty string or an integer, got {got}"
            )
    elif default_id is not None:
        pid = default_id
    else:
        raise DatasetError(f"{where}: field '{id_field}' is missing")
    metadata = {k: v for k, v in record.items() if k not in (problem_field, answer_field, id_field)}
    level = parse_level(metadata.get("level"))
    if level is not None:
        # Kept in metadata only when unusable ("Level ?"), so records show what was there.
        del metadata["level"]
    return Problem(id=pid, problem=text, answer=answer, level=level, metadata=metadata)


def check_unique_ids(problems: list[Problem], wheres: list[str], id_field: str = "id") -> None:
    """Raise naming both places when two problems share an id (``wheres[i]`` locates
    ``problems[i]``, e.g. ``"MATH-500 row 7"``)."""
    first: dict[str, str] = {}
    for problem, where in zip(problems, wheres, strict=True):
        if problem.id in first:
            raise DatasetError(
                f"{where}: field '{id_field}' value {problem.id!r} duplicates {first[problem.id]}"
            )
        first[problem.id] = where


def read_jsonl(
    path: str | Path,
    *,
    problem_field: str = "problem",
    answer_field: str = "answer",
    id_field: str = "id",
) -> list[Problem]:
    """Read and validate a whole JSONL file.

    Errors (all :class:`DatasetError`, prefixed ``"<path>:<line>"``): unreadable file, invalid
    UTF-8 or JSON, a line that is not an object, a bad field (see :func:`build_problem`), an id
    already used on an earlier line, or a file without any problem.
    """
    path = Path(path)
    if not path.is_file():
        kind = "is a directory, not a file" if path.is_dir() else "file not found"
        raise DatasetError(f"{path}: {kind}")
    problems: list[Problem] = []
    first_line: dict[str, int] = {}
    with path.open("rb") as fh:
        # Bytes, decoded per line, so an encoding error can name its line.
        for lineno, raw in enumerate(fh, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetError(f"{where}: invalid UTF-8 ({exc.reason})") from exc
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(
                    f"{where}: invalid JSON: {exc.msg} (column {exc.colno})"
                ) from exc
            if not isinstance(record, dict):
                raise DatasetError(f"{where}: expected a JSON object, got {_type_name(record)}")
            problem = build_problem(
                record, where, problem_field=problem_field, answer_field=answer_field,
                id_field=id_field, default_id=f"line-{lineno}",
            )
            if problem.id in first_line:
                raise DatasetError(
                    f"{where}: field '{id_field}' value {problem.id!r} duplicates line "
                    f"{first_line[problem.id]}"
                )
            first_line[problem.id] = lineno
            problems.append(problem)
    if not problems:
        raise DatasetError(f"{path}: file is empty (no JSON lines with problems)")
    return problems


def load(spec: DatasetSpec) -> list[Problem]:
    """Registry loader for ``*.jsonl`` paths: :func:`read_jsonl` with the spec's field names."""
    return read_jsonl(
        Path(spec.name_or_path).expanduser(),
        problem_field=spec.problem_field,
        answer_field=spec.answer_field,
        id_field=spec.id_field,
    )

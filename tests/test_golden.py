"""Golden records: every method, run by the scripted policy over demo problems, writes exactly
the records written before a refactor (``tests/golden/*.jsonl``, from ``make_golden.py``).

Fields added to the schema since the golden files were written are ignored; every field they
hold must match exactly (texts, scores, token counts, trees, predictions, compute). Times are
left out. Regenerate the files only for an intended change of behaviour, and say so.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
_spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
assert _spec is not None and _spec.loader is not None
make_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_golden)


def project(value: Any, like: Any) -> Any:
    """``value`` restricted to the keys ``like`` has (recursively, through lists)."""
    if isinstance(like, dict) and isinstance(value, dict):
        return {k: project(value.get(k, "<missing>"), v) for k, v in like.items()}
    if isinstance(like, list) and isinstance(value, list) and len(like) == len(value):
        return [project(v, lk) for v, lk in zip(value, like, strict=True)]
    return value


@pytest.mark.parametrize("case", make_golden.CASES, ids=[c[0] for c in make_golden.CASES])
def test_records_equal_the_golden_ones(case: tuple[str, str, int, int, int, str],
                                       tmp_path: Path) -> None:
    stem, method, n, width, lookahead, semantics = case
    asyncio.run(make_golden.run_case(method, n, width, lookahead, semantics, tmp_path / "run"))
    got = make_golden.records(tmp_path / "run")
    want = [json.loads(line) for line in (GOLDEN / f"{stem}.jsonl").read_text().splitlines()]
    assert [r["id"] for r in got] == [r["id"] for r in want]
    for g, w in zip(got, want, strict=True):
        for key in make_golden.UNCOMPARED:
            g.pop(key, None)
            w.pop(key, None)
        assert project(g, w) == w, f"{stem}: problem {w['id']} differs from the golden record"

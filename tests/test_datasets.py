"""Tests for testtime.datasets: demo generation, benchmark files, JSONL validation, Hub path."""

from __future__ import annotations

import ast
import json
import operator
import os
import random
import re
import subprocess
import sys
import types
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from testtime.datasets import (
    MAX_PROBLEM_CHARS,
    DatasetError,
    DatasetSpec,
    available_datasets,
    generate_demo,
    load_problems,
)
from testtime.datasets import demo as demo_module
from testtime.types import Problem

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("TESTTIME_DATA_DIR") or REPO.parent / "shared" / "datasets")


@pytest.fixture
def data_dir() -> str:
    assert (DATA_DIR / "math500.jsonl").is_file(), f"benchmark data missing under {DATA_DIR}"
    return str(DATA_DIR)


# ---- a safe arithmetic evaluator (never eval) ---------------------------------------------

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv}


def safe_eval(expression: str, names: dict[str, int] | None = None) -> Fraction:
    """Evaluate + - * / ( ) on integers and named values, exactly."""
    names = names or {}

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return Fraction(node.value)
        if isinstance(node, ast.Name) and node.id in names:
            return Fraction(names[node.id])
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        raise ValueError(f"unsupported syntax in {expression!r}: {ast.dump(node)}")

    return walk(ast.parse(expression, mode="eval"))


def expression_from_text(text: str) -> str:
    """Turn an L1-L3 question ("What is (3 + 4) × 5?", "the sum of 4 and 5") into Python."""
    body = re.fullmatch(r"(?:What is|Compute) (.+)[?.]", text)
    assert body, f"unexpected arithmetic wording: {text!r}"
    expr = body.group(1)
    expr = re.sub(r"the sum of (\d+) and (\d+)", r"\1 + \2", expr)
    expr = re.sub(r"the product of (\d+) and (\d+)", r"\1 * \2", expr)
    for word, symbol in ((" plus ", " + "), (" minus ", " - "), (" times ", " * "),
                         ("×", "*"), ("÷", "/")):
        expr = expr.replace(word, symbol)
    return expr


# ---- demo -----------------------------------------------------------------------------------

def test_demo_is_deterministic_and_seeded_privately() -> None:
    random.seed(1234)
    state = random.getstate()
    first = generate_demo(20, seed=0)
    assert random.getstate() == state, "generate_demo must not touch the global RNG"
    assert generate_demo(20, seed=0) == first
    other = generate_demo(20, seed=1)
    assert [p.problem for p in other] != [p.problem for p in first]
    assert load_problems(DatasetSpec("demo")) == first
    # Sequential generation: a bigger set extends the default one.
    assert load_problems(DatasetSpec("demo-100"))[:20] == first


def test_demo_levels_are_interleaved_and_counted() -> None:
    problems = generate_demo(20)
    assert [p.level for p in problems[:5]] == [1, 2, 3, 4, 5]
    assert {lvl: sum(p.level == lvl for p in problems) for lvl in range(1, 6)} == {
        1: 4, 2: 4, 3: 4, 4: 4, 5: 4}
    assert [p.id for p in problems[:3]] == ["demo-0001-L1", "demo-0002-L2", "demo-0003-L3"]
    assert all(re.fullmatch(rf"demo-\d{{4}}-L{p.level}", p.id) for p in problems)
    seven = load_problems(DatasetSpec("demo-7"))
    assert [p.level for p in seven] == [1, 2, 3, 4, 5, 1, 2]
    assert [p.level for p in load_problems(DatasetSpec("demo", limit=5))] == [1, 2, 3, 4, 5]


def test_demo_is_varied() -> None:
    problems = generate_demo(100)
    assert len({p.problem for p in problems}) == 100
    assert len({p.id for p in problems}) == 100
    for level, templates in demo_module.TEMPLATES.items():
        used = {p.metadata["template"] for p in problems if p.level == level}
        assert used == {t.__name__ for t in templates}, f"level {level} uses only {used}"
    names = {name for name, _, _ in demo_module.NAMES}
    word_problems = [p for p in problems if p.level in (4, 5)]
    assert len({w for p in word_problems for w in p.problem.split() if w in names}) >= 6


def test_demo_answers_are_correct() -> None:
    for p in generate_demo(500, seed=7):
        assert re.fullmatch(r"\d+", p.answer), p
        answer = int(p.answer)
        if p.level in (1, 2, 3):
            assert safe_eval(expression_from_text(p.problem)) == answer, p
            assert safe_eval(p.metadata["expression"]) == answer, p
        else:
            values = p.metadata["values"]
            assert safe_eval(p.metadata["formula"], values) == answer, p
            for value in values.values():
                assert re.search(rf"(?<![\d-]){value}(?!\d)", p.problem), (value, p.problem)


def test_demo_difficulty_grows_with_level() -> None:
    problems = generate_demo(200)
    by_level = {lvl: [p for p in problems if p.level == lvl] for lvl in range(1, 6)}
    assert all(int(p.answer) <= 18 for p in by_level[1])
    assert all(len(p.problem) < 40 for p in by_level[1] + by_level[2])
    # Word problems at L5 need at least two operations, so at least three numbers (or a
    # "twice as many" step).
    for p in by_level[5]:
        assert len(p.metadata["values"]) >= 3 or "twice" in p.problem, p


def test_demo_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="demo size"):
        generate_demo(0)
    with pytest.raises(DatasetError, match="demo-0"):
        load_problems(DatasetSpec("demo-0"))


# ---- named benchmarks from the data dir ------------------------------------------------------

@pytest.mark.parametrize("name, count", [("math500", 500), ("aime24", 30), ("amc23", 40)])
def test_local_benchmarks(data_dir: str, name: str, count: int) -> None:
    problems = load_problems(DatasetSpec(name, data_dir=data_dir))
    assert len(problems) == count
    assert len({p.id for p in problems}) == count
    assert all(p.problem.strip() and p.answer.strip() for p in problems)
    if name == "math500":
        assert {p.level for p in problems} == {1, 2, 3, 4, 5}
        assert all("subject" in p.metadata and "level" not in p.metadata for p in problems)
        assert problems[0].id == "test/precalculus/807.json"
    else:
        assert [p.id for p in problems] == [f"{name}/{i:02d}" for i in range(count)]
        assert all(p.metadata["source"].startswith("https://artofproblemsolving.com/")
                   for p in problems)
        assert all(re.fullmatch(r"-?\d+", p.answer) for p in problems)


def test_data_dir_from_environment(data_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESTTIME_DATA_DIR", data_dir)
    assert len(load_problems(DatasetSpec("aime24"))) == 30


def test_missing_benchmark_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"amc23\.jsonl: file not found"):
        load_problems(DatasetSpec("amc23", data_dir=str(tmp_path)))


def test_ids_and_limit(data_dir: str) -> None:
    full = load_problems(DatasetSpec("math500", data_dir=data_dir))
    wanted = (full[10].id, full[3].id, full[7].id)
    chosen = load_problems(DatasetSpec("math500", data_dir=data_dir, ids=wanted))
    assert [p.id for p in chosen] == [full[3].id, full[7].id, full[10].id]  # dataset order
    limited = load_problems(DatasetSpec("math500", data_dir=data_dir, ids=wanted, limit=2))
    assert [p.id for p in limited] == [full[3].id, full[7].id]
    assert load_problems(DatasetSpec("math500", data_dir=data_dir, limit=5)) == full[:5]


def test_unknown_ids_are_listed(data_dir: str) -> None:
    spec = DatasetSpec("aime24", data_dir=data_dir, ids=("aime24/01", "nope", "aime24/99"))
    with pytest.raises(DatasetError) as err:
        load_problems(spec)
    message = str(err.value)
    assert "aime24" in message and "field 'id'" in message
    listed = message.split("ids look like")[0]
    assert "'nope'" in listed and "'aime24/99'" in listed and "'aime24/01'" not in listed


def test_unknown_ids_in_a_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"id": "a", "problem": "1+1?", "answer": "2"}) + "\n")
    with pytest.raises(DatasetError, match=r"mine\.jsonl.*field 'id'.*'b'"):
        load_problems(DatasetSpec(str(path), ids=("b",)))


def test_unknown_name_and_misplaced_fields() -> None:
    with pytest.raises(DatasetError, match="unknown dataset 'gsm8k'.*aime24.*math500"):
        load_problems(DatasetSpec("gsm8k"))
    with pytest.raises(DatasetError, match="only to .jsonl"):
        load_problems(DatasetSpec("demo", problem_field="question"))
    assert {"demo", "math500", "aime24", "amc23"} <= set(available_datasets())


# ---- generic JSONL ----------------------------------------------------------------------------

def test_generic_jsonl_with_custom_fields(tmp_path: Path) -> None:
    path = tmp_path / "custom.jsonl"
    lines = [
        {"uid": "q1", "question": "What is 6 x 7?", "final": 42, "level": 3, "topic": "mul"},
        {"question": "Name the 2nd prime.", "final": "3", "level": "Level 9"},
        {"uid": 17, "question": "Half of 1?", "final": 0.5},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines[:2]) + "\n\n  \n"
                    + json.dumps(lines[2]) + "\n")
    spec = DatasetSpec(str(path), problem_field="question", answer_field="final", id_field="uid")
    problems = load_problems(spec)
    assert problems == [
        Problem("q1", "What is 6 x 7?", "42", 3, {"topic": "mul"}),
        Problem("line-2", "Name the 2nd prime.", "3", None, {"level": "Level 9"}),
        Problem("17", "Half of 1?", "0.5", None, {}),
    ]


def _write(tmp_path: Path, lines: list[Any] | str, name: str = "bad.jsonl") -> Path:
    path = tmp_path / name
    if isinstance(lines, str):
        path.write_text(lines)
    else:
        path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n"
                                for x in lines))
    return path


OK = {"id": "a", "problem": "What is 1 + 1?", "answer": "2"}


@pytest.mark.parametrize("lines, where, needles", [
    ([OK, {"id": "b", "problem": "p"}], "bad.jsonl:2", ["field 'answer' is missing"]),
    ([{"id": "a", "problem": 7, "answer": "2"}], "bad.jsonl:1",
     ["field 'problem' must be a non-empty string, got int"]),
    ([OK, {"id": "b", "problem": "  ", "answer": "2"}], "bad.jsonl:2", ["field 'problem'", "''"]),
    ([OK, "", '{"id": "b", "problem": "x", "answer": }'], "bad.jsonl:3", ["invalid JSON"]),
    ([OK, "[1, 2]"], "bad.jsonl:2", ["expected a JSON object, got list"]),
    ([OK, {"id": "b", "problem": "q", "answer": None}], "bad.jsonl:2",
     ["field 'answer'", "got null"]),
    ([OK, {"id": True, "problem": "q", "answer": "1"}], "bad.jsonl:2", ["field 'id'", "bool"]),
    ([OK, {"id": "b", "problem": "q", "answer": "1"}, {"id": "a", "problem": "r", "answer": "1"}],
     "bad.jsonl:3", ["field 'id'", "'a'", "duplicates line 1"]),
    ([OK, {"id": "b", "problem": "x" * (MAX_PROBLEM_CHARS + 1), "answer": "1"}], "bad.jsonl:2",
     ["field 'problem'", str(MAX_PROBLEM_CHARS + 1), "limit"]),
])
def test_malformed_jsonl(tmp_path: Path, lines: list[Any], where: str,
                         needles: list[str]) -> None:
    path = _write(tmp_path, lines)
    with pytest.raises(DatasetError) as err:
        load_problems(DatasetSpec(str(path)))
    message = str(err.value)
    assert message.startswith(str(tmp_path / where) + ":"), message
    for needle in needles:
        assert needle in message, message


@pytest.mark.parametrize("content", ["", "\n  \n\n"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    path = _write(tmp_path, content, "empty.jsonl")
    with pytest.raises(DatasetError, match=r"empty\.jsonl: file is empty"):
        load_problems(DatasetSpec(str(path)))


def test_invalid_utf8_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes(json.dumps(OK).encode() + b"\n" + b'{"problem": "caf\xe9"}\n')
    with pytest.raises(DatasetError, match=r"latin\.jsonl:2: invalid UTF-8"):
        load_problems(DatasetSpec(str(path)))
    with pytest.raises(DatasetError, match=r"nowhere\.jsonl: file not found"):
        load_problems(DatasetSpec(str(tmp_path / "nowhere.jsonl")))


def test_spec_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in ({"limit": 0}, {"limit": True}, {"ids": "a,b"}, {"ids": ()}, {"ids": ("a", "a")},
                {"answer_field": "problem"}, {"id_field": ""}, {"data_dir": ""}):
        with pytest.raises(ValueError):
            DatasetSpec("demo", **bad)
    with pytest.raises(ValueError):
        DatasetSpec("  ")
    assert DatasetSpec("demo", ids=["x", "y"]).ids == ("x", "y")  # type: ignore[arg-type]
    monkeypatch.setenv("TESTTIME_DATA_DIR", "/from/env")
    assert DatasetSpec("math500").resolved_data_dir == "/from/env"
    assert DatasetSpec("math500", data_dir="/given").resolved_data_dir == "/given"
    monkeypatch.delenv("TESTTIME_DATA_DIR")
    assert DatasetSpec("math500").resolved_data_dir is None


# ---- Hugging Face Hub path (fake `datasets` module) ------------------------------------------

def _local_rows(name: str) -> list[dict[str, Any]]:
    with open(DATA_DIR / f"{name}.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, list[dict[str, Any]]], list]:
    """Install a fake ``datasets`` whose load_dataset serves ``rows[name]`` and logs calls."""
    rows: dict[str, list[dict[str, Any]]] = {}
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def load_dataset(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        calls.append((args, kwargs))
        if args[0] not in rows:
            raise ConnectionError("offline")
        return rows[args[0]]

    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", module)
    monkeypatch.delenv("TESTTIME_DATA_DIR", raising=False)
    return rows, calls


def test_hub_math500_matches_local_file(data_dir: str, fake_hub: Any) -> None:
    rows, calls = fake_hub
    rows["HuggingFaceH4/MATH-500"] = [
        {"problem": r["problem"], "solution": r["solution"], "answer": r["answer"],
         "subject": r["subject"], "level": int(r["level"].split()[-1]), "unique_id": r["id"]}
        for r in _local_rows("math500")
    ]
    hub = load_problems(DatasetSpec("math500"))
    assert calls == [(("HuggingFaceH4/MATH-500",), {"split": "test"})]
    assert hub == load_problems(DatasetSpec("math500", data_dir=data_dir))


def test_hub_aime24_filters_sorts_and_unpads(data_dir: str, fake_hub: Any) -> None:
    rows, calls = fake_hub
    local = _local_rows("aime24")
    hub_rows = [{"id": 60 + i, "problem": r["problem"], "solution": r["solution"],
                 "answer": r["answer"].zfill(3), "url": r["source"]} for i, r in enumerate(local)]
    other_years = [{"id": i, "problem": f"Old problem {i}", "solution": "s", "answer": "007",
                    "url": f"https://artofproblemsolving.com/wiki/index.php/"
                           f"2023_AIME_I_Problems/Problem_{i + 1}"} for i in range(5)]
    mixed = other_years + hub_rows
    random.Random(3).shuffle(mixed)
    rows["AI-MO/aimo-validation-aime"] = mixed
    hub = load_problems(DatasetSpec("aime24"))
    assert calls == [(("AI-MO/aimo-validation-aime",), {"split": "train"})]
    assert hub == load_problems(DatasetSpec("aime24", data_dir=data_dir))


def test_hub_amc23_converts_float_answers(data_dir: str, fake_hub: Any) -> None:
    rows, calls = fake_hub
    local = _local_rows("amc23")
    rows["AI-MO/aimo-validation-amc"] = [
        {"id": 43 + i, "problem": r["problem"], "answer": float(r["answer"]), "url": r["source"]}
        for i, r in enumerate(local)
    ] + [{"id": 0, "problem": "2022 problem", "answer": 3.0,
          "url": "https://artofproblemsolving.com/wiki/index.php/2022_AMC_12A_Problems/Problem_1"}]
    hub = load_problems(DatasetSpec("amc23", ids=("amc23/05",)))
    assert calls == [(("AI-MO/aimo-validation-amc",), {"split": "train"})]
    assert hub == [p for p in load_problems(DatasetSpec("amc23", data_dir=data_dir))
                   if p.id == "amc23/05"]


def test_hub_bad_row_and_failures(fake_hub: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    rows, _ = fake_hub
    good = {"problem": "p", "solution": "s", "answer": "1", "subject": "Algebra", "level": 1}
    rows["HuggingFaceH4/MATH-500"] = [dict(good, unique_id="a"), dict(good, unique_id="b"),
                                      {k: v for k, v in good.items() if k != "answer"}
                                      | {"unique_id": "c"}]
    with pytest.raises(DatasetError, match=r"HuggingFaceH4/MATH-500 row 2: field 'answer'"):
        load_problems(DatasetSpec("math500"))
    rows["HuggingFaceH4/MATH-500"] = [dict(good, unique_id="a"), dict(good, unique_id="a")]
    with pytest.raises(DatasetError, match=r"row 1: field 'unique_id' value 'a' duplicates .*0"):
        load_problems(DatasetSpec("math500"))
    # Network failure: the error names the dataset and the local alternative.
    with pytest.raises(DatasetError, match=r"AI-MO/aimo-validation-aime.*offline.*aime24\.jsonl"):
        load_problems(DatasetSpec("aime24"))
    monkeypatch.setitem(sys.modules, "datasets", None)  # import now fails
    with pytest.raises(DatasetError, match="needs the 'datasets' package"):
        load_problems(DatasetSpec("amc23"))


def test_import_is_light() -> None:
    code = "import sys, testtime.datasets; assert 'datasets' not in sys.modules"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)

"""Hostile inputs through the real runner: malformed datasets get a clear error before any
model loads; garbage model and scorer outputs get a graded "wrong" or an error record, never a
crash or a hang; backend errors are retried with backoff, then recorded; no default trusts
remote code or binds beyond loopback.

The counts (inputs tried, clear errors, graded, hangs) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import ast
import asyncio
import json
import math
import os
import random
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from testtime.config import DatasetConfig, RunConfig
from testtime.datasets import MAX_PROBLEM_CHARS, DatasetError
from testtime.retry import (
    PermanentError,
    RetryError,
    RetryPolicy,
    retry_async,
    retry_sync,
)
from testtime.runner import run
from testtime.scoring.base import ScoreResult
from testtime.search.base import SearchConfig
from testtime.store import RecordStore
from testtime.testing import RuleScorer, ScriptedPolicy
from testtime.types import Completion, GenerationRequest, ScoreRequest, Step

SRC = Path(__file__).resolve().parents[1] / "src" / "testtime"
#: Longest a whole hostile run may take: one Math-Verify timeout (5 s) plus slack.
RUN_LIMIT_S = 90.0
FAST_RETRY = RetryPolicy(max_retries=2, base_delay_s=0.01, max_delay_s=0.05)
_KEY_RE = re.compile(r"\[(\w+)\]")


def key_of(text: str) -> str:
    match = _KEY_RE.search(text)
    assert match, text
    return match.group(1)


def write_problems(path: Path, keys: Sequence[str], extra: str = "") -> Path:
    path.write_text("".join(
        json.dumps({"id": k, "problem": f"What is 1 + 2? [{k}]{extra}", "answer": "3"}) + "\n"
        for k in keys))
    return path


def config(data: Path, n: int = 2, **kw: Any) -> RunConfig:
    return RunConfig(dataset=DatasetConfig(name=str(data)), policy="scripted", prm="rule",
                     search=SearchConfig(n=n, **kw))


# --- malformed datasets -------------------------------------------------------------------

BAD_DATASETS: dict[str, tuple[bytes, str]] = {
    # name: (file content, what the error must say besides the file name)
    "missing_problem": (b'{"id": "a", "answer": "1"}\n', r":1: field 'problem' is missing"),
    "missing_answer": (b'{"id": "a", "problem": "1+1"}\n', r":1: field 'answer' is missing"),
    "problem_not_text": (b'{"id": "a", "problem": 5, "answer": "1"}\n',
                         r":1: field 'problem' must be a non-empty string, got int"),
    "problem_empty": (b'{"id": "a", "problem": "  ", "answer": "1"}\n',
                      r":1: field 'problem' must be a non-empty string"),
    "answer_list": (b'{"id": "a", "problem": "1+1", "answer": [2]}\n',
                    r":1: field 'answer' must be a non-empty string or a number, got list"),
    "answer_null": (b'{"id": "a", "problem": "1+1", "answer": null}\n',
                    r":1: field 'answer' .* got null"),
    "answer_nan": (b'{"id": "a", "problem": "1+1", "answer": NaN}\n', r":1: field 'answer'"),
    "id_object": (b'{"id": {"x": 1}, "problem": "1+1", "answer": "2"}\n',
                  r":1: field 'id' must be a non-empty string or an integer, got dict"),
    "duplicate_id": (b'{"id": "a", "problem": "1+1", "answer": "2"}\n'
                     + b'{"id": "a", "problem": "2+2", "answer": "4"}\n',
                     r":2: field 'id' value 'a' duplicates line 1"),
    "empty_file": (b"", r"file is empty"),
    "blank_lines_only": (b"\n  \n\n", r"file is empty"),
    "invalid_json": (b'{"id": "a", "problem": "1+1", "answer": "2"}\n{"id": "b", "prob\n',
                     r":2: invalid JSON"),
    "not_an_object": (b'[1, 2, 3]\n', r":1: expected a JSON object, got list"),
    "invalid_utf8": (b'{"id": "a", "problem": "\xff\xfe", "answer": "2"}\n',
                     r":1: invalid UTF-8"),
    "huge_problem": (json.dumps({"id": "a", "problem": "x" * (MAX_PROBLEM_CHARS + 1),
                                 "answer": "1"}).encode() + b"\n",
                     rf":1: field 'problem' has {MAX_PROBLEM_CHARS + 1} characters"),
}


def _dataset_outcome(cfg: RunConfig, run_dir: Path, path: Path, expected: str) -> str:
    """``clear`` (a DatasetError naming the file and the fault, nothing written), or what
    happened instead."""
    try:
        asyncio.run(asyncio.wait_for(run(cfg, run_dir, progress=False), 30))
    except DatasetError as exc:
        message = str(exc)
        if not message.startswith(str(path)) or not re.search(expected, message):
            return f"unclear: {message}"
        return "wrote a run directory" if run_dir.exists() else "clear"
    except TimeoutError:
        return "hang"
    except Exception as exc:  # noqa: BLE001  (anything but a clear DatasetError is a failure)
        return f"crash: {type(exc).__name__}: {exc}"
    return "no error"


def test_malformed_datasets_fail_clearly_before_any_model_loads(tmp_path: Path) -> None:
    outcomes: dict[str, str] = {}
    for name, (content, expected) in BAD_DATASETS.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_bytes(content)
        # an unloadable policy: reaching the model would fail differently
        cfg = RunConfig(dataset=DatasetConfig(name=str(path)), policy="hf:/nonexistent/model")
        outcomes[name] = _dataset_outcome(cfg, tmp_path / name, path, expected)
    absent = tmp_path / "absent.jsonl"
    missing = RunConfig(dataset=DatasetConfig(name=str(absent)))
    outcomes["absent"] = _dataset_outcome(missing, tmp_path / "absent", absent,
                                          r"absent\.jsonl: file not found")
    clear = sum(o == "clear" for o in outcomes.values())
    print(f"\nmalformed datasets: {len(outcomes)} tried, {clear} clear errors, "
          f"{sum(o.startswith('crash') for o in outcomes.values())} crashes, "
          f"{sum(o == 'hang' for o in outcomes.values())} hangs")
    assert {k: o for k, o in outcomes.items() if o != "clear"} == {}


# --- garbage model outputs ----------------------------------------------------------------

GARBAGE: dict[str, tuple[str, str]] = {
    # key: (model output, expected outcome: wrong | correct)
    "nested": ("\\boxed{" + "{" * 50_000 + "3" + "}" * 50_000 + "}", "wrong"),
    "unbalanced": ("So \\boxed{" + "{" * 50_000 + "x", "wrong"),
    "tower_braced": ("\\boxed{10^{10^{10}}}", "wrong"),  # Math-Verify times out: bounded
    "tower": ("The answer is \\boxed{10^10^10}", "wrong"),
    "answer_100k": ("\\boxed{" + "9" * 100_000 + "}", "wrong"),
    "text_100k": ("blah " * 20_000, "wrong"),
    # Best-of-N keeps every step (as the paper's code): the answer after step 2000 counts
    "steps_2k": ("step\n\n" * 2_000 + "\\boxed{3}", "correct"),
    "over_token_limit": ("step " * 10_000 + "\\boxed{3}", "wrong"),  # cut at 8192 tokens
    "control": ("\x00\x01\x1b[31m\x07 \\boxed{\x00\x1b[0m3\x08}", "wrong"),
    "nul_only": ("\x00" * 1000, "wrong"),
    "surrogate": ("\\boxed{\ud800}", "wrong"),
    "empty_box": ("\\boxed{}", "wrong"),
    "boxes_10k": ("\\boxed{1} " * 10_000, "wrong"),
    "nested_boxes": ("\\boxed{\\boxed{\\boxed{3}}}", "correct"),
    "division_by_zero": ("\\boxed{\\frac{1}{0}}", "wrong"),
    "infinity": ("\\boxed{\\infty}", "wrong"),
    "not_a_number": ("\\boxed{nan}", "wrong"),
    "bidi_zero_width": ("\\boxed{\u202e3\u200b\ufeff}", "wrong"),
    "latex_bomb": ("\\boxed{" + "\\frac{1}{" * 300 + "2" + "}" * 300 + "}", "wrong"),
    "empty": ("", "wrong"),
    "right_after_junk": ("\x00" * 100 + "{{{ }}} \\boxed{3}", "correct"),
}


def garbage_script(problem: str, prefix: str, i: int, params: Any) -> str:
    return GARBAGE[key_of(problem)][0]


def test_garbage_model_outputs_are_graded_or_recorded_never_crash_or_hang(
    tmp_path: Path
) -> None:
    # one more problem whose own text carries a lone surrogate (a JSON "\ud800" escape)
    data = write_problems(tmp_path / "set.jsonl", list(GARBAGE))
    with data.open("a") as f:
        f.write('{"id": "bad_text", "problem": "What is 1 + 2? [empty] \\ud800", '
                '"answer": "3"}\n')
    cfg = config(data)
    run_dir = tmp_path / "run"
    try:
        out = asyncio.run(asyncio.wait_for(
            run(cfg, run_dir, policy=ScriptedPolicy(garbage_script),
                scorer=RuleScorer(lambda q, before, s: 0.5), progress=False), RUN_LIMIT_S))
    except TimeoutError:
        pytest.fail(f"a run over garbage outputs hung for more than {RUN_LIMIT_S} s")
    # the file is valid UTF-8 JSON throughout and reads back
    text = (run_dir / "results.jsonl").read_bytes().decode("utf-8")
    assert len(text.splitlines()) == len(GARBAGE) + 1
    records = RecordStore(run_dir / "results.jsonl").records
    graded = {k: r for k, r in records.items() if r.error is None}
    errors = {k: r.error for k, r in records.items() if r.error is not None}
    print(f"\ngarbage outputs: {len(records)} tried, {len(graded)} graded "
          f"({sum(not r.predictions['2']['majority'].correct for r in graded.values())} wrong), "
          f"{len(errors)} errors, 0 hangs; wall {out.summary['wall_time_s']:.1f} s")
    assert not errors, errors
    for key, (_, outcome) in GARBAGE.items():
        record = records[key]
        assert len(record.candidates) == 2
        assert all(c.correct == (outcome == "correct") for c in record.candidates), key
        assert record.predictions["2"]["majority"].correct == (outcome == "correct"), key
    assert "\ufffd" in records["bad_text"].problem  # stored, with the surrogate replaced
    assert out.summary["errors"] == 0 and out.summary["completed"] == len(GARBAGE) + 1


def garbage_scores(question: str, before: Sequence[Step], step: Step) -> float:
    return {"nan": math.nan, "inf": math.inf, "neg": -5.0, "big": 1e308}[key_of(question)]


class ShortScorer(RuleScorer):
    """Returns one score too few for one problem: a scorer bug the runner must contain."""

    async def score(self, requests: Sequence[ScoreRequest]) -> ScoreResult:
        out = await super().score(requests)
        return ScoreResult([s[:-1] if "short" in r.question else s
                            for r, s in zip(requests, out.scores, strict=True)], out.tokens)


def test_garbage_scores_are_contained(tmp_path: Path) -> None:
    data = write_problems(tmp_path / "set.jsonl", ["nan", "inf", "neg", "big", "short"])

    def rule(question: str, before: Sequence[Step], step: Step) -> float:
        return 0.5 if "short" in question else garbage_scores(question, before, step)

    out = asyncio.run(asyncio.wait_for(run(
        config(data), tmp_path / "run",
        policy=ScriptedPolicy(lambda *a: "One.\n\nTwo.\n\n\\boxed{3}"),
        scorer=ShortScorer(rule), progress=False), RUN_LIMIT_S))
    records = RecordStore(tmp_path / "run" / "results.jsonl").records
    assert set(records) == {"nan", "inf", "neg", "big", "short"}
    for key in ("nan", "inf", "neg", "big"):
        assert records[key].error is None
        assert records[key].predictions["2"]["majority"].correct  # voting ignores scores
    # Non-finite scores are counted (3 steps x 2 samples each) and stored as null.
    assert records["nan"].compute.nonfinite_scores == records["inf"].compute.nonfinite_scores == 6
    assert records["neg"].compute.nonfinite_scores == records["big"].compute.nonfinite_scores == 0
    assert all(s.score is None for c in records["nan"].candidates for s in c.steps)
    assert records["short"].error is not None and "ValueError" in records["short"].error
    assert out.summary["errors"] == 1


# --- backend errors: retried with backoff, then recorded ----------------------------------


class FailingPolicy(ScriptedPolicy):
    """Raises the scripted backend error for the first ``times`` requests of a problem."""

    FAULTS: ClassVar[dict[str, tuple[BaseException, int]]] = {
        "timeout": (TimeoutError("request timed out after 60 s"), 1),
        "oom": (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), 2),
        "http5xx": (ConnectionError("HTTP 503 Service Unavailable"), 1),
        "malformed": (ValueError("malformed completion: missing 'choices'"), 2),
        "down": (ConnectionError("HTTP 502 Bad Gateway"), 99),
        "bad_request": (PermanentError("prompt longer than the context window"), 99),
    }

    def __init__(self) -> None:
        super().__init__(lambda *a: "So \\boxed{3}")
        self.seen: dict[str, int] = {}

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        for r in requests:
            key = key_of(r.messages[-1].content)
            self.seen[key] = self.seen.get(key, 0) + 1
            if key in self.FAULTS and self.seen[key] <= self.FAULTS[key][1]:
                raise self.FAULTS[key][0]
        return await super().generate(requests)


def test_backend_errors_are_retried_with_backoff_then_recorded(tmp_path: Path) -> None:
    keys = ["fine", *FailingPolicy.FAULTS]
    data = write_problems(tmp_path / "set.jsonl", keys)
    policy = FailingPolicy()
    out = asyncio.run(run(config(data), tmp_path / "run", policy=policy,
                          scorer=RuleScorer(lambda *a: 0.5), progress=False,
                          retry=FAST_RETRY))
    records = RecordStore(tmp_path / "run" / "results.jsonl").records
    assert records["fine"].attempts == 1 and records["fine"].error is None
    for key in ("timeout", "oom", "http5xx", "malformed"):
        assert records[key].error is None, key
        assert records[key].attempts == FailingPolicy.FAULTS[key][1] + 1, key
        assert records[key].predictions["2"]["majority"].correct
    assert records["down"].attempts == 3
    assert records["down"].error == \
        "ConnectionError: HTTP 502 Bad Gateway (after 3 attempts)"
    assert records["bad_request"].attempts == 1  # a permanent error is not retried
    assert records["bad_request"].error == \
        "PermanentError: prompt longer than the context window"
    assert out.summary["errors"] == 2 and out.summary["completed"] == len(keys) - 2


BATCH_ERROR_CHILD = """
import asyncio, json, sys
from pathlib import Path
from testtime.config import DatasetConfig, RunConfig
from testtime.retry import RetryPolicy
from testtime.runner import run
from testtime.scoring.base import ScoreResult
from testtime.search.base import SearchConfig
from testtime.testing import RuleScorer, ScriptedPolicy

def script(problem, prefix, i, params):
    if "boom" in problem:
        raise RuntimeError("CUDA error: device-side assert triggered")
    return "\\\\boxed{3}"

tmp = Path(sys.argv[1])
(tmp / "set.jsonl").write_text("".join(json.dumps({"id": k, "problem": f"1+2? {k}",
                                                   "answer": "3"}) + "\\n" for k in ("ok", "boom")))
cfg = RunConfig(dataset=DatasetConfig(name=str(tmp / "set.jsonl")), policy="scripted",
                prm="rule", search=SearchConfig(n=2))
out = asyncio.run(run(cfg, tmp / "run", policy=ScriptedPolicy(script),
                      scorer=RuleScorer(lambda *a: 0.5), progress=False,
                      retry=RetryPolicy(base_delay_s=0.01)))
print(out.summary["completed"], out.summary["errors"])
"""


def test_an_error_inside_a_backend_batch_is_recorded_not_hung(tmp_path: Path) -> None:
    # in a child process: a hung run must not leave threads or tasks behind in this one
    env = {**os.environ, "PYTHONPATH": str(SRC.parent)}
    try:
        proc = subprocess.run([sys.executable, "-c", BATCH_ERROR_CHILD, str(tmp_path)],
                              capture_output=True, text=True, env=env, timeout=5,
                              check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("the run hangs when a backend batch raises")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["1", "1"]  # one completed, one recorded error


# --- the retry policy itself -----------------------------------------------------------------


def test_backoff_is_exponential_capped_and_jittered() -> None:
    policy = RetryPolicy(max_retries=6, base_delay_s=0.5, multiplier=2, max_delay_s=4,
                         jitter=0.25)
    rng = random.Random(0)
    for retry, base in enumerate([0.5, 1, 2, 4, 4, 4]):
        draws = [policy.delay(retry, rng) for _ in range(200)]
        assert base * 0.75 <= min(draws) and max(draws) <= base * 1.25
        assert max(draws) - min(draws) > base * 0.3  # jitter actually spreads them
    assert RetryPolicy(jitter=0).delay(2) == 2.0
    for bad in ({"max_retries": -1}, {"jitter": 1.5}, {"multiplier": 0.5},
                {"attempt_timeout_s": 0}):
        with pytest.raises(ValueError, match="RetryPolicy"):
            RetryPolicy(**bad)  # type: ignore[arg-type]


def test_retry_loops_sleep_between_attempts_and_stop_when_told() -> None:
    slept: list[float] = []
    calls = 0

    def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise OSError("connection reset")
        return "ok"

    policy = RetryPolicy(max_retries=3, base_delay_s=1, jitter=0)
    assert retry_sync(flaky, policy, sleep=slept.append) == ("ok", 3)
    assert slept == [1, 2]

    async def never() -> None:
        raise OSError("still down")

    async def slow() -> str:
        await asyncio.sleep(10)
        return "late"

    async def interrupted() -> None:
        raise KeyboardInterrupt

    async def no_sleep(_: float) -> None:
        return None

    with pytest.raises(RetryError) as info:
        asyncio.run(retry_async(never, RetryPolicy(max_retries=2), what="p7", sleep=no_sleep))
    assert info.value.attempts == 3 and isinstance(info.value.last, OSError)
    assert str(info.value) == "p7 failed after 3 attempt(s): OSError: still down"
    timed = RetryPolicy(max_retries=1, attempt_timeout_s=0.05)
    with pytest.raises(RetryError) as info:
        asyncio.run(retry_async(slow, timed, sleep=no_sleep))
    assert info.value.attempts == 2 and isinstance(info.value.last, TimeoutError)
    with pytest.raises(KeyboardInterrupt):  # never swallowed, never retried
        asyncio.run(retry_async(interrupted, RetryPolicy(max_retries=5), sleep=no_sleep))


# --- safe defaults ----------------------------------------------------------------------------


def _inside_guard(parents: list[ast.AST]) -> bool:
    """Whether an ``if`` around this node tests ``trust_remote_code``."""
    return any(isinstance(p, ast.If) and "trust_remote_code" in ast.unparse(p.test)
               for p in parents)


def _walk(node: ast.AST, parents: list[ast.AST]) -> Any:
    yield node, parents
    for child in ast.iter_child_nodes(node):
        yield from _walk(child, [*parents, node])


def test_nothing_trusts_remote_code_or_binds_publicly_by_default() -> None:
    checked = 0
    problems: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node, parents in _walk(tree, []):
            where = f"{path.relative_to(SRC)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = node.args
                positional = args.posonlyargs + args.args
                pairs = list(zip(positional[len(positional) - len(args.defaults):],
                                 args.defaults, strict=True))
                pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults,
                                                 strict=True) if d is not None]
                for arg, default in pairs:
                    value = ast.unparse(default)
                    if arg.arg == "trust_remote_code":
                        checked += 1
                        if value != "False":
                            problems.append(f"{where}: parameter default {value}")
                    if arg.arg == "host" and "0.0.0.0" in value:
                        problems.append(f"{where}: host default {value}")
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                    and node.value is not None:
                value = ast.unparse(node.value)
                if node.target.id == "trust_remote_code":
                    checked += 1
                    if value != "False":
                        problems.append(f"{where}: field default {value}")
                if node.target.id == "host" and value.strip("'\"") not in \
                        ("127.0.0.1", "localhost", "::1"):
                    problems.append(f"{where}: host field default {value}")
            elif isinstance(node, ast.keyword) and node.arg == "trust_remote_code" \
                    and ast.unparse(node.value) == "True" and not _inside_guard(parents):
                problems.append(f"{where}: trust_remote_code=True outside an opt-in branch")
            elif isinstance(node, ast.Assign) and "trust_remote_code" in \
                    ast.unparse(node.targets[0]) and ast.unparse(node.value) == "True" \
                    and not _inside_guard(parents):
                problems.append(f"{where}: sets trust_remote_code = True unconditionally")
            elif isinstance(node, ast.Dict):
                for k, v in zip(node.keys, node.values, strict=True):
                    if k is not None and ast.unparse(k).strip("'\"") == "trust_remote_code" \
                            and ast.unparse(v) == "True" and not _inside_guard(parents):
                        problems.append(f"{where}: {{'trust_remote_code': True}} by default")
    assert not problems, problems
    assert checked >= 10  # the policy backends, PRM loaders and CLI options were all seen
    assert "trust_remote_code" not in RunConfig().policy_options
    assert "trust_remote_code" not in RunConfig().prm_options

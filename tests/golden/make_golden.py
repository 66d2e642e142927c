"""Write the golden run records the refactors are checked against (tests/test_golden.py).

    python tests/golden/make_golden.py          # rewrites tests/golden/*.jsonl

A deterministic branching script (steps drawn from a hash of problem, prefix and sample index,
some ending in ``\\boxed``, some at EOS, some cut by the step limit) and a hash-based step
scorer run every method over the first demo problems through the real runner. Only what the
code under test decides goes into the file: times are dropped. Regenerate only when a change of
behaviour is intended, and say so in the commit.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
#: (file stem, method, n, beam width, lookahead, semantics)
CASES: tuple[tuple[str, str, int, int, int, str], ...] = (
    ("cot", "cot", 1, 4, 0, "paper"),
    ("best_of_n", "best_of_n", 8, 4, 0, "paper"),
    ("beam_search", "beam_search", 8, 2, 0, "paper"),
    ("dvts", "dvts", 8, 4, 0, "paper"),
    ("beam_search_sal", "beam_search", 8, 2, 0, "sal"),
    ("dvts_sal_lookahead", "dvts", 8, 4, 1, "sal"),
    ("particle_filtering", "particle_filtering", 8, 4, 0, "paper"),
    ("adaptive_sc", "adaptive_sc", 8, 4, 0, "paper"),
)
PROBLEMS = 6
#: Fields that vary from run to run (times) and are left out of the comparison.
VOLATILE = ("wall_time_s",)
#: Fields that are no behaviour: the record schema's version number.
UNCOMPARED = ("schema_version",)


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


def golden_script(problem: str, prefix: str, i: int, params: Any) -> str:
    """The rest of a solution after ``prefix``: up to four more steps, each a short sentence;
    the last one boxes one of three answers (or none, ending at EOS)."""
    depth = prefix.count("\n\n")
    out = []
    for k in range(4):
        h = _h(problem, prefix, i if params.temperature > 0 else 0, k)
        d = depth + k
        if d >= 2 and h % 5 < 2 or d >= 5:
            ans = ("7", "12", "7")[h % 3]
            out.append(f"So the answer is $\\boxed{{{ans}}}$.\n\n")
            break
        if h % 11 == 0:
            out.append("I am not sure how to go on")  # ends at EOS without an answer
            break
        words = " ".join(f"w{(h >> (4 * j)) % 13}" for j in range(1 + h % 6))
        out.append(f"Step {d + 1}: {words}.\n\n")
    return "".join(out)


def golden_rule(question: str, before: Sequence[Any], step: Any) -> float:
    return (_h(question, len(before), step.text) % 1000) / 1000.0


def canonical(line: str) -> dict[str, Any]:
    rec = json.loads(line)
    for key in VOLATILE:
        rec.pop(key, None)
    return rec


async def run_case(method: str, n: int, width: int, lookahead: int, semantics: str,
                   out: Path) -> None:
    from testtime.config import DatasetConfig, RunConfig
    from testtime.runner import run
    from testtime.search.base import SamplingConfig, SearchConfig
    from testtime.testing import RuleScorer, ScriptedPolicy

    cfg = RunConfig(
        dataset=DatasetConfig(name="demo", limit=PROBLEMS),
        policy="scripted", prm="rule",
        search=SearchConfig(method=method, n=n, beam_width=width, max_depth=6,
                            max_step_tokens=7, max_path_tokens=40, lookahead=lookahead,
                            semantics=semantics),  # type: ignore[arg-type]
        sampling=SamplingConfig(temperature=0.7, seed=3),
    )
    await run(cfg, out, policy=ScriptedPolicy(golden_script), scorer=RuleScorer(golden_rule),
              progress=False)


def records(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    return sorted((canonical(x) for x in lines if x.strip()), key=lambda r: r["id"])


def main() -> None:
    """Write the golden files of the cases named on the command line (default: all)."""
    sys.path.insert(0, str(HERE.parents[1] / "src"))
    wanted = set(sys.argv[1:])
    for stem, method, n, width, lookahead, semantics in CASES:
        if wanted and stem not in wanted:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(run_case(method, n, width, lookahead, semantics, Path(tmp) / "run"))
            recs = records(Path(tmp) / "run")
        (HERE / f"{stem}.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n"
                                                    for r in recs))
        print(stem, len(recs), "records")


if __name__ == "__main__":
    main()

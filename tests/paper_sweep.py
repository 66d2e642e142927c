"""A scripted sweep shaped like the paper's: two policies and two PRMs (the testing fakes,
named as the real models), Best-of-N, DVTS and CoT, on a ``math500.jsonl`` problem set, and
one pair on an ``aime24.jsonl`` set (the dataset is read from the run config, by file name).

Policy ``strong`` answers problem ``i`` correctly on ``K[i]`` of every 4 samples; the weak one
on one fewer. The PRMs score "Sure" steps high (the Skywork fake) or every step the same (the
Qwen fake), so PRM rules differ between the two columns.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from testtime.analysis.sweep import SweepGrid, run_sweep
from testtime.config import DatasetConfig, RunConfig
from testtime.testing import RuleScorer, ScriptedPolicy, keyword_rule

K = (4, 3, 2, 1, 1, 0, 4, 2)
POLICIES = ("hf:Qwen/Qwen2.5-1.5B-Instruct", "vllm:meta-llama/Llama-3.2-1B-Instruct")
PRMS = ("skywork:Skywork/Skywork-o1-Open-PRM-Qwen-2.5-7B", "qwen_prm:Qwen/Qwen2.5-Math-PRM-7B")


def write_problems(path: Path) -> Path:
    path.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"Q{i}: what is {i} + 1?",
                                        "answer": str(i + 1)}) + "\n" for i in range(len(K))))
    return path


def policy(spec: str) -> ScriptedPolicy:
    weak = "Llama" in spec

    def script(problem: str, prefix: str, j: int, params: object) -> str:
        i = int(problem.split(":")[0].removeprefix("Q"))
        if (j + i) % 4 < K[i] - weak:
            return f"Sure, add one.\n\nSo \\boxed{{{i + 1}}}"
        return f"Maybe add seven.\n\nSo \\boxed{{{i + 7 + j % 2}}}"

    return ScriptedPolicy(script, name=spec)


def scorer(spec: str) -> RuleScorer:
    table = {"Sure": 0.9, "Maybe": 0.2} if "skywork" in spec else {"Sure": 0.5, "Maybe": 0.6}
    return RuleScorer(keyword_rule(table))


def make_paper_sweep(root: Path, ns: tuple[int, ...] = (2, 4)) -> list[Path]:
    """Finished sweeps under ``root``: MATH-500 over both policies and PRMs (Best-of-N, DVTS,
    CoT), AIME24 over the Qwen policy and the Skywork PRM (Best-of-N, CoT; kept small, since
    every (policy, PRM) pair costs the report five plots). Returns the sweep directories."""
    out = []
    for ds, methods, policies, prms in (
            ("math500", ("best_of_n", "dvts", "cot"), POLICIES, PRMS),
            ("aime24", ("best_of_n", "cot"), POLICIES[:1], PRMS[:1])):
        data = write_problems(root / f"{ds}.jsonl")
        grid = SweepGrid(base=RunConfig(dataset=DatasetConfig(name=str(data))),
                         methods=methods, ns=ns, prms=prms, policies=policies, seeds=(0,))
        asyncio.run(run_sweep(grid, root / f"sweep-{ds}", policy_factory=policy,
                              scorer_factory=scorer, progress=False))
        out.append(root / f"sweep-{ds}")
    return out

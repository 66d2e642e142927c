"""Cross-problem batched beam search vs one problem at a time, same backend and workload.

Both modes run the real search code (``testtime.search``) on the HF backend: *batched* starts
every problem's search as its own asyncio task, as the runner does, so the ``RequestBatcher``
coalesces all problems' requests of a depth into one ``generate`` call; *sequential* awaits
one problem's search before starting the next. The ratio of wall times is the speed-up that
cross-problem batching buys. Grading is left out (it is identical for both and not search).

    # CPU, the embedded SmolLM2 (figures in docs/benchmarks.md, "Batched beam search")
    PYTHONPATH=src python bench/bench_beam.py --problems 8 --n 4 --m 2 --max-step-tokens 32 \\
        --max-path-tokens 128
    # CUDA, random-weight Qwen2.5-1.5B shapes (no download; SmolLM2's tokenizer, or --tokenizer)
    PYTHONPATH=src python bench/bench_beam.py --model random-qwen2.5-1.5b --device cuda \\
        --problems 12 --n 8 --m 2 --max-step-tokens 32 --max-path-tokens 8192 --max-depth 8 \\
        --max-batch-seqs 256

A random-weight model almost never writes a blank line, so every step would run to its token
limit and end the path at depth one. The random model therefore gets a constant bias on the
logits of the tokens that contain "\\n\\n", sized so that a step lasts about
``--random-step-tokens`` tokens; paths then end at the depth or path-token limit, and the search
has as many depths as a real one. Prints one JSON line (both modes and the ratio).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    import testtime  # noqa: F401
except ImportError:  # running from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from testtime.datasets import DatasetSpec, load_problems
from testtime.policy.hf import HFPolicy, HFPolicyConfig
from testtime.prompts import prompt_for_model
from testtime.scoring.self_certainty import SelfCertaintyScorer
from testtime.search import get_method
from testtime.search.base import SamplingConfig, SearchConfig, SearchContext, SearchResult
from testtime.types import ChatMessage, GenerationRequest, SamplingParams

#: Qwen2.5-1.5B's backbone (its config.json), with the vocabulary of the tokenizer we use.
QWEN25_1P5B: dict[str, Any] = {
    "hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12,
    "num_key_value_heads": 2, "intermediate_size": 8960, "max_position_embeddings": 32768,
    "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
}
#: A toy of the same architecture, to smoke-test the random-model path on a CPU in seconds.
TINY = {**QWEN25_1P5B, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 128}
RANDOM_SHAPES = {"random-qwen2.5-1.5b": QWEN25_1P5B, "random-tiny": TINY}


def smollm2_tokenizer_dir() -> str:
    from testtime.policy.model_files import materialize, resolve

    return materialize(resolve("default")).path


def build_random_qwen(out: Path, tokenizer_dir: str, device: str, shape: dict[str, Any]) -> None:
    """Save a random-weight Qwen2 model of ``shape`` (bf16) with the given tokenizer."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = Qwen2Config(vocab_size=len(tok), eos_token_id=tok.eos_token_id,
                      bos_token_id=tok.bos_token_id, **shape)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)


def bias_step_delimiter(policy: HFPolicy, step_tokens: int, temperature: float) -> int:
    """Add a logit bias to every token containing a blank line so a step lasts about
    ``step_tokens`` tokens under random weights (whose logits are nearly flat)."""
    import torch

    tok = policy.tokenizer
    ids = [i for i in range(len(tok)) if "\n\n" in tok.decode([i])]
    vocab = policy.model.config.vocab_size
    # With flat logits, P(delimiter) = k e^{b/T} / (k e^{b/T} + V - k); solve for 1/step_tokens.
    k = len(ids)
    b = temperature * math.log((vocab - k) / (k * (step_tokens - 1)))
    bias = torch.zeros(vocab, device=policy.device)
    bias[ids] = b

    def hook(module: Any, inputs: Any, output: Any) -> Any:
        return output + bias.to(output.dtype)

    policy.model.get_output_embeddings().register_forward_hook(hook)
    return k


async def search_all(problems: list[Any], ctx: SearchContext, method: str,
                     concurrent: bool) -> list[SearchResult]:
    fn = get_method(method)
    if concurrent:
        return list(await asyncio.gather(*(fn(p, ctx) for p in problems)))
    return [await fn(p, ctx) for p in problems]


def measure(problems: list[Any], ctx: SearchContext, policy: HFPolicy, method: str,
            concurrent: bool) -> dict[str, Any]:
    stats = policy.batch_stats
    calls0, rows0 = stats.calls, stats.rows
    t0 = time.perf_counter()
    results = asyncio.run(search_all(problems, ctx, method, concurrent))
    wall = time.perf_counter() - t0
    tokens = sum(r.compute.completion_tokens for r in results)
    steps = sum(len(r.tree) for r in results)
    calls = stats.calls - calls0
    return {
        "wall_s": round(wall, 2),
        "backend_calls": calls,
        "mean_rows_per_call": round((stats.rows - rows0) / max(1, calls), 1),
        "completion_tokens": tokens,
        "tokens_per_s": round(tokens / wall, 1),
        "policy_requests": sum(r.compute.policy_calls for r in results),
        "tree_nodes": steps,
        "mean_tokens_per_step": round(tokens / max(1, steps), 1),
        "paths": sum(len(r.candidates) for r in results),
        "boxed_paths": sum(c.finish_reason == "boxed" for r in results for c in r.candidates),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2", choices=["smollm2", *RANDOM_SHAPES])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tokenizer", default=None,
                    help="tokenizer directory for the random model (default: SmolLM2's)")
    ap.add_argument("--method", default="beam_search", choices=["beam_search", "dvts"])
    ap.add_argument("--problems", type=int, default=8, help="the first K demo problems")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--m", type=int, default=2)
    ap.add_argument("--lookahead", type=int, default=0)
    ap.add_argument("--max-step-tokens", type=int, default=48)
    ap.add_argument("--max-path-tokens", type=int, default=128)
    ap.add_argument("--max-depth", type=int, default=40)
    ap.add_argument("--max-batch-seqs", type=int, default=64)
    ap.add_argument("--random-step-tokens", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modes", default="sequential,batched",
                    help="which modes to time (comma-separated)")
    args = ap.parse_args()

    tmp = None
    if args.model in RANDOM_SHAPES:
        import torch

        tmp = Path(tempfile.mkdtemp(prefix="bench-beam-"))
        device = args.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        build_random_qwen(tmp, args.tokenizer or smollm2_tokenizer_dir(), device,
                          RANDOM_SHAPES[args.model])
        policy = HFPolicy(HFPolicyConfig(model=str(tmp), device=args.device,
                                         max_batch_seqs=args.max_batch_seqs))
        delimiters = bias_step_delimiter(policy, args.random_step_tokens, args.temperature)
    else:
        policy = HFPolicy(HFPolicyConfig(device=args.device, max_batch_seqs=args.max_batch_seqs))
        delimiters = 0
    try:
        # demo-K is the first K problems of the generated set (levels interleaved 1..5)
        problems = load_problems(DatasetSpec(f"demo-{args.problems}"))
        ctx = SearchContext(
            policy=policy, scorer=SelfCertaintyScorer("self-certainty"),
            prompt=prompt_for_model(policy.name, None),
            search=SearchConfig(method=args.method, n=args.n, beam_width=args.m,
                                max_depth=args.max_depth, lookahead=args.lookahead,
                                max_step_tokens=args.max_step_tokens,
                                max_path_tokens=args.max_path_tokens),
            sampling=SamplingConfig(temperature=args.temperature, seed=args.seed),
        )
        # Warm-up outside the timings (first-call allocation, kernel selection).
        warm = GenerationRequest((ChatMessage("user", "1 + 1?"),),
                                 params=SamplingParams(n=2, max_tokens=8, seed=1))
        asyncio.run(policy.generate([warm]))
        modes = args.modes.split(",")
        sequential = (measure(problems, ctx, policy, args.method, concurrent=False)
                      if "sequential" in modes else None)
        batched = (measure(problems, ctx, policy, args.method, concurrent=True)
                   if "batched" in modes else None)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({
        "model": args.model, "device": policy.device, "method": args.method,
        "problems": len(problems), "n": args.n, "m": args.m, "lookahead": args.lookahead,
        "max_step_tokens": args.max_step_tokens, "max_path_tokens": args.max_path_tokens,
        "max_batch_seqs": args.max_batch_seqs, "biased_delimiter_tokens": delimiters,
        "sequential": sequential, "batched": batched,
        "speedup_wall": round(sequential["wall_s"] / batched["wall_s"], 2)
        if sequential and batched else None,
    }))


if __name__ == "__main__":
    main()

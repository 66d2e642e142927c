"""Scoring throughput of the shared PRM engine on a random-weight model of a real PRM architecture.

No weights or tokenizers are downloaded: the backbone is built from the architecture config
with random weights (bf16 on CUDA, fp32 on CPU) and the requests are synthetic token ids shaped
like beam-search PRM calls (a question, then 1..N steps, one score per step). The measured
path is exactly what ``PRMScorer.score`` runs after tokenisation: length-sorted packing under a
token budget, one padded forward per batch, tensor gather of the scored positions, the head.

    PYTHONPATH=src python bench/bench_prm.py --arch skywork-1.5b --budgets 4096,8192,16384
    PYTHONPATH=src python bench/bench_prm.py --tiny        # CPU smoke run, a few seconds

Prints one JSON line. TFLOP/s uses the standard ``2 x non-embedding params x tokens`` (real,
unpadded tokens; attention score FLOPs are not counted, so it slightly under-states the work).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

try:
    import testtime  # noqa: F401
except ImportError:  # running from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from testtime.scoring.prm.engine import (
    ClassifierHead,
    EncodedRequest,
    ForwardEngine,
    ValueHead,
    plan_batches,
)

#: Backbone shapes of the PRMs we run (Qwen2.5-1.5B and Qwen2.5-7B configs) and a CPU toy.
ARCHS: dict[str, dict[str, Any]] = {
    "skywork-1.5b": {
        "hidden_size": 1536,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "intermediate_size": 8960,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
        "head": "value",
    },
    "qwen-prm-7b": {
        "hidden_size": 3584,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "intermediate_size": 18944,
        "vocab_size": 152064,
        "tie_word_embeddings": False,
        "head": "classifier",
    },
    "tiny": {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "vocab_size": 1000,
        "tie_word_embeddings": False,
        "head": "value",
    },
}


def build(
    arch: str, device: torch.device, dtype: torch.dtype, attn: str
) -> tuple[nn.Module, nn.Module, int]:
    """Random-weight Qwen2 backbone + head; returns them and the non-embedding parameter count."""
    from transformers import Qwen2Config, Qwen2Model

    spec = dict(ARCHS[arch])
    head_kind = spec.pop("head")
    # RoPE base and max positions do not change the cost of a forward; defaults are kept.
    config = Qwen2Config(**spec, rms_norm_eps=1e-6)
    with torch.device(device):
        backbone = Qwen2Model._from_config(config, attn_implementation=attn, dtype=dtype).eval()
        h = config.hidden_size
        if head_kind == "value":
            head: nn.Module = ValueHead(torch.randn(1, h) * 0.02, torch.zeros(1))
        else:
            head = ClassifierHead(nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2)), 1)
    non_embedding = (
        sum(p.numel() for p in backbone.parameters()) - backbone.embed_tokens.weight.numel()
    )
    non_embedding += sum(p.numel() for p in head.parameters())
    return backbone, head.to(device), non_embedding


def workload(n: int, vocab: int, max_steps: int, seed: int) -> list[EncodedRequest]:
    """Beam-search-like PRM inputs: question 60-200 tokens, 1..max_steps steps of 20-120 tokens."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ids = [rng.randrange(vocab) for _ in range(rng.randint(60, 200))]
        positions = []
        for _ in range(rng.randint(1, max_steps)):
            ids += [rng.randrange(vocab) for _ in range(rng.randint(20, 120))]
            positions.append(len(ids) - 1)
        out.append(EncodedRequest(tuple(ids), tuple(positions)))
    return out


def naive_padded_tokens(encoded: list[EncodedRequest], batch_size: int) -> int:
    """Padded tokens of fixed-size batches in arrival order (the approach the engine replaces)."""
    lengths = [len(e.input_ids) for e in encoded]
    return sum(
        max(lengths[i : i + batch_size]) * len(lengths[i : i + batch_size])
        for i in range(0, len(lengths), batch_size)
    )


def measure(
    engine: ForwardEngine,
    encoded: list[EncodedRequest],
    iters: int,
    device: torch.device,
    non_embedding: int,
) -> dict[str, float]:
    engine.run(encoded)  # warm-up (kernel selection, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = (engine.stats.tokens, engine.stats.padded_tokens, engine.stats.batches)
    start = time.perf_counter()
    for _ in range(iters):
        engine.run(encoded)  # returns Python floats, so the GPU work has finished
    elapsed = time.perf_counter() - start
    tokens = engine.stats.tokens - before[0]
    result = {
        "max_batch_tokens": engine.max_batch_tokens,
        "seconds_per_call": elapsed / iters,
        "tokens_per_s": tokens / elapsed,
        "requests_per_s": len(encoded) * iters / elapsed,
        "tflops": 2 * non_embedding * tokens / elapsed / 1e12,
        "padding_efficiency": tokens / (engine.stats.padded_tokens - before[1]),
        "batches_per_call": (engine.stats.batches - before[2]) / iters,
    }
    if device.type == "cuda":
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="skywork-1.5b")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run with a toy model")
    parser.add_argument("--requests", type=int, default=256, help="requests per score call")
    parser.add_argument("--max-steps", type=int, default=16)
    parser.add_argument("--budgets", default="8192", help="comma-separated max_batch_tokens")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--attn", default="sdpa", help="attention implementation")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.tiny:
        args.arch, args.requests, args.max_steps, args.iters = "tiny", 16, 4, 1
        args.budgets = "2048"
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(args.seed)
    backbone, head, non_embedding = build(args.arch, device, dtype, args.attn)
    vocab = int(ARCHS[args.arch]["vocab_size"])
    encoded = workload(args.requests, vocab, args.max_steps, args.seed)
    budgets = [int(b) for b in args.budgets.split(",")]

    results = []
    for budget in budgets:
        engine = ForwardEngine(
            backbone, head, pad_token_id=0, max_batch_tokens=budget, device=device
        )
        results.append(measure(engine, encoded, args.iters, device, non_embedding))
    tokens = sum(len(e.input_ids) for e in encoded)
    sorted_padded = sum(
        max(len(encoded[i].input_ids) for i in b) * len(b)
        for b in plan_batches([len(e.input_ids) for e in encoded], budgets[0])
    )
    print(
        json.dumps(
            {
                "arch": args.arch,
                "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                "dtype": str(dtype).removeprefix("torch."),
                "torch": torch.__version__,
                "attn": args.attn,
                "non_embedding_params": non_embedding,
                "requests": len(encoded),
                "tokens_per_call": tokens,
                "scores_per_call": sum(len(e.positions) for e in encoded),
                "padding_efficiency_fixed8_unsorted": tokens / naive_padded_tokens(encoded, 8),
                "padding_efficiency_packed": tokens / sorted_padded,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()

"""Check the placement plan's in-process layouts on one GPU, with random-weight models of real
shapes (the ``config.json`` fixtures in ``tests/data/configs``), and print a JSON summary.

(a) **sharing**: an HF policy (``--policy``, default Qwen2.5-7B-Instruct's shape) and a
    7B-shaped Skywork PRM (``--prm``) on ``cuda:0``, as ``plan_placement`` budgets them: the
    process is capped at the plan's total for the GPU (``set_per_process_memory_fraction``),
    the policy generates a few paths, the PRM scores them; the measured peak is reported
    beside the plan.
(b) **split**: the same PRM loaded through the device-map code path (``DevicePlacement`` with
    ``split_device_map``: the first half of its layers on ``cuda:0``, the second half and the
    final norm in host RAM, which accelerate streams to the GPU for each forward) scores the
    same paths; the largest difference to the one-device PRM must be within bf16 tolerance.

Models are random (``from_config``) but have the real layer shapes; the tokenizer is the
small offline one of the PRM tests (with the real special tokens), and the policy never emits
an id past it. ``--device cpu --tiny`` runs the same steps with tiny shapes in float32 on the
CPU, the split then going to ``"disk"`` (a smoke test of the script)::

    python bench/gpu_layout_check.py                       # on a CUDA machine
    python bench/gpu_layout_check.py --device cpu --tiny   # anywhere
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "tests" / "data" / "configs"
#: The tiny shapes of ``--tiny`` (the real vocabulary sizes stay).
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2}
#: bf16 tolerance on a probability (the PRM tests' bound for bfloat16 scorers).
BF16_TOL = 2e-2
FP32_TOL = 1e-5


def real_config(name: str, tiny: bool, tok: Any) -> dict[str, Any]:
    """The fixture's config.json (tiny shapes with ``tiny``) with the tokenizer's special ids."""
    data = json.loads((CONFIGS / name / "config.json").read_text())
    if tiny:
        data.update(TINY, vocab_size=min(data["vocab_size"], 4096))
    data.update(bos_token_id=tok.convert_tokens_to_ids("<|im_start|>"),
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return {k: v for k, v in data.items() if k not in ("architectures", "torch_dtype", "auto_map")}


@contextmanager
def default_dtype(dtype: Any) -> Iterator[None]:
    """Build random models directly in ``dtype`` (a 7B model in float32 first would need
    twice the memory)."""
    import torch

    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def build(root: Path, args: argparse.Namespace, dtype: Any) -> tuple[Path, Path, Any]:
    """Random policy and Skywork-layout PRM dirs (config from the fixtures) and the tokenizer."""
    import torch
    from safetensors.torch import save_file
    from test_prm_support import qwen_tokenizer
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2Model

    tok = qwen_tokenizer([], bos_token="<|im_start|>")
    device = torch.device(args.device)
    policy_dir, prm_dir = root / "policy", root / "prm"
    cfg = Qwen2Config(**real_config(args.policy, args.tiny, tok))
    with device, default_dtype(dtype):
        model = Qwen2ForCausalLM(cfg)
    model.save_pretrained(policy_dir)
    tok.save_pretrained(policy_dir)
    del model
    cfg = Qwen2Config(**real_config(args.prm, args.tiny, tok))
    with device, default_dtype(dtype):
        backbone = Qwen2Model(cfg)
    tensors = {f"model.{k}": v.contiguous().cpu() for k, v in backbone.state_dict().items()}
    del backbone
    gen = torch.Generator().manual_seed(1)
    tensors["v_head.summary.weight"] = (torch.randn(1, cfg.hidden_size, generator=gen)
                                        * cfg.hidden_size ** -0.5).to(dtype)
    tensors["v_head.summary.bias"] = torch.zeros(1, dtype=dtype)
    prm_dir.mkdir(parents=True)
    save_file(tensors, str(prm_dir / "model.safetensors"), metadata={"format": "pt"})
    cfg.architectures = ["Qwen2ForPrmModel"]
    cfg.save_pretrained(prm_dir)
    tok.save_pretrained(prm_dir)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return policy_dir, prm_dir, tok


def generate_paths(policy_dir: Path, tok: Any, args: argparse.Namespace, dtype: Any,
                   plan: Any) -> tuple[list[Any], Any]:
    """A few sampled paths of the policy, cut into three steps each, and the policy (kept
    loaded by the caller while the PRM loads and scores beside it)."""
    import torch

    from testtime.placement.loading import input_device, load_causal_lm
    from testtime.types import ScoreRequest, Step

    opts = plan.policy_options() if args.device == "cuda" else {}  # the plan is for cuda:0
    model = load_causal_lm(str(policy_dir), dtype=dtype, device=opts.get("device", args.device),
                           device_map=opts.get("device_map"), max_memory=opts.get("max_memory"))
    vocab = model.config.vocab_size
    prompt = tok("Question: what is 2+3? Answer step by step.", return_tensors="pt")
    ids = prompt.input_ids.repeat(args.paths, 1).to(input_device(model))
    torch.manual_seed(0)
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                             max_new_tokens=args.new_tokens, pad_token_id=tok.pad_token_id,
                             suppress_tokens=list(range(len(tok), vocab)) or None)
    paths = []
    for row in out[:, ids.shape[1]:].tolist():
        text = tok.decode(row, skip_special_tokens=True)
        third = max(1, len(text) // 3)
        paths.append(ScoreRequest("What is 2+3?", tuple(
            Step(text[i * third:(i + 1) * third] + "\n\n") for i in range(3))))
    return paths, model


def score(prm_dir: Path, requests: list[Any], dtype: Any, device: str, kv_cache_gb: float,
          placement: Any = None) -> tuple[list[list[float]], Any]:
    from testtime.scoring.prm.checkpoint import device_placement
    from testtime.scoring.prm.skywork import load_skywork

    with device_placement(placement):
        scorer = load_skywork(str(prm_dir), device=device, dtype=dtype, kv_cache_gb=kv_cache_gb)
    return asyncio.run(scorer.score(requests)).scores, scorer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", default="Qwen2.5-7B-Instruct", help="a tests/data/configs dir")
    ap.add_argument("--prm", default="Skywork-o1-Open-PRM-Qwen-2.5-7B")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (a smoke test)")
    ap.add_argument("--paths", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=48)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    import torch

    from testtime.placement import GpuInfo, plan_placement
    from testtime.placement.budget import gib
    from testtime.placement.loading import split_device_map
    from testtime.scoring.prm.checkpoint import DevicePlacement

    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: use --device cpu --tiny")
    dtype = torch.bfloat16 if cuda else torch.float32
    total = gib(torch.cuda.get_device_properties(0).total_memory) if cuda else 80.0
    summary: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if cuda else "cpu",
                               "tiny": args.tiny, "policy": args.policy, "prm": args.prm}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        policy_dir, prm_dir, tok = build(root, args, dtype)
        summary["build_s"] = round(time.perf_counter() - t0, 1)
        # (a) the plan for both on GPU 0, from the fixtures' real shapes
        plan = plan_placement(f"hf:{CONFIGS / args.policy}", f"skywork:{CONFIGS / args.prm}",
                              [GpuInfo(0, total)], policy_options={"gpus": (0,)},
                              prm_options={"gpus": (0,)})
        planned = plan.planned_gb(0)
        summary["plan"] = plan.to_json()
        if cuda:  # the process may use no more than the plan gives both models on GPU 0
            torch.cuda.set_per_process_memory_fraction(min(1.0, planned / total), 0)
            torch.cuda.reset_peak_memory_stats(0)
        t0 = time.perf_counter()
        requests, policy_model = generate_paths(policy_dir, tok, args, dtype, plan)
        kv = plan.prm_options().get("kv_cache_gb", 1.0)
        one, first = score(prm_dir, requests, dtype, args.device, kv)  # beside the policy
        again = asyncio.run(first.score(requests)).scores  # through the KV store
        del policy_model, first
        if cuda:
            torch.cuda.empty_cache()
        summary["sharing"] = {"planned_gb": round(planned, 2), "scored_paths": len(one),
                              "rescored_equal": again == one,
                              "wall_s": round(time.perf_counter() - t0, 1),
                              "peak_allocated_gb": round(gib(torch.cuda.max_memory_allocated(0)),
                                                         2) if cuda else None}
        # (b) the same PRM split over the GPU and host RAM (or RAM and disk on the CPU)
        layers = json.loads((prm_dir / "config.json").read_text())["num_hidden_layers"]
        if cuda:
            torch.cuda.set_per_process_memory_fraction(1.0, 0)
            placement = DevicePlacement(split_device_map(layers, [0, "cpu"]))
        else:
            placement = DevicePlacement(split_device_map(layers, ["cpu", "disk"]),
                                        offload_folder=str(root / "offload"))
        t0 = time.perf_counter()
        split, scorer = score(prm_dir, requests, dtype, args.device, 0.0, placement)
        layout = getattr(scorer.engine.backbone, "hf_device_map", None) or {}
        diff = max(abs(a - b) for x, y in zip(one, split, strict=True)
                   for a, b in zip(x, y, strict=True))
        tol = BF16_TOL if dtype == torch.bfloat16 else FP32_TOL
        summary["split"] = {"devices": sorted({str(d) for d in layout.values()}),
                            "modules_by_device": {str(d): sum(1 for v in layout.values()
                                                             if str(v) == str(d))
                                                 for d in {str(v) for v in layout.values()}},
                            "max_abs_diff": diff, "tolerance": tol, "ok": diff <= tol,
                            "wall_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps(summary, indent=2))
    if not summary["split"]["ok"] or len(summary["split"]["devices"]) < 2:
        raise SystemExit("the split PRM is not split or scores differ beyond tolerance")
    if not summary["sharing"]["rescored_equal"]:
        raise SystemExit("scores through the PRM's KV store differ from the first scores")


if __name__ == "__main__":
    main()

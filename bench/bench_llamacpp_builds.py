"""The llama.cpp policy under two or more builds of llama-cpp-python, side by side.

Each build is a directory holding an unpacked llama-cpp-python wheel (``pip wheel`` with its
``CMAKE_ARGS``, then ``unzip``); ``installed`` names the one in this venv. One build's library
cannot share a process with another's, so every round runs ``bench/bench_policy.py
--backends llamacpp,llamacpp-f32 --repeats 1`` once per build, alternating builds, and keeps
each (build, backend, batch)'s best round, so machine noise hits the builds alike. Each build's
``llama_print_system_info()`` is printed with its row, to show which kernels it enabled.

    # the portable flags of .ci/llamacpp-cmake-args (installed) vs llama.cpp's native default
    CMAKE_ARGS="-DGGML_NATIVE=ON" pip wheel --no-deps llama-cpp-python==0.3.36 -w /tmp/native
    unzip -q /tmp/native/*.whl -d /tmp/native/site
    python bench/bench_llamacpp_builds.py --build portable=installed \\
        --build native=/tmp/native/site --rounds 3 --batches 1,8,32
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INSTALLED = "installed"


def env_for(site: str) -> dict[str, str]:
    """The environment that imports ``site``'s llama_cpp (or the installed one)."""
    paths = [str(REPO / "src")] + ([] if site == INSTALLED else [site])
    old = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths[::-1] + ([old] if old else []))}


def system_info(site: str) -> str:
    code = "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())"
    out = subprocess.run([sys.executable, "-c", code], env=env_for(site), capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def one_round(site: str, args: argparse.Namespace) -> list[dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        cmd = [sys.executable, str(REPO / "bench" / "bench_policy.py"), "--backends",
               "llamacpp,llamacpp-f32", "--batches", args.batches, "--max-tokens",
               str(args.max_tokens), "--repeats", "1", "--json", str(out)]
        if args.data:
            cmd += ["--data", args.data]
        proc = subprocess.run(cmd, env=env_for(site), capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            raise SystemExit(f"build {site}: bench_policy failed ({proc.returncode}):\n"
                             f"{proc.stderr[-3000:]}")
        return json.loads(out.read_text())["results"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", action="append", required=True, metavar="LABEL=SITE",
                    help=f"a build: LABEL=DIR (an unpacked wheel) or LABEL={INSTALLED}")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--data", default=None, help="MATH-500 JSONL (bench_policy's default)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    builds = dict(b.split("=", 1) for b in args.build)
    info = {label: system_info(site) for label, site in builds.items()}
    best: dict[tuple[str, str, int], dict[str, float]] = {}
    for r in range(args.rounds):
        for label, site in builds.items():
            for row in one_round(site, args):
                key = (label, str(row["backend"]), int(row["batch"]))
                if key not in best or row["wall_s"] < best[key]["wall_s"]:
                    best[key] = row
            print(f"round {r + 1}/{args.rounds}: {label} done", file=sys.stderr, flush=True)
    batches = [int(b) for b in args.batches.split(",")]
    first = next(iter(builds))
    print(f"\nnew tokens/s, best of {args.rounds} alternating rounds (ratio vs {first})")
    print("| build | backend | " + " | ".join(f"B={b}" for b in batches) + " |")
    print("| --- | --- | " + " | ".join("---:" for _ in batches) + " |")
    for label in builds:
        for backend in ("llamacpp", "llamacpp-f32"):
            cells = []
            for b in batches:
                m, ref = best[(label, backend, b)], best[(first, backend, b)]
                cells.append(f"{m['tok_s']:.1f} ({m['tok_s'] / ref['tok_s']:.2f}x)")
            print(f"| {label} | {backend} | " + " | ".join(cells) + " |")
    for label, text in info.items():
        print(f"{label}: {text}")
    if args.json:
        args.json.write_text(json.dumps({
            "rounds": args.rounds, "max_tokens": args.max_tokens, "cpus": os.cpu_count(),
            "system_info": info,
            "results": [{"build": k[0], "backend": k[1], "batch": k[2], **v}
                        for k, v in best.items()]}, indent=2) + "\n")


if __name__ == "__main__":
    main()

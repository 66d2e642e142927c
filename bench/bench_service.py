"""Throughput of ``testtime serve tts`` against its own backend, on the embedded SmolLM2.

For each method (Best-of-N N=4, beam search N=4 M=2) and each number of concurrent clients C,
C clients (the official ``openai`` async client) each send ``--requests`` chat requests one
after another; requests/s and completion tokens/s (``usage.completion_tokens``: every sample
drawn) are measured over the whole wave. Beside them, the raw backend on the same engine (the
service's own policy, called on the service's event loop, no HTTP, no search, no scoring):
C requests of n=4 samples each, all submitted at once, ``--max-tokens`` new tokens a sample:
the batch a Best-of-N wave of C clients puts in the backend. The ratio service / raw at the
same C says what the service costs on top of the engine.

    PYTHONPATH=src python bench/bench_service.py --clients 1,8,32 --max-tokens 32 \\
        --requests 2 --engine-arg n_threads=1

Prints a table and one JSON line (``--json PATH`` also writes it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

try:
    import testtime  # noqa: F401
except ImportError:  # running from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from testtime.api.options import ServiceConfig
from testtime.api.server import BackgroundService
from testtime.cli.common import sampling_and_path
from testtime.config import RunConfig
from testtime.policy.registry import default_backend
from testtime.search.base import SearchConfig
from testtime.types import GenerationRequest, SamplingParams

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets" / "math500.jsonl"
METHODS = {"best_of_n": {"method": "best_of_n", "n": 4},
           "beam_search": {"method": "beam_search", "n": 4, "beam_width": 2}}


def problems(count: int) -> list[str]:
    if DATA.exists():
        rows = [json.loads(line)["problem"] for line in DATA.read_text().splitlines()]
        return [rows[i % len(rows)] for i in range(count)]
    return [f"What is {i} + {i + 1}?" for i in range(count)]


async def wave(url: str, tts: dict[str, Any], clients: int, per_client: int,
               max_tokens: int) -> dict[str, float]:
    import openai

    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0,
                                timeout=3600)
    texts = problems(clients * per_client)

    async def one(c: int) -> tuple[int, int]:
        tokens = prompt = 0
        for k in range(per_client):
            r = await client.chat.completions.create(
                model="tts", max_tokens=max_tokens, extra_body={"tts": tts},
                messages=[{"role": "user", "content": texts[c * per_client + k]}])
            assert r.usage is not None
            tokens += r.usage.completion_tokens
            prompt += r.usage.prompt_tokens
        return tokens, prompt

    start = time.perf_counter()
    done = await asyncio.gather(*(one(c) for c in range(clients)))
    wall = time.perf_counter() - start
    await client.close()
    tokens = sum(t for t, _ in done)
    return {"wall_s": wall, "requests": clients * per_client, "completion_tokens": tokens,
            "req_s": clients * per_client / wall, "tok_s": tokens / wall}


async def raw(policy: Any, prompt: Any, clients: int, max_tokens: int,
              seed: int) -> dict[str, float]:
    reqs = [GenerationRequest(prompt.messages(q), "", SamplingParams(
        n=4, temperature=0.7, max_tokens=max_tokens, seed=seed + i))
        for i, q in enumerate(problems(clients))]
    start = time.perf_counter()
    outs = await policy.generate(reqs)
    wall = time.perf_counter() - start
    tokens = sum(c.completion_tokens for g in outs for c in g)
    return {"wall_s": wall, "rows": 4 * clients, "completion_tokens": tokens,
            "tok_s": tokens / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--requests", type=int, default=2, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=32, help="token limit of a path")
    ap.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE",
                    help="policy engine setting (e.g. n_threads=1), repeatable")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    engine = {k: json.loads(v) if v.strip("-").isdigit() else v
              for k, _, v in (e.partition("=") for e in args.engine_arg)}
    policy = f"{default_backend()}:default"
    sampling, path = sampling_and_path(policy, None, None, None, 0, args.max_tokens)
    config = RunConfig(policy=policy, policy_options={"max_batch_seqs": 128, **engine},
                       search=SearchConfig(max_path_tokens=path), sampling=sampling)
    service = ServiceConfig(port=0, max_path_tokens=path, max_in_flight=max(clients) * 2)
    results: list[dict[str, Any]] = []
    with BackgroundService(config, service) as svc:
        built = svc.engine.built
        svc.call(raw(built.policy, built.ctx.prompt, 1, 4, 0))  # warm-up
        for c in clients:
            r = svc.call(raw(built.policy, built.ctx.prompt, c, args.max_tokens, 1000 * c))
            results.append({"kind": "raw", "clients": c, **r})
            print(f"  raw         C={c:3d} {r['tok_s']:7.1f} tok/s", file=sys.stderr)
            for name in args.methods.split(","):
                m = asyncio.run(wave(svc.url, METHODS[name], c, args.requests,
                                     args.max_tokens))
                results.append({"kind": name, "clients": c, **m})
                print(f"  {name:11s} C={c:3d} {m['req_s']:6.2f} req/s {m['tok_s']:7.1f} tok/s",
                      file=sys.stderr)
    width = 36
    print(f"\n{'':12s}" + "".join(f"{'C=' + str(c):>{width}s}" for c in clients))
    for kind in ["raw", *args.methods.split(",")]:
        cells = []
        for c in clients:
            r = next(x for x in results if x["kind"] == kind and x["clients"] == c)
            ref = next(x for x in results if x["kind"] == "raw" and x["clients"] == c)
            cell = f"{r['tok_s']:.1f} tok/s" if kind == "raw" else \
                f"{r['req_s']:.2f} req/s {r['tok_s']:.1f} tok/s ({r['tok_s'] / ref['tok_s']:.2f}x)"
            cells.append(cell.rjust(width))
        print(f"{kind:12s}" + "".join(cells))
    out = {"max_tokens": args.max_tokens, "requests_per_client": args.requests,
           "cpus": os.cpu_count(), "engine": engine,
           "results": [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}
                       for r in results]}
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

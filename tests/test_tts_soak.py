"""Soak: ``testtime serve tts`` (the command, as a process on the loopback interface, on the
embedded SmolLM2) under a few hundred requests from 16 concurrent clients, mixing tiny valid
searches, malformed bodies and clients that hang up mid-search.

Afterwards the service is up, every valid request got its answer, every malformed one its
4xx, and the process's resident memory is roughly where it was after warm-up. Bounded: well
under a minute of requests. The counts are printed (``-s``).
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

pytestmark = pytest.mark.slow

SRC = Path(__file__).resolve().parents[1] / "src"
SERVE = "import typer; from testtime.cli.serve_tts import tts; typer.run(tts)"
VALID, MALFORMED, ABANDONED = 40, 180, 30
CLIENTS = 16
#: Resident memory may grow this much past its post-warm-up level (allocator slack, caches).
RSS_SLACK_MB = 80


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start_service() -> tuple[subprocess.Popen[str], str]:
    args = [sys.executable, "-c", SERVE, "--host", "127.0.0.1", "--port", "0", "--method",
            "cot", "--n", "1", "--max-n", "4", "--max-path-tokens", "8", "--max-in-flight",
            "64", "--request-timeout", "60", "--max-request-bytes", "4096",
            "--engine-arg", "n_threads=1"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True,
                            env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin",
                                 "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "serving ... on http://127.0.0.1:PORT/v1"
    if "serving" not in line:
        proc.kill()
        raise RuntimeError(f"the service did not start: {line!r}")
    return proc, line.rsplit(" on ", 1)[1].strip()


def valid(i: int) -> dict[str, Any]:
    tts = {"method": "cot"} if i % 2 else {"method": "best_of_n", "n": 2}
    return {"model": "tts", "max_tokens": 4, "tts": tts,
            "messages": [{"role": "user", "content": f"What is {i} + 1?"}]}


MALFORMED_BODIES: list[tuple[bytes, int]] = [
    (b"{not json", 400),
    (b"[1, 2, 3]", 400),
    (b"\xff\xfe\x00", 400),
    (json.dumps({"model": "tts"}).encode(), 422),
    (json.dumps({"model": "tts", "messages": "hi"}).encode(), 422),
    (json.dumps({"model": "tts", "messages": [{"role": "user", "content": "1+1?"}],
                 "tts": {"method": "nope"}}).encode(), 422),
    (json.dumps({"model": "tts", "messages": [{"role": "user", "content": "1+1?"}],
                 "tts": {"n": 10_000}}).encode(), 422),
    (json.dumps({"model": "tts", "messages": [{"role": "user", "content": "1+1?"}],
                 "tts": {"rule": 3}}).encode(), 422),
    (json.dumps({"model": "tts", "messages": [{"role": "user", "content": "x" * 5000}]}
                ).encode(), 413),
]


async def soak(url: str) -> dict[str, Any]:
    kinds = ["valid"] * VALID + ["malformed"] * MALFORMED + ["abandoned"] * ABANDONED
    random.Random(0).shuffle(kinds)
    sem = asyncio.Semaphore(CLIENTS)
    outcome: dict[str, Any] = {"valid_ok": 0, "malformed_ok": 0, "abandoned": 0,
                               "unexpected": []}

    async def one(i: int, kind: str, client: httpx.AsyncClient) -> None:
        async with sem:
            if kind == "valid":
                r = await client.post(f"{url}/chat/completions", json=valid(i), timeout=120)
                if r.status_code == 200 and r.json()["choices"][0]["message"]["content"]:
                    outcome["valid_ok"] += 1
                else:
                    outcome["unexpected"].append((200, r.status_code, r.text[:200]))
            elif kind == "malformed":
                body, status = MALFORMED_BODIES[i % len(MALFORMED_BODIES)]
                r = await client.post(f"{url}/chat/completions", content=body, timeout=30,
                                      headers={"Content-Type": "application/json"})
                if r.status_code == status and "error" in r.json():
                    outcome["malformed_ok"] += 1
                else:
                    outcome["unexpected"].append((status, r.status_code, r.text[:200]))
            elif i % 2:  # a streamed request whose client hangs up after the first chunk
                async with client.stream("POST", f"{url}/chat/completions",
                                         json={**valid(i), "stream": True}) as r:
                    async for _ in r.aiter_lines():
                        break
                outcome["abandoned"] += 1
            else:  # a client that gives up waiting
                try:
                    await client.post(f"{url}/chat/completions", json=valid(i), timeout=0.05)
                except httpx.TimeoutException:
                    pass
                outcome["abandoned"] += 1

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=CLIENTS * 2)) as client:
        await asyncio.gather(*(one(i, k, client) for i, k in enumerate(kinds)))
    return outcome


def test_soak_mixed_valid_malformed_and_abandoned_requests() -> None:
    proc, url = start_service()
    try:
        for i in range(4):  # warm-up: first-use allocations happen here
            r = httpx.post(f"{url}/chat/completions", json=valid(i), timeout=120)
            assert r.status_code == 200, r.text
        before = rss_mb(proc.pid)
        t0 = time.monotonic()
        out = asyncio.run(soak(url))
        wall = time.monotonic() - t0
        health = httpx.get(url.removesuffix("/v1") + "/health", timeout=10).json()
        deadline = time.monotonic() + 30
        while health["in_flight"] and time.monotonic() < deadline:  # cancelled ones ending
            time.sleep(0.1)
            health = httpx.get(url.removesuffix("/v1") + "/health", timeout=10).json()
        after = rss_mb(proc.pid)
        print(f"\nsoak: {VALID + MALFORMED + ABANDONED} requests in {wall:.1f} s: {out}; "
              f"health {health}; RSS {before:.0f} -> {after:.0f} MB")
        assert out["unexpected"] == []
        assert out["valid_ok"] == VALID and out["malformed_ok"] == MALFORMED
        assert out["abandoned"] == ABANDONED
        assert health["status"] == "ok" and health["in_flight"] == 0 and health["failed"] == 0
        assert health["cancelled"] >= 1  # hung-up clients cancelled their searches
        assert after - before < RSS_SLACK_MB
        assert proc.poll() is None  # still serving
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

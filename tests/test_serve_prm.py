"""A real (tiny, random-weight) PRM served over HTTP gives the in-process scores."""

from __future__ import annotations

import asyncio
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_prm_support import REQUESTS, build_qwen_prm

from testtime.retry import RetryPolicy
from testtime.scoring.prm import PRM_FAMILIES
from testtime.scoring.service.client import RemoteScorer
from testtime.scoring.service.http import Timeouts
from testtime.scoring.service.server import BackgroundServer

REPO = Path(__file__).resolve().parents[1]
RETRY = RetryPolicy(max_retries=2, base_delay_s=0.05)
TIMEOUTS = Timeouts(read_s=60)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_qwen_prm(tmp_path_factory.mktemp("served_qwen_prm")))


@pytest.fixture(scope="module")
def reference(ckpt: str) -> tuple[list[list[float]], int]:
    result = PRM_FAMILIES["qwen_prm"](ckpt, "cpu").score_sync(REQUESTS)
    return result.scores, result.scored_tokens


def load(ckpt: str) -> Any:
    return PRM_FAMILIES["qwen_prm"](ckpt, "cpu")


def test_served_prm_matches_in_process(ckpt: str, reference: tuple[list[list[float]], int]) -> None:
    scores, tokens = reference
    with BackgroundServer(load(ckpt), close_scorer=True) as srv:
        client = RemoteScorer.connect(srv.url, retry=RETRY, timeouts=TIMEOUTS)
        assert client.name == f"qwen_prm:{ckpt}"
        result = asyncio.run(client.score(REQUESTS))
        got = result.scores
        assert result.scored_tokens == tokens
        # The served model's size comes with /v1/info, so the client bills PRM FLOPs.
        assert client.param_count is not None and client.param_count.non_embedding > 0
    assert [len(g) for g in got] == [len(r.steps) for r in REQUESTS]
    for g, want in zip(got, scores, strict=True):
        assert g == pytest.approx(want, abs=1e-6)


def test_concurrent_clients_share_prm_forwards(ckpt: str,
                                               reference: tuple[list[list[float]], int]) -> None:
    prm = load(ckpt)
    run = prm.engine.run

    def slow_run(encoded: Any) -> list[list[float]]:
        time.sleep(0.3)  # a busy GPU: requests arriving meanwhile must wait and merge
        return run(encoded)

    prm.engine.run = slow_run  # type: ignore[method-assign]
    with BackgroundServer(prm) as srv:
        clients = [RemoteScorer(srv.url, retry=RETRY, timeouts=TIMEOUTS) for _ in REQUESTS]

        async def everyone() -> list[Any]:
            return await asyncio.gather(*(c.score([r]) for c, r in zip(clients, REQUESTS)))

        got = [r.scores for r in asyncio.run(everyone())]
    assert prm.engine.stats.calls < len(REQUESTS) - 1  # 4 scored requests, <= 2 forwards
    for (g,), want in zip(got, reference[0], strict=True):
        assert g == pytest.approx(want, abs=1e-6)


def _read_lines(stream: Any, out: queue.Queue[str]) -> None:
    for line in stream:
        out.put(line)


def test_cli_serve_prm_subprocess(ckpt: str, reference: tuple[list[list[float]], int]) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TESTTIME_PRM_API_KEY": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "testtime.cli", "serve", "prm", "--prm", f"qwen_prm:{ckpt}",
         "--port", "0", "--device", "cpu", "--api-key", "topsecret"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
        line = ""
        deadline = time.monotonic() + 60
        while "serving" not in line:
            assert proc.poll() is None, f"server exited: {line}"
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        url = line.split(" on ")[-1].strip()
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        host_port = url.removeprefix("http://")
        client = RemoteScorer.connect(f"http://topsecret@{host_port}", retry=RETRY,
                                      timeouts=TIMEOUTS)
        result = asyncio.run(client.score(REQUESTS))
        for g, want in zip(result.scores, reference[0], strict=True):
            assert g == pytest.approx(want, abs=1e-6)
        assert result.scored_tokens == reference[1]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert proc.returncode is not None


def test_cli_rejects_a_bad_spec() -> None:
    from typer.testing import CliRunner

    from testtime.cli import app

    result = CliRunner().invoke(app, ["serve", "prm", "--prm", "nonsense", "--port", "0"])
    assert result.exit_code == 2
    assert "--prm nonsense: unknown scorer" in " ".join(result.output.split())


def test_the_same_run_in_process_and_served_bills_the_same_prm_flops(
    ckpt: str, tmp_path: Path
) -> None:
    import json

    from testtime.config import DatasetConfig, RunConfig
    from testtime.runner import run
    from testtime.search.base import SearchConfig
    from testtime.store import read_records
    from testtime.testing import ScriptedPolicy

    data = tmp_path / "set.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"What is {i} + {i}?",
                                        "answer": str(2 * i)}) + "\n" for i in range(3)))
    policy = ScriptedPolicy(lambda problem, prefix, i, params:
                            f"Double it.\n\nStep {i} of the sum.\n\nSo \\boxed{{{i}}}")

    def flops_of(prm: str, name: str) -> dict[str, tuple[float, int]]:
        cfg = RunConfig(dataset=DatasetConfig(name=str(data)), policy="scripted", prm=prm,
                        search=SearchConfig(method="beam_search", n=4, beam_width=2,
                                            max_depth=3))
        asyncio.run(run(cfg, tmp_path / name, policy=policy, progress=False))
        return {r.id: (r.compute.prm_flops, r.compute.scored_tokens)
                for r in read_records(tmp_path / name / "results.jsonl")}

    local = flops_of(f"qwen_prm:{ckpt}", "local")
    with BackgroundServer(load(ckpt), close_scorer=True) as srv:
        served = flops_of(srv.url, "served")
    assert all(f > 0 and t > 0 for f, t in local.values())
    assert served == local

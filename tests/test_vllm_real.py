"""The ``vllm:`` and ``openai:`` backends on real vLLM (its CPU build), embedded SmolLM2.

``tests/vllm_inproc.py`` runs in vLLM's venv (one engine): greedy requests, a seeded request
alone and in a batch of 8, and Best-of-N and beam-search runs over demo problems. Here:

* the greedy texts, stops, finish reasons, token counts and log-probs equal ``hf:default``'s
  (the same fp32 weights) on the same requests;
* a seeded request samples the same alone or in a batch, and its rows differ;
* the runs wrote complete records and the summary records the prefix-cache hit rate;
* ``vllm serve`` (127.0.0.1, free port) + ``openai:`` run Best-of-N and beam search with
  problems in flight concurrently, and ``openai:`` samples what ``vllm:`` sampled (both seed
  row i with seed + i).

Skips when vLLM's venv is absent (``scripts/vllm-cpu-venv`` builds it).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import vllm_inproc as inproc_script
from vllm_support import REPO, VLLMServer, vllm_env, vllm_python

from testtime.store import read_records

pytestmark = pytest.mark.slow
LOGPROB_TOLERANCE = 2e-3
"""vLLM's CPU kernels and torch's differ in summation order (fp32)."""


@pytest.fixture(scope="module")
def inproc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    python = vllm_python()
    out = tmp_path_factory.mktemp("vllm_inproc")
    started = time.monotonic()
    proc = subprocess.run([str(python), str(REPO / "tests" / "vllm_inproc.py"), str(out)],
                          check=False, env=vllm_env(out), capture_output=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"vllm_inproc.py failed ({proc.returncode}):\n"
                    f"{proc.stderr.decode(errors='replace')[-6000:]}")
    result: dict[str, Any] = json.loads((out / "inproc.json").read_text())
    result["out"] = out
    print(f"\nvllm: in-process script {time.monotonic() - started:.0f} s: "
          f"{ {k: round(v, 1) for k, v in result.items() if k.endswith('_s')} }")
    return result


def as_dict(c: Any) -> dict[str, Any]:
    return inproc_script.dump(c)


@pytest.mark.timeout(900)
def test_greedy_equals_hf_default(inproc: dict[str, Any], smollm2_policy: Any) -> None:
    hf = asyncio.run(smollm2_policy.generate(inproc_script.greedy_requests()))
    assert len(hf) == len(inproc["greedy"])
    for i, (want, got) in enumerate(zip(hf, inproc["greedy"], strict=True)):
        [w], [g] = [as_dict(c) for c in want], got
        for key in ("text", "finish_reason", "completion_tokens", "prompt_tokens",
                    "token_texts"):
            assert g[key] == w[key], (i, key, g[key], w[key])
        assert g["token_logprobs"] == pytest.approx(w["token_logprobs"], abs=LOGPROB_TOLERANCE)
    reasons = {g[0]["finish_reason"] for g in inproc["greedy"]}
    assert {"stop", "length"} <= reasons <= {"stop", "eos", "length"}
    assert inproc["greedy"][3][0]["finish_reason"] in ("eos", "boxed")  # ran to its end


def test_seeded_rows_do_not_depend_on_the_batch(inproc: dict[str, Any]) -> None:
    alone, batch = inproc["seeded_alone"], inproc["seeded_in_batch"]
    assert [c["text"] for c in alone] == [c["text"] for c in batch]
    assert len({c["text"] for c in alone}) == 3  # children seed, seed+1, seed+2 differ


def test_runs_write_complete_records_and_the_prefix_cache_hit_rate(
    inproc: dict[str, Any]
) -> None:
    for method, search in inproc_script.RUNS.items():
        run_dir = inproc["out"] / method
        records = read_records(run_dir / "results.jsonl")
        assert len(records) == inproc_script.RUN_LIMIT
        for r in records:
            assert r.error is None and r.method == method
            assert r.candidates and all(c.steps for c in r.candidates)
            assert r.compute.generations >= search["n"] and r.compute.completion_tokens > 0
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["completed"] == inproc_script.RUN_LIMIT
        engine = summary["policy_engine"]
        assert 0 < engine["prefix_cache_hits"] <= engine["prefix_cache_queries"]
    assert inproc["engine_stats"]["prefix_cache_hit_rate"] > 0.3  # shared prompts and beams


def test_confidence_stop_aborts_a_row_with_what_it_generated(inproc: dict[str, Any]) -> None:
    got = inproc["confidence_stop"]
    threshold, window = got["threshold"], got["window"]
    for free_confs, free, row in zip(got["free"], inproc["seeded_alone"], got["stopped"],
                                     strict=True):
        # the first token whose last-window mean is below the threshold, on the free row
        cut = next((t for t in range(window - 1, len(free_confs))
                    if sum(free_confs[t + 1 - window:t + 1]) / window < threshold), None)
        if cut is None or cut + 1 >= len(free["token_texts"]):
            assert row["text"] == free["text"]  # never below before it ended: unchanged
            continue
        assert row["finish_reason"] == "confidence"
        assert row["completion_tokens"] == cut + 1
        assert row["token_texts"] == free["token_texts"][:cut + 1]
    assert got["stopped"][0]["finish_reason"] == "confidence"  # row 0 is cut by design


def test_runs_count_vllm_generation_as_policy_time(inproc: dict[str, Any]) -> None:
    for method in inproc_script.RUNS:
        timeline = json.loads((inproc["out"] / method / "summary.json").read_text())["timeline"]
        assert timeline["policy_s"] > 0


@pytest.fixture(scope="module")
def vllm_server(inproc: dict[str, Any]) -> Iterator[VLLMServer]:
    server = VLLMServer(vllm_python(), inproc["model"], ["--block-size", "32"],
                        inproc["out"] / "serve.log", inproc["out"])
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.mark.timeout(900)
def test_openai_against_vllm_serve_samples_what_vllm_samples(
    inproc: dict[str, Any], vllm_server: VLLMServer, tmp_path: Path
) -> None:
    from testtime.config import DatasetConfig, RunConfig
    from testtime.policy.registry import build_policy
    from testtime.runner import run
    from testtime.search.base import SearchConfig

    spec = f"openai:{inproc['model']}@{vllm_server.url}/v1"
    policy = build_policy(spec)
    try:
        [seeded] = asyncio.run(policy.generate([inproc_script.seeded_request()]))
        assert [c.text for c in seeded] == [c["text"] for c in inproc["seeded_alone"]]
        for method, search in inproc_script.RUNS.items():
            cfg = RunConfig(dataset=DatasetConfig(name="demo", limit=inproc_script.RUN_LIMIT),
                            policy=spec, prm="confidence",
                            search=SearchConfig(method=method, **search),
                            max_concurrent_problems=3)
            asyncio.run(run(cfg, tmp_path / method, policy=policy, progress=False))
            served = {r.id: r for r in read_records(tmp_path / method / "results.jsonl")}
            local = {r.id: r for r in read_records(inproc["out"] / method / "results.jsonl")}
            assert set(served) == set(local)
            for pid, r in served.items():
                assert r.error is None and r.candidates
                if method == "best_of_n":  # independent samples: the same seeds, the same texts
                    assert [c.text for c in r.candidates] == \
                        [c.text for c in local[pid].candidates]
    finally:
        asyncio.run(policy.aclose())
    metrics = httpx.get(f"{vllm_server.url}/metrics", timeout=10).text
    hits = [line for line in metrics.splitlines()
            if line.startswith("vllm:prefix_cache_hits_total")]
    assert hits and float(hits[0].split()[-1]) > 0


def test_first_below_finds_the_first_low_window_after_the_new_tokens() -> None:
    from testtime.policy.vllm_rows import first_below

    confs = [9.0, 1.0, 1.0, 9.0, 0.0, 0.0]
    assert first_below(confs, 0, 4.7, 2) == 2        # (1 + 1) / 2: the 3rd token
    assert first_below(confs, 3, 4.7, 2) == 4        # only tokens of the latest delta
    assert first_below(confs, 0, 4.7, 7) is None     # the window never fills
    assert first_below(confs, 0, 0.5, 2) == 5

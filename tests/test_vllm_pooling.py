"""The vLLM pooling-API client against a fake vLLM server that checks the exact requests.

The fake computes what vLLM's pooler returns (as observed on real vLLM 0.32: see
tests/test_vllm_real_pooling.py, which runs the same families against the real server) from the
tiny PRM itself: per-token P(good) of the PRM head, shaped as ``[P(bad), P(good)]`` rows (Qwen's
2-label classifier), ``[P(good), P(bad)]`` rows (causal-LM PRMs served as 2-label classifiers
built from their good/bad tokens) or ``[P(good)]`` (Skywork), then STEP pooling keeps the rows
of the step-tag token and ALL pooling keeps every row. So the client's scores must equal the
in-process adapter's.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch
from test_prm_support import (
    REQUESTS,
    build_math_shepherd,
    build_qwen_prm,
    build_rlhflow,
    build_skywork,
)
from transformers import AutoTokenizer

from testtime.scoring.prm import PRM_FAMILIES
from testtime.scoring.registry import build_scorer
from testtime.scoring.service.vllm_pooling import VLLMPoolingScorer, infer_family, parse_spec

QWEN_GOLDEN = (
    "<|im_start|>system\nPlease reason step by step, and put your final answer within "
    "\\boxed{}.<|im_end|>\n<|im_start|>user\nWhat is 2+3?<|im_end|>\n"
    "<|im_start|>assistant\nAdd the numbers.<extra_0>So 2+3 = 5.<extra_0><|im_end|>\n"
)
SHEPHERD_GOLDEN = "<s> What is 2+3? Add the numbers. ки\nSo 2+3 = 5. ки"

Rows = Callable[[list[int]], list[list[float]]]


class FakeVLLM:
    """``POST /pooling`` like vLLM; rejects anything but the expected model and token ids."""

    def __init__(self, model: str, rows: Rows) -> None:
        self.bodies: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.bodies.append(body)
                problem = None
                inputs = body.get("input")
                if self.path != "/pooling":
                    problem = f"no route {self.path}"
                elif body.get("model") != model:
                    problem = f"model {body.get('model')!r} is not served"
                elif not isinstance(inputs, list) or not all(
                        isinstance(x, list) and all(isinstance(t, int) for t in x)
                        for x in inputs):
                    problem = "input must be a list of token-id lists"
                if problem:
                    self._answer(400, {"object": "error", "message": problem})
                    return
                data = [{"index": i, "object": "pooling", "data": rows(ids)}
                        for i, ids in enumerate(inputs)]
                self._answer(200, {"id": "pool-1", "object": "list", "created": 0,
                                   "model": model, "data": data,
                                   "usage": {"prompt_tokens": 1, "total_tokens": 1}})

            def _answer(self, status: int, payload: dict[str, Any]) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def pooler_rows(family: str, ckpt: str, *, pooling: str, tag: str | None,
                logits: bool = False) -> Rows:
    """What vLLM's pooler returns for token ids, computed with the tiny PRM's own head."""
    model = PRM_FAMILIES[family](ckpt, "cpu")
    tok = AutoTokenizer.from_pretrained(ckpt)
    tag_id = tok.convert_tokens_to_ids(tag) if tag else None

    def rows(ids: list[int]) -> list[list[float]]:
        with torch.inference_mode():
            hidden = model.engine.backbone(input_ids=torch.tensor([ids])).last_hidden_state[0]
            good = model.engine.head(hidden).float().tolist()
        if family == "skywork":
            out = [[p] for p in good]
        elif logits:
            out = [[math.log(p), math.log1p(-p)] for p in good]  # softmax gives [p, 1-p]
        else:
            out = [[1 - p, p] if family == "qwen_prm" else [p, 1 - p] for p in good]
        if pooling == "STEP":
            out = [r for r, t in zip(out, ids, strict=True) if t == tag_id]
        return out

    return rows


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("vllm_pooling")
    return {"qwen_prm": str(build_qwen_prm(root / "qwen")),
            "math_shepherd": str(build_math_shepherd(root / "shepherd")),
            "rlhflow": str(build_rlhflow(root / "rlhflow")),
            "skywork": str(build_skywork(root / "skywork"))}


@pytest.fixture
def fake_factory() -> Iterator[Callable[..., FakeVLLM]]:
    started: list[FakeVLLM] = []

    def start(*args: Any) -> FakeVLLM:
        started.append(FakeVLLM(*args))
        return started[-1]

    yield start
    for fake in started:
        fake.close()


def in_process(family: str, ckpt: str) -> list[list[float]]:
    return PRM_FAMILIES[family](ckpt, "cpu").score_sync(REQUESTS).scores


@pytest.mark.parametrize(
    ("family", "pooling", "tag", "logits", "golden"),
    [
        ("qwen_prm", "STEP", "<extra_0>", False, QWEN_GOLDEN),
        ("math_shepherd", "STEP", "▁ки", False, SHEPHERD_GOLDEN),
        ("math_shepherd", "STEP", "▁ки", True, SHEPHERD_GOLDEN),  # activation off
        ("rlhflow", "ALL", None, False, None),
        ("skywork", "ALL", None, False, None),
    ],
)
def test_scores_match_in_process_adapter(
    ckpts: dict[str, str], fake_factory: Callable[..., FakeVLLM], family: str,
    pooling: str, tag: str | None, logits: bool, golden: str | None,
) -> None:
    ckpt = ckpts[family]
    fake = fake_factory(ckpt, pooler_rows(family, ckpt, pooling=pooling, tag=tag,
                                          logits=logits))
    scorer = build_scorer(f"vllm-pooling:{family}:{ckpt}@{fake.url}")
    assert isinstance(scorer, VLLMPoolingScorer) and scorer.name == f"{family}:{ckpt}"
    result = asyncio.run(scorer.score(REQUESTS))
    got = result.scores
    want = in_process(family, ckpt)
    assert [len(g) for g in got] == [len(r.steps) for r in REQUESTS]
    for g, w in zip(got, want, strict=True):
        assert g == pytest.approx(w, abs=1e-5)
    # One POST with every non-empty request, in order, as the adapter's own token ids; no
    # task forced on the server.
    (body,) = fake.bodies
    assert set(body) == {"model", "input", "add_special_tokens"}
    assert body["add_special_tokens"] is False
    sent = [r for r in REQUESTS if r.steps]
    assert body["input"] == [list(scorer.encoder.encode(r.question, [s.text for s in r.steps])
                                  .input_ids) for r in sent]
    if golden is not None:
        assert AutoTokenizer.from_pretrained(ckpt).decode(body["input"][0]) == golden
    assert result.tokens == asyncio.run(PRM_FAMILIES[family](ckpt, "cpu").score(REQUESTS)).tokens


def test_wrong_pooler_config_is_reported(ckpts: dict[str, str],
                                         fake_factory: Callable[..., FakeVLLM]) -> None:
    ckpt = ckpts["rlhflow"]
    fake = fake_factory(ckpt, lambda ids: [[0.5, 0.5]])  # one row only: the LAST-token pooler
    scorer = VLLMPoolingScorer.from_spec(f"vllm-pooling:rlhflow:{ckpt}@{fake.url}")
    with pytest.raises(RuntimeError, match=r"returned 1 rows.*--convert classify.*"
                                           r"classifier_from_token.*\"tok_pooling_type\": "
                                           r"\"ALL\""):
        asyncio.run(scorer.score(REQUESTS[:1]))


def test_server_errors_name_the_url(ckpts: dict[str, str],
                                    fake_factory: Callable[..., FakeVLLM]) -> None:
    ckpt = ckpts["qwen_prm"]
    fake = fake_factory("some-other-model", lambda ids: [])
    scorer = VLLMPoolingScorer(ckpt, fake.url, "qwen_prm")
    with pytest.raises(RuntimeError, match=rf"{fake.url}/pooling rejected.*HTTP 400.*not served"):
        asyncio.run(scorer.score(REQUESTS[:1]))
    assert asyncio.run(scorer.score([REQUESTS[3]])).scores == [[]]  # nothing to post


def test_spec_parsing() -> None:
    assert parse_spec("vllm-pooling:Qwen/Qwen2.5-Math-PRM-7B@http://gpu1:8000") == (
        "qwen_prm", "Qwen/Qwen2.5-Math-PRM-7B", "http://gpu1:8000")
    assert parse_spec("vllm-pooling:math_shepherd:/models/a@b@https://h") == (
        "math_shepherd", "/models/a@b", "https://h")
    assert infer_family("peiyi9979/math-shepherd-mistral-7b-prm") == "math_shepherd"
    assert infer_family("RLHFlow/Llama3.1-8B-PRM-Deepseek-Data") == "rlhflow"
    assert infer_family("/models/Skywork-o1-Open-PRM-Qwen-2.5-1.5B-vllm") == "skywork"
    with pytest.raises(ValueError, match="FAMILY"):
        infer_family("my-model")
    with pytest.raises(ValueError, match="MODEL@http"):
        parse_spec("vllm-pooling:Qwen/Qwen2.5-Math-PRM-7B")


def test_serve_flags_on_the_real_llama3_vocabulary() -> None:
    # RLHFlow's PRM is a Llama-3.1 model: its good/bad tokens are "+" (10) and "-" (12)
    from test_prm_support import llama3_vocab_dir

    from testtime.scoring.prm.rlhflow import RLHFlowEncoder
    from testtime.scoring.service.vllm_recipes import serve_args

    tok = AutoTokenizer.from_pretrained(str(llama3_vocab_dir()))
    if not tok.chat_template:
        tok.chat_template = "{{ messages }}"  # the encoder only checks that one exists
    args = serve_args("rlhflow", RLHFlowEncoder(tok))
    assert args[:4] == ["--runner", "pooling", "--convert", "classify"]
    assert json.loads(args[5]) == {"classifier_from_token": ["+", "-"],
                                   "method": "no_post_processing"}
    assert json.loads(args[7]) == {"task": "token_classify", "tok_pooling_type": "ALL"}


def test_export_skywork_renames_the_head_only(ckpts: dict[str, str], tmp_path: Path) -> None:
    from safetensors import safe_open

    from testtime.scoring.service.vllm_recipes import export_skywork

    out = export_skywork(ckpts["skywork"], tmp_path / "sky-vllm")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForSequenceClassification"]
    assert config["num_labels"] == 1
    names: dict[str, Any] = {}
    for shard in out.glob("*.safetensors"):
        with safe_open(str(shard), framework="pt") as f:
            names.update({n: f.get_tensor(n) for n in f.keys()})  # noqa: SIM118
    original = torch.load(Path(ckpts["skywork"]) / "pytorch_model.bin", weights_only=True)
    assert torch.equal(names.pop("score.weight"), original.pop("v_head.summary.weight"))
    assert torch.equal(names.pop("score.bias"), original.pop("v_head.summary.bias"))
    assert sorted(names) == sorted(k for k in original if not k.startswith("lm_head."))
    # the client reads the exported directory's tokenizer as the original's
    a = VLLMPoolingScorer(str(out), "http://127.0.0.1:9", "skywork").prepare(REQUESTS[0])
    b = VLLMPoolingScorer(ckpts["skywork"], "http://127.0.0.1:9", "skywork").prepare(REQUESTS[0])
    assert a == b


def test_cli_prints_the_vllm_serve_command(ckpts: dict[str, str], tmp_path: Path) -> None:
    import shlex

    from typer.testing import CliRunner

    from testtime.cli import app

    r = CliRunner().invoke(app, ["serve", "vllm-prm", "--prm",
                                 f"math_shepherd:{ckpts['math_shepherd']}", "--port", "8123"])
    assert r.exit_code == 0, r.output
    command, spec = r.stdout.strip().splitlines()
    argv = shlex.split(command)
    assert argv[:3] == ["vllm", "serve", ckpts["math_shepherd"]]
    assert argv[argv.index("--convert") + 1] == "classify" and argv[-2:] == ["--port", "8123"]
    pooler = json.loads(argv[argv.index("--pooler-config") + 1])
    assert pooler["tok_pooling_type"] == "STEP" and pooler["step_tag_id"] == \
        VLLMPoolingScorer(ckpts["math_shepherd"], "http://x", "math_shepherd").encoder.step_tag_id
    assert spec.endswith(f"--prm vllm-pooling:math_shepherd:{ckpts['math_shepherd']}"
                         f"@http://127.0.0.1:8123")
    r = CliRunner().invoke(app, ["serve", "vllm-prm", "--prm", f"skywork:{ckpts['skywork']}"])
    assert r.exit_code == 2 and "--export DIR" in r.output
    out = tmp_path / "sky"
    r = CliRunner().invoke(app, ["serve", "vllm-prm", "--prm", f"skywork:{ckpts['skywork']}",
                                 "--export", str(out)])
    assert r.exit_code == 0 and (out / "config.json").exists()
    assert shlex.split(r.stdout.splitlines()[0])[2] == str(out)

"""Skywork adapter vs. Skywork's ``prepare_input`` + ``PRM_MODEL`` recipe on a tiny checkpoint."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import pytest
import torch
from test_prm_support import REQUESTS, build_skywork
from transformers import AutoTokenizer, Qwen2Model

from testtime.scoring.prm import PRM_FAMILIES
from testtime.scoring.prm.skywork import SkyworkEncoder
from testtime.types import ScoreRequest


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_skywork(tmp_path_factory.mktemp("skywork")))


@pytest.fixture(scope="module")
def reference(ckpt: str):  # type: ignore[no-untyped-def]
    """skywork-o1-prm-inference io_utils.prepare_input (step_token "\\n") + sigmoid(v_head)."""
    tok = AutoTokenizer.from_pretrained(ckpt)
    backbone = Qwen2Model.from_pretrained(ckpt, dtype=torch.float32).eval()
    state = torch.load(Path(ckpt) / "pytorch_model.bin", weights_only=True)
    w, b = state["v_head.summary.weight"], state["v_head.summary.bias"]

    @functools.cache  # shared by both batch-size parametrisations
    def scores(request: ScoreRequest) -> list[float]:
        if not request.steps:
            return []
        # The paper's rm_call.py joins the one-line steps with "\n".
        response = "\n".join(s.text.replace("\n", " ").strip() for s in request.steps)
        prompt_ids = tok.encode(tok.bos_token + request.question + "\n")
        step_token_id = tok.encode("\n")[-1]
        ids, flags = list(prompt_ids), [0] * len(prompt_ids)
        for step in response.split("\n"):
            step_ids = (tok.encode(step) if step != "" else []) + [step_token_id]
            ids += step_ids
            flags += [0] * (len(step_ids) - 1) + [1]
        with torch.no_grad():
            hidden = backbone(input_ids=torch.tensor([ids])).last_hidden_state[0]
        values = torch.sigmoid(hidden @ w.T + b).squeeze(-1)
        return [values[i].item() for i, f in enumerate(flags) if f == 1]

    return scores


@pytest.mark.parametrize("max_batch_tokens", [100_000, 48])
def test_scores_match_reference(ckpt: str, reference, max_batch_tokens: int) -> None:  # type: ignore[no-untyped-def]
    prm = PRM_FAMILIES["skywork"](ckpt, "cpu", torch.float32, max_batch_tokens)
    got = asyncio.run(prm.score(REQUESTS)).scores
    assert [len(g) for g in got] == [len(r.steps) for r in REQUESTS]
    for request, scores in zip(REQUESTS, got, strict=True):
        assert scores == pytest.approx(reference(request), abs=1e-5)
    flat = [s for g in got for s in g]
    assert max(flat) - min(flat) > 0.05, "scores should differ between positions"
    assert (prm.engine.stats.batches > 1) == (max_batch_tokens == 48)


def test_golden_input_layout(ckpt: str) -> None:
    tok = AutoTokenizer.from_pretrained(ckpt)
    encoder = SkyworkEncoder(tok)
    enc = encoder.encode("What is 2+3?", ["Add the numbers.\n\n", "So 2+3\n= 5.\n\n"])
    assert (
        tok.decode(list(enc.input_ids))
        == "<|im_start|>What is 2+3?\nAdd the numbers.\nSo 2+3 = 5.\n"
    )
    assert enc.input_ids[0] == tok.convert_tokens_to_ids("<|im_start|>")
    assert [enc.input_ids[p] for p in enc.positions] == [encoder.step_token_id] * 2
    assert enc.positions[-1] == len(enc.input_ids) - 1
    # Each step is tokenised on its own: the tokens between two newline slots are exactly it.
    between = list(enc.input_ids[enc.positions[0] + 1 : enc.positions[1]])
    assert between == tok.encode("So 2+3 = 5.", add_special_tokens=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_close_to_fp32_reference(ckpt: str, reference) -> None:  # type: ignore[no-untyped-def]
    prm = PRM_FAMILIES["skywork"](ckpt, "cuda")  # default dtype on CUDA: bfloat16
    assert next(prm.engine.backbone.parameters()).dtype == torch.bfloat16
    got = prm.score_sync(REQUESTS).scores
    for request, scores in zip(REQUESTS, got, strict=True):
        assert scores == pytest.approx(reference(request), abs=0.05)

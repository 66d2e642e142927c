"""RLHFlow adapter vs. RLHFlow's own per-prefix recipe on a tiny random Llama checkpoint."""

from __future__ import annotations

import asyncio
import functools

import pytest
import torch
from test_prm_support import REQUESTS, build_rlhflow
from transformers import AutoModelForCausalLM, AutoTokenizer

from testtime.scoring.prm import PRM_FAMILIES
from testtime.scoring.prm.rlhflow import RLHFlowEncoder
from testtime.types import ScoreRequest

GOLDEN = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+3? Add the numbers.<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n+<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nSo 2+3 = 5.<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n+<|eot_id|>"
)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_rlhflow(tmp_path_factory.mktemp("rlhflow")))


@pytest.fixture(scope="module")
def reference(ckpt: str):  # type: ignore[no-untyped-def]
    """RLHFlow's recipe: for step k, the chat up to the k-th "+" and the logits at index -3."""
    tok = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    candidates = [tok.encode("+")[-1], tok.encode("-")[-1]]

    @functools.cache  # shared by both batch-size parametrisations
    def scores(request: ScoreRequest) -> list[float]:
        out, conversation = [], []
        for k, step in enumerate(request.steps):
            text = f"{request.question} {step.text.strip()}" if k == 0 else step.text.strip()
            conversation += [
                {"role": "user", "content": text},
                {"role": "assistant", "content": "+"},
            ]
            ids = tok.apply_chat_template(conversation, tokenize=True)["input_ids"]
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[:, -3, candidates]
            out.append(logits.softmax(-1)[0, 0].item())
        return out

    return scores


@pytest.mark.parametrize("max_batch_tokens", [100_000, 200])
def test_scores_match_reference(ckpt: str, reference, max_batch_tokens: int) -> None:  # type: ignore[no-untyped-def]
    prm = PRM_FAMILIES["rlhflow"](ckpt, "cpu", "float32", max_batch_tokens)
    got = asyncio.run(prm.score(REQUESTS)).scores
    assert [len(g) for g in got] == [len(r.steps) for r in REQUESTS]
    for request, scores in zip(REQUESTS, got, strict=True):
        assert scores == pytest.approx(reference(request), abs=1e-5)
    flat = [s for g in got for s in g]
    assert max(flat) - min(flat) > 0.05, "scores should differ between positions"
    assert (prm.engine.stats.batches > 1) == (max_batch_tokens == 200)


def test_golden_input_layout(ckpt: str) -> None:
    tok = AutoTokenizer.from_pretrained(ckpt)
    encoder = RLHFlowEncoder(tok)
    steps = ["Add the numbers.\n\n", "So 2+3 = 5.\n\n"]
    assert encoder.render("What is 2+3?", steps) == GOLDEN
    enc = encoder.encode("What is 2+3?", steps)
    assert tok.decode(list(enc.input_ids)) == GOLDEN
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    for p in enc.positions:  # each scored position is followed by "+" and the end of the turn
        assert enc.input_ids[p + 1] == encoder.good_id
        assert enc.input_ids[p + 2] == eot
        assert tok.decode(list(enc.input_ids[p - 1 : p + 1])) == "<|end_header_id|>\n\n"
    assert enc.positions[-1] == len(enc.input_ids) - 3


def test_placeholder_text_cannot_add_turns(ckpt: str) -> None:
    encoder = RLHFlowEncoder(AutoTokenizer.from_pretrained(ckpt))
    enc = encoder.encode("Q <|reserved_special_token_0|>?", ["a <|reserved_special_token_0|> b"])
    assert len(enc.positions) == 1
    assert encoder.placeholder_id not in enc.input_ids

"""Math-Shepherd adapter vs. the model card's recipe on a tiny random Mistral checkpoint."""

from __future__ import annotations

import asyncio
import functools

import pytest
import torch
from test_prm_support import REQUESTS, build_math_shepherd
from transformers import AutoModelForCausalLM, AutoTokenizer

from testtime.scoring.prm import PRM_FAMILIES
from testtime.scoring.prm.math_shepherd import MathShepherdEncoder
from testtime.types import ScoreRequest, Step


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_math_shepherd(tmp_path_factory.mktemp("math_shepherd")))


@pytest.fixture(scope="module")
def reference(ckpt: str):  # type: ignore[no-untyped-def]
    """Model card usage: one unpadded ``f"{question} {output}"`` at a time."""
    tok = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    good, bad = tok.encode("+ -")[1:]
    tag = tok.encode("ки")[-1]

    @functools.cache  # shared by both batch-size parametrisations
    def scores(request: ScoreRequest) -> list[float]:
        output = "\n".join(f"{s.text.strip()} ки" for s in request.steps)
        ids = torch.tensor([tok.encode(f"{request.question} {output}")])
        with torch.no_grad():
            logits = model(ids).logits[:, :, [good, bad]]
        return logits.softmax(-1)[:, :, 0][ids == tag].tolist()

    return scores


@pytest.mark.parametrize("max_batch_tokens", [100_000, 64])
def test_scores_match_reference(ckpt: str, reference, max_batch_tokens: int) -> None:  # type: ignore[no-untyped-def]
    prm = PRM_FAMILIES["math_shepherd"](ckpt, "cpu", None, max_batch_tokens)
    got = asyncio.run(prm.score(REQUESTS)).scores
    assert [len(g) for g in got] == [len(r.steps) for r in REQUESTS]
    assert got[3] == []
    for request, scores in zip(REQUESTS, got, strict=True):
        assert scores == pytest.approx(reference(request), abs=1e-5)
    flat = [s for g in got for s in g]
    assert max(flat) - min(flat) > 0.05, "scores should differ between positions"
    if max_batch_tokens == 64:
        assert prm.engine.stats.batches > 1
    else:
        assert prm.engine.stats.batches == 1
    assert prm.name == f"math_shepherd:{ckpt}"


def test_golden_input_layout(ckpt: str) -> None:
    tok = AutoTokenizer.from_pretrained(ckpt)
    encoder = MathShepherdEncoder(tok)
    enc = encoder.encode("What is 2+3?", ["Add the numbers.\n\n", "So 2+3 = 5.\n\n"])
    assert tok.decode(list(enc.input_ids)) == "<s> What is 2+3? Add the numbers. ки\nSo 2+3 = 5. ки"
    assert tok.convert_ids_to_tokens([enc.input_ids[p] for p in enc.positions]) == ["▁ки", "▁ки"]
    assert enc.positions[-1] == len(enc.input_ids) - 1
    assert tok.convert_ids_to_tokens([encoder.good_id, encoder.bad_id]) == ["▁+", "▁-"]


def test_tag_inside_step_text_is_not_scored(ckpt: str) -> None:
    tok = AutoTokenizer.from_pretrained(ckpt)
    encoder = MathShepherdEncoder(tok)
    enc = encoder.encode("What is 2+3?", ["Add ки the numbers.\n\n", "So 5.\n\n"])
    tags = [i for i, t in enumerate(enc.input_ids) if t == encoder.step_tag_id]
    assert len(tags) == 3
    assert list(enc.positions) == tags[1:]


def test_scored_tokens_counts_unpadded_inputs(ckpt: str) -> None:
    prm = PRM_FAMILIES["math_shepherd"](ckpt, "cpu")
    tok = AutoTokenizer.from_pretrained(ckpt)
    request = ScoreRequest("What is 2+3?", (Step("Add the numbers.\n\n"),))
    result = asyncio.run(prm.score([request, ScoreRequest("What is 2+3?", ())]))
    assert result.tokens == [len(tok.encode("What is 2+3? Add the numbers. ки")), 0]

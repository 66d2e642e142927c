"""Qwen2.5-Math-PRM adapter vs. the model card recipe on a tiny sharded checkpoint."""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from test_prm_support import REQUESTS, build_qwen_prm
from transformers import AutoTokenizer, Qwen2Model

from testtime.scoring.prm import PRM_FAMILIES
from testtime.scoring.prm.checkpoint import read_tensors
from testtime.scoring.prm.qwen_prm import QwenPRMEncoder
from testtime.types import ScoreRequest

SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
GOLDEN = (
    f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is 2+3?<|im_end|>\n"
    "<|im_start|>assistant\nAdd the numbers.<extra_0>So 2+3 = 5.<extra_0><|im_end|>\n"
)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_qwen_prm(tmp_path_factory.mktemp("qwen_prm")))


def _load_score_mlp(ckpt: str) -> dict[str, torch.Tensor]:
    index = json.loads((Path(ckpt) / "model.safetensors.index.json").read_text())["weight_map"]
    out = {}
    for name, shard in index.items():
        if name.startswith("score."):
            with safe_open(str(Path(ckpt) / shard), framework="pt") as f:
                out[name] = f.get_tensor(name)
    return out


@pytest.fixture(scope="module")
def reference(ckpt: str):  # type: ignore[no-untyped-def]
    """Model card Quick Start: chat template, <extra_0> mask, softmax(score(h))[:, 1]."""
    tok = AutoTokenizer.from_pretrained(ckpt)
    backbone = Qwen2Model.from_pretrained(ckpt, dtype=torch.float32).eval()
    mlp = _load_score_mlp(ckpt)
    step_sep_id = tok.encode("<extra_0>")[0]

    @functools.cache  # shared by both batch-size parametrisations
    def scores(request: ScoreRequest) -> list[float]:
        if not request.steps:
            return []
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": request.question},
            {
                "role": "assistant",
                "content": "<extra_0>".join(s.text.strip() for s in request.steps) + "<extra_0>",
            },
        ]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        ids = torch.tensor([tok.encode(text)])
        with torch.no_grad():
            h = backbone(input_ids=ids).last_hidden_state[0]
            h = torch.relu(h @ mlp["score.0.weight"].T + mlp["score.0.bias"])
            logits = h @ mlp["score.2.weight"].T + mlp["score.2.bias"]
        return logits.softmax(-1)[ids[0] == step_sep_id][:, 1].tolist()

    return scores


@pytest.mark.parametrize("max_batch_tokens", [100_000, 120])
def test_scores_match_reference(ckpt: str, reference, max_batch_tokens: int) -> None:  # type: ignore[no-untyped-def]
    prm = PRM_FAMILIES["qwen_prm"](ckpt, "cpu", None, max_batch_tokens)
    got = asyncio.run(prm.score(REQUESTS)).scores
    assert [len(g) for g in got] == [len(r.steps) for r in REQUESTS]
    for request, scores in zip(REQUESTS, got, strict=True):
        assert scores == pytest.approx(reference(request), abs=1e-5)
    flat = [s for g in got for s in g]
    assert max(flat) - min(flat) > 0.05, "scores should differ between positions"
    assert (prm.engine.stats.batches > 1) == (max_batch_tokens == 120)


def test_golden_input_layout(ckpt: str) -> None:
    tok = AutoTokenizer.from_pretrained(ckpt)
    encoder = QwenPRMEncoder(tok)
    steps = ["Add the numbers.\n\n", "So 2+3 = 5.\n\n"]
    assert encoder.render("What is 2+3?", steps) == GOLDEN
    enc = encoder.encode("What is 2+3?", steps)
    assert tok.decode(list(enc.input_ids)) == GOLDEN
    assert [enc.input_ids[p] for p in enc.positions] == [tok.convert_tokens_to_ids("<extra_0>")] * 2


def test_head_read_from_shards_by_name(ckpt: str) -> None:
    tensors = read_tensors(ckpt, ["score.0.weight", "score.2.bias"])
    assert tuple(tensors["score.0.weight"].shape) == (32, 32)
    assert tuple(tensors["score.2.bias"].shape) == (2,)
    with pytest.raises(KeyError, match="score.0.bias"):  # the error lists the head tensors
        read_tensors(ckpt, ["v_head.summary.weight"])


REMOTE_CODE = '''
from torch import nn
from transformers import Qwen2Model, Qwen2PreTrainedModel


class Qwen2ForProcessRewardModel(Qwen2PreTrainedModel):
    """Same layout as the checkpoint's modeling_qwen2_rm.py: model + score MLP."""

    def __init__(self, config):
        super().__init__(config)
        self.model = Qwen2Model(config)
        self.score = nn.Sequential(
            nn.Linear(config.hidden_size, config.hidden_size), nn.ReLU(),
            nn.Linear(config.hidden_size, 2),
        )
        self.post_init()
'''


def test_remote_code_is_opt_in_and_agrees(ckpt: str, tmp_path: Path) -> None:
    remote_dir = tmp_path / "remote"
    shutil.copytree(ckpt, remote_dir)
    (remote_dir / "modeling_qwen2_rm.py").write_text(REMOTE_CODE)
    config = json.loads((remote_dir / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel"}
    (remote_dir / "config.json").write_text(json.dumps(config))

    ours = PRM_FAMILIES["qwen_prm"](str(remote_dir), "cpu")
    assert not any(m.endswith("modeling_qwen2_rm") for m in sys.modules)  # no code ran
    remote = PRM_FAMILIES["qwen_prm"](str(remote_dir), "cpu", trust_remote_code=True)
    assert any(m.endswith("modeling_qwen2_rm") for m in sys.modules)
    assert type(ours.engine.head.score).__name__ == "Sequential"
    assert type(remote.engine.backbone).__name__ == "Qwen2Model"
    got_ours = ours.score_sync(REQUESTS).scores
    got_remote = remote.score_sync(REQUESTS).scores
    for a, b in zip(got_ours, got_remote, strict=True):
        assert a == pytest.approx(b, abs=1e-5)

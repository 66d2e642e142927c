"""Skywork o1 Open PRMs (``Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B`` / ``-7B``).

Architecture (skywork-o1-prm-inference ``prm_model.py``, ``PRM_MODEL``/``ValueHead``): a Qwen2
decoder plus ``v_head.summary = Linear(hidden, 1)``; the step reward is
``sigmoid(v_head(last_hidden_state))``. The checkpoint stores the head as
``v_head.summary.weight`` / ``v_head.summary.bias`` next to ``model.*`` and ``lm_head.weight``
(``PRM_MODEL.state_dict``); we read those two tensors directly instead of running remote code.

Input (skywork-o1-prm-inference ``io_utils.prepare_input`` with ``step_token="\\n"``):
``encode(bos_token + problem + "\\n")``, then every step tokenised on its own followed by the
``"\\n"`` token, whose position carries that step's reward. The tokenizer's BOS is
``<|im_start|>``. The steps of Skywork's format are single lines, so, like the paper's code
(compute-optimal-tts ``rm_call.py``: ``s.replace("\\n", " ").strip()``), newlines inside a step
become spaces and the step is stripped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from testtime.scoring.prm.checkpoint import (
    DeviceLike,
    DtypeLike,
    check_real_id,
    load_pretrained,
    read_tensors,
    special_token_id,
)
from testtime.scoring.prm.engine import (
    DEFAULT_MAX_BATCH_TOKENS,
    EncodedRequest,
    ValueHead,
)
from testtime.scoring.prm.loader import load_family
from testtime.scoring.prm.scorer import PRMScorer

HUB_IDS = ("Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B", "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-7B")
STEP_TOKEN = "\n"
HEAD_WEIGHT = "v_head.summary.weight"
HEAD_BIAS = "v_head.summary.bias"
#: (id, token) in the real Qwen2.5 vocabulary, checked when that vocabulary is loaded.
REAL_STEP_TOKEN = (198, "Ċ")
REAL_BOS = (151644, "<|im_start|>")


def clean_step(text: str) -> str:
    """One line per step, as the PRM was trained (see module docstring)."""
    return text.replace("\n", " ").strip()


class SkyworkEncoder:
    """BOS + question + newline, then each step's own tokens followed by the newline token."""

    def __init__(self, tokenizer: Any) -> None:
        if tokenizer.bos_token is None:
            raise ValueError("Skywork PRM tokenizer has no bos_token (expected <|im_start|>)")
        self.tokenizer = tokenizer
        self.bos_token: str = tokenizer.bos_token
        # io_utils: step_token_id = tokenizer.encode(step_token)[-1]
        self.step_token_id = int(tokenizer.encode(STEP_TOKEN, add_special_tokens=False)[-1])
        bos_id = special_token_id(tokenizer, self.bos_token)
        check_real_id(tokenizer, "skywork step token", self.step_token_id, REAL_STEP_TOKEN)
        check_real_id(tokenizer, "skywork bos", bos_id, REAL_BOS)

    def encode(self, question: str, steps: Sequence[str]) -> EncodedRequest:
        # The Qwen tokenizer adds no special tokens by itself, so add_special_tokens=False
        # equals the reference's plain tokenizer.encode.
        ids = list(
            self.tokenizer.encode(self.bos_token + question + STEP_TOKEN, add_special_tokens=False)
        )
        positions: list[int] = []
        for step in steps:
            text = clean_step(step)
            if text:
                ids.extend(self.tokenizer.encode(text, add_special_tokens=False))
            ids.append(self.step_token_id)
            positions.append(len(ids) - 1)
        return EncodedRequest(tuple(ids), tuple(positions))


def skywork_parts(path_or_id: str, device: torch.device, dtype: torch.dtype, encoder: Any,
                  trust_remote_code: bool) -> tuple[nn.Module, nn.Module]:
    """``Qwen2Model`` backbone plus the checkpoint's own value head (``v_head.summary``);
    ``trust_remote_code`` only affects tokenizer/config loading: the model code is ours."""
    from transformers import Qwen2Model

    backbone = load_pretrained(Qwen2Model, path_or_id, device=device, dtype=dtype)
    tensors = read_tensors(path_or_id, [HEAD_WEIGHT, HEAD_BIAS])
    hidden = backbone.config.hidden_size
    if tuple(tensors[HEAD_WEIGHT].shape) != (1, hidden) or tensors[HEAD_BIAS].numel() != 1:
        raise ValueError(
            f"{path_or_id}: {HEAD_WEIGHT} has shape "
            f"{tuple(tensors[HEAD_WEIGHT].shape)}, expected (1, {hidden})"
        )
    return backbone, ValueHead(tensors[HEAD_WEIGHT], tensors[HEAD_BIAS])


def load_skywork(
    path_or_id: str = HUB_IDS[0],
    device: DeviceLike = None,
    dtype: DtypeLike = None,
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    trust_remote_code: bool = False,
    kv_cache_gb: float | None = None,
) -> PRMScorer:
    """Load a Skywork PRM: ``Qwen2Model`` backbone plus the checkpoint's own value head."""
    return load_family("skywork", path_or_id, make_encoder=SkyworkEncoder,
                       load_parts=skywork_parts, device=device, dtype=dtype,
                       max_batch_tokens=max_batch_tokens, trust_remote_code=trust_remote_code,
                       kv_cache_gb=kv_cache_gb)

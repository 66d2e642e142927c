"""Qwen2.5-Math PRMs (``Qwen/Qwen2.5-Math-PRM-7B`` / ``-72B``).

Architecture (the checkpoint's ``modeling_qwen2_rm.py``, mirrored by vLLM/SGLang
``Qwen2ForProcessRewardModel``): a Qwen2 decoder plus
``score = Sequential(Linear(hidden, hidden), ReLU(), Linear(hidden, 2))``, stored as
``score.0.*`` and ``score.2.*``. We rebuild that head from those tensors instead of running the
checkpoint's remote code; ``trust_remote_code=True`` opts into the remote model class instead.

Input (model card "Quick Start"): the chat ``[system, user=query,
assistant="<extra_0>".join(steps) + "<extra_0>"]`` rendered with the tokenizer's template,
system prompt "Please reason step by step, and put your final answer within \\boxed{}.";
the reward of step ``k`` is ``softmax(logits)[1]`` at the ``k``-th ``<extra_0>`` token
(``make_step_rewards``; id 151651, vLLM's default ``step_tag_id``). Steps are stripped, as in
the paper's code (compute-optimal-tts ``rm_call.py``); the model card's steps carry no
trailing blank lines either.
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
    ClassifierHead,
    EncodedRequest,
)
from testtime.scoring.prm.loader import load_family
from testtime.scoring.prm.scorer import PRMScorer

HUB_IDS = ("Qwen/Qwen2.5-Math-PRM-7B", "Qwen/Qwen2.5-Math-PRM-72B")
SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
STEP_TAG = "<extra_0>"
POSITIVE_CLASS = 1
HEAD_TENSORS = ("score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias")
#: (id, token) in the real Qwen2.5-Math-PRM vocabulary, checked when that vocabulary is loaded.
REAL_STEP_TAG = (151651, STEP_TAG)


class QwenPRMEncoder:
    """System + question + steps joined and ended by ``<extra_0>``, scored at each tag."""

    def __init__(self, tokenizer: Any) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("Qwen PRM tokenizer has no chat template")
        self.tokenizer = tokenizer
        self.step_tag_id = special_token_id(tokenizer, STEP_TAG)
        check_real_id(tokenizer, "qwen-prm step tag", self.step_tag_id, REAL_STEP_TAG)

    @staticmethod
    def conversation(question: str, steps: Sequence[str]) -> list[dict[str, str]]:
        # <extra_0> is a special token: text must not be able to add score positions.
        answer = "".join(step.replace(STEP_TAG, "").strip() + STEP_TAG for step in steps)
        return [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": question.replace(STEP_TAG, "")},
            {"role": "assistant", "content": answer},
        ]

    def render(self, question: str, steps: Sequence[str]) -> str:
        """The exact text the PRM reads."""
        return self.tokenizer.apply_chat_template(
            self.conversation(question, steps), tokenize=False, add_generation_prompt=False
        )

    def encode(self, question: str, steps: Sequence[str]) -> EncodedRequest:
        ids = self.tokenizer.encode(self.render(question, steps), add_special_tokens=False)
        positions = [i for i, t in enumerate(ids) if t == self.step_tag_id]
        if len(positions) != len(steps):
            raise ValueError(f"qwen-prm: found {len(positions)} step tags for {len(steps)} steps")
        return EncodedRequest(tuple(ids), tuple(positions))


def build_head(path_or_id: str, hidden_size: int) -> nn.Module:
    """``Sequential(Linear(h, h), ReLU(), Linear(h, 2))`` loaded from ``score.0/score.2``."""
    tensors = read_tensors(path_or_id, HEAD_TENSORS)
    expected = {
        "score.0.weight": (hidden_size, hidden_size),
        "score.0.bias": (hidden_size,),
        "score.2.weight": (2, hidden_size),
        "score.2.bias": (2,),
    }
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(
                f"{path_or_id}: {name} has shape {tuple(tensors[name].shape)}, expected {shape}"
            )
    head = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, 2))
    head.load_state_dict({name.removeprefix("score."): t.float() for name, t in tensors.items()})
    return head


def qwen_prm_parts(path_or_id: str, device: torch.device, dtype: torch.dtype, encoder: Any,
                   trust_remote_code: bool) -> tuple[nn.Module, nn.Module]:
    """``Qwen2Model`` plus the ``score`` head rebuilt from its tensors, or (opt-in) the
    checkpoint's own remote model class."""
    if trust_remote_code:
        from transformers import AutoModel

        remote = load_pretrained(AutoModel, path_or_id, device=device, dtype=dtype,
                                 trust_remote_code=True)
        backbone, score = remote.model, remote.score
    else:
        from transformers import Qwen2Model

        backbone = load_pretrained(Qwen2Model, path_or_id, device=device, dtype=dtype)
        score = build_head(path_or_id, backbone.config.hidden_size)
    return backbone, ClassifierHead(score, POSITIVE_CLASS)


def load_qwen_prm(
    path_or_id: str = HUB_IDS[0],
    device: DeviceLike = None,
    dtype: DtypeLike = None,
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    trust_remote_code: bool = False,
    kv_cache_gb: float | None = None,
) -> PRMScorer:
    """Load a Qwen2.5-Math PRM from a local directory or Hub id."""
    return load_family("qwen_prm", path_or_id, make_encoder=QwenPRMEncoder,
                       load_parts=qwen_prm_parts, device=device, dtype=dtype,
                       max_batch_tokens=max_batch_tokens, trust_remote_code=trust_remote_code,
                       kv_cache_gb=kv_cache_gb)

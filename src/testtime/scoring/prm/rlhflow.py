"""RLHFlow PRMs (``RLHFlow/Llama3.1-8B-PRM-Mistral-Data`` / ``-Deepseek-Data``, Llama 3.1).

Input (RLHFlow/RLHF-Reward-Modeling ``math/README.md`` and the paper's ``rm_call.py``): a
multi-turn chat in the checkpoint's own (Llama 3.1) template where the first user turn is
``question + " " + step_1``, every later user turn is one step, and every assistant turn is
``"+"``. The score of step ``k`` is ``softmax(logits[["+", "-"]])[0]`` at the position that
predicts the ``k``-th assistant ``"+"`` (``orm_evaluate.py``: "the +/- is predicted by the '-3'
position"; token ids from ``tokenizer.encode("+")[-1]``).

Like the paper's code (compute-optimal-tts ``infer_fns._rlhflow_*_infer_fn``) we render the
chat with the placeholder ``<|reserved_special_token_0|>`` as every assistant turn, locate the
placeholders, overwrite them with the ``"+"`` id and score the position before each. Steps are
stripped, as in that code (the template also trims every message).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from testtime.scoring.prm.checkpoint import (
    DeviceLike,
    DtypeLike,
    check_real_id,
    special_token_id,
)
from testtime.scoring.prm.engine import (
    DEFAULT_MAX_BATCH_TOKENS,
    EncodedRequest,
)
from testtime.scoring.prm.loader import load_family, two_token_parts
from testtime.scoring.prm.scorer import PRMScorer

HUB_IDS = ("RLHFlow/Llama3.1-8B-PRM-Mistral-Data", "RLHFlow/Llama3.1-8B-PRM-Deepseek-Data")
GOOD_TOKEN = "+"
BAD_TOKEN = "-"
PLACEHOLDER = "<|reserved_special_token_0|>"
"""A special token that cannot come out of ordinary text; stands in for each assistant "+"."""
#: (id, token) in the real Llama 3 vocabulary, checked when that vocabulary is loaded.
REAL_GOOD = (10, "+")
REAL_BAD = (12, "-")
REAL_PLACEHOLDER = (128002, PLACEHOLDER)


class RLHFlowEncoder:
    """Builds the "+"-answered chat and scores the position before every assistant "+"."""

    def __init__(self, tokenizer: Any) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("RLHFlow PRM tokenizer has no chat template")
        self.tokenizer = tokenizer
        self.good_id = int(tokenizer.encode(GOOD_TOKEN, add_special_tokens=False)[-1])
        self.bad_id = int(tokenizer.encode(BAD_TOKEN, add_special_tokens=False)[-1])
        self.placeholder_id = special_token_id(tokenizer, PLACEHOLDER)
        check_real_id(tokenizer, "rlhflow '+'", self.good_id, REAL_GOOD)
        check_real_id(tokenizer, "rlhflow '-'", self.bad_id, REAL_BAD)
        check_real_id(tokenizer, "rlhflow placeholder", self.placeholder_id, REAL_PLACEHOLDER)

    @staticmethod
    def conversation(question: str, steps: Sequence[str], answer: str) -> list[dict[str, str]]:
        """User turns hold the steps (the first also the question); assistants say ``answer``."""
        messages: list[dict[str, str]] = []
        for k, step in enumerate(steps):
            # The placeholder is a special token; text must not be able to inject it.
            text = step.replace(PLACEHOLDER, "").strip()
            if k == 0:
                text = f"{question.replace(PLACEHOLDER, '')} {text}"
            messages.append({"role": "user", "content": text})
            messages.append({"role": "assistant", "content": answer})
        return messages

    def render(self, question: str, steps: Sequence[str]) -> str:
        """The exact text the PRM reads (with the real "+" answers)."""
        return self.tokenizer.apply_chat_template(
            self.conversation(question, steps, GOOD_TOKEN), tokenize=False
        )

    def encode(self, question: str, steps: Sequence[str]) -> EncodedRequest:
        text = self.tokenizer.apply_chat_template(
            self.conversation(question, steps, PLACEHOLDER), tokenize=False
        )
        # apply_chat_template(tokenize=True) also encodes without adding special tokens.
        ids = list(self.tokenizer.encode(text, add_special_tokens=False))
        slots = [i for i, t in enumerate(ids) if t == self.placeholder_id]
        if len(slots) != len(steps):
            raise ValueError(f"rlhflow: found {len(slots)} assistant turns for {len(steps)} steps")
        for i in slots:
            ids[i] = self.good_id
        return EncodedRequest(tuple(ids), tuple(i - 1 for i in slots))


def load_rlhflow(
    path_or_id: str = HUB_IDS[1],
    device: DeviceLike = None,
    dtype: DtypeLike = None,
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    trust_remote_code: bool = False,
    kv_cache_gb: float | None = None,
) -> PRMScorer:
    """Load an RLHFlow Llama-3.1 PRM from a local directory or Hub id."""
    return load_family("rlhflow", path_or_id, make_encoder=RLHFlowEncoder,
                       load_parts=two_token_parts, device=device, dtype=dtype,
                       max_batch_tokens=max_batch_tokens, trust_remote_code=trust_remote_code,
                       kv_cache_gb=kv_cache_gb)

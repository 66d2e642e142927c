"""Math-Shepherd PRM (``peiyi9979/math-shepherd-mistral-7b-prm``, a Mistral causal LM).

Input (model card, "Usage"): ``f"{question} {output}"`` where ``output`` is the steps, each
followed by the step tag ``" ки"`` and separated by newlines
(``"Step 1: ... ки\\nStep 2: ... ки"``), tokenised with the BOS token. The score of a step is
``softmax(logits[[good, bad]])[0]`` at the tag's position, where good/bad are the tokens of
``"+"``/``"-"`` (``tokenizer.encode("+ -")[1:] == [648, 387]``, tag id 12902).

Our policy's steps end in a blank line; each is stripped and re-joined with the tag so the PRM
sees its training layout. The paper's code (compute-optimal-tts ``rm_call.py``,
``replace_step_tag`` with ``prm_step_tag="ки\\n"``) additionally appends a newline after the
last tag; that token comes after every scored position, so scores are identical and we keep
the model card's form.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from testtime.scoring.prm.checkpoint import (
    DeviceLike,
    DtypeLike,
    check_real_id,
)
from testtime.scoring.prm.engine import (
    DEFAULT_MAX_BATCH_TOKENS,
    EncodedRequest,
)
from testtime.scoring.prm.loader import load_family, two_token_parts
from testtime.scoring.prm.scorer import PRMScorer

HUB_ID = "peiyi9979/math-shepherd-mistral-7b-prm"
STEP_TAG = "ки"
"""Written after each step as ``" ки"``; SentencePiece encodes it as one word-initial token."""
GOOD_TOKEN = "+"
BAD_TOKEN = "-"
#: (id, token) in the real Mistral vocabulary (model card), checked when that vocabulary is loaded.
REAL_STEP_TAG = (12902, "▁ки")
REAL_GOOD = (648, "▁+")
REAL_BAD = (387, "▁-")


class MathShepherdEncoder:
    """Builds ``question + " " + "step1 ки\\nstep2 ки..."`` and finds the tag tokens."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        # Model card: step_tag_id = encode("ки")[-1]; candidates = encode("+ -")[1:] (after BOS).
        self.step_tag_id = int(tokenizer.encode(STEP_TAG, add_special_tokens=False)[-1])
        candidates = tokenizer.encode(f"{GOOD_TOKEN} {BAD_TOKEN}", add_special_tokens=False)
        if len(candidates) != 2:
            raise ValueError(f"'+ -' must encode to two tokens, got {candidates}")
        self.good_id, self.bad_id = int(candidates[0]), int(candidates[1])
        check_real_id(tokenizer, "math-shepherd step tag", self.step_tag_id, REAL_STEP_TAG)
        check_real_id(tokenizer, "math-shepherd '+'", self.good_id, REAL_GOOD)
        check_real_id(tokenizer, "math-shepherd '-'", self.bad_id, REAL_BAD)

    def render(self, question: str, steps: Sequence[str]) -> tuple[str, list[int]]:
        """The input text and, per step, the character offset just past its tag."""
        text = f"{question} "
        tag_ends: list[int] = []
        for k, step in enumerate(steps):
            text += ("\n" if k else "") + step.strip() + f" {STEP_TAG}"
            tag_ends.append(len(text))
        return text, tag_ends

    def encode(self, question: str, steps: Sequence[str]) -> EncodedRequest:
        text, tag_ends = self.render(question, steps)
        ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        positions = [i for i, t in enumerate(ids) if t == self.step_tag_id]
        if len(positions) != len(steps):
            positions = self._tag_positions_by_offset(text, tag_ends)
        return EncodedRequest(tuple(ids), tuple(positions))

    def _tag_positions_by_offset(self, text: str, tag_ends: list[int]) -> list[int]:
        """Disambiguate when the question or a step itself contains the tag token."""
        enc = self.tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
        end_to_index = {
            end: i
            for i, (tok, (_, end)) in enumerate(
                zip(enc["input_ids"], enc["offset_mapping"], strict=True)
            )
            if tok == self.step_tag_id
        }
        missing = [e for e in tag_ends if e not in end_to_index]
        if missing:
            raise ValueError(
                f"math-shepherd: step tag not tokenised as {self.step_tag_id} "
                f"at characters {missing} of {text!r}"
            )
        return [end_to_index[e] for e in tag_ends]


def load_math_shepherd(
    path_or_id: str = HUB_ID,
    device: DeviceLike = None,
    dtype: DtypeLike = None,
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    trust_remote_code: bool = False,
    kv_cache_gb: float | None = None,
) -> PRMScorer:
    """Load a Math-Shepherd-format PRM from a local directory or Hub id."""
    return load_family("math_shepherd", path_or_id, make_encoder=MathShepherdEncoder,
                       load_parts=two_token_parts, device=device, dtype=dtype,
                       max_batch_tokens=max_batch_tokens, trust_remote_code=trust_remote_code,
                       kv_cache_gb=kv_cache_gb)

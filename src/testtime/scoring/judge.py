"""LLM-as-judge generative verifier (``--prm judge`` or ``--prm judge:hf:PATH``).

For each step the judge model is asked, in a chat, whether the step is correct given the
problem and the previous steps, answering "Yes" or "No"; the step's score is
``P(Yes) / (P(Yes) + P(No))`` at the first answer token.

How P(Yes) is read without changing the ``Policy`` protocol (its completions carry only the
sampled token's log-probability):

* :class:`HFYesNoProbe` (the HF backend): one forward pass over the rendered prompts, the
  next-token distribution at the last position, and the probability mass of the single-token
  spellings of Yes vs No (``Yes``, `` Yes``, ``yes``, ...). This is exact and needs no
  sampling. It is a function of an ``HFPolicy`` (its model and tokenizer), kept here rather
  than as a method of the backend so the policy module stays unchanged.
* :class:`SampledYesNoProbe` (any other backend): greedy one-token generation with its
  log-probability ``lp``: ``exp(lp)`` if the token is Yes, ``1 - exp(lp)`` if it is No, 0.5
  otherwise. This assumes the probability not on the greedy answer is on the other one, so it
  is an approximation, used only when no exact probe is available.

All steps of all requests in one ``score`` call go to the probe together, and concurrent
``score`` calls are coalesced, so the judge runs in large batches. The tokens a call reads are
the judge's prompt tokens (one prompt per step), reported by the probe with its answers; its
FLOPs are billed with the judge model's parameter count (``param_count``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from testtime.policy.base import Policy
from testtime.scoring.base import ScorerBase, ScoreResult
from testtime.scoring.coalesce import Coalescer
from testtime.types import ChatMessage, GenerationRequest, SamplingParams, ScoreRequest

if TYPE_CHECKING:
    from testtime.policy.hf import HFPolicy

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You are a careful math teacher. You check one step of a student's solution at a time "
    "and answer only Yes or No."
)
QUESTION = "Is this step correct? Answer with one word: Yes or No."
YES_SPELLINGS = ("Yes", " Yes", "yes", " yes", "YES")
NO_SPELLINGS = ("No", " No", "no", " no", "NO")

Chat = tuple[ChatMessage, ...]


def judge_messages(question: str, previous: Sequence[str], step: str) -> Chat:
    """The judge's chat for one step: problem, previous steps, the step, the question."""
    parts = [f"Problem:\n{question.strip()}"]
    if previous:
        parts.append("Previous steps:\n" + "\n\n".join(s.strip() for s in previous))
    parts.append(f"Step to check:\n{step.strip()}")
    parts.append(QUESTION)
    return (ChatMessage("system", SYSTEM_PROMPT), ChatMessage("user", "\n\n".join(parts)))


def step_chats(request: ScoreRequest) -> list[Chat]:
    texts = [s.text for s in request.steps]
    return [judge_messages(request.question, texts[:k], texts[k]) for k in range(len(texts))]


class YesNoProbe(Protocol):
    """Reads P(Yes | Yes or No) of a judge model's answer to each chat."""

    async def p_yes(self, chats: Sequence[Chat]) -> tuple[list[float], list[int]]:
        """One probability per chat, in order, and the prompt tokens the judge read for it."""
        ...


def answer_token_ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    """Ids of the spellings of Yes and No that are single tokens in this vocabulary."""

    def single(spellings: Sequence[str]) -> list[int]:
        ids = [tokenizer.encode(s, add_special_tokens=False) for s in spellings]
        return sorted({i[0] for i in ids if len(i) == 1})

    yes, no = single(YES_SPELLINGS), single(NO_SPELLINGS)
    if not yes or not no or set(yes) & set(no):
        raise ValueError(f"judge: the tokenizer has no single-token Yes/No answers "
                         f"(yes ids {yes}, no ids {no})")
    return yes, no


class HFYesNoProbe:
    """Exact P(Yes) from one forward pass of an ``HFPolicy``'s model (see module docstring)."""

    def __init__(self, policy: HFPolicy, batch_size: int | None = None) -> None:
        self.policy = policy
        self.tokenizer = policy.tokenizer
        self.yes_ids, self.no_ids = answer_token_ids(self.tokenizer)
        self.batch_size = batch_size or policy.config.max_batch_seqs
        self.forwards = 0
        """Forward passes run (for tests and logs)."""

    def render(self, chat: Chat) -> str:
        from testtime.policy.hf import render_prompt

        return render_prompt(self.tokenizer, chat, "")

    def encode(self, chat: Chat) -> list[int]:
        # The chat template already holds BOS where the model wants it (as in HFPolicy).
        return list(self.tokenizer(self.render(chat), add_special_tokens=False)["input_ids"])

    async def p_yes(self, chats: Sequence[Chat]) -> tuple[list[float], list[int]]:
        return await asyncio.to_thread(self.p_yes_sync, chats)

    def p_yes_sync(self, chats: Sequence[Chat]) -> tuple[list[float], list[int]]:
        """Blocking :meth:`p_yes`: longest prompts first, ``batch_size`` rows per forward."""
        encoded = [self.encode(c) for c in chats]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        out = [0.0] * len(encoded)
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            for i, p in zip(rows, self._forward([encoded[i] for i in rows]), strict=True):
                out[i] = p
        return out, [len(e) for e in encoded]

    def _forward(self, rows: list[list[int]]) -> list[float]:
        import torch

        model = self.policy.model
        if model is None:
            raise RuntimeError("judge: the policy is closed")
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        # Left padding puts every prompt's last token in the last column; explicit position
        # ids keep the real tokens' positions as in an unpadded forward.
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        device = self.policy.device
        with torch.inference_mode():
            inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device),
                      "position_ids": positions.to(device), "use_cache": False}
            try:  # only the last position's logits are needed
                out = model(**inputs, logits_to_keep=1)
            except TypeError:  # a model class without logits_to_keep
                out = model(**inputs)
            logp = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
            yes = torch.logsumexp(logp[:, self.yes_ids], dim=-1)
            no = torch.logsumexp(logp[:, self.no_ids], dim=-1)
            p = torch.sigmoid(yes - no).cpu()
        self.forwards += 1
        return [float(x) for x in p]


class SampledYesNoProbe:
    """Approximate P(Yes) from a greedy one-token answer of any policy (module docstring)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.params = SamplingParams(n=1, temperature=0.0, max_tokens=1, seed=0)

    async def p_yes(self, chats: Sequence[Chat]) -> tuple[list[float], list[int]]:
        outs = await self.policy.generate(
            [GenerationRequest(messages=c, params=self.params) for c in chats])
        probs, tokens = [], []
        for (completion,) in outs:
            tokens.append(completion.prompt_tokens)
            word = completion.text.strip().lower()
            q = math.exp(completion.token_logprobs[0]) if completion.token_logprobs else 1.0
            probs.append(q if word.startswith("yes") else 1.0 - q if word.startswith("no")
                         else 0.5)
        return probs, tokens


def default_probe(policy: Policy) -> YesNoProbe:
    """The exact probe for the HF backend, else the sampled approximation."""
    from testtime.policy.hf import HFPolicy

    if isinstance(policy, HFPolicy):
        return HFYesNoProbe(policy)
    log.warning("judge: %s has no next-token distribution; using the greedy-token "
                "approximation of P(Yes)", policy.name)
    return SampledYesNoProbe(policy)


class JudgeScorer(ScorerBase):
    """Generative verifier: score = P(Yes) that each step is correct, from a judge model.

    Contract: as ``StepScorer``; the tokens of a request are its judge prompts' tokens.
    ``own_policy`` means the judge loaded its model and closes it in ``aclose``; the run's own
    policy is left open.
    """

    def __init__(self, policy: Policy, probe: YesNoProbe | None = None, *,
                 own_policy: bool = False) -> None:
        self.policy = policy
        self.probe = probe or default_probe(policy)
        self.name = f"judge:{policy.name}"
        self.own_policy = own_policy
        self._coalescer = Coalescer(self._score_now)

    @property
    def param_count(self) -> object:
        """The judge model's size: a judge's FLOPs are ``2 * N_judge * prompt tokens``."""
        from testtime.flops import params_of

        return params_of(self.policy)

    async def score(self, requests: Sequence[ScoreRequest]) -> ScoreResult:
        return await self._coalescer(requests)

    async def _score_now(self, requests: list[ScoreRequest]) -> ScoreResult:
        chats = [chat for r in requests for chat in step_chats(r)]
        probs, tokens = await self.probe.p_yes(chats) if chats else ([], [])
        scores, used, offset = [], [], 0
        for r in requests:
            scores.append(probs[offset:offset + len(r.steps)])
            used.append(sum(tokens[offset:offset + len(r.steps)]))
            offset += len(r.steps)
        return ScoreResult(scores, used)

    async def aclose(self) -> None:
        if self.own_policy:
            await self.policy.aclose()


def load_judge(path: str, *, device: str | None = None, dtype: str | None = None,
               trust_remote_code: bool = False, max_batch_seqs: int | None = None) -> JudgeScorer:
    """A judge on its own HF model (``judge:hf:PATH``)."""
    from testtime.policy.hf import HFPolicy, HFPolicyConfig

    settings: dict[str, Any] = {"model": path, "trust_remote_code": trust_remote_code}
    if device is not None:
        settings["device"] = device
    if dtype is not None:
        settings["dtype"] = dtype
    if max_batch_seqs is not None:
        settings["max_batch_seqs"] = max_batch_seqs
    return JudgeScorer(HFPolicy(HFPolicyConfig(**settings)), own_policy=True)

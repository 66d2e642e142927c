"""Score with a PRM served by vLLM's pooling API: ``--prm vllm-pooling:[FAMILY:]MODEL@URL``.

Serve the PRM with vLLM as a token-level reward model, e.g.::

    vllm serve Qwen/Qwen2.5-Math-PRM-7B --task reward            # older: --task reward
    vllm serve Qwen/Qwen2.5-Math-PRM-7B --runner pooling         # newer
    vllm serve peiyi9979/math-shepherd-mistral-7b-prm --runner pooling \\
        --pooler-config '{"pooling_type": "STEP", "step_tag_id": 12902,
                          "returned_token_ids": [648, 387]}'     # older: --override-pooler-config
    vllm serve RLHFlow/Llama3.1-8B-PRM-Deepseek-Data --runner pooling \\
        --pooler-config '{"pooling_type": "ALL", "returned_token_ids": [10, 12]}'

What vLLM does (verified in vllm-project/vllm sources):

* Request (``vllm/entrypoints/pooling/base/protocol.py`` ``CompletionRequestMixin`` and
  ``pooling/protocol.py`` ``PoolingCompletionRequest``): ``POST /pooling`` with
  ``{"model": str, "input": str | list[str] | list[int] | list[list[int]],
  "add_special_tokens": bool (default true), "task": optional}``. Without ``task`` the server
  uses the model's own pooling task (``token_classify`` for reward models).
* Response (``PoolingResponse``): ``{"id", "object": "list", "created", "model", "data":
  [{"index": i, "object": "pooling", "data": list[list[float]] | list[float]}], "usage":
  {"prompt_tokens", "total_tokens"}}``, one ``data`` item per input.
* STEP pooling (``vllm/model_executor/layers/pooler/tokwise/methods.py`` ``StepPool``): keeps
  the ``returned_token_ids`` columns (vocabulary entries for a causal-LM PRM) and only the
  rows whose prompt token is ``step_tag_id``; ALL pooling returns one row per token. The
  PoolerConfig keys ``pooling_type``, ``step_tag_id``, ``returned_token_ids`` are set with
  ``--override-pooler-config`` (renamed ``--pooler-config``), as docs.vllm.ai
  "Supported Models > Reward Modeling" says for Math-Shepherd.
* ``Qwen2ForProcessRewardModel`` (``vllm/model_executor/models/qwen2_rm.py``) defaults to
  STEP pooling with ``step_tag_id=151651`` (``<extra_0>``) and a softmax over its 2 labels,
  so each row is ``[P(bad), P(good)]`` (``tests/models/language/pooling/test_reward.py``
  checks it against the model card's ``make_step_rewards``).

The client renders each family's input text with the same encoder as the in-process adapter
(``scoring/prm/*``; only the tokenizer is loaded, no weights), tokenises it locally to know
where each step is scored, posts all texts in one call, and picks one row per step: with STEP
pooling the row of each step's tag, with ALL pooling the row at the adapter's score position.
Rows that are not probabilities (activation off, or full-vocabulary logits) are softmaxed
over the family's two classes. Skywork's format (steps tokenised one by one) is not text, so
it is not offered.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from testtime.flops import ParamCount, known_param_count
from testtime.retry import RetryPolicy
from testtime.scoring.base import ScorerBase, ScoreResult
from testtime.scoring.prm.engine import EncodedRequest
from testtime.scoring.service.http import HTTP_RETRY, LoopClient, Timeouts, post_json, split_url
from testtime.types import ScoreRequest

SPEC_PREFIX = "vllm-pooling:"
#: vLLM's own server reads its API key from this variable; the client uses the same one.
API_KEY_ENV = "VLLM_API_KEY"
#: Inputs per POST; vLLM schedules them together, several POSTs run concurrently.
DEFAULT_MAX_INPUTS = 256
_CACHE_SIZE = 8192
_PROBABILITY_TOLERANCE = 1e-3


@dataclass(frozen=True)
class PoolingFamily:
    """How one PRM family's input and output map onto vLLM's pooling API."""

    name: str
    make_encoder: Callable[[Any], Any]
    """``tokenizer -> encoder`` of the in-process adapter."""
    render: Callable[[Any, str, Sequence[str]], str]
    """``(encoder, question, step texts) -> the exact text the PRM reads``."""
    add_special_tokens: bool
    """Whether the tokenizer adds BOS to that text (as the in-process adapter tokenises it)."""
    positive_column: int
    """Column of P(good) in a 2-wide row."""
    step_tag_attr: str | None
    """Encoder attribute holding the tag id that STEP pooling selects; None: ALL only."""
    vocab_pair_attrs: tuple[str, str] | None
    """Encoder attributes of the (good, bad) token ids, for full-vocabulary rows."""
    pooler_config: str
    """What to pass as ``--pooler-config`` (empty: the model's default works)."""


def _families() -> dict[str, PoolingFamily]:
    from testtime.scoring.prm.math_shepherd import MathShepherdEncoder
    from testtime.scoring.prm.qwen_prm import QwenPRMEncoder
    from testtime.scoring.prm.rlhflow import RLHFlowEncoder

    return {
        "qwen_prm": PoolingFamily(
            "qwen_prm", QwenPRMEncoder, lambda e, q, s: e.render(q, s), False, 1,
            "step_tag_id", None, ""),
        "math_shepherd": PoolingFamily(
            "math_shepherd", MathShepherdEncoder, lambda e, q, s: e.render(q, s)[0], True, 0,
            "step_tag_id", ("good_id", "bad_id"),
            '{"pooling_type": "STEP", "step_tag_id": 12902, "returned_token_ids": [648, 387]}'),
        "rlhflow": PoolingFamily(
            "rlhflow", RLHFlowEncoder, lambda e, q, s: e.render(q, s), False, 0,
            None, ("good_id", "bad_id"),
            '{"pooling_type": "ALL", "returned_token_ids": [10, 12]}'),
    }


def infer_family(model: str) -> str:
    """The family of a PRM from its Hub id or directory name."""
    name = model.lower().replace("_", "-")
    if "skywork" in name:
        raise ValueError(f"{model}: Skywork PRMs are not served by vLLM's pooling API; "
                         f"use --prm skywork:{model}")
    if "math-shepherd" in name:
        return "math_shepherd"
    if "rlhflow" in name:
        return "rlhflow"
    if "qwen" in name and "prm" in name:
        return "qwen_prm"
    raise ValueError(f"cannot tell the PRM family of {model!r}; write it out: "
                     f"vllm-pooling:FAMILY:{model}@URL with FAMILY in {sorted(_families())}")


def parse_spec(spec: str) -> tuple[str, str, str]:
    """``"vllm-pooling:[FAMILY:]MODEL@URL"`` -> ``(family, model, url)``."""
    if not spec.startswith(SPEC_PREFIX):
        raise ValueError(f"{spec!r} does not start with {SPEC_PREFIX!r}")
    body = spec[len(SPEC_PREFIX):]
    at = max(body.rfind("@http://"), body.rfind("@https://"))
    if at <= 0:
        raise ValueError(f"{spec!r} must look like {SPEC_PREFIX}MODEL@http://HOST:PORT")
    model, url = body[:at], body[at + 1:]
    family, sep, rest = model.partition(":")
    if sep and family in _families():
        return family, rest, url
    return infer_family(model), model, url


def softmax_pair(good: float, bad: float) -> float:
    """P(good) of a softmax over two logits."""
    return 1.0 / (1.0 + math.exp(bad - good))


class VLLMPoolingScorer(ScorerBase):
    """``StepScorer`` client of a PRM served with ``vllm serve ... --runner pooling``.

    Contract: as ``StepScorer``. A pooling answer whose rows match neither STEP nor ALL pooling
    of the locally tokenised input raises ``RuntimeError`` naming the URL and the
    ``--pooler-config`` to use. The tokens of a request are the local token count of its input
    (equal to vLLM's, which tokenises the same text with the same tokenizer); ``param_count``
    comes from the model's ``config.json`` where the tokenizer source has one, else from the
    known configs (:func:`testtime.flops.known_param_count`).
    """

    def __init__(self, model: str, url: str, family: str | None = None, *,
                 tokenizer: str | None = None, api_key: str | None = None,
                 task: str | None = None, retry: RetryPolicy = HTTP_RETRY,
                 max_inputs: int = DEFAULT_MAX_INPUTS, trust_remote_code: bool = False) -> None:
        from testtime.scoring.prm.checkpoint import load_tokenizer

        families = _families()
        family = family or infer_family(model)
        if family not in families:
            raise ValueError(f"unknown vLLM pooling family {family!r}; choose from "
                             f"{sorted(families)}")
        if max_inputs < 1:
            raise ValueError(f"max_inputs must be >= 1, got {max_inputs}")
        self.family = families[family]
        self.model = model
        self.url, url_key = split_url(url)
        self._api_key = api_key or url_key or os.environ.get(API_KEY_ENV) or None
        self.task = task
        self.retry = retry
        self.max_inputs = max_inputs
        self.name = f"{family}:{model}"
        self.encoder = self.family.make_encoder(
            load_tokenizer(tokenizer or model, trust_remote_code))
        self.param_count: ParamCount | None = known_param_count(tokenizer or model, model)
        self.posts = 0
        self._cache: OrderedDict[tuple[str, tuple[str, ...]], tuple[str, EncodedRequest]] = (
            OrderedDict())
        self._lock = threading.Lock()
        self._client = LoopClient(Timeouts())

    @classmethod
    def from_spec(cls, spec: str, **kwargs: Any) -> VLLMPoolingScorer:
        family, model, url = parse_spec(spec)
        return cls(model, url, family, **kwargs)

    def prepare(self, request: ScoreRequest) -> tuple[str, EncodedRequest]:
        """The text vLLM gets and its local encoding (ids + score positions), cached."""
        key = (request.question, tuple(s.text for s in request.steps))
        with self._lock:  # called from worker threads
            hit = self._cache.get(key)
            if hit is None:
                text = self.family.render(self.encoder, key[0], key[1])
                hit = (text, self.encoder.encode(key[0], key[1]))
                self._cache[key] = hit
                while len(self._cache) > _CACHE_SIZE:
                    self._cache.popitem(last=False)
            self._cache.move_to_end(key)
            return hit

    def body(self, texts: Sequence[str]) -> dict[str, Any]:
        """The ``/pooling`` request for these input texts."""
        out: dict[str, Any] = {"model": self.model, "input": list(texts),
                               "add_special_tokens": self.family.add_special_tokens}
        if self.task is not None:
            out["task"] = self.task
        return out

    async def score(self, requests: Sequence[ScoreRequest]) -> ScoreResult:
        todo = [i for i, r in enumerate(requests) if r.steps]
        prepared = await asyncio.to_thread(lambda: [self.prepare(requests[i]) for i in todo])
        chunks = [list(range(s, min(s + self.max_inputs, len(todo))))
                  for s in range(0, len(todo), self.max_inputs)]
        client = self._client.get()
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        self.posts += len(chunks)
        answers = await asyncio.gather(*(
            post_json(client, f"{self.url}/pooling",
                      self.body([prepared[j][0] for j in chunk]), headers, self.retry)
            for chunk in chunks))
        out: list[list[float]] = [[] for _ in requests]
        tokens = [0] * len(requests)
        for chunk, answer in zip(chunks, answers, strict=True):
            items = answer.get("data") if isinstance(answer, dict) else None
            if not isinstance(items, list) or len(items) != len(chunk):
                raise RuntimeError(f"{self.url}/pooling: expected {len(chunk)} data items, got "
                                   f"{str(answer)[:300]}")
            for item in items:
                j = chunk[int(item["index"])]
                out[todo[j]] = self.step_scores(prepared[j][1], item["data"])
                tokens[todo[j]] = len(prepared[j][1].input_ids)
        return ScoreResult(out, tokens)

    def step_scores(self, encoded: EncodedRequest, rows: Any) -> list[float]:
        """One P(good) per step from a pooling output for one input."""
        if rows and not isinstance(rows[0], list):
            rows = [[x] for x in rows]  # a 1-D answer: one value per row
        ids = encoded.input_ids
        if len(rows) == len(ids):  # ALL pooling: one row per token
            picked = [rows[p] for p in encoded.positions]
        else:
            tag = getattr(self.encoder, self.family.step_tag_attr or "", None)
            tagged = [i for i, t in enumerate(ids) if t == tag] if tag is not None else []
            if not tagged or len(rows) != len(tagged) or not set(encoded.positions) <= set(tagged):
                hint = self.family.pooler_config or "the model's default pooler"
                raise RuntimeError(
                    f"{self.url}/pooling returned {len(rows)} rows for a {len(ids)}-token "
                    f"input with {len(encoded.positions)} steps; serve {self.model} with "
                    f"--pooler-config '{hint}'")
            row_of = {pos: k for k, pos in enumerate(tagged)}
            picked = [rows[row_of[p]] for p in encoded.positions]
        return [self._probability(row) for row in picked]

    def _probability(self, row: list[float]) -> float:
        if len(row) == 1:  # a single value: a probability, or a logit
            x = float(row[0])
            return x if 0.0 <= x <= 1.0 else 1.0 / (1.0 + math.exp(-x))
        if len(row) == 2:
            pos = self.family.positive_column
            good, bad = float(row[pos]), float(row[1 - pos])
            if min(good, bad) >= 0 and abs(good + bad - 1.0) < _PROBABILITY_TOLERANCE:
                return good
            return softmax_pair(good, bad)  # activation off: logits
        if self.family.vocab_pair_attrs is None:
            raise RuntimeError(f"{self.url}/pooling: rows of width {len(row)}, expected 2")
        good_id, bad_id = (getattr(self.encoder, a) for a in self.family.vocab_pair_attrs)
        good, bad = float(row[good_id]), float(row[bad_id])
        if min(row) >= 0 and abs(sum(row) - 1.0) < _PROBABILITY_TOLERANCE:
            return good / (good + bad) if good + bad > 0 else 0.5  # a softmax over the vocab
        return softmax_pair(good, bad)  # full-vocabulary logits

    async def aclose(self) -> None:
        await self._client.aclose()

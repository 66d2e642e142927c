"""Score with a PRM served by vLLM's pooling API: ``--prm vllm-pooling:[FAMILY:]MODEL@URL``.

Serve the PRM with the flags of :mod:`testtime.scoring.service.vllm_recipes` (``testtime
serve vllm-prm`` prints the whole command), e.g. ``vllm serve Qwen/Qwen2.5-Math-PRM-7B
--runner pooling``. Families: ``qwen_prm``, ``math_shepherd``, ``rlhflow`` and ``skywork``
(from a checkpoint written by ``export_skywork``).

The client encodes each request with the in-process adapter's encoder (``scoring/prm/*``; only
the tokenizer is loaded, no weights) and posts the **token ids** (``"input": [[ids...], ...]``,
one POST per ``max_inputs`` requests): vLLM reads exactly the tokens the in-process PRM reads,
whatever its tokenizer would make of the rendered text, and Skywork's per-step tokenisation
(not a text) is servable. The answer (``{"data": [{"index": i, "data": rows}], ...}``) holds,
per input, one row per step tag (STEP pooling) or per token (ALL pooling); the client keeps
the row of each step's score position. Rows are ``[P(bad), P(good)]`` (Qwen's 2 labels),
``[P(good), P(bad)]`` (the causal-LM PRMs as 2-label classifiers) or ``[P(good)]``
(Skywork); two logits (activation off) are softmaxed, one logit is passed through a sigmoid.
Per-request pooling settings are ignored by vLLM (only its ``--pooler-config`` counts), so a
server started with other flags is detected from the row count and reported with the right
flags.
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
    """How one PRM family's output rows map onto step scores."""

    name: str
    make_encoder: Callable[[Any], Any]
    """``tokenizer -> encoder`` of the in-process adapter."""
    positive_column: int
    """Column of P(good) in a 2-wide row."""
    step_tag_attr: str | None
    """Encoder attribute holding the tag id that STEP pooling selects; None: ALL pooling."""


def pooling_families() -> dict[str, PoolingFamily]:
    from testtime.scoring.prm.math_shepherd import MathShepherdEncoder
    from testtime.scoring.prm.qwen_prm import QwenPRMEncoder
    from testtime.scoring.prm.rlhflow import RLHFlowEncoder
    from testtime.scoring.prm.skywork import SkyworkEncoder

    return {
        "qwen_prm": PoolingFamily("qwen_prm", QwenPRMEncoder, 1, "step_tag_id"),
        "math_shepherd": PoolingFamily("math_shepherd", MathShepherdEncoder, 0, "step_tag_id"),
        "rlhflow": PoolingFamily("rlhflow", RLHFlowEncoder, 0, None),
        "skywork": PoolingFamily("skywork", SkyworkEncoder, 0, None),
    }


def infer_family(model: str) -> str:
    """The family of a PRM from its Hub id or directory name."""
    name = model.lower().replace("_", "-")
    if "skywork" in name:
        return "skywork"
    if "math-shepherd" in name:
        return "math_shepherd"
    if "rlhflow" in name:
        return "rlhflow"
    if "qwen" in name and "prm" in name:
        return "qwen_prm"
    raise ValueError(f"cannot tell the PRM family of {model!r}; write it out: "
                     f"vllm-pooling:FAMILY:{model}@URL with FAMILY in "
                     f"{sorted(pooling_families())}")


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
    if sep and family in pooling_families():
        return family, rest, url
    return infer_family(model), model, url


def softmax_pair(good: float, bad: float) -> float:
    """P(good) of a softmax over two logits."""
    return 1.0 / (1.0 + math.exp(bad - good))


class VLLMPoolingScorer(ScorerBase):
    """``StepScorer`` client of a PRM served by vLLM's pooling runner.

    Contract: as ``StepScorer``. A pooling answer whose rows match neither STEP nor ALL pooling
    of the posted ids raises ``RuntimeError`` naming the URL and the flags to serve with. The
    tokens of a request are the ids posted (vLLM reads exactly those); ``param_count`` comes
    from the model's ``config.json`` where the tokenizer source has one, else from the known
    configs (:func:`testtime.flops.known_param_count`).
    """

    def __init__(self, model: str, url: str, family: str | None = None, *,
                 tokenizer: str | None = None, api_key: str | None = None,
                 task: str | None = None, retry: RetryPolicy = HTTP_RETRY,
                 max_inputs: int = DEFAULT_MAX_INPUTS, trust_remote_code: bool = False) -> None:
        from testtime.scoring.prm.checkpoint import load_tokenizer

        families = pooling_families()
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
        self._cache: OrderedDict[tuple[str, tuple[str, ...]], EncodedRequest] = OrderedDict()
        self._lock = threading.Lock()
        self._client = LoopClient(Timeouts())

    @classmethod
    def from_spec(cls, spec: str, **kwargs: Any) -> VLLMPoolingScorer:
        family, model, url = parse_spec(spec)
        return cls(model, url, family, **kwargs)

    def prepare(self, request: ScoreRequest) -> EncodedRequest:
        """The ids vLLM gets and the score position of each step, cached."""
        key = (request.question, tuple(s.text for s in request.steps))
        with self._lock:  # called from worker threads
            hit = self._cache.get(key)
            if hit is None:
                hit = self.encoder.encode(key[0], key[1])
                self._cache[key] = hit
                while len(self._cache) > _CACHE_SIZE:
                    self._cache.popitem(last=False)
            self._cache.move_to_end(key)
            return hit

    def body(self, inputs: Sequence[EncodedRequest]) -> dict[str, Any]:
        """The ``/pooling`` request for these encoded inputs (token ids, nothing added)."""
        out: dict[str, Any] = {"model": self.model,
                               "input": [list(map(int, e.input_ids)) for e in inputs],
                               "add_special_tokens": False}
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
                      self.body([prepared[j] for j in chunk]), headers, self.retry)
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
                out[todo[j]] = self.step_scores(prepared[j], item["data"])
                tokens[todo[j]] = len(prepared[j].input_ids)
        return ScoreResult(out, tokens)

    def _flags_hint(self) -> str:
        from testtime.scoring.service.vllm_recipes import serve_args

        return " ".join(serve_args(self.family.name, self.encoder))

    def step_scores(self, encoded: EncodedRequest, rows: Any) -> list[float]:
        """One P(good) per step from a pooling output for one input."""
        if rows and not isinstance(rows[0], list):
            rows = [[x] for x in rows]  # a 1-D answer: one value per row
        ids = encoded.input_ids
        tag = getattr(self.encoder, self.family.step_tag_attr or "", None)
        if len(rows) == len(ids) and (tag is None or ids.count(tag) != len(ids)):
            picked = [rows[p] for p in encoded.positions]  # ALL pooling: one row per token
        else:
            tagged = [i for i, t in enumerate(ids) if t == tag] if tag is not None else []
            if not tagged or len(rows) != len(tagged) or not set(encoded.positions) <= set(tagged):
                raise RuntimeError(
                    f"{self.url}/pooling returned {len(rows)} rows for a {len(ids)}-token "
                    f"input with {len(encoded.positions)} steps; serve {self.model} with "
                    f"{self._flags_hint()}")
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
        raise RuntimeError(f"{self.url}/pooling: rows of width {len(row)}, expected 1 or 2; "
                           f"serve {self.model} with {self._flags_hint()}")

    async def aclose(self) -> None:
        await self._client.aclose()

"""Packing, gathering, ordering, coalescing and the family registry, without a real model.

``TokenEcho`` returns hidden states that spell out the token id and position they belong to,
so the expected score of every gathered position is known exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from testtime.scoring.base import StepScorer
from testtime.scoring.prm import PRM_FAMILIES, load_prm, parse_prm_spec
from testtime.scoring.prm.engine import EncodedRequest, ForwardEngine, plan_batches
from testtime.scoring.prm.math_shepherd import MathShepherdEncoder
from testtime.scoring.prm.scorer import PRMScorer
from testtime.types import ScoreRequest, Step

PAD = 999


class TokenEcho(nn.Module):
    """hidden[b, t] = (token id, position, mask)."""

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, use_cache: bool = False
    ) -> SimpleNamespace:
        positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        hidden = torch.stack([input_ids, positions, attention_mask], dim=-1).float()
        return SimpleNamespace(last_hidden_state=hidden)


class IdPositionHead(nn.Module):
    """score = token id * 1000 + position, or -1 if the position is padding."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.where(hidden[:, 2] > 0, hidden[:, 0] * 1000 + hidden[:, 1], -1.0)


def expected(enc: EncodedRequest) -> list[float]:
    return [enc.input_ids[p] * 1000.0 + p for p in enc.positions]


def make_engine(max_batch_tokens: int) -> ForwardEngine:
    return ForwardEngine(
        TokenEcho(),
        IdPositionHead(),
        pad_token_id=PAD,
        max_batch_tokens=max_batch_tokens,
        device=torch.device("cpu"),
    )


class LengthEncoder:
    """Token per character of the question, then per step its length; score at each step token."""

    def encode(self, question: str, steps: Sequence[str]) -> EncodedRequest:
        if "bad" in question:
            raise ValueError("unencodable question")
        ids = [ord(c) % 50 for c in question] + [len(s) for s in steps]
        return EncodedRequest(tuple(ids), tuple(range(len(question), len(ids))))


def req(question: str, *steps: str) -> ScoreRequest:
    return ScoreRequest(question, tuple(Step(s) for s in steps))


def test_plan_batches_respects_budget_and_covers_all() -> None:
    lengths = [5, 40, 12, 12, 3, 100, 7, 7, 7]
    batches = plan_batches(lengths, 48)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        padded = max(lengths[i] for i in b) * len(b)
        assert padded <= 48 or len(b) == 1
        assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)
    assert [5] in batches  # the 100-token sequence exceeds the budget and runs alone
    assert plan_batches([], 10) == []
    with pytest.raises(ValueError, match="max_batch_tokens"):
        plan_batches([1], 0)


@pytest.mark.parametrize("max_batch_tokens", [1, 16, 10_000])
def test_engine_gathers_positions_and_restores_order(max_batch_tokens: int) -> None:
    encoded = [
        EncodedRequest((1, 2, 3, 4, 5), (1, 4)),
        EncodedRequest((7,) * 12, (0, 5, 11)),
        EncodedRequest((8, 9), ()),
        EncodedRequest((3, 1), (1,)),
        EncodedRequest(tuple(range(20, 40)), (19,)),
    ]
    engine = make_engine(max_batch_tokens)
    assert engine.run(encoded) == [expected(e) for e in encoded]
    assert engine.stats.sequences == 4  # the stepless request is never run
    assert engine.stats.tokens == 5 + 12 + 2 + 20
    if max_batch_tokens == 1:
        assert engine.stats.batches == 4
    if max_batch_tokens == 10_000:
        assert engine.stats.batches == 1
        assert engine.stats.padded_tokens == 4 * 20


def test_encoded_request_validates_positions() -> None:
    with pytest.raises(ValueError, match="outside"):
        EncodedRequest((1, 2), (2,))
    with pytest.raises(ValueError, match="increase"):
        EncodedRequest((1, 2, 3), (2, 1))


def test_scorer_orders_results_and_counts_tokens() -> None:
    scorer = PRMScorer("echo", LengthEncoder(), make_engine(8))
    assert isinstance(scorer, StepScorer)
    requests = [req("abc", "xx", "yyyy"), req("q"), req("longer question", "z"), req("", "a")]
    result = asyncio.run(scorer.score(requests))
    got = result.scores
    encoder = LengthEncoder()
    want = [
        expected(encoder.encode(r.question, [s.text for s in r.steps])) if r.steps else []
        for r in requests
    ]
    assert got == want
    assert got[1] == []
    assert result.tokens == [5, 0, 16, 1] and result.scored_tokens == 5 + 16 + 1
    assert asyncio.run(scorer.score([])).scores == []


def test_concurrent_calls_are_coalesced() -> None:
    scorer = PRMScorer("echo", LengthEncoder(), make_engine(10_000))
    groups = [[req(f"question {i}", "s" * i, "t")] for i in range(1, 6)]

    async def main() -> list[list[list[float]]]:
        return await asyncio.gather(*(scorer.score(g) for g in groups))

    results = [r.scores for r in asyncio.run(main())]
    encoder = LengthEncoder()
    for group, got in zip(groups, results, strict=True):
        r = group[0]
        assert got == [expected(encoder.encode(r.question, [s.text for s in r.steps]))]
    # The first call runs alone; the four that queued behind it share one forward.
    assert scorer.engine.stats.calls == 2


def test_an_error_reaches_only_the_caller_that_caused_it() -> None:
    scorer = PRMScorer("echo", LengthEncoder(), make_engine(10_000))

    async def main() -> list[object]:
        return await asyncio.gather(
            scorer.score([req("fine", "a")]),
            scorer.score([req("bad one", "a")]),
            scorer.score([req("also fine", "b")]),
            return_exceptions=True,
        )

    first, second, third = asyncio.run(main())
    assert first.scores == [[1 * 1000.0 + 4]]  # step token id len("a") at position len("fine")
    # "bad one" failed the forward it was merged into; each caller was then run alone.
    assert isinstance(second, ValueError)
    assert third.scores == [[1 * 1000.0 + 9]]


def test_closed_scorer_refuses_work() -> None:
    scorer = PRMScorer("echo", LengthEncoder(), make_engine(10))
    asyncio.run(scorer.aclose())
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(scorer.score([req("q", "a")]))


def test_registry_and_spec_parsing() -> None:
    assert set(PRM_FAMILIES) == {"math_shepherd", "rlhflow", "skywork", "qwen_prm"}
    assert parse_prm_spec("skywork:Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B") == (
        "skywork",
        "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B",
    )
    assert parse_prm_spec("qwen_prm:/models/a:b") == ("qwen_prm", "/models/a:b")
    with pytest.raises(ValueError, match="unknown PRM family"):
        load_prm("orm:x")
    with pytest.raises(ValueError, match="FAMILY:PATH"):
        parse_prm_spec("skywork")


class _FakeVocab:
    """Encodes only what the Math-Shepherd encoder asks for; ``tokens`` is its id -> token map."""

    def __init__(self, tokens: dict[int, str], ids: dict[str, list[int]]) -> None:
        self.tokens, self.ids = tokens, ids

    def __len__(self) -> int:
        return 32000

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.ids[text]

    def convert_ids_to_tokens(self, token_id: int) -> str:
        return self.tokens.get(token_id, "<unk>")


def test_magic_ids_checked_against_real_vocabulary() -> None:
    mistral = {12902: "▁ки", 648: "▁+", 387: "▁-"}
    wrong = {"ки": [5], "+ -": [6, 7]}  # e.g. a lookup that lost the word-initial space
    with pytest.raises(ValueError, match="12902"):
        MathShepherdEncoder(_FakeVocab(mistral, wrong))
    MathShepherdEncoder(_FakeVocab({}, wrong))  # another vocabulary is not checked
    real = MathShepherdEncoder(_FakeVocab(mistral, {"ки": [12902], "+ -": [648, 387]}))
    assert (real.step_tag_id, real.good_id, real.bad_id) == (12902, 648, 387)

"""Limits and faults of the PRM service and of the call coalescer behind it.

One bad request in a merged scorer call fails only its own caller; the service bounds what it
accepts (requests in flight, tokens per request, scoring time) and never sends internal
exception text to clients.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from test_prm_support import build_qwen_prm

from testtime.retry import RetryPolicy
from testtime.scoring.base import InputTooLong, ScoreResult
from testtime.scoring.coalesce import Coalescer
from testtime.scoring.prm import PRM_FAMILIES
from testtime.scoring.service.client import RemoteScorer, RemoteScorerError
from testtime.scoring.service.http import Timeouts
from testtime.scoring.service.server import BackgroundServer, ServeConfig
from testtime.testing import RuleScorer, keyword_rule
from testtime.types import ScoreRequest, Step


def req(question: str, *steps: str) -> ScoreRequest:
    return ScoreRequest(question, tuple(Step(text=s) for s in steps))


def body(*requests: ScoreRequest) -> bytes:
    return json.dumps({"requests": [{"question": r.question, "steps": [s.text for s in r.steps]}
                                    for r in requests]}).encode()


class PickyScorer(RuleScorer):
    """Fails every call that holds a step with "poison"; optionally slow; counts calls."""

    def __init__(self, delay_s: float = 0.0, secret: str = "") -> None:
        super().__init__(keyword_rule({"good": 0.9}, default=0.5), name="picky")
        self.delay_s = delay_s
        self.secret = secret
        self.sizes: list[int] = []

    async def score(self, requests: Sequence[ScoreRequest]) -> ScoreResult:
        self.sizes.append(len(requests))
        await asyncio.sleep(self.delay_s)
        if any("poison" in s.text for r in requests for s in r.steps):
            raise RuntimeError(f"internal failure in {self.secret or 'the scorer'}")
        return await super().score(requests)


def test_a_bad_request_in_a_merged_call_fails_only_its_caller() -> None:
    scorer = PickyScorer(delay_s=0.05)
    coalescer = Coalescer(scorer.score)
    calls = [[req("q1", "good")], [req("q2", "poison")], [req("q3", "meh", "good")]]

    async def everyone() -> list[ScoreResult | BaseException]:
        return await asyncio.gather(*(coalescer(c) for c in calls), return_exceptions=True)

    got = asyncio.run(everyone())
    assert isinstance(got[1], RuntimeError) and "internal failure" in str(got[1])
    assert got[0] == ScoreResult([[0.9]], [2]) and got[2] == ScoreResult([[0.5, 0.9]], [3])
    # The first caller ran alone; the other two were merged, failed, and were run alone.
    assert scorer.sizes == [1, 2, 1, 1]


def test_500_bodies_carry_an_error_id_never_the_exception_text() -> None:
    with BackgroundServer(PickyScorer(secret="/srv/models/secret.bin")) as srv:
        r = httpx.post(srv.url + "/v1/score", content=body(req("q", "poison")), timeout=10)
        assert r.status_code == 500
        message = r.json()["error"]
        assert "error id" in message and "secret" not in message and "/srv" not in message
        ok = httpx.post(srv.url + "/v1/score", content=body(req("q", "good")), timeout=10)
        assert ok.status_code == 200 and ok.json()["scores"] == [[0.9]]


def test_requests_beyond_the_concurrency_limit_get_503_and_clients_retry() -> None:
    config = ServeConfig(port=0, max_concurrent=2)
    with BackgroundServer(PickyScorer(delay_s=0.4), config) as srv:
        statuses: list[int] = []

        def raw() -> None:
            r = httpx.post(srv.url + "/v1/score", content=body(req("q", "good")), timeout=30)
            statuses.append(r.status_code)
            if r.status_code == 503:
                assert r.headers["Retry-After"] == "1"
                assert "--max-concurrent 2" in r.json()["error"]

        threads = [threading.Thread(target=raw) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert statuses.count(200) >= 2 and 503 in statuses
        assert set(statuses) <= {200, 503}
        # The client backs off on 503 and gets through once a slot is free.
        clients = [RemoteScorer(srv.url, retry=RetryPolicy(max_retries=8, base_delay_s=0.2))
                   for _ in range(4)]

        async def all_clients() -> list[ScoreResult]:
            return await asyncio.gather(*(c.score([req("q", "good")]) for c in clients))

        assert [r.scores for r in asyncio.run(all_clients())] == [[[0.9]]] * 4


def test_scoring_past_the_timeout_gets_504() -> None:
    config = ServeConfig(port=0, score_timeout_s=0.2)
    with BackgroundServer(PickyScorer(delay_s=1.0), config) as srv:
        t0 = time.monotonic()
        r = httpx.post(srv.url + "/v1/score", content=body(req("q", "good")), timeout=30)
        assert r.status_code == 504 and "--score-timeout" in r.json()["error"]
        assert time.monotonic() - t0 < 0.9


@pytest.fixture(scope="module")
def qwen_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_qwen_prm(tmp_path_factory.mktemp("limits_qwen_prm"))


def test_a_path_longer_than_the_prm_context_is_refused_in_process(qwen_ckpt: Path) -> None:
    prm = PRM_FAMILIES["qwen_prm"](str(qwen_ckpt), "cpu")
    assert prm.max_input_tokens == 1024  # the tiny model's max_position_embeddings
    with pytest.raises(InputTooLong, match=r"tokens, more than the 1024 this PRM accepts"):
        asyncio.run(prm.score([req("x " * 3000, "a step")]))
    ok = asyncio.run(prm.score([req("What is 2+3?", "a step")]))
    assert len(ok.scores[0]) == 1 and 0.0 <= ok.scores[0][0] <= 1.0


def test_served_prm_refuses_over_long_requests_with_413(qwen_ckpt: Path) -> None:
    prm = PRM_FAMILIES["qwen_prm"](str(qwen_ckpt), "cpu")
    config = ServeConfig(port=0, max_request_tokens=5000)  # lowered to the model's 1024
    with BackgroundServer(prm, config, close_scorer=True) as srv:
        info = httpx.get(srv.url + "/v1/info").json()
        assert info["max_input_tokens"] == 1024 and info["params"]["non_embedding"] > 0
        long_question = "How many? " * 20_000  # far past the context, as a 260 KB question
        t0 = time.monotonic()
        r = httpx.post(srv.url + "/v1/score", content=body(req(long_question, "a step")),
                       timeout=60)
        assert r.status_code == 413, r.text
        assert "1024" in r.json()["error"] and time.monotonic() - t0 < 30
        client = RemoteScorer(srv.url, timeouts=Timeouts(read_s=60))
        with pytest.raises(RemoteScorerError, match="HTTP 413"):
            asyncio.run(client.score([req(long_question, "a step")]))
        fine = asyncio.run(client.score([req("What is 2+3?", "a step")]))
        assert len(fine.scores[0]) == 1


def test_a_path_past_the_prm_context_is_scored_on_what_fits(qwen_ckpt: Path) -> None:
    """A path longer than the PRM's context is not an error: the steps that fit are scored
    exactly (the PRM is causal), the rest repeat the last score and are counted, in process
    and through the service; the search's compute flags the path."""
    from testtime.search.base import Compute, SearchContext

    prm = PRM_FAMILIES["qwen_prm"](str(qwen_ckpt), "cpu")
    head = ("What is 2+3?", "First, 2+3.", "So it is 5.")
    long = req(*head, "x " * 400, "y " * 700, "\\boxed{5}")
    short = req(*head, "x " * 400)
    both = asyncio.run(prm.score([long, short]))
    assert both.unread == [2, 0]
    assert both.scores[0][:3] == pytest.approx(both.scores[1], abs=1e-5)
    assert both.scores[0][3:] == [both.scores[0][2]] * 2
    assert both.tokens[0] <= 1024
    compute = Compute()
    ctx = SearchContext.__new__(SearchContext)  # score() reads only the scorer
    ctx.scorer = prm
    asyncio.run(SearchContext.score(ctx, [long], compute))
    assert (compute.prm_truncated_paths, compute.prm_unread_steps) == (1, 2)
    from testtime.records import ComputeRecord  # the record keeps every counter (flagged there)

    assert set(compute.counters()) <= set(ComputeRecord.model_fields)
    assert ComputeRecord(**compute.counters()).prm_unread_steps == 2
    with BackgroundServer(prm, ServeConfig(port=0), close_scorer=True) as srv:
        remote = asyncio.run(RemoteScorer(srv.url, timeouts=Timeouts(read_s=60)).score([long]))
        assert remote.unread == [2]
        assert remote.scores[0] == pytest.approx(both.scores[0], abs=1e-5)

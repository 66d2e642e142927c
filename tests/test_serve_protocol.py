"""The HTTP scorer service and its client, on rule-based scorers (no model needed)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator, Sequence

import httpx
import pytest

from testtime.retry import RetryPolicy
from testtime.scoring.base import ScoreResult
from testtime.scoring.coalesce import Coalescer
from testtime.scoring.registry import build_scorer
from testtime.scoring.self_certainty import SelfCertaintyScorer
from testtime.scoring.service.client import RemoteScorer, RemoteScorerError
from testtime.scoring.service.http import Timeouts, split_url
from testtime.scoring.service.server import BackgroundServer, ServeConfig
from testtime.testing import RuleScorer, keyword_rule, scored_tokens
from testtime.types import ScoreRequest, Step

FAST_RETRY = RetryPolicy(max_retries=2, base_delay_s=0.01)
FAST = {"retry": FAST_RETRY, "timeouts": Timeouts(read_s=30, connect_s=2)}
KEY = "s3cret-key"


def rule_scorer() -> RuleScorer:
    return RuleScorer(keyword_rule({"good": 0.9, "bad": 0.1}, default=0.5))


class SlowScorer(RuleScorer):
    """A rule scorer whose calls take a while, so concurrent requests pile up."""

    def __init__(self, delay_s: float = 0.3, fail_first: int = 0) -> None:
        super().__init__(keyword_rule({"good": 0.9, "bad": 0.1}), name="slow-rule")
        self.delay_s = delay_s
        self.fail_first = fail_first
        self.calls: list[int] = []

    async def score(self, requests: Sequence[ScoreRequest]) -> ScoreResult:
        self.calls.append(len(requests))
        await asyncio.sleep(self.delay_s)
        if len(self.calls) <= self.fail_first:
            raise RuntimeError("GPU fell over")
        return await super().score(requests)


def req(question: str, *steps: str) -> ScoreRequest:
    return ScoreRequest(question, tuple(Step(text=s) for s in steps))


REQUESTS = [
    req("What is 2+3?", "A good start.\n\n", "A bad step.\n\n", "Neutral."),
    req("Empty?"),
    req("Compute 7*6.", "good: 42"),
]
EXPECTED = [[0.9, 0.1, 0.5], [], [0.9]]


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    config = ServeConfig(port=0, api_key=KEY, max_request_bytes=4096, max_steps=8)
    with BackgroundServer(rule_scorer(), config) as srv:
        yield srv


def post(srv: BackgroundServer, body: bytes | str, key: str | None = KEY,
         path: str = "/v1/score") -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    content = body.encode() if isinstance(body, str) else body
    return httpx.post(srv.url + path, content=content, headers=headers, timeout=10)


def good_body() -> str:
    return json.dumps({"requests": [{"question": "q", "steps": ["good", "bad"]}]})


def test_score_round_trip_and_token_counts(server: BackgroundServer) -> None:
    client = RemoteScorer.connect(server.url, api_key=KEY, **FAST)
    assert client.name == "rule"  # the served scorer's own name
    result = asyncio.run(client.score(REQUESTS))
    assert result.scores == EXPECTED
    # The tokens the served scorer read come back per request, with the scores.
    assert result.tokens == [scored_tokens(r) for r in REQUESTS]
    assert result.tokens == asyncio.run(rule_scorer().score(REQUESTS)).tokens
    assert client.param_count is None  # a model-free scorer: no PRM FLOPs to bill


def test_health_info_and_empty_steps(server: BackgroundServer) -> None:
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}  # no key needed
    info = httpx.get(server.url + "/v1/info", headers={"Authorization": f"Bearer {KEY}"})
    assert info.json() == {"name": "rule", "params": None, "max_input_tokens": None,
                           "max_request_bytes": 4096, "max_steps": 8}
    r = post(server, json.dumps({"requests": [{"question": "q", "steps": []}]}))
    assert r.status_code == 200 and r.json()["scores"] == [[]]
    r = post(server, json.dumps({"requests": []}))
    assert r.status_code == 200 and r.json() == {"scores": [], "scored_tokens": 0, "tokens": [],
                                                "cached": [], "unread": []}


@pytest.mark.parametrize(
    ("body", "key", "status", "message"),
    [
        ("", KEY, 400, "empty body"),
        ("{\"requests\": [", KEY, 400, "invalid JSON"),
        ("[1, 2]", KEY, 422, "invalid request"),
        ('{"requests": 3}', KEY, 422, "requests: Input should be a valid array"),
        ('{"requests": [{"question": 1, "steps": []}]}', KEY, 422, "requests.0.question"),
        ('{"requests": [{"question": "q", "steps": "abc"}]}', KEY, 422, "requests.0.steps"),
        ('{"requests": [{"question": "q", "steps": [7]}]}', KEY, 422, "requests.0.steps.0"),
        ('{"requests": [{"question": "q"}]}', KEY, 422, "requests.0.steps: Field required"),
        ('{"requests": [{"question": "q", "steps": [], "x": 1}]}', KEY, 422, "requests.0.x"),
        ('{"requests": [{"question": "q", "steps": ["a"]}]}', "wrong", 401, "API key"),
        ('{"requests": [{"question": "q", "steps": ["a"]}]}', None, 401, "API key"),
        (json.dumps({"requests": [{"question": "q", "steps": ["s"] * 9}]}), KEY, 413,
         "9 steps exceed the limit of 8"),
        (json.dumps({"requests": [{"question": "q" * 5000, "steps": []}]}), KEY, 413,
         "exceeds the limit of 4096"),
    ],
)
def test_bad_requests_get_4xx_and_server_keeps_serving(
    server: BackgroundServer, body: str, key: str | None, status: int, message: str
) -> None:
    r = post(server, body, key)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    after = post(server, good_body())
    assert after.status_code == 200 and after.json()["scores"] == [[0.9, 0.1]]


def test_remote_client_reports_4xx_with_the_servers_message(server: BackgroundServer) -> None:
    client = RemoteScorer(server.url, api_key="wrong", **FAST)
    with pytest.raises(RemoteScorerError, match=r"HTTP 401.*API key"):
        asyncio.run(client.score(REQUESTS))
    with pytest.raises(RemoteScorerError, match="401"):
        RemoteScorer.connect(server.url, api_key="wrong", **FAST)


def test_api_key_from_url_or_environment(server: BackgroundServer,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    host_port = server.url.removeprefix("http://")
    from_url = RemoteScorer(f"http://{KEY}@{host_port}/", **FAST)
    assert from_url.url == server.url and KEY not in from_url.name
    assert asyncio.run(from_url.score(REQUESTS)).scores == EXPECTED
    monkeypatch.setenv("TESTTIME_PRM_API_KEY", KEY)
    from_env = build_scorer(server.url)
    assert asyncio.run(from_env.score(REQUESTS)).scores == EXPECTED
    assert split_url("https://user:pw@example.org:8443/x/") == ("https://example.org:8443/x", "pw")
    with pytest.raises(ValueError, match="http://HOST:PORT"):
        split_url("ftp://example.org")


def test_client_splits_large_calls_into_several_bodies(server: BackgroundServer) -> None:
    many = [req(f"Question {i}?", "good " * (i % 5), "bad") for i in range(40)]
    client = RemoteScorer(server.url, api_key=KEY, max_body_bytes=600, **FAST)
    result = asyncio.run(client.score(many))
    assert client.posts > 3  # each body stays under the server's 4096-byte limit
    assert result == asyncio.run(rule_scorer().score(many))


def test_steps_carry_token_statistics() -> None:
    """A scorer that reads the policy's token statistics gets them through the wire."""
    steps = (Step("a b c", num_tokens=3, logprob_sum=-1.5), Step("d", num_tokens=1,
                                                                    logprob_sum=-0.1))
    requests = [ScoreRequest("q", steps)]
    local = asyncio.run(SelfCertaintyScorer("confidence").score(requests))
    with BackgroundServer(SelfCertaintyScorer("confidence")) as srv:
        remote = RemoteScorer.connect(srv.url, **FAST)
        assert asyncio.run(remote.score(requests)) == local
        # The same scorer rejects steps without statistics: a 4xx, not a crash.
        with pytest.raises(RemoteScorerError, match="HTTP 422.*log-probabilities"):
            asyncio.run(remote.score([ScoreRequest("q", (Step("x y", num_tokens=2),))]))
        assert asyncio.run(remote.score(requests)) == local


def test_concurrent_clients_are_batched() -> None:
    slow = SlowScorer(delay_s=0.3)
    with BackgroundServer(slow) as srv:
        clients = [RemoteScorer(srv.url, **FAST) for _ in range(8)]

        async def all_clients() -> list[ScoreResult]:
            return await asyncio.gather(*(
                c.score([req(f"q{i}", "good", "bad" * (i + 1))]) for i, c in enumerate(clients)))

        results = [r.scores for r in asyncio.run(all_clients())]
    assert results == [[[0.9, 0.1]]] * 8
    assert sum(slow.calls) == 8  # every request was scored once...
    assert len(slow.calls) < 8  # ...in fewer scorer calls than HTTP requests
    assert max(slow.calls) > 1


def test_coalescer_merges_calls_made_while_busy() -> None:
    seen: list[int] = []

    async def fn(requests: list[ScoreRequest]) -> ScoreResult:
        seen.append(len(requests))
        await asyncio.sleep(0.05)
        return ScoreResult([[float(len(r.steps))] * len(r.steps) for r in requests],
                           [len(r.steps) for r in requests])

    coalescer = Coalescer(fn)

    async def main() -> list[ScoreResult]:
        return await asyncio.gather(*(coalescer([req("q", *["s"] * k)]) for k in range(1, 6)))

    got = asyncio.run(main())
    assert [r.scores for r in got] == [[[float(k)] * k] for k in range(1, 6)]
    assert [r.tokens for r in got] == [[k] for k in range(1, 6)]  # usage split per caller
    assert seen == [1, 4] and coalescer.calls == 2


def test_5xx_is_retried_then_succeeds() -> None:
    flaky = SlowScorer(delay_s=0.0, fail_first=1)
    with BackgroundServer(flaky) as srv:
        client = RemoteScorer(srv.url, **FAST)
        assert asyncio.run(client.score(REQUESTS[:1])).scores == [[0.9, 0.1, 0.5]]
        raw = httpx.post(srv.url + "/v1/score", content=good_body())
    assert len(flaky.calls) == 3  # failed once (500), retried, then the raw post
    assert raw.status_code == 200


def test_server_down_gives_a_clear_error_naming_the_url() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    client = RemoteScorer(url, **FAST)
    with pytest.raises(RemoteScorerError, match=rf"{url}.*not reachable after 3 attempts"):
        asyncio.run(client.score(REQUESTS))
    with pytest.raises(RemoteScorerError, match=rf"{url} is not reachable"):
        RemoteScorer.connect(url, **FAST)


def test_serve_config_validates() -> None:
    with pytest.raises(ValueError, match="port"):
        ServeConfig(port=70000)
    with pytest.raises(ValueError, match="max_steps"):
        ServeConfig(max_steps=0)
    with pytest.raises(ValueError, match="api_key"):
        ServeConfig(api_key=" ")

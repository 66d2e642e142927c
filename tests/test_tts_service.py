"""``testtime serve tts`` with the official ``openai`` client against the embedded SmolLM2:
every method, usage equal to the record's compute, the same answer as ``testtime run`` for
the same problem and seed, streaming, the refusals, 16 concurrent clients, cancellation.

One service per module (the model loads once); searches are tiny (N <= 4, paths of at most
``PATH`` tokens, three steps) so the module stays fast on two cores.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from testtime.api.options import ServiceConfig, problem_id
from testtime.api.server import BackgroundService
from testtime.cli.common import sampling_and_path
from testtime.config import DatasetConfig, RunConfig
from testtime.policy.registry import default_backend
from testtime.search.base import SearchConfig

pytestmark = pytest.mark.slow  # loads SmolLM2

PATH = 16  # tokens per path
DEPTH = 3  # steps per path (step-level methods)
KEY = "test-key"
QUESTION = "What is 2 + 3?"


def base_config(policy: str, method: str = "best_of_n", n: int = 4, seed: int = 0,
                dataset: DatasetConfig | None = None, beam_width: int = 2) -> RunConfig:
    """What `testtime run --max-path-tokens PATH --max-depth DEPTH` builds (and the service)."""
    sampling, path = sampling_and_path(policy, None, None, None, seed, PATH)
    # One llama.cpp thread: on a shared, oversubscribed CPU two spinning threads run ~10x
    # slower than one (measured while this suite ran beside seven others).
    engine = {"n_threads": 1} if policy.startswith("llamacpp") else {}
    return RunConfig(dataset=dataset or DatasetConfig(), policy=policy, policy_options=engine,
                     search=SearchConfig(method=method, n=n, beam_width=beam_width,
                                         max_depth=DEPTH, max_path_tokens=path),
                     sampling=sampling)


def write_table(path: Path, policy: str, prm: str) -> Path:
    """A compute-optimal table for (policy, prm): beam search M=2 for hard problems, Best-of-N
    majority otherwise, at budget 4."""
    bounds = {"easy": [0.5, 1.0], "medium": [0.1, 0.5], "hard": [0.0, 0.1]}
    strategies = {"easy": {"method": "best_of_n", "rule": "majority", "beam_width": None},
                  "medium": {"method": "best_of_n", "rule": "prm_last_max", "beam_width": None},
                  "hard": {"method": "beam_search", "rule": "prm_last_max", "beam_width": 2}}
    rows = [{"scheme": "absolute", "bin": b, "budget": 4, "strategy": s}
            for b, s in strategies.items()]
    path.write_text(json.dumps({"version": 1, "entries": [{
        "policy": policy, "prm": prm, "fixed": {}, "rows": rows,
        "binnings": [{"scheme": "absolute", "bins": list(bounds), "bounds": bounds}]}]}))
    return path


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Any:
    policy = f"{default_backend()}:default"
    table = write_table(tmp_path_factory.mktemp("table") / "optimal_table.json", policy,
                        "self-certainty")
    cfg = ServiceConfig(port=0, api_key=KEY, n=2, beam_width=2, budget=4, pilot=2, max_n=8,
                        max_path_tokens=PATH, max_in_flight=32, table=str(table),
                        progress_interval_s=0.05, max_request_bytes=64 * 1024)
    with BackgroundService(base_config(policy, n=2), cfg) as svc:
        yield svc


@pytest.fixture(scope="module")
def client(service: Any) -> Any:
    return openai.OpenAI(base_url=f"{service.url}/v1", api_key=KEY, max_retries=0,
                         timeout=120)


def ask(client: Any, tts: dict[str, Any] | None = None, **kw: Any) -> Any:
    return client.chat.completions.create(
        model=kw.pop("model", "tts"), messages=[{"role": "user", "content": QUESTION}],
        extra_body={"tts": tts} if tts is not None else None, **kw)


def ext(resp: Any) -> dict[str, Any]:
    return resp.model_extra["tts"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("method,n", [("cot", 1), ("best_of_n", 4), ("beam_search", 4),
                                      ("dvts", 4), ("particle_filtering", 2),
                                      ("adaptive_sc", 2), ("optimal", 4)])
def test_each_method_answers_and_bills_every_sample(client: Any, service: Any, method: str,
                                                    n: int) -> None:
    tts: dict[str, Any] = {"method": method, "return_candidates": True}
    tts.update({"budget": n} if method == "optimal" else {"n": n})
    resp = ask(client, tts)
    e = ext(resp)
    assert e["method"] == method
    assert e["search_method"] == ("adaptive" if method == "optimal" else method)
    assert e["rule"] == ("adaptive" if method == "optimal" else "majority")
    cands = e["candidates"]
    assert cands and resp.choices[0].message.content
    pick = e["selected"][0]
    if pick is not None:  # the message is the selected path, its answer the extracted one
        assert resp.choices[0].message.content == cands[pick]["text"]
        assert e["answer"] == cands[pick]["answer"]
    # usage counts every sample the search drew, as the record's compute does
    assert resp.usage.completion_tokens == e["compute"]["completion_tokens"]
    assert resp.usage.prompt_tokens == e["compute"]["prompt_tokens"]
    assert resp.usage.completion_tokens >= sum(c["completion_tokens"] for c in cands)
    assert e["compute"]["generations"] >= (1 if method in ("cot", "adaptive_sc") else n)
    params = service.engine.built.costs.policy_params
    assert params > 100e6  # SmolLM2-135M
    assert e["policy_flops"] == pytest.approx(
        2 * params * (resp.usage.prompt_tokens + resp.usage.completion_tokens), rel=1e-9)
    assert e["prm_flops"] == 0 and e["prm_tokens"] == 0  # self-certainty is model-free
    if method == "optimal":
        assert "adaptive" in e["info"]


def test_same_request_same_seed_is_what_testtime_run_gives(client: Any, service: Any,
                                                           tmp_path: Path) -> None:
    from testtime.runner import run
    from testtime.store import RecordStore

    tts = {"method": "best_of_n", "n": 4, "rule": "prm_min_vote", "seed": 7,
           "return_candidates": True}
    first, again = ask(client, tts), ask(client, tts)
    assert first.choices[0].message.content == again.choices[0].message.content
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps({"id": problem_id(QUESTION), "problem": QUESTION,
                                "answer": "5"}) + "\n")
    policy = service.engine.base_config.policy
    cfg = base_config(policy, n=4, seed=7, dataset=DatasetConfig(name=str(data)))
    built = service.engine.built  # the service's own engines, on the loop they live on
    service.call(run(cfg, tmp_path / "run", policy=built.policy, scorer=built.scorer,
                     progress=False), timeout_s=300)
    (record,) = list(RecordStore(tmp_path / "run" / "results.jsonl"))
    e = ext(first)
    assert [c["text"] for c in e["candidates"]] == [c.text for c in record.candidates]
    pred = record.predictions["4"]["prm_min_vote"]
    assert e["answer"] == pred.answer and e["selected"][0] == pred.index
    assert first.choices[0].message.content == record.candidates[pred.index].text
    assert first.usage.completion_tokens == record.compute.completion_tokens
    assert first.usage.prompt_tokens == record.compute.prompt_tokens


def test_choices_are_distinct_answers_and_shorthand_names_the_search(client: Any) -> None:
    resp = ask(client, {"return_candidates": True}, model="tts/best_of_n/n8/seed3", n=3)
    e = ext(resp)
    assert (e["method"], e["n"]) == ("best_of_n", 8)
    answers = e["answers"]
    assert len(resp.choices) == len(answers) <= 3
    assert len(set(answers)) == len(answers)  # distinct answers, best first
    assert [c.index for c in resp.choices] == list(range(len(answers)))
    votes = {v["answer"]: v["votes"] for v in e["votes"]}
    assert sum(votes.values()) <= 8


def test_text_completions_and_models(client: Any) -> None:
    resp = client.completions.create(model="tts/cot", prompt=QUESTION, max_tokens=8)
    assert resp.choices[0].text and resp.usage.completion_tokens <= 8 + 1
    models = {m.id: m for m in client.models.list().data}
    assert {"tts", "tts/beam_search", "tts/optimal"} <= set(models)
    defaults = models["tts"].model_extra["tts"]["defaults"]
    assert defaults["n"] == 2 and defaults["limits"]["max_n"] == 8


def test_stream_sends_progress_then_the_answer(client: Any) -> None:
    tts = {"method": "beam_search", "n": 4, "beam_width": 2, "seed": 1}
    chunks = list(client.chat.completions.create(
        model="tts", messages=[{"role": "user", "content": QUESTION}], stream=True,
        extra_body={"tts": tts}))
    progress = [c.model_extra["tts"]["progress"] for c in chunks
                if c.model_extra.get("tts", {}).get("progress")]
    assert progress, "no progress chunk while the search ran"
    assert all(p["depth"] >= 0 and p["completion_tokens"] >= 0 for p in progress)
    assert [p["completion_tokens"] for p in progress] == sorted(p["completion_tokens"]
                                                                for p in progress)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    last = chunks[-1]
    assert last.usage is not None and "answer" in last.model_extra["tts"]
    whole = ask(client, tts)
    assert text == whole.choices[0].message.content  # same seed, same search
    assert last.usage.completion_tokens == whole.usage.completion_tokens


def raw(service: Any, body: Any, key: str | None = KEY, path: str = "/v1/chat/completions",
        content: bytes | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if content is None:
        return httpx.post(service.url + path, json=body, headers=headers, timeout=60)
    return httpx.post(service.url + path, content=content, timeout=60,
                      headers={**headers, "Content-Type": "application/json"})


MSG = [{"role": "user", "content": QUESTION}]


@pytest.mark.parametrize("body,status,param", [
    ({"model": "tts"}, 422, "messages"),
    ({"model": "tts", "messages": []}, 422, "messages"),
    ({"model": "tts", "messages": [{"role": "system", "content": "x"}]}, 422, "messages"),
    ({"model": "tts", "messages": MSG, "tts": {"method": "magic"}}, 422, "tts.method"),
    ({"model": "tts", "messages": MSG, "tts": {"rule": "loudest"}}, 422, "tts.rule"),
    ({"model": "tts", "messages": MSG, "tts": {"rule": "oracle"}}, 422, "tts.rule"),
    ({"model": "tts", "messages": MSG, "tts": {"n": 0}}, 422, "tts.n"),
    ({"model": "tts", "messages": MSG, "tts": {"n": 9}}, 422, "tts.n"),
    ({"model": "tts", "messages": MSG, "tts": {"n": 3, "method": "beam_search",
                                               "beam_width": 2}}, 422, "tts.beam_width"),
    ({"model": "tts", "messages": MSG, "tts": {"colour": "red"}}, 422, "tts.colour"),
    ({"model": "tts", "messages": MSG, "n": 5}, 422, "n"),
    ({"model": "tts", "messages": MSG, "max_tokens": 10_000}, 422, "max_tokens"),
    ({"model": "tts/best_of_n/n2/majority/extra", "messages": MSG}, 422, "model"),
])
def test_bad_requests_name_the_field(service: Any, body: Any, status: int, param: str) -> None:
    r = raw(service, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and param.split(".")[-1] in err["message"]
    assert set(err) == {"message", "type", "param", "code"}


def test_bad_json_key_and_size(service: Any, client: Any) -> None:
    assert raw(service, None, content=b"{not json").status_code == 400
    assert raw(service, None, content=b"[1, 2]").status_code == 400
    r = raw(service, {"model": "tts", "messages": MSG}, key="wrong")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{service.url}/v1", api_key="nope",
                      max_retries=0).models.list()
    big = json.dumps({"model": "tts", "messages": [{"role": "user",
                                                      "content": "x" * 70_000}]}).encode()
    assert raw(service, None, content=big).status_code == 413
    with pytest.raises(openai.UnprocessableEntityError):
        ask(client, {"method": "nope"})
    assert httpx.get(service.url + "/health").json()["status"] == "ok"


def test_sixteen_concurrent_clients_share_batches(service: Any) -> None:
    batches = service.engine.built.policy.batch_stats

    async def main() -> list[Any]:
        c = openai.AsyncOpenAI(base_url=f"{service.url}/v1", api_key=KEY, max_retries=0,
                               timeout=300)
        return await asyncio.gather(*(c.chat.completions.create(
            model="tts", messages=[{"role": "user", "content": f"What is {i} + {i}?"}],
            max_tokens=12, extra_body={"tts": {"n": 2}}) for i in range(16)))

    before = batches.max_rows
    out = asyncio.run(main())
    assert len(out) == 16 and all(r.choices[0].message.content for r in out)
    assert all(r.usage.completion_tokens == ext(r)["compute"]["completion_tokens"] for r in out)
    # requests of different clients were decoded in the same backend batches
    assert max(before, batches.max_rows) > 2


def new_client(service: Any) -> Any:
    return openai.OpenAI(base_url=f"{service.url}/v1", api_key=KEY, max_retries=0,
                         timeout=120)


def test_disconnect_cancels_the_search(service: Any) -> None:
    engine = service.engine
    cancelled = engine.cancelled
    body = {"model": "tts", "messages": MSG, "stream": True, "max_tokens": PATH,
            "tts": {"method": "beam_search", "n": 4, "beam_width": 2}}
    with httpx.stream("POST", service.url + "/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {KEY}"}) as r:
        assert r.status_code == 200
        next(r.iter_lines())  # the search has started; now hang up
    deadline = time.monotonic() + 30
    while engine.cancelled == cancelled and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.cancelled == cancelled + 1
    while engine.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.in_flight == 0
    # a non-streamed request whose client gives up is cancelled too
    cancelled = engine.cancelled
    done = threading.Event()

    def impatient() -> None:
        try:
            raw_body = {**body, "stream": False}
            httpx.post(service.url + "/v1/chat/completions", json=raw_body, timeout=0.3,
                       headers={"Authorization": f"Bearer {KEY}"})
        except httpx.TimeoutException:
            done.set()

    t = threading.Thread(target=impatient)
    t.start()
    t.join()
    assert done.is_set()
    while engine.cancelled == cancelled and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.cancelled == cancelled + 1
    # the service still answers, after the rows the cancelled searches had queued (the
    # backend finishes a batch it started: a request after them sees an idle engine)
    assert ask(new_client(service), {"method": "cot", "n": 1}).choices[0].message.content


def test_busy_service_answers_429_with_retry_after_and_slow_searches_504() -> None:
    """On a scripted policy (no model): one search in flight at most, a 2 s timeout."""
    from testtime.testing import RuleScorer, ScriptedPolicy

    class Slow(ScriptedPolicy):
        delay = 0.6

        async def generate(self, requests: Any) -> Any:
            await asyncio.sleep(self.delay)
            return await super().generate(requests)

    policy = Slow(lambda *a: "Add them.\n\nSo \\boxed{4}")
    cfg = RunConfig(policy="scripted", prm="rule", search=SearchConfig(n=1))
    svc_cfg = ServiceConfig(port=0, n=1, max_in_flight=1, request_timeout_s=2.0)
    with BackgroundService(cfg, svc_cfg, policy=policy,
                           scorer=RuleScorer(lambda *a: 0.5)) as svc:
        body = {"model": "tts", "messages": MSG}
        first: list[httpx.Response] = []
        t = threading.Thread(target=lambda: first.append(raw(svc, body, key=None)))
        t.start()
        deadline = time.monotonic() + 10
        while svc.engine.in_flight == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        busy = raw(svc, body, key=None)
        t.join()
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
        assert busy.json()["error"]["type"] == "rate_limit_error"
        assert first[0].status_code == 200
        assert first[0].json()["choices"][0]["message"]["content"].endswith("\\boxed{4}")
        assert first[0].json()["tts"]["answer"] == "4"
        policy.delay = 3.0
        slow = raw(svc, body, key=None)
        assert slow.status_code == 504 and slow.json()["error"]["code"] == "timeout"
        assert svc.engine.cancelled == 1 and svc.engine.in_flight == 0
        policy.delay = 0.0
        assert raw(svc, body, key=None).status_code == 200  # the admission was given back


def test_a_failing_search_is_a_500_with_an_error_id_and_the_service_goes_on() -> None:
    """A backend that fails on one problem: that request gets a 500 (an error event when
    streamed), the others their answers."""
    from testtime.testing import RuleScorer, ScriptedPolicy

    def script(problem: str, *a: Any) -> str:
        if "explode" in problem:
            raise RuntimeError("backend exploded")
        return "So \\boxed{4}"

    cfg = RunConfig(policy="scripted", prm="rule", search=SearchConfig(n=2))
    with BackgroundService(cfg, ServiceConfig(port=0, n=2), policy=ScriptedPolicy(script),
                           scorer=RuleScorer(lambda *a: 0.5)) as svc:
        c = openai.OpenAI(base_url=f"{svc.url}/v1", api_key="x", max_retries=0)
        bad = [{"role": "user", "content": "explode"}]
        with pytest.raises(openai.InternalServerError, match="error id"):
            c.chat.completions.create(model="tts", messages=bad)
        with pytest.raises(openai.APIError, match="error id"):
            list(c.chat.completions.create(model="tts", messages=bad, stream=True))
        ok = c.chat.completions.create(model="tts", messages=MSG)
        assert ext(ok)["answer"] == "4" and ext(ok)["votes"] == [{"answer": "4", "votes": 2}]
        assert svc.engine.failed == 2

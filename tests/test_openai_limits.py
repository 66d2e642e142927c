"""The ``openai:`` client against servers with a context limit, and served aliases.

Through ``httpx.MockTransport`` servers: the context length and the loaded model are read from
``/v1/models`` (vLLM's ``max_model_len`` and ``root``); each row asks for at most what is left
of the context; a prompt that leaves no room, or a request refused as too long (HTTP 400, in
the words of vLLM, OpenAI and llama.cpp), ends that candidate as ``length`` with no tokens
(not retried, the problem goes on); the tokenizer comes from ``root`` when the served name is
an alias, and a missing one is one user error naming the ``tokenizer`` option. The searches
and the runner take such candidates: every method writes records, none an error.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_backend_openai import URL_A, choice, tiny_tokenizer

from testtime.errors import UserError
from testtime.policy.openai import OpenAIPolicy, OpenAIPolicyConfig, OpenAIServerError
from testtime.types import ChatMessage, GenerationRequest, SamplingParams

MESSAGES = (ChatMessage("user", "What is 2 + 3?"),)


@pytest.fixture(scope="module")
def tok() -> Any:
    return tiny_tokenizer()


def vllm_models(max_model_len: int | None = 1024, root: str | None = "/models/SmolLM2",
                model: str = "m") -> httpx.Response:
    """``/v1/models`` as vLLM answers it (``root``, ``max_model_len``)."""
    entry: dict[str, Any] = {"id": model, "object": "model", "owned_by": "vllm"}
    if root is not None:
        entry["root"] = root
    if max_model_len is not None:
        entry["max_model_len"] = max_model_len
    return httpx.Response(200, json={"object": "list", "data": [entry]})


class Server:
    """A scripted server: ``/v1/models`` as given, completions answered by ``answer``."""

    def __init__(self, answer: Any, **models: Any) -> None:
        self.answer = answer
        self.models = models
        self.sent: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return vllm_models(**self.models)
        payload = json.loads(request.content)
        self.sent.append(payload)
        result: httpx.Response = self.answer(payload)
        return result


def policy_for(tok: Any, server: Server, **kw: Any) -> OpenAIPolicy:
    config = OpenAIPolicyConfig(model="m", base_urls=(URL_A,), backoff_s=0.01, **kw)
    return OpenAIPolicy(config, tokenizer=tok, transport=httpx.MockTransport(server))


def ok(payload: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json={"choices": [choice("ab", "length", ["a", "b"])]})


def request(max_tokens: int, n: int = 1) -> GenerationRequest:
    return GenerationRequest(MESSAGES, params=SamplingParams(n=n, max_tokens=max_tokens,
                                                             seed=3))


def test_models_endpoint_gives_the_context_length_and_root(tok: Any) -> None:
    server = Server(ok, max_model_len=1024, root="/srv/models/Qwen2.5-7B-Instruct")
    policy = policy_for(tok, server)
    assert (policy.max_model_len, policy.root) == (1024, "/srv/models/Qwen2.5-7B-Instruct")
    assert policy.model_files == "/srv/models/Qwen2.5-7B-Instruct"
    # the option caps the server's length (or stands in for it)
    assert policy_for(tok, server, max_model_len=512).max_model_len == 512
    assert policy_for(tok, Server(ok, max_model_len=None, root=None)).max_model_len is None
    assert policy_for(tok, Server(ok, max_model_len=None), max_model_len=99).max_model_len == 99


def test_each_row_asks_for_at_most_what_is_left(tok: Any) -> None:
    server = Server(ok, max_model_len=100)
    policy = policy_for(tok, server)
    r = request(8192, n=2)
    n_prompt = policy.count_tokens(policy.render(r))
    assert 1 < n_prompt < 100  # one token per byte
    [outs] = asyncio.run(policy.generate([r]))
    assert [p["max_tokens"] for p in server.sent] == [100 - n_prompt] * 2
    assert [c.text for c in outs] == ["ab", "ab"]
    server.sent.clear()
    asyncio.run(policy.generate([request(5)]))  # a small request is sent as it is
    assert server.sent[0]["max_tokens"] == 5


def test_a_prompt_that_leaves_no_room_ends_the_candidate_as_length(
        tok: Any, caplog: pytest.LogCaptureFixture) -> None:
    server = Server(ok, max_model_len=10)
    policy = policy_for(tok, server)
    with caplog.at_level(logging.WARNING, logger="testtime.policy.openai"):
        [outs, more] = asyncio.run(policy.generate([request(50, n=3), request(50)]))
    assert server.sent == []  # nothing asked
    for c in [*outs, *more]:
        assert (c.text, c.finish_reason, c.completion_tokens, c.token_texts) == \
            ("", "length", 0, ())
        assert c.prompt_tokens > 10
    [warning] = [r.getMessage() for r in caplog.records]  # said once, not per row
    assert "leaves no room in the server's context of 10 tokens" in warning


#: Context-length refusals as servers word them (HTTP 400), and the ``max_tokens`` of the one
#: request more that what they say allows ("ours": the limit less our prompt count).
REFUSALS: list[tuple[str, int | str | None]] = [
    # vLLM >= 0.10: the limit, not the prompt's length
    ('{"error": {"message": "max_tokens=8192 cannot be greater than max_model_len=1024. '
     'Please request fewer output tokens.", "type": "BadRequestError", "code": 400}}', "ours"),
    # vLLM (older) and OpenAI: the limit and the server's count of the prompt
    ('{"object": "error", "message": "This model\'s maximum context length is 1024 tokens. '
     'However, you requested 9000 tokens (808 in the messages, 8192 in the completion). '
     'Please reduce the length of the messages or completion.", "code": 400}', 1024 - 808),
    # the prompt alone is too long
    ('{"error": {"message": "The prompt (total length 1100) is too long to fit into the model '
     '(context length 1024)."}}', None),
    ('{"error": {"message": "Input prompt (1100 tokens) is too long and exceeds limit of '
     '1024"}}', None),
    # llama.cpp's server
    ('{"error": {"code": 400, "message": "the request exceeds the available context size, '
     'try increasing it", "type": "exceed_context_size_error"}}', None),
    ('{"error": {"message": "...", "code": "context_length_exceeded"}}', None),
]


@pytest.mark.parametrize(("body", "again"), REFUSALS)
def test_a_context_length_refusal_ends_the_candidate_as_length(tok: Any, body: str,
                                                               again: int | str | None) -> None:
    server = Server(lambda p: httpx.Response(400, text=body), max_model_len=None)
    policy = policy_for(tok, server)
    [[c]] = asyncio.run(policy.generate([request(8192)]))
    assert (c.text, c.finish_reason, c.completion_tokens) == ("", "length", 0)
    assert policy.retries == 0  # not retried as a failure; asked again only within the limit
    ours = 1024 - policy.count_tokens(server.sent[0]["prompt"])
    assert [p["max_tokens"] for p in server.sent] == \
        [8192] + ([] if again is None else [ours if again == "ours" else again])


def test_a_refusal_that_counts_the_prompt_longer_is_asked_again_with_that_room(
        tok: Any) -> None:
    def answer(payload: dict[str, Any]) -> httpx.Response:
        if payload["max_tokens"] > 20:  # the server counts 40 prompt tokens of 60
            return httpx.Response(400, json={"object": "error", "message": (
                f"This model's maximum context length is 60 tokens. However, you requested "
                f"{40 + payload['max_tokens']} tokens (40 in the messages, "
                f"{payload['max_tokens']} in the completion).")})
        return ok(payload)

    server = Server(answer, max_model_len=None)
    policy = policy_for(tok, server)
    [[c]] = asyncio.run(policy.generate([request(8192)]))
    assert [p["max_tokens"] for p in server.sent] == [8192, 20] and c.text == "ab"
    assert policy.max_model_len == 60  # learnt: the next row asks within it at once


def test_other_client_errors_still_fail(tok: Any) -> None:
    server = Server(lambda p: httpx.Response(400, text="Invalid 'top_p'"))
    with pytest.raises(OpenAIServerError, match="refused the request: HTTP 400: Invalid"):
        asyncio.run(policy_for(tok, server).generate([request(10)]))


# -- the tokenizer behind a served alias ------------------------------------------------------


def test_an_alias_loads_the_tokenizer_of_the_servers_root(tmp_path: Path) -> None:
    model_dir = tmp_path / "Qwen2.5-Math-1.5B-Instruct"
    tiny_tokenizer().save_pretrained(model_dir)
    server = Server(ok, model="smol", root=str(model_dir))
    config = OpenAIPolicyConfig(model="smol", base_urls=(URL_A,))
    policy = OpenAIPolicy(config, transport=httpx.MockTransport(server))
    assert policy.tokenizer.chat_template == tiny_tokenizer().chat_template
    assert policy.model_files == str(model_dir)
    from testtime.prompts import prompt_for_model

    assert prompt_for_model(policy.name, model_files=policy.model_files).name == "qwen"


@pytest.mark.parametrize(
    ("root", "option", "expected"),
    [
        (None, None, "the served name \\(the server reports no model root\\)"),
        ("/not/here/SmolLM2", None, "the server's model root and the served name"),
        ("/models/x", "/not/here/tok", "from the tokenizer option \\('/not/here/tok'"),
    ],
)
def test_no_tokenizer_is_one_user_error_naming_the_option(root: str | None,
                                                          option: str | None,
                                                          expected: str) -> None:
    server = Server(ok, model="smol", root=root)
    config = OpenAIPolicyConfig(model="smol", base_urls=(URL_A,), tokenizer=option)
    with pytest.raises(UserError, match=expected) as err:
        OpenAIPolicy(config, transport=httpx.MockTransport(server))
    msg = str(err.value)
    assert msg.startswith("--policy openai:smol: ") and "tokenizer=PATH_OR_HUB_ID" in msg
    assert "\n" not in msg


# -- what searches and the runner make of such candidates -------------------------------------


@pytest.mark.parametrize(("method", "semantics"), [
    ("best_of_n", "paper"), ("beam_search", "paper"), ("beam_search", "sal"), ("dvts", "paper"),
    ("dvts", "sal"), ("particle_filtering", "paper"), ("cot", "paper"), ("adaptive_sc", "paper")])
def test_every_method_records_length_candidates_not_errors(tok: Any, tmp_path: Path,
                                                           method: str, semantics: str) -> None:
    """A context so small that later steps find no room: candidates end as ``length``."""
    from testtime.config import DatasetConfig, RunConfig
    from testtime.runner import run
    from testtime.search.base import SearchConfig
    from testtime.store import read_records

    def answer(payload: dict[str, Any]) -> httpx.Response:
        if payload["max_tokens"] > 200:
            return httpx.Response(400, json={"error": {"message": (
                f"max_tokens={payload['max_tokens']} cannot be greater than "
                f"max_model_len=1024")}})
        # one token per character: a step at a time with the step stop, else steps on and on
        step = "Add them: 2 + 3 = 5.\n\n"
        text = (step if payload.get("stop") else step * 50)[: payload["max_tokens"]]
        finish = "stop" if payload.get("stop") and text == step else "length"
        return httpx.Response(200, json={"choices": [choice(text, finish, list(text))]})

    from testtime.datasets import DatasetSpec, load_problems
    from testtime.prompts import prompt_for_model

    # room for two steps after the longest first prompt: later steps find less, then none
    policy = policy_for(tok, Server(answer, max_model_len=None))
    template = prompt_for_model("openai:m", warn=False)
    problems = load_problems(DatasetSpec("demo", limit=2))
    policy.max_model_len = max(policy.count_tokens(policy.render(GenerationRequest(
        template.messages(p.problem)))) for p in problems) + 50
    search = {"n": 4, "beam_width": 2} if method in ("beam_search", "dvts") else {"n": 4}
    cfg = RunConfig(dataset=DatasetConfig(name="demo", limit=2), policy="openai:m",
                    prm="confidence", search=SearchConfig(method=method, max_depth=40,
                                                          max_path_tokens=8192,
                                                          semantics=semantics, **search))
    outcome = asyncio.run(run(cfg, tmp_path / method, policy=policy, progress=False))
    records = read_records(tmp_path / method / "results.jsonl")
    assert len(records) == 2 and all(r.error is None for r in records)
    assert all(r.candidates for r in records)
    reasons = {c.finish_reason for r in records for c in r.candidates}
    # the context ended them: as length, or (the paper's tree search, which drops truncated
    # steps and retries) as no_step; sal's beams end an empty step as "empty"
    assert reasons & {"length", "no_step", "empty"}, reasons
    summary = json.loads((tmp_path / method / "summary.json").read_text())
    assert summary["completed"] == 2 and "accuracy" in json.dumps(summary)
    assert outcome is not None


@pytest.mark.slow  # a CLI process: ~15 s of imports on a loaded two-core machine
def test_cli_names_the_tokenizer_option_in_one_line(tmp_path: Path) -> None:
    """``openai:smol@URL`` against a server that serves an alias and reports no ``root``:
    exit 2 and one line naming the option, no traceback (it was a 60-line one)."""
    import subprocess
    import sys
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Models(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"object": "list", "data": [
                {"id": "smol", "object": "model", "owned_by": "vllm",
                 "max_model_len": 1024}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Models)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        proc = subprocess.run(
            [sys.executable, "-m", "testtime.cli", "run", "--policy", f"openai:smol@{url}",
             "--prm", "confidence", "--limit", "1", "--out", str(tmp_path / "run"),
             "--no-progress"],
            capture_output=True, text=True, timeout=120, check=False)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("error: --policy openai:smol: no tokenizer") and \
        "--engine-arg tokenizer=PATH_OR_HUB_ID" in err
    print(f"\n{err}")

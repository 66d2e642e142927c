"""The vLLM backend against a fake ``vllm`` module that records and checks every call.

tests/test_vllm_real.py runs the backend on real vLLM (its CPU build); this fake is fast, runs
everywhere and pins the GPU-side settings. A stand-in module goes into ``sys.modules``: its
``AsyncEngineArgs`` and ``SamplingParams`` accept only the real keyword names, and its engine
generates scripted continuations with vLLM's output conventions (stop strings cut after the
match when ``include_stop_str_in_output``, the EOS token kept in ``token_ids``, per-token
logprob dicts, child seeds ``seed + i`` for ``n > 1``).
"""

from __future__ import annotations

import asyncio
import enum
import sys
import threading
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from testtime.policy.vllm import VLLMPolicy, VLLMPolicyConfig
from testtime.types import ChatMessage, GenerationRequest, SamplingParams

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{m.role}}\n{{m.content}}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
#: Continuations the fake engine picks from: greedy takes 0, a seeded row takes seed % 3.
SCRIPTS = (
    "Add the numbers.\n\nSo 2 + 3 = 5.\n\n\\boxed{5}",
    "We compute.\n\n\\boxed{5}",
    "Ünïcödé step ✓\n\nDone \\boxed{5}",
)
#: keyword names of the real classes (vLLM 0.11+), so a typo in the backend fails here.
ENGINE_ARGS = {"model", "tokenizer", "tensor_parallel_size", "gpu_memory_utilization", "dtype",
               "max_model_len", "max_num_seqs", "enable_prefix_caching", "seed",
               "trust_remote_code", "enforce_eager", "quantization", "disable_log_stats",
               "block_size"}
SAMPLING_ARGS = {"n", "temperature", "top_p", "top_k", "max_tokens", "stop",
                 "include_stop_str_in_output", "seed", "logprobs", "skip_special_tokens",
                 "output_kind", "stop_token_ids"}


def tiny_tokenizer() -> Any:
    """A byte-level tokenizer (one token per byte) with a ChatML template; builds in ~1 s."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                 additional_special_tokens=["<|im_start|>"])
    hf.chat_template = CHAT_TEMPLATE
    return hf


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return tiny_tokenizer()


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None
    stop_reason: int | str | None


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool


class _Checked:
    """Accepts only the real class's keyword names and records them."""

    allowed: ClassVar[set[str]] = set()

    def __init__(self, **kwargs: Any) -> None:
        unknown = set(kwargs) - self.allowed
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected arguments {sorted(unknown)}")
        self.kwargs = kwargs
        for k, v in kwargs.items():
            setattr(self, k, v)


class FakeEngineArgs(_Checked):
    allowed: ClassVar[set[str]] = ENGINE_ARGS


class FakeSamplingParams(_Checked):
    allowed: ClassVar[set[str]] = SAMPLING_ARGS


class RequestOutputKind(enum.Enum):
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


@dataclass
class FakeEngine:
    args: FakeEngineArgs
    tokenizer: Any
    loop: asyncio.AbstractEventLoop
    calls: list[tuple[dict[str, Any], FakeSamplingParams, str]] = field(default_factory=list)
    shut_down: bool = False

    async def generate(self, prompt: dict[str, Any], sp: FakeSamplingParams, request_id: str):  # type: ignore[no-untyped-def]
        # vLLM binds its output handler to the loop it was created on.
        assert asyncio.get_running_loop() is self.loop
        assert threading.current_thread().name == "vllm-engine"
        assert sp.output_kind is RequestOutputKind.FINAL_ONLY
        self.calls.append((prompt, sp, request_id))
        await asyncio.sleep(0.001)
        outs = [self._sample(i, sp) for i in range(sp.n)]
        yield RequestOutput(request_id, list(prompt["prompt_token_ids"]), outs, True)

    def _sample(self, i: int, sp: FakeSamplingParams) -> CompletionOutput:
        tok = self.tokenizer
        script = SCRIPTS[0] if sp.temperature == 0 else SCRIPTS[(sp.seed + i) % len(SCRIPTS)]
        ids = tok(script, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        out: list[int] = []
        for t in ids:
            out.append(t)
            lps = [{t2: Logprob(-0.01 * (k + 1))} for k, t2 in enumerate(out)]
            if t == tok.eos_token_id:
                text = tok.decode(out[:-1])
                return CompletionOutput(i, text, out, None, lps, "stop", None)
            text = tok.decode(out)
            for s in sp.stop:
                j = text.find(s)
                if j >= 0:
                    end = j + len(s) if sp.include_stop_str_in_output else j
                    return CompletionOutput(i, text[:end], out, None, lps, "stop", s)
            if len(out) == sp.max_tokens:
                return CompletionOutput(i, text, out, None, lps, "length", None)
        raise AssertionError("unreachable: the script ends with EOS")

    def shutdown(self) -> None:
        self.shut_down = True


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch, tokenizer: Any) -> types.SimpleNamespace:
    engines: list[FakeEngine] = []

    class AsyncLLMEngine:
        @classmethod
        def from_engine_args(cls, args: FakeEngineArgs) -> FakeEngine:
            engine = FakeEngine(args, tokenizer, asyncio.get_running_loop())
            engines.append(engine)
            return engine

    platform = types.SimpleNamespace(cpu=False)
    platform.is_cpu = lambda: platform.cpu  # type: ignore[attr-defined]
    platforms_mod = types.ModuleType("vllm.platforms")
    platforms_mod.current_platform = platform  # type: ignore[attr-defined]
    mod = types.ModuleType("vllm")
    mod.AsyncEngineArgs = FakeEngineArgs  # type: ignore[attr-defined]
    mod.AsyncLLMEngine = AsyncLLMEngine  # type: ignore[attr-defined]
    mod.SamplingParams = FakeSamplingParams  # type: ignore[attr-defined]
    mod.TokensPrompt = lambda **kw: dict(kw)  # type: ignore[attr-defined]  # a TypedDict
    sp_mod = types.ModuleType("vllm.sampling_params")
    sp_mod.RequestOutputKind = RequestOutputKind  # type: ignore[attr-defined]
    mod.sampling_params = sp_mod  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", mod)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sp_mod)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms_mod)
    return types.SimpleNamespace(engines=engines, platform=platform)


MESSAGES = (ChatMessage("system", "Be brief."), ChatMessage("user", "What is 2 + 3?"))


def make_policy(tokenizer: Any, **kw: Any) -> VLLMPolicy:
    return VLLMPolicy(VLLMPolicyConfig(model="fake/model", **kw), tokenizer=tokenizer)


def test_engine_args_and_one_shared_engine(fake_vllm: Any, tokenizer: Any) -> None:
    policy = make_policy(tokenizer, tensor_parallel_size=2, gpu_memory_utilization=0.45,
                         max_model_len=4096, seed=7)
    assert len(fake_vllm.engines) == 1
    args = fake_vllm.engines[0].args.kwargs
    assert args["model"] == "fake/model" and args["tokenizer"] == "fake/model"
    assert args["tensor_parallel_size"] == 2 and args["gpu_memory_utilization"] == 0.45
    assert args["enable_prefix_caching"] is True and args["max_model_len"] == 4096
    assert args["seed"] == 7 and args["max_num_seqs"] == 256
    assert "enforce_eager" not in args and "block_size" not in args  # GPU: vLLM's defaults
    # Many tasks in two separate event loops all reach the one engine.
    req = GenerationRequest(MESSAGES, "", SamplingParams(n=2, temperature=0.8, seed=1))

    async def many() -> list[Any]:
        return await asyncio.gather(*(policy.generate([req]) for _ in range(5)))

    assert len(asyncio.run(many())) == 5
    asyncio.run(policy.generate([req]))
    assert len(fake_vllm.engines) == 1 and len(fake_vllm.engines[0].calls) == 6
    assert len({rid for _, _, rid in fake_vllm.engines[0].calls}) == 6  # unique request ids
    asyncio.run(policy.aclose())
    assert fake_vllm.engines[0].shut_down and not policy._thread.is_alive()


def test_cpu_build_defaults(fake_vllm: Any, tokenizer: Any,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    # vLLM's CPU build: eager (its torch.compile takes minutes and never reloads from cache),
    # 32-token KV blocks (it picks 128, so short prompts never hit the prefix cache), and a
    # KV cache of cpu_kv_cache_gib instead of 90 % of RAM. Explicit settings win.
    fake_vllm.platform.cpu = True
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    make_policy(tokenizer, cpu_kv_cache_gib=1.5)
    args = fake_vllm.engines[-1].args.kwargs
    assert (args["enforce_eager"], args["block_size"]) == (True, 32)
    import os

    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "1.5"
    make_policy(tokenizer, engine_kwargs={"block_size": 64, "enforce_eager": False})
    args = fake_vllm.engines[-1].args.kwargs
    assert (args["enforce_eager"], args["block_size"]) == (False, 64)


def test_sampling_params_prompt_ids_and_stop_kept(fake_vllm: Any, tokenizer: Any) -> None:
    policy = make_policy(tokenizer)
    prefix = "Add the numbers.\n\n"
    req = GenerationRequest(MESSAGES, prefix, SamplingParams(
        n=3, temperature=0.7, top_p=0.9, max_tokens=64, stop=("\n\n",), seed=5))
    [outs] = asyncio.run(policy.generate([req]))
    prompt, sp, _ = fake_vllm.engines[0].calls[0]
    assert sp.kwargs == {"n": 3, "temperature": 0.7, "top_p": 0.9, "max_tokens": 64,
                         "stop": ["\n\n"], "include_stop_str_in_output": True, "seed": 5,
                         "logprobs": 20, "skip_special_tokens": False,
                         "output_kind": RequestOutputKind.FINAL_ONLY}
    rendered = policy.render(req)
    assert rendered.endswith("<|im_start|>assistant\n" + prefix)
    assert prompt["prompt_token_ids"] == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    # Row i used seed 5 + i: scripts 2, 0, 1; each cut right after its first blank line.
    assert [c.text for c in outs] == ["Ünïcödé step ✓\n\n", "Add the numbers.\n\n",
                                      "We compute.\n\n"]
    for c in outs:
        assert c.finish_reason == "stop"
        assert c.prompt_tokens == len(prompt["prompt_token_ids"])
        assert "".join(c.token_texts) == c.text
        assert c.completion_tokens == len(c.token_texts) == len(c.token_logprobs)
        assert c.token_logprobs[0] == pytest.approx(-0.01) and c.token_certainties == ()


def test_eos_length_and_greedy(fake_vllm: Any, tokenizer: Any) -> None:
    policy = make_policy(tokenizer)
    eos_req = GenerationRequest(MESSAGES, "", SamplingParams(temperature=0, max_tokens=500))
    short = GenerationRequest(MESSAGES, "", SamplingParams(temperature=0, max_tokens=7))
    [[eos]], [[cut]] = asyncio.run(policy.generate([eos_req])), asyncio.run(
        policy.generate([short]))
    sp = fake_vllm.engines[0].calls[0][1]
    assert sp.temperature == 0 and sp.top_p == 1.0 and sp.seed is None
    # EOS: the text has no end-of-turn token, and the EOS still counts as a generated token.
    assert eos.finish_reason == "eos" and eos.text == SCRIPTS[0]
    assert eos.completion_tokens == len(eos.token_texts) + 1
    assert len(eos.token_logprobs) == len(eos.token_texts)
    assert cut.finish_reason == "length" and cut.completion_tokens == 7
    assert cut.text == SCRIPTS[0][:7]


def test_missing_vllm_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tokenizer: Any) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ImportError, match="testtime\\[vllm\\]"):
        make_policy(tokenizer)


def test_registry_builds_vllm_with_options(fake_vllm: Any, tokenizer: Any, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from testtime.errors import UserError
    from testtime.policy import registry
    from testtime.policy.registry import build_policy

    tokenizer.save_pretrained(tmp_path)
    policy = build_policy(f"vllm:{tmp_path}", {"tensor_parallel_size": 4,
                                               "gpu_memory_utilization": 0.5,
                                               "max_batch_seqs": 64, "enforce_eager": True})
    args = fake_vllm.engines[0].args.kwargs
    assert policy.name == f"vllm:{tmp_path}"
    assert args["tensor_parallel_size"] == 4 and args["max_num_seqs"] == 64
    assert args["gpu_memory_utilization"] == 0.5 and args["enforce_eager"] is True
    asyncio.run(policy.aclose())
    # vLLM chooses its devices itself: --device is refused, never dropped
    with pytest.raises(UserError, match="--device cuda: the vllm policy backend has no such "
                                        "setting"):
        build_policy(f"vllm:{tmp_path}", {"device": "cuda"})
    # the pass-through is checked against the installed vLLM's AsyncEngineArgs
    monkeypatch.setattr(registry, "_vllm_engine_fields", lambda: {"enforce_eager"})
    with pytest.raises(UserError, match="--engine-arg bogus: not an AsyncEngineArgs field"):
        build_policy(f"vllm:{tmp_path}", {"bogus": 1})

"""Incremental PRM scoring (KV reuse of scored prefixes) against full rescoring, every family.

Paths grow a step at a time with siblings branching from one parent, as beam search grows
them; the incremental scorer must give the scores of a scorer that rescores every path from its
first token (1e-5 in float32, 1e-2 in bfloat16) while computing fewer tokens, also on the real
Qwen2.5 and Llama-3 vocabularies (tiny models of their vocabulary size).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
from pathlib import Path

import pytest
import torch
from test_prm_support import (
    BUILDERS,
    LLAMA31_CHAT_TEMPLATE,
    QWEN25_CHAT_TEMPLATE,
    REQUESTS,
    build_all,
    llama3_vocab_dir,
    qwen_vocab_dir,
)
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from testtime.scoring.base import ScoreResult
from testtime.scoring.prm import PRM_FAMILIES
from testtime.scoring.prm.incremental import _Row, plan_rows
from testtime.scoring.prm.kv_store import KVEntry, PrefixKVStore
from testtime.scoring.prm.scorer import PRMScorer
from testtime.types import ScoreRequest, Step

BRANCHES = ("Try another way.\n\n", "So the result follows.\n\n", "Hence we are done.")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return build_all(tmp_path_factory.mktemp("incremental"))


def load(ckpt: str, family: str, kv_cache_gb: float, dtype: torch.dtype = torch.float32,
         max_batch_tokens: int = 100_000) -> PRMScorer:
    return PRM_FAMILIES[family](ckpt, "cpu", dtype, max_batch_tokens, kv_cache_gb=kv_cache_gb)


def growth(requests: list[ScoreRequest]) -> list[list[ScoreRequest]]:
    """Beam-search-like calls: depth d scores every path's first d steps, and each path also
    branches into siblings that share its first d-1 steps."""
    with_steps = [r for r in requests if r.steps]
    calls = []
    for depth in range(1, max(len(r.steps) for r in with_steps) + 1):
        call = []
        for r in with_steps:
            if len(r.steps) >= depth:
                call.append(ScoreRequest(r.question, r.steps[:depth]))
                call += [ScoreRequest(r.question, (*r.steps[: depth - 1], Step(b)))
                         for b in BRANCHES]
        calls.append(call)
    return calls


def compare(full: PRMScorer, inc: PRMScorer, calls: list[list[ScoreRequest]], tol: float
            ) -> tuple[int, int]:
    """Score every call with both; returns (tokens billed, tokens computed) of ``inc``."""
    billed = computed = 0
    for call in calls:
        a = asyncio.run(full.score(call))
        b = asyncio.run(inc.score(call))
        assert a.tokens == b.tokens  # both bill whole paths
        assert a.cached == [0] * len(call)
        for req, x, y in zip(call, a.scores, b.scores, strict=True):
            assert len(y) == len(req.steps)
            assert y == pytest.approx(x, abs=tol), req
        billed += b.scored_tokens
        computed += b.scored_tokens - b.cached_tokens
    return billed, computed


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_growing_paths_score_as_full_rescoring_in_float32(ckpts: dict[str, str],
                                                          family: str) -> None:
    full, inc = load(ckpts[family], family, 0), load(ckpts[family], family, 1.0)
    assert full.engine.incremental is None and inc.engine.incremental is not None
    calls = growth(REQUESTS)
    billed, computed = compare(full, inc, calls, 1e-5)
    store = inc.engine.incremental.store
    # Every depth after the first reuses its parent; siblings share it.
    assert store.stats.hits >= sum(len(c) for c in calls[1:])
    assert computed < 0.7 * billed
    assert inc.engine.stats.tokens == computed < full.engine.stats.tokens


@pytest.mark.parametrize("family", ["skywork", "qwen_prm"])
def test_growing_paths_score_as_full_rescoring_in_bfloat16(ckpts: dict[str, str],
                                                           family: str) -> None:
    full = load(ckpts[family], family, 0, torch.bfloat16)
    inc = load(ckpts[family], family, 1.0, torch.bfloat16)
    billed, computed = compare(full, inc, growth(REQUESTS), 1e-2)
    assert computed < billed


def test_mixed_batches_duplicates_and_full_hits(ckpts: dict[str, str]) -> None:
    full, inc = load(ckpts["skywork"], "skywork", 0), load(ckpts["skywork"], "skywork", 1.0,
                                                          max_batch_tokens=40)
    long = REQUESTS[2]
    asyncio.run(inc.score([ScoreRequest(long.question, long.steps[:2])]))
    call = [ScoreRequest(long.question, long.steps[:3]),   # 2 steps cached, 1 new
            ScoreRequest(long.question, long.steps[:2]),   # all cached: no forward
            ScoreRequest(long.question, long.steps[:3]),   # duplicate of the first
            REQUESTS[0], REQUESTS[3], REQUESTS[4]]          # nothing cached; one stepless
    batches = inc.engine.stats.batches
    got = asyncio.run(inc.score(call))
    want = asyncio.run(full.score(call))
    for x, y in zip(want.scores, got.scores, strict=True):
        assert y == pytest.approx(x, abs=1e-5)
    computed = [t - c for t, c in zip(got.tokens, got.cached, strict=True)]
    assert computed[1] == 0 and computed[2] == 0 and computed[4] == 0
    assert 0 < computed[0] < got.tokens[0]
    assert computed[3] == got.tokens[3] and computed[5] == got.tokens[5]
    assert inc.engine.stats.batches - batches > 1  # 40 padded tokens force several forwards


def test_eviction_under_a_small_budget_keeps_scores_exact(ckpts: dict[str, str]) -> None:
    # ~4 KiB: the tiny Skywork (2 layers, 2 KV heads of 8) holds 256 B a token in float32
    full, inc = load(ckpts["skywork"], "skywork", 0), load(ckpts["skywork"], "skywork",
                                                          4096 / (1 << 30))
    compare(full, inc, growth(REQUESTS), 1e-5)
    store = inc.engine.incremental.store
    assert store.stats.evicted > 0 and store.used_bytes <= store.budget_bytes


def test_closing_clears_the_store(ckpts: dict[str, str]) -> None:
    inc = load(ckpts["qwen_prm"], "qwen_prm", 1.0)
    asyncio.run(inc.score(REQUESTS))
    store = inc.engine.incremental.store
    assert len(store) > 0
    asyncio.run(inc.aclose())
    assert len(store) == 0 and store.used_bytes == 0


def test_remote_code_backbones_and_zero_budget_rescore(ckpts: dict[str, str]) -> None:
    from torch import nn

    from testtime.scoring.prm.loader import kv_store_for

    cpu = torch.device("cpu")
    assert kv_store_for(nn.Linear(2, 2), cpu, None) is None  # not a transformers model
    with pytest.raises(ValueError, match="kv_cache_gb"):
        load(ckpts["skywork"], "skywork", -1)


# -- the store and the planner ----------------------------------------------------------------


def entry(tokens: int, scores: tuple[float, ...], positions: tuple[int, ...] | None = None
          ) -> KVEntry:
    """32 bytes a token; scores read at the prefix's odd positions unless told."""
    at = positions if positions is not None else tuple(range(1, 2 * len(scores), 2))
    return KVEntry(torch.zeros(1, 2, 1, tokens, 4), scores, at)


def test_store_finds_the_longest_scored_prefix_and_evicts_lru() -> None:
    store = PrefixKVStore(budget_bytes=32 * 10)
    ids, positions = (5, 6, 7, 8, 9, 10), (1, 3, 5)
    assert store.lookup(ids, positions) == (0, None)
    store.insert(ids[:2], entry(2, (0.1,)))
    store.insert(ids[:4], entry(4, (0.1, 0.2)))
    k, got = store.lookup(ids, positions)
    assert k == 2 and got is not None and got.scores == (0.1, 0.2)
    assert store.lookup((5, 6, 7, 99, 9, 10), positions)[0] == 1  # differs after step 1
    # an entry whose scores do not match the steps it spans is not used
    store.insert((1, 2), entry(2, (0.5, 0.6), (0, 1)))
    assert store.lookup((1, 2, 3), (1, 2)) == (0, None)
    assert store.lookup((1, 2, 3), (0, 1, 2))[0] == 2
    # the same tokens scored at other positions are another prefix
    assert store.lookup((5, 6, 7, 8, 9), (0, 3, 4))[0] == 0
    # LRU order now: ids[:4], ids[:2] (hit last), (1, 2); 4+2+2+5 > 10 tokens evicts ids[:4]
    store.insert((3, 3, 3, 3, 3), entry(5, (0.3,)))
    assert store.stats.evicted == 1 and store.used_bytes == 32 * 9
    assert store.lookup(ids, positions)[0] == 1
    store.insert((4,) * 20, entry(20, (0.4,)))  # larger than the budget: not stored
    assert store.stats.too_large == 1 and store.lookup((4,) * 20, (19,)) == (0, None)
    with pytest.raises(ValueError, match="3 tokens for a 2-token"):
        store.insert((1, 2), entry(3, (0.1,)))


def test_plan_rows_keeps_padded_new_and_context_tokens_within_budget() -> None:
    from testtime.scoring.prm.engine import EncodedRequest

    def row(past: int, new: int) -> _Row:
        req = EncodedRequest(tuple(range(past + new)), (past + new - 1,))
        return _Row(req, entry(past, ()) if past else None)

    rows = [row(100, 10), row(90, 20), row(0, 30), row(5, 5), row(300, 10)]
    batches = plan_rows(rows, max_new_tokens=60, max_context_tokens=400)
    assert sorted(i for b in batches for i in b) == list(range(len(rows)))
    for b in batches:
        new = max(rows[i].new for i in b)
        ctx = max(rows[i].past for i in b) + new
        assert len(b) == 1 or (len(b) * new <= 60 and len(b) * ctx <= 400)
    assert [4] in batches  # 310 context tokens leave no room for a second row
    # a sliding window bounds each batch's padded width; a wider row runs alone
    windowed = plan_rows(rows, max_new_tokens=1000, max_context_tokens=10_000, window=120)
    assert sorted(i for b in windowed for i in b) == list(range(len(rows)))
    for b in windowed:
        assert len(b) == 1 or max(rows[i].past for i in b) + max(rows[i].new for i in b) <= 120


def test_sliding_window_models_score_as_full_rescoring(tmp_path: Path) -> None:
    """Math-Shepherd is a Mistral: with a window shorter than the paths, padding the cached
    prefixes must not push keys out of the window."""
    from test_prm_support import mistral_tokenizer
    from transformers import MistralConfig, MistralForCausalLM

    from testtime.scoring.prm.incremental import sliding_window

    tok = mistral_tokenizer()
    config = MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           head_dim=8, max_position_embeddings=1024, sliding_window=24)
    torch.manual_seed(5)
    model = MistralForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0, 0.3)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    ckpt = str(tmp_path / "m")
    full, inc = load(ckpt, "math_shepherd", 0), load(ckpt, "math_shepherd", 1.0)
    assert sliding_window(inc.engine.backbone.config) == 24
    billed, computed = compare(full, inc, growth(REQUESTS), 1e-5)
    assert computed < billed
    # the window matters here: without it the scores differ
    wide = load(ckpt, "math_shepherd", 0)
    wide.engine.backbone.config.sliding_window = None
    long = REQUESTS[2]
    a = asyncio.run(full.score([long])).scores[0]
    b = asyncio.run(wide.score([long])).scores[0]
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) > 1e-4


def test_score_result_checks_cached_counts() -> None:
    with pytest.raises(ValueError, match="cached tokens"):
        ScoreResult([[0.5]], [3], [4])
    r = ScoreResult.concat([ScoreResult([[0.5]], [3], [2]), ScoreResult([[0.1]], [4])])
    assert r.cached == [2, 0] and r.cached_tokens == 2 and r.part(1, 2).cached == [0]


# -- real vocabularies ------------------------------------------------------------------------


def real_qwen(tmp: Path, step_tag: bool) -> PreTrainedTokenizerFast:
    """The real Qwen2.5 vocabulary; with ``step_tag``, id 151651 renamed ``<extra_0>`` as in
    Qwen2.5-Math-PRM's tokenizer."""
    src = qwen_vocab_dir()
    if step_tag:
        shutil.copytree(src, tmp)
        tj = json.loads((tmp / "tokenizer.json").read_text())
        for t in tj["added_tokens"]:
            if t["id"] == 151651:
                t["content"] = "<extra_0>"
        (tmp / "tokenizer.json").write_text(json.dumps(tj))
        cfg = json.loads((tmp / "tokenizer_config.json").read_text())
        cfg.get("added_tokens_decoder", {}).get("151651", {})["content"] = "<extra_0>"
        (tmp / "tokenizer_config.json").write_text(json.dumps(cfg))
        src = tmp
    tok = AutoTokenizer.from_pretrained(str(src))
    tok.chat_template = QWEN25_CHAT_TEMPLATE
    if not step_tag:
        tok.bos_token = "<|im_start|>"  # Skywork's tokenizer config
    return tok


def real_llama3() -> PreTrainedTokenizerFast:
    tok = AutoTokenizer.from_pretrained(str(llama3_vocab_dir()))
    tok.chat_template = LLAMA31_CHAT_TEMPLATE
    return tok


MATH = ScoreRequest("Let $f(x)=x^2-3x$. Find $f(f(2))$.", tuple(Step(t) for t in (
    "First, $f(2) = 4 - 6 = -2$.\n\n",
    "Then $f(-2) = 4 + 6 = 10$.\n\n",
    "  So the answer is $\\boxed{10}$ .\n\n",
    "Check:\n$(-2)^2-3(-2)=10$.")))


@pytest.mark.parametrize("family", ["skywork", "qwen_prm", "rlhflow"])
def test_real_vocabularies_append_and_score_incrementally(tmp_path: Path, family: str) -> None:
    """On the real vocabularies the input of a longer path extends the shorter one's through
    its last score position (so the store hits), and a tiny model of the real vocabulary size
    scores incrementally as it does in full."""
    tok = real_llama3() if family == "rlhflow" else real_qwen(tmp_path / "tok",
                                                             family == "qwen_prm")
    ckpt = str(BUILDERS[family](tmp_path / "m", tok=tok))
    full, inc = load(ckpt, family, 0), load(ckpt, family, 1.0)
    encs = [inc.encoder.encode(MATH.question, [s.text for s in MATH.steps[:d]])
            for d in range(1, len(MATH.steps) + 1)]
    for short, longer in itertools.pairwise(encs):
        end = short.positions[-1] + 1
        assert longer.input_ids[:end] == short.input_ids[:end]
        assert longer.positions[: len(short.positions)] == short.positions
    calls = growth([MATH])
    billed, computed = compare(full, inc, calls, 1e-5)
    assert inc.engine.incremental.store.stats.hits >= sum(len(c) for c in calls[1:])
    assert computed < 0.6 * billed


def test_a_beam_search_run_records_cached_tokens_and_the_same_scores(
        ckpts: dict[str, str], tmp_path: Path) -> None:
    """The paper's beam search through the runner: with the store, the records bill the same
    tokens, report most of them as cached, and hold the same step scores as without."""
    from testtime.config import DatasetConfig, RunConfig
    from testtime.runner import run
    from testtime.search.base import SearchConfig
    from testtime.store import RecordStore
    from testtime.testing import ScriptedPolicy

    def script(problem: str, prefix: str, i: int, params: object) -> str:
        depth = prefix.count("\n\n")
        if depth >= 3:
            return f"So the answer is \\boxed{{{i % 3}}}."
        return f"Step {depth + 1}, try {i}: we add {i} and {depth} to get {i + depth}.\n\n"

    cfg = RunConfig(dataset=DatasetConfig(name="demo", limit=2),
                    search=SearchConfig(method="beam_search", n=4, beam_width=2, max_depth=6))
    records = {}
    for gb in (0, 1.0):
        scorer = load(ckpts["skywork"], "skywork", gb)
        out = tmp_path / f"kv{gb}"
        asyncio.run(run(cfg, out, policy=ScriptedPolicy(script), scorer=scorer,
                        progress=False))
        records[gb] = {r.id: r for r in RecordStore(out / "results.jsonl")}
    assert records[0].keys() == records[1.0].keys() and len(records[0]) == 2
    for pid, full in records[0].items():
        inc = records[1.0][pid]
        assert inc.compute.scored_tokens == full.compute.scored_tokens > 0
        assert full.compute.scored_cached_tokens == 0
        assert inc.compute.scored_cached_tokens > 0.5 * inc.compute.scored_tokens
        assert [c.text for c in inc.candidates] == [c.text for c in full.candidates]
        for a, b in zip(full.candidates, inc.candidates, strict=True):
            assert [s.score for s in b.steps] == pytest.approx([s.score for s in a.steps],
                                                               abs=1e-5)


def test_padded_kv_byte_cap_splits_batches_and_keeps_scores(
        ckpts: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A large PRM's cached prefixes are bounded in bytes per forward, not only in tokens."""
    from testtime.scoring.prm import incremental

    calls = growth(REQUESTS)
    runs = {}
    for cap in (1 << 30, 256 * 40):  # the tiny Skywork holds 256 B a token: 40 tokens
        monkeypatch.setattr(incremental, "MAX_PADDED_KV_BYTES", cap)
        inc = load(ckpts["skywork"], "skywork", 1.0)
        runs[cap] = ([asyncio.run(inc.score(c)).scores for c in calls], inc.engine.stats.batches)
    (loose, few), (tight, many) = runs[1 << 30], runs[256 * 40]
    assert many > few
    for a, b in zip(loose, tight, strict=True):
        for x, y in zip(a, b, strict=True):
            assert y == pytest.approx(x, abs=1e-5)


@pytest.mark.parametrize("cached", [[None], ["x"], [5], [1, 1]])
def test_service_client_rejects_malformed_cached_counts(cached: list[object]) -> None:
    from testtime.scoring.service.client import RemoteScorer, RemoteScorerError

    client = RemoteScorer("http://127.0.0.1:9")
    request = [ScoreRequest("q", (Step("a"),))]
    ok = client._parse(request, {"scores": [[0.5]], "tokens": [3], "cached": [2]})
    assert ok.cached == [2] and ok.tokens == [3]
    assert client._parse(request, {"scores": [[0.5]], "tokens": [3]}).cached == [0]  # older
    with pytest.raises(RemoteScorerError, match="v1/score"):
        client._parse(request, {"scores": [[0.5]], "tokens": [3], "cached": cached})


def test_default_budget_leaves_room_on_a_busy_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from testtime.scoring.prm.kv_store import GIB, default_budget_bytes

    cuda = torch.device("cuda:1")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (100 * GIB, 140 * GIB))
    assert default_budget_bytes(cuda) == 8 * GIB
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (4 * GIB, 140 * GIB))
    assert default_budget_bytes(cuda) == GIB  # a quarter of what is free
    assert default_budget_bytes(torch.device("cpu")) == GIB

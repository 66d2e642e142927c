"""PRMs served by real vLLM (its CPU build) through its pooling API, read by ``vllm-pooling:``.

One tiny random PRM per family (shapes vLLM's CPU attention accepts) is served with exactly the
flags ``testtime serve vllm-prm`` prints (``scoring/service/vllm_recipes.py``; Skywork from the
checkpoint ``export_skywork`` writes), and the client's step scores must equal the in-process
scorer's on the same requests within 1e-3. The four servers start together (their start-up is
mostly waiting on imports) and stop at the end. Skips when vLLM's venv is absent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import pytest
from test_prm_support import (
    REQUESTS,
    build_math_shepherd,
    build_qwen_prm,
    build_rlhflow,
    build_skywork,
)
from vllm_support import VLLMServer, vllm_python

from testtime.scoring.prm import PRM_FAMILIES
from testtime.scoring.prm.checkpoint import load_tokenizer
from testtime.scoring.registry import build_scorer
from testtime.scoring.service.vllm_pooling import VLLMPoolingScorer, pooling_families
from testtime.scoring.service.vllm_recipes import export_skywork, serve_args

pytestmark = pytest.mark.slow

BUILDERS = {"qwen_prm": build_qwen_prm, "math_shepherd": build_math_shepherd,
            "rlhflow": build_rlhflow, "skywork": build_skywork}
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[str, str,
                                                                                   VLLMServer]]]:
    """family -> (in-process checkpoint, served checkpoint, running server)."""
    python = vllm_python()
    root = tmp_path_factory.mktemp("vllm_pooling_real")
    out: dict[str, tuple[str, str, VLLMServer]] = {}
    with contextlib.ExitStack() as stack:
        for family, build in BUILDERS.items():
            ckpt = str(build(root / family, vllm=True))
            model = str(export_skywork(ckpt, root / "skywork-vllm")) if family == "skywork" \
                else ckpt
            encoder = pooling_families()[family].make_encoder(load_tokenizer(model))
            server = VLLMServer(python, model, serve_args(family, encoder),
                                root / f"{family}.log", root / "cache")
            stack.callback(server.stop)
            out[family] = (ckpt, model, server)
        started = time.monotonic()
        for family, (_, _, server) in out.items():
            server.wait_ready()
            print(f"\n{family} server ready after {time.monotonic() - started:.0f} s")
        yield out


@pytest.mark.timeout(900)
@pytest.mark.parametrize("family", list(BUILDERS))
def test_served_scores_match_in_process(
    served: dict[str, tuple[str, str, VLLMServer]], family: str
) -> None:
    ckpt, model, server = served[family]
    want = PRM_FAMILIES[family](ckpt, "cpu").score_sync(REQUESTS)
    scorer = build_scorer(f"vllm-pooling:{family}:{model}@{server.url}")
    assert isinstance(scorer, VLLMPoolingScorer)
    got = asyncio.run(scorer.score(REQUESTS))
    assert [len(g) for g in got.scores] == [len(r.steps) for r in REQUESTS]
    worst = max((abs(a - b) for g, w in zip(got.scores, want.scores, strict=True)
                 for a, b in zip(g, w, strict=True)), default=0.0)
    print(f"\n{family}: max |served - in-process| = {worst:.2e}")
    assert worst <= TOLERANCE, (got.scores, want.scores)
    # the tokens vLLM read are the ids the in-process scorer reads
    assert got.tokens == want.tokens
    assert scorer.posts == 1

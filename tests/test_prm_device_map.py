"""A PRM split by an accelerate device map scores as the same PRM on one device.

This machine has one device (the CPU), so the split puts each tiny PRM's later layers on
``"disk"``: accelerate then loads them through its offload hooks for every forward, the code
path a layer on ``"cpu"`` beside a GPU takes. Checked for every family: the map is applied
per layer, scores equal the unsplit model's within 1e-5 (with and without the KV store), and
KV entries split into per-device layer runs give the scores of full rescoring.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from test_prm_support import (
    BUILDERS,
    REQUESTS,
    build_all,
)

from testtime.placement.loading import (
    accelerate_max_memory,
    check_device_map,
    execution_device,
    is_dispatched,
    load_causal_lm,
    pretrained_kwargs,
)
from testtime.scoring.prm import PRM_FAMILIES
from testtime.scoring.prm import incremental as incremental_module
from testtime.scoring.prm.checkpoint import DevicePlacement, device_placement
from testtime.scoring.prm.scorer import PRMScorer
from testtime.types import ScoreRequest

#: Families whose backbone is the decoder of a causal LM (module names under ``model.``).
CAUSAL_LM = ("rlhflow", "math_shepherd")
GIB = 1 << 30


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return build_all(tmp_path_factory.mktemp("device_map"))


def split_map(family: str) -> dict[str, str]:
    """Embedding and layer 0 in RAM, layer 1 and the final norm (and LM head) on disk."""
    p = "model." if family in CAUSAL_LM else ""
    out = {f"{p}embed_tokens": "cpu", f"{p}rotary_emb": "cpu", f"{p}layers.0": "cpu",
           f"{p}layers.1": "disk", f"{p}norm": "disk"}
    if family in CAUSAL_LM:
        out["lm_head"] = "disk"
    return out


def load(ckpt: str, family: str, kv_cache_gb: float, placement: DevicePlacement | None = None
         ) -> PRMScorer:
    with device_placement(placement):
        return PRM_FAMILIES[family](ckpt, "cpu", torch.float32, 100_000,
                                    kv_cache_gb=kv_cache_gb)


def scores(scorer: PRMScorer, requests: list[ScoreRequest]) -> list[list[float]]:
    return asyncio.run(scorer.score(requests)).scores


def grown(requests: list[ScoreRequest]) -> list[list[ScoreRequest]]:
    """Each path scored one step longer per call, as a search grows it."""
    depth = max(len(r.steps) for r in requests)
    return [[ScoreRequest(r.question, r.steps[:d]) for r in requests if len(r.steps) >= d]
            for d in range(1, depth + 1)]


@pytest.mark.parametrize("family", list(BUILDERS))
def test_split_prm_scores_equal_the_unsplit_model(family: str, ckpts: dict[str, str],
                                                  tmp_path: Path) -> None:
    placement = DevicePlacement(split_map(family), offload_folder=str(tmp_path / "offload"))
    whole = load(ckpts[family], family, 0)
    split = load(ckpts[family], family, 0, placement)
    backbone = split.engine.backbone
    # the map was applied layer by layer: layer 0 resident, layer 1 offloaded through a hook
    assert is_dispatched(backbone) and not is_dispatched(whole.engine.backbone)
    assert not backbone.layers[0].self_attn.q_proj._hf_hook.offload
    assert backbone.layers[0].self_attn.q_proj.weight.device.type == "cpu"
    assert backbone.layers[1].self_attn.q_proj._hf_hook.offload
    assert backbone.layers[1].self_attn.q_proj.weight.device.type == "meta"
    assert backbone.norm._hf_hook.offload
    assert execution_device(backbone.layers[1]) == torch.device("cpu")
    assert split.engine.device == torch.device("cpu")
    requests = [r for r in REQUESTS if r.steps]
    expected = scores(whole, requests)
    got = scores(split, requests)
    assert [len(s) for s in got] == [len(s) for s in expected]
    for a, b in zip(expected, got, strict=True):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5), (a, b)
    # the incremental path (KV store) through the offload hooks gives the same scores
    cached = load(ckpts[family], family, 0.1, placement)
    for call in grown(requests):
        a, b = scores(whole, call), scores(cached, call)
        for x, y in zip(a, b, strict=True):
            assert torch.allclose(torch.tensor(x), torch.tensor(y), atol=1e-5)
    assert cached.engine.incremental is not None
    assert cached.engine.incremental.store.stats.hits > 0


@pytest.mark.parametrize("family", ["skywork", "rlhflow"])
def test_kv_entries_split_into_device_runs_score_as_full_rescoring(
        family: str, ckpts: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries kept as one tensor per run of layers on one device (as a model split over GPUs
    stores them) are rebuilt per run for the next forward: scores stay exact."""
    def two_runs(layers: list) -> list[list]:
        return [list(layers[:1]), list(layers[1:])]

    monkeypatch.setattr(incremental_module, "device_runs", two_runs)
    whole = load(ckpts[family], family, 0)
    inc = load(ckpts[family], family, 0.1)
    requests = [r for r in REQUESTS if r.steps]
    for call in grown(requests):
        a, b = scores(whole, call), scores(inc, call)
        for x, y in zip(a, b, strict=True):
            assert torch.allclose(torch.tensor(x), torch.tensor(y), atol=1e-5)
    assert inc.engine.incremental is not None
    store = inc.engine.incremental.store
    assert store.stats.hits > 0
    entry = next(iter(store._entries.values()))
    assert len(entry.segments) == 2 and entry.segments[0].shape[0] == 1
    assert entry.nbytes == sum(s.numel() * s.element_size() for s in entry.segments)


def test_device_runs_group_consecutive_layers_by_device() -> None:
    k = torch.zeros(1)
    meta = torch.zeros(1, device="meta")
    runs = incremental_module.device_runs([(k, k), (k, k), (meta, meta), (k, k)])
    assert [len(r) for r in runs] == [2, 1, 1]


def test_max_memory_and_device_map_options() -> None:
    assert accelerate_max_memory({"cuda:0": 30, "cpu": 60, 1: "2GiB", "2": 1.5}) == \
        {0: 30 * GIB, "cpu": 60 * GIB, 1: 2 * GIB, 2: int(1.5 * GIB)}
    assert accelerate_max_memory(None) is None
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        accelerate_max_memory({"gpu0": 3})
    with pytest.raises(ValueError, match="must be GiB > 0"):
        accelerate_max_memory({"cpu": -1})
    with pytest.raises(ValueError, match="device_map 'everywhere'"):
        check_device_map("everywhere")
    with pytest.raises(ValueError, match="max_memory needs a device_map"):
        pretrained_kwargs(torch.device("cpu"), None, {"cpu": 1})
    assert pretrained_kwargs(torch.device("cpu")) == {"device_map": None}
    assert pretrained_kwargs(torch.device("cpu"), "auto", {"cuda:1": 2}, "/tmp/o") == \
        {"device_map": "auto", "max_memory": {1: 2 * GIB}, "offload_folder": "/tmp/o"}


def test_load_family_refuses_max_memory_without_a_device_map(ckpts: dict[str, str]) -> None:
    from testtime.scoring.prm.loader import load_family, two_token_parts
    from testtime.scoring.prm.rlhflow import RLHFlowEncoder

    with pytest.raises(ValueError, match="max_memory needs a device_map"):
        load_family("rlhflow", ckpts["rlhflow"], make_encoder=RLHFlowEncoder,
                    load_parts=two_token_parts, max_memory={"cpu": 1})


def test_load_placed_takes_the_engine_options(ckpts: dict[str, str], tmp_path: Path) -> None:
    """What the scorer registry calls with ``prm_options``: a device map reaches the family's
    backbone without the family taking an argument for it."""
    from testtime.scoring.prm.loader import load_placed

    factory = PRM_FAMILIES["qwen_prm"]
    with pytest.raises(ValueError, match="max_memory needs a device_map"):
        load_placed(factory, ckpts["qwen_prm"], max_memory={"cpu": 1})
    split = load_placed(factory, ckpts["qwen_prm"], device="cpu", dtype=torch.float32,
                        device_map=split_map("qwen_prm"), kv_cache_gb=0)
    assert split.engine.backbone.hf_device_map == split_map("qwen_prm")
    whole = load(ckpts["qwen_prm"], "qwen_prm", 0)
    requests = [r for r in REQUESTS if r.steps]
    for a, b in zip(scores(whole, requests), scores(split, requests), strict=True):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5)


def test_causal_lm_loads_split_for_the_hf_policy(ckpts: dict[str, str], tmp_path: Path
                                                 ) -> None:
    path = ckpts["rlhflow"]
    whole = load_causal_lm(path, dtype=torch.float32)
    split = load_causal_lm(path, dtype=torch.float32, device_map=split_map("rlhflow"),
                           offload_folder=str(tmp_path / "offload"))
    assert split.hf_device_map == split_map("rlhflow")
    assert is_dispatched(split) and split.model.layers[1].mlp.up_proj._hf_hook.offload
    ids = torch.tensor([[1, 5, 9, 12, 3]])
    with torch.inference_mode():
        a, b = whole(input_ids=ids).logits, split(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-5)

"""How much GPU memory each engine needs, per GPU, in GiB (estimates; constants say why).

* vLLM (policy): ``weights / tp + KV of VLLM_MIN_KV_SEQUENCES sequences of max_model_len /
  tp + VLLM_OVERHEAD_GIB + CUDA_CONTEXT_GIB``; vLLM refuses to start when one
  ``max_model_len`` sequence does not fit its KV cache, and everything above the minimum
  becomes more KV cache (more sequences in flight).
* transformers (``hf:`` policy, PRMs): weights spread over the device map's GPUs, plus the
  activations of one forward batch on each, plus (PRM) the KV store and the incremental
  path's padded cache copy, plus the CUDA context.
"""

from __future__ import annotations

import math

from testtime.placement.shapes import GIB, ModelShape

#: CUDA context, cuBLAS workspaces and allocator slack of one process on one GPU. An idle
#: torch process holds ~0.5 GiB on an H100 with CUDA 12 (``nvidia-smi``); the rest is slack.
CUDA_CONTEXT_GIB = 0.75
#: vLLM's memory besides weights and KV cache: the activation peak of its profiling run (one
#: batch of ``max_num_batched_tokens`` = 8192 tokens: ~1-2 GiB for 7B-72B shapes), the
#: sampler's logits buffers and CUDA graphs (~0.5-1 GiB). An estimate with headroom.
VLLM_OVERHEAD_GIB = 3.0
#: vLLM refuses to start unless one ``max_model_len`` sequence fits its KV cache.
VLLM_MIN_KV_SEQUENCES = 1
#: The paper's ``gpu_memory_utilization`` (compute-optimal-tts ``serve_gpu*.sh``): 0.95 for a
#: policy alone on its GPUs, 0.88 where a PRM shares one. The planner never exceeds them.
PAPER_UTIL_ALONE = 0.95
PAPER_UTIL_SHARED = 0.88
#: vLLM utilisation is planned in steps of 0.01 (rounded down).
UTIL_STEP = 0.01
#: The paper's ``max_model_len`` (its vLLM workers): 8192, and 32768 for DeepSeek-R1 distills.
DEFAULT_MAX_MODEL_LEN = 8192
LONG_MAX_MODEL_LEN = 32768
LONG_CONTEXT_MARKERS = ("deepseek-r1",)
#: transformers generation (``hf:`` policy) beyond weights and its KV cache: the logits of a
#: batch (``rows x vocab`` in float32) and the decoder's activations. An estimate.
HF_POLICY_OVERHEAD_GIB = 2.0
#: Tokens of one PRM forward batch (``engine.DEFAULT_MAX_BATCH_TOKENS``).
PRM_BATCH_TOKENS = 8192
#: Activation bytes per batch token and dtype byte: a few copies of the hidden state (residual,
#: normed input, attention output: 4 x hidden) and the gated MLP's gate/up/product (3 x
#: intermediate) live at once in one layer's forward.
HIDDEN_COPIES = 4
MLP_COPIES = 3
#: The incremental path copies the stored prefixes of a batch into one padded cache of at most
#: ``incremental.MAX_PADDED_KV_BYTES`` (1 GiB), held about three times over during a forward.
PRM_PADDED_KV_GIB = 3.0
#: The PRM's KV store: the loader's GPU default (``kv_store.DEFAULT_KV_CACHE_GB_CUDA``) when
#: memory allows, at least this much where it shares a GPU (0 turns reuse off).
PRM_KV_STORE_DEFAULT_GIB = 8.0
PRM_KV_STORE_MIN_GIB = 0.5


def gib(nbytes: float) -> float:
    return nbytes / GIB


def default_max_model_len(model: str, shape: ModelShape) -> int:
    """The paper's context for ``model``, within what the model was trained on."""
    wanted = LONG_MAX_MODEL_LEN if any(m in model.lower() for m in LONG_CONTEXT_MARKERS) \
        else DEFAULT_MAX_MODEL_LEN
    trained = shape.max_position_embeddings
    return min(wanted, trained) if trained else wanted


def kv_gib(shape: ModelShape, tokens: int, shards: int = 1) -> float:
    """KV cache of ``tokens`` on each of ``shards`` tensor-parallel GPUs (KV heads are split
    across them, and replicated where there are fewer heads than GPUs)."""
    heads_per_gpu = math.ceil(shape.kv_heads / shards)
    return gib(shape.kv_bytes_per_token * tokens * heads_per_gpu / shape.kv_heads)


def vllm_need_gib(shape: ModelShape, tp: int, max_model_len: int) -> float:
    """GiB vLLM needs on each of its ``tp`` GPUs (its share must be at least this)."""
    return (gib(shape.weights_bytes) / tp
            + kv_gib(shape, VLLM_MIN_KV_SEQUENCES * max_model_len, tp)
            + VLLM_OVERHEAD_GIB + CUDA_CONTEXT_GIB)


def activation_gib(shape: ModelShape, tokens: int) -> float:
    """One layer's activations for a batch of ``tokens`` (see the copy constants)."""
    per_token = HIDDEN_COPIES * shape.hidden + MLP_COPIES * shape.intermediate
    return gib(tokens * per_token * shape.dtype_bytes)


def hf_policy_need_gib(shape: ModelShape, gpus: int, max_model_len: int) -> float:
    """GiB a transformers policy split over ``gpus`` GPUs needs on each."""
    return (gib(shape.weights_bytes) / gpus + kv_gib(shape, max_model_len) / gpus
            + activation_gib(shape, max_model_len) + HF_POLICY_OVERHEAD_GIB + CUDA_CONTEXT_GIB)


def prm_fixed_gib(shape: ModelShape, gpus: int, kv_store: bool,
                  batch_tokens: int = PRM_BATCH_TOKENS) -> float:
    """GiB a PRM split over ``gpus`` GPUs needs on each without its KV store: weights,
    activations of a batch of ``batch_tokens``, the padded cache copy (with a store) and the
    CUDA context."""
    padded = PRM_PADDED_KV_GIB / gpus if kv_store else 0.0
    return (gib(shape.weights_bytes) / gpus + activation_gib(shape, batch_tokens)
            + padded + CUDA_CONTEXT_GIB)


def floor_util(fraction: float) -> float:
    """``fraction`` rounded down to ``UTIL_STEP`` (tolerating float error)."""
    return math.floor(fraction / UTIL_STEP + 1e-9) * UTIL_STEP

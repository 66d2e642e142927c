"""Helpers of the llama.cpp backend that need no llama.cpp: the HF tokenizer and an F32 copy
of a GGUF checkpoint (cached), end-of-turn ids, and token sampling / statistics from raw logits
in numpy (the same definitions as the HF backend's logits processor)."""

from __future__ import annotations

import hashlib
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from testtime.confidence import TOP_K
from testtime.policy.model_files import ModelSource, cache_root, materialize, resolve
from testtime.types import SamplingParams

log = logging.getLogger(__name__)

#: End-of-turn tokens of common chat formats; generation stops on them as on EOS (as in HF).
CHAT_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "<|eom_id|>")
#: Candidates ranked before top-p falls back to a full sort of the vocabulary.
_TOP_P_CANDIDATES = 1024


def gguf_tokenizer_source(source: ModelSource) -> str:
    """A directory holding the HF tokenizer of a GGUF checkpoint, extracted once and cached.

    Reuses the full safetensors conversion when the HF backend already made one; otherwise
    converts only the tokenizer (parsing the GGUF vocabulary takes tens of seconds).
    """
    assert source.gguf_file is not None
    from testtime.policy.model_files import gguf_cache_dir

    full = gguf_cache_dir(source)
    if (full / "testtime-converted.ok").exists():
        return materialize(source).path
    out = cache_root() / "gguf-tokenizer" / full.name
    if (out / "tokenizer_config.json").exists():
        return str(out)
    from transformers import AutoTokenizer

    log.info("extracting the tokenizer of %s into %s (once)", source.gguf_file, out)
    tok = AutoTokenizer.from_pretrained(source.path, gguf_file=source.gguf_file)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tok.save_pretrained(tmp)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists():
        tmp.replace(out)
    return str(out)


def dequantized_gguf(path: Path) -> Path:
    """An F32 copy of a GGUF file (weights de-quantised as transformers does), made once.

    llama.cpp multiplies quantised weights with 8-bit-quantised activations, so its logits
    drift from the HF backend's (which runs the de-quantised fp32 weights) by enough to change
    greedy choices within a few dozen tokens. On F32 weights with an F32 KV cache the two
    backends compute the same function up to float rounding.
    """
    import gguf

    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    out = cache_root() / "gguf-f32" / f"{path.stem}-{key[:12]}.F32.gguf"
    if out.exists():
        return out
    log.info("writing an F32 copy of %s to %s (once)", path.name, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    reader = gguf.GGUFReader(path)
    arch = reader.fields["general.architecture"].contents()
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    writer = gguf.GGUFWriter(tmp, arch=arch, endianess=reader.endianess)
    for f in reader.fields.values():
        if f.name == "general.architecture" or f.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        value = f.contents()
        if f.name == "general.file_type":
            value = int(gguf.LlamaFileType.ALL_F32)
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(f.name, value, vtype, sub_type=sub)
    for t in reader.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        writer.add_tensor(t.name, data.reshape([int(d) for d in reversed(t.shape)]))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)
    return out


def load_tokenizer(spec: str, trust_remote_code: bool = False) -> Any:
    """The HF tokenizer for a model spec: Hub id, directory, ``.gguf`` file or ``default``."""
    from transformers import AutoTokenizer

    source = resolve(spec)
    path = gguf_tokenizer_source(source) if source.gguf_file else source.path
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def chat_end_ids(tokenizer: Any) -> set[int]:
    """EOS plus the end-of-turn tokens of common chat formats present in the vocabulary."""
    ids = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    for tok in CHAT_END_TOKENS:
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid >= 0 and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return ids


def token_stats(logits: np.ndarray, token: int, log_v: float) -> tuple[float, float, float]:
    """(log p(token), self-certainty, DeepConf confidence) under the unwarped next-token
    distribution (confidence: minus the mean log-prob of the top-20 tokens)."""
    x = logits.astype(np.float64)
    m = float(x.max())
    lse = m + math.log(float(np.exp(x - m).sum()))
    k = min(TOP_K, x.size)
    top = np.partition(x, x.size - k)[x.size - k:]
    return float(x[token]) - lse, (lse - float(x.mean()) - log_v) / log_v, lse - float(top.mean())


def sample_token(logits: np.ndarray, params: SamplingParams,
                 rng: np.random.Generator | None) -> int:
    """Greedy arg-max at temperature 0, else temperature + nucleus (top-p) sampling."""
    if params.temperature == 0 or rng is None:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / params.temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    if params.top_p < 1.0:
        k = min(_TOP_P_CANDIDATES, p.size - 1)
        cand = np.argpartition(-p, k)[:k] if k > 0 else np.arange(p.size)
        if p[cand].sum() < params.top_p:
            cand = np.arange(p.size)
        order = cand[np.argsort(-p[cand], kind="stable")]
        mass = np.cumsum(p[order])
        keep = max(1, int(np.searchsorted(mass - p[order], params.top_p, side="left")))
        order = order[:keep]
        cdf = np.cumsum(p[order])
        return int(order[min(int(np.searchsorted(cdf, rng.random() * cdf[-1], "right")),
                             keep - 1)])
    cdf = np.cumsum(p)
    return int(min(int(np.searchsorted(cdf, rng.random() * cdf[-1], "right")), p.size - 1))

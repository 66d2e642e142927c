"""Loading helpers shared by the PRM families: device/dtype, tokenizer, backbone, head tensors.

Every family loads its transformer backbone with ``from_pretrained`` (local directory or Hub
id) and reads any extra head weights (Skywork's value head, Qwen's classifier) straight from
the checkpoint's own tensor files by parameter name, so no remote code is executed. A
backbone loads onto one device, or split over several by an accelerate device map
(:class:`DevicePlacement`, set by :func:`device_placement`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from testtime.placement.loading import (
    DeviceMap,
    MaxMemory,
    materialized_weight,
    pretrained_kwargs,
)

log = logging.getLogger(__name__)

#: Single-file and sharded weight layouts, in order of preference (safetensors first).
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

DtypeLike = torch.dtype | str | None
DeviceLike = torch.device | str | None

_DTYPE_NAMES = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
}


def resolve_device(device: DeviceLike) -> torch.device:
    """``None``/``"auto"`` means CUDA when available, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: DtypeLike, device: torch.device) -> torch.dtype:
    """``None``/``"auto"`` means bfloat16 on CUDA and float32 elsewhere (CPU bf16 is slow)."""
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPE_NAMES[dtype.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPE_NAMES)}") from None


def load_tokenizer(path_or_id: str, trust_remote_code: bool = False) -> Any:
    """The checkpoint's own tokenizer (with its chat template)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path_or_id, trust_remote_code=trust_remote_code)


@dataclass(frozen=True)
class DevicePlacement:
    """An accelerate device map for a PRM backbone (``testtime.placement.loading``)."""

    device_map: DeviceMap
    """``"auto"`` (or another accelerate preset) or ``{module name: device}``."""
    max_memory: MaxMemory | None = None
    """GiB per device, ``{"cuda:0": 30, "cpu": 60}``."""
    offload_folder: str | None = None
    """Where layers mapped to ``"disk"`` are kept."""


_PLACEMENT: ContextVar[DevicePlacement | None] = ContextVar("prm_placement", default=None)


@contextmanager
def device_placement(placement: DevicePlacement | None) -> Iterator[None]:
    """Load the backbones of this block by ``placement`` (None: onto one device).

    The family modules' part loaders call :func:`load_pretrained` with one device; the loader
    (and a caller that builds a family's scorer, e.g. the scorer registry) sets the device map
    around them here, so the families need no argument of their own for it.
    """
    token = _PLACEMENT.set(placement)
    try:
        yield
    finally:
        _PLACEMENT.reset(token)


def active_placement() -> DevicePlacement | None:
    """The placement :func:`device_placement` set, if any."""
    return _PLACEMENT.get()


def load_pretrained(
    model_cls: Any,
    path_or_id: str,
    *,
    device: torch.device,
    dtype: torch.dtype,
    trust_remote_code: bool = False,
) -> Any:
    """``model_cls.from_pretrained`` (a ``PreTrainedModel``) in eval mode on ``device``, or
    split by the device map of the enclosing :func:`device_placement`.

    Checkpoint tensors the class does not use (``lm_head``, ``v_head.*``, ``score.*``) are
    expected and ignored; a *missing* backbone weight would silently leave random values, so
    it raises instead. On an accelerator the weights load straight onto it; with a device map
    each layer's weights load straight onto its device (no copy of the whole model in host
    RAM).
    """
    placement = active_placement()
    kwargs = pretrained_kwargs(device) if placement is None else pretrained_kwargs(
        device, placement.device_map, placement.max_memory, placement.offload_folder)
    model, info = model_cls.from_pretrained(
        path_or_id,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        output_loading_info=True,
        **kwargs,
    )
    missing = [k for k in info.get("missing_keys", ()) if "rotary_emb" not in k]
    if missing:
        raise ValueError(
            f"{path_or_id}: checkpoint lacks {model_cls.__name__} weights {sorted(missing)[:8]}"
        )
    return (model if placement is not None else model.to(device)).eval()


def load_causal_lm_parts(
    path_or_id: str, *, device: torch.device, dtype: torch.dtype, trust_remote_code: bool = False
) -> tuple[nn.Module, torch.Tensor]:
    """The decoder stack of a causal LM checkpoint and its output-embedding matrix.

    The PRM only needs two rows of the LM head; the caller copies those and drops the rest.
    """
    from transformers import AutoModelForCausalLM

    model = load_pretrained(
        AutoModelForCausalLM,
        path_or_id,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )
    output_embeddings = model.get_output_embeddings()
    if output_embeddings is None or getattr(output_embeddings, "bias", None) is not None:
        raise ValueError(f"{path_or_id}: expected a bias-free LM head")
    weight = materialized_weight(output_embeddings)
    return model.get_decoder(), weight


def pad_id_of(tokenizer: Any) -> int:
    """A valid id to pad with (its value is irrelevant: padded positions are masked and last)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def _local_or_hub_file(path_or_id: str, filename: str, hub_files: set[str] | None) -> Path | None:
    local = Path(path_or_id)
    if local.is_dir():
        candidate = local / filename
        return candidate if candidate.is_file() else None
    if hub_files is None or filename not in hub_files:
        return None
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(path_or_id, filename))


def _weight_files_for(path_or_id: str, names: Sequence[str]) -> dict[Path, list[str]]:
    """Which tensor file holds each requested name (sharded or single-file checkpoints)."""
    hub_files: set[str] | None = None
    if not Path(path_or_id).is_dir():
        from huggingface_hub import list_repo_files

        hub_files = set(list_repo_files(path_or_id))
    for index_name in _WEIGHT_INDEXES:
        index_path = _local_or_hub_file(path_or_id, index_name, hub_files)
        if index_path is None:
            continue
        weight_map: dict[str, str] = json.loads(index_path.read_text())["weight_map"]
        missing = [n for n in names if n not in weight_map]
        if missing:
            heads = sorted(k for k in weight_map if not k.startswith("model."))
            raise KeyError(f"{index_path}: no tensors {missing}; non-backbone tensors: {heads}")
        by_file: dict[Path, list[str]] = {}
        for name in names:
            shard = _local_or_hub_file(path_or_id, weight_map[name], hub_files)
            if shard is None:
                raise FileNotFoundError(f"{index_path}: shard {weight_map[name]} is missing")
            by_file.setdefault(shard, []).append(name)
        return by_file
    for file_name in _WEIGHT_FILES:
        path = _local_or_hub_file(path_or_id, file_name, hub_files)
        if path is not None:
            return {path: list(names)}
    raise FileNotFoundError(f"{path_or_id}: no {' / '.join(_WEIGHT_INDEXES + _WEIGHT_FILES)}")


def read_tensors(path_or_id: str, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Read the named tensors from a checkpoint's safetensors or PyTorch weight files."""
    out: dict[str, torch.Tensor] = {}
    for path, wanted in _weight_files_for(path_or_id, names).items():
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                available = set(f.keys())
                for name in wanted:
                    if name not in available:
                        heads = sorted(k for k in available if not k.startswith("model."))
                        raise KeyError(f"{path}: no tensor {name!r}; non-backbone tensors: {heads}")
                    out[name] = f.get_tensor(name)
        else:
            # mmap keeps multi-GB .bin checkpoints (Skywork ships pytorch_model.bin) off the heap.
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            for name in wanted:
                if name not in state:
                    heads = sorted(k for k in state if not k.startswith("model."))
                    raise KeyError(f"{path}: no tensor {name!r}; non-backbone tensors: {heads}")
                out[name] = state[name].clone()
            del state
    return out


def single_token_id(tokenizer: Any, text: str, *, what: str) -> int:
    """The id of ``text`` when it encodes (without special tokens) to exactly one token."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{what} {text!r} must be a single token, got ids {ids}")
    return int(ids[0])


def special_token_id(tokenizer: Any, token: str) -> int:
    """The id of a special/added token, which must exist in the vocabulary."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or (token_id == tokenizer.unk_token_id and token != tokenizer.unk_token):
        raise ValueError(f"tokenizer has no token {token!r}")
    return int(token_id)


def check_real_id(tokenizer: Any, what: str, got: int, real: tuple[int, str]) -> None:
    """If the tokenizer is the family's real vocabulary, a derived id must be the known one.

    ``real`` is ``(id, token string)`` in the real vocabulary; the tokenizer counts as real when
    it holds that string at that id. A mismatch then means the lookup (e.g. how a word-initial
    space is encoded) changed, and scores would be read from the wrong logits or positions.
    Small test vocabularies do not hold the string at that id and are not checked.
    """
    real_id, real_token = real
    if real_id >= len(tokenizer) or tokenizer.convert_ids_to_tokens(real_id) != real_token:
        return
    if got != real_id:
        raise ValueError(f"{what}: expected token id {real_id} ({real_token!r}), got {got}")

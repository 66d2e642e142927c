"""A model's shape and weight bytes from its ``config.json`` alone (no weights are read).

``read_config`` takes a local directory (or its ``config.json``), the embedded ``default``
model, or a Hugging Face Hub id, for which only ``config.json`` is downloaded
(``hf_hub_download``); offline (``HF_HUB_OFFLINE=1``) a Hub id must be in the local cache.
Every failure is a :class:`PlacementError` naming the model. ``shape_of`` turns the fields
into a :class:`ModelShape`; parameters are counted by :func:`testtime.flops.count_parameters`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testtime.errors import UserError, looks_like_path

GIB = 1 << 30
"""Every "GB" of the placement plan is a GiB (2**30 bytes), as torch and vLLM report memory."""

#: Bytes per parameter of the dtype names a ``config.json`` carries (``torch_dtype``, or
#: ``dtype`` as transformers 5 writes it); a missing dtype counts as bfloat16, the dtype the
#: GPU engines load these models in.
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "half": 2, "bf16": 2, "fp16": 2,
               "float32": 4, "float": 4, "fp32": 4, "auto": 2}
DEFAULT_DTYPE = "bfloat16"


class PlacementError(UserError):
    """A model whose config cannot be read, or a layout that cannot fit (one line)."""


@dataclass(frozen=True)
class ModelShape:
    """What the planner needs of one model (sizes in bytes)."""

    name: str
    """The model as the user named it (path or Hub id)."""
    model_type: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    dtype_bytes: int
    max_position_embeddings: int | None
    sliding_window: int | None
    """The attention window when the model slides one (Mistral), else None."""
    parameters: int
    """Every parameter (embeddings and LM head included, tied ones once)."""

    @property
    def weights_bytes(self) -> int:
        return self.parameters * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """Keys and values of one token over all layers."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    def with_dtype(self, dtype: str | None) -> ModelShape:
        """The same shape loaded in ``dtype`` (None or ``auto``: unchanged)."""
        if dtype is None or dtype == "auto":
            return self
        return _replace(self, dtype_bytes=dtype_bytes(dtype, self.name))


def _replace(shape: ModelShape, **changes: Any) -> ModelShape:
    import dataclasses

    return dataclasses.replace(shape, **changes)


def dtype_bytes(dtype: str, model: str) -> int:
    try:
        return DTYPE_BYTES[str(dtype).lower().removeprefix("torch.")]
    except KeyError:
        raise PlacementError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPE_BYTES)}",
                             model) from None


def _default_config() -> dict[str, Any]:
    """The embedded SmolLM2-135M (``default``), whose files are not a directory of its own."""
    from testtime.model_sizes import KNOWN_CONFIGS

    return {**KNOWN_CONFIGS["SmolLM2-135M"], "max_position_embeddings": 8192,
            "torch_dtype": DEFAULT_DTYPE}


def read_config(model: str) -> dict[str, Any]:
    """The ``config.json`` of a local directory/file, ``default``, or a Hub id (config only)."""
    if model == "default":
        return _default_config()
    path = Path(model).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        return _load_json(path, model)
    if path.exists() or looks_like_path(model):
        raise PlacementError(f"no config.json at {path}", model)
    return _load_json(_hub_config(model), model)


def _load_json(path: Path, model: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PlacementError(f"{path}: cannot read config: {exc}", model) from None
    if not isinstance(data, dict):
        raise PlacementError(f"{path}: config.json is not a JSON object", model)
    return data


def _hub_config(model: str) -> Path:
    """Download (or find in the cache) ``config.json`` of Hub repo ``model``, nothing else."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from testtime.errors import _offline

    try:
        validate_repo_id(model)
    except HFValidationError:
        raise PlacementError("neither a local path nor a Hub id (ORG/NAME)", model) from None
    cached = try_to_load_from_cache(model, "config.json")
    if isinstance(cached, str):
        return Path(cached)
    if _offline():
        raise PlacementError("config.json is not in the local Hugging Face cache and the Hub "
                             "is offline (HF_HUB_OFFLINE=1); download it or give a local "
                             "directory", model)
    try:
        return Path(hf_hub_download(model, "config.json"))
    except Exception as exc:  # noqa: BLE001  (network, auth, missing repo: all the user's)
        raise PlacementError(f"cannot fetch config.json from the Hub: "
                             f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}",
                             model) from None


def _text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """Multimodal configs keep the decoder under ``text_config``."""
    inner = config.get("text_config")
    return inner if isinstance(inner, Mapping) and "hidden_size" not in config else config


def shape_of(config: Mapping[str, Any], name: str) -> ModelShape:
    """A :class:`ModelShape` from ``config.json`` fields; ``PlacementError`` on a missing one."""
    from testtime.flops import MissingField, count_parameters, decoder_dims

    c = dict(_text_config(config))
    try:
        d = decoder_dims(c)
    except MissingField as exc:
        raise PlacementError(f"config.json has no {exc.field!r}", name) from None
    model_type = str(c.get("model_type", "llama"))
    counted = {**c, "model_type": model_type}
    try:
        parameters = count_parameters(counted).total
    except ValueError:
        # An architecture the exact counter does not know: the same dense decoder layout
        # counted as Llama's (within a few percent for attention + gated-MLP decoders).
        parameters = count_parameters({**counted, "model_type": "llama"}).total
    window = c.get("sliding_window")
    if not isinstance(window, int) or window <= 0 or c.get("use_sliding_window") is False:
        window = None
    max_pos = c.get("max_position_embeddings")
    dtype = str(c.get("torch_dtype") or c.get("dtype") or DEFAULT_DTYPE)
    if DTYPE_BYTES.get(dtype.lower().removeprefix("torch.")) == 4:
        # vLLM ("auto") and the PRM loader load a float32 checkpoint in 16 bits on a GPU
        dtype = DEFAULT_DTYPE
    return ModelShape(name=name, model_type=model_type, layers=d.layers, hidden=d.hidden,
                      intermediate=d.intermediate, heads=d.heads, kv_heads=d.kv_heads,
                      head_dim=d.head_dim, vocab=d.vocab, tied_embeddings=d.tied,
                      dtype_bytes=dtype_bytes(dtype, name),
                      max_position_embeddings=int(max_pos) if isinstance(max_pos, int) else None,
                      sliding_window=window, parameters=parameters)


def model_shape(model: str, dtype: str | None = None) -> ModelShape:
    """``shape_of(read_config(model))`` loaded in ``dtype`` (None: the config's own)."""
    return shape_of(read_config(model), model).with_dtype(dtype)

"""Load transformers models onto one device or split by an accelerate device map.

One code path for the PRM backbones (``scoring/prm/checkpoint.py``) and the ``hf:`` policy:

* no device map: the weights load straight onto ``device`` (``device_map={"": device}`` on
  an accelerator), never a CPU copy first;
* a device map (``"auto"``, ``"balanced"``, ``"sequential"`` or ``{module: device}``) with
  ``max_memory`` (``{"cuda:0": 30, "cpu": 60}``, GiB): transformers builds the model on the
  meta device and accelerate loads each layer's weights onto its device, so host RAM never
  holds the whole model. Layers mapped to ``"cpu"`` or ``"disk"`` beside a GPU are offloaded
  (their weights stream to the first GPU for each forward, accelerate's hooks);
  ``"disk"`` needs ``offload_folder``.

Where the model runs: :func:`input_device` (the device of the input embedding, where input
ids go) and :func:`output_device` (the device of the final norm, where the last hidden state
comes out and a score head belongs).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from testtime.placement.shapes import GIB

DeviceMap = str | Mapping[str, int | str]
"""A preset name (accelerate's ``auto``/``balanced``/``balanced_low_0``/``sequential``) or
``{module name: device}``."""
PRESETS = ("auto", "balanced", "balanced_low_0", "sequential")
MaxMemory = Mapping[str | int, float | int | str]
"""GiB (or accelerate's ``"30GiB"`` strings) per device: ``{"cuda:0": 30, "cpu": 60}``."""


def accelerate_max_memory(max_memory: MaxMemory | None) -> dict[int | str, int] | None:
    """``{"cuda:0": 30, "cpu": 60}`` (GiB; ints mean CUDA indices) as accelerate wants it:
    ``{0: bytes, "cpu": bytes}``. A string value (``"30GiB"``) is passed through accelerate's
    own parser. Raises ``ValueError`` naming a bad key or value."""
    if not max_memory:
        return None
    from accelerate.utils import convert_file_size_to_int  # type: ignore[import-untyped]

    out: dict[int | str, int] = {}
    for key, value in max_memory.items():
        name = str(key)
        if isinstance(key, int) or name.isdigit():
            dev: int | str = int(name)
        elif name.startswith("cuda:") and name[5:].isdigit():
            dev = int(name[5:])
        elif name in ("cpu", "disk", "mps"):
            dev = name
        else:
            raise ValueError(f"max_memory: unknown device {name!r}; use cuda:N, N, cpu or disk")
        if isinstance(value, str):
            out[dev] = int(convert_file_size_to_int(value))
        elif isinstance(value, int | float) and value > 0:
            out[dev] = int(value * GIB)
        else:
            raise ValueError(f"max_memory[{name!r}] must be GiB > 0, got {value!r}")
    return out


def check_device_map(device_map: DeviceMap | None) -> DeviceMap | None:
    """``device_map`` as ``from_pretrained`` takes it; ``ValueError`` on an unknown preset."""
    if device_map is None or isinstance(device_map, Mapping):
        return device_map
    if device_map not in PRESETS:
        raise ValueError(f"device_map {device_map!r}: use one of {', '.join(PRESETS)} or a "
                         f"{{module: device}} mapping")
    return device_map


def split_device_map(layers: int, devices: list[int | str], prefix: str = "",
                     lm_head: bool = False) -> dict[str, int | str]:
    """An explicit map of a Llama/Qwen2/Mistral decoder: its ``layers`` in equal runs over
    ``devices`` in order, the embedding (and rotary table) on the first, the final norm (and
    ``lm_head``) on the last. ``prefix``: ``"model."`` for a ``*ForCausalLM``."""
    if not devices or layers < 1:
        raise ValueError("split_device_map needs at least one device and one layer")
    out: dict[str, int | str] = {f"{prefix}embed_tokens": devices[0],
                                 f"{prefix}rotary_emb": devices[0]}
    for i in range(layers):
        out[f"{prefix}layers.{i}"] = devices[i * len(devices) // layers]
    out[f"{prefix}norm"] = devices[-1]
    if lm_head:
        out["lm_head"] = devices[-1]
    return out


def pretrained_kwargs(device: torch.device, device_map: DeviceMap | None = None,
                      max_memory: MaxMemory | None = None,
                      offload_folder: str | None = None) -> dict[str, Any]:
    """The placement arguments of ``from_pretrained`` (see the module docstring)."""
    if device_map is None:
        if max_memory:
            raise ValueError("max_memory needs a device_map (e.g. 'auto')")
        return {"device_map": None if device.type == "cpu" else {"": device}}
    kwargs: dict[str, Any] = {"device_map": check_device_map(device_map)}
    limits = accelerate_max_memory(max_memory)
    if limits is not None:
        kwargs["max_memory"] = limits
    if offload_folder is not None:
        kwargs["offload_folder"] = offload_folder
    return kwargs


def is_dispatched(model: nn.Module) -> bool:
    """Whether accelerate spread ``model`` (or the model it is part of) over devices with its
    hooks: then it must not be moved as a whole."""
    return any(hasattr(m, "_hf_hook") for m in model.modules())


def execution_device(module: nn.Module) -> torch.device:
    """Where ``module`` computes: its accelerate hook's execution device, else the device of
    its first parameter or buffer (CPU for a module without tensors)."""
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    for tensor in (*module.parameters(recurse=True), *module.buffers(recurse=True)):
        return tensor.device
    return torch.device("cpu")


def input_device(model: nn.Module) -> torch.device:
    """Where input ids go: the device of the input embedding."""
    getter = getattr(model, "get_input_embeddings", None)
    embed = getter() if callable(getter) else None
    return execution_device(embed if isinstance(embed, nn.Module) else model)


def output_device(model: nn.Module) -> torch.device:
    """Where the last hidden state comes out: the final norm's device (a decoder's ``norm``,
    or its inner model's), else the model's last parameter's."""
    for owner in (model, getattr(model, "model", None)):
        norm = getattr(owner, "norm", None)
        if isinstance(norm, nn.Module):
            return execution_device(norm)
    params = list(model.parameters())
    return params[-1].device if params else torch.device("cpu")


def materialized_weight(module: nn.Module) -> torch.Tensor:
    """``module.weight`` with its values: an offloaded module (``"cpu"``/``"disk"`` beside a
    GPU) keeps a meta tensor there and the values in its accelerate hook's weights map."""
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    if weight.device.type != "meta":
        return weight
    weights_map = getattr(getattr(module, "_hf_hook", None), "weights_map", None)
    if weights_map is None:
        raise ValueError(f"{type(module).__name__}.weight is on the meta device and no "
                         f"offload hook holds its values")
    return torch.as_tensor(weights_map["weight"])


def load_causal_lm(path_or_id: str, *, dtype: torch.dtype, device: torch.device | str = "cpu",
                   device_map: DeviceMap | None = None,
                   max_memory: MaxMemory | None = None,
                   offload_folder: str | None = None, trust_remote_code: bool = False,
                   **from_pretrained: Any) -> Any:
    """``AutoModelForCausalLM.from_pretrained`` in eval mode, placed as the module docstring
    says (for the ``hf:`` policy). ``device`` is used when ``device_map`` is None; with a
    device map, feed inputs to :func:`input_device` and read logits on :func:`output_device`
    (``model.device`` is the first device of the map)."""
    from transformers import AutoModelForCausalLM

    placement = pretrained_kwargs(torch.device(device), device_map, max_memory, offload_folder)
    model: Any = AutoModelForCausalLM.from_pretrained(
        path_or_id, dtype=dtype, trust_remote_code=trust_remote_code, **placement,
        **from_pretrained)
    if device_map is None:
        model = model.to(torch.device(device))
    return model.eval()

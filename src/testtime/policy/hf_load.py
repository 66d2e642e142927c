"""Loading and placement for the transformers backend: the device and dtype a config asks for,
the tokenizer (left padding, a pad token), the model (whole on one device, or split over
several with an accelerate device map), the ids that end a row and the logits processors of
the model's own generation config.

Every function reads files and allocates device memory only as its docstring says; the
policy (:class:`testtime.policy.hf.HFPolicy`) calls them once, at construction.
"""

from __future__ import annotations

from typing import Any

#: Tokens that end a chat turn in common chat templates (ChatML, Llama 3, GPT-style); a row
#: stops there too, besides the generation config's and tokenizer's own EOS ids.
CHAT_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>")


def pick_device(device: str, gpus: tuple[int, ...] | None, device_map: Any) -> str:
    """The device inputs go to when the model is not split: ``auto`` is CUDA when available,
    else CPU; a single entry in ``gpus`` (without a device map) is that GPU."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if gpus is not None and len(gpus) == 1 and device_map is None:
        device = f"cuda:{gpus[0]}"
    return device


def pick_dtype(dtype: str, device: str) -> Any:
    """The torch dtype named by ``dtype``; ``auto`` is bfloat16 on CUDA and float32 on CPU."""
    import torch

    return {"auto": torch.bfloat16 if device.startswith("cuda") else torch.float32,
            "float32": torch.float32, "bfloat16": torch.bfloat16,
            "float16": torch.float16}[dtype]


def load_tokenizer(path: str, trust_remote_code: bool) -> Any:
    """The tokenizer at ``path``, padding on the left (decoding appends on the right), with
    its EOS token as pad token when it has none."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str, dtype: Any, device: str, *, device_map: str | dict[str, Any] | None,
               max_memory: dict[str, Any] | None, gpus: tuple[int, ...] | None,
               trust_remote_code: bool) -> tuple[Any, str]:
    """The model (in eval mode) and the device its inputs go to. A device map (or several
    ``gpus``) loads through :func:`testtime.placement.loading.load_causal_lm`: layer by layer
    onto their devices, never a full copy in host RAM. ``max_memory`` without a split is an
    error."""
    split = device_map is not None or (gpus is not None and len(gpus) > 1)
    if not split:
        if max_memory:
            raise ValueError("hf policy: max_memory needs a device_map or several gpus")
        from transformers import AutoModelForCausalLM

        model: Any = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, trust_remote_code=trust_remote_code)
        model = model.to(device)
        model.eval()
        return model, device
    from testtime.placement.loading import input_device, load_causal_lm

    memory: Any = max_memory
    if memory is None and gpus is not None:
        import torch

        # Only the chosen GPUs get layers: accelerate places nothing on unlisted devices.
        memory = {f"cuda:{g}": torch.cuda.mem_get_info(g)[1] / 2**30 * 0.9 for g in gpus}
    model = load_causal_lm(path, dtype=dtype, device=device, device_map=device_map or "auto",
                           max_memory=memory, trust_remote_code=trust_remote_code)
    model.eval()
    return model, str(input_device(model))


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """Sorted ids that end a row: the generation config's EOS ids, the tokenizer's EOS id and
    the chat-turn end tokens (:data:`CHAT_END_TOKENS`) the vocabulary has."""
    ids = set()
    gen_eos = getattr(model.generation_config, "eos_token_id", None)
    for e in gen_eos if isinstance(gen_eos, list) else [gen_eos]:
        if e is not None:
            ids.add(int(e))
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    # Chat models end a turn with their own token; generation must stop there too.
    for tok in CHAT_END_TOKENS:
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid >= 0:
            ids.add(tid)
    return sorted(ids)


def model_processors(model: Any, tokenizer: Any, eos: list[int], device: str) -> Any:
    """The logits processors ``generate`` would build from the model's own generation config
    (``sequence_bias``, ``repetition_penalty``, ...) with sampling switched off (the decode
    loop samples itself), or None when there are none."""
    import copy

    gen = copy.deepcopy(model.generation_config)
    gen.do_sample = False
    gen.temperature = gen.top_p = gen.top_k = None
    gen.eos_token_id = eos
    gen.pad_token_id = tokenizer.pad_token_id
    procs = model._get_logits_processor(
        generation_config=gen, input_ids_seq_length=0, encoder_input_ids=None,
        prefix_allowed_tokens_fn=None, logits_processor=None, device=device,
        model_kwargs={})
    return procs if len(procs) else None

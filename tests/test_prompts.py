"""Prompt templates per model family and their choice from the model name."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from testtime.prompts import family_of, prompt_for_model, prompt_names
from testtime.types import ChatMessage

STEP_BY_STEP = "Please reason step by step, and put your final answer within \\boxed{}."


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("meta-llama/Llama-3.2-1B-Instruct", "llama3"),
        ("hf:meta-llama/Llama-3.1-8B-Instruct", "llama3"),
        ("llamacpp:/models/Llama-3.2-3B-Instruct-Q4_K_M.gguf", "llama3"),
        ("vllm:meta-llama/Meta-Llama-3-8B-Instruct", "llama3"),
        ("Qwen/Qwen2.5-1.5B-Instruct", "qwen"),
        ("vllm:Qwen/Qwen2.5-Math-7B-Instruct", "qwen"),
        ("openai:qwen2.5-math-1.5b-instruct", "qwen"),
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "deepseek_r1"),
        ("vllm:deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "deepseek_r1"),
        ("hf:default", "default"),
        ("llamacpp:default", "default"),
        ("smollm2", "default"),
        ("HuggingFaceTB/SmolLM2-1.7B-Instruct", "default"),
        ("mistralai/Mistral-7B-Instruct-v0.3", "default"),
    ],
)
def test_family_from_model_name(model: str, family: str) -> None:
    assert family_of(model) == family
    assert prompt_for_model(model).name == family


def test_llama3_is_metas_math_prompt_verbatim() -> None:
    t = prompt_for_model("meta-llama/Llama-3.2-1B-Instruct")
    msgs = t.messages("What is 1+1?")
    assert msgs == (ChatMessage("system", t.system or ""), ChatMessage("user", "What is 1+1?"))
    # the exact text of Meta's Llama 3.2 MATH evals (as in search-and-learn's sal/config.py)
    assert t.system == (
        "Solve the following math problem efficiently and clearly:\n\n- For simple problems "
        "(2 steps or fewer):\nProvide a concise solution with minimal explanation.\n\n- For "
        "complex problems (3 steps or more):\nUse this step-by-step format:\n\n## Step 1: "
        "[Concise description]\n[Brief explanation and calculations]\n\n## Step 2: [Concise "
        "description]\n[Brief explanation and calculations]\n\n...\n\nRegardless of the "
        "approach, always conclude with:\n\nTherefore, the final answer is: $\\boxed{answer}$. "
        "I hope it is correct.\n\nWhere [answer] is just the final number or expression that "
        "solves the problem."
    )
    assert t.recommended_sampling is None


def test_qwen_system_prompt_and_plain_user_turn() -> None:
    msgs = prompt_for_model("Qwen/Qwen2.5-Math-1.5B-Instruct").messages("Find $x$.")
    assert msgs == (ChatMessage("system", STEP_BY_STEP), ChatMessage("user", "Find $x$."))


def test_deepseek_r1_no_system_instruction_appended_and_sampling() -> None:
    t = prompt_for_model("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
    assert t.messages("Find $x$.") == (ChatMessage("user", "Find $x$.\n" + STEP_BY_STEP),)
    rs = t.recommended_sampling
    assert rs is not None and (rs.temperature, rs.top_p, rs.max_tokens) == (0.6, 0.95, 32768)


def test_default_keeps_its_worked_example() -> None:
    from testtime.prompts.default import TEMPLATE

    assert prompt_for_model("hf:default") is TEMPLATE
    msgs = TEMPLATE.messages("2+2?")
    text = "".join(m.content for m in msgs)
    assert "\\boxed{7}" in text and msgs[-1].role == "user" and "2+2?" in msgs[-1].content


def test_override_by_name_wins_and_unknown_is_an_error() -> None:
    assert prompt_for_model("meta-llama/Llama-3.2-1B-Instruct", "qwen").name == "qwen"
    assert prompt_for_model("hf:default", "deepseek-r1").name == "deepseek_r1"
    assert prompt_for_model("Qwen/Qwen2.5-7B-Instruct", "default").name == "default"
    assert prompt_names() == ["deepseek_r1", "default", "llama3", "qwen"]
    with pytest.raises(ValueError, match="unknown prompt 'mistral'.*llama3"):
        prompt_for_model("x", "mistral")


def test_llama3_date_line_is_fixed_so_prompts_are_reproducible() -> None:
    # Llama 3.1's template prints "Today Date: " + date_string, defaulting to the render day.
    from test_backend_openai import tiny_tokenizer

    from testtime.policy.hf import TEMPLATE_DATE, render_prompt
    from testtime.types import ChatMessage

    tok = tiny_tokenizer()
    tok.chat_template = (
        "{% if date_string is not defined %}{% set date_string = strftime_now('%d %b %Y') %}"
        "{% endif %}<|start_header_id|>system<|end_header_id|>\n\nToday Date: {{ date_string }}"
        "<|eot_id|>{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n"
        "{{ m.content }}<|eot_id|>{% endfor %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}")
    text = render_prompt(tok, [ChatMessage("user", "1+1?")], "Step 1")
    assert f"Today Date: {TEMPLATE_DATE}<|eot_id|>" in text
    assert text.endswith("assistant<|end_header_id|>\n\nStep 1")


# -- the family from the model's own files (config.json, chat template) ---------------------

R1_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}<｜User｜>{{ m['content'] }}"
               "{% endif %}{% endfor %}{% if add_generation_prompt %}<｜Assistant｜><think>\\n"
               "{% endif %}")
LLAMA3_TEMPLATE = ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
                   "\\n\\n{{ m['content'] }}<|eot_id|>{% endfor %}")
CHATML_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\\n{{ m['content'] }}"
                   "<|im_end|>\\n{% endfor %}")


def model_dir(root: Path, name: str, model_type: str, arch: str, template: str | None,
              jinja: bool = False) -> Path:
    """A model directory with only the small files the family is read from."""
    d = root / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": model_type,
                                               "architectures": [arch]}))
    if template is not None and jinja:
        (d / "chat_template.jinja").write_text(template)
        (d / "tokenizer_config.json").write_text("{}")
    elif template is not None:
        (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    return d


@pytest.mark.parametrize(
    ("model_type", "arch", "template", "jinja", "family"),
    [
        ("qwen2", "Qwen2ForCausalLM", CHATML_TEMPLATE, False, "qwen"),
        ("qwen2", "Qwen2ForCausalLM", R1_TEMPLATE, False, "deepseek_r1"),  # R1-Distill-Qwen
        ("llama", "LlamaForCausalLM", R1_TEMPLATE, True, "deepseek_r1"),  # R1-Distill-Llama
        ("llama", "LlamaForCausalLM", LLAMA3_TEMPLATE, False, "llama3"),
        ("llama", "LlamaForCausalLM", LLAMA3_TEMPLATE, True, "llama3"),  # chat_template.jinja
        ("", "Qwen2ForCausalLM", None, False, "qwen"),  # architectures alone
        ("llama", "LlamaForCausalLM", CHATML_TEMPLATE, False, "default"),  # SmolLM2-like
        ("mistral", "MistralForCausalLM", LLAMA3_TEMPLATE, False, "default"),
    ],
)
def test_family_from_a_local_directorys_files(tmp_path: Path, model_type: str, arch: str,
                                              template: str | None, jinja: bool,
                                              family: str) -> None:
    d = model_dir(tmp_path, "ckpt-7", model_type, arch, template, jinja)
    assert family_of(str(d)) == family
    for spec in (f"hf:{d}", f"vllm:{d}"):
        assert prompt_for_model(spec).name == family
    # a server alias whose model (vLLM's root) is that directory
    assert prompt_for_model("openai:smol", model_files=str(d)).name == family


def test_the_name_wins_over_the_files(tmp_path: Path) -> None:
    d = model_dir(tmp_path, "Qwen2.5-Math-7B-Instruct", "llama", "LlamaForCausalLM",
                  LLAMA3_TEMPLATE)
    assert family_of(str(d)) == "qwen"
    # a Hub id as the server's model is judged by its name, with no network
    assert prompt_for_model("openai:smol", model_files="deepseek-ai/DeepSeek-R1-Distill-"
                                                         "Qwen-1.5B").name == "deepseek_r1"
    assert family_of("openai:smol", "meta-llama/Llama-3.1-8B-Instruct") == "llama3"


def test_fallback_to_the_default_warns_once_naming_the_prompt_and_why(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = model_dir(tmp_path, "ckpt", "mistral", "MistralForCausalLM", CHATML_TEMPLATE)
    with caplog.at_level(logging.WARNING, logger="testtime.prompts"):
        assert prompt_for_model(f"vllm:{d}").name == "default"
        assert prompt_for_model(f"vllm:{d}").name == "default"
    [rec] = [r for r in caplog.records if r.levelno == logging.WARNING]
    msg = rec.getMessage()
    assert "'default' prompt" in msg and "'mistral'" in msg and "--prompt" in msg

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="testtime.prompts"):
        assert prompt_for_model("openai:smol").name == "default"  # no files to read
        assert prompt_for_model("hf:default").name == "default"  # the embedded model: meant
        assert prompt_for_model("HuggingFaceTB/SmolLM2-360M-Instruct").name == "default"
        # a bare server spec: the prompt is chosen again once the server names its model
        assert prompt_for_model("openai:alias@http://127.0.0.1:8000/v1").name == "default"
        assert prompt_for_model("x", warn=False).name == "default"
    [rec] = caplog.records
    assert "openai:smol" in rec.getMessage() and "no local model directory" in rec.getMessage()


def test_recommended_stays_io_free_for_hub_ids_and_reads_local_dirs(tmp_path: Path) -> None:
    from testtime.config import recommended

    d = model_dir(tmp_path, "r1", "qwen2", "Qwen2ForCausalLM", R1_TEMPLATE)
    sampling, path = recommended(f"vllm:{d}")
    assert (sampling.temperature, sampling.top_p, path) == (0.6, 0.95, 32768)
    # Hub ids: the name only (no file lookups, no network: the Hub is offline in tests)
    assert recommended("vllm:some-org/some-model")[1] == 8192
    assert recommended("vllm:deepseek-ai/DeepSeek-R1-Distill-Llama-8B")[1] == 32768


def test_unreadable_files_are_judged_on_what_remains(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    d = model_dir(tmp_path, "broken", "qwen2", "Qwen2ForCausalLM", None)
    (d / "tokenizer_config.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="testtime.prompts"):
        assert family_of(str(d)) == "qwen"
    assert any("tokenizer_config.json" in r.getMessage() for r in caplog.records)

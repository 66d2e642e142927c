"""Prompt templates per model family, picked from the model name or the model's own files
(overridable by name).

Families by name (first match wins, on the lower-cased model name or policy name):

* ``deepseek_r1``: ``deepseek-r1`` or ``r1-distill`` (checked first: the R1 distills are
  Qwen and Llama models by name);
* ``qwen``: ``qwen`` (Qwen2.5 and Qwen2.5-Math Instruct);
* ``llama3``: ``llama-3``, ``llama3`` or ``llama_3`` (Llama 3.x Instruct);
* ``default``: ``smollm`` (the embedded SmolLM2 and its siblings: a worked example keeps small
  models on format) and ``default``.

When the name says none of these (a local directory such as ``/models/ckpt-7``, a served
alias such as ``openai:smol``), the family comes from the model's own files, when they are a
local directory (:func:`family_from_files`): ``config.json`` (``model_type``,
``architectures``) and the chat template (``tokenizer_config.json``'s ``chat_template`` or
``chat_template.jinja``). A Hub id is judged by its name only (no network). What matches
nothing gets the small-model ``default`` prompt, with a WARNING that says so and why.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from testtime.prompts.base import PromptTemplate, RecommendedSampling, WorkedExample

log = logging.getLogger(__name__)

#: (family, pattern on the lower-cased model name), in priority order.
_FAMILY_PATTERNS: tuple[tuple[str, str], ...] = (
    ("deepseek_r1", r"deepseek[-_]?r1|r1[-_]distill"),
    ("qwen", r"qwen"),
    ("llama3", r"llama[-_]?3"),
    ("default", r"smollm|^(\w+:)?default$"),
)
#: Chat-template markers of DeepSeek-R1-Distill (its Qwen and Llama models): the assistant
#: tag and the reasoning block.
_R1_TEMPLATE_MARKERS = ("<｜Assistant｜>", "<think>")
#: Chat-template markers of Llama 3.x Instruct (a ``llama`` model type alone may be SmolLM2).
_LLAMA3_TEMPLATE_MARKERS = ("<|start_header_id|>", "<|eot_id|>")
#: Backend prefixes of policy specs (``hf:``, ``vllm:``, ...), stripped to find a path.
_BACKEND_PREFIX = re.compile(r"^[a-z_-]+:(?!//)")
#: Model names already warned about (the default is chosen for one model several times).
_WARNED: set[tuple[str, str | None]] = set()


def _templates() -> dict[str, PromptTemplate]:
    from testtime.prompts import deepseek_r1, default, llama3, qwen

    return {t.name: t for t in (default.TEMPLATE, llama3.TEMPLATE, qwen.TEMPLATE,
                                deepseek_r1.TEMPLATE)}


def all_templates() -> list[PromptTemplate]:
    """Every shipped template."""
    return list(_templates().values())


def prompt_names() -> list[str]:
    """Names accepted as ``override`` (``--prompt``)."""
    return sorted(_templates())


def family_by_name(model_name: str) -> str | None:
    """The prompt family a model name says, or None when it says none."""
    name = model_name.lower()
    for family, pattern in _FAMILY_PATTERNS:
        if re.search(pattern, name):
            return family
    return None


def local_model_dir(spec: str) -> Path | None:
    """The local model directory a spec names (``hf:/models/x``, ``/models/x``, a ``.gguf``
    file's directory is not one), or None for Hub ids, servers and missing paths."""
    path = _BACKEND_PREFIX.sub("", spec, count=1).split("@", 1)[0]
    if not path.startswith(("/", ".", "~")):
        return None
    p = Path(path).expanduser()
    return p if p.is_dir() else None


def _read_json(path: Path) -> dict[str, object]:
    """A small JSON object file, or {} when absent or unreadable (logged: the family is then
    judged on what remains)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s to choose the prompt: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def family_from_files(model_dir: Path) -> tuple[str | None, str]:
    """The family a model directory's ``config.json`` and chat template say, and why.

    DeepSeek-R1-Distill: a ``qwen2``/``llama`` model whose chat template has ``<think>`` or
    ``<｜Assistant｜>``; Qwen: a ``qwen*`` model type or architecture; Llama 3: a ``llama``
    model with Llama 3's header tokens in its template. None when they say none of these.
    """
    config = _read_json(model_dir / "config.json")
    model_type = str(config.get("model_type") or "").lower()
    archs = config.get("architectures")
    arch = " ".join(str(a) for a in archs).lower() if isinstance(archs, list) else ""
    template = _read_json(model_dir / "tokenizer_config.json").get("chat_template") or ""
    jinja = model_dir / "chat_template.jinja"
    if not template and jinja.is_file():
        template = jinja.read_text(encoding="utf-8", errors="replace")
    if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
        template = " ".join(str(t.get("template", "")) for t in template if isinstance(t, dict))
    template = str(template)
    kind = "qwen" if "qwen" in model_type or "qwen" in arch else \
        "llama" if "llama" in model_type or "llama" in arch else None
    what = f"model_type {model_type or '?'!r}, architectures {archs or '?'}"
    if kind is None:
        return None, f"{model_dir}/config.json ({what}) is not a Qwen or Llama model"
    marker = next((m for m in _R1_TEMPLATE_MARKERS if m in template), None)
    if marker is not None:
        return "deepseek_r1", f"{what} with {marker} in its chat template"
    if kind == "qwen":
        return "qwen", what
    marker = next((m for m in _LLAMA3_TEMPLATE_MARKERS if m in template), None)
    if marker is not None:
        return "llama3", f"{what} with {marker} in its chat template"
    return None, (f"{model_dir} is a Llama-architecture model whose chat template has no "
                  f"Llama 3 header tokens")


def _family(model_name: str, model_files: str | None) -> tuple[str, str | None]:
    """The family, and why the default was chosen (None when a name or files said it)."""
    for name in (model_name, model_files):
        if name and (family := family_by_name(name)) is not None:
            return family, None
    reasons = []
    for name in (model_name, model_files):
        if name and (local := local_model_dir(name)) is not None:
            family, why = family_from_files(local)
            if family is not None:
                return family, None
            reasons.append(why)
    where = " or ".join(repr(n) for n in dict.fromkeys((model_name, model_files)) if n)
    return "default", "; ".join(reasons) or (
        f"the name {where} says no known family (qwen, llama-3, deepseek-r1) and names no "
        f"local model directory to read config.json and the chat template from")


def family_of(model_name: str, model_files: str | None = None) -> str:
    """The prompt family of a model: from its name, else from ``model_files`` (another name
    for it, e.g. the model an OpenAI-compatible server loaded), else from the files of the
    local directory either names; ``default`` when nothing says one."""
    return _family(model_name, model_files)[0]


def prompt_for_model(model_name: str, override: str | None = None, *,
                     model_files: str | None = None, warn: bool = True) -> PromptTemplate:
    """The prompt template for a model: ``override`` by name, else its family
    (:func:`family_of`).

    ``model_name`` may be a bare model id, a local directory or a policy name such as
    ``vllm:Qwen/Qwen2.5-1.5B``; ``model_files`` another name for the same model (a policy's
    ``model_files``: the directory or Hub id it was loaded from). Reads at most two small
    JSON files and a template of a local directory; no network. With ``warn``, a fallback to
    the small-model default logs a WARNING (once per model) naming the prompt and why (not
    for a bare server spec ``openai:NAME@URL``, whose model is known only once it answers).
    """
    templates = _templates()
    if override is not None:
        key = override.strip().lower().replace("-", "_")
        if key not in templates:
            raise ValueError(f"unknown prompt {override!r}; known: {sorted(templates)}")
        return templates[key]
    family, why = _family(model_name, model_files)
    # A server spec (openai:ALIAS@URL) alone is only a name: the prompt is chosen again with
    # the model the server reports (model_files) once it answers, so no warning yet.
    warn = warn and not (model_files is None and "@http" in model_name)
    if why is not None and warn and (model_name, model_files) not in _WARNED:
        _WARNED.add((model_name, model_files))
        log.warning("%s: using the small-model 'default' prompt (a worked example, no system "
                    "prompt) because %s; pick another with --prompt (%s)", model_name, why,
                    ", ".join(sorted(templates)))
    return templates[family]


__all__ = [
    "PromptTemplate",
    "RecommendedSampling",
    "WorkedExample",
    "family_by_name",
    "family_from_files",
    "family_of",
    "prompt_for_model",
    "prompt_names",
]

"""How to serve each PRM family with vLLM's pooling runner, checked against vLLM 0.32.

``vllm serve MODEL`` plus :func:`serve_args` gives a server whose ``POST /pooling`` answers,
for a token-id input, the rows :class:`~testtime.scoring.service.vllm_pooling.VLLMPoolingScorer`
reads. What each family needs (``--task reward`` and ``--override-pooler-config`` are gone):

* ``qwen_prm`` (``Qwen2ForProcessRewardModel``): ``--runner pooling``; vLLM's own model class
  pools STEP at ``<extra_0>`` (it assumes id 151651, so the flags name the tokenizer's id) and
  softmaxes its two labels, rows ``[P(bad), P(good)]``.
* ``math_shepherd`` / ``rlhflow`` (causal LMs read at two vocabulary entries): served as a
  2-label token classifier built from the lm_head rows of the (good, bad) tokens:
  ``--convert classify --hf-overrides {"classifier_from_token": [GOOD, BAD], "method":
  "no_post_processing"}`` with ``--pooler-config {"task": "token_classify",
  "tok_pooling_type": "STEP" (at the step tag) | "ALL"}``; rows ``[P(good), P(bad)]``.
  (``returned_token_ids`` with ``--runner pooling`` alone would index *hidden-state* dims of
  an embedding model: silently wrong scores, or an engine crash.)
* ``skywork`` (Qwen2 + ``v_head.summary``): vLLM cannot load the ``v_head`` weights, so
  :func:`export_skywork` writes the same weights as a 1-label
  ``Qwen2ForSequenceClassification`` (``v_head.summary.*`` -> ``score.*``), served with ALL
  pooling; rows ``[sigmoid(v_head)]`` per token.

Engine settings (tensor parallel, memory share, context length, dtype, pass-through engine
arguments) become ``vllm serve`` flags in one place, :func:`engine_flags`; :func:`serve_argv`
builds the whole argument list for the policy and the PRM alike (``testtime serve vllm-prm``
prints it, ``testtime serve stack`` runs it).
"""

from __future__ import annotations

import json
import shlex
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: Files a tokenizer needs, copied next to an exported checkpoint.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json",
                    "chat_template.jinja", "generation_config.json")


def _token_string(tokenizer: Any, token_id: int) -> str:
    """The vocabulary string vLLM's ``classifier_from_token`` looks up for ``token_id``."""
    token = tokenizer.convert_ids_to_tokens(int(token_id))
    if tokenizer.convert_tokens_to_ids(token) != token_id:
        raise ValueError(f"token id {token_id} has no unique vocabulary string ({token!r})")
    return str(token)


def serve_args(family: str, encoder: Any) -> list[str]:
    """The flags after ``vllm serve MODEL`` that make its ``/pooling`` answer ``family``'s rows.

    ``encoder`` is the family's encoder on the PRM's tokenizer (it knows the tag and the
    good/bad token ids, so the flags are right for real and tiny vocabularies alike)."""
    def classifier(pooling: dict[str, Any]) -> list[str]:
        tokens = [_token_string(encoder.tokenizer, encoder.good_id),
                  _token_string(encoder.tokenizer, encoder.bad_id)]
        return ["--runner", "pooling", "--convert", "classify",
                "--hf-overrides", json.dumps({"classifier_from_token": tokens,
                                              "method": "no_post_processing"}),
                "--pooler-config", json.dumps({"task": "token_classify", **pooling})]

    if family == "qwen_prm":
        # vLLM's model class pools at id 151651 (<extra_0> of the real vocabulary) unless told
        return ["--runner", "pooling", "--pooler-config",
                json.dumps({"task": "token_classify", "tok_pooling_type": "STEP",
                            "step_tag_id": encoder.step_tag_id})]
    if family == "math_shepherd":
        return classifier({"tok_pooling_type": "STEP", "step_tag_id": encoder.step_tag_id})
    if family == "rlhflow":
        return classifier({"tok_pooling_type": "ALL"})
    if family == "skywork":
        return ["--runner", "pooling", "--pooler-config",
                json.dumps({"task": "token_classify", "tok_pooling_type": "ALL"})]
    raise ValueError(f"no vLLM pooling recipe for PRM family {family!r}")


#: testtime's names of engine settings that ``vllm serve`` spells differently.
_FLAG_NAMES = {"max_batch_seqs": "max_num_seqs"}
#: Settings that place a server rather than configure its engine: the launcher applies them
#: through the environment (``CUDA_VISIBLE_DEVICES``, ``VLLM_CPU_KVCACHE_SPACE``), never as flags.
PLACEMENT_KEYS = frozenset({"gpus", "device", "cpu_kv_cache_gib"})
#: ``vllm serve`` as users run it; ``VLLM_SERVER_MODULE`` is the same server run by a Python
#: (vllm-cpu's console script is broken: it looks up the distribution "vllm").
VLLM_COMMAND = ("vllm", "serve")
VLLM_SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def engine_flags(settings: Mapping[str, Any]) -> list[str]:
    """``vllm serve`` flags for engine settings named as vLLM's engine arguments are
    (``tensor_parallel_size``, ``gpu_memory_utilization``, ``max_model_len``, ``dtype``,
    ``trust_remote_code``, ``enforce_eager``, ``block_size``, any pass-through key) or as
    testtime names them (``max_batch_seqs`` -> ``--max-num-seqs``).

    ``key: value`` becomes ``--key-with-dashes VALUE``; ``True`` a bare flag, ``False``
    ``--no-key`` (vLLM's boolean flags take both), dicts and lists JSON; ``None`` is left
    out. Placement keys (:data:`PLACEMENT_KEYS`) are refused: they are not engine flags, and
    passing them would silently mean something else."""
    placement = sorted(PLACEMENT_KEYS & set(settings))
    if placement:
        raise ValueError(f"{placement} place the server (environment), they are not "
                         f"`vllm serve` flags")
    flags: list[str] = []
    for key, value in settings.items():
        if value is None:
            continue
        flag = "--" + _FLAG_NAMES.get(key, key).replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False:
            flags.append("--no-" + flag[2:])
        elif isinstance(value, dict | list | tuple):
            flags += [flag, json.dumps(value)]
        else:
            flags += [flag, str(value)]
    return flags


def vllm_launcher(vllm: str | Sequence[str] | None = None) -> list[str]:
    """The command prefix that starts ``vllm serve`` (the model follows it): ``vllm serve``
    by default; ``vllm`` a vLLM executable (``PATH/vllm serve``) or a Python with vLLM
    installed (``PYTHON -m vllm.entrypoints.openai.api_server --model``)."""
    if vllm is None:
        return list(VLLM_COMMAND)
    if not isinstance(vllm, str):
        return list(vllm)
    if Path(vllm).name.startswith("python"):
        return [vllm, "-m", VLLM_SERVER_MODULE, "--model"]
    return [vllm, "serve"]


def serve_argv(model: str, *, host: str = "127.0.0.1", port: int = 8000,
               settings: Mapping[str, Any] | None = None, runner_args: Sequence[str] = (),
               launcher: Sequence[str] = VLLM_COMMAND, extra: Sequence[str] = ()) -> list[str]:
    """The argument list of a ``vllm serve`` process: ``launcher MODEL``, ``runner_args``
    (a PRM's :func:`serve_args`), :func:`engine_flags` of ``settings``, ``--host``,
    ``--port``, ``extra``."""
    return [*launcher, model, *runner_args, *engine_flags(settings or {}),
            "--host", host, "--port", str(port), *extra]


def serve_command(family: str, model: str, encoder: Any, *, host: str = "127.0.0.1",
                  port: int = 8000, extra: Sequence[str] = (),
                  settings: Mapping[str, Any] | None = None) -> str:
    """The whole ``vllm serve`` command line of a PRM (shell-quoted), engine ``settings``
    (tensor parallel, memory share, context, ...) included."""
    return shlex.join(serve_argv(model, host=host, port=port, settings=settings,
                                 runner_args=serve_args(family, encoder), extra=extra))


def export_skywork(src: str | Path, dst: str | Path) -> Path:
    """Write a Skywork PRM checkpoint as vLLM can serve it (see the module docstring).

    Reads ``src`` shard by shard (safetensors or ``pytorch_model.bin``), renames
    ``v_head.summary.{weight,bias}`` to ``score.{weight,bias}``, drops ``lm_head.*`` and writes
    safetensors shards, a ``Qwen2ForSequenceClassification`` config with ``num_labels`` 1, and
    the tokenizer files. Same weights, so the scores equal the in-process ``skywork:`` ones.
    """
    import torch
    from safetensors.torch import save_file

    src, dst = Path(src), Path(dst)
    shards = sorted(src.glob("*.safetensors")) or sorted(src.glob("pytorch_model*.bin"))
    if not shards:
        raise FileNotFoundError(f"{src}: no *.safetensors or pytorch_model*.bin weights")
    dst.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    head_seen = False
    for k, shard in enumerate(shards):
        if shard.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(shard), framework="pt") as f:
                state = {n: f.get_tensor(n) for n in f.keys()}  # noqa: SIM118  (not a dict)
        else:
            state = torch.load(shard, map_location="cpu", weights_only=True, mmap=True)
        out: dict[str, Any] = {}
        for name, tensor in state.items():
            if name.startswith("lm_head."):
                continue
            if name.startswith("v_head.summary."):
                name = "score." + name.removeprefix("v_head.summary.")
                head_seen = True
            out[name] = tensor.contiguous()
        file = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(out, str(dst / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(out, file))
        del state, out
    if not head_seen:
        raise ValueError(f"{src}: no v_head.summary.* tensors; not a Skywork PRM checkpoint")
    (dst / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
    config = json.loads((src / "config.json").read_text())
    config.update(architectures=["Qwen2ForSequenceClassification"], num_labels=1,
                  id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0})
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    for name in _TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    return dst

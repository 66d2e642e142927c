"""Errors a user can fix: the CLI prints them as one line and exits with code 2.

``UserError`` carries the option (``--policy``, ``--prm``, ...) and the value it is about, so
the line names both. Other modules raise ``ValueError``/``FileNotFoundError`` with messages
that already name the file, line or field (datasets, run directories); the CLI treats those the
same way. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
from pathlib import Path


class UserError(ValueError):
    """A bad option value, missing file or unreachable model, reported as one line."""

    def __init__(self, message: str, option: str | None = None, value: str | None = None):
        self.option = option
        self.value = value
        where = f"{option} {value}: " if option and value is not None else \
            f"{option}: " if option else ""
        super().__init__(where + message)


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def looks_like_path(model: str) -> bool:
    """A local path rather than a Hub id: starts with ``/``, ``.`` or ``~``, or names a file."""
    return model.startswith(("/", ".", "~")) or model.endswith((".gguf", ".json"))


def check_model_source(model: str, option: str, value: str) -> None:
    """Fail before anything loads when ``model`` (a local path or Hub id) cannot be loaded.

    A local path must exist; a Hub id must be a valid repo id and, while the Hub is offline
    (``HF_HUB_OFFLINE=1``), be in the local Hugging Face cache. Raises :class:`UserError`
    naming ``option`` and ``value`` (the whole spec as the user wrote it).
    """
    if model == "default":
        return
    path = Path(model).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        raise UserError(f"{path} holds no config.json: not a Hugging Face model directory",
                        option, value)
    if path.exists():
        return
    if looks_like_path(model):
        raise UserError(f"no such file or directory: {path}", option, value)
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(model)
    except HFValidationError:
        raise UserError(f"{model!r} is neither an existing local path nor a valid Hugging "
                        f"Face Hub id (ORG/NAME)", option, value) from None
    if _offline():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json")
        if not isinstance(cached, str):
            raise UserError(
                f"{model} is not in the local Hugging Face cache and the Hub is offline "
                f"(HF_HUB_OFFLINE=1); download it first or give a local directory",
                option, value)

"""The run directory: its files, and the check that a directory may be (re)used for a config.

``config.json`` holds the ``RunConfig``; ``results.jsonl`` the records (``records.py``);
``summary.json`` the summary. Only the writer of a run (the runner, under the directory's
lock) changes any of them.
"""

from __future__ import annotations

import json
from pathlib import Path

from testtime.config import RunConfig, config_diff
from testtime.store import RecordStore, dump_json

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked (exists, or its config differs)."""


def prepare_run_dir(
    out_dir: Path, config: RunConfig, resume: bool, overwrite: bool, ids: set[str]
) -> None:
    """Create the directory and ``config.json``, or check it matches on resume.

    Without ``--resume`` an existing directory is accepted only when it holds this exact
    config with every problem done (the summary is then recomputed, nothing is rerun).
    """
    cfg_path = out_dir / CONFIG_FILE
    current = json.loads(config.model_dump_json())
    if cfg_path.exists():
        if overwrite:
            for name in (RESULTS_FILE, SUMMARY_FILE):
                (out_dir / name).unlink(missing_ok=True)
        elif not resume:
            saved = json.loads(cfg_path.read_text())
            store = RecordStore(out_dir / RESULTS_FILE)
            if not config_diff(saved, current) and ids <= store.done_ids():
                return
            raise RunDirError(
                f"{out_dir} already holds a run; add --resume to finish it or --overwrite "
                f"to start again"
            )
        else:
            saved = json.loads(cfg_path.read_text())
            diff = config_diff(saved, current)
            if diff:
                raise RunDirError(
                    f"{cfg_path}: cannot resume, the config differs in: " + "; ".join(diff)
                )
            return
    out_dir.mkdir(parents=True, exist_ok=True)
    dump_json(cfg_path, current)

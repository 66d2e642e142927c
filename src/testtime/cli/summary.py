"""``testtime summary``: print the summary of a run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from testtime.cli.common import fail, print_json
from testtime.cli.execution import print_summary


def summary(
    run_dir: Path,
    as_json: Annotated[bool, typer.Option("--json", help="Print summary.json as it is")] = False,
) -> None:
    """Print the summary of an existing run directory."""
    from testtime.store import writer_of
    from testtime.summary import summary_tables

    path = run_dir / "summary.json"
    if not path.exists():
        if (holder := writer_of(run_dir)) is not None:
            fail(f"{run_dir}: run in progress ({holder}); its summary is written at the end")
        fail(f"{path} does not exist (run with --resume first)")
    data = json.loads(path.read_text())
    if as_json:
        print_json(data)
        return
    print_summary(data, summary_tables)

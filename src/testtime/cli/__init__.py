"""The ``testtime`` command line: a thin layer over the library (logic lives elsewhere).

Commands: ``run`` (and ``adaptive``, its ``--strategy optimal`` form), ``summary``
(``cli/run.py``); ``flops``, ``sweep``, ``analyze``, ``report`` (``cli/analysis.py``);
``plan`` (``cli/plan.py``: the GPU placement plan); ``serve prm``, ``serve vllm-prm``, ``serve stack``
(``cli/serve.py``), ``serve tts`` (``cli/serve_tts.py``). Shared helpers (one-line errors, JSON output, tables) are in
``cli/common.py``.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from testtime.cli import analysis, execution, plan, run, serve, serve_tts, summary

app = typer.Typer(
    help="Compute-optimal test-time scaling of language models on math reasoning.",
    no_args_is_help=True,
    add_completion=False,
)
app.command("run")(run.run)
app.command("summary")(summary.summary)
app.command("adaptive")(run.adaptive)
for _command in (analysis.flops, analysis.sweep, analysis.analyze, analysis.report):
    app.command()(_command)
app.command("plan")(plan.plan)
serve.serve_app.command("tts")(serve_tts.tts)
app.add_typer(serve.serve_app, name="serve")


def main() -> None:
    logging.basicConfig(level=os.environ.get("TESTTIME_LOG", "WARNING"))
    sys.argv[1:] = execution.fill_ray_flag(sys.argv[1:])
    app()


__all__ = ["app", "main"]

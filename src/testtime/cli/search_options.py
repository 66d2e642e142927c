"""CLI options of the step splitter, the thinking budget, online DeepConf and REBASE, shared by
``run`` and ``sweep`` (each is a ``SearchConfig`` field of the same name, minus the prefix)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

StepSplitter = Annotated[str, typer.Option(
    help="How text becomes steps for the PRM and the step searches: blank_lines (the "
         "paper), min_length (blank-line pieces merged to --step-min-chars) or thinking "
         "(long-CoT traces: new steps at 'Wait', 'Alternatively', ... paragraphs; the text "
         "after </think> is the final step)")]
StepMinChars = Annotated[int, typer.Option(
    help="min_length / thinking splitters: least characters in a step")]
ThinkBudget = Annotated[int | None, typer.Option(
    help="R1-style models: end the thought after this many tokens and force '</think>' "
         "and the answer (a second request)")]
DcWarmup = Annotated[int, typer.Option(
    "--deepconf-warmup", help="deepconf: warm-up traces that set the threshold (N below it: "
                              "all N are warm-up, offline DeepConf)")]
DcEta = Annotated[float, typer.Option(
    "--deepconf-eta", help="deepconf: percent of warm-up traces kept (10: DeepConf-low, "
                           "90: DeepConf-high)")]
DcWindow = Annotated[int, typer.Option(
    "--deepconf-window", help="deepconf: group-confidence window in tokens")]
DcConsensus = Annotated[float, typer.Option(
    "--deepconf-consensus", help="deepconf: stop once the weighted vote's top answer holds "
                                 "this share")]
DcRound = Annotated[int, typer.Option(
    "--deepconf-round", help="deepconf: traces generated between consensus checks")]
RebaseTemperature = Annotated[float, typer.Option(
    help="rebase: softmax temperature of the expansion weights exp(score / T)")]


def search_fields(*, step_splitter: str, step_min_chars: int, think_budget: int | None,
                  dc_warmup: int, dc_eta: float, dc_window: int, dc_consensus: float,
                  dc_round: int, rebase_temperature: float) -> dict[str, Any]:
    """The ``SearchConfig`` keyword arguments of these options."""
    return {"step_splitter": step_splitter, "step_min_chars": step_min_chars,
            "think_budget": think_budget, "dc_warmup": dc_warmup, "dc_eta": dc_eta,
            "dc_window": dc_window, "dc_consensus": dc_consensus, "dc_round": dc_round,
            "rebase_temperature": rebase_temperature}

"""``testtime plan``: where the policy and the PRM would run, before anything loads.

Reads each model's ``config.json`` only (:mod:`testtime.placement`). Prints one row per GPU
(or ``--json``: ``{gpus: [{index, total_gb, planned_gb}], policy: {...}, prm: {...}}``); a
layout that cannot fit is one ``error:`` line and exit code 2.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from testtime.cli.common import fail, print_json, show, user_errors


def plan(
    policy: Annotated[str, typer.Option("--policy", help="Policy spec, e.g. vllm:MODEL")],
    prm: Annotated[str, typer.Option("--prm", help="Scorer spec, e.g. skywork:MODEL")],
    num_gpus: Annotated[int | None, typer.Option(
        "--num-gpus", help="Plan for K GPUs of --gpu-memory GB (another machine) instead of "
                           "the GPUs found here")] = None,
    gpu_memory: Annotated[float | None, typer.Option(
        "--gpu-memory", help="GB (GiB) of each of the --num-gpus GPUs")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON")] = False,
) -> None:
    """Plan the GPUs, tensor parallelism and memory shares of the policy and the PRM."""
    from testtime.placement import detect_gpus, given_gpus, plan_placement

    if (num_gpus is None) != (gpu_memory is None):
        fail("--num-gpus and --gpu-memory go together (K GPUs of GB each)")
    with user_errors():
        gpus = detect_gpus() if num_gpus is None else given_gpus(num_gpus, gpu_memory or 0.0)
        result = plan_placement(policy, prm, gpus)
    data = result.to_json()
    if as_json:
        print_json(data)
        return
    show(_gpu_table(data), _model_table(data))


def _gpu_table(data: dict[str, Any]) -> Any:
    from testtime.tables import column, table

    t = table("GPUs", caption="GB are GiB (2**30 bytes)")
    for header, numeric in (("GPU", True), ("total GB", True), ("planned GB", True),
                            ("runs", False)):
        column(t, header, numeric)
    for gpu in data["gpus"]:
        runs = []
        for role in ("policy", "prm"):
            share = data[role].get("planned_gb", {}).get(str(gpu["index"]))
            if share is not None:
                runs.append(f"{role} {share:.1f}")
        t.add_row(str(gpu["index"]), f"{gpu['total_gb']:.1f}", f"{gpu['planned_gb']:.1f}",
                  ", ".join(runs) or "-")
    return t


def _model_table(data: dict[str, Any]) -> Any:
    from testtime.tables import column, table

    t = table("Models")
    for header in ("role", "spec", "engine", "GPUs", "weights GB", "settings"):
        column(t, header, header == "weights GB")
    for role in ("policy", "prm"):
        m = data[role]
        keys = ("tensor_parallel_size", "gpu_memory_utilization", "max_model_len",
                "device_map", "max_memory", "kv_cache_gb")
        settings = ", ".join(f"{k}={m[k]}" for k in keys if m.get(k) is not None)
        t.add_row(role, m["spec"], m["engine"] or "no GPU",
                  ",".join(map(str, m["gpus"])) or "-", f"{m['weights_gb']:.1f}",
                  settings or "-")
    return t

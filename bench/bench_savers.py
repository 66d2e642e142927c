"""Issue 23's measurement: online DeepConf against offline DeepConf and majority voting, REBASE
against beam search and Best-of-N at equal generated tokens, and the compute-optimal table
re-run with both among the candidates, all through the CLI as a user runs them.

Runs (one policy, ``--prm`` scorer, seed 0, one dataset; every run resumable, skipped when done):

* ``full``: ``adaptive_sc --sc-threshold 1 --sc-round N`` at the largest N: every trace in full,
  seeded as online DeepConf's trace i (``request_seed(.., "sc", i)``), so the comparison is
  paired; majority and the offline DeepConf rules read budgets 16 and 32 from its prefixes.
* sweep ``search`` (``--methods``): online DeepConf-low (eta 10), Best-of-N, REBASE, beam
  search (M = 4) at each N of ``--ns``; ``testtime analyze`` over it and ``full`` gives
  the compute-optimal table. DeepConf's budgets W, 2W, ... (W = the warm-up) are exact
  prefixes of its largest-N run, which the DeepConf table reads.
* ``dc_high``: ``deepconf --deepconf-eta 90`` at the largest N (analysed apart: ``analyze``
  refuses to pool runs that differ in a search setting).

Then the markdown tables: accuracy with a 95 % percentile bootstrap over problems, generated
(completion) tokens per problem, and for the savers a paired bootstrap interval of the accuracy
difference against majority voting over the same traces.

    python bench/bench_savers.py --dataset math500 --limit 100 --policy hf:default --device cuda \\
        --max-batch-seqs 512 --out bench/.savers/math500
    python bench/bench_savers.py --tables-only --out bench/.savers/math500   # tables again
    # CPU smoke test of the script itself
    python bench/bench_savers.py --dataset demo --limit 2 --ns 4 --warmup 2 --out /tmp/savers
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from testtime.analysis.curves import bootstrap_ci
from testtime.records import ProblemRecord
from testtime.store import read_records

BOOT = 2000
OFFLINE = ("deepconf_lowest_10_wvote", "deepconf_lowest_90_wvote", "deepconf_tail_10_wvote")


def cli(args: Sequence[str], log: Path) -> None:
    """One ``testtime`` command, its output appended to ``log``; exits on failure."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    with log.open("a") as fh:
        fh.write("$ testtime " + " ".join(args) + "\n")
        fh.flush()
        rc = subprocess.run([sys.executable, "-m", "testtime.cli", *args], env=env, stdout=fh,
                            stderr=subprocess.STDOUT, check=False).returncode
    print(f"  {args[0]} {args[-1]}: rc {rc}, {time.perf_counter() - started:.0f} s", flush=True)
    if rc != 0:
        raise SystemExit(f"testtime {' '.join(args)} failed ({rc}); see {log}")


def run_all(a: argparse.Namespace) -> None:
    out, ns = a.out, [int(n) for n in a.ns.split(",")]
    top = max(ns)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    common = ["--dataset", a.dataset, "--limit", str(a.limit), "--policy", a.policy, "--prm",
              a.prm, "--seed", "0", "--concurrency", str(a.concurrency), "--no-progress",
              *(["--data-dir", a.data_dir] if a.data_dir else []),
              *(["--device", a.device] if a.device else []),
              *(["--max-batch-seqs", str(a.max_batch_seqs)] if a.max_batch_seqs else []),
              *[x for kv in a.engine_arg for x in ("--engine-arg", kv)]]
    dc = ["--deepconf-warmup", str(a.warmup), "--deepconf-window", str(a.window),
          "--deepconf-round", str(a.round)]
    full = ["--method", "adaptive_sc", "--sc-threshold", "1.0", "--sc-round", str(top)]
    high = ["--method", "deepconf", "--deepconf-eta", "90", *dc]
    steps = [("search", ["sweep", *sweep_args(common), "--methods", a.methods, "--ns", a.ns,
                         "--beam-width", "4", *dc]),
             ("full", ["run", *common, "--n", str(top), *full]),
             ("dc_high", ["run", *common, "--n", str(top), *high])][:3 if a.high else 2]
    for name, args in steps:
        d = out / name
        if args[0] == "run" and (d / "summary.json").exists():
            continue
        resume = ["--resume"] if args[0] == "run" and (d / "results.jsonl").exists() else []
        cli([*args, *resume, "--out", str(d)], log)
    # DeepConf-high differs from the sweep's DeepConf-low in one setting: not pooled with it
    cli(["analyze", str(out / "search"), str(out / "full"), "--out", str(out / "analysis")], log)


def sweep_args(common: list[str]) -> list[str]:
    """``run``'s options as ``sweep`` spells them (its grid axes are plural)."""
    out, it = [], iter(common)
    for opt in it:
        if opt in ("--policy", "--prm", "--seed"):
            out += [{"--policy": "--policies", "--prm": "--prms", "--seed": "--seeds"}[opt],
                    next(it)]
        elif opt == "--no-progress":
            out.append(opt)
        else:
            out += [opt, next(it)]
    return out


def row(recs: Sequence[ProblemRecord], budget: int, rule: str,
        base: np.ndarray | None = None) -> tuple[str, np.ndarray, float]:
    """Accuracy [CI] at ``budget`` by ``rule``, the tokens generated by then per problem."""
    acc = np.array([float(r.predictions[str(budget)][rule].correct) for r in recs])
    toks = []
    for r in recs:
        info = (r.info or {}).get("deepconf") or (r.info or {}).get("adaptive_sc") or {}
        used = min(int(info.get("drawn", budget)), budget)
        if r.method in ("beam_search", "rebase", "dvts") and budget == r.n:
            toks.append(r.compute.completion_tokens)
        else:
            toks.append(sum(c.completion_tokens for c in r.candidates[:used]))
    lo, hi = bootstrap_ci(acc, BOOT, seed=0)
    cell = f"{acc.mean():.3f} | [{lo:.2f}, {hi:.2f}]"
    if base is not None:
        dlo, dhi = bootstrap_ci(acc - base, BOOT, seed=0)
        cell += f" | [{dlo:+.2f}, {dhi:+.2f}]"
    return cell, acc, float(np.mean(toks))


def load(d: Path) -> list[ProblemRecord]:
    recs = [r for r in read_records(d / "results.jsonl") if r.error is None]
    return sorted(recs, key=lambda r: r.id)


def tables(a: argparse.Namespace) -> None:
    out, ns = a.out, [int(n) for n in a.ns.split(",")]
    budgets = [int(n) for n in a.budgets.split(",")] if a.budgets else ns
    low_dir = out / "search" / next(c["run_dir"] for c in json.loads(
        (out / "search" / "sweep.json").read_text())["cells"]
        if c["method"] == "deepconf" and c["n"] == max(ns))
    full, low = load(out / "full"), load(low_dir)
    high = load(out / "dc_high") if (out / "dc_high" / "results.jsonl").exists() else []
    ids = {r.id for r in full} & {r.id for r in low}
    ids &= {r.id for r in high} if high else ids
    full, low, high = ([r for r in x if r.id in ids] for x in (full, low, high))
    print(f"\n## DeepConf, {len(ids)} problems ({a.dataset}), seed 0\n")
    print("| budget | method | accuracy | 95 % CI | diff. vs majority, 95 % CI | "
          "generated tokens / problem |\n| --- | --- | --- | --- | --- | --- |")
    for b in (n for n in budgets if n >= a.warmup):
        maj_cell, maj, maj_tok = row(full, b, "majority")
        lines = [("online DeepConf-low (eta 10)", row(low, b, "deepconf", maj))]
        if high:
            lines.append(("online DeepConf-high (eta 90)", row(high, b, "deepconf", maj)))
        lines += [(f"full traces, offline `{rule}`", row(full, b, rule, maj)) for rule in OFFLINE]
        print(f"| {b} | full traces, majority | {maj_cell} | | {maj_tok:.1f} |")
        for label, (cell, _, tok) in lines:
            print(f"| {b} | {label} | {cell} | {tok:.1f} ({100 * (tok / maj_tok - 1):+.0f} %) |")
    for name, recs in [("DeepConf-low", low)] + ([("DeepConf-high", high)] if high else []):
        infos = [r.info["deepconf"] for r in recs]
        print(f"\n{name} at N = {max(ns)}: per problem {np.mean([i['drawn'] for i in infos]):.1f}"
              f" traces drawn, {np.mean([i['stopped'] for i in infos]):.1f} stopped, "
              f"{np.mean([i['voted'] for i in infos]):.1f} voted; "
              f"{sum(i['stop'] == 'consensus' for i in infos)} of {len(infos)} stopped on consensus")
    search_tables(a, ns)


def search_tables(a: argparse.Namespace, ns: list[int]) -> None:
    """REBASE, beam search and Best-of-N per rule: accuracy and generated tokens per N."""
    sweep = json.loads((a.out / "search" / "sweep.json").read_text())
    print("\n## REBASE, beam search, Best-of-N (PRM: " + a.prm + ")\n")
    print("| method | N | rule | accuracy | 95 % CI | generated tokens / problem |\n"
          "| --- | --- | --- | --- | --- | --- |")
    for cell in sweep["cells"]:
        if cell["method"] not in ("rebase", "beam_search", "best_of_n", "dvts"):
            continue
        results = a.out / "search" / cell["run_dir"] / "results.jsonl"
        recs = load(results.parent) if results.exists() else []
        if not recs:
            continue  # a cell that did not run (the time limit of a device call)
        b = int(cell.get("budget") or cell["n"])
        for rule in ("majority", "prm_last_max", "prm_min_vote"):
            text, _, tok = row(recs, b, rule)
            print(f"| {cell['method']} | {b} | {rule} | {text} | {tok:.1f} |"
                  + (f" ({len(recs)} problems)" if len(recs) != a.limit else ""))
    path = a.out / "analysis" / "optimal_table.json"
    if not path.exists():
        return
    table = json.loads(path.read_text())
    print("\n## Compute-optimal table (cross-validated)\n")
    print("| binning | bin | budget | problems | chosen | CV accuracy | majority |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    for e in (row for entry in table["entries"] for row in entry["rows"]):
        maj = e.get("majority_accuracy")
        print(f"| {e['scheme']} | {e['bin']} | {e['budget']} | {e['problems']}"
              f"{' (few)' if e.get('few_problems') else ''} | {e['label']} | "
              f"{e['cv_accuracy']:.3f} | {'' if maj is None else f'{maj:.3f}'} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="math500")
    p.add_argument("--data-dir", default=os.environ.get("TESTTIME_DATA_DIR"))
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--ns", default="4,16,32")
    p.add_argument("--policy", default="default")
    p.add_argument("--prm", default="self-certainty")
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--round", type=int, default=1,
                   help="DeepConf traces per problem between consensus checks (a GPU wants "
                        "several in flight; the paper: 1)")
    p.add_argument("--device")
    p.add_argument("--max-batch-seqs", type=int)
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--engine-arg", action="append", default=[])
    p.add_argument("--methods", default="deepconf,best_of_n,rebase,beam_search",
                   help="the sweep's methods (add dvts for the paper's third)")
    p.add_argument("--budgets", help="budgets of the DeepConf table (default: --ns)")
    p.add_argument("--no-high", dest="high", action="store_false",
                   help="skip the DeepConf-high run")
    p.add_argument("--tables-only", action="store_true")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    if not a.tables_only:
        run_all(a)
    tables(a)


if __name__ == "__main__":
    main()

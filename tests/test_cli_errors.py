"""Every user error ends in one clear line naming the option and value, and exit code 2: no
traceback, no pydantic dump, whatever the terminal width. Checked before any model loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from testtime.cli import app


def one_line_error(args: list[str], env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(app, args, env=env)
    out = result.output.strip()
    assert result.exit_code == 2, out
    assert "Traceback" not in out and "validation error" not in out.lower(), out
    assert len(out.splitlines()) == 1, out
    assert out.startswith("error: "), out
    return out


@pytest.mark.parametrize(("args", "expected"), [
    (["--policy", "hf:/nonexistent/model"],
     "--policy hf:/nonexistent/model: no such file or directory: /nonexistent/model"),
    (["--prm", "skywork:/nonexistent"],
     "--prm skywork:/nonexistent: no such file or directory: /nonexistent"),
    (["--policy", "hf:Qwen/Qwen2.5-1.5B-Instruct-not-cached"],
     ("--policy hf:Qwen/Qwen2.5-1.5B-Instruct-not-cached: Qwen/Qwen2.5-1.5B-Instruct-not-cached "
      "is not in the local Hugging Face cache and the Hub is offline (HF_HUB_OFFLINE=1)")),
    (["--prm", "qwen_prm:Qwen/Qwen2.5-Math-PRM-7B-not-cached"],
     "is not in the local Hugging Face cache and the Hub is offline"),
    (["--policy", "hf:not a repo id!"], "is neither an existing local path nor a valid"),
    (["--policy", "hf:/"], "--policy hf:/: / holds no config.json: not a Hugging Face model"),
    (["--policy", "gpt:x"], "--policy: invalid policy spec 'gpt:x'"),
    (["--prm", "nonsense"], "--prm nonsense: unknown scorer; use one of"),
    (["--method", "nope"], "--method: unknown method 'nope'; known:"),
    (["--prompt", "nope"], "--prompt nope: unknown prompt; known:"),
    (["--method", "beam_search", "--n", "6", "--beam-width", "4"],
     "--n=6 must be a multiple of --beam-width=4"),
    (["--temperature", "-1"], "--temperature must be >= 0, got -1.0"),
    (["--top-p", "0"], "--top-p must be in (0, 1], got 0.0"),
    (["--n", "0"], "--n must be >= 1, got 0"),
    (["--strategy", "optimal", "--budget", "4"], "--strategy optimal needs --table and --budget"),
    (["--budget", "4"], "--table, --budget and --compare apply with --strategy optimal"),
    (["--strategy", "best"], "--strategy best: expected fixed or optimal"),
    (["--ray-actors", "2"], "--ray-actors/--gpus-per-actor only apply with --ray"),
    (["--max-retries", "-1"], "--max-retries -1: must be >= 0"),
    (["--dataset", "/nonexistent/set.jsonl"], "/nonexistent/set.jsonl: file not found"),
])
def test_run_errors_are_one_line(args: list[str], expected: str, tmp_path: Path) -> None:
    out = one_line_error(["run", "--out", str(tmp_path / "run"), *args])
    assert expected in out
    assert not (tmp_path / "run").exists()  # nothing was written


def test_other_commands_fail_the_same_way(tmp_path: Path) -> None:
    assert "--params x: must be one of nominal, non_embedding, total, active" in one_line_error(
        ["flops", "--small", "Qwen2.5-1.5B", "--large", "Qwen2.5-72B", "--params", "x"])
    assert "unknown model 'Nope-1B'" in one_line_error(
        ["flops", "--small", "Nope-1B", "--large", "Qwen2.5-72B"])
    assert "--ns 4,x: takes comma-separated integers" in one_line_error(
        ["sweep", "--ns", "4,x", "--out", str(tmp_path / "sw")])
    assert "--prm nonsense: unknown scorer" in one_line_error(
        ["serve", "prm", "--prm", "nonsense", "--port", "0"])


def test_errors_stay_one_line_with_a_long_path_in_a_narrow_console(tmp_path: Path) -> None:
    # A path far wider than any console: rich would wrap it (and a test asserting on the
    # text would then depend on the terminal width).
    deep = tmp_path.joinpath(*["a-rather-long-directory-name"] * 8) / "nothing"
    for columns in ("40", "80", "300"):
        out = one_line_error(["analyze", str(deep)], env={"COLUMNS": columns})
        assert f"{deep}: not a run directory" in out


def test_tables_never_elide_a_number() -> None:
    args = ["flops", "--small", "Qwen2.5-1.5B", "--n", "64", "--large", "Llama-3.1-405B",
            "--prm", "Skywork-PRM-1.5B", "--pretrain"]
    for columns in ("80", "200"):
        r = CliRunner().invoke(app, args, env={"COLUMNS": columns})
        assert r.exit_code == 0, r.output
        assert "…" not in r.output
        for cell in ("Qwen2.5-1.5B + best_of_n (N=64) + Skywork-PRM-1.5B", "Llama-3.1-405B CoT",
                     "405.00B", "41,600", "2.496e+14", "1.620e+23", "3.645e+25", "5.265e+14"):
            assert cell in r.output, (columns, cell, r.output)
    r = CliRunner().invoke(app, [*args, "--json"])
    data = __import__("json").loads(r.output)
    assert [f"{s['inference_flops']:.3e}" for s in data] == ["2.496e+14", "5.265e+14"]

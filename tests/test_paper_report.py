"""``testtime report`` over a paper-shaped sweep (two policies, two PRMs, MATH-500 and AIME24
named problem sets): the "Against the paper" section has every table layout and figure."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from paper_sweep import make_paper_sweep
from typer.testing import CliRunner

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PAPER_FIGURES = ("paper_size_math500.png", "paper_size_aime24.png", "paper_flops.png",
                 "paper_methods_math500.png", "paper_methods_aime24.png",
                 "paper_optimal_math500.png", "paper_optimal_aime24.png")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from testtime.cli import app

    root = tmp_path_factory.mktemp("paper_report")
    sweeps = make_paper_sweep(root)
    r = CliRunner().invoke(app, ["report", *map(str, sweeps), "--out", str(root / "rep"),
                                 "--boot", "100", "--trees", "1"])
    assert r.exit_code == 0, r.output
    return root / "rep"


def test_every_paper_figure_is_written_and_inlined(report: Path) -> None:
    page = (report / "index.html").read_text()
    for name in PAPER_FIGURES:
        data = (report / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name
        assert f'alt="{name}"' in page
    inlined = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert all(base64.b64decode(x).startswith(PNG_MAGIC) for x in inlined)
    # paper figures + per (policy, PRM, dataset) pair (4 on MATH-500, 1 on AIME24): accuracy
    # against generations, FLOPs and two token axes, and by difficulty
    assert len(inlined) == len(PAPER_FIGURES) + 5 * 5


def test_tables_sit_beside_the_papers_values(report: Path) -> None:
    page = (report / "index.html").read_text()
    for title in ("Table 5 layout (MATH-500)", "Table 5 layout (AIME24)", "Table 3 layout",
                  "Table 2 layout", "Table 4 layout"):
        assert title in page
    assert page.count('class="paper"') == 5  # Table 5 x 2 datasets, Tables 3, 2, 4
    # a paper-only row: no value of yours, the paper's 83.8 for Qwen2.5-72B CoT
    row = re.search(r"<tr><td class=\"l\">Qwen2.5-72B</td>(.*?)</tr>", page)
    assert row is not None and "<td>-</td>" in row.group(1) and "83.8" in row.group(1)
    # your cells: value [CI] with N and problem count (not the paper's setting), and a diff
    assert re.search(r"\d+\.\d \[\d+\.\d, \d+\.\d\] \(N=4, 8 problems\)", page)
    assert re.search(r"<td>[+-]\d+\.\d</td>", page)
    assert "compute-optimal choices: Qwen2.5-1.5B:" in page
    assert "N=256" in page  # the assumption is stated
    assert "hf:Qwen/Qwen2.5-1.5B-Instruct + skywork:" in page  # per-pair sections stay


def test_no_comparison_when_nothing_matches_the_paper(tmp_path: Path) -> None:
    from test_analysis_sweep import make_sweep

    from testtime.analysis.analyze import analyze
    from testtime.analysis.report import write_report

    page = write_report(analyze([make_sweep(tmp_path)], n_boot=50), tmp_path / "rep").read_text()
    assert "nothing to compare" in page and "paper_size" not in page

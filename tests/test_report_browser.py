"""The HTML report opened in headless Chromium: the DOM has the tables, plots and trees, and
the screenshot shows the rendered plots (the compute-optimal curve's red pixels).

Needs Debian's ``chromium`` (``apt-get install -y chromium``); skipped when it is absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_analysis_sweep import make_sweep

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
#: Flags for a headless run as root in a container without a GPU or a session bus.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--hide-scrollbars", "--no-first-run", "--allow-file-access-from-files")
TIMEOUT_S = 120


def chromium(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home)}  # its profile goes to a temp dir
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={home / 'profile'}", *args],
                          capture_output=True, text=True, timeout=TIMEOUT_S, env=env,
                          check=False)


def test_report_renders_in_chromium(tmp_path: Path) -> None:
    from testtime.analysis.analyze import analyze
    from testtime.analysis.report import write_report

    page = write_report(analyze([make_sweep(tmp_path)], n_boot=100), tmp_path / "report")
    url = page.resolve().as_uri()

    dom = chromium("--dump-dom", url, home=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    # accuracy against generations, policy tokens and prefill tokens, and by difficulty bin
    # (the fixture's fake models have no FLOPs, so no FLOPs plot)
    assert html.count("<img") == 4 and html.count('src="data:image/png;base64,') == 4
    assert html.count("<table") >= 5  # runs, three compute-optimal tables, gains
    assert 'class="optimal"' in html and 'class="gains"' in html
    assert "Compute-optimal strategy (absolute bins, two-fold CV)" in html
    assert html.count('class="search-tree"') == 3

    shot = tmp_path / "shot.png"
    run = chromium(f"--screenshot={shot}", "--window-size=1200,1600", url, home=tmp_path)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)[..., :3]
    assert img.shape[0] == 1600 and img.shape[1] == 1200
    white = (img > 0.97).all(axis=-1)
    assert white.mean() < 0.95, "the screenshot is blank"
    # the compute-optimal curve is drawn in red: the plot image was decoded and painted
    red = (img[..., 0] > 0.75) & (img[..., 1] < 0.3) & (img[..., 2] < 0.3)
    assert red.sum() > 200
    assert len(np.unique((img * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50

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


#: Counts each image that failed to decode (``naturalWidth`` 0) once the page has loaded.
BROKEN_PROBE = ("<script>addEventListener('load', () => {const imgs = [...document.images];"
                "document.body.dataset.images = imgs.length;"
                "document.body.dataset.broken = imgs.filter(i => !(i.complete && "
                "i.naturalWidth > 0)).map(i => i.alt).join(',') || 'none';});</script>")


def test_paper_figures_render_in_chromium(tmp_path: Path) -> None:
    import re

    from paper_sweep import make_paper_sweep

    from testtime.analysis.analyze import analyze
    from testtime.analysis.report import write_report

    page = write_report(analyze(make_paper_sweep(tmp_path), n_boot=50), tmp_path / "report",
                        trees=0)
    html = page.read_text()
    paper_imgs = re.findall(r'<img src="data:image/png;base64,[^"]+" alt="paper_[^"]+">', html)
    names = sorted(re.search(r'alt="([^"]+)"', t).group(1) for t in paper_imgs)  # type: ignore[union-attr]
    assert names == sorted(["paper_size_math500.png", "paper_size_aime24.png",
                            "paper_flops.png", "paper_methods_math500.png",
                            "paper_methods_aime24.png", "paper_optimal_math500.png",
                            "paper_optimal_aime24.png"])

    # The whole page in the browser: every image decodes (none broken).
    probe = tmp_path / "report" / "probe.html"
    probe.write_text(html.replace("</body>", BROKEN_PROBE + "</body>"))
    dom = chromium("--dump-dom", "--virtual-time-budget=10000", probe.resolve().as_uri(),
                   home=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    n_imgs = html.count("<img ")
    assert f'data-images="{n_imgs}"' in dom.stdout and 'data-broken="none"' in dom.stdout
    assert "Table 5 layout (MATH-500)" in dom.stdout and 'class="paper"' in dom.stdout

    # The paper figures alone, screenshotted: painted, with the TTS (red) and CoT (blue) marks.
    figs = tmp_path / "report" / "figures.html"
    figs.write_text("<!DOCTYPE html><html><body style='margin:0'>"
                    + "".join(t.replace("<img ", "<img style='display:block;width:1100px' ")
                              for t in paper_imgs) + "</body></html>")
    shot = tmp_path / "figures.png"
    run = chromium(f"--screenshot={shot}", "--window-size=1100,3200", figs.resolve().as_uri(),
                   home=tmp_path)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    if keep := os.environ.get("TESTTIME_KEEP_SCREENSHOT"):  # for looking at it by eye
        shutil.copy(shot, keep)
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)[..., :3]
    assert (img > 0.97).all(axis=-1).mean() < 0.97, "the screenshot is blank"
    red = (img[..., 0] > 0.7) & (img[..., 1] < 0.3) & (img[..., 2] < 0.3)
    blue = (img[..., 2] > 0.55) & (img[..., 0] < 0.3) & (img[..., 1] < 0.6)
    assert red.sum() > 500 and blue.sum() > 500

"""The set-up commands and the native build: what CI and a new user run must stay one thing.

* The README's test command is what ``.ci/run`` runs, verbatim.
* llama.cpp is built with the portable flags of ``.ci/llamacpp-cmake-args``: a native build on a
  CPU that reports AMX inside a VM that does not enable AMX state died with SIGILL in the
  quantised matmul kernels, so the build in use must not enable AMX (nor AVX-512, which this
  class of machine does not all have).
* A native crash fails only the test it happens in (pytest-xdist replaces the crashed worker):
  shown on a throwaway test file whose first test kills its own process with SIGILL.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    setup = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    commands = [b.strip() for b in _bash_blocks(setup)]
    assert len(commands) == 2, "the README's Set-up section has exactly two commands"
    main, tests = commands
    assert main.endswith("testtime run") and tests.endswith("pytest -q")
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == tests, "the last line of .ci/run must be the README's test command"
    flags = '"$(cat .ci/llamacpp-cmake-args)"'
    assert f"CMAKE_ARGS={flags}" in main and f"CMAKE_ARGS={flags}" in tests


def test_llamacpp_flags_are_portable() -> None:
    args = (REPO / ".ci" / "llamacpp-cmake-args").read_text().split()
    assert "-DGGML_NATIVE=OFF" in args
    for feature in ("AVX512", "AMX_TILE", "AMX_INT8", "AMX_BF16"):
        assert f"-DGGML_{feature}=OFF" in args


def test_llamacpp_build_in_use_has_no_amx() -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    info = llama_cpp.llama_print_system_info().decode()
    enabled = {m.group(1) for m in re.finditer(r"(\w+) = 1", info)}
    assert "AVX2" in enabled, info  # the portable build still has the fast x86 kernels
    bad = {f for f in enabled if f.startswith(("AMX", "AVX512"))}
    assert not bad, (
        f"this llama-cpp-python was built with {sorted(bad)} ({info.strip()}); reinstall it with "
        f'CMAKE_ARGS="$(cat .ci/llamacpp-cmake-args)" pip install --no-cache-dir --force-reinstall '
        f"--no-deps llama-cpp-python"
    )


def test_a_native_crash_fails_only_its_own_test(tmp_path: Path) -> None:
    pytest.importorskip("xdist")
    (tmp_path / "test_crashes.py").write_text(textwrap.dedent(f"""
        import os, signal

        def test_dies_like_a_bad_kernel():
            os.kill(os.getpid(), {int(signal.SIGILL)})

        def test_still_runs():
            assert 1 + 1 == 2
    """))
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "1",
         "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path, check=False,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert re.search(r"\b1 failed, 1 passed\b", text), text
    assert "crashed" in text and "test_dies_like_a_bad_kernel" in text, text

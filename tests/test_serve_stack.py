"""``testtime serve stack``: command construction, the supervisor (fake servers), the CLI.

Fast tests drive the supervisor and the whole ``serve stack`` command with small Python
scripts as servers: one that answers the probes and starts a grandchild in its process group
(as ``vllm serve`` starts its engine core), one that ignores SIGTERM, one that dies at start.
They check that every process of every group is gone after a stop. The slow test starts the
real stack once (vLLM's CPU build with the embedded SmolLM2, ``testtime serve prm`` with a tiny
random PRM), runs ``testtime run`` with the printed line, and stops it with SIGTERM.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from testtime.scoring.service.vllm_recipes import engine_flags, serve_argv, vllm_launcher
from testtime.stack import (
    ServerFailed,
    ServerSpec,
    Supervisor,
    build_stack,
    group_members,
    plan_options,
)
from testtime.stack.servers import free_port, gpu_env, prm_server, vllm_server

REPO = Path(__file__).resolve().parents[1]

#: A fake server: answers GET on every path with 200 once ``DELAY`` seconds passed, starts a
#: grandchild (``sleep``) in its process group and writes both PIDs to ``PIDFILE``. Modes:
#: ``stubborn`` ignores SIGTERM (its grandchild too); ``crash`` prints and exits 3 at once.
FAKE_SERVER = r'''
import http.server, json, os, signal, subprocess, sys, time
port, mode, pidfile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
delay = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
if mode == "crash":
    print("loading the model", flush=True)
    print("RuntimeError: CUDA out of memory (fake)", flush=True)
    sys.exit(3)
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen(["sleep", "300"])  # the engine core, in our group
with open(pidfile, "w") as f:
    json.dump([os.getpid(), grandchild.pid], f)
time.sleep(delay)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"data": [{"id": "m", "max_model_len": 64}]}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a):
        pass
print("serving", flush=True)
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
'''

#: A fake ``vllm`` executable for the CLI: ``vllm serve MODEL ... --port P`` runs FAKE_SERVER
#: (its arguments are logged, so the test sees the flags ``serve stack`` gave).
FAKE_VLLM = r'''#!{python}
import os, sys
args = sys.argv[1:]
print("argv:", " ".join(args), flush=True)
print("CUDA_VISIBLE_DEVICES=" + os.environ.get("CUDA_VISIBLE_DEVICES", ""),
      "VLLM_CPU_KVCACHE_SPACE=" + os.environ.get("VLLM_CPU_KVCACHE_SPACE", ""), flush=True)
assert args[0] == "serve", args
if not os.path.isdir(args[1]):
    print(f"OSError: {{args[1]}} is not a model directory", flush=True)
    sys.exit(1)
port = args[args.index("--port") + 1]
os.execv(sys.executable, [sys.executable, "{server}", port, os.environ.get("FAKE_MODE", "ok"),
                          "{piddir}/" + port + ".pids", os.environ.get("FAKE_DELAY", "0")])
'''


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live (non-zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rfind(")") + 2] != "Z"


def fake_spec(tmp_path: Path, name: str, mode: str = "ok", delay: float = 0.0) -> ServerSpec:
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    return ServerSpec(name, (sys.executable, str(script), str(port), mode,
                             str(tmp_path / f"{name}.pids"), str(delay)),
                      (f"{url}/health", f"{url}/v1/models"), url)


def pids_of(tmp_path: Path, name: str) -> list[int]:
    return list(json.loads((tmp_path / f"{name}.pids").read_text()))


# ---------------------------------------------------------------- command construction


def test_engine_flags_spell_each_setting_once() -> None:
    flags = engine_flags({"tensor_parallel_size": 2, "gpu_memory_utilization": 0.88,
                          "max_model_len": 8192, "dtype": "bfloat16", "max_batch_seqs": 64,
                          "trust_remote_code": True, "enable_prefix_caching": False,
                          "hf_overrides": {"a": 1}, "seed": None})
    assert flags == ["--tensor-parallel-size", "2", "--gpu-memory-utilization", "0.88",
                     "--max-model-len", "8192", "--dtype", "bfloat16", "--max-num-seqs", "64",
                     "--trust-remote-code", "--no-enable-prefix-caching",
                     "--hf-overrides", '{"a": 1}']
    with pytest.raises(ValueError, match="gpus"):
        engine_flags({"gpus": (0,)})  # placement, not a flag: never passed through silently
    assert serve_argv("M", port=9, settings={"max_model_len": 64},
                      launcher=vllm_launcher("/v/bin/python"))[:6] == \
        ["/v/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", "M",
         "--max-model-len"]
    assert vllm_launcher("/v/bin/vllm") == ["/v/bin/vllm", "serve"]


def test_policy_server_on_gpus_and_on_the_cpu() -> None:
    gpu = vllm_server("policy", "Qwen/Qwen2.5-72B-Instruct",
                      {"gpus": (2, 3), "tensor_parallel_size": 2,
                       "gpu_memory_utilization": 0.88, "max_model_len": 8192},
                      host="127.0.0.1", port=8000, on_cpu=False)
    argv = list(gpu.argv)
    assert argv[:3] == ["vllm", "serve", "Qwen/Qwen2.5-72B-Instruct"]
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.88"
    assert argv[argv.index("--max-model-len") + 1] == "8192"
    assert argv[-4:] == ["--host", "127.0.0.1", "--port", "8000"]
    assert gpu.env == {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert gpu.probes == ("http://127.0.0.1:8000/health", "http://127.0.0.1:8000/v1/models")
    assert gpu.url == "http://127.0.0.1:8000/v1"
    cpu = vllm_server("policy", "/m", {"dtype": "float32"}, host="127.0.0.1", port=8000,
                      on_cpu=True, cpu_kv_cache_gib=1)
    assert "--enforce-eager" in cpu.argv and cpu.argv[cpu.argv.index("--dtype") + 1] == \
        "float32"
    assert cpu.argv[cpu.argv.index("--block-size") + 1] == "32"
    assert cpu.env == {"VLLM_CPU_KVCACHE_SPACE": "1"}
    with pytest.raises(ValueError, match="device_map"):
        vllm_server("policy", "/m", {"device_map": "auto"}, host="h", port=1, on_cpu=False)
    with pytest.raises(ValueError, match="CPU build, which takes no .'gpu_memory_utilization'"):
        vllm_server("policy", "/m", {"gpu_memory_utilization": 0.9}, host="h", port=1,
                    on_cpu=True)


def test_prm_server_renumbers_devices_under_cuda_visible_devices() -> None:
    spec = prm_server("qwen_prm:/prm", {
        "gpus": (2, 3), "device": "cuda:2", "device_map": "auto",
        "max_memory": {"cuda:2": 30.0, "cuda:3": 30.0, "cpu": 60.0}, "dtype": "bfloat16",
        "kv_cache_gb": 8.0, "trust_remote_code": True, "attn_implementation": "sdpa"},
        host="127.0.0.1", port=8001)
    argv = list(spec.argv)
    assert argv[:5] == [sys.executable, "-m", "testtime.cli", "serve", "prm"]

    def value(flag: str) -> str:
        return argv[argv.index(flag) + 1]

    assert value("--prm") == "qwen_prm:/prm" and value("--port") == "8001"
    assert value("--gpus") == "0,1" and value("--device") == "cuda:0"
    assert value("--max-memory") == "cuda:0=30,cuda:1=30,cpu=60"
    assert value("--device-map") == "auto" and value("--kv-cache-gb") == "8.0"
    assert value("--prm-arg") == 'attn_implementation="sdpa"' and "--trust-remote-code" in argv
    assert spec.env == {"CUDA_VISIBLE_DEVICES": "2,3"} and spec.url == "http://127.0.0.1:8001"
    _, opts = gpu_env({"gpus": (1,), "device_map": {"model.embed": 1, "lm_head": "cpu"}})
    assert opts["device_map"] == {"model.embed": 0, "lm_head": "cpu"}
    with pytest.raises(ValueError, match="cuda:0 is not among"):
        gpu_env({"gpus": (1,), "device": "cuda:0"})


def test_build_stack_prints_the_run_line(tmp_path: Path) -> None:
    from test_prm_support import build_qwen_prm

    prm = build_qwen_prm(tmp_path / "prm")
    model = tmp_path / "policy"
    model.mkdir()
    (model / "config.json").write_text("{}")
    servers = build_stack(str(model), f"qwen_prm:{prm}", {"max_model_len": 512},
                          {"device": "cpu"}, on_cpu=True, policy_port=0, prm_port=0)
    policy_port = servers.policy.argv[servers.policy.argv.index("--port") + 1]
    prm_port = servers.prm.argv[servers.prm.argv.index("--port") + 1]
    assert policy_port != "0" and prm_port != "0"
    assert shlex.split(servers.run_line) == [
        "testtime", "run", "--policy", f"openai:{model}@http://127.0.0.1:{policy_port}/v1",
        "--prm", f"http://127.0.0.1:{prm_port}"]
    for bad, match in (("confidence", "needs no PRM server"),
                       (f"qwen_prm:{tmp_path}/missing", "no such file")):
        with pytest.raises(ValueError, match=match):
            build_stack(str(model), bad, {}, {}, on_cpu=True)
    with pytest.raises(ValueError, match="vLLM"):
        build_stack(f"hf:{model}", f"qwen_prm:{prm}", {}, {}, on_cpu=True)


def test_plan_options_place_both_servers_on_one_gpu() -> None:
    configs = REPO / "tests" / "data" / "configs"
    policy = configs / "Qwen2.5-7B-Instruct"
    prm = configs / "Qwen2.5-Math-PRM-7B"
    if not (policy / "config.json").exists() or not (prm / "config.json").exists():
        pytest.skip(f"no real config shapes in {configs}")
    pol, rm, on_cpu = plan_options(str(policy), f"qwen_prm:{prm}", {}, {}, num_gpus=1,
                                   gpu_memory=80)
    assert not on_cpu and pol["gpus"] == (0,) and rm["gpus"] == (0,)
    assert 0 < pol["gpu_memory_utilization"] <= 0.88 and pol["max_model_len"] == 8192
    spec = vllm_server("policy", str(policy), pol, host="127.0.0.1", port=8000, on_cpu=False)
    assert spec.argv[spec.argv.index("--gpu-memory-utilization") + 1] == \
        str(pol["gpu_memory_utilization"])
    _, vllm_rm, _ = plan_options(str(policy), f"qwen_prm:{prm}", {}, {}, num_gpus=1,
                                 gpu_memory=80, prm_engine="vllm")
    assert vllm_rm["gpus"] == (0,) and \
        pol["gpu_memory_utilization"] + vllm_rm["gpu_memory_utilization"] <= 1
    assert plan_options("/m", "qwen_prm:/p", {}, {}) == ({}, {}, True)  # no GPU here


# ---------------------------------------------------------------- the supervisor


def test_supervisor_stops_servers_and_their_children(tmp_path: Path) -> None:
    specs = [fake_spec(tmp_path, "policy"), fake_spec(tmp_path, "prm", delay=0.5)]
    with Supervisor(specs, tmp_path / "logs", grace_s=10, poll_s=0.1) as sup:
        sup.start()
        assert sup.wait_ready(30)
        pids = pids_of(tmp_path, "policy") + pids_of(tmp_path, "prm")
        assert all(alive(p) for p in pids)
        assert sorted(group_members(sup.pids["policy"])) == sorted(pids_of(tmp_path, "policy"))
        stop = threading.Event()
        threading.Timer(0.3, stop.set).start()
        sup.watch(stop)
    assert not any(alive(p) for p in pids)
    assert "serving" in (tmp_path / "logs" / "prm.log").read_text()


def test_a_server_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    sup = Supervisor([fake_spec(tmp_path, "stubborn", mode="stubborn")], tmp_path, grace_s=1,
                     poll_s=0.1)
    sup.start()
    assert sup.wait_ready(30)
    pids = pids_of(tmp_path, "stubborn")
    started = time.monotonic()
    sup.stop()
    assert 1 <= time.monotonic() - started < 8
    assert not any(alive(p) for p in pids)


def test_a_server_that_dies_at_start_is_reported_and_the_other_stopped(tmp_path: Path) -> None:
    specs = [fake_spec(tmp_path, "policy", delay=60), fake_spec(tmp_path, "prm", mode="crash")]
    with pytest.raises(ServerFailed) as info, \
            Supervisor(specs, tmp_path / "logs", grace_s=5, poll_s=0.1) as sup:
        sup.start()
        sup.wait_ready(30)
    assert info.value.name == "prm" and "exited with code 3" in info.value.reason
    assert "CUDA out of memory (fake)" in info.value.tail
    assert "loading the model" in str(info.value)
    assert not any(alive(p) for p in pids_of(tmp_path, "policy"))


def test_a_server_that_never_answers_times_out(tmp_path: Path) -> None:
    with pytest.raises(ServerFailed, match="did not answer .* within 1 s"), \
            Supervisor([fake_spec(tmp_path, "slow", delay=60)], tmp_path, grace_s=5,
                       poll_s=0.1) as sup:
        sup.start()
        sup.wait_ready(1)
    assert not any(alive(p) for p in pids_of(tmp_path, "slow"))


def test_a_server_that_dies_while_serving_ends_the_watch(tmp_path: Path) -> None:
    with Supervisor([fake_spec(tmp_path, "policy")], tmp_path, grace_s=5, poll_s=0.1) as sup:
        sup.start()
        assert sup.wait_ready(30)
        os.kill(sup.pids["policy"], signal.SIGKILL)
        with pytest.raises(ServerFailed, match="exited with code -9"):
            sup.watch(threading.Event())
    # its grandchild (still in the group) was stopped too
    assert not any(alive(p) for p in pids_of(tmp_path, "policy"))


# ---------------------------------------------------------------- the CLI


def _lines(stream: Any, out: queue.Queue[str]) -> None:
    for line in stream:
        out.put(line)


def _start_cli(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str],
                                                             queue.Queue[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "testtime.cli", "serve", "stack", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=REPO)
    out: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, out), daemon=True).start()
    return proc, out


def _run_line(proc: subprocess.Popen[str], out: queue.Queue[str], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            line = out.get(timeout=1)
        except queue.Empty:
            line = ""
        if line.startswith("testtime run"):
            return line.strip()
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no run line (exit {proc.returncode}):\n{proc.stderr.read()[-4000:]}")


@pytest.fixture
def tiny_prm(tmp_path: Path) -> Path:
    from test_prm_support import build_qwen_prm

    return build_qwen_prm(tmp_path / "tiny_prm")


def _fake_vllm(tmp_path: Path) -> tuple[Path, Path]:
    server = tmp_path / "fake_server.py"
    server.write_text(FAKE_SERVER)
    vllm = tmp_path / "vllm"
    vllm.write_text(FAKE_VLLM.format(python=sys.executable, server=server, piddir=tmp_path))
    vllm.chmod(0o755)
    model = tmp_path / "policy"
    model.mkdir()
    (model / "config.json").write_text("{}")
    return vllm, model


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "TESTTIME_PRM_API_KEY": ""}


def test_cli_serves_both_and_ctrl_c_stops_both(tmp_path: Path, tiny_prm: Path) -> None:
    # Both servers fake `vllm serve` (the PRM on the pooling runner): this test is about the
    # command's flags, its run line and its signals; the slow test runs `serve prm` for real.
    vllm, model = _fake_vllm(tmp_path)
    logs = tmp_path / "logs"
    proc, out = _start_cli(["--policy", str(model), "--prm", f"qwen_prm:{tiny_prm}",
                            "--prm-engine", "vllm", "--vllm", str(vllm),
                            "--policy-port", "0", "--prm-port", "0", "--max-model-len", "512",
                            "--engine-arg", "max_num_batched_tokens=512",
                            "--cpu-kv-cache-gb", "1", "--log-dir", str(logs)], _env())
    line = _run_line(proc, out, 90)
    argv = shlex.split(line)
    policy_url = argv[argv.index("--policy") + 1].split("@", 1)[1]
    prm_spec = argv[argv.index("--prm") + 1]
    assert argv[argv.index("--policy") + 1] == f"openai:{model}@{policy_url}"
    assert prm_spec.startswith(f"vllm-pooling:qwen_prm:{tiny_prm}@http://127.0.0.1:")
    prm_url = prm_spec.rsplit("@", 1)[1]
    import httpx

    assert httpx.get(f"{prm_url}/health", timeout=5).status_code == 200
    assert httpx.get(f"{policy_url}/models", timeout=5).status_code == 200
    policy_log, prm_log = (logs / "policy.log").read_text(), (logs / "prm.log").read_text()
    assert "--max-model-len 512" in policy_log and "--max-num-batched-tokens 512" in policy_log
    assert "--enforce-eager" in policy_log and "VLLM_CPU_KVCACHE_SPACE=1" in policy_log
    assert "--runner pooling" in prm_log and "--max-model-len" not in prm_log
    pids = [p for url in (policy_url, prm_url)
            for p in pids_of(tmp_path, url.split(":")[-1].split("/")[0])]
    assert len(pids) == 4 and all(alive(p) for p in pids)  # two servers, two grandchildren
    proc.send_signal(signal.SIGINT)  # Ctrl-C (the slow test sends SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not any(alive(p) for p in pids)
    assert "stopped both servers" in proc.stderr.read()


def _pid_of_port(url: str) -> int:
    """The PID listening on ``url``'s port (from /proc/net/tcp and the fds)."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":  # LISTEN
            inodes.add(fields[9])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return int(pid)
    raise AssertionError(f"nothing listens on {port}")


def test_cli_reports_a_server_that_dies_at_start(tmp_path: Path, tiny_prm: Path) -> None:
    vllm, model = _fake_vllm(tmp_path)
    logs = tmp_path / "logs"
    env = {**_env(), "FAKE_MODE": "crash"}
    proc = subprocess.run([sys.executable, "-m", "testtime.cli", "serve", "stack",
                           "--policy", str(model), "--prm", f"qwen_prm:{tiny_prm}",
                           "--vllm", str(vllm), "--policy-port", "0", "--prm-port", "0",
                           "--log-dir", str(logs)], check=False, capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "policy server exited with code 3" in proc.stderr
    assert "CUDA out of memory (fake)" in proc.stderr  # the log's tail
    assert "testtime run" not in proc.stdout


def test_cli_user_errors_are_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from testtime.cli import app

    r = CliRunner().invoke(app, ["serve", "stack", "--policy", str(tmp_path / "nope"),
                                 "--prm", "confidence"])
    assert r.exit_code == 2 and "needs no PRM server" in " ".join(r.output.split())
    r = CliRunner().invoke(app, ["serve", "stack", "--policy", str(tmp_path / "nope"),
                                 "--prm", f"qwen_prm:{tmp_path}", "--num-gpus", "2"])
    assert r.exit_code == 2 and "--num-gpus and --gpu-memory together" in \
        " ".join(r.output.split())


# ---------------------------------------------------------------- serve prm / vllm-prm


def test_serve_prm_takes_the_engine_and_placement_settings(tmp_path: Path,
                                                           monkeypatch: Any) -> None:
    from typer.testing import CliRunner

    from testtime.cli import app
    from testtime.scoring import registry

    seen: dict[str, Any] = {}

    def capture(spec: str, options: dict[str, Any]) -> Any:
        seen.update(options)
        raise ValueError("captured")

    monkeypatch.setattr(registry, "build_scorer", capture)
    (tmp_path / "config.json").write_text("{}")
    r = CliRunner().invoke(app, [
        "serve", "prm", "--prm", f"qwen_prm:{tmp_path}", "--port", "0", "--device", "cuda:0",
        "--dtype", "bfloat16", "--gpus", "0,1", "--device-map", "auto",
        "--max-memory", "0=30,cuda:1=30,cpu=60", "--trust-remote-code",
        "--prm-arg", "max_batch_tokens=4096"])
    assert r.exit_code == 2 and "captured" in r.output
    assert seen == {"device": "cuda:0", "dtype": "bfloat16", "gpus": (0, 1),
                    "device_map": "auto",
                    "max_memory": {"cuda:0": 30.0, "cuda:1": 30.0, "cpu": 60.0},
                    "trust_remote_code": True, "max_batch_tokens": 4096}
    r = CliRunner().invoke(app, ["serve", "prm", "--prm", f"qwen_prm:{tmp_path}",
                                 "--port", "0", "--prm-arg", "dtype=float32",
                                 "--dtype", "bfloat16"])
    assert r.exit_code == 2 and "dtype is also set by its own option" in r.output


def test_serve_prm_refuses_an_unknown_setting_naming_the_valid_ones(tiny_prm: Path) -> None:
    from typer.testing import CliRunner

    from testtime.cli import app

    r = CliRunner().invoke(app, ["serve", "prm", "--prm", f"qwen_prm:{tiny_prm}", "--port",
                                 "0", "--device", "cpu", "--prm-arg", "no_such_knob=1"])
    out = " ".join(r.output.split())
    assert r.exit_code == 2 and "no_such_knob" in out and "kv_cache_gb" in out


def test_vllm_prm_prints_placement_and_engine_flags(tiny_prm: Path) -> None:
    from typer.testing import CliRunner

    from testtime.cli import app

    r = CliRunner().invoke(app, ["serve", "vllm-prm", "--prm", f"qwen_prm:{tiny_prm}",
                                 "--port", "8123", "--gpus", "2,3",
                                 "--tensor-parallel-size", "2",
                                 "--gpu-memory-utilization", "0.3", "--max-model-len", "4096",
                                 "--dtype", "bfloat16", "--engine-arg", "enforce_eager=true"])
    assert r.exit_code == 0, r.output
    command = r.stdout.splitlines()[0]
    argv = shlex.split(command)
    assert argv[0] == "CUDA_VISIBLE_DEVICES=2,3" and argv[1:4] == ["vllm", "serve",
                                                                    str(tiny_prm)]
    for flag, value in (("--tensor-parallel-size", "2"), ("--gpu-memory-utilization", "0.3"),
                        ("--max-model-len", "4096"), ("--dtype", "bfloat16"),
                        ("--runner", "pooling")):
        assert argv[argv.index(flag) + 1] == value
    assert "--enforce-eager" in argv and argv[-2:] == ["--port", "8123"]


# ---------------------------------------------------------------- the real stack (slow)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_real_stack_serves_a_run_and_stops_on_sigterm(tmp_path: Path, tiny_prm: Path) -> None:
    from vllm_support import vllm_env, vllm_python

    from testtime.store import read_records

    python = vllm_python()
    env = {**vllm_env(tmp_path), "PYTHONPATH": str(REPO / "src"), "TESTTIME_PRM_API_KEY": ""}
    logs = tmp_path / "logs"
    started = time.monotonic()
    proc, out = _start_cli(["--policy", "default", "--prm", f"qwen_prm:{tiny_prm}",
                            "--vllm", str(python), "--policy-port", "0", "--prm-port", "0",
                            "--dtype", "float32", "--max-model-len", "2048",
                            "--cpu-kv-cache-gb", "1", "--prm-device", "cpu",
                            "--log-dir", str(logs), "--start-timeout", "600"], env)
    try:
        line = _run_line(proc, out, 660)
        ready_s = time.monotonic() - started
        argv = shlex.split(line)
        run = subprocess.run([sys.executable, "-m", "testtime.cli", *argv[1:],
                              "--dataset", "demo", "--limit", "2", "--method", "best_of_n",
                              "--n", "2", "--max-step-tokens", "64", "--max-path-tokens", "256",
                              "--out", str(tmp_path / "run"), "--no-progress", "--json"],
                             check=False, capture_output=True, text=True, env=env,
                             cwd=tmp_path,
                             timeout=600)
        assert run.returncode == 0, run.stderr[-4000:]
        records = list(read_records(tmp_path / "run" / "results.jsonl"))
        assert len(records) == 2
        for r in records:
            assert r.error is None and len(r.candidates) == 2, r.error
        policy_pid = _pid_of_port(argv[argv.index("--policy") + 1].split("@", 1)[1])
        prm_pid = _pid_of_port(argv[argv.index("--prm") + 1])
        groups = {pid: os.getpgid(pid) for pid in (policy_pid, prm_pid)}
        members = [m for g in set(groups.values()) for m in group_members(g)]
        assert len(members) >= 2
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    assert code == 0
    assert not any(alive(p) for p in members)
    assert not any(group_members(g) for g in groups.values())
    print(f"\nserve stack: both servers answered after {ready_s:.0f} s")

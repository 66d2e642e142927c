"""Run a few servers as child processes: start, wait until they answer, watch, stop them all.

Contract (what ``testtime serve stack`` relies on):

* Each server runs in a session (and process group) of its own, stdout and stderr appended to
  its log file, stdin closed. A terminal's Ctrl-C therefore reaches only the supervisor, which
  stops the servers in order; nothing else signals them.
* :meth:`Supervisor.stop` sends SIGTERM to every server's process group, waits until every
  process of those groups is gone (a vLLM server's engine core and workers are in its group),
  and sends SIGKILL to the groups still alive after ``grace_s``. When it returns, no process
  of any group is left (zombies reparented to init do not count: they hold no resources).
* A server that exits before it answers, stops answering its probes' deadline, or exits while
  serving raises :class:`ServerFailed` with the tail of its log; the caller then stops the
  others (``with Supervisor(...)`` does).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Self

#: Seconds between SIGTERM and SIGKILL (vLLM's shutdown of an engine takes a few seconds).
DEFAULT_GRACE_S = 20.0
#: Seconds to wait for SIGKILLed processes to vanish (only a process stuck in the kernel takes
#: longer, and nothing more can be done about it from here).
KILL_WAIT_S = 10.0
#: Seconds between readiness probes and liveness checks.
POLL_S = 0.5
#: How much of a log a failure report shows.
TAIL_LINES = 40
TAIL_CHARS = 6000


@dataclass(frozen=True)
class ServerSpec:
    """One server process: how to start it and how to tell it is up."""

    name: str
    """Short name in messages and the log file name (``policy``, ``prm``)."""
    argv: tuple[str, ...]
    """The command line."""
    probes: tuple[str, ...]
    """URLs that must all answer 200 before the server counts as ready."""
    url: str
    """Base URL clients use."""
    env: dict[str, str] = field(default_factory=dict)
    """Variables set on top of the supervisor's environment (``CUDA_VISIBLE_DEVICES``, ...)."""


class ServerFailed(RuntimeError):
    """A server exited or never answered; the message carries the tail of its log."""

    def __init__(self, name: str, reason: str, log: Path, tail: str) -> None:
        self.name, self.reason, self.log, self.tail = name, reason, log, tail
        super().__init__(f"{name} server {reason} (log: {log}); last lines:\n{tail}")


def log_tail(path: Path, lines: int = TAIL_LINES, chars: int = TAIL_CHARS) -> str:
    """The last ``lines`` lines (at most ``chars`` characters) of a log file."""
    try:
        data = path.read_bytes()[-chars:].decode(errors="replace")
    except OSError as exc:
        return f"(log unreadable: {exc})"
    return "\n".join(data.splitlines()[-lines:])


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, from ``/proc`` (Linux); elsewhere
    ``[pgid]`` while the group can be signalled."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


@dataclass
class _Child:
    spec: ServerSpec
    proc: subprocess.Popen[bytes]
    log: Path
    log_file: IO[bytes]


class Supervisor:
    """Starts ``servers`` (in order), each logging to ``log_dir/NAME.log``; a context manager
    that stops them all on exit, whatever happened."""

    def __init__(self, servers: Sequence[ServerSpec], log_dir: Path, *,
                 grace_s: float = DEFAULT_GRACE_S, poll_s: float = POLL_S) -> None:
        names = [s.name for s in servers]
        if len(set(names)) != len(names):
            raise ValueError(f"server names must differ, got {names}")
        self.servers = list(servers)
        self.log_dir = Path(log_dir)
        self.grace_s = grace_s
        self.poll_s = poll_s
        self.children: list[_Child] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    @property
    def pids(self) -> dict[str, int]:
        """Each started server's process id (also its process group id)."""
        return {c.spec.name: c.proc.pid for c in self.children}

    def start(self) -> None:
        """Start every server; a server that cannot even be executed raises ``ServerFailed``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for spec in self.servers:
            log = self.log_path(spec.name)
            log_file = log.open("ab")
            log_file.write(f"$ {' '.join(spec.argv)}\n".encode())
            log_file.flush()
            try:
                proc = subprocess.Popen(list(spec.argv), stdout=log_file,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env={**os.environ, **spec.env},
                                        start_new_session=True)
            except OSError as exc:
                log_file.close()
                raise ServerFailed(spec.name, f"could not start: {exc}", log,
                                   log_tail(log)) from exc
            self.children.append(_Child(spec, proc, log, log_file))

    def _check_alive(self) -> None:
        for child in self.children:
            code = child.proc.poll()
            if code is not None:
                child.log_file.flush()
                raise ServerFailed(child.spec.name, f"exited with code {code}", child.log,
                                   log_tail(child.log))

    def wait_ready(self, timeout_s: float, stop: threading.Event | None = None) -> bool:
        """Block until every server answers all its probes (True), ``stop`` is set (False), a
        server exits or ``timeout_s`` passes (``ServerFailed``)."""
        import httpx

        stop = stop or threading.Event()
        deadline = time.monotonic() + timeout_s
        pending = {c.spec.name: list(c.spec.probes) for c in self.children}
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while any(pending.values()):
                self._check_alive()
                for name, probes in pending.items():
                    while probes:
                        try:
                            ok = client.get(probes[0]).status_code == 200
                        except httpx.HTTPError:
                            ok = False
                        if not ok:
                            break
                        probes.pop(0)
                if not any(pending.values()):
                    break
                if time.monotonic() > deadline:
                    name = next(n for n, p in pending.items() if p)
                    log = self.log_path(name)
                    raise ServerFailed(name, f"did not answer {pending[name][0]} within "
                                             f"{timeout_s:g} s", log, log_tail(log))
                if stop.wait(self.poll_s):
                    return False
        return True

    def watch(self, stop: threading.Event) -> None:
        """Block until ``stop`` is set; a server that exits meanwhile raises ``ServerFailed``."""
        while not stop.wait(self.poll_s):
            self._check_alive()

    def stop(self) -> None:
        """SIGTERM to every server's process group, SIGKILL after ``grace_s`` to whatever is
        left; returns when no process of those groups remains."""
        groups = [c.proc.pid for c in self.children]
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        while time.monotonic() < deadline and self._alive(groups):
            time.sleep(0.1)
        for pgid in groups:
            if group_members(pgid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
        killed = time.monotonic() + KILL_WAIT_S
        while self._alive(groups) and time.monotonic() < killed:
            time.sleep(0.05)
        for child in self.children:
            child.proc.wait()
            child.log_file.close()
        self.children.clear()

    def _alive(self, groups: Sequence[int]) -> bool:
        for child in self.children:
            child.proc.poll()  # reap the leader, so it does not count as a member
        return any(group_members(pgid) for pgid in groups)

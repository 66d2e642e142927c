"""The parent's side of the Math-Verify worker process: start it, talk to it, replace it.

:class:`WorkerClient` owns at most one worker process (``worker.py``, run as a script so that
it never imports this package) and runs batches of cleaned (predicted, reference) pairs through
it with :meth:`WorkerClient.check_all`. Its contract:

- The worker is started on first need and must report ready within ``startup_timeout_s``,
  else :class:`RuntimeError` (saying whether Math-Verify is installed for this Python).
- Every check gets ``timeout_s`` inside the worker (SIGALRM) plus ``kill_grace_s``; a check
  still unanswered after that is graded wrong with reason ``"timeout"``, the worker is killed
  and a fresh one continues with the remaining checks. A worker that dies mid-check costs that
  check (reason ``"error"``); one found dead while idle is replaced before use. Each
  replacement counts in :attr:`WorkerClient.restarts`.
- After a fork the child never touches the parent's worker: it starts its own.
- The worker is killed (and reaped) exactly once: by :meth:`WorkerClient.stop`, on a failure,
  when the client is garbage-collected, or at interpreter exit.

Not thread-safe: the owner (:class:`~testtime.grading.verify.Grader`) serialises calls.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import weakref
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from testtime.grading.grade_types import GraderConfig, GradeResult

#: The worker runs as a script (not ``-m testtime...``) so that it never imports this package.
WORKER_SCRIPT = Path(__file__).with_name("worker.py")


@dataclass
class _Worker:
    """A running Math-Verify worker process and our end of its socket."""

    process: subprocess.Popen[bytes]
    conn: Connection
    stop: weakref.finalize[[subprocess.Popen[bytes], Connection], WorkerClient]
    """Kills and reaps the process exactly once (also on garbage collection and at exit)."""


class WorkerClient:
    """At most one Math-Verify worker process, run under ``config``'s limits (see the module
    docstring for the contract)."""

    def __init__(self, config: GraderConfig) -> None:
        self.config = config
        self.restarts = 0
        """How many times a worker was killed (timeout) or died and had to be replaced."""
        self._batch_ids = itertools.count()
        self._worker: _Worker | None = None
        self._owner_pid = os.getpid()

    @property
    def pid(self) -> int | None:
        """Process id of the current worker, or None when none is running."""
        worker = self._worker
        return worker.process.pid if worker is not None else None

    def check_all(self, items: list[tuple[str, str]]) -> list[GradeResult]:
        """Run Math-Verify on every cleaned (predicted, reference) pair, in order."""
        results: list[GradeResult] = []
        limit = self.config.timeout_s + self.config.kill_grace_s
        while len(results) < len(items):
            conn = self._ensure_worker().conn
            batch_id = next(self._batch_ids)
            first = len(results)
            try:
                batch = [(i, pred, ref) for i, (pred, ref) in enumerate(items) if i >= first]
                conn.send(("check", batch_id, batch))
                while len(results) < len(items):
                    if not conn.poll(limit):
                        detail = f"no verdict within {limit:g} s; worker killed"
                        results.append(GradeResult(False, "timeout", detail))
                        self._replace_worker()
                        break
                    tag, got_batch, index, correct, reason, detail = conn.recv()
                    if (tag, got_batch, index) != ("result", batch_id, len(results)):
                        got = (tag, got_batch, index)
                        raise RuntimeError(f"grading worker out of step: got {got}")
                    results.append(GradeResult(bool(correct), reason, detail))
            except (EOFError, OSError):
                detail = "the grading worker died during this check"
                results.append(GradeResult(False, "error", detail))
                self._replace_worker()
            except BaseException:
                self.stop()  # e.g. KeyboardInterrupt mid-batch: its replies are stale
                raise
        return results

    def stop(self) -> None:
        """Kill the worker, if one runs; the next check starts a fresh one. Idempotent."""
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def _ensure_worker(self) -> _Worker:
        if self._owner_pid != os.getpid():  # we are a fork: the worker belongs to the parent
            if self._worker is not None:
                self._worker.stop.detach()
            self._worker, self._owner_pid = None, os.getpid()
        if self._worker is not None and self._worker.process.poll() is not None:
            self._replace_worker()  # died while idle (e.g. killed from outside)
        if self._worker is None:
            self._worker = self._start_worker()
        return self._worker

    def _replace_worker(self) -> None:
        self.restarts += 1
        self.stop()

    def _start_worker(self) -> _Worker:
        ours, theirs = socket.socketpair()
        soft_limit = self.config.timeout_s
        command = [sys.executable, str(WORKER_SCRIPT), str(theirs.fileno()), f"{soft_limit:g}"]
        command.append(str(self.config.worker_memory_mb))
        try:
            process = subprocess.Popen(
                command,
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # the protocol uses its own socket; drop stray prints
            )
        finally:
            theirs.close()
        conn = Connection(ours.detach())
        finalizer = weakref.finalize(self, _kill_worker, process, conn)
        try:
            if not conn.poll(self.config.startup_timeout_s):
                raise RuntimeError(
                    f"grading worker {WORKER_SCRIPT} did not start within "
                    f"{self.config.startup_timeout_s:g} s"
                )
            conn.recv()
        except (EOFError, OSError) as exc:
            finalizer()
            raise RuntimeError(
                f"grading worker {WORKER_SCRIPT} exited during startup (exit code "
                f"{process.poll()}); is math-verify installed for {sys.executable}? "
                "Its error is on stderr."
            ) from exc
        except BaseException:
            finalizer()
            raise
        return _Worker(process, conn, finalizer)


def _kill_worker(process: subprocess.Popen[bytes], conn: Connection) -> None:
    """Kill a worker (it may be stuck in C code, so no polite exit) and reap it."""
    conn.close()
    if process.poll() is None:
        process.kill()
    process.wait()

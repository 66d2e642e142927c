"""Decide whether a predicted final answer equals the reference, as a careful human grader would.

Pipeline per pair: (1) cap the input length; (2) clean both answers (units, degrees, ``x=``,
thousands separators, base subscripts, choice letters, ...) and compare cheap string keys, which
settles identical answers and pairs of plain integers without any parsing; (3) everything else
goes to Math-Verify in a separate worker process (see ``worker.py``, which also makes numeric
comparisons demand relative precision, so 1/2^99 != 1/2^98) under a per-check time limit. A check
that runs over it is graded wrong with reason ``"timeout"``: the worker interrupts it with
SIGALRM, or, when it is stuck in C code, the parent kills the worker and a fresh one continues
with the remaining checks. Math-Verify's own timeouts use ``signal.alarm``, which only works on a
main thread; the worker runs checks on its main thread, so a Grader works from any thread.

Grading never raises for any string input; type errors (a non-string reference) do raise.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import socket
import subprocess
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Literal, Self

from testtime.grading.extract import answer_key, clean_for_parse

#: The worker runs as a script (not ``-m testtime...``) so that it never imports this package.
WORKER_SCRIPT = Path(__file__).with_name("worker.py")
_INTEGER_RE = re.compile(r"-?\d+")

GradeReason = Literal[
    "exact",
    "normalized",
    "equivalent",
    "not_equivalent",
    "no_answer",
    "too_long",
    "unparseable",
    "timeout",
    "error",
]
"""Why a grade came out as it did: ``exact``/``normalized``/``equivalent`` are correct (string
match, match after cleaning, Math-Verify); the rest are wrong."""


@dataclass(frozen=True)
class GradeResult:
    """The verdict on one (predicted, reference) pair."""

    correct: bool
    reason: GradeReason
    detail: str = ""
    """Human-readable context (which side failed to parse, the time limit, ...)."""


@dataclass(frozen=True)
class GraderConfig:
    """Limits of a :class:`~testtime.grading.Grader`. Validated on construction; no I/O."""

    timeout_s: float = 5.0
    """Wall-clock limit for one Math-Verify check; past it the check is graded wrong."""
    kill_grace_s: float = 1.0
    """Extra time the parent waits for a check stuck in C code before killing the worker."""
    startup_timeout_s: float = 120.0
    """Longest wait for a new worker to import Math-Verify and report ready."""
    max_answer_chars: int = 1000
    """Longer predictions (or references) are graded wrong without parsing (``too_long``)."""
    worker_memory_mb: int = 4096
    """Address-space limit of the worker process (0: none), so huge powers fail fast."""
    cache_size: int = 100_000
    """How many Math-Verify verdicts to remember, keyed by the cleaned pair (0: no cache)."""
    string_match: bool = True
    """Settle pairs whose cleaned strings match (or are both integers) without Math-Verify;
    False sends every pair to Math-Verify (slower; for testing Math-Verify itself)."""

    def __post_init__(self) -> None:
        for name in ("timeout_s", "kill_grace_s", "startup_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"GraderConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("max_answer_chars", "worker_memory_mb", "cache_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"GraderConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_answer_chars == 0:
            raise ValueError("GraderConfig.max_answer_chars must be > 0")


def precheck(
    predicted: str | None, reference: str, max_chars: int, string_match: bool = True
) -> tuple[GradeResult | None, tuple[str, str]]:
    """Grade what needs no Math-Verify; otherwise return ``None`` and the cleaned pair.

    Inputs over ``max_chars`` and missing answers are always settled here; string matches and
    integer pairs only when ``string_match``.

    Raises:
        TypeError: ``reference`` is not a string or ``predicted`` is neither a string nor None.
    """
    if not isinstance(reference, str):
        raise TypeError(f"reference must be a str, got {type(reference).__name__}")
    if predicted is not None and not isinstance(predicted, str):
        raise TypeError(f"predicted must be a str or None, got {type(predicted).__name__}")
    if len(reference) > max_chars:
        detail = f"reference has {len(reference)} chars (limit {max_chars})"
        return GradeResult(False, "too_long", detail), ("", "")
    if predicted is None or not predicted.strip():
        return GradeResult(False, "no_answer", "no answer was extracted"), ("", "")
    if len(predicted) > max_chars:
        detail = f"prediction has {len(predicted)} chars (limit {max_chars})"
        return GradeResult(False, "too_long", detail), ("", "")
    if string_match and predicted.strip() == reference.strip():
        return GradeResult(True, "exact"), ("", "")
    pred, ref = clean_for_parse(predicted), clean_for_parse(reference)
    if not pred:
        return GradeResult(False, "no_answer", "the answer is empty after cleaning"), ("", "")
    if not string_match:
        return None, (pred, ref)
    pred_key, ref_key = answer_key(pred), answer_key(ref)
    if pred_key == ref_key:
        return GradeResult(True, "normalized"), ("", "")
    if _INTEGER_RE.fullmatch(pred_key) and _INTEGER_RE.fullmatch(ref_key):
        same = _canonical_integer(pred_key) == _canonical_integer(ref_key)
        return GradeResult(same, "normalized" if same else "not_equivalent"), ("", "")
    return None, (pred, ref)


def _canonical_integer(digits: str) -> str:
    """``-007`` -> ``-7``, ``-0`` -> ``0``; string work, since int() refuses > 4300 digits."""
    magnitude = digits.lstrip("-").lstrip("0") or "0"
    return "-" + magnitude if digits.startswith("-") and magnitude != "0" else magnitude


@dataclass
class _Worker:
    """A running Math-Verify worker process and our end of its socket."""

    process: subprocess.Popen[bytes]
    conn: Connection
    stop: weakref.finalize[[subprocess.Popen[bytes], Connection], Grader]
    """Kills and reaps the process exactly once (also on garbage collection and at exit)."""


class Grader:
    """Grades answers against references; safe to share between threads and asyncio tasks.

    Owns one Math-Verify worker process, started on first need and restarted after a timeout or
    crash. Use as a context manager or call :meth:`close`; an unclosed grader's worker is killed
    when the grader is garbage-collected or the interpreter exits.
    """

    def __init__(self, config: GraderConfig | None = None) -> None:
        self.config = config if config is not None else GraderConfig()
        self.restarts = 0
        """How many times a worker was killed (timeout) or died and had to be replaced."""
        self._lock = threading.Lock()  # one conversation with the worker at a time
        self._cache: OrderedDict[tuple[str, str], GradeResult] = OrderedDict()
        self._batch_ids = itertools.count()
        self._worker: _Worker | None = None
        self._closed = False
        self._owner_pid = os.getpid()

    def grade(self, predicted: str | None, reference: str) -> GradeResult:
        """Grade one extracted answer (``None``: nothing was extracted) against the reference."""
        return self.grade_many([(predicted, reference)])[0]

    def grade_many(self, pairs: Iterable[tuple[str | None, str]]) -> list[GradeResult]:
        """Grade many pairs, in order, with one round trip to the worker for all that need it.

        Each Math-Verify check still gets its own time limit. Identical cleaned pairs are
        checked once.
        """
        if self._closed:
            raise RuntimeError("this Grader is closed")
        results: list[GradeResult | None] = []
        pending: dict[tuple[str, str], list[int]] = {}
        for index, (predicted, reference) in enumerate(pairs):
            verdict, cleaned = precheck(
                predicted, reference, self.config.max_answer_chars, self.config.string_match
            )
            results.append(verdict)
            if verdict is None:
                pending.setdefault(cleaned, []).append(index)
        if pending:
            with self._lock:
                verdicts = {pair: self._cache[pair] for pair in pending if pair in self._cache}
                for pair in verdicts:
                    self._cache.move_to_end(pair)
                todo = [pair for pair in pending if pair not in verdicts]
                verdicts.update(zip(todo, self._check_all(todo), strict=True))
                for pair in todo:
                    self._remember(pair, verdicts[pair])
            for pair, indices in pending.items():
                for index in indices:
                    results[index] = verdicts[pair]
        return [verdict for verdict in results if verdict is not None]

    async def agrade(self, predicted: str | None, reference: str) -> GradeResult:
        """:meth:`grade` for asyncio code; runs in a thread so the event loop stays free."""
        return await asyncio.to_thread(self.grade, predicted, reference)

    async def agrade_many(self, pairs: Iterable[tuple[str | None, str]]) -> list[GradeResult]:
        """:meth:`grade_many` for asyncio code; runs in a thread so the event loop stays free."""
        return await asyncio.to_thread(self.grade_many, list(pairs))

    @property
    def worker_pid(self) -> int | None:
        """Process id of the current Math-Verify worker, or None before it is started."""
        worker = self._worker
        return worker.process.pid if worker is not None else None

    def close(self) -> None:
        """Stop the worker; later calls to grade raise RuntimeError. Idempotent."""
        with self._lock:
            self._closed = True
            self._stop_worker()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- worker conversation (caller holds self._lock) ---

    def _remember(self, pair: tuple[str, str], verdict: GradeResult) -> None:
        if self.config.cache_size == 0 or verdict.reason == "error":
            return  # a crash may be transient, so it is not remembered
        self._cache[pair] = verdict
        while len(self._cache) > self.config.cache_size:
            self._cache.popitem(last=False)

    def _check_all(self, items: list[tuple[str, str]]) -> list[GradeResult]:
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
                self._stop_worker()  # e.g. KeyboardInterrupt mid-batch: its replies are stale
                raise
        return results

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
        self._stop_worker()

    def _stop_worker(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

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


_default: Grader | None = None
_default_lock = threading.Lock()


def default_grader() -> Grader:
    """The shared :class:`Grader` with default limits, created on first call."""
    global _default
    with _default_lock:
        if _default is None or _default._closed:
            _default = Grader()
        return _default


def grade(predicted: str | None, reference: str) -> GradeResult:
    """Grade one pair with the shared :func:`default_grader`."""
    return default_grader().grade(predicted, reference)


def grade_many(pairs: Iterable[tuple[str | None, str]]) -> list[GradeResult]:
    """Grade ``(predicted, reference)`` pairs with the shared :func:`default_grader`."""
    return default_grader().grade_many(pairs)

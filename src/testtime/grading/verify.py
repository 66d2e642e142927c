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

This module holds the prechecks and the :class:`Grader` API (verdict cache, locking, the shared
default grader); the worker process is managed by :mod:`.worker_client`, and the value types
live in :mod:`.grade_types`; their public names are re-exported here.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Self

from testtime.grading.extract import answer_key, clean_for_parse
from testtime.grading.grade_types import (  # noqa: F401  (GradeReason re-exported for callers)
    GraderConfig,
    GradeReason,
    GradeResult,
)
from testtime.grading.worker_client import (  # noqa: F401  (WORKER_SCRIPT re-exported)
    WORKER_SCRIPT,
    WorkerClient,
)

_INTEGER_RE = re.compile(r"-?\d+")


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


class Grader:
    """Grades answers against references; safe to share between threads and asyncio tasks.

    Owns one Math-Verify worker process, started on first need and restarted after a timeout or
    crash. Use as a context manager or call :meth:`close`; an unclosed grader's worker is killed
    when the grader is garbage-collected or the interpreter exits.
    """

    def __init__(self, config: GraderConfig | None = None) -> None:
        self.config = config if config is not None else GraderConfig()
        self._lock = threading.Lock()  # one conversation with the worker at a time
        self._cache: OrderedDict[tuple[str, str], GradeResult] = OrderedDict()
        self._workers = WorkerClient(self.config)  # used only under self._lock
        self._closed = False

    @property
    def restarts(self) -> int:
        """How many times a worker was killed (timeout) or died and had to be replaced."""
        return self._workers.restarts

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
                verdicts.update(zip(todo, self._workers.check_all(todo), strict=True))
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
        return self._workers.pid

    def close(self) -> None:
        """Stop the worker; later calls to grade raise RuntimeError. Idempotent."""
        with self._lock:
            self._closed = True
            self._workers.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- verdict cache (caller holds self._lock) ---

    def _remember(self, pair: tuple[str, str], verdict: GradeResult) -> None:
        if self.config.cache_size == 0 or verdict.reason == "error":
            return  # a crash may be transient, so it is not remembered
        self._cache[pair] = verdict
        while len(self._cache) > self.config.cache_size:
            self._cache.popitem(last=False)


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

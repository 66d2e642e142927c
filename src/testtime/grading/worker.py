"""The Math-Verify worker process behind :class:`testtime.grading.verify.Grader`.

Run as a script, ``python worker.py FD SOFT_TIMEOUT_S MEMORY_MB``, never imported by the parent:
it must not import ``testtime`` (whose package may pull in torch), only the standard library,
sympy and math_verify. FD is one end of a socket pair that carries
``multiprocessing.connection`` messages:

* parent -> worker: ``("check", batch_id, [(index, predicted, reference), ...])`` or ``("exit",)``
* worker -> parent: ``("ready", pid)`` once, then one ``("result", batch_id, index, correct,
  reason, detail)`` per check, in order, as soon as each check finishes.

Each check is interrupted after SOFT_TIMEOUT_S by ``SIGALRM`` (the worker runs checks on its main
thread, where signals work); the parent kills the whole process if a check blocks in C code past
that. Math-Verify's own ``signal.alarm`` timeouts are switched off because they would cancel ours.
"""

from __future__ import annotations

import os
import sys

# Running a file as a script puts its directory first on sys.path; drop it so that the sibling
# modules here can never shadow a library module.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import logging
import resource
import signal
from multiprocessing.connection import Connection
from typing import Any

#: Two numeric values agree only if they differ by at most this fraction of the larger one.
#: Math-Verify alone compares to 15 absolute digits (``evalf(chop=True)``), so it calls
#: 1/2^99 and 1/2^98 equal; 1e-5 still lets 0.333333 equal 1/3.
RELATIVE_TOLERANCE = 1e-5
#: Digits used to evaluate both sides for the relative-tolerance check.
CHECK_DIGITS = 40


class CheckTimeout(BaseException):
    """Raised by SIGALRM inside a check; a BaseException so Math-Verify's handlers let it pass."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise CheckTimeout


def numerically_distinct(a: Any, b: Any) -> bool:
    """True when ``a`` and ``b`` are both plain numbers whose relative difference is too large.

    Percentages (``UnevaluatedExpr(1/100)`` factors), symbols, sets and matrices are left to
    Math-Verify (False). Any failure to evaluate also answers False, so this can only veto.
    """
    import sympy

    try:
        if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr)):
            return False
        if a.has(sympy.UnevaluatedExpr) or b.has(sympy.UnevaluatedExpr):
            return False
        if not (a.is_number and b.is_number):
            return False
        value_a, value_b = sympy.N(a, CHECK_DIGITS), sympy.N(b, CHECK_DIGITS)
        if not (value_a.is_finite and value_b.is_finite):
            return False
        scale = max(abs(value_a), abs(value_b))
        return bool(abs(value_a - value_b) > RELATIVE_TOLERANCE * scale)
    except Exception:  # noqa: BLE001 - sympy raises many types on exotic values; no veto then
        return False


def install_precision_guard() -> None:
    """Make Math-Verify's numeric comparison also demand relative agreement.

    ``sympy_numeric_eq`` is looked up as a module global on every comparison, including the
    element-wise ones inside tuples, sets, intervals and matrices, so patching it covers them all.
    Only this worker process is affected.
    """
    from math_verify import grader

    original = grader.sympy_numeric_eq

    def guarded(a: Any, b: Any, float_rounding: int, numeric_precision: int) -> bool:
        return bool(original(a, b, float_rounding, numeric_precision)) and not (
            numerically_distinct(a, b)
        )

    grader.sympy_numeric_eq = guarded


def check(predicted: str, reference: str) -> tuple[bool, str, str]:
    """Math-Verify equivalence of two cleaned answers: ``(correct, reason, detail)``.

    Both are wrapped in ``\\boxed{}`` so that LaTeX extraction picks up the whole answer. The
    reference is Math-Verify's gold (the comparison is not symmetric).
    """
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    config = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())
    gold = parse("\\boxed{" + reference + "}", extraction_config=config, parsing_timeout=None)
    if not gold:
        return False, "unparseable", "Math-Verify could not parse the reference"
    target = parse("\\boxed{" + predicted + "}", extraction_config=config, parsing_timeout=None)
    if not target:
        return False, "unparseable", "Math-Verify could not parse the prediction"
    if verify(gold, target, timeout_seconds=None):
        return True, "equivalent", "Math-Verify"
    return False, "not_equivalent", "Math-Verify"


def timed_check(predicted: str, reference: str, soft_timeout_s: float) -> tuple[bool, str, str]:
    """:func:`check` under a SIGALRM limit; never raises."""
    try:
        signal.setitimer(signal.ITIMER_REAL, soft_timeout_s)
        try:
            return check(predicted, reference)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except CheckTimeout:
        return False, "timeout", f"check took more than {soft_timeout_s:g} s"
    except MemoryError:
        return False, "error", "check ran out of memory"
    except RecursionError:
        return False, "error", "expression nested too deeply"
    except Exception as exc:  # noqa: BLE001 - a failed check is a wrong answer, not a dead worker
        return False, "error", f"{type(exc).__name__} in Math-Verify"


def serve(conn: Connection, soft_timeout_s: float) -> None:
    """Answer check batches until the parent says exit or goes away."""
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message[0] == "exit":
            return
        _, batch_id, items = message
        for index, predicted, reference in items:
            correct, reason, detail = timed_check(predicted, reference, soft_timeout_s)
            conn.send(("result", batch_id, index, correct, reason, detail))


def main(argv: list[str]) -> None:
    """Entry point: ``FD SOFT_TIMEOUT_S MEMORY_MB`` (MEMORY_MB 0 means no limit)."""
    fd, soft_timeout_s, memory_mb = int(argv[0]), float(argv[1]), int(argv[2])
    if memory_mb > 0:
        # A runaway big-integer power should fail with MemoryError, not push the host into OOM.
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    for name in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which stops us
    install_precision_guard()
    timed_check("\\frac{1}{2}", "0.5", max(soft_timeout_s, 30.0))  # warm parsers and caches
    conn = Connection(fd)
    conn.send(("ready", os.getpid()))
    serve(conn, soft_timeout_s)


if __name__ == "__main__":
    main(sys.argv[1:])

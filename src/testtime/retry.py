"""Bounded retries with exponential backoff and jitter for backend calls.

Backends fail in ways that often pass: a server answers 5xx or times out, a GPU runs out of
memory under a burst of long sequences, a model emits output a parser rejects, a Ray actor
is lost with its node. The runner wraps each problem's search in :func:`retry_async`, so such
an error costs a few retries and, if it persists, an error record for that problem only; the
run itself goes on. Backends can wrap their own calls the same way (:func:`retry_sync` for
blocking code).

Contract: ``fn`` is called at most ``policy.max_retries + 1`` times. Between attempts the
caller sleeps ``min(max_delay_s, base_delay_s * multiplier**k)`` scaled by a random factor in
``[1 - jitter, 1 + jitter]`` (k = 0 for the first retry), so many problems that failed
together do not hit a recovering server together. :class:`PermanentError` (and anything
``is_retryable`` rejects) is not retried. ``BaseException`` that is not an ``Exception``
(cancellation, ``KeyboardInterrupt``) always propagates at once. When every attempt failed,
:class:`RetryError` is raised carrying the number of attempts and the last exception.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class PermanentError(RuntimeError):
    """An error that retrying cannot fix (bad request, nothing left to run on): never retried."""


class RetryError(RuntimeError):
    """Every allowed attempt failed. ``last`` is the final attempt's exception."""

    def __init__(self, what: str, attempts: int, last: BaseException) -> None:
        self.what = what
        self.attempts = attempts
        self.last = last
        super().__init__(f"{what} failed after {attempts} attempt(s): {describe(last)}")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry. Validates on construction; no I/O."""

    max_retries: int = 2
    """Retries after the first attempt (0: the first error is final)."""
    base_delay_s: float = 0.5
    """Sleep before the first retry (before jitter)."""
    multiplier: float = 2.0
    """Each further retry waits this many times longer."""
    max_delay_s: float = 30.0
    """Cap on one sleep (before jitter)."""
    jitter: float = 0.5
    """Sleeps are scaled by a uniform factor in ``[1 - jitter, 1 + jitter]``; in [0, 1]."""
    attempt_timeout_s: float | None = None
    """Wall-clock limit of one attempt (async only); an attempt past it fails with
    ``TimeoutError`` and is retried like any other error. None: no limit."""

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"RetryPolicy.max_retries must be >= 0, got {self.max_retries}")
        for name in ("base_delay_s", "max_delay_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"RetryPolicy.{name} must be >= 0, got {getattr(self, name)}")
        if self.multiplier < 1:
            raise ValueError(f"RetryPolicy.multiplier must be >= 1, got {self.multiplier}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"RetryPolicy.jitter must be in [0, 1], got {self.jitter}")
        if self.attempt_timeout_s is not None and not self.attempt_timeout_s > 0:
            raise ValueError(
                f"RetryPolicy.attempt_timeout_s must be > 0, got {self.attempt_timeout_s}"
            )

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to sleep before retry number ``retry`` (0-based), jitter included."""
        base = min(self.max_delay_s, self.base_delay_s * self.multiplier**retry)
        u = (rng or _RNG).uniform(1 - self.jitter, 1 + self.jitter)
        return base * u


#: Module-level generator for jitter: its draws need not be reproducible (they only spread
#: retries in time; results never depend on them).
_RNG = random.Random()


def describe(exc: BaseException) -> str:
    """``"TypeName: message"`` (message lines joined), as an error record stores it."""
    message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def default_retryable(exc: BaseException) -> bool:
    """Everything but :class:`PermanentError` and nested :class:`RetryError`."""
    return not isinstance(exc, PermanentError | RetryError)


async def retry_async(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    what: str = "call",
    is_retryable: Callable[[BaseException], bool] = default_retryable,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> tuple[T, int]:
    """Await ``fn()`` until it succeeds; return its value and the number of attempts made.

    Raises :class:`RetryError` once ``policy.max_attempts`` attempts failed, or at once when
    ``is_retryable`` rejects the error.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            if policy.attempt_timeout_s is None:
                return await fn(), attempt
            return await asyncio.wait_for(fn(), policy.attempt_timeout_s), attempt
        except Exception as exc:
            if attempt >= policy.max_attempts or not is_retryable(exc):
                raise RetryError(what, attempt, exc) from exc
            pause = policy.delay(attempt - 1, rng)
            log.warning("%s: attempt %d/%d failed (%s); retrying in %.2f s", what, attempt,
                        policy.max_attempts, describe(exc), pause)
            await sleep(pause)


def retry_sync(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    what: str = "call",
    is_retryable: Callable[[BaseException], bool] = default_retryable,
    sleep: Callable[[float], object] = time.sleep,
    rng: random.Random | None = None,
) -> tuple[T, int]:
    """:func:`retry_async` for blocking calls (``attempt_timeout_s`` is not applied: a blocking
    call cannot be interrupted from outside; give the call its own timeout)."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn(), attempt
        except Exception as exc:
            if attempt >= policy.max_attempts or not is_retryable(exc):
                raise RetryError(what, attempt, exc) from exc
            pause = policy.delay(attempt - 1, rng)
            log.warning("%s: attempt %d/%d failed (%s); retrying in %.2f s", what, attempt,
                        policy.max_attempts, describe(exc), pause)
            sleep(pause)

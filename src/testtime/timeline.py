"""Where a run's wall time goes: intervals of policy batches, PRM forwards and grading.

The backends add an interval around each blocking call (a policy batch under the device lock,
a PRM engine call, a problem's grading; the runner adds the models' loading); :meth:`Timeline.split` turns them into seconds of
the wall during which each kind was running (overlaps of one kind counted once), and the time
during which *nothing* was running: host-side work between calls (search logic, tokenising,
the event loop), where an accelerator sits idle. The runner puts the split in
``summary.json`` (``timeline``); ``bench/bench_e2e.py`` reads it.

One process-wide timeline (:data:`TIMELINE`); adding an interval is a lock and an append.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

KINDS = ("load", "policy", "prm", "grading")
#: Intervals kept; past it the oldest half is dropped (a long-lived server adds forever).
MAX_SPANS = 200_000


class Timeline:
    """Intervals ``(kind, start, end)`` in ``time.perf_counter`` seconds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[tuple[str, float, float]] = []
        self._dropped = 0

    def add(self, kind: str, start: float, end: float) -> None:
        with self._lock:
            self._spans.append((kind, start, end))
            if len(self._spans) > MAX_SPANS:
                cut = len(self._spans) // 2
                del self._spans[:cut]
                self._dropped += cut

    @contextmanager
    def span(self, kind: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(kind, start, time.perf_counter())

    def mark(self) -> int:
        """A position: :meth:`split` from here on ignores earlier intervals."""
        with self._lock:
            return self._dropped + len(self._spans)

    def split(self, start: float, end: float, since: int = 0) -> dict[str, float]:
        """Seconds of ``[start, end]`` covered by each kind, by any kind (``busy_s``) and by
        none (``idle_s``), from the intervals added after position ``since``."""
        with self._lock:
            spans = [(k, max(a, start), min(b, end))
                     for k, a, b in self._spans[max(0, since - self._dropped):]
                     if b > start and a < end]
        out = {f"{kind}_s": round(_union([(a, b) for k, a, b in spans if k == kind]), 3)
               for kind in KINDS}
        busy = _union([(a, b) for _, a, b in spans])
        out["busy_s"] = round(busy, 3)
        out["idle_s"] = round(max(0.0, (end - start) - busy), 3)
        return out


def _union(spans: list[tuple[float, float]]) -> float:
    """Total length of the union of intervals."""
    total, reach = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b <= reach:
            continue
        total += b - max(a, reach)
        reach = b
    return total


TIMELINE = Timeline()

"""The adaptive solver's budget cap: escalations paid for by early stops, so that the mean
spend per problem never passes the budget B.

Each problem earns B generations. Problems decide in the order they start (the runner starts
them in dataset order, a bounded number at a time), and problem k may spend at most
``B + bank``, where the bank is what the problems decided before it left unspent
(``sum(B - spent_j)``). So after every decision the total spent is at most ``k * B``: the mean
never passes B, whatever stops and escalations happen, and the decisions do not depend on
which problem's pilot finishes first (problem k waits for the decisions of those before it,
which started earlier). A problem whose search fails before deciding is charged B (it keeps
its share; its retry may spend up to B, never more), so a failure cannot let others overspend.
A resumed run caps the problems it runs; with the first invocation's prefix capped too, the
whole run's mean stays within B.
"""

from __future__ import annotations

import asyncio


class BudgetLedger:
    """Allowances of the adaptive solver's problems, decided in start order."""

    def __init__(self, budget: int) -> None:
        if budget < 1:
            raise ValueError(f"budget must be >= 1, got {budget}")
        self.budget = budget
        self._order: list[str] = []
        self._spent: dict[str, int] = {}
        self._allowed: dict[str, int] = {}
        self._changed = asyncio.Condition()

    def register(self, pid: str) -> None:
        """Take the next place in the order (call before the problem's first await)."""
        if pid not in self._order:
            self._order.append(pid)

    def _bank_before(self, pid: str) -> int | None:
        """Unspent budget of the problems before ``pid``, or None while one is undecided."""
        bank = 0
        for other in self._order[: self._order.index(pid)]:
            if other not in self._spent:
                return None
            bank += self.budget - self._spent[other]
        return bank

    async def allowance(self, pid: str) -> int:
        """The most ``pid`` may spend: ``B + bank`` (its first call waits for the problems
        before it; a retry may spend what was charged: at most B after a failure)."""
        if pid in self._spent:  # a retry: what later problems' banks already assume
            return self._spent[pid]
        if pid in self._allowed:
            return self._allowed[pid]
        async with self._changed:
            await self._changed.wait_for(lambda: self._bank_before(pid) is not None)
            bank = self._bank_before(pid)
        self._allowed[pid] = self.budget + (bank or 0)
        return self._allowed[pid]

    async def spend(self, pid: str, spent: int) -> None:
        """Record what ``pid`` decided to spend (at most its allowance)."""
        allowed = self._allowed.get(pid, self.budget)
        if spent > allowed:
            raise ValueError(f"problem {pid} spends {spent}, more than its allowance {allowed}")
        async with self._changed:
            self._spent[pid] = spent
            self._changed.notify_all()

    async def fail(self, pid: str) -> None:
        """``pid`` failed before deciding: charge it B, and let a retry spend at most B."""
        async with self._changed:
            if pid not in self._spent:
                self._spent[pid] = self.budget
                self._allowed[pid] = self.budget
            self._changed.notify_all()

"""``async with`` for anything with an ``aclose`` coroutine (policies, scorers, executors)."""

from __future__ import annotations

from typing import Self


class AsyncResource:
    """Mixin: ``async with obj:`` returns ``obj`` and awaits ``obj.aclose()`` on exit,
    whatever happened inside (the engines behind it hold threads, sockets and GPU memory)."""

    async def aclose(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

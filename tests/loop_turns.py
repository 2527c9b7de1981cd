"""How often an asyncio event loop ran other tasks while a coroutine did its work."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def turns_during(work: Callable[[], Awaitable[T]]) -> tuple[T, int]:
    """Run ``work()`` on a new loop beside a task that counts its turns (one per
    ``asyncio.sleep(0)``); return what ``work`` returned and the turns the loop gave the
    other task meanwhile."""

    async def main() -> tuple[T, int]:
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                await asyncio.sleep(0)
                ticks += 1

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        try:
            result = await work()
        finally:
            done = True
            await tick
        return result, ticks

    return asyncio.run(main())

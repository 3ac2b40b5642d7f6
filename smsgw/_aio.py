"""Small asyncio helpers shared by every package."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any] | None]) -> list[Any]:
    """Cancel `tasks` (None entries are skipped) and wait until each has ended.

    What each task ended with (a result, its exception, or CancelledError) is returned rather
    than raised: at shutdown one task's failure must not leave the others running. Unlike
    `with suppress(CancelledError): await task`, a cancellation of the caller itself while
    it waits still propagates.
    """
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    return await asyncio.gather(*running, return_exceptions=True)

"""Small asyncio helpers shared by every package."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

__all__ = ["cancel_and_wait", "map_in_slices"]

_T = TypeVar("_T")
_R = TypeVar("_R")

# Items mapped between two yields to the loop: encoding an audit event costs a few µs, so
# ~1-2 ms of work; a whole 5000-event store write encoded at once held the loop ~10-25 ms.
SLICE = 500


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


async def map_in_slices(
    function: Callable[[_T], _R], items: Sequence[_T], size: int = SLICE
) -> list[_R]:
    """[function(item) for item in items], yielding to the event loop after each `size`
    items, so a long batch of small CPU steps does not hold up timers and I/O due meanwhile."""
    results = [function(item) for item in items[:size]]
    for start in range(size, len(items), size):
        await asyncio.sleep(0)
        results += [function(item) for item in items[start : start + size]]
    return results

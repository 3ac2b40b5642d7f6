"""cancel_and_wait: every task ends, none of their failures escapes, the caller's own
cancellation still does."""

from __future__ import annotations

import asyncio

import pytest

from smsgw._aio import cancel_and_wait, map_in_slices


async def test_cancels_and_waits_for_every_task() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    async def broken() -> None:
        raise RuntimeError("bug")

    tasks = [asyncio.create_task(forever()), asyncio.create_task(broken())]
    await asyncio.sleep(0)
    results = await cancel_and_wait([*tasks, None])
    assert all(task.done() for task in tasks)
    assert isinstance(results[0], asyncio.CancelledError)
    assert isinstance(results[1], RuntimeError)


async def test_the_callers_cancellation_is_not_swallowed() -> None:
    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)  # slow to clean up

    async def stopper() -> None:
        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)  # let it start, so it is inside its try when cancelled
        await cancel_and_wait([task])

    outer = asyncio.create_task(stopper())
    await asyncio.sleep(0.05)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer


async def test_map_in_slices_maps_everything_and_lets_the_loop_run_between_slices() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    seen_ticks: list[int] = []

    def square(n: int) -> int:
        seen_ticks.append(ticks)
        return n * n

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    try:
        result = await map_in_slices(square, list(range(10)), size=4)
    finally:
        task.cancel()
    assert result == [n * n for n in range(10)]
    # Within a slice nothing else ran; between slices the other task did.
    assert len(set(seen_ticks[:4])) == 1
    assert len(set(seen_ticks[4:8])) == 1
    assert seen_ticks[0] < seen_ticks[4] < seen_ticks[8]

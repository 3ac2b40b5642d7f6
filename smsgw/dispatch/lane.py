"""A provider's lane: the order in which one send gets what it needs, and what the lane
remembers between sends (concurrency refusals, how many wait).

A send takes, in this order:
1. a place among the provider's open requests (`InFlightLimits`: the fleet-wide `max_in_flight`,
   shared through Redis), after any pause a concurrency refusal asked for;
2. a ready connection (`Provider.ready()`): connecting, or waiting for the pool, happens here,
   before the rate matters; only READY_AHEAD_S of the rate's sends hold one at a time while
   they wait for their slot (a turn), the rest wait before taking one;
3. the rate-limiter slot, worth the message's units (segments, or 1 where the provider counts
   requests), as late as possible: after it, only building the request and one synchronous
   write (`SendHandle.launch`). A slot the loop reached too late is dropped and another taken,
   so a busy loop cannot bunch sends at the provider.

The order matters: a place or a connection waited for after the slot would make the slot
stale by however long that wait took, which is exactly the jitter the provider's sliding
window sees. The decision-to-write delay (slot time to the write) is measured per send.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Callable

from smsgw.dispatch.stats import DispatchStats
from smsgw.limiter.base import LATE_SLOT_S, ProviderLimiter
from smsgw.limiter.in_flight import InFlightLimits
from smsgw.providers.base import Provider
from smsgw.settings import RateUnit

__all__ = ["Held", "Lane"]

# A concurrency refusal pauses the lane's new requests this long, doubling while refusals
# go on (up to the max) and reset by the next answer that was not one: short, because the
# requests holding the provider's places end within its latency.
REFUSAL_PAUSE_MIN_S = 0.01
REFUSAL_PAUSE_MAX_S = 1.0
# Messages a lane lets wait (for a place or a slot) per unit of rate: this many seconds of
# sends. More would sit in this replica, ahead of later high-priority messages and out of
# reach of other replicas, without sending anything sooner.
WAIT_AHEAD_S = 0.25
MIN_WAITING = 32
# Sends that may hold a connection while they wait for their rate slot: this many seconds of
# the rate. Step 2 takes the connection before the slot so that connecting never delays a
# slot, but every message waiting for a slot held one: a burst of 1000 waiting sends opened
# ~1000 connections (1,329 TLS handshakes in a 5 s paced run, the loop stalled by them);
# slots come at most a lease's look-ahead ahead, so 50 ms of the rate is plenty.
READY_AHEAD_S = 0.05
MIN_READY_AHEAD = 16


class Held:
    """Something one send holds and gives back once: a place among the provider's open
    requests (back at the answer) or a turn to hold a connection before its slot (back once
    the request is written). The attempt releases it again when it ends, for the paths that
    never got that far: the second call does nothing."""

    __slots__ = ("_give_back",)

    def __init__(self, give_back: Callable[[], object] | None) -> None:
        self._give_back = give_back

    def release(self) -> None:
        give_back, self._give_back = self._give_back, None
        if give_back is not None:
            give_back()


class Lane:
    def __init__(
        self,
        provider: Provider,
        limiter: ProviderLimiter,
        in_flight: InFlightLimits | None,
        *,
        rate: float | None,
        rate_unit: RateUnit,
        stats: DispatchStats,
        max_held: int,
    ) -> None:
        self.provider = provider
        self.name = provider.name
        self._limiter = limiter
        self._in_flight = in_flight
        self._counts_segments = rate_unit == "segments"
        self._stats = stats
        # Waiting beyond this, a message is handed back to the queue (the bulkhead).
        self.waiting_budget = (
            max_held if rate is None else max(MIN_WAITING, math.ceil(rate * WAIT_AHEAD_S))
        )
        self.held = 0  # messages picked for this provider and not finished
        self.open_now = 0  # of those, requests written and not yet answered
        self.refusals = 0
        self._refusal_pause_s = 0.0
        self._paused_until = 0.0
        # Without a rate there is no slot to wait for: no bound needed.
        self._turns = (
            None
            if rate is None
            else asyncio.Semaphore(max(MIN_READY_AHEAD, math.ceil(rate * READY_AHEAD_S)))
        )

    def units(self, segments: int) -> int:
        """What one message costs of the provider's rate."""
        return max(segments, 1) if self._counts_segments else 1

    @property
    def waiting(self) -> int:
        """Messages waiting for a place, a connection or a slot (not those in flight: the
        requests open follow from rate x latency and must not eat the budget)."""
        return self.held - self.open_now

    def has_room(self) -> bool:
        return self.waiting < self.waiting_budget

    def refusing(self) -> bool:
        """In a pause after concurrency refusals: better skipped where another can send."""
        return self._paused_until > time.monotonic()

    def overfull(self) -> bool:
        """So many wait here that another would only hold a message other lanes could use."""
        return self.waiting >= 4 * self.waiting_budget

    async def take_place(self) -> Held:
        """Step 1: after any refusal pause, a place among the provider's open requests."""
        while True:
            wait = self._paused_until - time.monotonic()
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        if self._in_flight is not None and not self._in_flight.try_open(self.name):
            await self._in_flight.open(self.name)
        if self._in_flight is None:
            return Held(None)
        return Held(functools.partial(self._in_flight.close, self.name))

    async def take_turn(self) -> Held:
        """Between steps 1 and 2: a turn to hold a connection until the request is written."""
        turns = self._turns
        if turns is None:
            return Held(None)
        await turns.acquire()
        return Held(turns.release)

    async def slot(self, units: int) -> float:
        """Step 3: a rate slot fresh enough to use now; its time (time.monotonic())."""
        while True:
            slot = await self._limiter.acquire(self.name, units)
            if time.monotonic() - slot <= LATE_SLOT_S:
                return slot
            # The loop reached it too late: used now it would bunch with the next slots.
            self._stats.late_slots += 1

    def refused(self, retry_after_s: float) -> None:
        """The provider said too many of our requests were open: pause new ones."""
        self.refusals += 1
        pause = min(max(self._refusal_pause_s * 2, REFUSAL_PAUSE_MIN_S), REFUSAL_PAUSE_MAX_S)
        self._refusal_pause_s = pause
        self._paused_until = max(self._paused_until, time.monotonic() + max(pause, retry_after_s))
        if self._in_flight is not None:
            self._in_flight.refused(self.name, retry_after_s or None)

    def answered(self) -> None:
        """An answer that was not a concurrency refusal: the provider had room again."""
        self._refusal_pause_s = 0.0

"""The durable queue shared by replicas: two Redis streams (high, normal), one consumer group.

Life of a message (scripts in ./lua):
- put: XADD to its priority's stream, after a bound check, all or none (put.lua);
- get: one fetcher task reads in batches, high first, after moving due retries back into
  their streams (fetch.lua), and hands messages out from a small local buffer;
- ack / retry_later: queued here and settled in batches, one call each (settle.lua):
  XACK + XDEL, or ZADD to the delayed set + XACK + XDEL, atomically, and only for entries
  still pending for this consumer (one claimed by another replica is that replica's to
  send: a retry from here could send it twice);
- held entries are renewed while held (renew.lua), so only a consumer that died or hangs
  loses them: after `visibility_timeout_s` another replica takes them (claim.lua, XAUTOCLAIM).

A claimed entry may still be in the hands of the slow consumer it was taken from. Either of
the two that finishes it leaves a "done" marker for that entry, and the other drops its copy
(when claiming, and in `was_sent()` just before sending). Markers are written only where such
a copy can exist, so the common path costs no key per message.

Redis holds no message in clear: each payload is sealed with `cipher` (sealing.py) for the
stream it goes to, and the scripts move payloads around without reading them.

Round trips stay far below one per message: puts come in batches, fetches bring up to
`batch_max` entries, and settling groups the outcomes of `settle_linger_s` into one call.
No connection is held across a provider call: every call returns its connection at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from smsgw._aio import cancel_and_wait
from smsgw.errors import QueueFull, SmsgwError
from smsgw.log import Outage
from smsgw.queue._redis_support import (
    PRIORITIES,
    Codec,
    Held,
    RedisQueueStats,
    Scripts,
    default_consumer_name,
    stream_index,
    text,
)
from smsgw.queue.base import Backlog
from smsgw.queue.failover import FailoverGuard
from smsgw.queue.message import Message
from smsgw.queue.sealing import QueueCipher, Undecodable
from smsgw.redis_connect import primary_watch
from smsgw.redis_keys import DEDUPE_TTL_S, QUEUE_CONSUMER_IDLE_TTL_S, QUEUE_GROUP, RedisKeys
from smsgw.redis_scripts import REDIS_FAILURES
from smsgw.retry import Backoff
from smsgw.settings import QueueSettings

__all__ = ["QueueUnavailable", "RedisQueue", "RedisQueueStats", "default_consumer_name"]

_log = structlog.get_logger("smsgw.queue")

# Due retries moved back per fetch; Lua's unpack() also caps how many fit in one call.
_PROMOTE_LIMIT = 500
# Outcomes per settle call (each adds a few arguments).
_SETTLE_LIMIT = 1000
# A settle call goes out at once when this many outcomes wait, else after the linger.
_SETTLE_BATCH = 200
# Puts waiting for replicas (redis.min_replicas_ack) at once, each holding a connection: a
# quarter of the pool (smsgw.redis_connect.REDIS_MAX_CONNECTIONS).
REPLICATED_PUTS_AT_ONCE = 16
# Entries per renew call.
_RENEW_LIMIT = 1000
# How often the consumption rate that sizes prefetching is re-estimated.
_RATE_WINDOW_S = 0.1
# Background retries against an unreachable Redis: soon after it returns, not in step.
_RETRY_BASE_S = 0.05
_RETRY_MAX_S = 2.0


class QueueUnavailable(SmsgwError, RedisConnectionError):
    """The shared queue (Redis) cannot be reached; nothing was accepted. HTTP 503.

    Also a redis ConnectionError, so the API's handler of Redis failures answers 503 with
    Retry-After without knowing this class.
    """

    def __init__(self, detail: str, retry_after_s: int = 1) -> None:
        super().__init__(f"queue unavailable: {detail}")
        self.detail = detail
        self.retry_after_s = retry_after_s


class NotReplicated(QueueUnavailable):
    """The primary has the messages, but too few replicas had them within the bound: a
    failover now would lose them. HTTP 503: they may still be sent, so the client retries
    with the same Idempotency-Key."""

    def __init__(self, replicas: int, acked: int, timeout_s: float) -> None:
        super().__init__(
            f"accepted by the Redis primary but by {acked} of the {replicas} replicas it needs "
            f"within {timeout_s:g} s; it may still be sent: retry with the same Idempotency-Key"
        )


@dataclass(slots=True)
class _Op:
    """One outcome waiting for the next settle call."""

    kind: Literal["ack", "retry", "mark"]
    index: int
    entry_id: str | None  # None: a retry of a message this queue did not hand out
    held: Held | None  # None: an entry dropped without being held (undecodable, done)
    delay_ms: int = 0
    member: bytes = b""


class RedisQueue:
    """`MessageQueue` on Redis Streams, shared by every replica using the same keys.

    `depth()` and `wait_empty()` count what this consumer holds (fetched, not yet settled):
    the rest stays in Redis for any replica. `waiting()` is the shared total the bound
    applies to (unfinished + delayed), as of the last call that returned it.
    """

    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        settings: QueueSettings,
        consumer: str,
        *,
        cipher: QueueCipher,
        batch_max: int = 200,
        prefetch_s: float = 0.1,
        min_prefetch: int = 0,
        block_s: float = 0.25,
        settle_linger_s: float = 0.05,
        claim_interval_s: float | None = None,
        renew_interval_s: float | None = None,
        replica_acks: int = 0,
        replica_ack_timeout_s: float = 0.5,
    ) -> None:
        """`replica_acks`: replicas that must have a put's messages before it returns (Redis
        WAIT, bounded by `replica_ack_timeout_s`; then NotReplicated)."""
        self.max_size = settings.max_size
        self.stats = RedisQueueStats()
        self._redis = redis
        self._keys = keys
        self._streams = (keys.stream(PRIORITIES[0]), keys.stream(PRIORITIES[1]))
        self._all_keys = [*self._streams, keys.delayed]
        self._consumer = consumer
        self._visibility_s = settings.visibility_timeout_s
        self._batch_max = batch_max
        # Buffer about this long of consumption: enough to batch reads at thousands per
        # second, small enough that a new OTP never waits long behind a local backlog.
        self._prefetch_s = prefetch_s
        self._min_prefetch = min_prefetch
        # Short, so a stop is prompt; must stay below the client's socket_timeout.
        self._block_s = block_s
        # Outcomes of a paced dispatcher trickle in (5000/s is one per 0.2 ms, about one
        # Redis round trip): waiting this long after the first one batches them, ~80 per
        # call for a third of 5000/s. It also adds to how long a sent message stays unacked
        # (may be sent again if this process dies right then), as the provider's own
        # latency already does.
        self._settle_linger_s = settle_linger_s
        self._claim_interval_s = claim_interval_s or min(self._visibility_s / 4, 5.0)
        # A lease is renewed well before it runs out, and counts as fresh for half of it.
        self._renew_interval_s = renew_interval_s or self._visibility_s / 3
        self.reap_idle_s: float = QUEUE_CONSUMER_IDLE_TTL_S
        self._scripts = Scripts.register(redis)
        self._failover = FailoverGuard.for_client(
            redis, keys, consumer, settings.visibility_timeout_s
        )
        self._replica_acks = replica_acks
        self._replica_ack_timeout_s = replica_ack_timeout_s
        self._watch = primary_watch(redis)
        self._short_of_replicas = False
        self._replicated_puts = asyncio.Semaphore(REPLICATED_PUTS_AT_ONCE)
        self._codec = Codec(cipher, self._streams)
        self._outage = Outage(_log, "redis_queue_unavailable", "redis_queue_recovered")

        self._buffers: tuple[deque[Held], deque[Held]] = (deque(), deque())
        self._getters: deque[asyncio.Future[Held]] = deque()
        self._held: dict[tuple[int, str], Held] = {}
        self._in_flight: dict[int, Held] = {}  # by id(message): the object handed out
        self._ops: list[_Op] = []
        self._empty = asyncio.Event()
        self._empty.set()
        self._fetch_wake = asyncio.Event()
        self._settle_wake = asyncio.Event()
        self._settle_full = asyncio.Event()
        self._settled = asyncio.Event()
        self._settled.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._fetcher: asyncio.Task[None] | None = None
        self._stopping = False
        self._closed = False
        self._total = 0
        self._handed = 0
        self._rate = 0.0
        self._rate_at = time.monotonic()
        self._rate_handed = 0
        self._target = 0  # entries to keep buffered, from the rate of gets
        self._claim_at = 0.0  # claim at the first fetch: orphans of a dead run wait already
        self._claim_more = False
        self._cursors = ["0-0", "0-0"]

    # -- MessageQueue -------------------------------------------------------------------

    async def put(self, message: Message) -> None:
        await self.put_many((message,))

    async def put_many(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        args: list[Any] = [self.max_size]
        for message in messages:
            args += (stream_index(message.priority), self._codec.encode(message))
        acked, wanted = 0, self._acks_wanted()
        try:
            if wanted:
                accepted, total, acked = await self._put_replicated(args, wanted)
            else:
                accepted, total = await self._call(self._scripts.put, self._all_keys, args)
        except REDIS_FAILURES as exc:
            self._outage.failed(during="put", error=repr(exc))
            reachable = isinstance(exc, ResponseError)  # it answered, with an error
            detail = f"Redis refused: {exc}" if reachable else "Redis is unreachable"
            raise QueueUnavailable(detail) from exc
        self._outage.ok()
        self._total = int(total)
        if not accepted:
            raise QueueFull(retry_after_s=1)
        if acked < wanted:
            self.stats.replica_ack_timeouts += 1
            raise NotReplicated(wanted, acked, self._replica_ack_timeout_s)

    def _acks_wanted(self) -> int:
        """redis.min_replicas_ack, or fewer while the sentinels know fewer replicas they could
        promote: waiting for a replica that is not there keeps nothing safe (a primary
        without one has no failover to lose the message in), it only refuses every put."""
        wanted = self._replica_acks
        replicas = None if self._watch is None else self._watch.replicas
        if replicas is None or replicas >= wanted:
            self._short_of_replicas = False
            return wanted
        self.stats.unreplicated_puts += 1
        if not self._short_of_replicas:
            self._short_of_replicas = True
            _log.warning("redis_replicas_missing", wanted=wanted, promotable=replicas)
        return replicas

    async def _put_replicated(self, args: list[Any], wanted: int) -> tuple[int, int, int]:
        # WAIT counts the replicas that have this connection's writes: in one pipeline, it
        # runs on the connection that ran the put. Replication is in order, so what was
        # written before (an OTP's state) is covered as well. A put holds its connection
        # until the replicas answer: while they lag, a bound keeps these from taking the
        # whole pool (fetches, settles and leases need it too).
        async with self._replicated_puts:
            try:
                return await self._put_and_wait(args, wanted)
            except NoScriptError:  # a new primary: the put did not run
                await self._redis.script_load(self._scripts.put.script)
                return await self._put_and_wait(args, wanted)

    async def _put_and_wait(self, args: list[Any], wanted: int) -> tuple[int, int, int]:
        # EVALSHA itself: a script in a pipeline would add a SCRIPT EXISTS round trip to
        # every put.
        self.stats.redis_calls += 1
        timeout_ms = max(1, round(self._replica_ack_timeout_s * 1000))
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.evalsha(self._scripts.put.sha, len(self._all_keys), *self._all_keys, *args)
            pipe.execute_command("WAIT", wanted, timeout_ms)
            (accepted, total), acked = await pipe.execute()
        return int(accepted), int(total), int(acked)

    async def get(self) -> Message:
        self._start()
        if self._failover is not None:
            wait = self._failover.hand_out_wait(time.monotonic())
            if wait > 0:
                await asyncio.sleep(wait)
        held = self._pop()
        if held is None:
            future: asyncio.Future[Held] = asyncio.get_running_loop().create_future()
            self._getters.append(future)
            self._fetch_wake.set()
            try:
                held = await future
            except asyncio.CancelledError:
                # Cancelled after a message was handed to us: keep it for the next getter.
                if future.done() and not future.cancelled():
                    self._give_back(future.result())
                raise
        self._in_flight[id(held.message)] = held
        self._handed += 1
        if not self._stopping and self._buffered() * 2 < max(self._target, 1):
            self._fetch_wake.set()
        return held.message

    async def ack(self, message: Message) -> None:
        held = self._in_flight.pop(id(message), None)
        if held is None:
            _log.warning("ack_unknown_message", message_id=message.id)
            return
        if held.elsewhere:
            self._forget(held)  # another consumer's to finish (smsgw.queue.failover)
            return
        self._add_op(_Op("ack", held.index, held.entry_id, held))

    async def retry_later(self, message: Message, delay_s: float) -> None:
        held = self._in_flight.pop(id(message), None)
        member = self._codec.delayed_member(message)
        delay_ms = max(0, round(delay_s * 1000))
        if held is None:
            # Not ours to ack, but dropping it would lose an accepted message.
            _log.warning("retry_unknown_message", message_id=message.id)
            self._add_op(_Op("retry", stream_index(message.priority), None, None, delay_ms, member))
            return
        self._add_op(_Op("retry", held.index, held.entry_id, held, delay_ms, member))

    def depth(self) -> int:
        return len(self._held)

    def waiting(self) -> int:
        """Unfinished plus delayed messages of all replicas, as of the last call."""
        return self._total

    async def wait_empty(self) -> None:
        await self._empty.wait()

    async def stop_fetching(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._fetch_wake.set()
        if self._fetcher is not None:
            # Let a read in progress finish (at most one BLOCK) rather than cut its connection:
            # entries it brings would stay pending on us until the visibility timeout.
            done, _ = await asyncio.wait({self._fetcher}, timeout=self._block_s + 1.0)
            if not done:
                await cancel_and_wait([self._fetcher])
        await self._release([*self._buffers[0], *self._buffers[1]])

    async def mark_sent(self, message: Message) -> None:
        held = self._in_flight.get(id(message))
        if held is not None:
            self._add_op(_Op("mark", held.index, held.entry_id, held))

    def taken_over(self, message: Message) -> bool:
        held = self._in_flight.get(id(message))
        return held is not None and held.reclaimed

    async def was_sent(self, message: Message) -> bool:
        held = self._in_flight.get(id(message))
        now = time.monotonic()
        if held is None or not self._may_have_copy(held, now):
            return False
        try:
            self.stats.redis_calls += 1
            if self._failover is not None and self._failover.suspect(now):
                verdict = await self._failover.verdict(held)
                held.elsewhere = verdict == "elsewhere"
                done = verdict != "ours"
            else:
                key = self._keys.done_marker(PRIORITIES[held.index - 1], held.entry_id)
                done = bool(await self._redis.exists(key))
        except REDIS_FAILURES as exc:
            # Cannot tell: a possible duplicate beats a message never sent.
            self._outage.failed(during="was_sent", error=repr(exc))
            return False
        if done:
            self.stats.duplicates_skipped += 1
        return done

    # -- lifecycle ----------------------------------------------------------------------

    async def total(self) -> int:
        """Unfinished plus delayed messages of all replicas, read now."""
        high, normal, delayed = self._all_keys
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xlen(high)
            pipe.xlen(normal)
            pipe.zcard(delayed)
            counts = await pipe.execute()
        self.stats.redis_calls += 1
        self._total = sum(int(n) for n in counts)
        return self._total

    async def backlog(self) -> list[Backlog]:
        """Acknowledged entries are deleted, so each stream's length is its unfinished
        messages and its first entry the oldest of them (its id holds its time in ms)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.time()
            for stream in self._streams:
                pipe.xlen(stream)
                pipe.xrange(stream, count=1)
            pipe.zcard(self._all_keys[-1])
            pipe.zrange(self._all_keys[-1], 0, 0, withscores=True)
            replies = await pipe.execute()
        self.stats.redis_calls += 1
        seconds, micros = replies[0]
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        parts = []
        for index, priority in enumerate(PRIORITIES):
            length, first = replies[1 + 2 * index], replies[2 + 2 * index]
            age_ms = now_ms - int(first[0][0].split(b"-")[0]) if first else 0
            parts.append(Backlog(priority, int(length), max(age_ms, 0) / 1000))
        delayed, due = replies[-2], replies[-1]
        # Delayed retries: how overdue the first one is (0 while all are in the future).
        overdue_s = max(now_ms - float(due[0][1]), 0.0) / 1000 if due else 0.0  # ms scores
        parts.append(Backlog("delayed", int(delayed), overdue_s))
        return parts

    async def close(self, timeout_s: float = 5.0) -> None:
        """Stop fetching, settle what was reported (bounded), stop background work.

        Messages still handed out stay pending in Redis; another replica claims them after
        the visibility timeout. The Redis client belongs to the caller and stays open.
        """
        await self.stop_fetching()
        try:
            await asyncio.wait_for(self._settled.wait(), timeout_s)
        except TimeoutError:
            _log.warning("queue_close_unsettled", outcomes=len(self._ops))
        self._closed = True
        if self._failover is not None:
            self._failover.close()
        await cancel_and_wait(self._tasks)
        self._tasks = []
        for future in self._getters:
            future.cancel()
        if self._held:
            _log.warning("queue_closed_holding", messages=len(self._held))

    def _start(self) -> None:
        if self._tasks or self._closed:
            return
        self._fetcher = asyncio.create_task(self._fetch_loop(), name="smsgw-queue-fetch")
        self._tasks = [
            self._fetcher,
            asyncio.create_task(self._settle_loop(), name="smsgw-queue-settle"),
            asyncio.create_task(self._renew_loop(), name="smsgw-queue-renew"),
        ]
        if self._failover is not None:
            held = self._held
            self._tasks.append(
                asyncio.create_task(
                    self._failover.run(lambda: list(held.values())), name="smsgw-queue-failover"
                )
            )

    # -- local bookkeeping --------------------------------------------------------------

    def _buffered(self) -> int:
        return len(self._buffers[0]) + len(self._buffers[1])

    def _pop(self) -> Held | None:
        for buffer in self._buffers:
            if buffer:
                return buffer.popleft()
        return None

    def _give_back(self, held: Held) -> None:
        if self._stopping:
            task = asyncio.create_task(self._release([held]))
            self._tasks.append(task)
        else:
            self._buffers[held.index - 1].appendleft(held)

    def _accept(self, entries: list[Held]) -> None:
        # Right after a primary change nothing is handed out, to getters already waiting
        # either, until the other consumers have written their markers (queue.failover).
        wait = 0.0 if self._failover is None else self._failover.hand_out_wait(time.monotonic())
        for held in entries:
            key = (held.index, held.entry_id)
            mine = self._held.get(key)
            if mine is not None:
                self._claimed_back(mine, held.lease_at)
                continue
            self._held[key] = held
            self._empty.clear()
            if wait > 0 or not self._hand_to_getter(held):
                self._buffers[held.index - 1].append(held)
        if wait > 0 and entries:
            asyncio.get_running_loop().call_later(wait, self._serve_getters)

    def _hand_to_getter(self, held: Held) -> bool:
        while self._getters:
            future = self._getters.popleft()
            if not future.done():
                future.set_result(held)
                return True
        return False

    def _serve_getters(self) -> None:
        while self._getters:
            held = self._pop()
            if held is None:
                return
            if not self._hand_to_getter(held):
                self._give_back(held)
                return

    @staticmethod
    def _claimed_back(mine: Held, lease_at: float) -> None:
        """Our own entry, claimed back after our lease lapsed: same message, keep our copy."""
        mine.lease_at = lease_at
        if mine.lost:
            # Ours again, so renewed again; whoever had it meanwhile may have sent it.
            mine.lost = False
            mine.reclaimed = True

    def _forget(self, held: Held) -> None:
        if self._held.get((held.index, held.entry_id)) is held:
            del self._held[(held.index, held.entry_id)]
        if not self._held:
            self._empty.set()

    def _add_op(self, op: _Op) -> None:
        self._start()
        self._ops.append(op)
        self._settled.clear()
        self._settle_wake.set()
        if len(self._ops) >= _SETTLE_BATCH:
            self._settle_full.set()

    def _may_have_copy(self, held: Held, now: float) -> bool:
        """Can another consumer hold this entry too (so a done marker matters)?

        Only if it was claimed from someone, or our lease may have run out: until
        visibility_timeout_s after the last reset of its idle time nobody can claim it,
        and renewals keep that well under half of the timeout.
        """
        if self._failover is not None and self._failover.suspect(now):
            return True  # the new primary may have handed out a copy
        return held.reclaimed or held.lost or now - held.lease_at >= self._visibility_s / 2

    def _entries(self, flat: list[Any], start: int, lease_at: float, reclaimed: bool) -> list[Held]:
        entries = []
        for i in range(start, len(flat), 3):
            index, entry_id, payload = int(flat[i]), text(flat[i + 1]), flat[i + 2]
            try:
                message = self._codec.decode(payload, index)
            except Undecodable as exc:
                # Never deliverable (written by something else, altered, or sealed under a
                # key no longer configured): drop it instead of failing on it forever.
                self.stats.undecodable += 1
                _log.error(
                    "undecodable_entry",
                    stream=self._streams[index - 1],
                    entry=entry_id,
                    reason=exc.reason,
                )
                self._add_op(_Op("ack", index, entry_id, None))
                continue
            entries.append(Held(index, entry_id, message, payload, lease_at, reclaimed))
        return entries

    # -- fetching -----------------------------------------------------------------------

    def _fetch_count(self) -> int:
        """How many entries to read now; 0 when the buffer is full enough."""
        now = time.monotonic()
        elapsed = now - self._rate_at
        if elapsed >= _RATE_WINDOW_S:
            current = (self._handed - self._rate_handed) / elapsed
            # Up at once (a burst must not wait for the estimate), down gently.
            self._rate = current if current > self._rate else (self._rate + current) / 2
            self._rate_at, self._rate_handed = now, self._handed
        target = min(self._batch_max, max(self._min_prefetch, int(self._rate * self._prefetch_s)))
        self._target = target
        while self._getters and self._getters[0].done():
            self._getters.popleft()  # cancelled getters
        waiting = sum(1 for future in self._getters if not future.done())
        buffered = self._buffered()
        if waiting == 0 and buffered * 2 >= target:
            return 0
        return min(self._batch_max, max(1, waiting + target - buffered))

    async def _fetch_loop(self) -> None:
        backoff = Backoff(_RETRY_BASE_S, _RETRY_MAX_S)
        while not self._stopping:
            count = self._fetch_count()
            if count == 0:
                self._fetch_wake.clear()
                await self._fetch_wake.wait()
                continue
            try:
                if self._claim_more or time.monotonic() >= self._claim_at:
                    await self._claim(count)
                    continue  # recount: the claim may have filled the buffer
                got, wait_s = await self._fetch(count)
                if not got and wait_s > 0 and not self._stopping:
                    await self._block_read(count, wait_s)
            except REDIS_FAILURES as exc:
                self._outage.failed(during="fetch", error=repr(exc))
                await asyncio.sleep(backoff.next())
            except Exception:
                _log.exception("queue_fetch_bug")
                await asyncio.sleep(backoff.next())
            else:
                backoff.reset()
                self._outage.ok()

    async def _fetch(self, count: int) -> tuple[bool, float]:
        """Read up to `count` entries; also says how long a blocking read may wait."""
        started = time.monotonic()
        args = [QUEUE_GROUP, self._consumer, count, _PROMOTE_LIMIT]
        reply = await self._call(self._scripts.fetch, self._all_keys, args)
        self._total = int(reply[0])
        entries = self._entries(reply, 2, started, reclaimed=False)
        self.stats.fetched += len(entries)
        self._accept(entries)
        next_due_ms = int(reply[1])
        wait_s = self._block_s if next_due_ms < 0 else min(self._block_s, next_due_ms / 1000)
        return bool(entries), wait_s

    async def _block_read(self, count: int, wait_s: float) -> None:
        """Wait (briefly) for new entries in either stream."""
        started = time.monotonic()
        streams: dict[Any, Any] = {self._streams[0]: ">", self._streams[1]: ">"}
        try:
            self.stats.redis_calls += 1
            reply: Any = await self._redis.xreadgroup(
                QUEUE_GROUP,
                self._consumer,
                streams,
                count=count,
                block=max(1, round(wait_s * 1000)),
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                return  # the next fetch.lua creates the group
            raise
        if not reply:
            return
        items = reply.items() if isinstance(reply, dict) else reply
        flat: list[Any] = []
        for stream, entries in items:
            index = self._streams.index(text(stream)) + 1
            for entry in entries[0] if isinstance(reply, dict) else entries:
                entry_id, fields = entry
                payload = fields.get(b"m", fields.get("m"))
                flat += (index, entry_id, payload)
        held = self._entries(flat, 0, started, reclaimed=False)
        self.stats.fetched += len(held)
        self._accept(held)

    async def _claim(self, count: int) -> None:
        """Take over entries held too long by a consumer that stopped renewing them."""
        started = time.monotonic()
        args = [
            QUEUE_GROUP,
            self._consumer,
            round(self._visibility_s * 1000),
            count,
            *self._cursors,
            round(self.reap_idle_s * 1000),
        ]
        reply = await self._call(self._scripts.claim, self._streams, args)
        self._cursors = [text(reply[0]), text(reply[1])]
        self._claim_more = self._cursors != ["0-0", "0-0"]
        self._claim_at = time.monotonic() + self._claim_interval_s
        entries = []
        for held in self._entries(reply, 2, started, reclaimed=True):
            mine = self._held.get((held.index, held.entry_id))
            if mine is None:
                entries.append(held)
            else:
                self._claimed_back(mine, started)
        if not entries:
            return
        markers = [self._keys.done_marker(PRIORITIES[h.index - 1], h.entry_id) for h in entries]
        self.stats.redis_calls += 1
        done = await self._redis.mget(markers)
        fresh = []
        for held, marker in zip(entries, done, strict=True):
            if marker is None:
                fresh.append(held)
            else:
                # Its first holder finished it after all: drop our copy, unsent.
                self.stats.duplicates_skipped += 1
                self._add_op(_Op("ack", held.index, held.entry_id, None))
        self.stats.claimed += len(fresh)
        _log.info("claimed", messages=len(fresh), already_done=len(entries) - len(fresh))
        self._accept(fresh)

    async def _release(self, entries: list[Held]) -> None:
        """Give entries we never handed out back to their stream, for any replica."""
        for held in entries:
            buffer = self._buffers[held.index - 1]
            if held in buffer:
                buffer.remove(held)
        if not entries:
            return
        args: list[Any] = [QUEUE_GROUP, self._consumer]
        for held in entries:
            args += (held.index, held.entry_id, held.payload)
        try:
            self.stats.released += int(await self._call(self._scripts.release, self._streams, args))
        except REDIS_FAILURES as exc:
            # Still pending on us in Redis: claimed by another replica after the timeout.
            self._outage.failed(during="release", error=repr(exc))
        finally:
            for held in entries:
                self._forget(held)

    # -- settling and renewing ----------------------------------------------------------

    async def _settle_loop(self) -> None:
        backoff = Backoff(_RETRY_BASE_S, _RETRY_MAX_S)
        while True:
            if not self._ops:
                self._settled.set()
                self._settle_wake.clear()
                await self._settle_wake.wait()
                continue
            if len(self._ops) < _SETTLE_BATCH and self._settle_linger_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._settle_full.wait(), self._settle_linger_s)
            self._settle_full.clear()
            # Everything reported meanwhile goes in this one call.
            batch = self._ops[:_SETTLE_LIMIT]
            try:
                await self._settle(batch)
            except REDIS_FAILURES as exc:
                # Kept and retried: an outcome reported to us is never dropped.
                self._outage.failed(during="settle", error=repr(exc))
                await asyncio.sleep(backoff.next())
                continue
            except Exception:
                _log.exception("queue_settle_bug")
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            self._outage.ok()
            del self._ops[: len(batch)]
            for op in batch:
                if op.kind != "mark" and op.held is not None:
                    self._forget(op.held)

    async def _settle(self, batch: list[_Op]) -> None:
        now = time.monotonic()
        finishing = {id(op.held) for op in batch if op.kind != "mark" and op.held is not None}
        markers: dict[str, int] = {}  # key -> its index in the script's KEYS (Lua counts from 1)
        args: list[Any] = [QUEUE_GROUP, self._consumer, DEDUPE_TTL_S]
        finished: list[str] = []  # done markers of what this batch acks or marks sent
        for op in batch:
            held = op.held
            marker = 0
            if op.entry_id is not None:
                key = self._keys.done_marker(PRIORITIES[op.index - 1], op.entry_id)
                marker = markers.setdefault(key, len(self._all_keys) + len(markers) + 1)
                if op.kind != "retry":
                    finished.append(key)
            # Where another consumer may hold a copy, its marker makes that copy be skipped;
            # a mark alone (sent, not finished yet) needs one in case we die before the ack.
            # The script also writes it for an ack of an entry that is no longer ours.
            wanted = held is not None and (
                self._may_have_copy(held, now) or (op.kind == "mark" and id(held) not in finishing)
            )
            if op.kind == "mark" and not wanted:
                continue
            args += (op.kind[0], op.index, op.entry_id or "", marker, int(wanted))
            args += (op.delay_ms, op.member) if op.kind == "retry" else (0, "")
        reply = await self._call(self._scripts.settle, [*self._all_keys, *markers], args)
        if self._failover is not None:
            self._failover.finished(finished)
        lost = {(int(reply[i]), text(reply[i + 1])) for i in range(0, len(reply), 2)}
        if not lost:
            return
        # Claimed by another consumer since, which sends it (or did): our outcome was not
        # recorded, so neither a second send (retry) nor a loss (its copy is not skipped).
        for op in batch:
            if op.held is not None and (op.index, op.entry_id) in lost and not op.held.lost:
                op.held.lost = True
                self.stats.leases_lost += 1
        _log.warning("queue_settled_lost_leases", messages=len(lost))

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self._renew_interval_s)
            live = [held for held in self._held.values() if not held.lost]
            for start in range(0, len(live), _RENEW_LIMIT):
                try:
                    await self._renew(live[start : start + _RENEW_LIMIT])
                except REDIS_FAILURES as exc:
                    self._outage.failed(during="renew", error=repr(exc))
                    break
                except Exception:
                    _log.exception("queue_renew_bug")
                    break

    async def _renew(self, entries: list[Held]) -> None:
        started = time.monotonic()
        high = [held.entry_id for held in entries if held.index == 1]
        normal = [held.entry_id for held in entries if held.index == 2]
        args = [QUEUE_GROUP, self._consumer, len(high), *high, *normal]
        reply = await self._call(self._scripts.renew, self._streams, args)
        lost = {(int(reply[i]), text(reply[i + 1])) for i in range(0, len(reply), 2)}
        for held in entries:
            if (held.index, held.entry_id) not in lost:
                held.lease_at = started
                continue
            held.lost = True
            self.stats.leases_lost += 1
            buffer = self._buffers[held.index - 1]
            if held in buffer:
                # Not handed out yet: the replica that claimed it will send it, not us.
                buffer.remove(held)
                self._forget(held)
        if lost:
            _log.warning("queue_leases_lost", messages=len(lost))

    async def _call(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        self.stats.redis_calls += 1
        return await script(keys=keys, args=args)

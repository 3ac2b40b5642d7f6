"""Parts of the Redis queue that hold no connection: bookkeeping of held entries, the wire
format and the Lua scripts."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import msgspec
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from smsgw.counters import Counters
from smsgw.queue.message import Message, Priority
from smsgw.queue.sealing import QueueCipher, Undecodable
from smsgw.redis_scripts import load_script

__all__ = [
    "PRIORITIES",
    "Codec",
    "Held",
    "RedisQueueStats",
    "Scripts",
    "default_consumer_name",
    "stream_index",
    "text",
]

# Stream order in every script's KEYS (Lua counts from 1): high first.
PRIORITIES: tuple[Priority, Priority] = ("high", "normal")
_INDEX: dict[str, int] = {"high": 1, "normal": 2}


def stream_index(priority: str) -> int:
    return _INDEX[priority]


def text(value: bytes | str) -> str:
    """Redis replies are bytes, or str when the client decodes responses: accept both."""
    return value.decode() if isinstance(value, bytes) else value


def default_consumer_name() -> str:
    # Unique per process run: a restarted replica must not inherit the entries its previous
    # run held, since it does not know them; they are claimed after the visibility timeout.
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


@dataclass(slots=True, eq=False)
class Held:
    """One stream entry this consumer has read and not yet settled."""

    index: int  # 1 high, 2 normal: the stream's position in the scripts' KEYS
    entry_id: str
    message: Message
    payload: bytes | str  # as read, to give back unchanged
    # time.monotonic() at the start of the last call that reset the entry's idle time in
    # Redis: until visibility_timeout_s after it, no other consumer can claim the entry.
    lease_at: float
    # Taken over from another consumer, which may still hold (and send) a copy of it.
    reclaimed: bool = False
    # Another consumer has claimed it from us since.
    lost: bool = False
    # Handed to us again after a primary change while another consumer holds it: dropped
    # here, not acknowledged (smsgw.queue.failover).
    elsewhere: bool = False


@dataclass(slots=True)
class RedisQueueStats(Counters):
    """Counters since start; read by health checks, tests and benchmarks."""

    fetched: int = 0
    claimed: int = 0
    # Redelivered copies dropped because their entry was already finished elsewhere.
    duplicates_skipped: int = 0
    released: int = 0
    leases_lost: int = 0
    undecodable: int = 0
    # Round trips to Redis made by this queue (scripts count once).
    redis_calls: int = 0
    # Puts answered 503 because too few replicas had them in time (redis.min_replicas_ack).
    replica_ack_timeouts: int = 0
    # Puts that waited for fewer replicas than that, because the sentinels knew no more.
    unreplicated_puts: int = 0


class Codec:
    """Messages as JSON (msgspec), sealed for the stream they go to (see sealing.py): the
    whole message, since its number and verification id matter as much as the code. Sealed
    payloads are base64 text, so they also work on a client created with
    decode_responses=True, and the scripts handle them as opaque strings."""

    def __init__(self, cipher: QueueCipher, streams: tuple[str, str]) -> None:
        self._cipher = cipher
        # The associated data of each stream's payloads, by stream index - 1.
        self._contexts = (streams[0].encode(), streams[1].encode())
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(Message)

    def encode(self, message: Message) -> bytes:
        context = self._contexts[_INDEX[message.priority] - 1]
        return self._cipher.seal(self._encoder.encode(message), context)

    def decode(self, payload: object, index: int) -> Message:
        """The message of a payload read from stream `index`; Undecodable if it is not one
        we sealed for that stream (with a key we still have) or does not parse."""
        plaintext = self._cipher.open(payload, self._contexts[index - 1])
        try:
            return self._decoder.decode(plaintext)
        except msgspec.MsgspecError:
            raise Undecodable("not a message") from None

    def delayed_member(self, message: Message) -> bytes:
        # The stream to return to travels with the retry as its first byte (see fetch.lua),
        # and the payload is sealed for that stream.
        return b"%d" % _INDEX[message.priority] + self.encode(message)


@dataclass(frozen=True, slots=True)
class Scripts:
    put: AsyncScript
    fetch: AsyncScript
    settle: AsyncScript
    renew: AsyncScript
    claim: AsyncScript
    release: AsyncScript

    @classmethod
    def register(cls, redis: Redis) -> Scripts:
        names = ("put", "fetch", "settle", "renew", "claim", "release")
        # claim and fetch hand entries back the same way (_entries.lua).
        helpers = {"claim": ["lua/_entries.lua"], "fetch": ["lua/_entries.lua"]}
        return cls(
            **{
                name: load_script(
                    redis, "smsgw.queue", f"lua/{name}.lua", helpers=helpers.get(name, ())
                )
                for name in names
            }
        )

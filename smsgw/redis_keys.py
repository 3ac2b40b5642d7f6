"""Every Redis key smsgw writes and how long it lives, in one place.

All keys start with `redis.key_prefix` (default "smsgw:"), so one Redis can hold several
gateways and an operator can find everything of ours with one SCAN pattern. Every key that
is written has an expiry, so a stopped gateway leaves nothing behind for long.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

__all__ = [
    "DEDUPE_TTL_S",
    "IDEMPOTENCY_TTL_S",
    "LIMITER_IDLE_TTL_S",
    "QUEUE_CONSUMER_IDLE_TTL_S",
    "QUEUE_GROUP",
    "RECEIPT_TTL_S",
    "RedisKeys",
]

# A provider's limiter state vanishes after this long without sends.
LIMITER_IDLE_TTL_S = 60
# "Already sent" markers outlive any visibility timeout and retry schedule by far.
DEDUPE_TTL_S = 24 * 3600
IDEMPOTENCY_TTL_S = 24 * 3600
# Providers retry a receipt for hours at most (Twilio: a few times within minutes).
RECEIPT_TTL_S = 3 * 24 * 3600
# The one consumer group every replica's dispatcher reads the queue streams with.
QUEUE_GROUP = "dispatch"
# A queue consumer (one per replica run) that holds nothing and was silent this long is
# removed from the group, so the group does not keep every replica that ever ran.
QUEUE_CONSUMER_IDLE_TTL_S = 3600


@dataclass(frozen=True, slots=True)
class RedisKeys:
    prefix: str = "smsgw:"

    def limiter(self, provider: str) -> str:
        return f"{self.prefix}limiter:{{{provider}}}"

    def in_flight(self, provider: str) -> str:
        """Hash of each live replica's grant of the provider's in-flight cap
        (smsgw.limiter.in_flight); it expires with the last replica's lease."""
        return f"{self.prefix}inflight:{{{provider}}}"

    def stream(self, priority: str) -> str:
        return f"{self.prefix}queue:{priority}"

    @property
    def delayed(self) -> str:
        """Sorted set of messages waiting for a retry, scored by due time."""
        return f"{self.prefix}queue:delayed"

    def done_marker(self, priority: str, entry_id: str) -> str:
        """Set (with DEDUPE_TTL_S) when one stream entry was finished while another consumer
        may hold a copy of it (claimed after a visibility timeout): that copy is skipped."""
        return f"{self.prefix}queue:done:{priority}:{entry_id}"

    def held_marker(self, priority: str, entry_id: str) -> str:
        """The consumer holding one stream entry, written after a Redis primary change (the
        new primary may hand the entry to another consumer too): smsgw.queue.failover."""
        return f"{self.prefix}queue:held:{priority}:{entry_id}"

    def verification(self, verification_id: str) -> str:
        return f"{self.prefix}otp:v:{verification_id}"

    def pending(self, client: str, phone: str) -> str:
        return f"{self.prefix}otp:pending:{client}:{phone}"

    def sends(self, phone: str) -> str:
        return f"{self.prefix}otp:sends:{phone}"

    def idempotency(self, client: str) -> str:
        """Start of every key of one client's idempotency entries (smsgw.api.idempotency_redis):
        `e:<Idempotency-Key>` per entry, `done`/`live` (sorted sets of finished answers and
        claims in flight by age), `cost` (hash: bytes charged per entry) and `used` (their
        sum). The hash tag keeps one client's keys in one Redis Cluster slot, as the scripts
        that evict them need; the name is quoted so that no client's keys can be spelled by
        another client's name and key."""
        return f"{self.prefix}idem:{{{quote(client, safe='')}}}:"

    def replicas(self, role: str) -> str:
        """Sorted set: replicas of a role by their last heartbeat (smsgw.replicas)."""
        return f"{self.prefix}replicas:{role}"

    def abuse_counter(self, scope: str, name: str, period: str) -> str:
        """Starts to a country or number prefix in one time bucket (smsgw.otp.guard)."""
        return f"{self.prefix}abuse:{scope}:{name}:{period}"

    def verified_number(self, tag: str) -> str:
        """Set for abuse.verified_exempt_s when a number completed a verification; `tag` is
        an HMAC of the number, so this 30-day list of real users' numbers holds none in
        clear (smsgw.otp.guard)."""
        return f"{self.prefix}otp:verified:{tag}"

    def failed_checks(self, phone: str) -> str:
        return f"{self.prefix}otp:failed:{phone}"

    def receipt(self, message_id: str, status: str) -> str:
        return f"{self.prefix}receipt:{message_id}:{status}"

    @property
    def quota_prefix(self) -> str:
        return f"{self.prefix}quota:"
